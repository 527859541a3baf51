// `npm run demo`: placeholder until the demo issue builds the real one (embedded PostgreSQL, fault
// proxy, a sample app under `node --require pg-resilience/register`, scenarios and a live view).
console.log(
  'pg-resilience demo: not built yet. It arrives with the demo issue; until then `npm test` shows the package at work.',
);
