import type { ErrorClass, ErrorClassification, ServerReach } from './types.ts';

/** A frozen classification (the tables share their entries; nothing may change one). */
export const classification = (
  errorClass: ErrorClass,
  transient: boolean,
  reachedServer: ServerReach,
  countsForBreaker: boolean,
  errorType: string,
): ErrorClassification =>
  Object.freeze({ errorClass, transient, reachedServer, countsForBreaker, errorType });
