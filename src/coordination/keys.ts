/**
 * Redis key names. Every key of a fleet lives under one hash tag, `{pgr:<fleet>}`, so in Redis Cluster
 * they all hash to one slot and a script may touch several of them.
 */
import type { CoordinationSettings } from '../config/types.ts';
import { FLEET_NAME } from '../config/redis-url.ts';

type Env = Readonly<Record<string, string | undefined>>;

/** The fleet's name: `coordination.fleet`, else OTEL_SERVICE_NAME (made key-safe), else `default`. */
export function fleetName(settings: Pick<CoordinationSettings, 'fleet'>, env: Env = process.env): string {
  if (settings.fleet) return settings.fleet;
  const service = env.OTEL_SERVICE_NAME?.trim()
    .replace(/[^A-Za-z0-9._:/-]/g, '_')
    .slice(0, 100);
  return service && FLEET_NAME.test(service) ? service : 'default';
}

/** The fleet's key prefix, a Redis Cluster hash tag. */
export const fleetTag = (fleet: string): string => `{pgr:${fleet}}`;

export const membersKey = (fleet: string): string => `${fleetTag(fleet)}:members`;

/** A target's fleet-wide token bucket (`host:port/database`). */
export const rateKey = (fleet: string, target: string): string => `${fleetTag(fleet)}:rate:${target}`;

/** A target's leased connection slots (member id → `held:wanted:expiry`). */
export const slotsKey = (fleet: string, target: string): string => `${fleetTag(fleet)}:conns:${target}`;

/** A target's fleet-wide breaker state (hash: `epoch`, `open`). */
export const breakerKey = (fleet: string, target: string): string => `${fleetTag(fleet)}:breaker:${target}`;

/** A target's "down" votes (sorted set: member → vote expiry, Redis ms). */
export const votesKey = (fleet: string, target: string): string => `${fleetTag(fleet)}:votes:${target}`;

/** A target's recovery probe lock (string, SET NX PX). */
export const probeLockKey = (fleet: string, target: string): string => `${fleetTag(fleet)}:probe:${target}`;
