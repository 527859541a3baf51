// Generated from package.json's "version" by scripts/build.mjs (run on every build and `npm pack`):
// do not edit. test/unit/version.test.ts fails when it differs from package.json.
export const VERSION = '0.1.0';
