/**
 * The cleaner through the inode layer: overwritten data leaves mostly-dead segments; cleaning
 * moves the live blocks, deletes the old segment files, and every file still reads back.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { openTestFs } from './fixtures.js';
import { cleanSegments } from '../src/inode/cleaner.js';
import { rootCtx, rootIno, S_IFREG } from '../src/inode/types.js';

test('cleaning moves live blocks out of mostly-dead segments and deletes them', async () => {
  const t = openTestFs({ store: { segmentSizeMaxBytes: 64 * 1024 } });
  try {
    const keep = t.fs.mknod(rootCtx, rootIno, 'keep', S_IFREG | 0o644);
    const churn = t.fs.mknod(rootCtx, rootIno, 'churn', S_IFREG | 0o644);
    const keepData = Buffer.alloc(6 * 4096);
    for (let i = 0; i < keepData.length; i++) keepData[i] = (i * 31) & 0xff;
    for (let round = 0; round < 20; round++) {
      // Interleave a little live data with a lot of soon-dead data in every segment.
      t.fs.write(rootCtx, keep.ino, (round % 6) * 4096, keepData.subarray((round % 6) * 4096, (round % 6 + 1) * 4096));
      t.fs.write(rootCtx, churn.ino, 0, Buffer.alloc(8 * 4096, round + 1));
      await t.fs.fsync();
    }
    const before = t.store.log.segments();
    assert.ok(before.length > 8, `expected many segments, got ${before.length}`);
    const report = await cleanSegments(t.store, { protectedSegmentCount: 1, victimCountMax: 100 });
    assert.ok(report.segmentsCleaned.length > 0, 'some segments cleaned');
    for (const segment of report.segmentsCleaned) assert.equal(existsSync(t.store.log.segmentFile(segment)), false, `segment ${segment} deleted`);
    assert.ok(t.store.log.segments().length < before.length);
    t.check();
    await t.reopen();
    assert.ok(t.fs.read(keep.ino, 0, keepData.length).equals(keepData));
    assert.ok(t.fs.read(churn.ino, 0, 8 * 4096).equals(Buffer.alloc(8 * 4096, 20)));
  } finally {
    await t.cleanup();
  }
});
