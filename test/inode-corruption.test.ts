/**
 * Damage under the inode layer: a flipped byte in a block record fails that read with the
 * typed corruption error (never wrong bytes) while every other block reads; a segment cut in
 * the middle of a record reopens, keeps everything fsynced before, and loses only what came
 * after the last fsync.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openSync, readSync, statSync, truncateSync, writeSync, closeSync } from 'node:fs';
import { openTestFs } from './fixtures.js';
import { blockKey } from '../src/btree/keys.js';
import { decodeBlockPointer } from '../src/btree/records.js';
import { isFsError } from '../src/errors.js';
import { checkStore } from '../src/inode/check.js';
import { rootCtx, rootIno, S_IFREG } from '../src/inode/types.js';
import type { TestFs } from './fixtures.js';

function pattern(length: number, seed: number): Buffer {
  const data = Buffer.alloc(length);
  for (let i = 0; i < length; i++) data[i] = (i * 13 + seed * 101) & 0xff;
  return data;
}

function pointer(t: TestFs, ino: number, blockIndex: number): { segment: number; offset: number; lengthBytes: number } {
  const value = t.store.btree.table('blockmap').get(blockKey(ino, blockIndex));
  assert.ok(value !== undefined, `block ${ino}:${blockIndex} mapped`);
  return decodeBlockPointer(value, 'test');
}

test('a flipped byte fails that block with CORRUPT; other blocks and files still read', async () => {
  const t = openTestFs();
  try {
    const a = t.fs.mknod(rootCtx, rootIno, 'a', S_IFREG | 0o644);
    const b = t.fs.mknod(rootCtx, rootIno, 'b', S_IFREG | 0o644);
    const dataA = pattern(3 * 4096, 1);
    const dataB = pattern(2 * 4096, 2);
    t.fs.write(rootCtx, a.ino, 0, dataA);
    t.fs.write(rootCtx, b.ino, 0, dataB);
    await t.fs.fsync();
    const loc = pointer(t, a.ino, 1);
    const file = t.store.log.segmentFile(loc.segment);
    const fd = openSync(file, 'r+');
    const byte = Buffer.alloc(1);
    const at = loc.offset + 32 + 1000;
    readSync(fd, byte, 0, 1, at);
    byte[0] = byte[0]! ^ 0x40;
    writeSync(fd, byte, 0, 1, at);
    closeSync(fd);
    await t.reopen();
    assert.ok(t.fs.read(a.ino, 0, 4096).equals(dataA.subarray(0, 4096)));
    assert.throws(() => t.fs.read(a.ino, 4096, 4096), (e: unknown) => isFsError(e, 'CORRUPT') && e.message.includes(file.split('/').pop()!));
    assert.ok(t.fs.read(a.ino, 8192, 4096).equals(dataA.subarray(8192)));
    assert.ok(t.fs.read(b.ino, 0, dataB.length).equals(dataB));
    // A read spanning the damaged block (served by one batched read of the run) still fails,
    // and a fresh read of the undamaged neighbours still succeeds.
    await t.reopen();
    assert.throws(() => t.fs.read(a.ino, 0, 3 * 4096), (e: unknown) => isFsError(e, 'CORRUPT'));
    await t.reopen();
    assert.ok(t.fs.read(a.ino, 8192, 4096).equals(dataA.subarray(8192)));
    const report = checkStore(t.store);
    assert.deepEqual(report.problems.map((p) => p.code), ['block-unreadable']);
    assert.match(report.problems[0]!.place, new RegExp(`inode ${a.ino} block 1`));
    t.fs.truncate(rootCtx, a.ino, 4096); // drops the damaged block so cleanup's check passes
  } finally {
    await t.cleanup();
  }
});

test('a segment cut mid-record keeps everything fsynced and never returns wrong bytes', async () => {
  const t = openTestFs();
  try {
    const a = t.fs.mknod(rootCtx, rootIno, 'a', S_IFREG | 0o644);
    const dataA = pattern(4 * 4096, 3);
    t.fs.write(rootCtx, a.ino, 0, dataA);
    await t.fs.fsync(a.ino);
    const b = t.fs.mknod(rootCtx, rootIno, 'b', S_IFREG | 0o644);
    t.fs.write(rootCtx, b.ino, 0, pattern(2 * 4096, 4));
    t.fs.flushFile(b.ino); // written to the log and committed, never fsynced
    const loc = pointer(t, b.ino, 1);
    const file = t.store.log.segmentFile(loc.segment);
    assert.ok(statSync(file).size > loc.offset + 100);
    truncateSync(file, loc.offset + 100); // a torn record: the tail after the last fsync is gone
    await t.crashAndReopen();
    assert.ok(t.store.openReport.dataLoss, 'open reports the lost tail');
    assert.ok(t.store.openReport.messages.some((m) => m.includes(file.split('/').pop()!)), 'the report names the segment file');
    assert.ok(t.fs.read(a.ino, 0, dataA.length).equals(dataA), 'fsynced data intact');
    assert.ok(t.fs.read(b.ino, 0, 4096).equals(pattern(2 * 4096, 4).subarray(0, 4096)), 'the record before the cut survives');
    assert.throws(() => t.fs.read(b.ino, 4096, 4096), (e: unknown) => isFsError(e, 'CORRUPT'));
    const problems = checkStore(t.store).problems;
    assert.ok(problems.length > 0 && problems.every((p) => p.place.includes(`inode ${b.ino}`)), 'only the unsynced file is damaged');
    // New writes after recovery land in a fresh segment and never overwrite referenced offsets.
    const c = t.fs.mknod(rootCtx, rootIno, 'c', S_IFREG | 0o644);
    t.fs.write(rootCtx, c.ino, 0, pattern(4096, 5));
    await t.fs.fsync();
    assert.ok(t.fs.read(c.ino, 0, 4096).equals(pattern(4096, 5)));
    t.fs.unlink(rootCtx, rootIno, 'b');
  } finally {
    await t.cleanup();
  }
});
