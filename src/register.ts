// `node --require pg-resilience/register app.js` / `node --import pg-resilience/register app.mjs`.
// Placeholder until the instrumentation issue: loads the package (so an unsupported Node fails here with
// one clear message) and does nothing else yet.
import './node-guard.ts';
