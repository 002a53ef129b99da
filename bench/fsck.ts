/**
 * fsck benchmark (issue 7): `zippy-fsck --json` (the real CLI, a child process) on a store of
 * 1 GiB of data in 100,000 files, page cache dropped first when permitted. Target: under 60 s.
 * Baseline: reading every file of the store once (segments and LMDB) with fs.readSync, the floor
 * for a checker that verifies every byte.
 *
 * The store is built in-process through the inode API (FileSystem, no FUSE): 100 directories of
 * 1,000 files, sizes spread between 1 byte and 21 KiB (about 10.7 KB on average), non-zero
 * distinct content (zero blocks would become holes), each file written back after it is written.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, openSync, readdirSync, readSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FileSystem } from '../src/inode/fs.js';
import { Store } from '../src/inode/store.js';
import { rootCtx, rootIno, S_IFREG } from '../src/inode/types.js';
import { Cleanup, dropCaches, MiB, patternBuffer, progress, prng, timed, timedSync, type Figure } from './common.js';

const fsckJs = fileURLToPath(new URL('../tools/fsck.js', import.meta.url));

export interface FsckSizes {
  fileCount: number;
  dirCount: number;
  totalBytes: number;
}

export function fsckSizes(quick: boolean): FsckSizes {
  return quick ? { fileCount: 10_000, dirCount: 10, totalBytes: 100 * MiB } : { fileCount: 100_000, dirCount: 100, totalBytes: 1024 * MiB };
}

/** Builds the store; returns the bytes of file data written. */
export async function buildStore(dir: string, sizes: FsckSizes): Promise<number> {
  const store = Store.open(dir);
  const fs = new FileSystem(store, { writebackDelayMs: 0 });
  const source = patternBuffer(4 * MiB, 7);
  const next = prng(11);
  const meanBytes = sizes.totalBytes / sizes.fileCount;
  let written = 0;
  let sourceAt = 0;
  const perDir = Math.ceil(sizes.fileCount / sizes.dirCount);
  for (let d = 0; d < sizes.dirCount; d++) {
    const dir = fs.mkdir(rootCtx, rootIno, `d${d}`, 0o755).ino;
    for (let i = 0; i < perDir && d * perDir + i < sizes.fileCount; i++) {
      const sizeBytes = Math.max(1, Math.round(next() * 2 * meanBytes));
      if (sourceAt + sizeBytes > source.length) sourceAt = 0;
      const data = Buffer.from(source.subarray(sourceAt, sourceAt + sizeBytes));
      if (sizeBytes >= 4) data.writeUInt32LE(d * perDir + i, 0); // distinct first block per file
      sourceAt += 4096;
      const f = fs.mknod(rootCtx, dir, `f${i}`, S_IFREG | 0o644);
      fs.write(rootCtx, f.ino, 0, data);
      fs.flushFile(f.ino);
      written += sizeBytes;
    }
    if (d % 10 === 9) progress(`fsck bench: ${d + 1} of ${sizes.dirCount} directories written`);
  }
  await fs.close();
  await store.close();
  return written;
}

/** Reads every file under `dir` once (the baseline). */
function readAll(dir: string): number {
  const buf = Buffer.allocUnsafe(MiB);
  let total = 0;
  const stack = [dir];
  while (stack.length > 0) {
    const d = stack.pop()!;
    for (const entry of readdirSync(d, { withFileTypes: true })) {
      const path = join(d, entry.name);
      if (entry.isDirectory()) {
        stack.push(path);
        continue;
      }
      const fd = openSync(path, 'r');
      try {
        for (let n = readSync(fd, buf, 0, buf.length, null); n > 0; n = readSync(fd, buf, 0, buf.length, null)) total += n;
      } finally {
        closeSync(fd);
      }
    }
  }
  return total;
}

/** Runs the fsck workload; returns its figure. */
export async function runFsck(quick: boolean, cleanup: Cleanup): Promise<Figure[]> {
  const sizes = fsckSizes(quick);
  const root = cleanup.tempDir('fsck');
  const storeDir = join(root, 'store');
  const buildSeconds = await timed(() => buildStore(storeDir, sizes).then((n) => progress(`fsck bench: ${(n / MiB).toFixed(0)} MiB in ${sizes.fileCount} files`)));
  const dataBytes = statSync(join(storeDir, 'lmdb', 'data.mdb')).size;
  dropCaches();
  let baselineBytes = 0;
  const baselineSeconds = timedSync(() => {
    baselineBytes = readAll(storeDir);
  });
  dropCaches();
  let report = '';
  const fsckSeconds = timedSync(() => {
    report = execFileSync(process.execPath, [fsckJs, '--json', storeDir], { encoding: 'utf8', maxBuffer: 64 * MiB });
  });
  const parsed = JSON.parse(report) as { clean: boolean; counts: Record<string, number> };
  if (!parsed.clean) throw new Error(`fsck bench: the freshly built store does not check clean: ${report.slice(0, 2000)}`);
  return [{
    suite: 'fsck',
    workload: `zippy-fsck of ${(sizes.totalBytes / MiB / 1024).toFixed(sizes.totalBytes >= 1024 * MiB ? 0 : 1)} GiB in ${sizes.fileCount.toLocaleString('en-US')} files (cold)`,
    unit: 's',
    zippy: fsckSeconds,
    baseline: baselineSeconds,
    baselineName: 'read every file of the store once (fs.readSync)',
    higherIsBetter: false,
    target: { kind: 'absMax', max: 60, text: '< 60 s' },
    note: `${parsed.counts['inodes']} inodes, ${parsed.counts['blocks']} blocks, ${(parsed.counts['recordBytes']! / MiB).toFixed(0)} MiB of records, LMDB ${(dataBytes / MiB).toFixed(0)} MiB, baseline read ${(baselineBytes / MiB).toFixed(0)} MiB; building the store took ${buildSeconds.toFixed(0)} s`,
  }];
}
