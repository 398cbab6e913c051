import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isoSeconds } from '../../../src/util/time.ts';
import { describeEvent } from '../../../src/cli/trace.ts';
import type { QueueMessage } from '../../../src/store/types.ts';

const T = Date.UTC(2026, 10, 27, 15, 0, 0);

test('times are shown in UTC to the second, whatever the milliseconds', () => {
  assert.equal(isoSeconds(T), '2026-11-27T15:00:00Z');
  assert.equal(isoSeconds(T + 987), '2026-11-27T15:00:00Z');
  assert.equal(isoSeconds(new Date(T + 61_001)), '2026-11-27T15:01:01Z');
});

test('the trace shows event times as queue list and queue show do', () => {
  const m = { recipients: [{ idx: 0, address: 'a@b.test' }] } as unknown as QueueMessage;
  const line = describeEvent({ ts: T + 123, kind: 'deleted', data: { by: 'root', state: 'deferred', rcpts: [0] } }, m);
  assert.match(line, /^ {2}2026-11-27T15:00:00Z {2}DELETED from the queue by administrator root/);
});
