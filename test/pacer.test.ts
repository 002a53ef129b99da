/** The pacer that lets long loops on the JS thread give the event loop (FUSE requests) a turn. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Pacer } from '../src/sync/pacer.js';

test('a pacer is due every 64 steps once its slice is used up, and rest() lets waiting callbacks run', async () => {
  const pacer = new Pacer(0);
  const dueAt: number[] = [];
  for (let i = 1; i <= 200; i++) if (pacer.due()) dueAt.push(i);
  assert.deepEqual(dueAt, [64, 128, 192], 'the clock is looked at every 64 steps');
  let ran = false;
  setImmediate(() => { ran = true; });
  await pacer.rest();
  assert.equal(ran, true, 'a callback queued before rest() ran during it');
  assert.equal(pacer.rests, 1);
  const never = new Pacer(Infinity);
  for (let i = 0; i < 1000; i++) assert.equal(never.due(), false);
});
