/**
 * src/instrumentation: the patches on pg and pg-pool, one per file, and what they need to follow a
 * call (dispatch, transaction status, scope, targets). This file registers them.
 *
 * PgResilienceInstrumentation: an OpenTelemetry instrumentation that patches node-postgres at load
 * time. Register it after `@opentelemetry/instrumentation-pg` so its wrappers are outermost.
 *
 * Patches, one concern each (all on prototypes; module exports are never replaced and `pg.native` is
 * never read):
 * - crash guards (src/crash-guards/error-guards.ts): `emit` on pg's `Client.prototype` (the file
 *   `pg/lib/client.js`) and on pg-pool's `Pool.prototype` (pg.Pool is a per-module subclass of it);
 *   outside the client's guard, the events held during a reconnectable connect (client-reconnect.ts).
 * - policies (src/policy, one TargetPolicy per `host:port/database`): `Client.prototype.query` and
 *   `connect` (client-query.ts, client-connect.ts), `Pool.prototype.query`, `connect` and `newClient`
 *   (pool-query.ts, pool-connect.ts);
 * - dispatch tracking (dispatch.ts): `Query.prototype.submit` and `handleError` (pg's file
 *   `pg/lib/query.js`, also exported as `pg.Query`);
 * - transaction status on pg < 8.21 (tx-status.ts): a 'readyForQuery' listener on each client's
 *   connection, added by the connect patch.
 * Disabling unwraps every one of them; the policies' state (breakers, recovery loops) is disposed.
 */
import type { Event } from 'cockatiel';
import {
  InstrumentationBase,
  InstrumentationNodeModuleDefinition,
  InstrumentationNodeModuleFile,
} from '@opentelemetry/instrumentation';
import { ConfigError, type ConfigIssue, isConfigError, resolveConfig } from '../config/index.ts';
import { PolicyRegistry } from '../policy/registry.ts';
import { clearRuntime, setRuntime } from '../runtime.ts';
import { patchClientConnect } from './client-connect.ts';
import { onFailoverDetected } from './failover.ts';
import { hostRoles } from './host-choice.ts';
import { onWritesRestored } from './write-availability.ts';
import { holdWhileSubstituting } from './substitute-events.ts';
import { holdConnectEvents } from './client-reconnect.ts';
import { patchClientQuery } from './client-query.ts';
import { trackHandleError, trackSubmit } from './dispatch.ts';
import { markPoolNewClient, patchPoolConnect } from './pool-connect.ts';
import { endSetupOnAcquire } from './substitute.ts';
import { patchPoolQuery } from './pool-query.ts';
import { Targets } from './targets.ts';
import { unwrapOurs, wrapOnce } from './wrap.ts';
import type { ResilienceConfig, ResilienceOptions } from '../config/types.ts';
import { SafeEventEmitter } from '../policy/events.ts';
import {
  type ClientErrorAbsorbedEvent,
  type ErrorSource,
  guardErrorEmit,
} from '../crash-guards/error-guards.ts';
import { type HealthServer, startHealthServer } from '../telemetry/health-server.ts';
import { ResilienceTelemetry } from '../telemetry/telemetry.ts';
import type { EmitFn, PgClientLike, PgPoolLike, PgResilienceInstrumentationConfig } from './types.ts';
import {
  clientTarget,
  INSTRUMENTATION_NAME,
  INSTRUMENTATION_VERSION,
  moduleExports,
  poolTarget,
} from './utils.ts';

const SUPPORTED_PG = ['>=8 <9'];

const SUPPORTED_PG_POOL = ['>=3 <4'];

interface Prototyped {
  prototype: { emit: EmitFn } & Record<string, unknown>;
}

/**
 * Resolves the configuration (telemetry included) and checks OpenTelemetry's `enabled`, so that every
 * problem (and a config that is not an object) is reported in one ConfigError.
 */
function resolveInstrumentationConfig(config: unknown): {
  resolved: ResilienceConfig;
  enabled: boolean | undefined;
} {
  if (config === undefined || config === null) config = {};
  if (typeof config !== 'object' || Array.isArray(config)) {
    throw new ConfigError([
      { field: 'options', value: config, source: 'code', allowed: 'must be an object' },
    ]);
  }
  const { enabled, ...options } = config as PgResilienceInstrumentationConfig;
  const issues: ConfigIssue[] = [];
  if (enabled !== undefined && typeof enabled !== 'boolean') {
    issues.push({ field: 'enabled', value: enabled, source: 'code', allowed: 'must be true or false' });
  }
  let resolved: ResilienceConfig | undefined;
  try {
    resolved = resolveConfig({ options: options as ResilienceOptions });
  } catch (error) {
    if (!isConfigError(error)) throw error;
    issues.push(...error.issues);
  }
  if (issues.length > 0 || !resolved) throw new ConfigError(issues);
  return { resolved, enabled };
}

export class PgResilienceInstrumentation extends InstrumentationBase<PgResilienceInstrumentationConfig> {
  /** The configuration, resolved once at construction (profile < file < env < these options). */
  readonly resilienceConfig: ResilienceConfig;

  readonly #clientErrorAbsorbed = new SafeEventEmitter<ClientErrorAbsorbedEvent>();
  /** An 'error' emitted on a Pool or Client with no 'error' listener was absorbed instead of crashing the process. */
  readonly onClientErrorAbsorbed: Event<ClientErrorAbsorbedEvent> = this.#clientErrorAbsorbed.addListener;

  /**
   * Metrics, spans and logs of every policy event. Not a #private field: the base constructor calls
   * `_updateMetricInstruments()` before this class's fields exist.
   */
  private telemetry: ResilienceTelemetry | undefined;

  /** @throws ConfigError when the configuration is invalid (at start-up, never later). */
  constructor(config: PgResilienceInstrumentationConfig = {}) {
    const { resolved, enabled } = resolveInstrumentationConfig(config);
    // PG_RESILIENCE_DISABLED / `disabled: true`: never enabled, pg is left untouched.
    super(INSTRUMENTATION_NAME, INSTRUMENTATION_VERSION, {
      ...config,
      enabled: enabled !== false && !resolved.disabled,
    });
    this.resilienceConfig = resolved;
    this.telemetry = new ResilienceTelemetry(resolved.telemetry, {
      tracer: () => this.tracer,
      meter: this.meter,
      logger: () => this.logger,
    });
    // The base constructor enabled the hooks before resilienceConfig existed: publish the runtime now.
    if (this.isEnabled()) setRuntime(this.#getTargets());
  }

  protected override _updateMetricInstruments(): void {
    // Called by the base constructor (telemetry not created yet) and by setMeterProvider().
    this.telemetry?.setMeter(this.meter);
  }

  #targets: Targets | undefined;

  /** Every target's policies (created on first use, from `resilienceConfig`). */
  get policies(): PolicyRegistry {
    return this.#getTargets().registry;
  }

  override enable(): void {
    // The base constructor calls enable() before resilienceConfig is set; it only does so when enabled.
    if (this.resilienceConfig?.disabled) return;
    super.enable();
    if (this.resilienceConfig) setRuntime(this.#getTargets());
  }

  override disable(): void {
    super.disable();
    clearRuntime(this.#targets);
    this.#stopHealthServer();
    this.#targets?.dispose();
    // Timers (breakers, recovery loops, rate limiters) stop. The pool/client → policy cache goes with
    // them: a later enable() starts from fresh policies, and pools seen before get those too.
    for (const stop of this.#failoverListeners) stop();
    this.#failoverListeners = [];
    this.telemetry?.metrics.watchHostRoles(undefined);
    this.telemetry?.detach();
    this.#targets?.registry.dispose();
    this.#targets = undefined;
  }

  readonly #targetsFn = (): Targets => this.#getTargets();
  #failoverListeners: Array<() => void> = [];

  #getTargets(): Targets {
    if (this.#targets === undefined) {
      this.#targets = new Targets(new PolicyRegistry(this.resilienceConfig), (event) =>
        this.telemetry?.connectionsEvicted(event),
      );
      this.telemetry?.attach(this.#targets.registry, this.#targets.leaks);
      // Failovers (failover.ts): detections, the connections they evicted, the write-unavailability window.
      this.#failoverListeners = [
        onFailoverDetected((e) => this.telemetry?.failoverDetected(e)),
        onWritesRestored((e) => this.telemetry?.writesRestored(e)),
      ];
      this.telemetry?.metrics.watchHostRoles(hostRoles);
      this.#startHealthServer(this.#targets);
    }
    return this.#targets;
  }

  #healthServer: Promise<HealthServer | undefined> | undefined;

  /** PG_RESILIENCE_HEALTH_PORT (or `telemetry.health`): serve /resilience/health and /resilience/state. */
  #startHealthServer(targets: Targets): void {
    const { port, host } = this.resilienceConfig.telemetry.health;
    if (port === undefined || this.#healthServer !== undefined) return;
    this.#healthServer = startHealthServer({
      host,
      port,
      tracker: targets.health(),
    })
      .then((server) => {
        this._diag.info(`health endpoint on ${server.url}/resilience/health`);
        return server;
      })
      .catch((error: unknown) => {
        // A port in use must not stop the app: report it and go on without the endpoint.
        this._diag.error(`could not serve the health endpoint on ${host}:${port}`, error);
        return undefined;
      });
  }

  #stopHealthServer(): void {
    const pending = this.#healthServer;
    this.#healthServer = undefined;
    void pending?.then((server) => server?.close());
  }

  /** The health endpoint's base URL once it listens (undefined when not configured or it failed to start). */
  async healthEndpoint(): Promise<string | undefined> {
    return (await this.#healthServer)?.url;
  }

  protected override init(): InstrumentationNodeModuleDefinition[] {
    const queryFile = new InstrumentationNodeModuleFile(
      'pg/lib/query.js',
      SUPPORTED_PG,
      (exports: unknown) => {
        this.patchQuery(moduleExports<Prototyped>(exports));
        return exports;
      },
      (exports: unknown) => {
        if (exports !== undefined) this.unpatchQuery(moduleExports<Prototyped>(exports));
      },
    );
    const clientFile = new InstrumentationNodeModuleFile(
      'pg/lib/client.js',
      SUPPORTED_PG,
      (exports: unknown) => {
        this.patchClient(moduleExports<Prototyped>(exports));
        return exports;
      },
      (exports: unknown) => {
        if (exports !== undefined) this.unpatchClient(moduleExports<Prototyped>(exports));
      },
    );
    return [
      new InstrumentationNodeModuleDefinition(
        'pg',
        SUPPORTED_PG,
        (exports: unknown) => {
          // Only the Client property (a plain value); `pg.native` is a lazy getter and is never read.
          const pg = moduleExports<{ Client?: Prototyped; Query?: Prototyped }>(exports);
          if (pg.Client) this.patchClient(pg.Client);
          if (pg.Query) this.patchQuery(pg.Query);
          return exports;
        },
        (exports: unknown) => {
          if (exports === undefined) return;
          const pg = moduleExports<{ Client?: Prototyped; Query?: Prototyped }>(exports);
          if (pg.Client) this.unpatchClient(pg.Client);
          if (pg.Query) this.unpatchQuery(pg.Query);
        },
        [clientFile, queryFile],
      ),
      new InstrumentationNodeModuleDefinition(
        'pg-pool',
        SUPPORTED_PG_POOL,
        (exports: unknown) => {
          this.patchPool(moduleExports<Prototyped>(exports));
          return exports;
        },
        (exports: unknown) => {
          if (exports !== undefined) this.unpatchPool(moduleExports<Prototyped>(exports));
        },
      ),
    ];
  }

  // ---- pg Client ----

  private patchClient(Client: Prototyped): void {
    const proto = Client.prototype;
    const guard = this.errorGuard('client', (emitter) => clientTarget(emitter as PgClientLike));
    this.#wrapOnce(proto, 'emit', (original: EmitFn) =>
      holdWhileSubstituting(holdConnectEvents(guard(original))),
    );
    this.#wrapOnce(proto, 'query', patchClientQuery(this.#targetsFn));
    this.#wrapOnce(proto, 'connect', patchClientConnect(this.#targetsFn));
  }

  private unpatchClient(Client: Prototyped): void {
    this.#unwrapAll(Client.prototype, ['emit', 'query', 'connect']);
  }

  // ---- pg Query (dispatch tracking) ----

  private patchQuery(Query: Prototyped): void {
    this.#wrapOnce(Query.prototype, 'submit', trackSubmit);
    this.#wrapOnce(Query.prototype, 'handleError', trackHandleError);
  }

  private unpatchQuery(Query: Prototyped): void {
    this.#unwrapAll(Query.prototype, ['submit', 'handleError']);
  }

  // ---- pg-pool Pool ----

  private patchPool(Pool: Prototyped): void {
    const proto = Pool.prototype;
    const guard = this.errorGuard('pool', (emitter, args) => poolTarget(emitter as PgPoolLike, args[1]));
    this.#wrapOnce(proto, 'emit', (original: EmitFn) => endSetupOnAcquire(guard(original)));
    this.#wrapOnce(proto, 'query', patchPoolQuery(this.#targetsFn));
    this.#wrapOnce(proto, 'connect', patchPoolConnect(this.#targetsFn));
    this.#wrapOnce(proto, 'newClient', markPoolNewClient);
  }

  private unpatchPool(Pool: Prototyped): void {
    // pg-pool's Pool inherits emit from EventEmitter: _unwrap restores the own property shimmer set.
    this.#unwrapAll(Pool.prototype, ['emit', 'query', 'connect', 'newClient']);
  }

  /** Wraps `proto[name]` once (pg and pg/lib/client.js are one prototype), outside any other instrumentation's wrapper. */
  #wrapOnce(proto: Record<string, unknown>, name: string, wrapper: (original: never) => unknown): void {
    wrapOnce(proto, name, wrapper);
  }

  #unwrapAll(proto: Record<string, unknown>, names: readonly string[]): void {
    for (const name of names) unwrapOurs(proto, name);
  }

  // ---- crash guards ----

  private errorGuard(
    source: ErrorSource,
    target: (emitter: unknown, args: readonly unknown[]) => string,
  ): (original: EmitFn) => EmitFn {
    return guardErrorEmit({
      source,
      target,
      classify: () => this.resilienceConfig?.classify,
      onAbsorbed: (event) => {
        this.telemetry?.clientErrorAbsorbed(event);
        this.#clientErrorAbsorbed.emit(event);
      },
    });
  }
}
