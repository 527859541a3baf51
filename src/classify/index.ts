/** Error classification: `classifyError()` and its table. */
export { classifyError } from './classify.ts';
export type { ClassifierOverride, ErrorClass, ErrorClassification, ServerReach } from './types.ts';
export { ERROR_CLASSES } from './types.ts';
