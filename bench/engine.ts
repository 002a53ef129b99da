/**
 * Engine benchmark (issue 2): the inode API in-process, each figure beside a raw baseline from
 * the same run — plain-file syscalls for data, the lmdb package directly for metadata.
 *
 * Workloads, in this order:
 * 1. sequential write of 256 MiB in 128 KiB chunks, final fsync included (vs fs.writeSync + fsync);
 * 2. sequential read cold (page cache dropped, new FileSystem with an empty cache) and warm
 *    (vs fs.readSync), both sides reading into one buffer they own (FileSystem.readInto, the call
 *    the FUSE layer makes);
 * 3. random 4 KiB overwrites in that file, final fsync included (vs fs.writeSync at a position);
 * 4. 100,000 creates and 100,000 lookups in one directory (vs raw LMDB puts, one
 *    transactionSync each, and gets), with tinybench in batches of 1,000;
 * 5. resident memory while writing 2 GiB, in a child process so earlier workloads do not count
 *    (vs the same loop through fs.writeSync).
 */
import { fork } from 'node:child_process';
import { closeSync, fsyncSync, openSync, readSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { open as lmdbOpen } from 'lmdb';
import { Bench } from 'tinybench';
import { FileSystem } from '../src/inode/fs.js';
import { Store } from '../src/inode/store.js';
import { rootCtx, rootIno, S_IFREG } from '../src/inode/types.js';
import { cacheSizeBytesDefault, mountNodeFlags } from '../src/limits.js';
import { Cleanup, dropCaches, KiB, MiB, mbPerSecond, patternBuffer, progress, prng, stampChunk, timed, timedSync, type Figure } from './common.js';

export interface EngineSizes {
  seqBytes: number;
  chunkBytes: number;
  randomWriteCount: number;
  metaCount: number;
  metaBatch: number;
  rssBytes: number;
  cacheSizeBytes: number;
}

export function engineSizes(quick: boolean): EngineSizes {
  return quick
    ? { seqBytes: 32 * MiB, chunkBytes: 128 * KiB, randomWriteCount: 5_000, metaCount: 10_000, metaBatch: 1_000, rssBytes: 256 * MiB, cacheSizeBytes: cacheSizeBytesDefault }
    : { seqBytes: 256 * MiB, chunkBytes: 128 * KiB, randomWriteCount: 20_000, metaCount: 100_000, metaBatch: 1_000, rssBytes: 2048 * MiB, cacheSizeBytes: cacheSizeBytesDefault };
}

const fileMode = S_IFREG | 0o644;
const engineOptions = (cacheSizeBytes: number) => ({ cacheSizeBytes, writebackDelayMs: 0 });

/** Runs every engine workload; returns the figures in a fixed order. */
export async function runEngine(quick: boolean, cleanup: Cleanup): Promise<Figure[]> {
  const sizes = engineSizes(quick);
  const root = cleanup.tempDir('engine');
  const figures: Figure[] = [];
  figures.push(...(await sequential(root, sizes)));
  figures.push(...(await metadata(root, sizes)));
  figures.push(await residentMemory(root, sizes));
  return figures;
}

// ------------------------------------------------------------------ sequential and random data

async function sequential(root: string, sizes: EngineSizes): Promise<Figure[]> {
  const storeDir = join(root, 'store-seq');
  const plainPath = join(root, 'plain-seq');
  const chunk = patternBuffer(sizes.chunkBytes, 1);
  const chunkCount = sizes.seqBytes / sizes.chunkBytes;
  const mb = sizes.seqBytes / MiB;
  const figures: Figure[] = [];

  progress(`engine: sequential write ${mb} MiB`);
  let store = Store.open(storeDir);
  let fs = new FileSystem(store, engineOptions(sizes.cacheSizeBytes));
  const ino = fs.mknod(rootCtx, rootIno, 'seq', fileMode).ino;
  const zippyWrite = await timed(async () => {
    for (let i = 0; i < chunkCount; i++) {
      stampChunk(chunk, i);
      fs.write(rootCtx, ino, i * sizes.chunkBytes, chunk);
    }
    await fs.fsync(ino);
  });
  const rawWrite = timedSync(() => {
    const fd = openSync(plainPath, 'w');
    for (let i = 0; i < chunkCount; i++) {
      stampChunk(chunk, i);
      writeSync(fd, chunk, 0, chunk.length, i * sizes.chunkBytes);
    }
    fsyncSync(fd);
    closeSync(fd);
  });
  figures.push({
    suite: 'engine', workload: `sequential write ${mb} MiB`, unit: 'MB/s',
    zippy: mbPerSecond(sizes.seqBytes, zippyWrite), baseline: mbPerSecond(sizes.seqBytes, rawWrite), baselineName: 'fs.writeSync + fsync, plain file',
    higherIsBetter: true, target: { kind: 'ratioMin', min: 0.5, text: '≥ 0.5× raw' },
    note: `${sizes.chunkBytes / KiB} KiB chunks, final fsync included`,
  });

  await fs.close();
  await store.close();
  progress('engine: sequential read cold and warm');
  const dropped = dropCaches();
  store = Store.open(storeDir);
  fs = new FileSystem(store, engineOptions(sizes.cacheSizeBytes));
  const readIno = fs.resolve('/seq');
  const zippyCold = timedSync(() => zippyReadAll(fs, readIno, sizes));
  dropCaches();
  const rawCold = timedSync(() => rawReadAll(plainPath, sizes));
  // Each warm pass follows an untimed priming pass of its own side: the raw side's drop_caches
  // above also dropped the segment files' pages.
  zippyReadAll(fs, readIno, sizes);
  const zippyWarm = timedSync(() => zippyReadAll(fs, readIno, sizes));
  rawReadAll(plainPath, sizes);
  const rawWarm = timedSync(() => rawReadAll(plainPath, sizes));
  const coldNote = dropped ? 'page cache dropped before each side; new FileSystem, empty block cache' : 'page cache NOT dropped (no permission): new FileSystem, empty block cache';
  figures.push({
    suite: 'engine', workload: `sequential read ${mb} MiB, cold`, unit: 'MB/s',
    zippy: mbPerSecond(sizes.seqBytes, zippyCold), baseline: mbPerSecond(sizes.seqBytes, rawCold), baselineName: 'fs.readSync, plain file',
    higherIsBetter: true, target: { kind: 'none', text: '—' }, note: coldNote,
  });
  figures.push({
    suite: 'engine', workload: `sequential read ${mb} MiB, warm`, unit: 'MB/s',
    zippy: mbPerSecond(sizes.seqBytes, zippyWarm), baseline: mbPerSecond(sizes.seqBytes, rawWarm), baselineName: 'fs.readSync, plain file',
    higherIsBetter: true, target: { kind: 'ratioMin', min: 0.8, text: '≥ 0.8× raw' },
    note: `pass after a priming pass; block cache ${sizes.cacheSizeBytes / MiB} MiB < file, so blocks come from the segment files' page cache`,
  });

  progress(`engine: ${sizes.randomWriteCount} random 4 KiB overwrites`);
  const block = patternBuffer(4 * KiB, 2);
  const offsets = randomBlockOffsets(sizes.seqBytes, sizes.randomWriteCount, 3);
  const zippyRandom = await timed(async () => {
    for (let i = 0; i < offsets.length; i++) {
      block.writeUInt32LE(i, 0);
      fs.write(rootCtx, readIno, offsets[i]!, block);
    }
    await fs.fsync(readIno);
  });
  const rawRandom = timedSync(() => {
    const fd = openSync(plainPath, 'r+');
    for (let i = 0; i < offsets.length; i++) {
      block.writeUInt32LE(i, 0);
      writeSync(fd, block, 0, block.length, offsets[i]!);
    }
    fsyncSync(fd);
    closeSync(fd);
  });
  figures.push({
    suite: 'engine', workload: 'random 4 KiB overwrites', unit: 'ops/s',
    zippy: offsets.length / zippyRandom, baseline: offsets.length / rawRandom, baselineName: 'pwrite (fs.writeSync at position) + fsync',
    higherIsBetter: true, target: { kind: 'none', text: '—' },
    note: `${offsets.length} writes over ${mb} MiB, final fsync included`,
  });
  await fs.close();

  progress('engine: sequential read with the file in the block cache');
  const cacheHoldingFileBytes = sizes.seqBytes + 64 * MiB;
  fs = new FileSystem(store, engineOptions(cacheHoldingFileBytes));
  // Small reads bring their blocks into the block cache (large ones stream past it).
  const primer = Buffer.allocUnsafe(4 * KiB);
  for (let off = 0; off < sizes.seqBytes; off += primer.length) fs.readInto(readIno, off, primer);
  const zippyHot = timedSync(() => zippyReadAll(fs, readIno, sizes, false));
  rawReadAll(plainPath, sizes, false);
  const rawHot = timedSync(() => rawReadAll(plainPath, sizes, false));
  figures.push({
    suite: 'engine', workload: `sequential read ${mb} MiB, in block cache`, unit: 'MB/s',
    zippy: mbPerSecond(sizes.seqBytes, zippyHot), baseline: mbPerSecond(sizes.seqBytes, rawHot), baselineName: 'fs.readSync, plain file (page cache)',
    higherIsBetter: true, target: { kind: 'none', text: '—' },
    note: `block cache ${cacheHoldingFileBytes / MiB} MiB holds the whole file (primed by 4 KiB reads): the cache-hit path alone`,
  });
  await fs.close();
  await store.close();
  return figures;
}

/** Reads the file in chunks into one buffer the caller owns (readInto, as FUSE reads do), like rawReadAll. */
function zippyReadAll(fs: FileSystem, ino: number, sizes: EngineSizes, verify = true): void {
  const buf = Buffer.allocUnsafe(sizes.chunkBytes);
  let total = 0;
  for (let off = 0; off < sizes.seqBytes; off += sizes.chunkBytes) total += fs.readInto(ino, off, buf);
  if (verify) checkRead(total, buf, sizes);
}

function rawReadAll(path: string, sizes: EngineSizes, verify = true): void {
  const fd = openSync(path, 'r');
  const buf = Buffer.allocUnsafe(sizes.chunkBytes);
  let total = 0;
  for (let off = 0; off < sizes.seqBytes; off += sizes.chunkBytes) total += readSync(fd, buf, 0, buf.length, off);
  closeSync(fd);
  if (verify) checkRead(total, buf, sizes);
}

/** A cheap sanity check that a read pass returned everything and the last chunk is the last one written. */
function checkRead(total: number, last: Buffer, sizes: EngineSizes): void {
  if (total !== sizes.seqBytes) throw new Error(`read ${total} bytes, expected ${sizes.seqBytes}`);
  const lastIndex = sizes.seqBytes / sizes.chunkBytes - 1;
  if (last.readUInt32LE(0) !== lastIndex) throw new Error('last chunk read back wrong');
}

function randomBlockOffsets(fileBytes: number, count: number, seed: number): number[] {
  const next = prng(seed);
  const blockCount = fileBytes / (4 * KiB);
  return Array.from({ length: count }, () => Math.floor(next() * blockCount) * 4 * KiB);
}

// ------------------------------------------------------------------ metadata: creates and lookups

async function metadata(root: string, sizes: EngineSizes): Promise<Figure[]> {
  progress(`engine: ${sizes.metaCount} creates and lookups`);
  const iterations = sizes.metaCount / sizes.metaBatch;
  const name = (i: number) => `file-${String(i).padStart(7, '0')}`;

  const store = Store.open(join(root, 'store-meta'));
  const fs = new FileSystem(store, engineOptions(sizes.cacheSizeBytes));
  const dir = fs.mkdir(rootCtx, rootIno, 'many', 0o755).ino;

  const env = lmdbOpen<Buffer, Buffer>({ path: join(root, 'lmdb-raw'), maxDbs: 4, noSync: true, keyEncoding: 'binary', encoding: 'binary', cache: false });
  const db = env.openDB<Buffer, Buffer>({ name: 'raw', keyEncoding: 'binary', encoding: 'binary', cache: false });
  const rawKey = (i: number) => Buffer.concat([Buffer.from([0, 0, 0, 0, 0, 0, 0, 2]), Buffer.from(name(i))]);
  const rawValue = Buffer.alloc(64, 7);

  let zippyCreated = 0;
  let rawCreated = 0;
  let zippyLooked = 0;
  let rawLooked = 0;
  const bench = new Bench({ iterations, time: 0, warmup: false, throws: true });
  bench
    .add('zippy create', () => {
      for (let end = zippyCreated + sizes.metaBatch; zippyCreated < end; zippyCreated++) fs.mknod(rootCtx, dir, name(zippyCreated), fileMode);
    })
    .add('raw create', () => {
      for (let end = rawCreated + sizes.metaBatch; rawCreated < end; rawCreated++) {
        const key = rawKey(rawCreated);
        env.transactionSync(() => db.putSync(key, rawValue));
      }
    })
    .add('zippy lookup', () => {
      for (let end = zippyLooked + sizes.metaBatch; zippyLooked < end; zippyLooked++) fs.lookup(dir, name(zippyLooked % sizes.metaCount));
    })
    .add('raw lookup', () => {
      for (let end = rawLooked + sizes.metaBatch; rawLooked < end; rawLooked++) {
        if (db.get(rawKey(rawLooked % sizes.metaCount)) === undefined) throw new Error('raw lookup missed');
      }
    });
  bench.runSync();
  const perSecond = (taskName: string): { opsPerSecond: number; p99BatchMs: number; samples: number } => {
    const task = bench.getTask(taskName);
    const result = task?.result;
    if (result === undefined || !('latency' in result)) throw new Error(`tinybench task ${taskName} did not complete (${result?.state ?? 'no result'})`);
    return { opsPerSecond: (sizes.metaBatch * 1000) / result.latency.mean, p99BatchMs: result.latency.p99, samples: result.latency.samplesCount };
  };
  const zc = perSecond('zippy create');
  const rc = perSecond('raw create');
  const zl = perSecond('zippy lookup');
  const rl = perSecond('raw lookup');
  if (zippyCreated < sizes.metaCount) throw new Error(`tinybench ran ${zippyCreated} creates, expected at least ${sizes.metaCount}`);
  await fs.close();
  await store.close();
  await env.close();
  const batchNote = (z: { p99BatchMs: number; samples: number }) => `tinybench, ${z.samples} samples of ${sizes.metaBatch} ops (${zippyCreated} files in the directory); p99 batch ${z.p99BatchMs.toFixed(1)} ms`;
  return [
    {
      suite: 'engine', workload: `${sizes.metaCount.toLocaleString('en-US')} creates (one directory)`, unit: 'ops/s',
      zippy: zc.opsPerSecond, baseline: rc.opsPerSecond, baselineName: 'lmdb putSync, one transactionSync each',
      higherIsBetter: true, target: { kind: 'absMin', min: 20_000, text: '≥ 20,000/s' }, note: batchNote(zc),
    },
    {
      suite: 'engine', workload: `${sizes.metaCount.toLocaleString('en-US')} lookups`, unit: 'ops/s',
      zippy: zl.opsPerSecond, baseline: rl.opsPerSecond, baselineName: 'lmdb get',
      higherIsBetter: true, target: { kind: 'absMin', min: 200_000, text: '≥ 200,000/s' }, note: `${batchNote(zl)}; lookup = dirent + inode decode`,
    },
  ];
}

// ------------------------------------------------------------------ resident memory

interface RssResult {
  maxRssBytes: number;
  startRssBytes: number;
  seconds: number;
}

async function residentMemory(root: string, sizes: EngineSizes): Promise<Figure> {
  progress(`engine: resident memory while writing ${sizes.rssBytes / MiB} MiB`);
  const zippy = await rssChild(['zippy', join(root, 'store-rss'), String(sizes.rssBytes), String(sizes.cacheSizeBytes)]);
  const raw = await rssChild(['raw', join(root, 'plain-rss'), String(sizes.rssBytes), String(sizes.cacheSizeBytes)]);
  const limit = sizes.cacheSizeBytes + 150 * MiB;
  return {
    suite: 'engine', workload: `max RSS writing ${sizes.rssBytes / MiB} MiB`, unit: 'MiB',
    zippy: zippy.maxRssBytes / MiB, baseline: raw.maxRssBytes / MiB, baselineName: 'same loop via fs.writeSync',
    higherIsBetter: false, target: { kind: 'absMax', max: limit / MiB, text: `< cache + 150 = ${limit / MiB} MiB` },
    note: `fresh child process with the mount's V8 flags (${mountNodeFlags.join(' ')}; start RSS ${(zippy.startRssBytes / MiB).toFixed(0)} MiB); ${mbPerSecond(sizes.rssBytes, zippy.seconds).toFixed(0)} MB/s vs ${mbPerSecond(sizes.rssBytes, raw.seconds).toFixed(0)} MB/s raw`,
  };
}

function rssChild(args: string[]): Promise<RssResult> {
  return new Promise((resolve, reject) => {
    // The child runs with the V8 flags of the mount process, whose engine this is.
    const child = fork(fileURLToPath(import.meta.url), ['--rss-child', ...args], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'], execArgv: [...mountNodeFlags] });
    let result: RssResult | undefined;
    child.on('message', (m) => {
      result = m as RssResult;
    });
    child.on('error', reject);
    child.on('exit', (code) => {
      if (code === 0 && result !== undefined) resolve(result);
      else reject(new Error(`RSS child ${args[0]} exited with ${code}`));
    });
  });
}

/** The child side: writes `bytes` in 128 KiB chunks, sampling RSS every 8 MiB. */
async function rssChildMain(mode: string, path: string, bytes: number, cacheSizeBytes: number): Promise<void> {
  const chunk = patternBuffer(128 * KiB, 4);
  const chunkCount = bytes / chunk.length;
  const sampleEvery = (8 * MiB) / chunk.length;
  const startRssBytes = process.memoryUsage().rss;
  let maxRssBytes = startRssBytes;
  const sample = () => {
    maxRssBytes = Math.max(maxRssBytes, process.memoryUsage().rss);
  };
  let seconds: number;
  if (mode === 'zippy') {
    const store = Store.open(path);
    const fs = new FileSystem(store, engineOptions(cacheSizeBytes));
    const ino = fs.mknod(rootCtx, rootIno, 'big', fileMode).ino;
    seconds = await timed(async () => {
      for (let i = 0; i < chunkCount; i++) {
        stampChunk(chunk, i);
        fs.write(rootCtx, ino, i * chunk.length, chunk);
        if (i % sampleEvery === 0) sample();
      }
      await fs.fsync(ino);
    });
    sample();
    await fs.close();
    await store.close();
  } else {
    seconds = timedSync(() => {
      const fd = openSync(path, 'w');
      for (let i = 0; i < chunkCount; i++) {
        stampChunk(chunk, i);
        writeSync(fd, chunk, 0, chunk.length, i * chunk.length);
        if (i % sampleEvery === 0) sample();
      }
      fsyncSync(fd);
      closeSync(fd);
    });
    sample();
  }
  process.send!({ maxRssBytes, startRssBytes, seconds } satisfies RssResult);
}

if (process.argv[2] === '--rss-child') {
  const [mode, path, bytes, cache] = process.argv.slice(3) as [string, string, string, string];
  rssChildMain(mode, path, Number(bytes), Number(cache)).then(
    () => process.disconnect(),
    (e: unknown) => {
      process.stderr.write(`RSS child failed: ${String((e as Error)?.stack ?? e)}\n`);
      process.exit(1);
    },
  );
}
