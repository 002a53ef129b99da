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
  Fuse, type CallerContext, type DirentStat, type FuseOperations, type MountOptions, type SetAttr,
  type Stat, type TimeSpec,
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
const O_TRUNC = 0o1000;

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
  /** The path it was last given (for call records only). */
  path: string;
  /** The directory holding it (directories only; for ".."). */
  parent: MemNode | undefined;
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

function childPath(dir: MemNode, name: string): string {
  return dir.path === '/' ? `/${name}` : `${dir.path}/${name}`;
}

class MemFs {
  private nextIno = 1000;
  private nextFh = 1;
  readonly root: MemNode;
  readonly inodes = new Map<number, MemNode>();
  readonly handles = new Map<number, MemNode>();
  readonly calls: CallRecord[] = [];
  readonly writeSizes: number[] = [];
  readonly utimens: { path: string; atime: TimeSpec; mtime: TimeSpec }[] = [];
  readonly setxattrFlags: number[] = [];
  readonly readdirOffsets: number[] = [];
  /** Bench mode: writes are counted and dropped. */
  discard = false;
  /** Open replies ask the kernel to keep its page cache (for the invalidate test). */
  keepCache = false;

  constructor() {
    this.root = this.node(S_IFDIR | 0o777, 0, 0, '/');
    this.root.nlink = 2;
    this.inodes.delete(this.root.ino);
    this.root.ino = 1;
    this.root.parent = this.root;
    this.inodes.set(1, this.root);
  }

  node(mode: number, uid: number, gid: number, path: string): MemNode {
    const t = nowNs();
    const n: MemNode = {
      ino: this.nextIno++, mode, uid, gid, nlink: 1, rdev: 0, data: Buffer.alloc(0), size: 0,
      atime: t, mtime: t, ctime: t, xattrs: new Map(),
      children: (mode & S_IFMT) === S_IFDIR ? new Map() : undefined, target: undefined, path, parent: undefined,
    };
    this.inodes.set(n.ino, n);
    return n;
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

  stat(n: MemNode): Stat {
    return {
      mode: n.mode, uid: n.uid, gid: n.gid, size: n.size, nlink: n.nlink, ino: n.ino, rdev: n.rdev,
      blksize: 4096, blocks: Math.ceil(n.size / 512), atime: n.atime, mtime: n.mtime, ctime: n.ctime,
    };
  }

  /** Adds `count` empty files to a new directory without going through the kernel. */
  populate(dirName: string, count: number): void {
    const dir = this.node(S_IFDIR | 0o755, 0, 0, `/${dirName}`);
    dir.nlink = 2;
    dir.parent = this.root;
    this.root.children!.set(dirName, dir);
    for (let i = 0; i < count; i++) dir.children!.set(`f${i}`, this.node(S_IFREG | 0o644, 0, 0, `/${dirName}/f${i}`));
  }

  private record(op: string, ctx: CallerContext, path: string, detail?: unknown): void {
    if (this.discard) return;
    this.calls.push(detail === undefined ? { op, ctx, path } : { op, ctx, path, detail });
  }

  private pathOf(ino: number): string {
    return this.inodes.get(ino)?.path ?? `<ino ${ino}>`;
  }

  private entryPath(parent: number, name: string): string {
    const dir = this.inodes.get(parent);
    return dir === undefined ? `<ino ${parent}>/${name}` : childPath(dir, name);
  }

  private create(ctx: CallerContext, parent: number, name: string, mode: number): MemNode | number {
    const dir = this.inodes.get(parent);
    if (dir?.children === undefined) return -E.ENOENT;
    if (dir.children.has(name)) return -E.EEXIST;
    const n = this.node(mode, ctx.uid, ctx.gid, childPath(dir, name));
    if ((mode & S_IFMT) === S_IFDIR) {
      n.nlink = 2;
      n.parent = dir;
      dir.nlink++;
    }
    dir.children.set(name, n);
    dir.mtime = dir.ctime = nowNs();
    return n;
  }

  private remove(parent: number, name: string, wantDir: boolean): number {
    const dir = this.inodes.get(parent);
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

  private setattr(ctx: CallerContext, n: MemNode, fh: number | undefined, attr: SetAttr): void {
    if (attr.mode !== undefined) {
      this.record('chmod', ctx, n.path, attr.mode);
      n.mode = (n.mode & S_IFMT) | (attr.mode & 0o7777);
    }
    if (attr.uid !== undefined || attr.gid !== undefined) {
      this.record('chown', ctx, n.path, { uid: attr.uid ?? -1, gid: attr.gid ?? -1 });
      if (attr.uid !== undefined) n.uid = attr.uid;
      if (attr.gid !== undefined) n.gid = attr.gid;
    }
    if (attr.size !== undefined) {
      this.record(fh === undefined ? 'truncate' : 'ftruncate', ctx, n.path, fh === undefined ? attr.size : { fh, size: attr.size });
      this.resize(n, attr.size);
    }
    const now = nowNs();
    if (attr.atime !== undefined || attr.mtime !== undefined) {
      this.record('utimens', ctx, n.path);
      this.utimens.push({ path: n.path, atime: attr.atime ?? 'omit', mtime: attr.mtime ?? 'omit' });
      if (attr.atime !== undefined) n.atime = attr.atime === 'now' ? now : attr.atime;
      if (attr.mtime !== undefined) n.mtime = attr.mtime === 'now' ? now : attr.mtime;
    }
    n.ctime = now;
  }

  operations(): FuseOperations {
    return {
      lookup: (ctx, parent, name, cb) => {
        this.record('lookup', ctx, this.entryPath(parent, name));
        const n = this.inodes.get(parent)?.children?.get(name);
        n === undefined ? cb(-E.ENOENT) : cb(0, this.stat(n));
      },
      getattr: (ctx, ino, fh, cb) => {
        this.record('getattr', ctx, this.pathOf(ino), fh);
        const n = fh === undefined ? this.inodes.get(ino) : this.handles.get(fh);
        n === undefined ? cb(-E.ENOENT) : cb(0, this.stat(n));
      },
      setattr: (ctx, ino, fh, attr, cb) => {
        const n = this.inodes.get(ino);
        if (n === undefined) return cb(-E.ENOENT);
        this.setattr(ctx, n, fh, attr);
        cb(0, this.stat(n));
      },
      access: (ctx, ino, mask, cb) => {
        this.record('access', ctx, this.pathOf(ino), mask);
        cb(this.inodes.has(ino) ? 0 : -E.ENOENT);
      },
      statfs: (ctx, ino, cb) => {
        this.record('statfs', ctx, this.pathOf(ino));
        cb(0, { bsize: 4096, frsize: 4096, blocks: 2 ** 40, bfree: 2 ** 39, bavail: 2 ** 39, files: 1e6, ffree: 5e5, favail: 5e5, fsid: 7, flag: 0, namemax: 255 });
      },
      opendir: (ctx, ino, flags, cb) => {
        this.record('opendir', ctx, this.pathOf(ino), flags);
        const n = this.inodes.get(ino);
        n?.children === undefined ? cb(-E.ENOTDIR) : cb(0, this.open(n));
      },
      readdir: (ctx, ino, fh, offset, maxCount, cb) => {
        this.record('readdir', ctx, this.pathOf(ino), { fh, offset, maxCount });
        this.readdirOffsets.push(offset);
        const n = this.handles.get(fh) ?? this.inodes.get(ino);
        if (n?.children === undefined) return cb(-E.ENOTDIR);
        const names = ['.', '..'];
        const stats: DirentStat[] = [n, n.parent ?? n];
        for (const [name, child] of n.children) {
          names.push(name);
          stats.push(child);
        }
        cb(0, names.slice(offset, offset + maxCount), stats.slice(offset, offset + maxCount));
      },
      releasedir: (ctx, ino, fh, cb) => {
        this.record('releasedir', ctx, this.pathOf(ino), fh);
        this.handles.delete(fh);
        cb(0);
      },
      fsyncdir: (ctx, ino, datasync, fh, cb) => {
        this.record('fsyncdir', ctx, this.pathOf(ino), { datasync, fh });
        cb(0);
      },
      create: (ctx, parent, name, mode, flags, cb) => {
        this.record('create', ctx, this.entryPath(parent, name), { mode, flags });
        const n = this.create(ctx, parent, name, mode);
        typeof n === 'number' ? cb(n) : cb(0, this.stat(n), this.open(n), { keepCache: this.keepCache });
      },
      mknod: (ctx, parent, name, mode, rdev, cb) => {
        this.record('mknod', ctx, this.entryPath(parent, name), { mode, rdev });
        const n = this.create(ctx, parent, name, mode);
        if (typeof n === 'number') return cb(n);
        n.rdev = rdev;
        cb(0, this.stat(n));
      },
      open: (ctx, ino, flags, cb) => {
        this.record('open', ctx, this.pathOf(ino), flags);
        const n = this.inodes.get(ino);
        if (n === undefined) return cb(-E.ENOENT);
        if ((flags & O_TRUNC) !== 0) this.resize(n, 0);
        cb(0, this.open(n), { keepCache: this.keepCache });
      },
      release: (ctx, ino, fh, flags, cb) => {
        this.record('release', ctx, this.pathOf(ino), { fh, flags });
        this.handles.delete(fh);
        cb(0);
      },
      flush: (ctx, ino, fh, cb) => {
        this.record('flush', ctx, this.pathOf(ino), fh);
        cb(0);
      },
      fsync: (ctx, ino, datasync, fh, cb) => {
        this.record('fsync', ctx, this.pathOf(ino), { datasync, fh });
        cb(0);
      },
      read: (_ctx, _ino, fh, buffer, offset, cb) => {
        const n = this.handles.get(fh);
        if (n === undefined) return cb(-E.EBADF);
        const end = Math.min(n.size, offset + buffer.length);
        if (end <= offset) return cb(0);
        if (this.discard) return cb(end - offset);
        n.data.copy(buffer, 0, offset, end);
        cb(end - offset);
      },
      write: (_ctx, _ino, fh, buffer, offset, cb) => {
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
      mkdir: (ctx, parent, name, mode, cb) => {
        this.record('mkdir', ctx, this.entryPath(parent, name), mode);
        const n = this.create(ctx, parent, name, S_IFDIR | (mode & 0o7777));
        typeof n === 'number' ? cb(n) : cb(0, this.stat(n));
      },
      rmdir: (ctx, parent, name, cb) => {
        this.record('rmdir', ctx, this.entryPath(parent, name));
        cb(this.remove(parent, name, true));
      },
      unlink: (ctx, parent, name, cb) => {
        this.record('unlink', ctx, this.entryPath(parent, name));
        cb(this.remove(parent, name, false));
      },
      rename: (ctx, parent, name, newParent, newName, cb) => {
        this.record('rename', ctx, this.entryPath(parent, name), this.entryPath(newParent, newName));
        const src = this.inodes.get(parent);
        const dst = this.inodes.get(newParent);
        const n = src?.children?.get(name);
        if (n === undefined || dst?.children === undefined) return cb(-E.ENOENT);
        src!.children!.delete(name);
        dst.children.set(newName, n);
        n.path = childPath(dst, newName);
        if (n.children !== undefined) n.parent = dst;
        cb(0);
      },
      link: (ctx, ino, newParent, newName, cb) => {
        this.record('link', ctx, this.pathOf(ino), this.entryPath(newParent, newName));
        const n = this.inodes.get(ino);
        const dst = this.inodes.get(newParent);
        if (n === undefined || dst?.children === undefined) return cb(-E.ENOENT);
        if (dst.children.has(newName)) return cb(-E.EEXIST);
        dst.children.set(newName, n);
        n.nlink++;
        n.ctime = nowNs();
        cb(0, this.stat(n));
      },
      symlink: (ctx, target, parent, name, cb) => {
        this.record('symlink', ctx, this.entryPath(parent, name), target);
        const n = this.create(ctx, parent, name, S_IFLNK | 0o777);
        if (typeof n === 'number') return cb(n);
        n.target = target;
        n.size = Buffer.byteLength(target);
        cb(0, this.stat(n));
      },
      readlink: (ctx, ino, cb) => {
        this.record('readlink', ctx, this.pathOf(ino));
        const n = this.inodes.get(ino);
        n?.target === undefined ? cb(-E.EINVAL) : cb(0, n.target);
      },
      setxattr: (ctx, ino, name, value, flags, cb) => {
        this.record('setxattr', ctx, this.pathOf(ino), { name, flags });
        this.setxattrFlags.push(flags);
        const n = this.inodes.get(ino);
        if (n === undefined) return cb(-E.ENOENT);
        if ((flags & XATTR_CREATE) !== 0 && n.xattrs.has(name)) return cb(-E.EEXIST);
        if ((flags & XATTR_REPLACE) !== 0 && !n.xattrs.has(name)) return cb(-E.ENODATA);
        n.xattrs.set(name, value);
        cb(0);
      },
      getxattr: (ctx, ino, name, cb) => {
        this.record('getxattr', ctx, this.pathOf(ino), name);
        const value = this.inodes.get(ino)?.xattrs.get(name);
        value === undefined ? cb(-E.ENODATA) : cb(0, value);
      },
      listxattr: (ctx, ino, cb) => {
        this.record('listxattr', ctx, this.pathOf(ino));
        const n = this.inodes.get(ino);
        n === undefined ? cb(-E.ENOENT) : cb(0, [...n.xattrs.keys()]);
      },
      removexattr: (ctx, ino, name, cb) => {
        this.record('removexattr', ctx, this.pathOf(ino), name);
        const n = this.inodes.get(ino);
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
      lookup: (ctx, parent, name, cb) => cb(-2),
      getattr: (ctx, ino, fh, cb) => ino === 1 ? cb(0, root) : cb(-2),
      readdir: (ctx, ino, fh, offset, maxCount, cb) => cb(0, ['.', '..'].slice(offset), [root, root].slice(offset)),
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

  test('child processes of the mounting process do not inherit the FUSE device', async () => {
    const fs = new MemFs();
    await withMount(fs, {}, async () => {
      // A child holding /dev/fuse would keep the connection alive after the mount process is gone.
      const fds = await sh('ls -l /proc/self/fd/');
      assert.ok(!fds.includes('/dev/fuse'), `a child's descriptors:\n${fds}`);
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

  test('hard links are one kernel inode: a write through one name shows at once through the other', async () => {
    const fs = new MemFs();
    await withMount(fs, { timeouts: { attr: 60, entry: 60 } }, async (mnt) => {
      const a = q(join(mnt, 'a'));
      const b = q(join(mnt, 'b'));
      await sh(`printf one > ${a} && cat ${b} 2>/dev/null; ln ${a} ${b} && stat -c %h ${a}`).then((out) => assert.equal(out.trim(), '2', 'link count through the old name at once'));
      await sh(`cat ${a} > /dev/null && printf two >> ${b}`);
      assert.equal(await sh(`cat ${a}`), 'onetwo');
      assert.equal((await sh(`stat -c %s ${a}`)).trim(), '6');
    });
  });

  test('invalidate() drops the kernel\'s cached pages of an inode', async () => {
    const fs = new MemFs();
    fs.keepCache = true;
    await withMount(fs, { timeouts: { attr: 60, entry: 60 } }, async (mnt, fuse) => {
      const f = q(join(mnt, 'cached'));
      await sh(`printf aaaa > ${f}`);
      assert.equal(await sh(`cat ${f}`), 'aaaa');
      const node = fs.lookup('/cached')!;
      node.data = Buffer.from('bbbb'); // behind the kernel's back, same size and times
      assert.equal(await sh(`cat ${f}`), 'aaaa', 'keep_cache: the kernel answers from its pages');
      assert.equal(fuse.invalidate(node.ino), true);
      let seen = '';
      for (let i = 0; i < 50 && seen !== 'bbbb'; i++) {
        await new Promise((res) => setTimeout(res, 20)); // the notification is sent from a helper thread
        seen = await sh(`cat ${f}`);
      }
      assert.equal(seen, 'bbbb');
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
      assert.equal(new Set(names).size, 10_002, 'no entry twice');
      // The kernel pages through the listing: each call starts where the last one stopped.
      const offsets = fs.calls.filter((c) => c.op === 'readdir' && c.path === '/many').map((c) => (c.detail as { offset: number }).offset);
      assert.ok(offsets.length > 1, `${offsets.length} readdir calls`);
      assert.equal(offsets[0], 0);
      assert.ok(offsets.every((o, i) => i === 0 || o > offsets[i - 1]!), 'offsets increase');
      assert.ok(elapsedMs < 5000, 'listing is quick');
    });
  });

  test('the other operations work through the kernel', async () => {
    const fs = new MemFs();
    const mntOptions: MountOptions = { fuseOptions: { fsname: 'zippy,test', subtype: 'zippytest', attr_timeout: 0, entry_timeout: 0, negative_timeout: 0, max_read: 131072, default_permissions: true } };
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
      // getattr and setattr by handle: fstat and ftruncate on an open file
      await sh(`python3 -c ${q(`import os; fd = os.open(${JSON.stringify(join(mnt, 'd'))} + '/h', os.O_CREAT | os.O_RDWR, 0o600); os.write(fd, b'xyz'); print(os.fstat(fd).st_size); os.ftruncate(fd, 1); os.fsync(fd); os.close(fd)`)}`);
      assert.equal((await sh(`stat -c %s ${p('d/h')}`)).trim(), '1');
      for (const op of ['statfs', 'opendir', 'readdir', 'releasedir', 'create', 'mknod', 'open', 'release', 'flush', 'fsync', 'truncate', 'ftruncate', 'mkdir', 'rmdir', 'unlink', 'rename', 'symlink', 'readlink', 'chmod', 'chown']) {
        assert.ok(fs.calls.some((c) => c.op === op), `${op} was called`);
      }
    });
  });

  for (const [label, options] of [['a libfuse thread pool', { reader: 'threads' }], ['one libfuse thread', { reader: 'threads', singleThreaded: true }]] as const) {
    test(`requests read by ${label} instead of the JS thread work the same`, async () => {
      const fs = new MemFs();
      await withMount(fs, options, async (mnt) => {
        const p = (name: string): string => q(join(mnt, name));
        await sh(`mkdir ${p('d')} && printf data > ${p('d/f')} && ln ${p('d/f')} ${p('g')} && printf more >> ${p('g')}`);
        assert.equal(await sh(`cat ${p('d/f')}`), 'datamore');
        assert.equal((await sh(`stat -c %h ${p('d/f')}`)).trim(), '2');
        await sh(`rm ${p('g')} ${p('d/f')} && rmdir ${p('d')}`);
        assert.equal(await sh(`ls -A ${q(mnt)}`), '');
      });
    });
  }

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
    const lookup = ops.lookup.bind(ops);
    ops.lookup = (ctx, parent, name, cb) => {
      if (name === 'throws') throw new Error('boom');
      if (name === 'badstat') return cb(0, { ...fs.stat(fs.root), mtime: 5 as unknown as bigint });
      if (name === 'twice') { cb(-E.ENOENT); cb(-E.ENOENT); return; }
      lookup(ctx, parent, name, cb);
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
    const lookup = ops.lookup.bind(ops);
    ops.lookup = (ctx, parent, name, cb) => (name === 'never' ? undefined : lookup(ctx, parent, name, cb));
    const mnt = newMountpoint();
    const fuse = new Fuse(mnt, ops, { opTimeoutMs: 200, onError: () => undefined });
    await fuse.mount();
    try {
      await assert.rejects(sh(`stat ${q(join(mnt, 'never'))} 2>&1`), (e: Error & { stdout?: string }) => /timed out/i.test(String(e.stdout)));
    } finally {
      await fuse.unmount();
    }
  });

  // An open's reply fails when the opener no longer waits for it: the kernel then never sends
  // release, so the binding must release the handle itself (PATCHES.md L9). A modern kernel
  // keeps waiting for a request already read by the file system even on SIGKILL, so the one
  // deterministic way to make the reply fail for real is to abort the connection while the
  // handler holds the request: umount2(MNT_FORCE) does (fuse_umount_begin → fuse_abort_conn),
  // and the late reply then fails with ENOENT exactly as an interrupted one does.
  for (const op of ['open', 'create'] as const) {
    test(`a handle whose ${op} reply the kernel refuses (connection aborted meanwhile) is released`, async () => {
      const fs = new MemFs();
      const ops = fs.operations();
      let arrived: () => void = () => undefined;
      const arrival = new Promise<void>((res) => { arrived = res; });
      let answer: (() => void) | undefined;
      const { open, create } = ops;
      ops.open = (ctx, ino, flags, cb) => {
        if (op === 'open' && fs.inodes.get(ino)?.path === '/slow') {
          answer = () => open!(ctx, ino, flags, cb);
          arrived();
          return;
        }
        open!(ctx, ino, flags, cb);
      };
      ops.create = (ctx, parent, name, mode, flags, cb) => {
        if (op === 'create' && name === 'new') {
          answer = () => create!(ctx, parent, name, mode, flags, cb);
          arrived();
          return;
        }
        create!(ctx, parent, name, mode, flags, cb);
      };
      const mnt = newMountpoint();
      const fuse = new Fuse(mnt, ops, { onError: () => undefined });
      await fuse.mount();
      try {
        if (op === 'open') await sh(`echo data > ${q(join(mnt, 'slow'))}`);
        const opener = spawn('python3', ['-c', `import os; os.open(${JSON.stringify(join(mnt, op === 'open' ? 'slow' : 'new'))}, ${op === 'open' ? 'os.O_RDONLY' : 'os.O_CREAT | os.O_WRONLY, 0o644'})`], { stdio: 'ignore' });
        const openerExit = new Promise<number | null>((res) => opener.once('exit', (code) => res(code)));
        await arrival;
        assert.equal(fs.handles.size, 0);
        // MNT_FORCE = 1; the umount itself may fail (EBUSY: the opener is inside the mount).
        await sh(`python3 -c ${q(`import ctypes; ctypes.CDLL(None, use_errno=True).umount2(${JSON.stringify(mnt)}.encode(), 1)`)}`);
        const releasesBefore = fs.calls.filter((c) => c.op === 'release').length;
        answer!();
        assert.equal(fs.calls.filter((c) => c.op === op && c.path === (op === 'open' ? '/slow' : '/new')).length, 1, `the held ${op} was answered`);
        assert.equal(fs.calls.filter((c) => c.op === 'release').length, releasesBefore + 1, 'the refused handle was released');
        assert.equal(fs.handles.size, 0, 'no handle left open');
        assert.notEqual(await openerExit, 0, 'the opener saw the abort');
        assert.equal(await fuse.ended, 0);
      } finally {
        if ((await Fuse.mountState(mnt)) !== 'none') await sh(`fusermount -u -z ${q(mnt)}`);
      }
    });
  }

  test('an open answered after opTimeoutMs (ETIMEDOUT sent) releases its late handle', async () => {
    const fs = new MemFs();
    const ops = fs.operations();
    const open = ops.open!;
    let answer: (() => void) | undefined;
    ops.open = (ctx, ino, flags, cb) => {
      if (fs.inodes.get(ino)?.path === '/late') answer = () => open(ctx, ino, flags, cb);
      else open(ctx, ino, flags, cb);
    };
    const mnt = newMountpoint();
    const fuse = new Fuse(mnt, ops, { opTimeoutMs: 200, onError: () => undefined });
    await fuse.mount();
    try {
      await sh(`echo data > ${q(join(mnt, 'late'))}`);
      const before = fs.calls.filter((c) => c.op === 'release').length;
      await assert.rejects(sh(`cat ${q(join(mnt, 'late'))} 2>&1`), (e: Error & { stdout?: string }) => /timed out/i.test(String(e.stdout)));
      assert.ok(answer !== undefined);
      answer();
      const released = fs.calls.filter((c) => c.op === 'release').slice(before);
      assert.equal(released.length, 1, 'the late handle was released');
      assert.equal(fs.handles.size, 0);
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
    await assert.rejects(new Fuse(mnt, fs.operations(), { fuseOptions: { no_such_option: true } }).mount(), /fuse_lowlevel_new failed/);
    assert.equal(await Fuse.mountState(mnt), 'none');
    // Options of libfuse's high-level API are refused with a reason, before anything is mounted.
    for (const option of ['use_ino', 'auto_cache', 'hard_remove', 'kernel_cache']) {
      await assert.rejects(new Fuse(mnt, fs.operations(), { fuseOptions: { [option]: true } }).mount(), (e: Error & { code?: string }) => e.code === 'EINVAL' && e.message.includes('high-level API'));
    }
    await assert.rejects(new Fuse(mnt, fs.operations(), { fuseOptions: { attr_timeout: 'soon' } }).mount(), (e: Error & { code?: string }) => e.code === 'EINVAL');
    assert.equal(await Fuse.mountState(mnt), 'none');
    await assert.rejects(new Fuse(mnt, fs.operations(), { fuseOptions: { 'bad name': true } }).mount(), (e: Error & { code?: string }) => e.code === 'EINVAL');
  });
});
