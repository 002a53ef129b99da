/**
 * The place cache (src/inode/place-cache.ts): block places of read ranges kept in memory. Every
 * writer of the block map must forget what it changes — overwrites, holes, truncates, content
 * replaced by sync, the cleaner moving blocks — and reads after each change must return the new
 * data with no reopen in between. A small cache (4 chunks) checks the bound and eviction.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openTestFs } from './fixtures.js';
import { cleanSegments } from '../src/inode/cleaner.js';
import { FileSystem } from '../src/inode/fs.js';
import { chunkBlockCount, PlaceCache } from '../src/inode/place-cache.js';
import { rootCtx, rootIno, S_IFREG } from '../src/inode/types.js';

const block = 4096;
const fill = (blocks: number, seed: number): Buffer => {
  const b = Buffer.alloc(blocks * block);
  for (let i = 0; i < b.length; i += 4) b.writeUInt32LE((i * 2654435761 + seed) >>> 0, i);
  return b;
};

test('reads see every block-map change without a reopen', async () => {
  // A 1 MiB block cache against a 3 MiB file: most reads go to the log through the place cache.
  const t = openTestFs({ store: { segmentSizeMaxBytes: 256 * 1024 }, fs: { cacheSizeBytes: 1024 * 1024 } });
  try {
    const ino = t.fs.mknod(rootCtx, rootIno, 'f', S_IFREG | 0o644).ino;
    const model = fill(3 * chunkBlockCount, 1); // three chunks
    t.fs.write(rootCtx, ino, 0, model);
    await t.fs.fsync(ino);
    const readAll = () => t.fs.read(ino, 0, model.length);
    assert.ok(readAll().equals(model));
    assert.ok(t.store.places.size >= 2, `chunks filled by the reads (${t.store.places.size})`);

    // Overwrite one block (write-back replaces its block-map entry).
    const patch = fill(1, 7);
    t.fs.write(rootCtx, ino, 300 * block, patch);
    patch.copy(model, 300 * block);
    await t.fs.fsync(ino);
    assert.ok(readAll().equals(model), 'overwrite seen');

    // A zero block becomes a hole (write-back removes the entry).
    t.fs.write(rootCtx, ino, 10 * block, Buffer.alloc(block));
    model.fill(0, 10 * block, 11 * block);
    await t.fs.fsync(ino);
    assert.ok(readAll().equals(model), 'hole seen');

    // Truncate down into the second chunk, then grow again: the freed blocks read as zeros.
    t.fs.truncate(rootCtx, ino, 400 * block + 100);
    t.fs.truncate(rootCtx, ino, model.length);
    model.fill(0, 400 * block + 100);
    await t.fs.fsync(ino);
    assert.ok(readAll().equals(model), 'truncate seen');

    // The cleaner moves the live blocks out of mostly-dead segments and deletes those files.
    for (let round = 0; round < 6; round++) {
      const churn = t.fs.mknod(rootCtx, rootIno, `churn${round}`, S_IFREG | 0o644).ino;
      t.fs.write(rootCtx, churn, 0, fill(60, round));
      await t.fs.fsync(churn);
      t.fs.unlink(rootCtx, rootIno, `churn${round}`);
    }
    assert.ok(readAll().equals(model));
    const report = await cleanSegments(t.store, { protectedSegmentCount: 1, victimCountMax: 100, liveRatioMax: 0.99 });
    assert.ok(report.blocksMoved > 0, 'the cleaner moved blocks of the cached file');
    assert.ok(readAll().equals(model), 'moved blocks read from their new places');

    // Content replaced as the sync layer does it (here by a sparse version: no pointers at all).
    t.fs.replaceContent(ino, model.length, 1n, new Map());
    assert.ok(readAll().equals(Buffer.alloc(model.length)), 'replaced content seen');
    t.check();
  } finally {
    await t.cleanup();
  }
});

test('the cache stays within its chunk bound, and nothing is filled inside a write transaction', async () => {
  const t = openTestFs();
  try {
    const ino = t.fs.mknod(rootCtx, rootIno, 'f', S_IFREG | 0o644).ino;
    const data = fill(6 * chunkBlockCount, 3);
    t.fs.write(rootCtx, ino, 0, data);
    await t.fs.fsync(ino);
    const small = new PlaceCache(t.store.btree, 4);
    for (let i = 0; i < 6 * chunkBlockCount; i += 17) {
      const place = small.get(ino, i);
      assert.deepEqual(place, t.store.places.get(ino, i));
      assert.ok(small.size <= 4, `at most 4 chunks, got ${small.size}`);
    }
    const empty = new PlaceCache(t.store.btree, 4);
    t.store.transaction(() => assert.ok(empty.get(ino, 0) !== undefined));
    assert.equal(empty.size, 0, 'no chunk filled inside the transaction');
    assert.equal(small.get(ino, 6 * chunkBlockCount + 5), undefined, 'past the end: a hole');
  } finally {
    await t.cleanup();
  }
});

test('an append into a chunk read before (its tail then was holes) reads back', async () => {
  const t = openTestFs({ fs: { cacheSizeBytes: 1024 * 1024 } });
  try {
    const ino = t.fs.mknod(rootCtx, rootIno, 'f', S_IFREG | 0o644).ino;
    const first = fill(chunkBlockCount + chunkBlockCount / 2, 5);
    t.fs.write(rootCtx, ino, 0, first);
    await t.fs.fsync(ino);
    // A second FileSystem on the same store has an empty block cache, so it reads through the
    // places: its read fills the chunk whose tail is still holes, then the first one appends there.
    const cold = new FileSystem(t.store, { writebackDelayMs: 0 });
    try {
      assert.ok(cold.read(ino, 0, first.length).equals(first));
      const more = fill(8, 6);
      t.fs.write(rootCtx, ino, first.length, more);
      await t.fs.fsync(ino);
      assert.ok(cold.read(ino, first.length, more.length).equals(more), 'appended blocks read back');
    } finally {
      await cold.close();
    }
  } finally {
    await t.cleanup();
  }
});
