// GET /v1/node (admin): what this node's data plane is made of. The daemon supplies the facts
// through AdminDeps.node; fields may be added as workers and the Envoy supervisor grow.

import type { FastifyInstance } from 'fastify';

export interface EnvoyProcessStatus {
  state: 'running' | 'restarting' | 'absent' | 'stopped';
  /** While running. */
  pid?: number;
  /** Restarts since the daemon started. */
  restarts: number;
  /** How the previous Envoy process ended. */
  lastExit?: { code: number | null; signal: string | null; at: string };
}

export interface NodeInfo {
  /** Data-plane worker processes sharing the tenant listeners. */
  workers: number;
  dataplane: {
    mode: 'builtin' | 'envoy';
    /** Only in envoy mode. */
    envoy?: EnvoyProcessStatus;
  };
}

const nodeResponse = {
  200: {
    type: 'object',
    description: "this node's data plane",
    additionalProperties: true,
    properties: {
      workers: { type: 'integer', minimum: 1, description: 'data-plane workers sharing the tenant listeners' },
      dataplane: {
        type: 'object',
        additionalProperties: true,
        properties: {
          mode: { type: 'string', enum: ['builtin', 'envoy'] },
          envoy: {
            type: 'object',
            additionalProperties: true,
            description: 'envoy mode only: the supervised Envoy process',
            properties: {
              state: { type: 'string', enum: ['running', 'restarting', 'absent', 'stopped'] },
              pid: { type: 'integer' },
              restarts: { type: 'integer' },
              lastExit: {
                type: 'object',
                additionalProperties: true,
                properties: {
                  code: { type: ['integer', 'null'] },
                  signal: { type: ['string', 'null'] },
                  at: { type: 'string', format: 'date-time' },
                },
              },
            },
          },
        },
      },
    },
  },
} as const;

export function registerNodeRoute(app: FastifyInstance, node: () => NodeInfo): void {
  app.get(
    '/v1/node',
    { config: { auth: 'admin' }, schema: { tags: ['node'], summary: "This node's data plane: workers, mode, Envoy process", response: nodeResponse } },
    async () => node(),
  );
}
