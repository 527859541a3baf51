// Writes prometheus/rules/pg-resilience.yml, its promtool unit tests
// (prometheus/rules/pg-resilience.test.yml) and the table of alerts in docs/runbook.md from
// scripts/alert-rules.ts.
//
//   node scripts/gen-alert-rules.ts          write it
//   node scripts/gen-alert-rules.ts --check  exit 1 if it differs from what would be generated
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { RUNBOOK_ANCHORS } from '../src/telemetry/runbook.ts';
import { ALERTS, alertRules, alertRuleTests } from './alert-rules.ts';
import { formatted, replaceRegion, root, table, writeOrCheck } from './generated-docs.ts';

const RUNBOOK = join(root, 'docs', 'runbook.md');
const START = '<!-- alert-rules:start -->';
const END = '<!-- alert-rules:end -->';

/** The runbook's table of alerts (name, severity, condition, section). */
function alertsRegion(): string {
  return [
    START,
    '',
    '<!-- Generated from scripts/alert-rules.ts by scripts/gen-alert-rules.ts: do not edit by hand. -->',
    '',
    table(
      ['alert', 'severity', 'for', 'fires when', 'section'],
      ALERTS.map((a) => [
        `\`${a.alert}\``,
        a.severity,
        a.for,
        a.description.replace(/\{\{ \$labels\.\w+ \}\}/g, 'a target').replace(/:.*$/, ''),
        `[${RUNBOOK_ANCHORS[a.alert]}](#${RUNBOOK_ANCHORS[a.alert]})`,
      ]),
    ),
    '',
    END,
  ].join('\n');
}

const RULES = join(root, 'prometheus', 'rules', 'pg-resilience.yml');
const TESTS = join(root, 'prometheus', 'rules', 'pg-resilience.test.yml');
process.exitCode = writeOrCheck('gen-alert-rules', [
  [RULES, await formatted(RULES, alertRules())],
  [TESTS, await formatted(TESTS, alertRuleTests())],
  [
    RUNBOOK,
    await formatted(
      RUNBOOK,
      replaceRegion(readFileSync(RUNBOOK, 'utf8'), START, END, alertsRegion(), 'docs/runbook.md'),
    ),
  ],
]);
