#!/usr/bin/env node
// Entry point: runs the TypeScript sources through tsx's loader (a runtime dependency), so
// `npm ci && npm start` needs no build step.
import { register } from 'tsx/esm/api';

register();
await import('../src/cli/main.ts');
