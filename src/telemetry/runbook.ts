/**
 * The runbook: one section of docs/runbook.md per alert, each saying what to check and what to do. The
 * alert rules (`runbook_url`) and the dashboards' panel links point at these anchors; a test checks that
 * every anchor exists in docs/runbook.md.
 */

/** Where docs/runbook.md is published (the repository's docs). */
export const RUNBOOK_URL = 'https://github.com/pg-resilience/pg-resilience/blob/main/docs/runbook.md';

/** Alert name → runbook anchor (a `## ` heading of docs/runbook.md, GitHub-style slug). */
export const RUNBOOK_ANCHORS = {
  PgResilienceBreakerOpen: 'breaker-open',
  PgResilienceBreakerFlapping: 'breaker-flapping',
  PgResilienceRetryStorm: 'retry-storm',
  PgResilienceRetriesExhausted: 'retries-exhausted',
  PgResilienceRateLimitSaturated: 'rate-limit-saturation',
  PgResilienceRecoveryFailing: 'recovery-failing',
  PgResilienceErrorRatioHigh: 'error-ratio-high',
  PgResilienceSlowOperations: 'slow-operations',
  PgResiliencePoolUtilisationHigh: 'pool-utilisation-high',
  PgResilienceClientErrorsSpiking: 'client-errors-spiking',
  PgResilienceClientsLeaked: 'clients-leaked',
  PgResilienceCommitOutcomeUnknown: 'commit-outcome-unknown',
  PgResilienceCoordinationDegraded: 'coordination-degraded',
  PgResilienceFailoverDetected: 'failover-detected',
  PgResilienceWritesUnavailable: 'writes-unavailable',
  PgResilienceConnectionBudgetExhausted: 'connection-budget-exhausted',
} as const;

export type AlertName = keyof typeof RUNBOOK_ANCHORS;

/** The runbook link of an alert (or of any anchor of docs/runbook.md). */
export function runbookUrl(anchor: string): string {
  return `${RUNBOOK_URL}#${anchor}`;
}
