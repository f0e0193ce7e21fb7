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

export interface WorkerStatus {
  index: number;
  state: 'running' | 'restarting';
  restarts: number;
  /** Requests the worker admitted since it (last) started. */
  requests: number;
  /** Client connections it holds now. */
  connections: number;
}

export interface NodeInfo {
  /** Data-plane workers sharing the tenant listeners. */
  workers: number;
  /** With several workers: each one's state. */
  workerStatus?: WorkerStatus[];
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
      workerStatus: {
        type: 'array',
        description: 'with several workers: each one (requests since it started, connections now)',
        items: {
          type: 'object',
          additionalProperties: true,
          properties: {
            index: { type: 'integer' },
            state: { type: 'string', enum: ['running', 'restarting'] },
            restarts: { type: 'integer' },
            requests: { type: 'integer' },
            connections: { type: 'integer' },
          },
        },
      },
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

export function registerNodeRoute(app: FastifyInstance, node: () => NodeInfo, restartWorker?: (index: number) => Promise<boolean>): void {
  app.get(
    '/v1/node',
    { config: { auth: 'admin' }, schema: { tags: ['node'], summary: "This node's data plane: workers, mode, Envoy process", response: nodeResponse } },
    async () => node(),
  );
  app.post<{ Params: { index: string } }>(
    '/v1/node/workers/:index/restart',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['node'],
        summary: 'End a data-plane worker abruptly (as a crash would) and let it restart: its connections are cut, the others are not',
        params: { type: 'object', properties: { index: { type: 'string', pattern: '^[0-9]{1,2}$' } }, required: ['index'] },
      },
    },
    async (req, reply) => {
      const index = Number(req.params.index);
      if (restartWorker === undefined || !(await restartWorker(index))) {
        return reply.code(404).send({ error: { code: 'ISOMESH_ERR_API_NOT_FOUND', message: `no data-plane worker ${index} (workers run as threads only with ISOMESH_WORKERS > 1)` } });
      }
      return reply.code(202).send({ restarting: index });
    },
  );
}
