// The compose stack (docker-compose.yml, Dockerfile.demo, otel-collector/config.yaml,
// prometheus/prometheus.yml) cannot be started here (no Docker engine, no otelcol binary), so this reads
// the files and checks that they fit together: pinned images, mounted paths that exist, the documented
// ports, the demo's OTLP endpoint against the collector's receivers, the collector's pipelines against
// its components, Prometheus against the collector's exporter and the rules mount, `promtool check config`.
// Every check is a function returning the problems it found; the last group feeds each one a broken copy
// to show it can fail.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  cpSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { isMap, isScalar, parse, parseDocument } from 'yaml';

const root = path.join(import.meta.dirname, '..', '..');
const read = (rel: string): string => readFileSync(path.join(root, rel), 'utf8');

type Obj = Record<string, any>;
const clone = <T>(v: T): T => structuredClone(v);

const compose: Obj = parse(read('docker-compose.yml'));
const collector: Obj = parse(read('otel-collector/config.yaml'));
const prom: Obj = parse(read('prometheus/prometheus.yml'));
const dockerfile = read('Dockerfile.demo');

const SERVICES = ['postgres', 'demo', 'otel-collector', 'prometheus', 'grafana', 'jaeger'] as const;
const IMAGES: Record<string, string> = {
  postgres: 'postgres',
  'otel-collector': 'otel/opentelemetry-collector-contrib',
  prometheus: 'prom/prometheus',
  grafana: 'grafana/grafana',
  jaeger: 'jaegertracing/jaeger',
};
/** Published ports (host port = container port) docs/observability-stack.md documents. */
const PORTS: Record<string, number[]> = {
  grafana: [3000],
  prometheus: [9090],
  jaeger: [16686],
  'otel-collector': [4317, 4318],
  demo: [9464, 9465],
};
/** Exporter types of the contrib distribution this config may use; the pre-0.144 names are refused. */
const RENAMED_EXPORTERS: Record<string, string> = { otlp: 'otlp_grpc', otlphttp: 'otlp_http' };
const KNOWN_EXPORTERS = ['otlp_grpc', 'otlp_http', 'prometheus', 'debug'];
const GRAFANA_PROVISIONING = '/etc/grafana/provisioning';
const GRAFANA_DASHBOARDS = '/var/lib/grafana/dashboards';

// ---------------------------------------------------------------------------------------------------------
// Helpers

/** `name[:tag]` of an image reference (a registry port is not a tag). */
function splitImage(ref: string): { name: string; tag: string | undefined } {
  const at = ref.split('@')[0]!;
  const slash = at.lastIndexOf('/');
  const colon = at.lastIndexOf(':');
  return colon > slash
    ? { name: at.slice(0, colon), tag: at.slice(colon + 1) }
    : { name: at, tag: undefined };
}

/** A pinned tag names a version: not missing, not `latest`, starts with a version number. */
function pinned(tag: string | undefined): boolean {
  return tag !== undefined && tag !== 'latest' && /^v?\d+(\.\d+)+/.test(tag);
}

interface Mount {
  source: string;
  target: string;
  readOnly: boolean;
}

/** Bind mounts of a service (short `./src:/dst[:ro]` and long `{type: bind}` forms). */
function binds(service: Obj): Mount[] {
  const out: Mount[] = [];
  for (const v of service.volumes ?? []) {
    if (typeof v === 'string') {
      const [source, target, mode] = v.split(':');
      if (source && target && /^\.{1,2}\//.test(source)) {
        out.push({ source, target, readOnly: (mode ?? '').split(',').includes('ro') });
      }
    } else if (v?.type === 'bind') {
      out.push({ source: v.source, target: v.target, readOnly: v.read_only === true });
    }
  }
  return out;
}

/** Published ports as [hostPort, containerPort] (short `[ip:]host:container[/proto]` and long forms). */
function published(service: Obj): [number, number][] {
  const out: [number, number][] = [];
  for (const p of service.ports ?? []) {
    if (typeof p === 'object') {
      out.push([Number(p.published), Number(p.target)]);
      continue;
    }
    const parts = String(p).split('/')[0]!.split(':');
    const container = Number(parts.at(-1));
    const host = parts.length >= 2 ? Number(parts.at(-2)) : NaN;
    out.push([host, container]);
  }
  return out;
}

/** `host:port` of an endpoint (`0.0.0.0:4317`, `jaeger:4317`, `http://x:4318`). */
function hostPort(endpoint: string): { host: string; port: number } {
  const u = new URL(/^[a-z]+:\/\//.test(endpoint) ? endpoint : `tcp://${endpoint}`);
  return { host: u.hostname, port: Number(u.port) };
}

function env(service: Obj): Record<string, string> {
  const e = service.environment ?? {};
  if (Array.isArray(e)) {
    return Object.fromEntries(
      e.map((kv: string) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
    );
  }
  return Object.fromEntries(Object.entries(e).map(([k, v]) => [k, String(v)]));
}

function argv(command: unknown): string[] {
  if (Array.isArray(command)) return command.map(String);
  return typeof command === 'string' ? command.split(/\s+/).filter(Boolean) : [];
}

function healthTest(service: Obj): string {
  const t = service.healthcheck?.test;
  return Array.isArray(t) ? t.join(' ') : String(t ?? '');
}

/** A glob of basenames (`*`, `?`) as a RegExp. */
function globRegExp(glob: string): RegExp {
  const body = glob
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '[^/]*')
    .replace(/\?/g, '[^/]');
  return new RegExp(`^${body}$`);
}

/** Repository files a container path designates through a service's bind mounts (globs in the basename). */
function hostFiles(service: Obj, containerPath: string): string[] | undefined {
  for (const m of binds(service)) {
    if (containerPath !== m.target && !containerPath.startsWith(`${m.target}/`)) continue;
    const rel = path.join(m.source, containerPath.slice(m.target.length));
    const dir = path.join(root, path.dirname(rel));
    if (!existsSync(dir)) return [];
    const re = globRegExp(path.basename(rel));
    return readdirSync(dir)
      .filter((f) => re.test(f))
      .map((f) => path.join(dir, f));
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------------------
// Checks: each returns the problems found (empty: fine)

function checkImages(c: Obj, dockerfileText: string): string[] {
  const problems: string[] = [];
  for (const name of SERVICES) {
    const s = c.services?.[name];
    if (!s) {
      problems.push(`service ${name} is missing`);
      continue;
    }
    if (s.image === undefined && s.build === undefined) problems.push(`${name}: neither image nor build`);
    if (s.image !== undefined) {
      const { name: image, tag } = splitImage(s.image);
      if (!pinned(tag)) problems.push(`${name}: image ${s.image} has no pinned version tag`);
      if (IMAGES[name] && image !== IMAGES[name])
        problems.push(`${name}: image ${image}, expected ${IMAGES[name]}`);
    }
  }
  for (const line of dockerfileText.split('\n')) {
    const m = /^FROM\s+(?:--platform=\S+\s+)?(\S+)/i.exec(line);
    if (m && !pinned(splitImage(m[1]!).tag)) problems.push(`Dockerfile.demo: FROM ${m[1]} is not pinned`);
  }
  if (!/^FROM\s/im.test(dockerfileText)) problems.push('Dockerfile.demo: no FROM');
  // The collector config uses the component names of contrib >= 0.144 (otlp_grpc) and translation_strategy.
  const col = c.services?.['otel-collector']?.image;
  const v = col ? /^(\d+)\.(\d+)\./.exec(splitImage(col).tag ?? '') : null;
  if (!v || Number(v[1]) !== 0 || Number(v[2]) < 144) {
    problems.push(`otel-collector: ${col} predates contrib 0.144 (otlp_grpc, otlp_http)`);
  }
  return problems;
}

function checkMounts(c: Obj): string[] {
  const problems: string[] = [];
  for (const [name, s] of Object.entries<Obj>(c.services ?? {})) {
    for (const m of binds(s)) {
      const p = path.join(root, m.source);
      if (!existsSync(p)) problems.push(`${name}: ${m.source} (mounted at ${m.target}) does not exist`);
      if (!m.readOnly) problems.push(`${name}: ${m.source} is mounted read-write`);
    }
    if (s.build) {
      const ctx = path.join(root, typeof s.build === 'string' ? s.build : (s.build.context ?? '.'));
      const file = path.join(
        ctx,
        typeof s.build === 'object' ? (s.build.dockerfile ?? 'Dockerfile') : 'Dockerfile',
      );
      if (!existsSync(file)) problems.push(`${name}: ${path.relative(root, file)} does not exist`);
    }
  }
  // Config files are mounted as files, directories as directories.
  const expectations: [string, string, 'file' | 'dir'][] = [
    ['otel-collector', './otel-collector/config.yaml', 'file'],
    ['prometheus', './prometheus/prometheus.yml', 'file'],
    ['prometheus', './prometheus/rules', 'dir'],
    ['grafana', './grafana/provisioning', 'dir'],
    ['grafana', './grafana/dashboards', 'dir'],
  ];
  for (const [name, source, kind] of expectations) {
    const m = binds(c.services?.[name] ?? {}).find(
      (b) => path.normalize(b.source) === path.normalize(source),
    );
    if (!m) {
      problems.push(`${name}: ${source} is not mounted`);
      continue;
    }
    const p = path.join(root, source);
    if (existsSync(p) && statSync(p).isDirectory() !== (kind === 'dir'))
      problems.push(`${source} is not a ${kind}`);
  }
  const grafana = binds(c.services?.grafana ?? {});
  for (const [source, target] of [
    ['./grafana/provisioning', GRAFANA_PROVISIONING],
    ['./grafana/dashboards', GRAFANA_DASHBOARDS],
  ]) {
    if (!grafana.some((m) => path.normalize(m.source) === path.normalize(source!) && m.target === target)) {
      problems.push(`grafana: ${source} must be mounted at ${target}`);
    }
  }
  return problems;
}

function checkPorts(c: Obj): string[] {
  const problems: string[] = [];
  for (const [name, ports] of Object.entries(PORTS)) {
    const have = published(c.services?.[name] ?? {});
    for (const port of ports) {
      if (!have.some(([h, t]) => h === port && t === port))
        problems.push(`${name}: port ${port} is not published as ${port}`);
    }
  }
  return problems;
}

/** The demo talks OTLP to a receiver the collector defines, with the right protocol. */
function checkDemoOtlp(c: Obj, col: Obj): string[] {
  const problems: string[] = [];
  const e = env(c.services?.demo ?? {});
  const endpoint = e.OTEL_EXPORTER_OTLP_ENDPOINT;
  if (!endpoint) return ['demo: OTEL_EXPORTER_OTLP_ENDPOINT is not set'];
  const { host, port } = hostPort(endpoint);
  if (!c.services?.[host]) problems.push(`demo: OTLP host ${host} is not a compose service`);
  if (host !== 'otel-collector') problems.push(`demo: OTLP host ${host}, expected otel-collector`);
  // The Node SDK's default protocol is http/protobuf.
  const protocol = (e.OTEL_EXPORTER_OTLP_PROTOCOL ?? 'http/protobuf').startsWith('http') ? 'http' : 'grpc';
  const receiver = col.receivers?.otlp?.protocols?.[protocol]?.endpoint;
  if (!receiver) problems.push(`collector: no OTLP ${protocol} receiver`);
  else {
    const r = hostPort(receiver);
    if (r.port !== port)
      problems.push(`demo sends OTLP/${protocol} to port ${port}, the collector listens on ${r.port}`);
    if (r.host !== '0.0.0.0')
      problems.push(`collector: OTLP ${protocol} receiver binds ${r.host}, not 0.0.0.0`);
  }
  if (
    !col.service?.pipelines ||
    !Object.values<Obj>(col.service.pipelines).every((p) => p.receivers?.includes('otlp'))
  ) {
    problems.push('collector: not every pipeline receives OTLP');
  }
  const exporters = (e.OTEL_METRICS_EXPORTER ?? '').split(',').map((s) => s.trim());
  for (const want of ['otlp', 'prometheus']) {
    if (!exporters.includes(want)) problems.push(`demo: OTEL_METRICS_EXPORTER lacks ${want}`);
  }
  for (const v of ['OTEL_TRACES_EXPORTER', 'OTEL_LOGS_EXPORTER']) {
    if (e[v] !== 'otlp') problems.push(`demo: ${v}=${e[v]}, expected otlp`);
  }
  for (const v of ['OTEL_EXPORTER_PROMETHEUS_HOST', 'PG_RESILIENCE_HEALTH_HOST']) {
    if (e[v] !== '0.0.0.0') problems.push(`demo: ${v}=${e[v]}, must be 0.0.0.0 in a container`);
  }
  if (e.PG_RESILIENCE_HEALTH_PORT !== '9465') problems.push('demo: PG_RESILIENCE_HEALTH_PORT is not 9465');
  if (!e.OTEL_SERVICE_NAME) problems.push('demo: OTEL_SERVICE_NAME is not set');
  return problems;
}

/** The demo runs in a loop against the compose PostgreSQL, with its credentials. */
function checkDemoCommand(c: Obj, dockerfileText: string): string[] {
  const problems: string[] = [];
  const args = argv(c.services?.demo?.command);
  if (args.slice(0, 2).join(' ') !== 'node demo/main.ts') problems.push(`demo: command ${args.join(' ')}`);
  if (!args.includes('--loop')) problems.push('demo: no --loop');
  const url = args[args.indexOf('--database-url') + 1];
  if (!args.includes('--database-url') || !url) return [...problems, 'demo: no --database-url'];
  const u = new URL(url);
  const pg = env(c.services?.postgres ?? {});
  if (!c.services?.[u.hostname]) problems.push(`demo: database host ${u.hostname} is not a compose service`);
  if (u.port !== '5432') problems.push(`demo: database port ${u.port}`);
  if (u.username !== pg.POSTGRES_USER || u.password !== pg.POSTGRES_PASSWORD) {
    problems.push('demo: database credentials differ from the postgres service');
  }
  if (u.pathname.slice(1) !== pg.POSTGRES_DB)
    problems.push(`demo: database ${u.pathname.slice(1)} ≠ POSTGRES_DB`);
  const cmd = /^CMD\s+(\[.*\])\s*$/m.exec(dockerfileText);
  if (!cmd || JSON.stringify(JSON.parse(cmd[1]!)) !== JSON.stringify(args)) {
    problems.push('Dockerfile.demo: CMD differs from the compose command');
  }
  return problems;
}

/** Pipelines name only defined components; every defined component is used; current exporter names. */
function checkCollectorGraph(col: Obj): string[] {
  const problems: string[] = [];
  const pipelines: Obj = col.service?.pipelines ?? {};
  for (const signal of ['traces', 'metrics', 'logs']) {
    if (!pipelines[signal]) problems.push(`collector: no ${signal} pipeline`);
  }
  const used: Record<string, Set<string>> = {
    receivers: new Set(),
    processors: new Set(),
    exporters: new Set(),
  };
  for (const [id, p] of Object.entries<Obj>(pipelines)) {
    for (const kind of ['receivers', 'processors', 'exporters'] as const) {
      for (const name of p[kind] ?? []) {
        used[kind]!.add(name);
        if (!col[kind] || !(name in col[kind]))
          problems.push(`collector: pipeline ${id} names undefined ${kind.slice(0, -1)} ${name}`);
      }
    }
    if (!p.receivers?.length || !p.exporters?.length)
      problems.push(`collector: pipeline ${id} lacks receivers or exporters`);
    if (p.processors?.[0] !== 'memory_limiter')
      problems.push(`collector: pipeline ${id} does not start with memory_limiter`);
    if (p.processors?.at(-1) !== 'batch') problems.push(`collector: pipeline ${id} does not end with batch`);
  }
  for (const kind of ['receivers', 'processors', 'exporters'] as const) {
    for (const name of Object.keys(col[kind] ?? {})) {
      if (!used[kind]!.has(name))
        problems.push(`collector: ${kind.slice(0, -1)} ${name} is defined but unused`);
    }
  }
  for (const name of col.service?.extensions ?? []) {
    if (!col.extensions || !(name in col.extensions)) problems.push(`collector: undefined extension ${name}`);
  }
  for (const name of Object.keys(col.extensions ?? {})) {
    if (!(col.service?.extensions ?? []).includes(name))
      problems.push(`collector: extension ${name} is not enabled`);
  }
  for (const name of Object.keys(col.exporters ?? {})) {
    const type = name.split('/')[0]!;
    if (RENAMED_EXPORTERS[type])
      problems.push(`collector: exporter ${name}: use ${RENAMED_EXPORTERS[type]} (contrib >= 0.144)`);
    else if (!KNOWN_EXPORTERS.includes(type)) problems.push(`collector: unexpected exporter type ${type}`);
  }
  if (pipelines.traces && !pipelines.traces.exporters?.some((x: string) => x.startsWith('otlp_grpc'))) {
    problems.push('collector: traces are not exported over otlp_grpc');
  }
  const toJaeger = Object.entries<Obj>(col.exporters ?? {}).find(([n]) => n.startsWith('otlp_grpc'));
  if (toJaeger) {
    const { host, port } = hostPort(toJaeger[1].endpoint ?? '');
    if (host !== 'jaeger' || port !== 4317)
      problems.push(`collector: ${toJaeger[0]} goes to ${host}:${port}, not jaeger:4317`);
    if (toJaeger[1].tls?.insecure !== true) problems.push(`collector: ${toJaeger[0]} is not tls.insecure`);
  }
  if (pipelines.logs && !pipelines.logs.exporters?.includes('debug'))
    problems.push('collector: logs do not go to debug');
  const hc = col.extensions?.health_check?.endpoint;
  if (hc !== '0.0.0.0:13133') problems.push(`collector: health_check endpoint ${hc}, expected 0.0.0.0:13133`);
  return problems;
}

/** The collector's Prometheus exporter serves the names the app's own exporter serves. */
function checkCollectorPrometheus(col: Obj): string[] {
  const problems: string[] = [];
  const p = col.exporters?.prometheus;
  if (!p) return ['collector: no prometheus exporter'];
  if (p.add_metric_suffixes !== false)
    problems.push('collector: prometheus exporter lacks add_metric_suffixes: false');
  // Since contrib 0.154 add_metric_suffixes alone is ignored: translation_strategy decides.
  if (p.translation_strategy !== 'UnderscoreEscapingWithoutSuffixes') {
    problems.push('collector: prometheus translation_strategy is not UnderscoreEscapingWithoutSuffixes');
  }
  if (p.resource_to_telemetry_conversion?.enabled === true)
    problems.push('collector: resource_to_telemetry_conversion is on');
  if (p.namespace) problems.push('collector: a namespace would prefix every name');
  if (p.enable_open_metrics === true) problems.push('collector: OpenMetrics would add _total a second way');
  const { host, port } = hostPort(p.endpoint ?? '');
  if (host !== '0.0.0.0') problems.push(`collector: prometheus exporter binds ${host}`);
  if (port === 9464) problems.push('collector: prometheus exporter on 9464, the app’s own port');
  // Suffixes off drops `_total` too: a transform puts it back on monotonic sums, in the metrics pipeline.
  const metrics: string[] = col.service?.pipelines?.metrics?.processors ?? [];
  const restores = metrics.some((name) => {
    const statements = JSON.stringify(col.processors?.[name]?.metric_statements ?? []);
    return (
      name.split('/')[0] === 'transform' &&
      /set\(metric\.name, Concat\(\[metric\.name, \\"total\\"\], \\"_\\"\)\)/.test(statements) &&
      /metric\.type == METRIC_DATA_TYPE_SUM/.test(statements) &&
      /metric\.is_monotonic == true/.test(statements) &&
      /not HasSuffix\(metric\.name, \\"_total\\"\)/.test(statements)
    );
  });
  if (!restores)
    problems.push('collector: no transform in the metrics pipeline appends _total to monotonic sums');
  if (!col.service?.pipelines?.metrics?.exporters?.includes('prometheus')) {
    problems.push('collector: metrics pipeline does not export to prometheus');
  }
  return problems;
}

/** Prometheus scrapes the collector's exporter port, evaluates the rules from the mounted directory. */
function checkPrometheus(c: Obj, col: Obj, p: Obj): string[] {
  const problems: string[] = [];
  const exporterPort = hostPort(col.exporters?.prometheus?.endpoint ?? '').port;
  const targets = (p.scrape_configs ?? []).flatMap((j: Obj) =>
    (j.static_configs ?? []).flatMap((s: Obj) =>
      (s.targets ?? []).map((t: string) => ({ job: j, ...hostPort(t) })),
    ),
  );
  const col8889 = targets.find((t: Obj) => t.host === 'otel-collector' && t.port === exporterPort);
  if (!col8889) problems.push(`prometheus: does not scrape otel-collector:${exporterPort}`);
  else if (col8889.job.honor_labels !== true)
    problems.push('prometheus: the collector job needs honor_labels: true');
  if (targets.some((t: Obj) => t.host === 'demo')) {
    problems.push('prometheus: scrapes the demo directly too: every series would be counted twice');
  }
  for (const t of targets) {
    if (t.host !== 'localhost' && !c.services?.[t.host])
      problems.push(`prometheus: target ${t.host} is not a service`);
  }
  if (p.global?.evaluation_interval !== '15s') problems.push('prometheus: evaluation_interval is not 15s');
  const service = c.services?.prometheus ?? {};
  const configPath = argv(service.command)
    .find((a) => a.startsWith('--config.file='))
    ?.slice('--config.file='.length);
  if (configPath === undefined) problems.push('prometheus: no --config.file');
  else if (
    !binds(service).some(
      (m) => m.target === configPath && path.normalize(m.source) === 'prometheus/prometheus.yml',
    )
  ) {
    problems.push(`prometheus: ${configPath} is not ./prometheus/prometheus.yml`);
  }
  const ruleFiles: string[] = p.rule_files ?? [];
  if (!ruleFiles.length) problems.push('prometheus: no rule_files');
  const loaded = new Set<string>();
  for (const pattern of ruleFiles) {
    const files = hostFiles(service, pattern);
    if (files === undefined) {
      problems.push(`prometheus: rule_files ${pattern} is outside every mount`);
      continue;
    }
    if (!files.length) problems.push(`prometheus: rule_files ${pattern} matches no file in the repository`);
    for (const f of files) {
      loaded.add(f);
      const doc: Obj = parse(readFileSync(f, 'utf8')) ?? {};
      if (!Array.isArray(doc.groups) || 'tests' in doc) {
        problems.push(`prometheus: rule_files ${pattern} loads ${path.relative(root, f)}, not a rule file`);
      }
    }
  }
  // Every rule file of the rules directory is loaded (a new one would otherwise be silently ignored).
  const rulesMount = binds(service).find((m) => path.normalize(m.source) === 'prometheus/rules');
  if (!rulesMount) problems.push('prometheus: ./prometheus/rules is not mounted');
  else if (existsSync(path.join(root, rulesMount.source))) {
    const dir = path.join(root, rulesMount.source);
    for (const f of readdirSync(dir).filter((n) => /\.ya?ml$/.test(n))) {
      const doc: Obj = parse(readFileSync(path.join(dir, f), 'utf8')) ?? {};
      if (Array.isArray(doc.groups) && !loaded.has(path.join(dir, f))) {
        problems.push(`prometheus: rule file prometheus/rules/${f} is not in rule_files`);
      }
    }
  }
  return problems;
}

/** depends_on names services; healthy where the dependency has a healthcheck, started otherwise. */
function checkDependencies(c: Obj): string[] {
  const problems: string[] = [];
  for (const [name, s] of Object.entries<Obj>(c.services ?? {})) {
    const deps = s.depends_on ?? {};
    if (Array.isArray(deps)) {
      problems.push(`${name}: depends_on without conditions`);
      continue;
    }
    for (const [dep, spec] of Object.entries<Obj>(deps)) {
      const target = c.services?.[dep];
      if (!target) {
        problems.push(`${name}: depends_on ${dep}, which is not a service`);
        continue;
      }
      const want = target.healthcheck && !target.healthcheck.disable ? 'service_healthy' : 'service_started';
      if (spec?.condition !== want)
        problems.push(`${name}: depends_on ${dep} with ${spec?.condition}, expected ${want}`);
    }
  }
  return problems;
}

function checkHealthchecks(c: Obj, composeText: string): string[] {
  const problems: string[] = [];
  const want: [string, RegExp][] = [
    ['postgres', /^CMD(-SHELL)? pg_isready\b/],
    ['grafana', /^CMD(-SHELL)? wget .*http:\/\/(localhost|127\.0\.0\.1):3000\/api\/health$/],
    ['prometheus', /^CMD(-SHELL)? wget .*http:\/\/(localhost|127\.0\.0\.1):9090\/-\/(ready|healthy)$/],
  ];
  for (const [name, re] of want) {
    const t = healthTest(c.services?.[name] ?? {});
    if (!re.test(t)) problems.push(`${name}: healthcheck "${t}" does not match ${re}`);
  }
  // The collector image is distroless: no healthcheck, and a comment on its service says why.
  if (c.services?.['otel-collector']?.healthcheck)
    problems.push('otel-collector: a healthcheck cannot run in a distroless image');
  const doc = parseDocument(composeText);
  const services = doc.get('services');
  const pair = isMap(services)
    ? services.items.find((i) => isScalar(i.key) && i.key.value === 'otel-collector')
    : undefined;
  const comment = pair && isScalar(pair.key) ? (pair.key.commentBefore ?? '') : '';
  if (!/distroless/i.test(comment) || !/healthcheck/i.test(comment)) {
    problems.push('otel-collector: no comment explaining the missing healthcheck (distroless image)');
  }
  return problems;
}

/** Grafana is anonymous-viewer and its provisioning (written elsewhere) points at these services. */
function checkGrafana(c: Obj): string[] {
  const problems: string[] = [];
  const e = env(c.services?.grafana ?? {});
  if (e.GF_AUTH_ANONYMOUS_ENABLED !== 'true') problems.push('grafana: anonymous access is off');
  if (e.GF_AUTH_ANONYMOUS_ORG_ROLE !== 'Viewer') problems.push('grafana: anonymous role is not Viewer');
  const ds = path.join(root, 'grafana/provisioning/datasources/datasources.yaml');
  const dash = path.join(root, 'grafana/provisioning/dashboards/dashboards.yaml');
  if (!existsSync(ds)) problems.push('grafana/provisioning/datasources/datasources.yaml is missing');
  else {
    const sources: Obj[] = parse(readFileSync(ds, 'utf8'))?.datasources ?? [];
    const byType = (t: string) => sources.find((s) => s.type === t);
    const promDs = byType('prometheus');
    if (promDs?.url !== 'http://prometheus:9090' || promDs?.uid !== 'prometheus') {
      problems.push('grafana: no Prometheus datasource at http://prometheus:9090 with uid prometheus');
    }
    if (byType('jaeger')?.url !== 'http://jaeger:16686')
      problems.push('grafana: no Jaeger datasource at http://jaeger:16686');
  }
  if (!existsSync(dash)) problems.push('grafana/provisioning/dashboards/dashboards.yaml is missing');
  else {
    const providers: Obj[] = parse(readFileSync(dash, 'utf8'))?.providers ?? [];
    if (!providers.some((p) => p.options?.path === GRAFANA_DASHBOARDS)) {
      problems.push(`grafana: no dashboard provider reads ${GRAFANA_DASHBOARDS}`);
    }
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------------------

describe('compose stack: docker-compose.yml', () => {
  it('defines the six services with pinned image versions (the demo image from a pinned node base)', () => {
    assert.deepEqual(checkImages(compose, dockerfile), []);
  });
  it('mounts only repository paths that exist, read-only, at the paths the images read', () => {
    assert.deepEqual(checkMounts(compose), []);
  });
  it('publishes the documented ports', () => {
    assert.deepEqual(checkPorts(compose), []);
  });
  it('runs the demo in a loop against the compose PostgreSQL, as the Dockerfile does', () => {
    assert.deepEqual(checkDemoCommand(compose, dockerfile), []);
  });
  it("points the demo's OTLP exporters at a receiver of the collector, endpoints on 0.0.0.0", () => {
    assert.deepEqual(checkDemoOtlp(compose, collector), []);
  });
  it('depends_on only defined services, waiting for health where there is a healthcheck', () => {
    assert.deepEqual(checkDependencies(compose), []);
  });
  it('has healthchecks for postgres, grafana and prometheus, and says why the collector has none', () => {
    assert.deepEqual(checkHealthchecks(compose, read('docker-compose.yml')), []);
  });
  it('gives Grafana anonymous viewers and provisioning that points at the compose services', () => {
    assert.deepEqual(checkGrafana(compose), []);
  });
  it('is described by docs/observability-stack.md, images included', () => {
    const section = read('docs/observability-stack.md');
    for (const name of SERVICES) {
      const image = compose.services[name].image;
      if (name !== 'demo') assert.ok(section.includes(`\`${image}\``), `the doc does not name ${image}`);
    }
    const base = /^FROM\s+(\S+)/m.exec(dockerfile)?.[1] ?? '';
    assert.ok(section.includes(splitImage(base).tag!.split('-')[0]!), `the doc does not name ${base}`);
    for (const port of Object.values(PORTS).flat())
      assert.ok(section.includes(String(port)), `the doc: port ${port}`);
  });
  it('keeps node_modules, dist and .git out of the demo build context', () => {
    const ignored = read('.dockerignore')
      .split('\n')
      .map((l) => l.trim());
    for (const p of ['node_modules', 'dist', '.tmp', '.git'])
      assert.ok(ignored.includes(p), `${p} not ignored`);
  });
});

describe('compose stack: otel-collector/config.yaml', () => {
  it('wires only defined components into the traces, metrics and logs pipelines, with current names', () => {
    assert.deepEqual(checkCollectorGraph(collector), []);
  });
  it("serves Prometheus names identical to the app's own exporter (no unit suffix, _total on counters)", () => {
    assert.deepEqual(checkCollectorPrometheus(collector), []);
  });
});

describe('compose stack: prometheus/prometheus.yml', () => {
  it("scrapes the collector's exporter and loads every rule file of the mounted rules directory", () => {
    assert.deepEqual(checkPrometheus(compose, collector, prom), []);
  });

  it('passes promtool check config (with the repository rules where the container has them)', () => {
    const service = compose.services.prometheus;
    const rulesMount = binds(service).find((m) => path.normalize(m.source) === 'prometheus/rules');
    assert.ok(rulesMount, 'prometheus/rules is not mounted');
    const dir = mkdtempSync(path.join(os.tmpdir(), 'pg-resilience-promtool-'));
    try {
      cpSync(path.join(root, 'prometheus', 'rules'), path.join(dir, 'rules'), { recursive: true });
      const config = read('prometheus/prometheus.yml').replaceAll(
        `${rulesMount.target}/`,
        `${path.join(dir, 'rules')}/`,
      );
      writeFileSync(path.join(dir, 'prometheus.yml'), config);
      const res = spawnSync('promtool', ['check', 'config', path.join(dir, 'prometheus.yml')], {
        encoding: 'utf8',
      });
      assert.ifError(res.error); // ENOENT: promtool is missing (Debian's prometheus package provides it)
      assert.equal(res.status, 0, `${res.stdout}${res.stderr}`);
      assert.match(res.stdout, /SUCCESS/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('compose stack: the checks catch broken configurations', () => {
  const broken = <T extends Obj>(v: T, edit: (copy: T) => void): T => {
    const copy = clone(v);
    edit(copy);
    return copy;
  };
  const expectProblem = (problems: string[], re: RegExp) =>
    assert.ok(
      problems.some((p) => re.test(p)),
      `expected a problem matching ${re}, got ${JSON.stringify(problems)}`,
    );

  it('an unpinned or latest image, an old collector', () => {
    expectProblem(
      checkImages(
        broken(compose, (c) => (c.services.grafana.image = 'grafana/grafana')),
        dockerfile,
      ),
      /grafana: image/,
    );
    expectProblem(
      checkImages(
        broken(compose, (c) => (c.services.jaeger.image = 'jaegertracing/jaeger:latest')),
        dockerfile,
      ),
      /jaeger/,
    );
    expectProblem(checkImages(compose, 'FROM node:lts-slim\n'), /Dockerfile\.demo/);
    expectProblem(
      checkImages(
        broken(
          compose,
          (c) => (c.services['otel-collector'].image = 'otel/opentelemetry-collector-contrib:0.120.0'),
        ),
        dockerfile,
      ),
      /predates/,
    );
    expectProblem(
      checkImages(
        broken(compose, (c) => delete c.services.jaeger),
        dockerfile,
      ),
      /jaeger is missing/,
    );
  });

  it('a missing mounted path, a wrong port, a wrong OTLP port', () => {
    expectProblem(
      checkMounts(
        broken(compose, (c) => c.services.prometheus.volumes.push('./prometheus/nope:/etc/nope:ro')),
      ),
      /does not exist/,
    );
    expectProblem(
      checkPorts(broken(compose, (c) => (c.services.grafana.ports = ['127.0.0.1:3001:3000']))),
      /grafana: port 3000/,
    );
    expectProblem(
      checkDemoOtlp(
        broken(
          compose,
          (c) => (c.services.demo.environment.OTEL_EXPORTER_OTLP_ENDPOINT = 'http://otel-collector:4317'),
        ),
        collector,
      ),
      /port 4317/,
    );
    expectProblem(
      checkDemoOtlp(
        broken(compose, (c) => delete c.services.demo.environment.OTEL_EXPORTER_PROMETHEUS_HOST),
        collector,
      ),
      /OTEL_EXPORTER_PROMETHEUS_HOST/,
    );
  });

  it('an undefined pipeline component, an old exporter name, suffixes on, a localhost health_check', () => {
    expectProblem(
      checkCollectorGraph(broken(collector, (c) => c.service.pipelines.logs.exporters.push('otlphttp'))),
      /undefined exporter otlphttp/,
    );
    expectProblem(
      checkCollectorGraph(
        broken(collector, (c) => {
          c.exporters.otlp = c.exporters['otlp_grpc/jaeger'];
          delete c.exporters['otlp_grpc/jaeger'];
          c.service.pipelines.traces.exporters = ['otlp'];
        }),
      ),
      /use otlp_grpc/,
    );
    expectProblem(
      checkCollectorGraph(broken(collector, (c) => (c.extensions.health_check.endpoint = 'localhost:13133'))),
      /health_check/,
    );
    expectProblem(
      checkCollectorPrometheus(broken(collector, (c) => delete c.exporters.prometheus.translation_strategy)),
      /translation_strategy/,
    );
    expectProblem(
      checkCollectorPrometheus(
        broken(collector, (c) => (c.service.pipelines.metrics.processors = ['memory_limiter', 'batch'])),
      ),
      /_total/,
    );
  });

  it('Prometheus on the wrong port, rules that load the promtool tests, a bad depends_on', () => {
    expectProblem(
      checkPrometheus(
        compose,
        broken(collector, (c) => (c.exporters.prometheus.endpoint = '0.0.0.0:9999')),
        prom,
      ),
      /does not scrape otel-collector:9999/,
    );
    expectProblem(
      checkPrometheus(
        compose,
        collector,
        broken(prom, (p) => (p.rule_files = ['/etc/prometheus/rules/*.test.yml'])),
      ),
      /not a rule file|matches no file/,
    );
    expectProblem(
      checkPrometheus(
        compose,
        collector,
        broken(prom, (p) => (p.rule_files = ['/etc/prometheus/alerts/*.yml'])),
      ),
      /outside every mount/,
    );
    expectProblem(
      checkDependencies(
        broken(compose, (c) => (c.services.grafana.depends_on.prometheus.condition = 'service_started')),
      ),
      /expected service_healthy/,
    );
    expectProblem(
      checkDependencies(
        broken(compose, (c) => (c.services.grafana.depends_on.loki = { condition: 'service_started' })),
      ),
      /not a service/,
    );
    expectProblem(
      checkHealthchecks(compose, read('docker-compose.yml').replaceAll('distroless', 'minimal')),
      /comment/,
    );
  });
});
