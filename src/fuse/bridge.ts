/**
 * The FUSE bridge: turns binding callbacks (binding.ts, libfuse's low-level inode-based API)
 * into FileSystem calls (src/inode/fs.ts, inode-based too) and their results or FsErrors into
 * answers (errno.ts). Mechanical on purpose: the kernel's nodeid is our inode number, so no
 * paths are built or resolved; the only state here is per-open-directory listings and the
 * per-inode cache key that decides keep_cache at open.
 */
import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import { statfs } from 'node:fs/promises';
import { Fuse, type CallerContext, type DirentStat, type FuseOperations, type FuseOptionValue, type Stat, type MountState, type SetAttr } from './binding.js';
import { errnoOf, toErrno, type Logger } from './errno.js';
import { fsError } from '../errors.js';
import type { FileSystem } from '../inode/fs.js';
import { rootIno, S_IFDIR, type Attr, type Ctx } from '../inode/types.js';
import type { MountOptions } from './main.js';

export interface MountHandle {
  unmount(): Promise<void>;
  /** Resolves when the FUSE session ends (unmounted from outside, e.g. fusermount -u). */
  ended: Promise<number>;
  /** Drops the kernel's cached attributes and pages of `ino` (its content changed behind it). */
  invalidate(ino: number): void;
  /** Kernel requests served so far (SyncOptions.gcYield). */
  requestCount(): number;
}

/** Attribute and entry cache timeout in seconds: short, so other machines' changes show within about a second. */
const cacheTimeoutSeconds = 1;
const R_OK = 4;
const W_OK = 2;
const X_OK = 1;
const O_ACCMODE = 3;
const O_TRUNC = constants.O_TRUNC ?? 0o1000;
/** Entries of the keep_cache table before it is cleared (it only saves re-reads). */
const cacheKeyCountMax = 100_000;

/** Attributes as the kernel sees them; `uid`/`gid` override the owner (-o uid=, gid=). */
function toStat(attr: Attr, owner: { uid?: number | undefined; gid?: number | undefined }): Stat {
  return {
    mode: attr.mode,
    uid: owner.uid ?? attr.uid,
    gid: owner.gid ?? attr.gid,
    size: attr.size,
    nlink: attr.nlink,
    ino: attr.ino,
    rdev: attr.rdev,
    blksize: 4096,
    blocks: attr.blocks,
    atime: attr.atimeNs,
    mtime: attr.mtimeNs,
    ctime: attr.ctimeNs,
  };
}

function toCtx(c: CallerContext): Ctx {
  return { uid: c.uid, gid: c.gid, pid: c.pid };
}

/** One open directory: its listing as of opendir (or the last rewind), "." and ".." first. */
interface DirListing {
  names: string[];
  stats: DirentStat[];
}

/** Checks `mask` (R_OK|W_OK|X_OK) against the caller; under default_permissions the kernel does this itself. */
function checkAccess(ctx: Ctx, attr: Attr, mask: number): void {
  if (ctx.uid === 0) {
    if ((mask & X_OK) !== 0 && (attr.mode & 0o111) === 0 && (attr.mode & 0o170000) !== S_IFDIR) throw fsError('EACCES', 'not executable', `inode ${attr.ino}`);
    return;
  }
  const bits = ctx.uid === attr.uid ? (attr.mode >> 6) & 7 : ctx.gid === attr.gid ? (attr.mode >> 3) & 7 : attr.mode & 7;
  const want = mask & (R_OK | W_OK | X_OK);
  if ((bits & want) !== want) throw fsError('EACCES', 'permission denied', `inode ${attr.ino}`);
}

/** The FuseOperations of a file system: every call goes through `run`, which maps errors once. */
export function makeOperations(fs: FileSystem, log: Logger, owner: { uid?: number | undefined; gid?: number | undefined } = {}): FuseOperations {
  const run = <T>(what: string, target: number, cb: (result: number, value?: T) => void, fn: () => T): void => {
    let value: T;
    try {
      value = fn();
    } catch (e) {
      cb(toErrno(e, `${what} ino ${target}`, log));
      return;
    }
    cb(0, value);
  };
  const status = (what: string, target: number, cb: (result: number) => void, fn: () => void): void => run(what, target, cb, fn);
  /** As run, for a call whose ordinary "not there" answer is undefined: that becomes `missing` (a negative errno). */
  const runOr = <T>(what: string, target: number, cb: (result: number, value?: T) => void, missing: number, fn: () => T | undefined): void => {
    let value: T | undefined;
    try {
      value = fn();
    } catch (e) {
      cb(toErrno(e, `${what} ino ${target}`, log));
      return;
    }
    if (value === undefined) cb(missing);
    else cb(0, value);
  };
  const stat = (attr: Attr): Stat => toStat(attr, owner);

  const dirs = new Map<number, DirListing>();
  let dirNext = 1;
  const listing = (ino: number): DirListing => {
    const names = ['.', '..'];
    let parent = ino;
    if (ino !== rootIno) parent = fs.lookup(ino, '..').ino;
    const stats: DirentStat[] = [{ ino, mode: S_IFDIR }, { ino: parent, mode: S_IFDIR }];
    for (const entry of fs.readdir(ino)) {
      names.push(entry.name);
      stats.push({ ino: entry.ino, mode: entry.typeBits });
    }
    return { names, stats };
  };

  /**
   * keep_cache at open, as libfuse's auto_cache did: the kernel keeps the pages it has of a
   * file only while the file's (mtime, size, generation) is what it was at the last open.
   * Writes through the kernel keep its pages current; anything else changes mtime or the
   * generation, and then the pages are dropped at the next open.
   */
  const cacheKeys = new Map<number, string>();
  const keepCache = (attr: Attr): boolean => {
    const key = `${attr.mtimeNs}:${attr.size}:${attr.generation}`;
    const keep = cacheKeys.get(attr.ino) === key;
    if (!keep) {
      if (cacheKeys.size >= cacheKeyCountMax) cacheKeys.clear();
      cacheKeys.set(attr.ino, key);
    }
    return keep;
  };

  const setattr = (c: Ctx, ino: number, attr: SetAttr): Attr => {
    if (attr.mode !== undefined) fs.chmod(c, ino, attr.mode);
    if (attr.uid !== undefined || attr.gid !== undefined) fs.chown(c, ino, attr.uid ?? -1, attr.gid ?? -1);
    if (attr.size !== undefined) fs.truncate(c, ino, attr.size);
    if (attr.atime !== undefined || attr.mtime !== undefined) fs.utimens(c, ino, attr.atime ?? 'omit', attr.mtime ?? 'omit');
    return fs.getattr(ino);
  };

  return {
    // A missing name (every create starts with one) and a missing xattr (the kernel asks for
    // security.capability at the first write(2) to each file) are answered without building an error.
    lookup: (_c, parent, name, cb) => runOr('lookup', parent, cb, -errnoOf.ENOENT, () => {
      const attr = fs.lookupOrUndefined(parent, name);
      return attr === undefined ? undefined : stat(attr);
    }),
    getattr: (_c, ino, _fh, cb) => run('getattr', ino, cb, () => stat(fs.getattr(ino))),
    setattr: (c, ino, _fh, attr, cb) => run('setattr', ino, cb, () => stat(setattr(toCtx(c), ino, attr))),
    access: (c, ino, mask, cb) => status('access', ino, cb, () => checkAccess(toCtx(c), fs.getattr(ino), mask)),
    statfs: (_c, ino, cb) => run('statfs', ino, cb, () => ({ ...fs.statfs(), fsid: 0, flag: 0 })),
    opendir: (_c, ino, _flags, cb) => run('opendir', ino, cb, () => {
      const fh = dirNext++;
      dirs.set(fh, listing(ino));
      return fh;
    }),
    readdir: (_c, ino, fh, offset, maxCount, cb) => {
      let dir: DirListing;
      try {
        let open = dirs.get(fh);
        if (open === undefined) throw fsError('EBADF', `no open directory handle ${fh}`);
        if (offset === 0) {
          open = listing(ino); // a rewind sees the directory as it is now
          dirs.set(fh, open);
        }
        dir = open;
      } catch (e) {
        cb(toErrno(e, `readdir ino ${ino}`, log));
        return;
      }
      cb(0, dir.names.slice(offset, offset + maxCount), dir.stats.slice(offset, offset + maxCount));
    },
    releasedir: (_c, _ino, fh, cb) => {
      dirs.delete(fh);
      cb(0);
    },
    fsyncdir: (_c, ino, _datasync, _fh, cb) => {
      fs.fsync().then(() => cb(0), (e: unknown) => cb(toErrno(e, `fsyncdir ino ${ino}`, log)));
    },
    create: (c, parent, name, mode, _flags, cb) => {
      let created: { attr: Attr; fh: number };
      try {
        created = fs.create(toCtx(c), parent, name, mode);
      } catch (e) {
        cb(toErrno(e, `create ino ${parent}/${name}`, log));
        return;
      }
      keepCache(created.attr);
      cb(0, stat(created.attr), created.fh, { keepCache: false });
    },
    mknod: (c, parent, name, mode, rdev, cb) => run('mknod', parent, cb, () => stat(fs.mknod(toCtx(c), parent, name, mode, rdev))),
    open: (c, ino, flags, cb) => {
      let fh: number;
      let keep: boolean;
      try {
        if ((flags & O_TRUNC) !== 0 && (flags & O_ACCMODE) !== 0) fs.truncate(toCtx(c), ino, 0);
        keep = keepCache(fs.getattr(ino));
        fh = fs.open(ino);
      } catch (e) {
        cb(toErrno(e, `open ino ${ino}`, log));
        return;
      }
      cb(0, fh, { keepCache: keep });
    },
    // Write-back happens at release, which the kernel sends without making close(2) wait; flush
    // (which close waits for) only reports a write-back of the file that failed earlier. A failed
    // write-back keeps the data dirty in the cache: it is retried every second and by fsync.
    release: (_c, ino, fh, _flags, cb) => {
      try {
        fs.release(fh);
      } catch (e) {
        log(`write-back of inode ${ino} at close failed (${e instanceof Error ? e.message : String(e)}); `
          + 'its data stays in the cache, is retried every second and reported by fsync');
        cb(toErrno(e, `release ino ${ino}`, log));
        return;
      }
      cb(0);
    },
    flush: (_c, ino, _fh, cb) => status('flush', ino, cb, () => fs.takeWriteBackFailure(ino)),
    fsync: (_c, ino, _datasync, _fh, cb) => {
      fs.fsync(ino).then(() => cb(0), (e: unknown) => cb(toErrno(e, `fsync ino ${ino}`, log)));
    },
    read: (_c, ino, _fh, buffer, offset, cb) => {
      try {
        cb(fs.readInto(ino, offset, buffer));
      } catch (e) {
        cb(toErrno(e, `read ino ${ino}`, log));
      }
    },
    write: (c, ino, _fh, buffer, offset, cb) => {
      try {
        cb(fs.write(toCtx(c), ino, offset, buffer));
      } catch (e) {
        cb(toErrno(e, `write ino ${ino}`, log));
      }
    },
    mkdir: (c, parent, name, mode, cb) => run('mkdir', parent, cb, () => stat(fs.mkdir(toCtx(c), parent, name, mode))),
    rmdir: (c, parent, name, cb) => status('rmdir', parent, cb, () => fs.rmdir(toCtx(c), parent, name)),
    unlink: (c, parent, name, cb) => status('unlink', parent, cb, () => fs.unlink(toCtx(c), parent, name)),
    rename: (c, parent, name, newParent, newName, cb) => status('rename', parent, cb, () => fs.rename(toCtx(c), parent, name, newParent, newName)),
    link: (c, ino, newParent, newName, cb) => run('link', ino, cb, () => stat(fs.link(toCtx(c), ino, newParent, newName))),
    symlink: (c, target, parent, name, cb) => run('symlink', parent, cb, () => stat(fs.symlink(toCtx(c), parent, name, target))),
    readlink: (_c, ino, cb) => run('readlink', ino, cb, () => fs.readlink(ino)),
    setxattr: (_c, ino, name, value, flags, cb) => status('setxattr', ino, cb, () => fs.setxattr(ino, name, value, flags)),
    getxattr: (_c, ino, name, cb) => runOr('getxattr', ino, cb, -errnoOf.ENODATA, () => fs.getxattrOrUndefined(ino, name)),
    listxattr: (_c, ino, cb) => run('listxattr', ino, cb, () => fs.listxattr(ino)),
    removexattr: (_c, ino, name, cb) => status('removexattr', ino, cb, () => fs.removexattr(ino, name)),
  };
}

/** libfuse options of a zippy-fs mount (uid/gid are applied by the bridge, not libfuse). */
export function fuseOptionsFor(options: MountOptions): Record<string, FuseOptionValue> {
  const fuseOptions: Record<string, FuseOptionValue> = {
    default_permissions: true,
    attr_timeout: cacheTimeoutSeconds,
    entry_timeout: cacheTimeoutSeconds,
    negative_timeout: 0,
    fsname: 'zippy-fs',
    subtype: 'zippy',
  };
  if (options.allowOther) fuseOptions['allow_other'] = true;
  if (options.debug) fuseOptions['debug'] = true;
  for (const extra of options.extra) {
    const eq = extra.indexOf('=');
    fuseOptions[eq < 0 ? extra : extra.slice(0, eq)] = eq < 0 ? true : extra.slice(eq + 1);
  }
  return fuseOptions;
}

/** Mounts `fs` at options.mountpoint and resolves once the kernel has initialised the mount. */
export async function mountBridge(fs: FileSystem, options: MountOptions, log: Logger): Promise<MountHandle> {
  const owner = { uid: options.uid, gid: options.gid };
  const fuse = new Fuse(options.mountpoint, makeOperations(fs, log, owner), {
    fuseOptions: fuseOptionsFor(options),
    // Default: the JS thread reads the FUSE device. -s keeps libfuse's own single-threaded
    // loop (one libfuse thread reads and hands each request to the JS thread).
    ...(options.singleThreaded ? { reader: 'threads' as const, singleThreaded: true } : {}),
    onError: (error, op, target) => log(`bridge error in ${op} ${target ?? ''}: ${String((error as Error)?.stack ?? error)}`),
  });
  await fuse.mount();
  // Another machine's version replaced a file's content: the kernel's pages of it are stale
  // (open files keep them; keep_cache would keep them across opens too).
  fs.onContentReplaced((ino) => void fuse.invalidate(ino));
  return { unmount: () => fuse.unmount(), ended: fuse.ended, invalidate: (ino) => void fuse.invalidate(ino), requestCount: () => fuse.requestCount };
}

/** How long a listed mount may take to answer statfs before it counts as live (hung, not dead). */
const staleProbeTimeoutMs = 2000;

/**
 * Whether the mountpoint is free, a live mount, or a stale one. Fuse.mountState decides with
 * stat(), which the kernel answers from its attribute cache for up to attr_timeout after the
 * server died, so a freshly killed mount looked live; statfs always goes to the server and
 * fails with ENOTCONN once it is gone.
 */
export async function mountpointState(mountpoint: string): Promise<MountState> {
  const state = await Fuse.mountState(mountpoint);
  if (state !== 'live') return state;
  const answer = await Promise.race([
    statfs(mountpoint).then(() => 'live' as const, (e: NodeJS.ErrnoException) => (e.code === 'ENOTCONN' ? 'stale' as const : 'live' as const)),
    new Promise<'live'>((resolvePromise) => setTimeout(() => resolvePromise('live'), staleProbeTimeoutMs).unref()),
  ]);
  return answer;
}

/** Lazily unmounts a mount that mountpointState found stale (fusermount -uz). */
export async function clearStaleMount(mountpoint: string): Promise<void> {
  await new Promise<void>((resolvePromise, reject) => {
    execFile('fusermount', ['-u', '-z', mountpoint], (error, _stdout, stderr) => {
      if (error === null) resolvePromise();
      else reject(new Error(`fusermount -u -z ${mountpoint} failed: ${stderr.trim() || error.message}`));
    });
  });
}
