/**
 * The block cache (src/inode/cache.ts) on its own: the byte bound, second-chance eviction order,
 * dirty blocks never evicted, the new-dirty count st_blocks uses, and buffer reuse.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BlockCache } from '../src/inode/cache.js';

const block = 4096;

test('eviction drops the oldest clean block, gives a used one a second chance, and never drops dirty ones', () => {
  const cache = new BlockCache(3 * block);
  const put = (i: number, dirty = false) => cache.put(1, i, cache.take().fill(i), dirty, true);
  for (const i of [0, 1, 2, 3]) put(i);
  assert.equal(cache.bytes, 4 * block);
  assert.equal(cache.evictClean(), 1);
  assert.equal(cache.has(1, 0), false, 'the oldest went first');
  assert.equal(cache.get(1, 1)?.data[0], 1, 'a hit returns the block');
  put(4);
  assert.equal(cache.evictClean(), 1);
  assert.equal(cache.has(1, 1), true, 'block 1 was used: second chance');
  assert.equal(cache.has(1, 2), false, 'block 2 was the oldest unused one');
  // Block 1 went behind 3 and 4 when it was passed over, and lost its mark: 3 goes next, then 1.
  put(5);
  cache.evictClean();
  assert.deepEqual([1, 3, 4, 5].map((i) => cache.has(1, i)), [true, false, true, true]);
  put(6);
  cache.evictClean();
  assert.deepEqual([1, 4, 5, 6].map((i) => cache.has(1, i)), [true, false, true, true]);
  put(7);
  cache.evictClean();
  assert.equal(cache.has(1, 1), false, 'block 1, unused since its second chance, goes');

  for (const i of [10, 11, 12, 13]) put(i, true);
  cache.evictClean();
  for (const i of [10, 11, 12, 13]) assert.equal(cache.has(1, i), true, `dirty block ${i} kept`);
  assert.ok(cache.bytes >= 4 * block, 'over capacity while everything left is dirty');
  assert.equal(cache.evictClean(), 0);
});

test('new dirty blocks count until written back; buffers are reused', () => {
  const cache = new BlockCache(8 * block);
  const fresh = cache.put(7, 0, cache.take(), true, false);
  cache.put(7, 1, cache.take(), true, true);
  assert.equal(cache.newDirtyCountOf(7), 1, 'only the block the map does not hold');
  cache.setStored(fresh, true);
  assert.equal(cache.newDirtyCountOf(7), 0);
  assert.deepEqual(cache.dirtyOf(7).map((e) => e.blockIndex), [0, 1]);
  for (const e of cache.dirtyOf(7)) cache.markClean(e);
  assert.equal(cache.hasDirty(7), false);

  const data = cache.take();
  cache.give(data);
  assert.equal(cache.take(), data, 'a given-back buffer is handed out again');
  cache.dropFrom(7, 0);
  assert.equal(cache.bytes, 0);
});
