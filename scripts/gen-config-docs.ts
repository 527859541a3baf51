// Generates docs/configuration.md from the code: the zod schema
// (types, allowed values, descriptions; telemetry included), the defaults (values, and the `//`
// rationale above each field in src/config/defaults.ts), the rules between fields (src/config/rules.ts)
// and the environment variable table.
//
//   node scripts/gen-config-docs.ts          write it
//   node scripts/gen-config-docs.ts --check  exit 1 if it differs from what would be generated
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ERROR_CLASSES } from '../src/classify/types.ts';
import { isConfigError } from '../src/config/config-error.ts';
import { GLOBAL_DEFAULTS, PROFILE_SUMMARIES, PROFILES } from '../src/config/defaults.ts';
import { ENV_VARS, RESERVED_ENV_PREFIXES, RESERVED_ENV_VARS } from '../src/config/env.ts';
import { resolveConfig, settingsForTarget } from '../src/config/resolve.ts';
import { CROSS_FIELD_RULES, TARGET_KEY_RULE } from '../src/config/rules.ts';
import { configSchema, type LeafField, metaOf, schemaAt, settingsLeaves } from '../src/config/schema.ts';
import { PROFILE_NAMES, type ProfileName } from '../src/config/types.ts';
import { formatted, root, table, writeOrCheck } from './generated-docs.ts';

const DOCS = join(root, 'docs', 'configuration.md');

// ---- rationale: the `//` line above each field of the defaults in src/config/defaults.ts ----

/** Each profile's object literal in defaults.ts, then the process-wide sections' (the same in every profile). */
const PROFILE_OBJECTS: Record<ProfileName, string> = { default: 'DEFAULT_PROFILE', batch: 'BATCH_PROFILE' };
const GLOBAL_OBJECTS: Record<keyof typeof GLOBAL_DEFAULTS, string> = {
  telemetry: 'TELEMETRY_DEFAULTS',
  coordination: 'COORDINATION_DEFAULTS',
};

/** Reads `// why` lines above each field of each defaults object literal: profile → dotted path → why. */
function readRationale(): Record<ProfileName, Map<string, string>> {
  const source = readFileSync(join(root, 'src', 'config', 'defaults.ts'), 'utf8');
  const out = {} as Record<ProfileName, Map<string, string>>;
  for (const profile of PROFILE_NAMES) {
    const why = new Map<string, string>();
    readObject(source, PROFILE_OBJECTS[profile], [], why, profile);
    for (const [section, object] of Object.entries(GLOBAL_OBJECTS)) {
      readObject(source, object, [section], why, profile);
    }
    out[profile] = why;
  }
  return out;
}

function readObject(
  source: string,
  object: string,
  prefix: string[],
  why: Map<string, string>,
  profile: string,
) {
  const lines = source.split('\n');
  const start = lines.findIndex((l) => l.startsWith(`const ${object}: `) && l.endsWith(' = {'));
  if (start < 0) throw new Error(`gen-config-docs: ${object} not found in src/config/defaults.ts`);
  const stack: string[] = [...prefix];
  let pending: string | undefined;
  for (const line of lines.slice(start + 1)) {
    const text = line.trim();
    if (text === '};') break;
    const comment = /^\/\/\s?(.*)$/.exec(text);
    const open = /^(\w+): \{$/.exec(text);
    const field = /^(\w+): .*,$/.exec(text);
    if (comment) pending = pending ? `${pending} ${comment[1]}` : comment[1];
    else if (open) {
      stack.push(open[1]!);
      pending = undefined;
    } else if (/^\},?$/.test(text)) stack.pop();
    else if (field) {
      const path = [...stack, field[1]].join('.');
      if (!pending) throw new Error(`gen-config-docs: ${profile} ${path} has no rationale comment`);
      why.set(path, pending);
      pending = undefined;
    }
  }
}

// ---- formatting ----

const code = (v: unknown) => `\`${typeof v === 'string' ? v : JSON.stringify(v)}\``;

/** A profile's default for a dotted path (the process-wide sections are the same in every profile). */
function get(profile: ProfileName, path: ReadonlyArray<string>): unknown {
  let node: unknown = { ...PROFILES[profile], ...GLOBAL_DEFAULTS };
  for (const k of path) node = (node as Record<string, unknown>)[k];
  return node;
}

function timing(t: Record<string, unknown> | undefined): string {
  if (!t) return '—';
  return Object.entries(t)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
}

const ENV_BY_SETTING = new Map(ENV_VARS.filter((v) => v.setting).map((v) => [v.setting!, v.name]));
/** Every setting: the per-target sections', then the process-wide ones'. */
const LEAVES: LeafField[] = [
  ...settingsLeaves(),
  ...Object.keys(GLOBAL_DEFAULTS).flatMap((section) =>
    settingsLeaves(schemaAt(configSchema, [section])!, [section]),
  ),
];

function sectionOf(leaf: LeafField): string {
  return leaf.path.slice(0, -1).join('.');
}
const SECTIONS = [...new Set(LEAVES.map(sectionOf))];

function valueCell(profile: ProfileName, leaf: LeafField): string {
  const v = get(profile, leaf.path);
  if (leaf.path[leaf.path.length - 1] === 'perErrorClass')
    return `${Object.keys(v as object).length} classes (below)`;
  return v === undefined ? 'unset' : code(v);
}

function settingRow(leaf: LeafField): string[] {
  const path = leaf.path.join('.');
  const env = ENV_BY_SETTING.get(path);
  const perClass = leaf.path[leaf.path.length - 1] === 'perErrorClass';
  return [
    `\`${path}\``,
    leaf.meta.type,
    perClass ? 'an object keyed by error class (below)' : leaf.meta.allowed,
    ...PROFILE_NAMES.map((p) => valueCell(p, leaf)),
    env ? `\`${env}\`` : '',
    leaf.meta.description,
  ];
}

function configRow(key: 'disabled' | 'profile' | 'targets' | 'classify', values: string[]): string[] {
  const meta = metaOf(schemaAt(configSchema, [key])!)!;
  const env = ENV_BY_SETTING.get(key);
  return [`\`${key}\``, meta.type, meta.allowed, ...values, env ? `\`${env}\`` : '', meta.description];
}

// ---- the example: validated here, so the docs cannot show a configuration that does not resolve ----

const EXAMPLE_FILE = {
  profile: 'default',
  retry: { maxAttempts: 4, perErrorClass: { serialization_failure: { maxAttempts: 5, initialDelayMs: 20 } } },
  circuitBreaker: { halfOpenAfterMs: 10000 },
  targets: {
    'reports.internal:5432/warehouse': {
      rateLimit: { enabled: true, ratePerMinute: 600, burst: 20, strategy: 'queue', maxWaitMs: 30000 },
      timeout: { queryMs: 120000 },
      retry: { maxAttempts: 2 },
    },
  },
};
const EXAMPLE_JSON = JSON.stringify(EXAMPLE_FILE, null, 2);

function checkExample(): void {
  const config = resolveConfig({
    env: { PG_RESILIENCE_CONFIG: '/app/pg-resilience.json' },
    readFile: () => EXAMPLE_JSON,
  });
  const s = settingsForTarget(config, 'reports.internal:5432/warehouse');
  if (s.rateLimit.ratePerMinute !== 600 || s.retry.maxAttempts !== 2 || config.retry.maxAttempts !== 4) {
    throw new Error('gen-config-docs: the example does not resolve as documented');
  }
}

/** A real ConfigError message, produced by the code. */
function exampleError(): string {
  try {
    resolveConfig({
      env: { PG_RESILIENCE_CONFIG: '/app/pg-resilience.json', PG_RESILIENCE_RETRY_ATTEMPTS: '0' },
      readFile: () => '{ "retry": { "maxAttemps": 5 } }',
      options: { rateLimit: { strategy: 'queue', maxQueueSize: 0 } },
    });
  } catch (e) {
    if (isConfigError(e)) return e.message;
    throw e;
  }
  throw new Error('gen-config-docs: the example error did not happen');
}

// ---- docs/configuration.md ----

function docs(): string {
  const why = readRationale();
  const out: string[] = [];
  const add = (...s: string[]) => out.push(...s);
  add(
    '# Configuration',
    '',
    '<!-- Generated by scripts/gen-config-docs.ts from src/config/schema.ts, defaults.ts and env.ts. Do not edit: run `node scripts/gen-config-docs.ts`. -->',
    '',
    'pg-resilience works with no configuration at all: the `default` profile protects an online app and never',
    'slows a healthy one. Everything below is optional.',
    '',
    '## Where settings come from',
    '',
    'Each layer overrides the one before it, field by field (objects are merged, not replaced):',
    '',
    '1. **the profile**: `default` or `batch` (below);',
    '2. **the JSON file** named by `PG_RESILIENCE_CONFIG`: any part of the configuration, per-target overrides included;',
    '3. **the simple `PG_RESILIENCE_*` variables** (table below);',
    '4. **the options object passed in code** (`ResilienceOptions`: every field optional, at any depth). Code wins',
    '   over the environment, as in OpenTelemetry JS.',
    '',
    'The profile is `options.profile`, else `PG_RESILIENCE_PROFILE`, else the file’s `profile`, else `default`.',
    '`classify` (a function) can only be passed in code. An environment variable set to the empty string counts',
    'as unset. A value of `undefined` in the options object counts as unset too.',
    '',
    'The configuration is read and validated once, at start-up. The result is deep-frozen: nothing can change it',
    'at run time. Each target’s settings are the base settings deep-merged with `targets["host:port/database"]`.',
    '',
    '## Invalid configuration',
    '',
    'Bad configuration fails at start-up with **one** `ConfigError` that lists every problem, one per line, each',
    'naming the field, the value as given (for an environment variable, the raw string), where it came from',
    '(`code`, `env PG_RESILIENCE_…`, `file /path`, `profile`) and what is allowed. Unknown keys (at any depth,',
    'error classes and target keys included) and unknown `PG_RESILIENCE_*` variables are errors too, with a',
    '“did you mean” when a known name is close. For example, with `PG_RESILIENCE_RETRY_ATTEMPTS=0`, a file',
    'holding `{ "retry": { "maxAttemps": 5 } }` and `{ rateLimit: { strategy: "queue", maxQueueSize: 0 } }` in code:',
    '',
    '```text',
    exampleError(),
    '```',
    '',
    '`isConfigError(e)` recognises it (across the ESM and CommonJS builds); `e.issues` holds',
    '`{ field, value, allowed, source }` for each line.',
    '',
    'Under `node --require pg-resilience/register` (or `--import`), the app does not start: the message above',
    'goes to stderr alone, followed by one line saying the app was not started and that',
    '`PG_RESILIENCE_DISABLED=true` runs it without pg-resilience, and the process exits with code 1.',
    '',
    '## Environment variables',
    '',
    table(
      ['variable', 'sets', 'description'],
      ENV_VARS.map((v) => [`\`${v.name}\``, v.setting ? `\`${v.setting}\`` : '', v.description]),
    ),
    '',
    `Reserved for other parts of pg-resilience (accepted, read elsewhere): ${RESERVED_ENV_VARS.map((n) => `\`${n}\``).join(', ')}`,
    `and every variable starting with ${RESERVED_ENV_PREFIXES.map((n) => `\`${n}\``).join(', ')}. Any other \`PG_RESILIENCE_*\``,
    'variable is an error (it is most likely a typo).',
    '',
    'Per-error-class values (`retry.perErrorClass`) keep their own attempts and delays whatever the',
    '`PG_RESILIENCE_RETRY_*` variables say; set them in the file or in code. To turn retries off, set',
    '`retry.enabled` to `false`.',
    '',
    '## Settings',
    '',
    'Columns `default` and `batch` give each profile’s value.',
    '',
    '### Top level',
    '',
  );
  const head = ['setting', 'type', 'allowed', '`default`', '`batch`', 'env', 'description'];
  add(
    table(head, [
      configRow(
        'disabled',
        PROFILE_NAMES.map(() => '`false`'),
      ),
      configRow(
        'profile',
        PROFILE_NAMES.map((p) => code(p)),
      ),
      configRow(
        'targets',
        PROFILE_NAMES.map(() => '`{}`'),
      ),
      configRow(
        'classify',
        PROFILE_NAMES.map(() => '—'),
      ),
    ]),
    '',
  );
  for (const section of SECTIONS) {
    const node = schemaAt(configSchema, section.split('.'));
    add(`### \`${section}\``, '', metaOf(node!)!.description, '');
    add(table(head, LEAVES.filter((l) => sectionOf(l) === section).map(settingRow)), '');
    if (section === 'retry') {
      add(
        '`retry.perErrorClass` is keyed by error class (see [error-classification.md](error-classification.md)):',
        `${ERROR_CLASSES.map((c) => `\`${c}\``).join(', ')}. Each entry may set \`maxAttempts\`, \`initialDelayMs\`,`,
        '`maxDelayMs`, `multiplier` and `jitter` (same ranges as above); the fields it leaves out come from `retry.*`.',
        'An entry matters only for a transient class: `pool_exhausted` (a pool checkout that waited',
        '`connectionTimeoutMillis` for a free client) and the permanent classes are never retried.',
        'A class listed in a later layer is merged with the profile’s entry for it. The profiles set:',
        '',
        table(
          ['error class', ...PROFILE_NAMES.map((p) => `\`${p}\``), 'why'],
          [...new Set(PROFILE_NAMES.flatMap((p) => Object.keys(PROFILES[p].retry.perErrorClass)))].map(
            (cls) => [
              `\`${cls}\``,
              ...PROFILE_NAMES.map((p) =>
                timing(
                  PROFILES[p].retry.perErrorClass[cls as 'deadlock'] as Record<string, unknown> | undefined,
                ),
              ),
              why.default.get(`retry.perErrorClass.${cls}`) ?? '',
            ],
          ),
        ),
        '',
      );
    }
  }
  add(
    '### Rules between fields',
    '',
    'Checked on the merged configuration, and again on every target’s merged settings:',
    '',
  );
  for (const rule of [...CROSS_FIELD_RULES.map((r) => r.doc), TARGET_KEY_RULE]) add(`- ${rule}`);
  add('');

  // Profiles and their rationale.
  add('## Profiles', '');
  for (const p of PROFILE_NAMES) add(`- \`${p}\`: ${PROFILE_SUMMARIES[p]}.`);
  add(
    '',
    'Pick one with `profile` in code or in the file, or `PG_RESILIENCE_PROFILE`. The other layers override it',
    'field by field.',
    '',
    '### Why the `default` values',
    '',
    table(
      ['setting', 'value', 'why'],
      LEAVES.filter((l) => l.path[l.path.length - 1] !== 'perErrorClass').map((l) => [
        `\`${l.path.join('.')}\``,
        valueCell('default', l),
        why.default.get(l.path.join('.')) ?? '',
      ]),
    ),
    '',
    '### How `batch` differs',
    '',
    table(
      ['setting', '`default`', '`batch`', 'why'],
      LEAVES.filter(
        (l) =>
          l.path[l.path.length - 1] !== 'perErrorClass' &&
          JSON.stringify(get('batch', l.path)) !== JSON.stringify(get('default', l.path)),
      ).map((l) => [
        `\`${l.path.join('.')}\``,
        valueCell('default', l),
        valueCell('batch', l),
        why.batch.get(l.path.join('.')) ?? '',
      ]),
    ),
    '',
    'Everything else in `batch` is as in `default`.',
    '',
  );

  // Per-target overrides.
  add(
    '## Per-target overrides',
    '',
    'A target is one server and database, named `host:port/database` (as in telemetry’s `pool.name`), e.g.',
    '`db.internal:5432/app`. `targets` maps a target to any subset of the settings; it is deep-merged over the',
    'base settings when that target’s policies are first built. The key must match the target’s name exactly;',
    'a target with no entry uses the base settings.',
    '',
    'Example: a file for `PG_RESILIENCE_CONFIG`. Every app gets four attempts and more patience on',
    'serialization failures; the reporting warehouse is also rate-limited, gets a two-minute statement timeout and',
    'fewer retries:',
    '',
    '```json',
    EXAMPLE_JSON,
    '```',
    '',
    'Save it as `pg-resilience.json` and run the app with it:',
    '',
    '```sh',
    'PG_RESILIENCE_CONFIG=./pg-resilience.json node --require pg-resilience/register app.js',
    '```',
    '',
    'To see what a configuration resolves to from a clone of this repository (Node ≥ 22.18 runs the TypeScript',
    'sources directly):',
    '',
    '```sh',
    `PG_RESILIENCE_CONFIG=./pg-resilience.json node -e "import('./src/config/index.ts').then((c) => console.log(JSON.stringify(c.settingsForTarget(c.resolveConfig(), 'reports.internal:5432/warehouse'), null, 2)))"`,
    '```',
    '',
    'The same in code, where it overrides the file and the environment:',
    '',
    '```ts',
    "import type { ResilienceOptions } from 'pg-resilience';",
    '',
    'const options: ResilienceOptions = {',
    '  retry: { maxAttempts: 4 },',
    "  targets: { 'reports.internal:5432/warehouse': { rateLimit: { enabled: true, ratePerMinute: 600 } } },",
    '};',
    '```',
    '',
  );
  return `${out.join('\n')}`;
}

// ---- main ----

async function main(): Promise<number> {
  checkExample();
  return writeOrCheck('gen-config-docs', [[DOCS, await formatted(DOCS, docs())]]);
}

process.exitCode = await main();
