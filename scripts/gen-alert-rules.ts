// Writes prometheus/rules/pg-resilience.yml and its promtool unit tests
// (prometheus/rules/pg-resilience.test.yml) from scripts/alert-rules.ts.
//
//   node scripts/gen-alert-rules.ts          write it
//   node scripts/gen-alert-rules.ts --check  exit 1 if it differs from what would be generated
import { join } from 'node:path';
import { alertRules, alertRuleTests } from './alert-rules.ts';
import { formatted, root, writeOrCheck } from './generated-docs.ts';

const RULES = join(root, 'prometheus', 'rules', 'pg-resilience.yml');
const TESTS = join(root, 'prometheus', 'rules', 'pg-resilience.test.yml');
process.exitCode = writeOrCheck('gen-alert-rules', [
  [RULES, await formatted(RULES, alertRules())],
  [TESTS, await formatted(TESTS, alertRuleTests())],
]);
