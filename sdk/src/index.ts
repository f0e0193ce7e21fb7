// @isomesh/sdk — what a plugin imports. Inside an isolate the host provides this module from the
// same guest runtime (./guest/), so definePlugin behaves identically in tests and in production.

export { configParser, definePlugin, isDefinedPlugin } from './guest/define.ts';
export type {
  EarlyResponse,
  HookReturn,
  JsonWebKey,
  JsonWebKeySet,
  JwtAlgorithm,
  JwtClaims,
  JwtErrorCode,
  JwtHeader,
  JwtVerifyError,
  JwtVerifyOptions,
  JwtVerifyResult,
  LogFields,
  Plugin,
  PluginContext,
  PluginHeaders,
  PluginJwt,
  PluginLog,
  PluginRequest,
  PluginResponse,
  PluginSecrets,
  RateLimitOptions,
  RateLimitResult,
  RespondInit,
} from './types.ts';
