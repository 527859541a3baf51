/** Error classification: `classifyError()` and its table, plus two convenience guards. */
import { classifyError } from './classify.ts';
import type { ClassifierOverride, ServerReach } from './types.ts';

export { classifyError } from './classify.ts';
export type { ClassifierOverride, ErrorClass, ErrorClassification, ServerReach } from './types.ts';
export { ERROR_CLASSES } from './types.ts';

/** Is this error worth another attempt (if the call's safety rules allow it)? */
export const isTransient = (error: unknown, override?: ClassifierOverride): boolean =>
  classifyError(error, override).transient;

/** Did the failed operation reach the server: `no`, `unknown` (may have been applied) or `rejected`? */
export const reachedServer = (error: unknown, override?: ClassifierOverride): ServerReach =>
  classifyError(error, override).reachedServer;
