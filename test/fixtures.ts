/**
 * The one fixture builder of the test suite: temporary directories, stores, file systems and
 * (later) mounts and peers. Everything it makes is torn down by `cleanup`, and every store it
 * opened is checked with the store checker before it goes: a test that leaves a store
 * inconsistent fails even when its own assertions passed.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, closeSync, existsSync, lstatSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readlinkSync, readSync, rmSync, symlinkSync, linkSync, utimesSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkStore } from '../src/inode/check.js';
import { FileSystem, type FileSystemOptions } from '../src/inode/fs.js';
import { Store, type StoreOptions } from '../src/inode/store.js';
import { rootCtx } from '../src/inode/types.js';
import { seededRandom } from './random.js';
import { randomBytes } from 'node:crypto';
import { SyncEngine, type SyncOptions } from '../src/sync/engine.js';
import { mountNodeFlags } from '../src/limits.js';

/** A fresh temporary directory, removed by cleanup(). */
export function tempDir(prefix = 'zippy-test-'): string {
  return mkdtempSync(join(process.env['ZIPPY_TEST_TMP'] ?? tmpdir(), prefix));
}

export interface TestFs {
  dir: string;
  store: Store;
  fs: FileSystem;
  /** Closes cleanly and opens again (a clean remount). */
  reopen(): Promise<void>;
  /** Drops all process state without writing anything back (kill -9), then opens again. */
  crashAndReopen(): Promise<void>;
  /** Runs the checker and throws with every problem listed when the store is inconsistent. */
  check(): void;
  /** Checks, closes and removes the directory. */
  cleanup(): Promise<void>;
}

export interface TestFsOptions {
  store?: StoreOptions;
  fs?: FileSystemOptions;
}

/** A store and file system in a fresh temporary directory; the write-back timer is off by default. */
export function openTestFs(options: TestFsOptions = {}): TestFs {
  const dir = tempDir();
  const fsOptions: FileSystemOptions = { writebackDelayMs: 0, ...options.fs };
  const open = (): { store: Store; fs: FileSystem } => {
    const store = Store.open(dir, options.store);
    return { store, fs: new FileSystem(store, fsOptions) };
  };
  const state = open();
  const t: TestFs = {
    dir,
    store: state.store,
    fs: state.fs,
    async reopen() {
      await t.fs.close();
      await t.store.close();
      Object.assign(t, open());
    },
    async crashAndReopen() {
      await t.store.abandon();
      Object.assign(t, open());
    },
    check() {
      const report = checkStore(t.store);
      if (report.problems.length > 0) {
        throw new Error(`store check failed:\n${report.problems.map((p) => `  ${p.code} ${p.place}: ${p.message}`).join('\n')}`);
      }
    },
    async cleanup() {
      try {
        await t.fs.close();
        t.check();
      } finally {
        await t.store.close();
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
  return t;
}

// ------------------------------------------------------------------------------------------
// Real mounts: a zippy-fs process (the compiled CLI, `dist/src/fuse/main.js -f`) serving a
// temporary mountpoint. The test process may make synchronous file system calls into the
// mount: the mount is served by another process. Every mount is unmounted (or lazily
// detached) on teardown, even when the test failed, and the store is checked once the
// process has exited.
// ------------------------------------------------------------------------------------------

/** The repository root: the nearest ancestor of this file holding zippy-fs's package.json. */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let depth = 0; depth < 8; depth++) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'zippy-fs') return dir;
    const parent = dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  throw new Error(`no zippy-fs package.json above ${fileURLToPath(import.meta.url)}`);
}

/** The compiled mount CLI (run `npm run build` first). */
export function mountMainPath(): string {
  return join(repoRoot(), 'dist', 'src', 'fuse', 'main.js');
}

/** Why real-mount tests cannot run here, or false when they can (for `test(..., { skip })`). */
export function mountSkipReason(): string | false {
  if (process.platform !== 'linux') return 'needs Linux';
  if (process.getuid?.() !== 0) return 'needs root';
  if (!existsSync('/dev/fuse')) return 'needs /dev/fuse';
  if (!existsSync(mountMainPath())) return `needs the compiled mount (${mountMainPath()}): npm run build`;
  return false;
}

export interface MountZippyOptions {
  /** Sync dir (absolute, existing); default a fresh one. */
  syncDir?: string;
  /** Store dir (-o store=); default a fresh one. */
  storeDir?: string;
  /** Extra -o options, e.g. ['allow_other']. */
  options?: string[];
  /** Extra command-line flags, e.g. ['-s']. */
  flags?: string[];
  /** Milliseconds to wait for the mount to become live (default 20 s). */
  readyTimeoutMs?: number;
  /** Environment of the mount process (default this process's), e.g. its own XDG_CONFIG_HOME for another boxid. */
  env?: NodeJS.ProcessEnv;
}

export interface TestMount {
  readonly mountpoint: string;
  readonly syncDir: string;
  readonly storeDir: string;
  /** Pid of the current zippy-fs process. */
  readonly pid: number;
  /** Everything the current and earlier processes of this mount wrote to stdout and stderr. */
  logs(): string;
  /** SIGTERM, waits for exit code 0 (throws otherwise, with the logs), then checks the store. */
  unmount(): Promise<void>;
  /** SIGKILL, waits for the process to be gone; the mount is left stale, as after a crash. */
  kill9(): Promise<void>;
  /** Starts a new zippy-fs process on the same mountpoint, sync dir and store (after unmount or kill9). */
  remount(): Promise<void>;
  /** Runs the store checker on the (unmounted) store; throws listing every problem. */
  check(): Promise<void>;
  /** Unmounts if needed (lazily when a clean unmount fails), kills the process, removes the directories. */
  cleanup(): Promise<void>;
}

/** Mount processes still alive, detached at process exit as a last resort. */
const liveMounts = new Map<string, ChildProcess>();
let mountExitHookInstalled = false;

function installMountExitHook(): void {
  if (mountExitHookInstalled) return;
  mountExitHookInstalled = true;
  process.on('exit', () => {
    for (const [mountpoint, child] of liveMounts) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      spawnSync('fusermount', ['-u', '-z', mountpoint], { stdio: 'ignore' });
    }
  });
}

/** Whether `mountpoint` is listed in the mount table (live or stale). */
export function isMounted(mountpoint: string): boolean {
  const text = readFileSync('/proc/self/mountinfo', 'utf8');
  return text.split('\n').some((line) => {
    const field = line.split(' ')[4];
    return field !== undefined && field.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))) === mountpoint;
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolvePromise) => setTimeout(resolvePromise, ms));
}

function exitOf(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  return new Promise((resolvePromise) => child.once('exit', (code, signal) => resolvePromise({ code, signal })));
}

/**
 * Mounts zippy-fs with `-f` in a child process and resolves once the mountpoint is live (listed
 * in /proc/self/mountinfo and "mounted" logged). The mountpoint's parent is made world-
 * searchable so that tests may enter the mount as another user (with -o allow_other).
 */
export async function mountZippy(options: MountZippyOptions = {}): Promise<TestMount> {
  installMountExitHook();
  const base = tempDir('zippy-mount-');
  chmodSync(base, 0o755);
  const mountpoint = join(base, 'mnt');
  mkdirSync(mountpoint);
  const syncDir = options.syncDir ?? join(base, 'sync');
  const storeDir = options.storeDir ?? join(base, 'store');
  mkdirSync(syncDir, { recursive: true });
  const readyTimeoutMs = options.readyTimeoutMs ?? 20_000;
  let output = '';
  let child: ChildProcess | undefined;

  const start = async (): Promise<void> => {
    const args = [...mountNodeFlags, mountMainPath(), '-f', ...(options.flags ?? []), '-o', [`store=${storeDir}`, ...(options.options ?? [])].join(','), mountpoint, syncDir];
    const proc = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: options.env ?? process.env });
    child = proc;
    liveMounts.set(mountpoint, proc);
    let sawMounted = false;
    const onData = (chunk: Buffer): void => {
      const text = chunk.toString('utf8');
      output += text;
      if (/\bmounted \//.test(text)) sawMounted = true;
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', onData);
    const deadline = Date.now() + readyTimeoutMs;
    while (!(sawMounted && isMounted(mountpoint))) {
      if (proc.exitCode !== null || proc.signalCode !== null) {
        throw new Error(`zippy-fs exited (${proc.exitCode ?? proc.signalCode}) before the mount was live:\n${output}`);
      }
      if (Date.now() > deadline) {
        proc.kill('SIGKILL');
        await exitOf(proc);
        spawnSync('fusermount', ['-u', '-z', mountpoint], { stdio: 'ignore' });
        throw new Error(`zippy-fs did not mount within ${readyTimeoutMs} ms:\n${output}`);
      }
      await sleep(20);
    }
  };

  const requireStopped = (what: string): void => {
    if (child !== undefined && child.exitCode === null && child.signalCode === null) throw new Error(`${what}: zippy-fs (pid ${child.pid}) is still running`);
  };

  const m: TestMount = {
    mountpoint,
    syncDir,
    storeDir,
    get pid() {
      return child?.pid ?? -1;
    },
    logs: () => output,
    async unmount() {
      if (child === undefined) return;
      const proc = child;
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      const result = await exitOf(proc);
      liveMounts.delete(mountpoint);
      if (result.code !== 0) throw new Error(`zippy-fs exited with ${result.code ?? result.signal} on SIGTERM:\n${output}`);
      if (isMounted(mountpoint)) throw new Error(`zippy-fs exited 0 but ${mountpoint} is still mounted:\n${output}`);
      await m.check();
    },
    async kill9() {
      if (child === undefined) return;
      child.kill('SIGKILL');
      await exitOf(child);
    },
    async remount() {
      requireStopped('remount');
      await start();
    },
    async check() {
      requireStopped('check');
      const store = Store.open(storeDir);
      try {
        const report = checkStore(store);
        if (report.problems.length > 0) {
          throw new Error(`store check failed:\n${report.problems.map((p) => `  ${p.code} ${p.place}: ${p.message}`).join('\n')}`);
        }
      } finally {
        await store.close();
      }
    },
    async cleanup() {
      try {
        if (child !== undefined && child.exitCode === null && child.signalCode === null) {
          child.kill('SIGTERM');
          const exited = await Promise.race([exitOf(child).then(() => true), sleep(10_000).then(() => false)]);
          if (!exited) {
            child.kill('SIGKILL');
            await exitOf(child);
          }
        }
      } finally {
        liveMounts.delete(mountpoint);
        if (isMounted(mountpoint)) spawnSync('fusermount', ['-u', '-z', mountpoint], { stdio: 'ignore' });
        if (!isMounted(mountpoint)) rmSync(base, { recursive: true, force: true });
      }
    },
  };
  try {
    await start();
  } catch (e) {
    await m.cleanup();
    throw e;
  }
  return m;
}

// ------------------------------------------------------------------------------------------
// Looking at trees from outside: snapshots for comparing a mount with a plain directory, and a
// synchronous xattr helper (Node has no xattr calls), served by one python3 process over two
// FIFOs so that thousands of calls cost milliseconds, not a process each.
// ------------------------------------------------------------------------------------------

/** The errno code name of a failed xattr call, or the value. */
export type XattrResult<T> = { ok: true; value: T } | { ok: false; code: string };

const xattrServerPy = `
import errno, json, os, sys
req = open(sys.argv[1], 'rb', buffering=0)
resp = open(sys.argv[2], 'wb', buffering=0)
def answer(obj):
    resp.write((json.dumps(obj) + '\\n').encode())
def dump(paths):
    out = {}
    for p in paths:
        try:
            out[p] = {n: os.getxattr(p, n, follow_symlinks=False).hex() for n in sorted(os.listxattr(p, follow_symlinks=False))}
        except OSError as e:
            out[p] = {'!error': errno.errorcode.get(e.errno, str(e.errno))}
    return out
buf = b''
while True:
    chunk = req.read(65536)
    if not chunk:
        break
    buf += chunk
    while b'\\n' in buf:
        line, buf = buf.split(b'\\n', 1)
        r = json.loads(line)
        op, p = r['op'], r.get('path')
        try:
            if op == 'set':
                os.setxattr(p, r['name'], bytes.fromhex(r['value']), r.get('flags', 0), follow_symlinks=False); v = None
            elif op == 'get':
                v = os.getxattr(p, r['name'], follow_symlinks=False).hex()
            elif op == 'list':
                v = sorted(os.listxattr(p, follow_symlinks=False))
            elif op == 'remove':
                os.removexattr(p, r['name'], follow_symlinks=False); v = None
            elif op == 'dump':
                v = dump(r['paths'])
            else:
                raise ValueError(op)
            answer({'ok': True, 'value': v})
        except OSError as e:
            answer({'ok': False, 'code': errno.errorcode.get(e.errno, str(e.errno))})
`;

/** Synchronous xattr calls through a python3 helper process; close() when done. */
export class XattrHelper {
  private readonly dir: string;
  private readonly child: ChildProcess;
  private readonly reqFd: number;
  private readonly respFd: number;
  private pending = '';

  constructor() {
    this.dir = tempDir('zippy-xattr-');
    const req = join(this.dir, 'req');
    const resp = join(this.dir, 'resp');
    for (const fifo of [req, resp]) {
      const made = spawnSync('mkfifo', [fifo]);
      if (made.status !== 0) throw new Error(`mkfifo ${fifo}: ${made.stderr.toString()}`);
    }
    this.child = spawn('python3', ['-c', xattrServerPy, req, resp], { stdio: ['ignore', 'inherit', 'inherit'] });
    // Opening a FIFO blocks until the other end opens it; python opens req, then resp, as we do.
    this.reqFd = openSync(req, 'w');
    this.respFd = openSync(resp, 'r');
  }

  private call<T>(request: Record<string, unknown>): XattrResult<T> {
    writeSync(this.reqFd, `${JSON.stringify(request)}\n`);
    const chunk = Buffer.alloc(1 << 16);
    while (!this.pending.includes('\n')) {
      const n = readSync(this.respFd, chunk, 0, chunk.length, null);
      if (n === 0) throw new Error('xattr helper exited');
      this.pending += chunk.subarray(0, n).toString('utf8');
    }
    const at = this.pending.indexOf('\n');
    const line = this.pending.slice(0, at);
    this.pending = this.pending.slice(at + 1);
    return JSON.parse(line) as XattrResult<T>;
  }

  set(path: string, name: string, value: Buffer, flags = 0): XattrResult<null> {
    return this.call({ op: 'set', path, name, value: value.toString('hex'), flags });
  }

  /** The value as hex. */
  get(path: string, name: string): XattrResult<string> {
    return this.call({ op: 'get', path, name });
  }

  list(path: string): XattrResult<string[]> {
    return this.call({ op: 'list', path });
  }

  remove(path: string, name: string): XattrResult<null> {
    return this.call({ op: 'remove', path, name });
  }

  /** name → hex value of every xattr of each path (symlinks not followed). */
  dump(paths: string[]): Record<string, Record<string, string>> {
    const result = this.call<Record<string, Record<string, string>>>({ op: 'dump', paths });
    if (!result.ok) throw new Error(`xattr dump: ${result.code}`);
    return result.value;
  }

  close(): void {
    closeSync(this.reqFd);
    closeSync(this.respFd);
    this.child.kill();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export interface TreeEntry {
  type: 'file' | 'dir' | 'symlink' | 'other';
  mode: number;
  uid: number;
  gid: number;
  /** Regular files and symlinks only (directory sizes differ between file systems). */
  size: number | undefined;
  nlink: number;
  mtimeNs: bigint;
  /** sha256 of a regular file's contents. */
  sha256: string | undefined;
  target: string | undefined;
  xattrs: Record<string, string> | undefined;
}

export interface SnapshotOptions {
  /** Also read xattrs through this helper. */
  xattrs?: XattrHelper;
  /** Relative paths (or their top directories) left out. */
  exclude?: (relPath: string) => boolean;
  /** Bound on the number of entries walked (default 100,000). */
  entryCountMax?: number;
}

/** Every entry below `root` by relative path, walked with an explicit stack, symlinks not followed. */
export function snapshotTree(root: string, options: SnapshotOptions = {}): Map<string, TreeEntry> {
  const entries = new Map<string, TreeEntry>();
  const entryCountMax = options.entryCountMax ?? 100_000;
  const stack: string[] = [''];
  while (stack.length > 0) {
    const rel = stack.pop()!;
    for (const name of readdirSync(join(root, rel)).sort()) {
      const relPath = rel === '' ? name : `${rel}/${name}`;
      if (options.exclude?.(relPath) === true) continue;
      if (entries.size >= entryCountMax) throw new Error(`more than ${entryCountMax} entries below ${root}`);
      const path = join(root, relPath);
      const st = lstatSync(path, { bigint: true });
      const type = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'other';
      entries.set(relPath, {
        type,
        mode: Number(st.mode),
        uid: Number(st.uid),
        gid: Number(st.gid),
        size: type === 'dir' ? undefined : Number(st.size),
        nlink: Number(st.nlink),
        mtimeNs: st.mtimeNs,
        sha256: type === 'file' ? createHash('sha256').update(readFileSync(path)).digest('hex') : undefined,
        target: type === 'symlink' ? readlinkSync(path) : undefined,
        xattrs: undefined,
      });
      if (type === 'dir') stack.push(relPath);
    }
  }
  if (options.xattrs !== undefined) {
    const paths = [...entries.keys()].filter((p) => entries.get(p)!.type !== 'symlink');
    for (let i = 0; i < paths.length; i += 500) {
      const chunk = paths.slice(i, i + 500);
      const dumped = options.xattrs.dump(chunk.map((p) => join(root, p)));
      for (const p of chunk) entries.get(p)!.xattrs = dumped[join(root, p)] ?? {};
    }
  }
  return entries;
}

export type TreeField = keyof TreeEntry;

/** Differences between two snapshots in the given fields, one line each (empty when equal). */
export function diffTrees(a: Map<string, TreeEntry>, b: Map<string, TreeEntry>, fields: TreeField[], limit = 30): string[] {
  const out: string[] = [];
  for (const [path, ea] of a) {
    const eb = b.get(path);
    if (eb === undefined) {
      out.push(`${path}: only in the first tree`);
      continue;
    }
    for (const field of fields) {
      const va = JSON.stringify(ea[field], (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));
      const vb = JSON.stringify(eb[field], (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));
      if (va !== vb) out.push(`${path}: ${field} ${va} != ${vb}`);
    }
  }
  for (const path of b.keys()) if (!a.has(path)) out.push(`${path}: only in the second tree`);
  return out.slice(0, limit);
}

export { seededRandom };

/**
 * Writes a deterministic tree of `fileCount` regular files (sizes 0 to ~256 KiB, mostly small,
 * varied modes and mtimes) in nested directories under `root`, plus symlinks and hard links.
 */
export function writeTestTree(root: string, fileCount: number, seed = 1): void {
  const rand = seededRandom(seed);
  const dirs = [''];
  mkdirSync(root, { recursive: true });
  for (let i = 0; i < Math.max(1, Math.floor(fileCount / 25)); i++) {
    const parent = rand.pick(dirs);
    const dir = parent === '' ? `d${i}` : `${parent}/d${i}`;
    mkdirSync(join(root, dir));
    dirs.push(dir);
  }
  const pool = Buffer.alloc(512 * 1024);
  for (let j = 0; j < pool.length; j += 4) pool.writeUInt32LE(rand.int(0x100000000), j);
  const files: string[] = [];
  for (let i = 0; i < fileCount; i++) {
    const dir = rand.pick(dirs);
    const path = join(root, dir, `f${i}${rand.pick(['', '.txt', '.bin', '.c'])}`);
    const sizeBytes = rand.next() < 0.9 ? rand.int(8192) : rand.int(256 * 1024);
    const offset = rand.int(pool.length - sizeBytes);
    writeFileSync(path, pool.subarray(offset, offset + sizeBytes));
    chmodSync(path, rand.pick([0o644, 0o600, 0o755, 0o444, 0o640]));
    const when = 1_500_000_000 + rand.int(100_000_000) + rand.int(1_000_000) / 1_000_000;
    utimesSync(path, when, when);
    files.push(path);
  }
  for (let i = 0; i < Math.floor(fileCount / 50); i++) {
    const dir = rand.pick(dirs);
    const target = rand.pick(files);
    if (rand.next() < 0.5) symlinkSync(relative(join(root, dir), target), join(root, dir, `s${i}`));
    else linkSync(target, join(root, dir, `h${i}`));
  }
  for (const dir of dirs.slice(1).reverse()) chmodSync(join(root, dir), rand.pick([0o755, 0o750, 0o775]));
}

/** Runs a command to completion; throws with its output when it fails. Returns stdout. */
export function runTool(command: string, args: string[], options: { cwd?: string; input?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): string {
  const result = spawnSync(command, args, {
    cwd: options.cwd,
    input: options.input,
    env: options.env ?? process.env,
    timeout: options.timeoutMs ?? 120_000,
    maxBuffer: 64 * 1024 * 1024,
    encoding: 'utf8',
  });
  if (result.error !== undefined) throw new Error(`${command} ${args.join(' ')}: ${result.error.message}`);
  if (result.status !== 0) throw new Error(`${command} ${args.join(' ')} exited ${result.status ?? result.signal}:\n${result.stdout}${result.stderr}`);
  return result.stdout;
}

// ------------------------------------------------------------------------------------------
// Sync boxes: in-process peers (store + file system + sync engine, no FUSE) sharing a sync dir.
// ------------------------------------------------------------------------------------------

export interface SyncBox {
  readonly t: TestFs;
  readonly engine: SyncEngine;
  readonly boxid: string;
  /** The box's file system (changes when the fixture reopens it). */
  readonly fs: FileSystem;
  /** Stops sync (publishing what is left), checks and removes the store. */
  cleanup(): Promise<void>;
  /** Drops the engine and the store without publishing or syncing (kill -9), then reopens both. */
  crashAndReopen(): Promise<void>;
}

/** An in-process peer on `syncDir`: its own store and boxid; no watching unless asked. */
export async function openSyncBox(syncDir: string, options: { boxid?: string; publishDelayMs?: number; watch?: boolean; log?: (m: string) => void; configDir?: string;
  gc?: Pick<SyncOptions, 'gc' | 'gcIntervalMs' | 'gcYield' | 'now'> } = {}): Promise<SyncBox> {
  const t = openTestFs();
  const boxid = options.boxid ?? randomBytes(16).toString('hex');
  const syncOptions = {
    syncDir, boxid, publishDelayMs: options.publishDelayMs ?? 60_000, watch: options.watch ?? false,
    log: options.log ?? ((): void => undefined),
    ...(options.configDir === undefined ? {} : { configDir: options.configDir }),
    // In-process boxes collect garbage only when a test calls gcNow(), so timing never decides.
    gcIntervalMs: false as const,
    ...options.gc,
    // GC planning gives the event loop a turn every 64 steps, so every GC test runs its paused paths.
    gc: { sliceMs: 0, ...options.gc?.gc },
  };
  let engine = await SyncEngine.start(t.fs, syncOptions);
  const box: SyncBox = {
    t, boxid,
    get engine() {
      return engine;
    },
    get fs() {
      return t.fs;
    },
    async cleanup() {
      await engine.stop();
      await t.cleanup();
    },
    async crashAndReopen() {
      await engine.abandon();
      await t.crashAndReopen();
      engine = await SyncEngine.start(t.fs, syncOptions);
    },
  };
  return box;
}

/** Writes `data` at `offset` of the file at `path` in a sync box, creating it (mode 0644) if absent. */
export function writeBoxFile(box: SyncBox, path: string, data: Buffer | string, offset = 0): void {
  const fs = box.fs;
  let ino: number;
  try {
    ino = fs.resolve(path);
  } catch {
    const { parent, name } = fs.resolveParent(path);
    ino = fs.mknod(rootCtx, parent, name, 0o100644).ino;
  }
  const fh = fs.open(ino);
  fs.write(rootCtx, ino, offset, Buffer.from(data));
  fs.release(fh);
}

/** The content of the file at `path` in a sync box, as text. */
export function readBoxFile(box: SyncBox, path: string): string {
  const ino = box.fs.resolve(path);
  return box.fs.read(ino, 0, box.fs.getattr(ino).size).toString();
}

/** True when `path` exists in a sync box. */
export function boxPathExists(box: SyncBox, path: string): boolean {
  try {
    box.fs.resolve(path);
    return true;
  } catch {
    return false;
  }
}

/** A set of temporary directories a test file makes as it goes and removes at its end (`after(() => set.removeAll())`). */
export function scratchDirs(): { make(prefix: string): string; removeAll(): void } {
  const dirs: string[] = [];
  return {
    make(prefix) {
      const dir = tempDir(prefix);
      dirs.push(dir);
      return dir;
    },
    removeAll() {
      for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
    },
  };
}

// ------------------------------------------------------------------------------------------
// Several machines on one host: each its own HOME with XDG_CONFIG_HOME and XDG_CACHE_HOME under
// it (so its own boxid, key pair and default stores), for tests of key enrollment and the like.
// ------------------------------------------------------------------------------------------

export interface TestMachine {
  readonly name: string;
  readonly home: string;
  /** Its zippy-fs config directory (`$XDG_CONFIG_HOME/zippy-fs`). */
  readonly configDir: string;
  /** The environment of its processes (ZIPPY_PASSPHRASE cleared). */
  readonly env: NodeJS.ProcessEnv;
}

/** Machines, scratch directories and mounts of a test file; `cleanup` unmounts and removes them all. */
export class TestMachines {
  private readonly dirs = scratchDirs();
  private readonly mounts: TestMount[] = [];

  /** A fresh temporary directory, removed by cleanup. */
  scratch(prefix: string): string {
    return this.dirs.make(prefix);
  }

  machine(name: string): TestMachine {
    const home = this.scratch(`zippy-home-${name}-`);
    return {
      name, home, configDir: join(home, '.config', 'zippy-fs'),
      env: { ...process.env, HOME: home, XDG_CONFIG_HOME: join(home, '.config'), XDG_CACHE_HOME: join(home, '.cache'), ZIPPY_PASSPHRASE: '' },
    };
  }

  /** mountZippy as `machine` (its environment), torn down by cleanup. */
  async mount(machine: TestMachine, options: Omit<MountZippyOptions, 'env'> = {}): Promise<TestMount> {
    const m = await mountZippy({ ...options, env: machine.env });
    this.mounts.push(m);
    return m;
  }

  async cleanup(): Promise<void> {
    for (const m of this.mounts) await m.cleanup();
    this.dirs.removeAll();
  }
}

/**
 * Polls `probe` every 25 ms (a throw counts as false) until it holds; returns the milliseconds it
 * took, or throws "<what>: not within <ms> ms". For changes that arrive through another process.
 */
export async function within(ms: number, what: string, probe: () => boolean | Promise<boolean>): Promise<number> {
  const started = Date.now();
  for (;;) {
    let ok = false;
    try {
      ok = await probe();
    } catch {
      ok = false;
    }
    if (ok) return Date.now() - started;
    if (Date.now() - started > ms) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
