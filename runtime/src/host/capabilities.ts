// Host capabilities (ctx.jwt.verify, ctx.sleep) are implemented once, in the SDK, so the production
// sandbox and the plugin author's local test host (createTestHost) perform them identically. The
// runtime may depend on the SDK (DESIGN.md: runtime → sdk); the SDK never depends on the runtime.
export {
  CAPABILITY_BOUNDS,
  CapabilityFetchError,
  HostCapabilities,
  type CapabilityEnv,
  type CapabilityFetch,
  type CapabilityFetchRequest,
  type CapabilityFetchResponse,
  type CapabilityFailureCode,
  type CapabilityResult,
} from '@isomesh/sdk/host-capabilities';
