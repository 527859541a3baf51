import './node-guard.ts';

export { MIN_NODE_VERSION } from './node-guard.ts';
