// GET /v1/xds (admin): the node's xDS clients (one row per ADS stream) and the versions served.
// The daemon supplies the status through AdminDeps.xds (runtime/src/xds XdsControlPlane.status).

import type { FastifyInstance } from 'fastify';

export interface XdsClientInfo {
  node: string;
  tenant?: string;
  protocol: 'sotw' | 'delta';
  subscribed: Record<string, string[]>;
  acked: Record<string, string>;
  nacked?: Record<string, { version: string; message: string }>;
}

export interface XdsInfo {
  clients: XdsClientInfo[];
  versions: Record<string, string>;
  /** Per tenant: the config generation built, the one served, and why a build was refused. */
  tenants?: Record<string, { generation: number; served?: number; error?: string; warnings: string[] }>;
}

const stringMap = { type: 'object', additionalProperties: { type: 'string' } } as const;

const xdsResponse = {
  200: {
    type: 'object',
    description: "this node's xDS clients and the resource versions it serves",
    additionalProperties: true,
    properties: {
      clients: {
        type: 'array',
        items: {
          type: 'object',
          additionalProperties: true,
          properties: {
            node: { type: 'string', description: 'node.id of the client' },
            tenant: { type: 'string', description: 'set when the stream sees one tenant (a tenant token)' },
            protocol: { type: 'string', enum: ['sotw', 'delta'] },
            subscribed: { type: 'object', additionalProperties: { type: 'array', items: { type: 'string' } }, description: 'type URL → names ("*" = wildcard)' },
            acked: { ...stringMap, description: 'type URL → last acknowledged version' },
            nacked: {
              type: 'object',
              description: 'type URL → the last rejected response (cleared by the next ACK)',
              additionalProperties: { type: 'object', properties: { version: { type: 'string' }, message: { type: 'string' } } },
            },
          },
        },
      },
      versions: { ...stringMap, description: 'type URL → the version currently served to the admin view' },
      tenants: {
        type: 'object',
        additionalProperties: {
          type: 'object',
          additionalProperties: true,
          properties: {
            generation: { type: 'integer' },
            served: { type: 'integer' },
            error: { type: 'string' },
            warnings: { type: 'array', items: { type: 'string' } },
          },
        },
      },
    },
  },
} as const;

export function registerXdsRoute(app: FastifyInstance, xds: () => XdsInfo): void {
  app.get(
    '/v1/xds',
    { config: { auth: 'admin' }, schema: { tags: ['node'], summary: "This node's xDS clients, their subscriptions, ACKs and NACKs", response: xdsResponse } },
    async () => xds(),
  );
}
