/**
 * Whole-mount benchmark (issue 3): the same workloads, with the same tool, on a real zippy-fs
 * mount and on a plain directory of the same disk (both under the system temp dir), in one run.
 *
 * Workloads, in this order (sizes are the full ones; --quick shrinks them):
 * 1. sequential write of 1 GiB in 1 MiB requests, fsync included (node fs);
 * 2. sequential read of it, cold (page cache dropped) and warm;
 * 3. 4 KiB random reads (page cache dropped first; then only the read file's page cache dropped,
 *    the store's files cached) and 4 KiB random writes + fsync;
 * 4. create + write 4 KiB + close of 10,000 files in one directory;
 * 5. stat of those 10,000 files (caches dropped first);
 * 6. `ls -l` of that directory (caches dropped first);
 * 7. `tar x` of a real source tree (/usr/include, or node_modules/typescript when absent).
 *
 * Before each run on the mount the bench waits until the mount process is idle (write-back and
 * publishing of the previous workload done) and notes how long that took, so each figure is the
 * workload's own and the background cost stays visible.
 *
 * The mount is a child process (`node --max-semi-space-size=4 bin/zippy-fs.js -f -o store=...`, the flags of its shebang); it is stopped with
 * SIGTERM (which flushes and unmounts) and lazily unmounted if that fails. Extra node flags for
 * the mount process (e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof`) can be given in
 * ZIPPY_BENCH_MOUNT_NODE_ARGS to profile it.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, readSync, statSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Cleanup, dropCaches, dropFileCache, KiB, MiB, mbPerSecond, patternBuffer, progress, prng, stampChunk, timedSync, type Figure, type Target } from './common.js';
import { mountNodeFlags } from '../src/limits.js';

interface MountSizes {
  seqBytes: number;
  requestBytes: number;
  randomCount: number;
  smallFileCount: number;
  smallFileBytes: number;
  /** Directory tarred up for the untar workload. */
  tarSource: string;
}

const repoDir = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const binPath = join(repoDir, 'bin', 'zippy-fs.js');

function mountSizes(quick: boolean): MountSizes {
  const usrInclude = '/usr/include';
  const typescript = join(repoDir, 'node_modules', 'typescript');
  return {
    seqBytes: (quick ? 128 : 1024) * MiB,
    requestBytes: MiB,
    randomCount: quick ? 2_000 : 20_000,
    smallFileCount: quick ? 2_000 : 10_000,
    smallFileBytes: 4 * KiB,
    tarSource: !quick && existsSync(usrInclude) ? usrInclude : typescript,
  };
}

/** Runs every mount workload on a fresh mount and on a plain directory; figures in a fixed order. */
export async function runMount(quick: boolean, cleanup: Cleanup): Promise<Figure[]> {
  const sizes = mountSizes(quick);
  const root = cleanup.tempDir('mount');
  const plain = join(root, 'plain');
  const mnt = join(root, 'mnt');
  for (const dir of [plain, mnt, join(root, 'sync'), join(root, 'store')]) mkdirSync(dir);
  const tarball = join(root, 'tree.tar');
  progress(`mount: tarring ${sizes.tarSource}`);
  execFileSync('tar', ['cf', tarball, '-C', dirname(sizes.tarSource), sizes.tarSource.split('/').pop()!], { stdio: ['ignore', 'ignore', 'pipe'] });

  const mountPid = await startMount(root, mnt, cleanup);
  const sides = [
    { name: 'zippy', dir: mnt },
    { name: 'plain', dir: plain },
  ] as const;
  /** Runs `work` on the mount and then the plain dir (same code, same order each time); returns seconds. */
  const both = (prepare: ((dir: string) => void) | undefined, work: (dir: string) => void): { zippy: number; plain: number } => {
    const out = { zippy: 0, plain: 0 };
    for (const side of sides) {
      if (side.name === 'zippy') settleSeconds.push(settle(mountPid));
      prepare?.(side.dir);
      out[side.name] = timedSync(() => work(side.dir));
    }
    return out;
  };
  /** Seconds the mount kept busy in the background (write-back, publishing) before each zippy run. */
  const settleSeconds: number[] = [];
  const figures: Figure[] = [];
  const add = (workload: string, unit: string, amount: number, secs: { zippy: number; plain: number }, target: Target, note: string, toUnit: (amount: number, seconds: number) => number = (a, s) => a / s) => {
    const settled = settleSeconds.at(-1) ?? 0;
    const settleNote = settled >= 0.5 ? `; the mount was busy ${settled.toFixed(1)} s in the background before this run started` : '';
    figures.push({ suite: 'mount', workload, unit, zippy: toUnit(amount, secs.zippy), baseline: toUnit(amount, secs.plain), baselineName: 'same workload, plain directory on the same disk', higherIsBetter: true, target, note: note + settleNote });
  };
  const mb = sizes.seqBytes / MiB;
  const none: Target = { kind: 'none', text: '—' };

  progress(`mount: sequential write ${mb} MiB`);
  add(`sequential write ${mb} MiB`, 'MB/s', sizes.seqBytes, both(() => dropCaches(), (dir) => writeSequential(join(dir, 'big'), sizes)), { kind: 'absMin', min: 250, text: '≥ 250 MB/s' }, '1 MiB writes, fsync included (node fs)', mbPerSecond);
  progress('mount: sequential read');
  add(`sequential read ${mb} MiB, cold`, 'MB/s', sizes.seqBytes, both(() => dropCaches(), (dir) => readSequential(join(dir, 'big'), sizes)), { kind: 'absMin', min: 600, text: '≥ 600 MB/s' }, '1 MiB reads after drop_caches', mbPerSecond);
  // The plain side's drop_caches also dropped the mount's pages, so each side is primed right before its warm pass.
  const readBig = (dir: string) => readSequential(join(dir, 'big'), sizes);
  add(`sequential read ${mb} MiB, warm`, 'MB/s', sizes.seqBytes, both(readBig, readBig), none, 'pass right after an untimed priming pass: kernel page cache (auto_cache keeps it)', mbPerSecond);
  progress('mount: random 4 KiB reads and writes');
  const offsets = randomOffsets(sizes.seqBytes, sizes.randomCount, 11);
  add('4 KiB random reads', 'ops/s', sizes.randomCount, both(() => dropCaches(), (dir) => randomReads(join(dir, 'big'), offsets)), { kind: 'absMin', min: 12_000, text: '≥ 12,000/s' }, `${sizes.randomCount} preads over ${mb} MiB after drop_caches`);
  // The same reads after the same preparation on both sides: read the file once, then drop only
  // its own page cache. The plain file is then cold; the mount's store (segment files, LMDB)
  // stays in the page cache. This is the FUSE path without disk latency, the condition of the
  // target's reference (a trivial in-memory FUSE filesystem).
  const readThenDrop = (dir: string) => {
    readBig(dir);
    dropFileCache(join(dir, 'big'));
  };
  add('4 KiB random reads, store cached', 'ops/s', sizes.randomCount, both(readThenDrop, (dir) => randomReads(join(dir, 'big'), offsets)), { kind: 'absMin', min: 12_000, text: '≥ 12,000/s' }, `${sizes.randomCount} preads over ${mb} MiB after one sequential read of the file and dropping that file's page cache only (dd iflag=nocache)`);
  add('4 KiB random writes', 'ops/s', sizes.randomCount, both(() => dropCaches(), (dir) => randomWrites(join(dir, 'big'), offsets)), none, `${sizes.randomCount} pwrites, fsync included`);
  progress(`mount: ${sizes.smallFileCount} small files`);
  add(`create+write+close ${sizes.smallFileCount.toLocaleString('en-US')} × 4 KiB`, 'files/s', sizes.smallFileCount, both(() => dropCaches(), (dir) => createSmallFiles(join(dir, 'small'), sizes)), { kind: 'absMin', min: 2_500, text: '≥ 2,500/s' }, 'one directory, no fsync');
  add(`stat ${sizes.smallFileCount.toLocaleString('en-US')} files`, 'stats/s', sizes.smallFileCount, both(() => dropCaches(), (dir) => statSmallFiles(join(dir, 'small'), sizes)), { kind: 'absMin', min: 12_000, text: '≥ 12,000/s' }, 'statSync by path after drop_caches');
  add(`ls -l of ${sizes.smallFileCount.toLocaleString('en-US')} entries`, 'entries/s', sizes.smallFileCount, both(() => dropCaches(), (dir) => run('ls', ['-l', join(dir, 'small')])), none, '`ls -l > /dev/null` after drop_caches');
  const tarBytes = statSync(tarball).size;
  const entryCount = Number(execFileSync('tar', ['tf', tarball], { encoding: 'utf8', maxBuffer: 256 * MiB }).split('\n').filter((l) => l !== '').length);
  progress(`mount: untar ${sizes.tarSource}`);
  add(`untar ${sizes.tarSource}`, 'entries/s', entryCount, both(() => dropCaches(), (dir) => run('tar', ['xf', tarball, '-C', dir])), none, `${entryCount} entries, ${(tarBytes / MiB).toFixed(0)} MiB tarball, \`tar xf\` (no sync)`);
  return figures;
}

// ------------------------------------------------------------------ the mount process

/**
 * Waits until the mount process is idle (under 10% of one CPU over two 250 ms samples, at most
 * 300 s) so that each timed run measures its own requests, not write-back or publishing left
 * over from the previous workload; returns the seconds waited.
 */
function settle(pid: number): number {
  const ticks = (): number => {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[11]) + Number(fields[12]); // utime + stime, in clock ticks (USER_HZ = 100)
  };
  const start = process.hrtime.bigint();
  let quiet = 0;
  let last = ticks();
  while (quiet < 2 && Number(process.hrtime.bigint() - start) / 1e9 < 300) {
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 250);
    const now = ticks();
    quiet = now - last <= 2 ? quiet + 1 : 0;
    last = now;
  }
  const waited = Number(process.hrtime.bigint() - start) / 1e9;
  return Math.max(0, waited - 0.5); // two quiet samples are the floor of every wait
}

async function startMount(root: string, mnt: string, cleanup: Cleanup): Promise<number> {
  const extraNodeArgs = (process.env['ZIPPY_BENCH_MOUNT_NODE_ARGS'] ?? '').split(' ').filter((a) => a !== '');
  const child = spawn(process.execPath, [...mountNodeFlags, ...extraNodeArgs, binPath, '-f', '-o', `store=${join(root, 'store')}`, mnt, join(root, 'sync')], { stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-16 * KiB);
  });
  cleanup.add(`unmount ${mnt}`, () => stopMount(child, mnt, () => stderr));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`mount not ready after 30 s: ${stderr}`)), 30_000);
    child.on('message', (m) => {
      if (m === 'ready') {
        clearTimeout(timer);
        resolve();
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`zippy-fs exited with ${code} before mounting: ${stderr}`));
    });
  });
  if (!isMounted(mnt)) throw new Error(`zippy-fs reported ready but ${mnt} is not in /proc/self/mountinfo`);
  return child.pid!;
}

async function stopMount(child: ChildProcess, mnt: string, stderr: () => string): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) {
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    const code = await Promise.race([exited, new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), 120_000).unref())]);
    if (code === 'timeout') {
      child.kill('SIGKILL');
      process.stderr.write(`bench: zippy-fs did not exit within 120 s of SIGTERM; killed\n`);
    } else if (code !== 0) {
      process.stderr.write(`bench: zippy-fs exited with ${code} on SIGTERM: ${stderr()}\n`);
    }
  }
  if (isMounted(mnt)) spawnSync('fusermount', ['-u', '-z', mnt], { stdio: 'ignore' });
  if (isMounted(mnt)) spawnSync('umount', ['-l', mnt], { stdio: 'ignore' });
}

function isMounted(mnt: string): boolean {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((line) => line.split(' ')[4] === mnt);
}

// ------------------------------------------------------------------ workloads (same code on both sides)

function writeSequential(path: string, sizes: MountSizes): void {
  const chunk = patternBuffer(sizes.requestBytes, 5);
  const fd = openSync(path, 'w');
  for (let i = 0; i < sizes.seqBytes / sizes.requestBytes; i++) {
    stampChunk(chunk, i);
    writeSync(fd, chunk, 0, chunk.length, i * chunk.length);
  }
  fsyncSync(fd);
  closeSync(fd);
}

function readSequential(path: string, sizes: MountSizes): void {
  const buf = Buffer.allocUnsafe(sizes.requestBytes);
  const fd = openSync(path, 'r');
  let total = 0;
  for (let n; (n = readSync(fd, buf, 0, buf.length, null)) > 0; ) total += n;
  closeSync(fd);
  if (total !== sizes.seqBytes) throw new Error(`${path}: read ${total} bytes, expected ${sizes.seqBytes}`);
  if (buf.readUInt32LE(0) !== sizes.seqBytes / sizes.requestBytes - 1) throw new Error(`${path}: last chunk read back wrong`);
}

function randomOffsets(fileBytes: number, count: number, seed: number): number[] {
  const next = prng(seed);
  const blockCount = fileBytes / (4 * KiB);
  return Array.from({ length: count }, () => Math.floor(next() * blockCount) * 4 * KiB);
}

function randomReads(path: string, offsets: number[]): void {
  const buf = Buffer.allocUnsafe(4 * KiB);
  const fd = openSync(path, 'r');
  for (const off of offsets) {
    if (readSync(fd, buf, 0, buf.length, off) !== buf.length) throw new Error(`${path}: short read at ${off}`);
  }
  closeSync(fd);
}

function randomWrites(path: string, offsets: number[]): void {
  const buf = patternBuffer(4 * KiB, 6);
  const fd = openSync(path, 'r+');
  offsets.forEach((off, i) => {
    buf.writeUInt32LE(i, 0);
    writeSync(fd, buf, 0, buf.length, off);
  });
  fsyncSync(fd);
  closeSync(fd);
}

const smallName = (i: number) => `f${String(i).padStart(5, '0')}`;

function createSmallFiles(dir: string, sizes: MountSizes): void {
  mkdirSync(dir);
  const buf = patternBuffer(sizes.smallFileBytes, 7);
  for (let i = 0; i < sizes.smallFileCount; i++) {
    buf.writeUInt32LE(i, 0);
    const fd = openSync(join(dir, smallName(i)), 'w');
    writeSync(fd, buf);
    closeSync(fd);
  }
}

function statSmallFiles(dir: string, sizes: MountSizes): void {
  for (let i = 0; i < sizes.smallFileCount; i++) {
    if (statSync(join(dir, smallName(i))).size !== sizes.smallFileBytes) throw new Error(`${dir}: ${smallName(i)} has the wrong size`);
  }
}

function run(command: string, args: string[]): void {
  const result = spawnSync(command, args, { stdio: ['ignore', 'ignore', 'pipe'], maxBuffer: 16 * MiB });
  if (result.status !== 0) throw new Error(`${command} ${args.join(' ')} failed (${result.status ?? result.signal}): ${result.stderr?.toString().slice(0, 2000)}`);
}
