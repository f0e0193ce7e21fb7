// What a plugin bundle must look like for the guest runtime to load it: CommonJS, ES2023, no
// platform built-ins, '@isomesh/sdk' left as require('@isomesh/sdk') (the isolate provides it).
// The host's publish-time compiler and `isomesh plugin build` both use these esbuild options, so a
// bundle built locally loads exactly like source published as JSON.

export const PLUGIN_BUNDLE_OPTIONS = Object.freeze({
  bundle: true,
  format: 'cjs',
  banner: { js: '"use strict";' },
  platform: 'neutral',
  target: 'es2023',
  mainFields: ['module', 'main'],
  conditions: ['isomesh', 'import', 'default'],
  external: ['@isomesh/sdk'],
  legalComments: 'none',
  charset: 'utf8',
} as const);

export const SDK_MODULE = '@isomesh/sdk';
