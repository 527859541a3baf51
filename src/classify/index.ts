/**
 * src/classify: turns any error into a decision (is it transient, did it reach the server, does it
 * count for the breaker). `classifyError()` (classify.ts) reads SQLSTATEs (sqlstate.ts) and network
 * errors (network.ts); the shapes are in types.ts.
 */
export { classifyError } from './classify.ts';
export type { ClassifierOverride, ErrorClass, ErrorClassification, ServerReach } from './types.ts';
export { ERROR_CLASSES } from './types.ts';
