// Generates the Grafana dashboards (grafana/dashboards/*.json) from their TypeScript sources
// (grafana/dashboards/src/, built with @grafana/grafana-foundation-sdk). Series and label names come from
// the catalog (src/telemetry/catalog.ts), instrumentation-pg's from grafana/dashboards/src/instrumentation-pg.ts.
//
//   node scripts/gen-dashboards.ts          write the dashboards
//   node scripts/gen-dashboards.ts --check  exit 1 if a committed dashboard differs from what would be generated
import { join } from 'node:path';
import { OVERVIEW_UID, POSTGRESQL_CLIENT_UID } from '../grafana/dashboards/src/common.ts';
import { overviewDashboard } from '../grafana/dashboards/src/overview.ts';
import { postgresqlClientDashboard } from '../grafana/dashboards/src/postgresql-client.ts';
import { DASHBOARDS_DIR } from '../grafana/dashboards/src/queries.ts';
import { formatted, writeOrCheck } from './generated-docs.ts';

const dashboards: Array<[uid: string, json: Record<string, unknown>]> = [
  [OVERVIEW_UID, overviewDashboard()],
  [POSTGRESQL_CLIENT_UID, postgresqlClientDashboard()],
];

const wanted: Array<[path: string, text: string]> = [];
for (const [uid, json] of dashboards) {
  const path = join(DASHBOARDS_DIR, `${uid}.json`);
  wanted.push([path, await formatted(path, `${JSON.stringify(json, null, 2)}\n`)]);
}
process.exitCode = writeOrCheck('gen-dashboards', wanted);
