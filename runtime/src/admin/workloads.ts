// Workloads (transparent redirection of a cgroup's VIP traffic) and /v1/datapath — admin-only.
// A PUT checks the cgroup and proxy address, attaches, then commits; a failed commit undoes the
// attach, so the store and the pinned maps never disagree for long. Changes run one at a time.

import type { FastifyInstance } from 'fastify';
import { IsomeshError } from '../errors.ts';
import { validateWorkload } from '../store/index.ts';
import type { WorkloadRecord } from '../store/index.ts';
import type { AdminDeps } from './index.ts';
import { namedParams, tenantParams } from './schemas.ts';
import { SerialQueue, requireTenant } from './tenants.ts';

/** What these routes need from the daemon's datapath (runtime/src/datapath NodeDatapath). */
export interface DatapathAdmin {
  /** Throws 503 ISOMESH_ERR_DATAPATH_UNAVAILABLE with the reason when the datapath is off. */
  require(): unknown;
  attach(w: { tenant: string; name: string; cgroupPath: string; proxyAddress: string }): Promise<void>;
  detach(tenant: string, name: string): Promise<boolean>;
  attachment(tenant: string, name: string): { cgroupId: string; proxy4?: string; proxy6?: string; programs: string[] } | undefined;
  status(): object;
  setAcceleration(on: boolean): void;
}

type Params = { tenant: string };
type NamedParams = { tenant: string; name: string };

const workloadBody = {
  type: 'object',
  additionalProperties: false,
  required: ['cgroupPath'],
  properties: {
    cgroupPath: { type: 'string', minLength: 1, maxLength: 4096, description: 'a cgroup v2 directory, e.g. /sys/fs/cgroup/pods/web' },
    proxyAddress: { type: 'string', minLength: 1, maxLength: 64, description: 'where the workload reaches the proxy (default 127.0.0.1)' },
  },
} as const;

const datapathBody = {
  type: 'object',
  additionalProperties: false,
  required: ['acceleration'],
  properties: { acceleration: { type: 'boolean', description: 'sk_msg short-circuit between workload and proxy sockets' } },
} as const;

export function registerWorkloadRoutes(app: FastifyInstance, deps: AdminDeps, datapath: DatapathAdmin): void {
  const { store } = deps;
  const serial = new SerialQueue();
  const admin = { auth: 'admin', kind: 'workload' } as const;
  const view = (w: WorkloadRecord) => {
    const a = datapath.attachment(w.tenant, w.name);
    return { ...w, attached: a !== undefined, ...(a ? { cgroupId: a.cgroupId, proxy4: a.proxy4, proxy6: a.proxy6, programs: a.programs } : {}) };
  };

  app.get<{ Params: Params }>(
    '/v1/tenants/:tenant/workloads',
    { config: { auth: 'admin' }, schema: { tags: ['workloads'], summary: 'List workloads', params: tenantParams } },
    async (req) => {
      requireTenant(deps, req.params.tenant);
      return { workloads: store.listWorkloads(req.params.tenant).map(view) };
    },
  );

  app.get<{ Params: NamedParams }>(
    '/v1/tenants/:tenant/workloads/:name',
    { config: admin, schema: { tags: ['workloads'], summary: 'Read a workload', params: namedParams } },
    async (req) => {
      requireTenant(deps, req.params.tenant);
      const w = store.getWorkload(req.params.tenant, req.params.name);
      if (!w) throw new IsomeshError('ISOMESH_ERR_WORKLOAD_NOT_FOUND', `workload "${req.params.name}" does not exist`);
      return view(w);
    },
  );

  app.put<{ Params: NamedParams; Body: { cgroupPath: string; proxyAddress?: string } }>(
    '/v1/tenants/:tenant/workloads/:name',
    {
      config: admin,
      schema: { tags: ['workloads'], summary: 'Redirect a cgroup\'s VIP traffic into the tenant listener', params: namedParams, body: workloadBody },
    },
    async (req, reply) => {
      const { tenant, name } = req.params;
      const result = await serial.run(async () => {
        requireTenant(deps, tenant);
        const body = validateWorkload(req.body);
        datapath.require();
        const owner = store.listWorkloads().find((w) => w.cgroupPath === body.cgroupPath);
        if (owner && (owner.tenant !== tenant || owner.name !== name)) {
          throw new IsomeshError('ISOMESH_ERR_WORKLOAD_INVALID', `cgroupPath ${body.cgroupPath} is already another workload's`);
        }
        const previous = store.getWorkload(tenant, name);
        await datapath.attach({ tenant, name, ...body });
        try {
          return store.putWorkload(tenant, name, body);
        } catch (err) {
          // put the datapath back the way the store still has it
          try {
            if (previous) await datapath.attach(previous);
            else await datapath.detach(tenant, name);
          } catch (undoErr) {
            deps.logger.error({ err: undoErr, tenant, workload: name }, 'failed to undo a workload attach after a failed commit');
          }
          throw err;
        }
      });
      return reply.code(result.created ? 201 : 200).send(view(result.workload));
    },
  );

  app.delete<{ Params: NamedParams }>(
    '/v1/tenants/:tenant/workloads/:name',
    { config: admin, schema: { tags: ['workloads'], summary: 'Stop redirecting the workload', params: namedParams } },
    async (req, reply) => {
      const { tenant, name } = req.params;
      await serial.run(async () => {
        requireTenant(deps, tenant);
        if (!store.getWorkload(tenant, name)) throw new IsomeshError('ISOMESH_ERR_WORKLOAD_NOT_FOUND', `workload "${name}" does not exist`);
        datapath.require();
        await datapath.detach(tenant, name);
        store.deleteWorkload(tenant, name);
      });
      return reply.code(204).send();
    },
  );

  app.get('/v1/datapath', { config: { auth: 'admin' }, schema: { tags: ['datapath'], summary: 'Programs, maps, counters, acceleration' } },
    async () => datapath.status());

  app.put<{ Body: { acceleration: boolean } }>(
    '/v1/datapath',
    { config: { auth: 'admin' }, schema: { tags: ['datapath'], summary: 'Turn sk_msg acceleration on or off', body: datapathBody } },
    async (req) => {
      datapath.setAcceleration(req.body.acceleration);
      return datapath.status();
    },
  );
}
