// The fault-injecting TCP proxy lives in src/demo/fault-proxy.ts (the demo ships it); the suites import
// it from here.
export * from '../../src/demo/fault-proxy.ts';
