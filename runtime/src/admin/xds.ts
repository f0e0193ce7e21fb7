// GET /v1/xds (admin): the node's xDS clients (one row per ADS stream) and the versions served.
// The daemon supplies the status through AdminDeps.xds (runtime/src/xds XdsControlPlane.status).

import type { FastifyInstance } from 'fastify';

export interface XdsClientInfo {
  node: string;
  tenant?: string;
  protocol: 'sotw' | 'delta';
  flavor: 'envoy' | 'proxyless';
  subscribed: Record<string, string[]>;
  acked: Record<string, string>;
  nacked?: Record<string, { version: string; message: string }>;
  synced: boolean;
}

export interface XdsInfo {
  clients: XdsClientInfo[];
  versions: Record<string, string>;
  proxylessVersions: Record<string, string>;
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
            flavor: { type: 'string', enum: ['envoy', 'proxyless'], description: 'node.user_agent_name "envoy", or a proxyless gRPC client' },
            subscribed: { type: 'object', additionalProperties: { type: 'array', items: { type: 'string' } }, description: 'type URL → names ("*" = wildcard)' },
            acked: { ...stringMap, description: 'type URL → last acknowledged version' },
            nacked: {
              type: 'object',
              description: 'type URL → the last rejected response (cleared by the next ACK)',
              additionalProperties: { type: 'object', properties: { version: { type: 'string' }, message: { type: 'string' } } },
            },
            synced: { type: 'boolean', description: 'holds the current version of everything it subscribes to, nothing in flight or refused' },
          },
        },
      },
      versions: { ...stringMap, description: 'type URL → the version of the admin view served to Envoy' },
      proxylessVersions: { ...stringMap, description: 'type URL → the version of the admin view served to proxyless gRPC clients' },
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
