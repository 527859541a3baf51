/**
 * pg-resilience's configuration: resolve it once at start-up (profile < JSON file < env < code), then
 * get each target's settings when its policies are built.
 */
export { ConfigError, type ConfigIssue, isConfigError } from './config-error.ts';
export { PROFILES } from './defaults.ts';
export { ENV_VARS, killSwitchOn, RESERVED_ENV_VARS } from './env.ts';
export { type ResolveInput, resolveConfig, settingsForTarget } from './resolve.ts';
export { configSchema, settingsSchema } from './schema.ts';
export type * from './types.ts';
