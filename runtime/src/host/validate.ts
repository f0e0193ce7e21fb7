// Result checks live with the guest runtime (sdk/src/guest/verdict.ts): the chain runner applies
// them inside the isolate per entry, the host applies them again to what comes out of the isolate.
export * from '@isomesh/sdk/verdict';
