/**
 * The running instrumentation's policies, for the parts of the public API that are called directly
 * (withTransaction): they must use the same breakers, rate limits and budgets as the patched pg calls.
 *
 * Kept on `globalThis` under a registered symbol: `--require pg-resilience/register` loads the
 * CommonJS build while an ESM app imports `withTransaction` from the ESM build, and the two must share
 * one runtime. When no instrumentation is enabled, `runtime()` builds one from the configuration
 * (defaults, PG_RESILIENCE_* variables, the config file) on first use, so the API works on its own.
 */
import { resolveConfig } from './config/index.ts';
import { Targets } from './instrumentation/targets.ts';
import { PolicyRegistry } from './policy/registry.ts';

const ACTIVE = Symbol.for('pg-resilience.runtime');
const holder = globalThis as { [ACTIVE]?: Targets };
let standalone: Targets | undefined;

export function setRuntime(targets: Targets): void {
  holder[ACTIVE] = targets;
}

export function clearRuntime(targets: Targets | undefined): void {
  if (targets !== undefined && holder[ACTIVE] === targets) delete holder[ACTIVE];
}

/** The enabled instrumentation's targets, else this module's own (built once, on first use). */
export function runtime(): Targets {
  const active = holder[ACTIVE];
  if (active !== undefined) return active;
  standalone ??= new Targets(new PolicyRegistry(resolveConfig()));
  return standalone;
}
