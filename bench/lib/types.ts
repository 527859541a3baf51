/**
 * What every benchmark section gets and returns. `bench/run.ts` starts one embedded PostgreSQL for the
 * whole run, calls each section in turn, and writes `results.md` (the sections' markdown, in order,
 * under the machine's description) and `results.json` (their data).
 */
import type { TestServer } from '../../test/support/postgres.ts';

export interface BenchContext {
  /** `--quick`: the whole run in under a minute (shorter phases, fewer repetitions). */
  readonly quick: boolean;
  /** The repository root (where `pg-resilience/register` resolves by self-reference after a build). */
  readonly root: string;
  /** A real PostgreSQL on loopback, owned by the run (sections may stop and start it, then must leave it up). */
  readonly server: TestServer;
  /** A progress line on stderr. */
  log(line: string): void;
}

/** A stated target and whether this run met it. */
export interface TargetCheck {
  readonly name: string;
  /** The target as stated in the issue, e.g. "C within 3 % of B (throughput, p50)". */
  readonly target: string;
  /** What this run measured, e.g. "C/B throughput 0.98, p50 1.01". */
  readonly measured: string;
  /** null when not measurable in this mode (e.g. --quick). */
  readonly met: boolean | null;
}

export interface SectionResult {
  /** Stable id, e.g. "overhead". */
  readonly id: string;
  /** Heading, e.g. "1. Happy-path overhead". */
  readonly title: string;
  /** The section's body in Markdown (tables and a few lines of explanation). */
  readonly markdown: string;
  readonly targets: readonly TargetCheck[];
  /** Raw numbers for results.json. */
  readonly data: unknown;
}

export interface Section {
  readonly id: string;
  readonly title: string;
  run(ctx: BenchContext): Promise<SectionResult>;
}
