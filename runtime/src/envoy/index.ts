// The Envoy component's face: the bootstrap isomesh writes for Envoy and the supervisor that runs it
// (ISOMESH_DATAPLANE=envoy).
export { bootstrapErrors, envoyBootstrap, XDS_CLUSTER } from './bootstrap.ts';
export type { BootstrapOptions } from './bootstrap.ts';
export { EnvoySupervisor, findExecutable } from './supervisor.ts';
export type { EnvoySupervisorOptions } from './supervisor.ts';
export { EnvoyListenerPorts } from './ports.ts';
