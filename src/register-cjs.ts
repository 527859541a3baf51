// `node --require pg-resilience/register app.js` (the CommonJS entry, compiled only into dist/cjs;
// package.json's exports map `pg-resilience/register` → `require` here). require() is patched by
// require-in-the-middle, so no loader hook is needed.
import './node-guard.ts';
import { startFromRegisterHook } from './register/start.ts';

startFromRegisterHook();
