/**
 * The publisher's block worker (src/sync/block-worker.ts): its batch API against the functions it
 * moves off the JS thread (ids equal blockIdOf, entries equal compressBlock, CRC-32 equals zlib's);
 * its failures (a thread that exits, throws, hangs or refuses becomes an error for the batches
 * waiting, never a hang, and the next batch gets a new thread); the publisher's id pass, which
 * leaves a block rewritten meanwhile to flatListOf; and a real mount answering FUSE requests while
 * a large publish is held half-way (by the worker's test gate, so the order is certain).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as zlib from 'node:zlib';
import { promisify } from 'node:util';
import { isFsError } from '../src/errors.js';
import { blockIdOf, plainBlockIdKey } from '../src/sync/block-id.js';
import { compressBlock } from '../src/sync/block-prep.js';
import { BlockWorker } from '../src/sync/block-worker.js';
import { blockBatchCountMax } from '../src/sync/limits.js';
import { zipMethodDeflate, zipMethodStore } from '../src/sync/zip-format.js';
import { SyncEngine } from '../src/sync/engine.js';
import { rootCtx, rootIno } from '../src/inode/types.js';
import { SyncPort } from '../src/inode/sync-port.js';
import { mountSkipReason, mountZippy, openSyncBox, openTestFs, readBoxFile, runTool, scratchDirs, tempDir, within, writeBoxFile } from './fixtures.js';
import { seededRandom } from './random.js';

const run = promisify(execFile);
const skip = mountSkipReason();
const block = 4096;

/** Blocks of every kind the writer meets: text, random (whole and short), zeros, few distinct bytes. */
function sampleBlocks(count: number, seed: number): Buffer[] {
  const random = seededRandom(seed);
  const blocks: Buffer[] = [];
  for (let i = 0; i < count; i++) {
    const kind = i % 5;
    const length = kind === 1 ? 1 + random.int(block - 1) : block;
    const data = Buffer.alloc(length);
    for (let j = 0; j < length; j++) {
      data[j] = kind === 0 ? 'the quick brown fox jumps over the lazy dog\n'.charCodeAt((j + i) % 44)
        : kind === 1 || kind === 2 ? random.int(256) : kind === 3 ? 0 : random.int(16);
    }
    blocks.push(data);
  }
  return blocks;
}

test('block ids and zip entry data from the worker equal the on-thread functions', async () => {
  const worker = new BlockWorker();
  try {
    const blocks = sampleBlocks(blockBatchCountMax, 1);
    const ids = await worker.blockIds(blocks, plainBlockIdKey);
    assert.equal(ids.length, blocks.length);
    blocks.forEach((b, i) => assert.deepEqual(ids[i], blockIdOf(b, plainBlockIdKey), `id of block ${i}`));
    // Another key (an encrypted dir's) is sent to the thread and used from then on.
    const key = Buffer.alloc(32, 7);
    const keyed = await worker.blockIds(blocks.slice(0, 10), key);
    keyed.forEach((id, i) => assert.deepEqual(id, blockIdOf(blocks[i]!, key), `keyed id of block ${i}`));
    assert.notDeepEqual(keyed[0], ids[0]);
    for (const level of [1, 6]) {
      const prepared = await worker.prepare(blocks.map((data, i) => ({ blockId: ids[i]!, data })), level);
      const methods = new Set<number>();
      prepared.forEach((p, i) => {
        const data = blocks[i]!;
        const expected = compressBlock(data, level);
        assert.deepEqual(Buffer.from(p.blockId), ids[i]);
        assert.equal(p.crc32, zlib.crc32(data), `crc32 of block ${i}`);
        assert.equal(p.sizeBytes, data.length);
        assert.equal(p.method, expected.method, `method of block ${i}`);
        assert.deepEqual(p.stored, expected.stored, `stored bytes of block ${i}`);
        if (p.method === zipMethodDeflate) {
          assert.ok(p.stored.length < data.length, `block ${i} kept deflated only when smaller`);
          assert.deepEqual(zlib.inflateRawSync(p.stored), data);
        } else {
          assert.deepEqual(p.stored, data);
        }
        methods.add(p.method);
      });
      assert.deepEqual([...methods].sort(), [zipMethodStore, zipMethodDeflate], 'the sample has blocks of both methods');
    }
    // Random whole blocks are stored untried, text and few-valued blocks deflated.
    const p1 = await worker.prepare(blocks.slice(0, 5).map((data, i) => ({ blockId: ids[i]!, data })), 1);
    assert.deepEqual(p1.map((p) => p.method), [zipMethodDeflate, zipMethodStore, zipMethodStore, zipMethodDeflate, zipMethodDeflate]);
  } finally {
    await worker.close();
  }
});

test('a batch over the limits is refused before it reaches the thread', async () => {
  const worker = new BlockWorker();
  try {
    const tooMany = sampleBlocks(blockBatchCountMax + 1, 2);
    await assert.rejects(worker.blockIds(tooMany, plainBlockIdKey), (e) => isFsError(e, 'LIMIT'));
    await assert.rejects(worker.prepare([{ blockId: Buffer.alloc(16, 1), data: Buffer.alloc(block + 1) }], 1), (e) => isFsError(e, 'BAD_INPUT'));
    await assert.rejects(worker.prepare([{ blockId: Buffer.alloc(16, 1), data: Buffer.alloc(10) }], 10), (e) => isFsError(e, 'BAD_INPUT'));
  } finally {
    await worker.close();
  }
});

test('a thread that exits, throws, hangs or refuses fails the waiting batches, and the next batch gets a new thread', async () => {
  const faulty = new BlockWorker({ scriptUrl: new URL('./block-worker-faulty.js', import.meta.url), silenceMsMax: 300 });
  const one = [{ blockId: Buffer.alloc(16, 1), data: Buffer.alloc(100, 1) }];
  try {
    const expectEio = (pattern: RegExp) => (e: unknown): boolean => isFsError(e, 'EIO') && pattern.test(e.message);
    // Two batches wait when the thread exits: both fail.
    await Promise.all([
      assert.rejects(faulty.prepare(one, 7), expectEio(/exited \(code 7\)/)),
      assert.rejects(faulty.prepare(one, 3), expectEio(/exited \(code 7\)/)),
    ]);
    await assert.rejects(faulty.prepare(one, 8), expectEio(/failed: faulty worker throws/));
    await assert.rejects(faulty.prepare(one, 9), expectEio(/did not answer for 300 ms/));
    await assert.rejects(faulty.prepare(one, 3), expectEio(/refused a batch: faulty worker refuses/));
  } finally {
    await faulty.close();
  }
  const worker = new BlockWorker();
  try {
    const waiting = assert.rejects(worker.blockIds([Buffer.alloc(10, 1)], plainBlockIdKey), (e) => isFsError(e, 'EIO') && /closed/.test(e.message));
    await worker.close();
    await waiting;
    const ids = await worker.blockIds([Buffer.alloc(10, 1)], plainBlockIdKey);
    assert.deepEqual(ids[0], blockIdOf(Buffer.alloc(10, 1)));
  } finally {
    await worker.close();
  }
});

test('SyncPort.readStoredBlocks reads back-to-back records in runs and returns what readStoredBlock returns, in order', async () => {
  const t = openTestFs();
  try {
    const port = new SyncPort(t.fs);
    const a = t.fs.mknod(rootCtx, rootIno, 'a', 0o100644).ino;
    const b = t.fs.mknod(rootCtx, rootIno, 'b', 0o100644).ino;
    const content = Buffer.concat(sampleBlocks(40, 5).map((x) => Buffer.concat([x, Buffer.alloc(block - x.length, 2)])));
    t.fs.write(rootCtx, a, 0, content);
    t.fs.flushFile(a);
    // Rewritten blocks and another file's blocks break the runs.
    for (const blockIndex of [3, 17, 18, 30]) {
      t.fs.write(rootCtx, a, blockIndex * block, Buffer.alloc(block, blockIndex));
      t.fs.write(rootCtx, b, blockIndex * block, Buffer.alloc(100, blockIndex));
      t.fs.flushFile(a);
      t.fs.flushFile(b);
    }
    const list = [...port.blockPointers(a)].map(([blockIndex, pointer]) => ({ ino: a, blockIndex, pointer }))
      .concat([...port.blockPointers(b)].map(([blockIndex, pointer]) => ({ ino: b, blockIndex, pointer })));
    const log = t.store.log;
    const runLengths: number[] = [];
    const readRun = log.readRun.bind(log);
    log.readRun = (locs, inos, blockIndexes) => {
      runLengths.push(locs.length);
      return readRun(locs, inos, blockIndexes);
    };
    const payloads = port.readStoredBlocks(list);
    log.readRun = readRun;
    assert.equal(payloads.length, list.length);
    list.forEach((x, i) => assert.deepEqual(payloads[i], port.readStoredBlock(x.ino, x.blockIndex, x.pointer), `block ${x.ino}:${x.blockIndex}`));
    assert.ok(runLengths.length >= 3, `runs read: ${runLengths.join(', ')}`);
    assert.ok(runLengths.every((n) => n > 1));
    assert.ok(runLengths.reduce((x, y) => x + y, 0) >= 30, 'most of the first write is read in runs');
  } finally {
    await t.cleanup();
  }
});

test('the id pass runs on the worker; a block rewritten while it runs keeps its unknown id and is published with its new content', async () => {
  const dirs = scratchDirs();
  const gate = dirs.make('zippy-gate-');
  const syncDir = dirs.make('zippy-sync-');
  process.env['ZIPPY_TEST_BLOCK_WORKER_GATE'] = gate;
  const a = await openSyncBox(syncDir);
  const b = await openSyncBox(syncDir);
  try {
    const content = Buffer.concat(sampleBlocks(600, 3).map((x) => (x.length === block ? x : Buffer.concat([x, Buffer.alloc(block - x.length, 9)]))));
    writeBoxFile(a, '/big', content);
    writeFileSync(join(gate, 'hold-ids'), '');
    const publishing = a.engine.publishNow();
    await within(20_000, 'the id pass reaches the worker', () => existsSync(join(gate, 'held-ids')));
    // Block 5 lies in the first batch, which the JS thread has read already.
    const rewritten = Buffer.alloc(block, 0x5a);
    writeBoxFile(a, '/big', rewritten, 5 * block);
    const ino = a.fs.resolve('/big');
    a.fs.flushFile(ino);
    rmSync(join(gate, 'hold-ids'));
    const report = await publishing;
    assert.equal(report.archives.length, 1);
    rewritten.copy(content, 5 * block);
    const pointers = a.engine.port.blockPointers(ino);
    assert.equal(pointers.size, 480, 'every block but the 120 all-zero ones (holes)');
    for (const [blockIndex, pointer] of pointers) {
      const data = a.engine.port.readStoredBlock(ino, blockIndex, pointer);
      assert.deepEqual(pointer.blockId, blockIdOf(data), `remembered id of block ${blockIndex}`);
    }
    await b.engine.importNow();
    assert.equal(readBoxFile(b, '/big'), content.toString());
  } finally {
    delete process.env['ZIPPY_TEST_BLOCK_WORKER_GATE'];
    await a.cleanup();
    await b.cleanup();
    dirs.removeAll();
  }
});

test('a block worker that dies fails the publish with EIO; the outbox stays and the next publish, on a new thread, publishes it', async () => {
  const dirs = scratchDirs();
  const syncDir = dirs.make('zippy-sync-');
  const flag = join(dirs.make('zippy-flag-'), 'fail');
  writeFileSync(flag, '');
  process.env['ZIPPY_TEST_FAULTY_FLAG'] = flag;
  const t = openTestFs();
  const logs: string[] = [];
  const engine = await SyncEngine.start(t.fs, {
    syncDir, boxid: 'ab'.repeat(16), publishDelayMs: 60_000, gcIntervalMs: false, log: (m) => logs.push(m),
    blockWorker: { scriptUrl: new URL('./block-worker-faulty.js', import.meta.url) },
  });
  const b = await openSyncBox(syncDir);
  try {
    const content = Buffer.concat(sampleBlocks(100, 4).map((x) => Buffer.concat([x, Buffer.alloc(block - x.length, 1)])));
    const ino = t.fs.mknod(rootCtx, rootIno, 'big', 0o100644).ino;
    t.fs.write(rootCtx, ino, 0, content);
    const before = engine.port.outboxCount();
    assert.ok(before > 0);
    await assert.rejects(engine.publishNow(), (e) => isFsError(e, 'EIO') && /block worker exited \(code 7\)/.test(e.message));
    assert.equal(engine.port.outboxCount(), before, 'the outbox stays');
    assert.deepEqual(readdirSync(syncDir).filter((n) => !n.startsWith('keys')), [], 'nothing written to the sync dir');
    rmSync(flag);
    const report = await engine.publishNow();
    assert.equal(report.archives.length, 1);
    assert.equal(engine.port.outboxCount(), 0);
    await b.engine.importNow();
    assert.equal(readBoxFile(b, '/big'), content.toString());
  } finally {
    delete process.env['ZIPPY_TEST_FAULTY_FLAG'];
    await engine.stop();
    await t.cleanup();
    await b.cleanup();
    dirs.removeAll();
  }
});

test('a mount answers stat and read while a 64 MiB publish is held in its id pass and in its zip', { skip }, async () => {
  const gate = tempDir('zippy-gate-');
  const m = await mountZippy({ env: { ...process.env, XDG_CONFIG_HOME: tempDir('zippy-config-'), ZIPPY_TEST_BLOCK_WORKER_GATE: gate } });
  const idxCount = (): number => readdirSync(m.syncDir).filter((n) => n.endsWith('.idx')).length;
  try {
    writeFileSync(join(m.mountpoint, 'small.txt'), 'still answering\n');
    await within(20_000, 'small.txt published', () => idxCount() === 1);
    writeFileSync(join(gate, 'hold-ids'), '');
    writeFileSync(join(gate, 'hold-entries'), '');
    const big = Buffer.alloc(64 * 1024 * 1024);
    for (let i = 0; i < big.length / block; i++) {
      const digest = createHash('sha256').update(`block ${i}`).digest();
      for (let at = 0; at < block; at += digest.length) digest.copy(big, i * block + at);
    }
    writeFileSync(join(m.mountpoint, 'big.bin'), big);
    // Each request runs in a child process: if the mount's JS thread were waiting on the worker,
    // it would not answer and the child would time out.
    const answers = async (): Promise<void> => {
      const stat = await run('stat', ['-c', '%s', join(m.mountpoint, 'small.txt'), join(m.mountpoint, 'big.bin')], { timeout: 20_000 });
      assert.equal(stat.stdout, `16\n${big.length}\n`);
      const cat = await run('cat', [join(m.mountpoint, 'small.txt')], { timeout: 20_000 });
      assert.equal(cat.stdout, 'still answering\n');
      const head = await run('sh', ['-c', `head -c 8192 '${join(m.mountpoint, 'big.bin')}' | sha256sum`], { timeout: 20_000 });
      assert.equal(head.stdout.split(' ')[0], createHash('sha256').update(big.subarray(0, 8192)).digest('hex'));
    };
    await within(30_000, 'the publish of big.bin holds in its id pass', () => existsSync(join(gate, 'held-ids')));
    await answers();
    assert.equal(idxCount(), 1, 'the publish is still held');
    rmSync(join(gate, 'hold-ids'));
    await within(30_000, 'the publish of big.bin holds while writing its zip', () => existsSync(join(gate, 'held-entries')));
    await answers();
    assert.equal(idxCount(), 1, 'the publish is still held');
    rmSync(join(gate, 'hold-entries'));
    await within(60_000, 'big.bin published', () => idxCount() === 2);
    await m.unmount();
    const zips = readdirSync(m.syncDir).filter((n) => n.endsWith('.zip')).map((n) => join(m.syncDir, n));
    for (const zip of zips) assert.match(runTool('unzip', ['-tq', zip]), /No errors detected/);
  } finally {
    rmSync(join(gate, 'hold-ids'), { force: true });
    rmSync(join(gate, 'hold-entries'), { force: true });
    await m.unmount().catch(() => undefined);
    await m.cleanup();
    rmSync(gate, { recursive: true, force: true });
  }
});
