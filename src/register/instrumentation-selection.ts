/**
 * Which OpenTelemetry instrumentations the register hook loads, read from the OpenTelemetry JS
 * convention exactly as `@opentelemetry/auto-instrumentations-node` reads it:
 * - `OTEL_NODE_ENABLED_INSTRUMENTATIONS` (when set and non-empty): only the listed ones load;
 * - `OTEL_NODE_DISABLED_INSTRUMENTATIONS`: the listed ones are then removed;
 * - comma-separated names without the `@opentelemetry/instrumentation-` prefix, each trimmed
 *   (`pg` is `@opentelemetry/instrumentation-pg`); an empty variable counts as unset.
 *
 * The hook loads one such instrumentation, `pg`. Other names are valid for other hooks (the
 * auto-instrumentations read the same variables), so they are reported as unknown here and ignored.
 * pg-resilience itself is not an instrumentation in this sense and no name here turns it off:
 * `OTEL_NODE_ENABLED_INSTRUMENTATIONS=http` must not silently remove an app's resilience. Its own
 * switch is `PG_RESILIENCE_DISABLED=true`.
 */

const PREFIX = '@opentelemetry/instrumentation-';
/** The instrumentations the register hook can load, by their package names. */
const KNOWN = [`${PREFIX}pg`] as const;
type Known = (typeof KNOWN)[number];

export interface InstrumentationSelection {
  /** Whether instrumentation-pg loads. */
  readonly pg: boolean;
  /** Names from the variables this hook does not load (full package names), to warn about. */
  readonly unknown: readonly string[];
}

/** The variable's names as full package names; [] when unset or empty. */
function namesFrom(value: string | undefined): string[] {
  if (!value) return [];
  return value.split(',').map((suffix) => `${PREFIX}${suffix.trim()}`);
}

export function selectInstrumentations(env: NodeJS.ProcessEnv = process.env): InstrumentationSelection {
  const enabledSet = Boolean(env.OTEL_NODE_ENABLED_INSTRUMENTATIONS);
  const enabled = namesFrom(env.OTEL_NODE_ENABLED_INSTRUMENTATIONS);
  const disabled = namesFrom(env.OTEL_NODE_DISABLED_INSTRUMENTATIONS);
  const loads = (name: Known): boolean => !disabled.includes(name) && (!enabledSet || enabled.includes(name));
  const unknown = [...new Set([...enabled, ...disabled])].filter(
    (name) => !(KNOWN as readonly string[]).includes(name),
  );
  return { pg: loads(`${PREFIX}pg`), unknown };
}
