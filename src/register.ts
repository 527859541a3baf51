// `node --import pg-resilience/register app.mjs` (the ESM entry; the CommonJS one is register-cjs.ts).
// Registers import-in-the-middle's loader hook, so ES modules importing pg are patched, then starts
// the SDK and the instrumentations (src/register/start.ts) before the app's modules load.
// Compiled only into dist/esm: import.meta does not exist in the CommonJS build.
import './node-guard.ts';
import { register } from 'node:module';
import { killSwitchOn } from './config/index.ts';
import { startFromRegisterHook } from './register/start.ts';

if (!killSwitchOn()) {
  register('@opentelemetry/instrumentation/hook.mjs', import.meta.url);
  startFromRegisterHook();
}
