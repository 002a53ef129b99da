/**
 * Real-mount tests of src/fuse/binding.ts and the patched addon in native/fuse/.
 *
 * A tiny in-memory file system defined below is mounted in a temporary directory and driven
 * with ordinary tools (touch, stat, ln, dd, setfattr, getfattr, python3, setpriv) running as
 * child processes. The test process itself never makes a synchronous file system call into
 * the mount: it serves the mount on its own event loop, so that would deadlock.
 *
 * Needs root and /dev/fuse (skipped otherwise). Throughput is measured in bench/, not here.
 *
 * Run: node --import tsx --test test/fuse-binding.test.ts
 */
import assert from 'node:assert/strict';
import { execFile as execFileCb, spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { constants as osConstants, tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import {
  Fuse, type CallerContext, type DirentStat, type FuseOperations, type MountOptions, type Stat,
  type TimeSpec,
} from '../src/fuse/binding.js';

const execFile = promisify(execFileCb);
const E = osConstants.errno;
/** The repository root, from test/ (tsx) or dist/test/ (compiled). */
function findRepoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'native', 'fuse', 'build.mjs'))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error('repository root not found');
    dir = parent;
  }
  return dir;
}
const repoRoot = findRepoRoot();
/** The binding module this file imported (tsx maps .js to the .ts source). */
const bindingUrl = new URL('../src/fuse/binding.js', import.meta.url).href;

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFMT = 0o170000;
const XATTR_CREATE = 1;
const XATTR_REPLACE = 2;

const canMount = process.getuid?.() === 0 && existsSync('/dev/fuse');
const skip = canMount ? false : 'needs root and /dev/fuse';

// ---------------------------------------------------------------------------------------
// A tiny in-memory file system: enough POSIX for the tools above, no more.
// ---------------------------------------------------------------------------------------

interface MemNode {
  ino: number;
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  rdev: number;
  data: Buffer;
  size: number;
  atime: bigint;
  mtime: bigint;
  ctime: bigint;
  xattrs: Map<string, Buffer>;
  children: Map<string, MemNode> | undefined;
  target: string | undefined;
}

interface CallRecord {
  op: string;
  ctx: CallerContext;
  path: string;
  detail?: unknown;
}

function nowNs(): bigint {
  return BigInt(Date.now()) * 1_000_000n;
}

class MemFs {
  private nextIno = 1000;
  private nextFh = 1;
  readonly root: MemNode;
  readonly handles = new Map<number, MemNode>();
  readonly calls: CallRecord[] = [];
  readonly writeSizes: number[] = [];
  readonly utimens: { path: string; atime: TimeSpec; mtime: TimeSpec }[] = [];
  readonly setxattrFlags: number[] = [];
  /** Bench mode: writes are counted and dropped. */
  discard = false;

  constructor() {
    this.root = this.node(S_IFDIR | 0o777, 0, 0);
    this.root.nlink = 2;
  }

  node(mode: number, uid: number, gid: number): MemNode {
    const t = nowNs();
    return {
      ino: this.nextIno++, mode, uid, gid, nlink: 1, rdev: 0, data: Buffer.alloc(0), size: 0,
      atime: t, mtime: t, ctime: t, xattrs: new Map(),
      children: (mode & S_IFMT) === S_IFDIR ? new Map() : undefined, target: undefined,
    };
  }

  lookup(path: string): MemNode | undefined {
    let node: MemNode | undefined = this.root;
    for (const part of path.split('/')) {
      if (part === '') continue;
      node = node?.children?.get(part);
      if (node === undefined) return undefined;
    }
    return node;
  }

  parent(path: string): { dir: MemNode | undefined; name: string } {
    const index = path.lastIndexOf('/');
    return { dir: this.lookup(path.slice(0, index) || '/'), name: path.slice(index + 1) };
  }

  stat(n: MemNode): Stat {
    return {
      mode: n.mode, uid: n.uid, gid: n.gid, size: n.size, nlink: n.nlink, ino: n.ino, rdev: n.rdev,
      blksize: 4096, blocks: Math.ceil(n.size / 512), atime: n.atime, mtime: n.mtime, ctime: n.ctime,
    };
  }

  /** Adds `count` empty files to a new directory without going through the kernel. */
  populate(dirName: string, count: number): void {
    const dir = this.node(S_IFDIR | 0o755, 0, 0);
    dir.nlink = 2;
    this.root.children!.set(dirName, dir);
    for (let i = 0; i < count; i++) dir.children!.set(`f${i}`, this.node(S_IFREG | 0o644, 0, 0));
  }

  private record(op: string, ctx: CallerContext, path: string, detail?: unknown): void {
    if (this.discard) return;
    this.calls.push(detail === undefined ? { op, ctx, path } : { op, ctx, path, detail });
  }

  private create(ctx: CallerContext, path: string, mode: number): MemNode | number {
    const { dir, name } = this.parent(path);
    if (dir?.children === undefined) return -E.ENOENT;
    if (dir.children.has(name)) return -E.EEXIST;
    const n = this.node(mode, ctx.uid, ctx.gid);
    if ((mode & S_IFMT) === S_IFDIR) {
      n.nlink = 2;
      dir.nlink++;
    }
    dir.children.set(name, n);
    dir.mtime = dir.ctime = nowNs();
    return n;
  }

  private remove(path: string, wantDir: boolean): number {
    const { dir, name } = this.parent(path);
    const n = dir?.children?.get(name);
    if (dir === undefined || n === undefined) return -E.ENOENT;
    const isDir = (n.mode & S_IFMT) === S_IFDIR;
    if (wantDir && !isDir) return -E.ENOTDIR;
    if (!wantDir && isDir) return -E.EISDIR;
    if (isDir && n.children!.size > 0) return -E.ENOTEMPTY;
    dir.children!.delete(name);
    n.nlink -= isDir ? 2 : 1;
    if (isDir) dir.nlink--;
    n.ctime = dir.mtime = dir.ctime = nowNs();
    return 0;
  }

  private open(n: MemNode): number {
    const fh = this.nextFh++;
    this.handles.set(fh, n);
    return fh;
  }

  private resize(n: MemNode, size: number): void {
    if (!this.discard) {
      if (size > n.data.length) {
        const grown = Buffer.alloc(Math.max(size, n.data.length * 2));
        n.data.copy(grown);
        n.data = grown;
      } else if (size < n.size) {
        n.data.fill(0, size, n.size);
      }
    }
    n.size = size;
  }

  operations(): FuseOperations {
    return {
      getattr: (ctx, path, cb) => {
        this.record('getattr', ctx, path);
        const n = this.lookup(path);
        n === undefined ? cb(-E.ENOENT) : cb(0, this.stat(n));
      },
      fgetattr: (ctx, path, fh, cb) => {
        this.record('fgetattr', ctx, path, fh);
        const n = this.handles.get(fh);
        n === undefined ? cb(-E.EBADF) : cb(0, this.stat(n));
      },
      access: (ctx, path, mask, cb) => {
        this.record('access', ctx, path, mask);
        cb(this.lookup(path) === undefined ? -E.ENOENT : 0);
      },
      statfs: (ctx, path, cb) => {
        this.record('statfs', ctx, path);
        cb(0, { bsize: 4096, frsize: 4096, blocks: 2 ** 40, bfree: 2 ** 39, bavail: 2 ** 39, files: 1e6, ffree: 5e5, favail: 5e5, fsid: 7, flag: 0, namemax: 255 });
      },
      opendir: (ctx, path, flags, cb) => {
        this.record('opendir', ctx, path, flags);
        const n = this.lookup(path);
        n?.children === undefined ? cb(-E.ENOTDIR) : cb(0, this.open(n));
      },
      readdir: (ctx, path, fh, cb) => {
        this.record('readdir', ctx, path, fh);
        const n = this.handles.get(fh) ?? this.lookup(path);
        if (n?.children === undefined) return cb(-E.ENOTDIR);
        const names = ['.', '..'];
        const stats: DirentStat[] = [n, n];
        for (const [name, child] of n.children) {
          names.push(name);
          stats.push(child);
        }
        cb(0, names, stats);
      },
      releasedir: (ctx, path, fh, cb) => {
        this.record('releasedir', ctx, path, fh);
        this.handles.delete(fh);
        cb(0);
      },
      fsyncdir: (ctx, path, datasync, fh, cb) => {
        this.record('fsyncdir', ctx, path, { datasync, fh });
        cb(0);
      },
      create: (ctx, path, mode, flags, cb) => {
        this.record('create', ctx, path, { mode, flags });
        const n = this.create(ctx, path, mode);
        typeof n === 'number' ? cb(n) : cb(0, this.open(n));
      },
      mknod: (ctx, path, mode, rdev, cb) => {
        this.record('mknod', ctx, path, { mode, rdev });
        const n = this.create(ctx, path, mode);
        if (typeof n === 'number') return cb(n);
        n.rdev = rdev;
        cb(0);
      },
      open: (ctx, path, flags, cb) => {
        this.record('open', ctx, path, flags);
        const n = this.lookup(path);
        if (n === undefined) return cb(-E.ENOENT);
        cb(0, this.open(n));
      },
      release: (ctx, path, fh, flags, cb) => {
        this.record('release', ctx, path, { fh, flags });
        this.handles.delete(fh);
        cb(0);
      },
      flush: (ctx, path, fh, cb) => {
        this.record('flush', ctx, path, fh);
        cb(0);
      },
      fsync: (ctx, path, datasync, fh, cb) => {
        this.record('fsync', ctx, path, { datasync, fh });
        cb(0);
      },
      read: (_ctx, _path, fh, buffer, offset, cb) => {
        const n = this.handles.get(fh);
        if (n === undefined) return cb(-E.EBADF);
        const end = Math.min(n.size, offset + buffer.length);
        if (end <= offset) return cb(0);
        if (this.discard) return cb(end - offset);
        n.data.copy(buffer, 0, offset, end);
        cb(end - offset);
      },
      write: (_ctx, _path, fh, buffer, offset, cb) => {
        const n = this.handles.get(fh);
        if (n === undefined) return cb(-E.EBADF);
        if (!this.discard) this.writeSizes.push(buffer.length);
        else if (this.writeSizes.length < 64) this.writeSizes.push(buffer.length);
        const end = offset + buffer.length;
        if (end > n.size) this.resize(n, end);
        if (!this.discard) buffer.copy(n.data, offset);
        n.mtime = n.ctime = nowNs();
        cb(buffer.length);
      },
      truncate: (ctx, path, size, cb) => {
        this.record('truncate', ctx, path, size);
        const n = this.lookup(path);
        if (n === undefined) return cb(-E.ENOENT);
        this.resize(n, size);
        cb(0);
      },
      ftruncate: (ctx, path, fh, size, cb) => {
        this.record('ftruncate', ctx, path, { fh, size });
        const n = this.handles.get(fh);
        if (n === undefined) return cb(-E.EBADF);
        this.resize(n, size);
        cb(0);
      },
      mkdir: (ctx, path, mode, cb) => {
        this.record('mkdir', ctx, path, mode);
        const n = this.create(ctx, path, S_IFDIR | (mode & 0o7777));
        cb(typeof n === 'number' ? n : 0);
      },
      rmdir: (ctx, path, cb) => {
        this.record('rmdir', ctx, path);
        cb(this.remove(path, true));
      },
      unlink: (ctx, path, cb) => {
        this.record('unlink', ctx, path);
        cb(this.remove(path, false));
      },
      rename: (ctx, from, to, cb) => {
        this.record('rename', ctx, from, to);
        const src = this.parent(from);
        const dst = this.parent(to);
        const n = src.dir?.children?.get(src.name);
        if (n === undefined || dst.dir?.children === undefined) return cb(-E.ENOENT);
        src.dir!.children!.delete(src.name);
        dst.dir.children.set(dst.name, n);
        cb(0);
      },
      link: (ctx, existingPath, newPath, cb) => {
        this.record('link', ctx, existingPath, newPath);
        const n = this.lookup(existingPath);
        const dst = this.parent(newPath);
        if (n === undefined || dst.dir?.children === undefined) return cb(-E.ENOENT);
        if (dst.dir.children.has(dst.name)) return cb(-E.EEXIST);
        dst.dir.children.set(dst.name, n);
        n.nlink++;
        n.ctime = nowNs();
        cb(0);
      },
      symlink: (ctx, target, linkPath, cb) => {
        this.record('symlink', ctx, linkPath, target);
        const n = this.create(ctx, linkPath, S_IFLNK | 0o777);
        if (typeof n === 'number') return cb(n);
        n.target = target;
        n.size = Buffer.byteLength(target);
        cb(0);
      },
      readlink: (ctx, path, cb) => {
        this.record('readlink', ctx, path);
        const n = this.lookup(path);
        n?.target === undefined ? cb(-E.EINVAL) : cb(0, n.target);
      },
      chmod: (ctx, path, mode, cb) => {
        this.record('chmod', ctx, path, mode);
        const n = this.lookup(path);
        if (n === undefined) return cb(-E.ENOENT);
        n.mode = (n.mode & S_IFMT) | (mode & 0o7777);
        n.ctime = nowNs();
        cb(0);
      },
      chown: (ctx, path, uid, gid, cb) => {
        this.record('chown', ctx, path, { uid, gid });
        const n = this.lookup(path);
        if (n === undefined) return cb(-E.ENOENT);
        if (uid !== -1) n.uid = uid;
        if (gid !== -1) n.gid = gid;
        n.ctime = nowNs();
        cb(0);
      },
      utimens: (ctx, path, atime, mtime, cb) => {
        this.record('utimens', ctx, path);
        this.utimens.push({ path, atime, mtime });
        const n = this.lookup(path);
        if (n === undefined) return cb(-E.ENOENT);
        const now = nowNs();
        if (atime !== 'omit') n.atime = atime === 'now' ? now : atime;
        if (mtime !== 'omit') n.mtime = mtime === 'now' ? now : mtime;
        n.ctime = now;
        cb(0);
      },
      setxattr: (ctx, path, name, value, flags, cb) => {
        this.record('setxattr', ctx, path, { name, flags });
        this.setxattrFlags.push(flags);
        const n = this.lookup(path);
        if (n === undefined) return cb(-E.ENOENT);
        if ((flags & XATTR_CREATE) !== 0 && n.xattrs.has(name)) return cb(-E.EEXIST);
        if ((flags & XATTR_REPLACE) !== 0 && !n.xattrs.has(name)) return cb(-E.ENODATA);
        n.xattrs.set(name, value);
        cb(0);
      },
      getxattr: (ctx, path, name, cb) => {
        this.record('getxattr', ctx, path, name);
        const value = this.lookup(path)?.xattrs.get(name);
        value === undefined ? cb(-E.ENODATA) : cb(0, value);
      },
      listxattr: (ctx, path, cb) => {
        this.record('listxattr', ctx, path);
        const n = this.lookup(path);
        n === undefined ? cb(-E.ENOENT) : cb(0, [...n.xattrs.keys()]);
      },
      removexattr: (ctx, path, name, cb) => {
        this.record('removexattr', ctx, path, name);
        const n = this.lookup(path);
        if (n === undefined) return cb(-E.ENOENT);
        cb(n.xattrs.delete(name) ? 0 : -E.ENODATA);
      },
    };
  }
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

const tempRoot = mkdtempSync(join(tmpdir(), 'zippy-fuse-test-'));
chmodSync(tempRoot, 0o755); // the unprivileged callers must reach the mountpoints
let mountCounter = 0;

/** Lazily detaches whatever a failed test left mounted under tempRoot. Synchronous file
 *  system calls into a mount this process serves would deadlock, so this runs before any. */
function detachLeftovers(): void {
  const mounts = spawnSync('cat', ['/proc/self/mounts'], { encoding: 'utf8' }).stdout;
  for (const line of mounts.split('\n')) {
    const mnt = line.split(' ')[1];
    if (mnt?.startsWith(`${tempRoot}/`) === true) spawnSync('fusermount', ['-u', '-z', mnt], { stdio: 'ignore' });
  }
}

function newMountpoint(): string {
  const dir = join(tempRoot, `mnt${mountCounter++}`);
  mkdirSync(dir);
  return dir;
}

async function sh(command: string, options: { env?: NodeJS.ProcessEnv } = {}): Promise<string> {
  const { stdout } = await execFile('sh', ['-c', command], { env: { ...process.env, TZ: 'UTC', LC_ALL: 'C', ...options.env }, maxBuffer: 64 * 1024 * 1024 });
  return stdout;
}

/** Single-quotes a path for sh. */
function q(path: string): string {
  return `'${path.replace(/'/g, `'\\''`)}'`;
}

async function withMount<T>(fs: MemFs, options: MountOptions, body: (mnt: string, fuse: Fuse) => Promise<T>): Promise<T> {
  const mnt = newMountpoint();
  const fuse = new Fuse(mnt, fs.operations(), options);
  await fuse.mount();
  try {
    return await body(mnt, fuse);
  } finally {
    if (fuse.state === 'mounted') await fuse.unmount();
    assert.equal(await Fuse.mountState(mnt), 'none', 'unmounted after the test');
  }
}

function isMountedInProc(mnt: string): boolean {
  const result = spawnSync('grep', ['-c', ` ${mnt} `, '/proc/self/mounts'], { encoding: 'utf8' });
  return result.stdout.trim() !== '0' && result.stdout.trim() !== '';
}

/** Runs a child node process that mounts `mnt` through binding.ts and then does `then`. */
function childMount(mnt: string, then: 'exit' | 'sigkill' | 'exit-with-open-file'): Promise<number | null> {
  const script = `
    import { Fuse } from ${JSON.stringify(bindingUrl)};
    const now = 0n;
    const root = { mode: 0o40755, uid: 0, gid: 0, size: 0, nlink: 2, ino: 1, blksize: 4096, blocks: 0, atime: now, mtime: now, ctime: now };
    const fuse = new Fuse(${JSON.stringify(mnt)}, {
      getattr: (ctx, path, cb) => path === '/' ? cb(0, root) : cb(-2),
      readdir: (ctx, path, fh, cb) => cb(0, ['.', '..']),
    });
    await fuse.mount();
    process.stdout.write('mounted\\n');
    ${then === 'sigkill' ? "process.kill(process.pid, 'SIGKILL');" : 'process.exit(0);'}
  `;
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => { out += chunk.toString(); });
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      if (!out.includes('mounted')) reject(new Error(`child did not mount (code ${code}, signal ${signal})`));
      else resolvePromise(code);
    });
  });
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

describe('fuse binding (real mount)', { skip }, () => {
  before(async () => {
    const r = spawnSync(process.execPath, [join(repoRoot, 'native', 'fuse', 'build.mjs')], { stdio: 'inherit' });
    assert.equal(r.status, 0, 'native addon builds');
  });

  after(() => {
    detachLeftovers();
    rmSync(tempRoot, { recursive: true, force: true });
  });

  test('caller uid, gid and pid reach the handlers', async () => {
    const fs = new MemFs();
    await withMount(fs, { fuseOptions: { allow_other: true } }, async (mnt) => {
      await sh(`setpriv --reuid=65534 --regid=65534 --clear-groups touch ${q(join(mnt, 'by-nobody'))}`);
      const create = fs.calls.find((c) => c.op === 'create' && c.path === '/by-nobody');
      assert.ok(create, 'create was called');
      assert.equal(create.ctx.uid, 65534);
      assert.equal(create.ctx.gid, 65534);
      assert.ok(create.ctx.pid > 0, 'pid of the caller');
      assert.equal(typeof create.ctx.umask, 'number');
      assert.equal((await sh(`stat -c '%u:%g' ${q(join(mnt, 'by-nobody'))}`)).trim(), '65534:65534');

      await sh(`su nobody -s /bin/sh -c ${q(`cat ${q(join(mnt, 'by-nobody'))}`)}`);
      const open = fs.calls.filter((c) => c.op === 'open' && c.path === '/by-nobody').at(-1);
      assert.equal(open?.ctx.uid, 65534);

      await sh(`touch ${q(join(mnt, 'by-root'))}`);
      const rootCreate = fs.calls.find((c) => c.op === 'create' && c.path === '/by-root');
      assert.equal(rootCreate?.ctx.uid, 0);
      assert.equal(rootCreate?.ctx.gid, 0);
    });
  });

  test('nanosecond times round-trip; UTIME_NOW and UTIME_OMIT are told apart', async () => {
    const fs = new MemFs();
    await withMount(fs, {}, async (mnt) => {
      const f = join(mnt, 'times');
      await sh(`touch -d '2020-01-02 03:04:05.123456789' ${q(f)}`);
      assert.equal((await sh(`stat -c %y ${q(f)}`)).trim(), '2020-01-02 03:04:05.123456789 +0000');
      assert.equal((await sh(`stat -c %x ${q(f)}`)).trim(), '2020-01-02 03:04:05.123456789 +0000');
      const set = fs.utimens.at(-1)!;
      const expectedNs = BigInt(Date.UTC(2020, 0, 2, 3, 4, 5)) * 1_000_000n + 123456789n;
      assert.equal(set.atime, expectedNs);
      assert.equal(set.mtime, expectedNs);

      // touch -m: atime is UTIME_OMIT
      await sh(`touch -m -d '2021-06-07 08:09:10.000000001' ${q(f)}`);
      const mOnly = fs.utimens.at(-1)!;
      assert.equal(mOnly.atime, 'omit');
      assert.equal(typeof mOnly.mtime, 'bigint');
      assert.equal((await sh(`stat -c %x ${q(f)}`)).trim(), '2020-01-02 03:04:05.123456789 +0000', 'atime kept');
      assert.equal((await sh(`stat -c %y ${q(f)}`)).trim(), '2021-06-07 08:09:10.000000001 +0000');

      // touch -a: mtime is UTIME_OMIT
      await sh(`touch -a -d '1969-12-31 23:59:59.5' ${q(f)}`);
      const aOnly = fs.utimens.at(-1)!;
      assert.equal(aOnly.mtime, 'omit');
      assert.equal(aOnly.atime, -500_000_000n, 'times before 1970 keep their sign');
      assert.equal((await sh(`stat -c %x ${q(f)}`)).trim(), '1969-12-31 23:59:59.500000000 +0000');

      // plain touch on an existing file: both UTIME_NOW
      await sh(`touch ${q(f)}`);
      const now = fs.utimens.at(-1)!;
      assert.deepEqual([now.atime, now.mtime], ['now', 'now']);
    });
  });

  test('st_ino is the file system\'s inode number; hard links share it', async () => {
    const fs = new MemFs();
    await withMount(fs, {}, async (mnt) => {
      await sh(`echo hello > ${q(join(mnt, 'a'))} && ln ${q(join(mnt, 'a'))} ${q(join(mnt, 'b'))}`);
      const node = fs.lookup('/a')!;
      assert.ok(node.ino >= 1000);
      const [inoA, inoB, links] = (await sh(`stat -c %i ${q(join(mnt, 'a'))} ${q(join(mnt, 'b'))} && stat -c %h ${q(join(mnt, 'b'))}`)).trim().split('\n');
      assert.equal(Number(inoA), node.ino);
      assert.equal(Number(inoB), node.ino);
      assert.equal(Number(links), 2);
      // readdir's d_ino agrees (ls -i uses it without stat)
      const listed = (await sh(`ls -fi ${q(mnt)}`)).trim().split('\n').map((l) => l.trim().split(/\s+/));
      assert.deepEqual(listed.filter(([, name]) => name === 'a' || name === 'b').map(([ino]) => Number(ino)), [node.ino, node.ino]);
    });
  });

  test('extended attributes: set with flags, probe sizes, list, remove', async () => {
    const fs = new MemFs();
    await withMount(fs, {}, async (mnt) => {
      const f = join(mnt, 'x');
      await sh(`touch ${q(f)} && setfattr -n user.color -v blue ${q(f)}`);
      assert.equal((await sh(`getfattr --only-values -n user.color ${q(f)}`)), 'blue');

      const big = 'v'.repeat(1000);
      await sh(`setfattr -n user.big -v ${big} ${q(f)}`);
      const dump = await sh(`getfattr -d ${q(f)}`);
      assert.match(dump, /user\.color="blue"/);
      assert.match(dump, new RegExp(`user\\.big="${big}"`));

      // Python's os.getxattr/listxattr start with a small buffer and retry on ERANGE.
      const py = `
import os, errno, json
f = ${JSON.stringify(f)}
out = {}
out['big'] = len(os.getxattr(f, 'user.big'))
out['list'] = sorted(os.listxattr(f))
try:
    os.setxattr(f, 'user.color', b'red', os.XATTR_CREATE)
except OSError as e:
    out['create_existing'] = errno.errorcode[e.errno]
try:
    os.setxattr(f, 'user.none', b'x', os.XATTR_REPLACE)
except OSError as e:
    out['replace_missing'] = errno.errorcode[e.errno]
os.setxattr(f, 'user.color', b'red', os.XATTR_REPLACE)
out['color'] = os.getxattr(f, 'user.color').decode()
os.setxattr(f, 'user.empty', b'')
out['empty'] = len(os.getxattr(f, 'user.empty'))
try:
    os.getxattr(f, 'user.missing')
except OSError as e:
    out['missing'] = errno.errorcode[e.errno]
print(json.dumps(out))
`;
      const result = JSON.parse(await sh(`python3 -c ${q(py)}`)) as Record<string, unknown>;
      assert.deepEqual(result, {
        big: 1000, list: ['user.big', 'user.color'], create_existing: 'EEXIST', replace_missing: 'ENODATA',
        color: 'red', empty: 0, missing: 'ENODATA',
      });
      assert.ok(fs.setxattrFlags.includes(XATTR_CREATE) && fs.setxattrFlags.includes(XATTR_REPLACE), 'flags delivered');

      // An explicit too-small buffer gets ERANGE, and size 0 reports the exact length.
      const sizes = await sh(`python3 -c ${q(`
import ctypes, ctypes.util, errno
libc = ctypes.CDLL(ctypes.util.find_library('c'), use_errno=True)
f = ${JSON.stringify(f)}.encode()
need = libc.getxattr(f, b'user.big', None, 0)
buf = ctypes.create_string_buffer(10)
small = libc.getxattr(f, b'user.big', buf, 10)
print(need, small, errno.errorcode[ctypes.get_errno()], libc.listxattr(f, None, 0))
`)}`);
      assert.equal(sizes.trim(), `1000 -1 ERANGE ${'user.color\0user.big\0user.empty\0'.length}`);

      await sh(`setfattr -x user.color ${q(f)}`);
      assert.deepEqual((await sh(`getfattr --absolute-names -m - ${q(f)}`)).trim().split('\n').slice(1).sort(), ['user.big', 'user.empty']);
    });
  });

  test('big_writes gives write requests larger than 4096 bytes; data round-trips', async () => {
    const fs = new MemFs();
    await withMount(fs, { fuseOptions: { big_writes: true, max_write: 131072 } }, async (mnt) => {
      const source = join(tempRoot, 'random.bin');
      writeFileSync(source, Buffer.from(Array.from({ length: 3 * 1024 * 1024 + 123 }, (_, i) => (i * 2654435761) >>> 24)));
      await sh(`dd if=${q(source)} of=${q(join(mnt, 'copy'))} bs=1M conv=fsync status=none`);
      const largest = Math.max(...fs.writeSizes);
      console.log(`write request sizes with big_writes: max ${largest}, count ${fs.writeSizes.length}`);
      assert.ok(largest > 4096, `largest write ${largest} > 4096`);
      assert.equal(largest, 131072);
      await sh(`cmp ${q(source)} ${q(join(mnt, 'copy'))}`);
      assert.ok(fs.calls.some((c) => c.op === 'fsync'), 'fsync reached the file system');
    });
  });

  test('without big_writes the kernel sends 4096-byte writes', async () => {
    const fs = new MemFs();
    await withMount(fs, { fuseOptions: { big_writes: false, max_write: false } }, async (mnt) => {
      await sh(`dd if=/dev/zero of=${q(join(mnt, 'z'))} bs=1M count=1 status=none`);
      assert.equal(Math.max(...fs.writeSizes), 4096);
    });
  });

  test('readdir returns 10,000 entries', async () => {
    const fs = new MemFs();
    fs.populate('many', 10_000);
    await withMount(fs, {}, async (mnt) => {
      const started = process.hrtime.bigint();
      const names = (await sh(`ls -f ${q(join(mnt, 'many'))}`)).trim().split('\n');
      const elapsedMs = Number(process.hrtime.bigint() - started) / 1e6;
      console.log(`ls -f of 10,000 entries: ${elapsedMs.toFixed(1)} ms`);
      assert.equal(names.length, 10_002);
      assert.ok(names.includes('f9999'));
      assert.equal(fs.calls.filter((c) => c.op === 'readdir' && c.path === '/many').length, 1, 'one readdir call for the whole listing');
      assert.ok(elapsedMs < 5000, 'listing is quick');
    });
  });

  test('the other operations work through the kernel', async () => {
    const fs = new MemFs();
    const mntOptions: MountOptions = { fuseOptions: { fsname: 'zippy,test', subtype: 'zippytest', attr_timeout: 0, entry_timeout: 0, negative_timeout: 0, auto_cache: true, max_read: 131072, default_permissions: true } };
    await withMount(fs, mntOptions, async (mnt) => {
      const p = (name: string): string => q(join(mnt, name));
      const mounts = await readFile('/proc/self/mounts', 'utf8');
      assert.match(mounts, new RegExp(`^zippy,test ${mnt} fuse\\.zippytest .*default_permissions`, 'm'));

      await sh(`mkdir ${p('d')} && mkdir ${p('d/e')} && rmdir ${p('d/e')}`);
      assert.equal((await sh(`stat -c %F ${p('d')}`)).trim(), 'directory');
      await sh(`printf abcdef > ${p('d/f')} && mv ${p('d/f')} ${p('g')}`);
      assert.equal(await sh(`cat ${p('g')}`), 'abcdef');
      await sh(`truncate -s 3 ${p('g')}`);
      assert.equal(await sh(`cat ${p('g')}`), 'abc');
      await sh(`python3 -c ${q(`import os; os.truncate(${JSON.stringify(join(mnt, 'g'))}, 10)`)}`);
      assert.equal((await sh(`stat -c %s ${p('g')}`)).trim(), '10');
      await sh(`ln -s /some/where ${p('s')}`);
      assert.equal((await sh(`readlink ${p('s')}`)).trim(), '/some/where');
      await sh(`chmod 640 ${p('g')} && chown 65534:65534 ${p('g')}`);
      assert.equal((await sh(`stat -c '%a %u %g' ${p('g')}`)).trim(), '640 65534 65534');
      await sh(`chown :0 ${p('g')}`);
      assert.deepEqual(fs.calls.filter((c) => c.op === 'chown').at(-1)?.detail, { uid: -1, gid: 0 });
      await sh(`mkfifo ${p('fifo')}`);
      assert.equal((await sh(`stat -c %F ${p('fifo')}`)).trim(), 'fifo');
      assert.deepEqual((await sh(`ls ${q(mnt)}`)).trim().split('\n'), ['d', 'fifo', 'g', 's']);
      await sh(`rm ${p('g')} ${p('s')} ${p('fifo')}`);
      assert.equal(fs.lookup('/g'), undefined);
      const df = (await sh(`stat -f -c '%S %b %f %c %d %l' ${q(mnt)}`)).trim();
      assert.equal(df, `4096 ${2 ** 40} ${2 ** 39} 1000000 500000 255`);
      // fgetattr by handle: fstat on an open file
      await sh(`python3 -c ${q(`import os; fd = os.open(${JSON.stringify(join(mnt, 'd'))} + '/h', os.O_CREAT | os.O_RDWR, 0o600); os.write(fd, b'xyz'); print(os.fstat(fd).st_size); os.ftruncate(fd, 1); os.fsync(fd); os.close(fd)`)}`);
      assert.equal((await sh(`stat -c %s ${p('d/h')}`)).trim(), '1');
      for (const op of ['statfs', 'opendir', 'readdir', 'releasedir', 'create', 'mknod', 'open', 'release', 'flush', 'fsync', 'truncate', 'ftruncate', 'mkdir', 'rmdir', 'unlink', 'rename', 'symlink', 'readlink', 'chmod', 'chown']) {
        assert.ok(fs.calls.some((c) => c.op === op), `${op} was called`);
      }
    });
  });

  test('access and fsyncdir are delivered', async () => {
    const fs = new MemFs();
    await withMount(fs, {}, async (mnt) => {
      await sh(`touch ${q(join(mnt, 'a'))} && test -w ${q(join(mnt, 'a'))}`);
      assert.ok(fs.calls.some((c) => c.op === 'access' && c.path === '/a'));
      await sh(`python3 -c ${q(`import os; fd = os.open(${JSON.stringify(mnt)}, os.O_RDONLY); os.fsync(fd); os.close(fd)`)}`);
      assert.ok(fs.calls.some((c) => c.op === 'fsyncdir'));
    });
  });

  test('a handler that throws or answers badly gives EIO, not a hang', async () => {
    const fs = new MemFs();
    const errors: string[] = [];
    const ops = fs.operations();
    const getattr = ops.getattr.bind(ops);
    ops.getattr = (ctx, path, cb) => {
      if (path === '/throws') throw new Error('boom');
      if (path === '/badstat') return cb(0, { ...fs.stat(fs.root), mtime: 5 as unknown as bigint });
      if (path === '/twice') { cb(-E.ENOENT); cb(-E.ENOENT); return; }
      getattr(ctx, path, cb);
    };
    const mnt = newMountpoint();
    const fuse = new Fuse(mnt, ops, { onError: (error) => errors.push(String(error)) });
    await fuse.mount();
    try {
      for (const name of ['throws', 'badstat']) {
        await assert.rejects(sh(`stat ${q(join(mnt, name))} 2>&1`), (e: Error & { stdout?: string }) => /Input\/output error/.test(String(e.stdout)));
      }
      await assert.rejects(sh(`stat ${q(join(mnt, 'twice'))}`));
      assert.ok(errors.some((e) => e.includes('boom')));
      assert.ok(errors.some((e) => e.includes('mtime must be a bigint')));
      assert.ok(errors.some((e) => e.includes('answered twice')));
    } finally {
      await fuse.unmount();
    }
  });

  test('opTimeoutMs answers ETIMEDOUT when a handler never answers', async () => {
    const fs = new MemFs();
    const ops = fs.operations();
    const getattr = ops.getattr.bind(ops);
    ops.getattr = (ctx, path, cb) => (path === '/never' ? undefined : getattr(ctx, path, cb));
    const mnt = newMountpoint();
    const fuse = new Fuse(mnt, ops, { opTimeoutMs: 200, onError: () => undefined });
    await fuse.mount();
    try {
      await assert.rejects(sh(`stat ${q(join(mnt, 'never'))} 2>&1`), (e: Error & { stdout?: string }) => /timed out/i.test(String(e.stdout)));
    } finally {
      await fuse.unmount();
    }
  });

  test('unmount: EBUSY while a file is open, clean afterwards', async () => {
    const fs = new MemFs();
    const mnt = newMountpoint();
    const fuse = new Fuse(mnt, fs.operations());
    await fuse.mount();
    await sh(`echo data > ${q(join(mnt, 'held'))}`);
    const holder = spawn('sh', ['-c', `exec 3< ${q(join(mnt, 'held'))}; echo open; exec sleep 30`], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((res) => holder.stdout.once('data', () => res()));
    await assert.rejects(fuse.unmount(), (e: Error & { code?: string }) => e.code === 'EBUSY');
    assert.equal(fuse.state, 'mounted');
    holder.kill('SIGKILL');
    await new Promise((res) => holder.once('exit', res));
    await fuse.unmount();
    assert.equal(fuse.state, 'unmounted');
    assert.equal(await fuse.ended, 0);
    assert.equal(await Fuse.mountState(mnt), 'none');
    // A Fuse can mount again after an unmount.
    await fuse.mount();
    await sh(`test -f ${q(join(mnt, 'held'))}`);
    await fuse.unmount();
    assert.equal(isMountedInProc(mnt), false);
  });

  test('an external fusermount -u ends the session', async () => {
    const fs = new MemFs();
    const mnt = newMountpoint();
    const fuse = new Fuse(mnt, fs.operations());
    await fuse.mount();
    await sh(`fusermount -u ${q(mnt)}`);
    assert.equal(await fuse.ended, 0);
    assert.equal(fuse.state, 'unmounted');
  });

  test('process exit unmounts; a killed process leaves a stale mount that can be cleared', async () => {
    const mnt = newMountpoint();
    assert.equal(await childMount(mnt, 'exit'), 0);
    assert.equal(await Fuse.mountState(mnt), 'none', 'the exit hook unmounted');

    await childMount(mnt, 'sigkill');
    assert.equal(await Fuse.mountState(mnt), 'stale');
    const fs = new MemFs();
    await assert.rejects(new Fuse(mnt, fs.operations()).mount(), (e: Error & { code?: string }) => e.code === 'EBUSY' && e.message.includes('fusermount -uz'));
    assert.equal(await Fuse.clearStale(mnt), true);
    assert.equal(await Fuse.mountState(mnt), 'none');
    assert.equal(await Fuse.clearStale(mnt), false);

    await childMount(mnt, 'sigkill');
    const fuse = new Fuse(mnt, fs.operations(), { force: true });
    await fuse.mount();
    assert.equal(await Fuse.mountState(mnt), 'live');
    await assert.rejects(Fuse.clearStale(mnt), (e: Error & { code?: string }) => e.code === 'EBUSY');
    await assert.rejects(new Fuse(mnt, fs.operations()).mount(), (e: Error) => e.message.includes('already a mount point'));
    await fuse.unmount();
    assert.equal(await Fuse.mountState(mnt), 'none');
  });

  test('an unknown libfuse option fails the mount and leaves nothing mounted', async () => {
    const mnt = newMountpoint();
    const fs = new MemFs();
    await assert.rejects(new Fuse(mnt, fs.operations(), { fuseOptions: { no_such_option: true } }).mount(), /fuse_new failed/);
    assert.equal(await Fuse.mountState(mnt), 'none');
    await assert.rejects(new Fuse(mnt, fs.operations(), { fuseOptions: { 'bad name': true } }).mount(), (e: Error & { code?: string }) => e.code === 'EINVAL');
  });
});
