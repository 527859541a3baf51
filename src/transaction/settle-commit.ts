/**
 * withTransaction's side of commit-outcome.ts: learning the transaction id before COMMIT, and settling a
 * COMMIT lost in flight by looking the id up on other connections of the same pool.
 */
import type { CommitOutcomeResult, OperationStep } from '../policy/events.ts';
import {
  END_STUCK_BACKEND_SQL,
  noWriteOutcome,
  resolveCommitOutcome,
  TRANSACTION_ID_SQL,
  TRANSACTION_STATUS_SQL,
} from './commit-outcome.ts';

/** SQLSTATE 25P02: current transaction is aborted, commands ignored until end of transaction block. */
const IN_FAILED_TRANSACTION = '25P02';

/** What settleLostCommit needs of a client: pg's PoolClient fits. */
export interface LookupClient {
  query(text: string, values?: unknown[]): Promise<unknown>;
  release(error?: Error | boolean): void;
}

/**
 * The transaction's id (decimal text), or null when it has none (it wrote nothing), or undefined when the
 * transaction already failed (a statement's error was caught inside the callback): COMMIT will answer
 * ROLLBACK, nothing can commit. Any other error is the attempt's (a lost connection: COMMIT was not sent).
 */
export async function currentTransactionId(client: LookupClient): Promise<string | null | undefined> {
  let answer: { rows?: Array<{ xid?: unknown }> } | undefined;
  try {
    answer = (await client.query(TRANSACTION_ID_SQL)) as typeof answer;
  } catch (error) {
    if ((error as { code?: unknown } | null)?.code === IN_FAILED_TRANSACTION) return undefined;
    throw error;
  }
  const xid = answer?.rows?.[0]?.xid;
  return typeof xid === 'string' && xid !== '' ? xid : null;
}

export interface SettleOptions {
  /** A checkout that no policy governs (the transaction operation already does). */
  readonly connect: () => Promise<LookupClient>;
  /** The id learned before COMMIT; null: the transaction had none. */
  readonly transactionId: string | null;
  /** The lost connection's backend process id (pg's `client.processID`), when known. */
  readonly backendPid?: number;
  readonly withinMs: number;
  readonly isolationLevel: string | undefined;
  /** The connection error that lost the COMMIT, and its type. */
  readonly error: unknown;
  readonly errorType: string;
  readonly target: string;
  readonly report?: (step: OperationStep) => void;
}

/** What became of the lost COMMIT: committed, aborted, or unknown (reported as one `commit.outcome` step). */
export async function settleLostCommit(options: SettleOptions): Promise<CommitOutcomeResult> {
  const started = Date.now();
  const { transactionId } = options;
  let result: CommitOutcomeResult;
  let lookups = 0;
  if (transactionId === null) {
    result = noWriteOutcome(options.isolationLevel);
  } else {
    const resolved = await resolveCommitOutcome({
      transactionId,
      withinMs: options.withinMs,
      lookup: (id, timeoutMs) => lookupStatus(options.connect, id, timeoutMs, options.backendPid),
    });
    result = resolved.resolution;
    lookups = resolved.lookups;
  }
  options.report?.({
    type: 'commit.outcome',
    event: {
      target: options.target,
      operation: 'transaction',
      result,
      transactionId: transactionId ?? undefined,
      lookups,
      durationMs: Date.now() - started,
      error: options.error,
      errorType: options.errorType,
    },
  });
  return result;
}

/**
 * One `txid_status()` lookup on a client of the pool, abandoned after `timeoutMs` (a blackholed server
 * never answers): a client that comes late is released, one whose query is cut short is discarded.
 * `in progress` with the lost connection's backend idle in transaction: that backend is ended
 * (END_STUCK_BACKEND_SQL), so the next lookup finds it aborted; its errors (a role not allowed to end
 * it) are ignored: the lookups go on until the bound.
 */
function lookupStatus(
  connect: () => Promise<LookupClient>,
  transactionId: string,
  timeoutMs: number,
  backendPid: number | undefined,
): Promise<unknown> {
  return new Promise((resolve, reject) => {
    let settled = false;
    let client: LookupClient | undefined;
    const finish = (error: unknown, status?: unknown): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (error === undefined) resolve(status);
      else reject(error);
    };
    const timer = setTimeout(() => {
      const error = new Error(`txid_status(${transactionId}) had no answer within ${timeoutMs} ms`);
      if (client) releaseQuietly(client, error);
      finish(error);
    }, timeoutMs);
    connect().then(
      async (c) => {
        if (settled) {
          releaseQuietly(c);
          return;
        }
        client = c;
        try {
          const answer = (await c.query(TRANSACTION_STATUS_SQL, [transactionId])) as {
            rows?: Array<{ status?: unknown }>;
          };
          const status = answer?.rows?.[0]?.status ?? null;
          if (!settled && status === 'in progress' && backendPid !== undefined) {
            await c.query(END_STUCK_BACKEND_SQL, [backendPid, transactionId]).catch(() => {});
          }
          if (settled) return;
          releaseQuietly(c);
          finish(undefined, status);
        } catch (error) {
          if (settled) return;
          releaseQuietly(c, error instanceof Error ? error : true);
          finish(error);
        }
      },
      (error: unknown) => finish(error ?? new Error('checkout failed')),
    );
  });
}

function releaseQuietly(client: LookupClient, error?: Error | boolean): void {
  try {
    client.release(error);
  } catch {
    // already released: nothing to do
  }
}
