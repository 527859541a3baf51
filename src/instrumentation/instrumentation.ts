/**
 * PgResilienceInstrumentation: an OpenTelemetry instrumentation that patches node-postgres at load
 * time. Register it after `@opentelemetry/instrumentation-pg` so its wrappers are outermost.
 *
 * Patches, one concern each (all on prototypes; module exports are never replaced and `pg.native` is
 * never read):
 * - crash guards (src/recovery/error-guards.ts): `emit` on pg's `Client.prototype` (the file
 *   `pg/lib/client.js`) and on pg-pool's `Pool.prototype` (pg.Pool is a per-module subclass of it).
 * - policies (retry, breaker, rate limit… from src/policy): to be added as their own patches of
 *   `Client.prototype.query` / `connect` and `Pool.prototype.connect` in `patchClient` / `patchPool`
 *   below, built from `this.resilienceConfig`.
 */
import type { Event } from 'cockatiel';
import {
  InstrumentationBase,
  InstrumentationNodeModuleDefinition,
  InstrumentationNodeModuleFile,
  isWrapped,
} from '@opentelemetry/instrumentation';
import { resolveConfig } from '../config/index.ts';
import type { ResilienceConfig, ResilienceOptions } from '../config/types.ts';
import { SafeEventEmitter } from '../policy/events.ts';
import { type ClientErrorAbsorbedEvent, type ErrorSource, guardErrorEmit } from '../recovery/error-guards.ts';
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
  prototype: { emit: EmitFn };
}

export class PgResilienceInstrumentation extends InstrumentationBase<PgResilienceInstrumentationConfig> {
  /** The configuration, resolved once at construction (profile < file < env < these options). */
  readonly resilienceConfig: ResilienceConfig;

  readonly #clientErrorAbsorbed = new SafeEventEmitter<ClientErrorAbsorbedEvent>();
  /** An 'error' emitted on a Pool or Client with no 'error' listener was absorbed instead of crashing the process. */
  readonly onClientErrorAbsorbed: Event<ClientErrorAbsorbedEvent> = this.#clientErrorAbsorbed.addListener;

  /** @throws ConfigError when the configuration is invalid (at start-up, never later). */
  constructor(config: PgResilienceInstrumentationConfig = {}) {
    const { enabled, ...options } = config;
    const resolved = resolveConfig({ options: options as ResilienceOptions });
    // PG_RESILIENCE_DISABLED / `disabled: true`: never enabled, pg is left untouched.
    super(INSTRUMENTATION_NAME, INSTRUMENTATION_VERSION, {
      ...config,
      enabled: enabled !== false && !resolved.disabled,
    });
    this.resilienceConfig = resolved;
  }

  override enable(): void {
    // The base constructor calls enable() before resilienceConfig is set; it only does so when enabled.
    if (this.resilienceConfig?.disabled) return;
    super.enable();
  }

  protected override init(): InstrumentationNodeModuleDefinition[] {
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
          const Client = moduleExports<{ Client?: Prototyped }>(exports).Client;
          if (Client) this.patchClient(Client);
          return exports;
        },
        (exports: unknown) => {
          if (exports === undefined) return;
          const Client = moduleExports<{ Client?: Prototyped }>(exports).Client;
          if (Client) this.unpatchClient(Client);
        },
        [clientFile],
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
    if (!isWrapped(proto.emit)) {
      this._wrap(
        proto,
        'emit',
        this.errorGuard('client', (emitter) => clientTarget(emitter as PgClientLike)),
      );
    }
    // The policies' Client.prototype.query / connect patches go here (one _wrap per concern).
  }

  private unpatchClient(Client: Prototyped): void {
    if (isWrapped(Client.prototype.emit)) this._unwrap(Client.prototype, 'emit');
  }

  // ---- pg-pool Pool ----

  private patchPool(Pool: Prototyped): void {
    const proto = Pool.prototype;
    if (!isWrapped(proto.emit)) {
      this._wrap(
        proto,
        'emit',
        this.errorGuard('pool', (emitter, args) => poolTarget(emitter as PgPoolLike, args[1])),
      );
    }
    // The policies' Pool.prototype.connect patch goes here (Pool.query calls connect).
  }

  private unpatchPool(Pool: Prototyped): void {
    // pg-pool's Pool inherits emit from EventEmitter: _unwrap restores the own property shimmer set.
    if (isWrapped(Pool.prototype.emit)) this._unwrap(Pool.prototype, 'emit');
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
      onAbsorbed: (event, error) => {
        const message = error instanceof Error ? error.message : String(error);
        this._diag.warn(
          `absorbed an 'error' on a pg ${event.source} with no 'error' listener (target ${event.target}, ` +
            `${event.errorType}): ${message}. Add an 'error' listener to handle it yourself.`,
        );
        this.#clientErrorAbsorbed.emit(event);
      },
    });
  }
}
