/**
 * The FUSE bridge: turns binding callbacks (binding.ts) into PathOps calls and their results
 * or FsErrors into answers (errno.ts). Mechanical on purpose: no file system logic here.
 */
import { execFile } from 'node:child_process';
import { statfs } from 'node:fs/promises';
import { Fuse, type CallerContext, type FuseOperations, type FuseOptionValue, type Stat, type MountState } from './binding.js';
import { toErrno, type Logger } from './errno.js';
import { PathOps } from './ops.js';
import type { FileSystem } from '../inode/fs.js';
import type { Attr, Ctx } from '../inode/types.js';
import type { MountOptions } from './main.js';

export interface MountHandle {
  unmount(): Promise<void>;
  /** Resolves when the FUSE session ends (unmounted from outside, e.g. fusermount -u). */
  ended: Promise<number>;
}

/** Attribute and entry cache timeout in seconds: short, so other machines' changes show within about a second. */
const cacheTimeoutSeconds = 1;

function toStat(attr: Attr): Stat {
  return {
    mode: attr.mode,
    uid: attr.uid,
    gid: attr.gid,
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

/** The FuseOperations of a file system: every call goes through `run`, which maps errors once. */
export function makeOperations(fs: FileSystem, log: Logger): FuseOperations {
  const ops = new PathOps(fs);
  const run = <T>(what: string, path: string, cb: (result: number, value?: T) => void, fn: () => T): void => {
    let value: T;
    try {
      value = fn();
    } catch (e) {
      cb(toErrno(e, `${what} ${path}`, log));
      return;
    }
    cb(0, value);
  };
  const status = (what: string, path: string, cb: (result: number) => void, fn: () => void): void => run(what, path, cb, fn);
  return {
    getattr: (_c, path, cb) => run('getattr', path, cb, () => toStat(ops.getattr(path))),
    fgetattr: (_c, path, fh, cb) => run('fgetattr', path, cb, () => toStat(ops.fgetattr(fh, path))),
    access: (c, path, mask, cb) => status('access', path, cb, () => ops.access(toCtx(c), path, mask)),
    statfs: (_c, path, cb) => run('statfs', path, cb, () => ({ ...ops.statfs(), fsid: 0, flag: 0 })),
    opendir: (_c, path, _flags, cb) => run('opendir', path, cb, () => 0),
    readdir: (_c, path, _fh, cb) => {
      try {
        const { names, stats } = ops.readdir(path);
        cb(0, names, stats);
      } catch (e) {
        cb(toErrno(e, `readdir ${path}`, log));
      }
    },
    releasedir: (_c, _path, _fh, cb) => cb(0),
    fsyncdir: (_c, path, _datasync, _fh, cb) => {
      fs.fsync().then(() => cb(0), (e: unknown) => cb(toErrno(e, `fsyncdir ${path}`, log)));
    },
    create: (c, path, mode, _flags, cb) => run('create', path, cb, () => ops.create(toCtx(c), path, mode)),
    mknod: (c, path, mode, rdev, cb) => status('mknod', path, cb, () => ops.mknod(toCtx(c), path, mode, rdev)),
    open: (c, path, flags, cb) => run('open', path, cb, () => ops.open(toCtx(c), path, flags)),
    release: (_c, path, fh, _flags, cb) => status('release', path, cb, () => ops.release(fh)),
    flush: (_c, path, fh, cb) => status('flush', path, cb, () => ops.flush(fh)),
    fsync: (_c, path, _datasync, fh, cb) => {
      ops.fsync(fh).then(() => cb(0), (e: unknown) => cb(toErrno(e, `fsync ${path}`, log)));
    },
    read: (_c, path, fh, buffer, offset, cb) => {
      try {
        cb(ops.read(fh, buffer, buffer.length, offset));
      } catch (e) {
        cb(toErrno(e, `read ${path}`, log));
      }
    },
    write: (c, path, fh, buffer, offset, cb) => {
      try {
        cb(ops.write(toCtx(c), fh, buffer, buffer.length, offset));
      } catch (e) {
        cb(toErrno(e, `write ${path}`, log));
      }
    },
    truncate: (c, path, size, cb) => status('truncate', path, cb, () => ops.truncate(toCtx(c), path, size)),
    ftruncate: (c, path, fh, size, cb) => status('ftruncate', path, cb, () => ops.ftruncate(toCtx(c), fh, size)),
    mkdir: (c, path, mode, cb) => status('mkdir', path, cb, () => ops.mkdir(toCtx(c), path, mode)),
    rmdir: (c, path, cb) => status('rmdir', path, cb, () => ops.rmdir(toCtx(c), path)),
    unlink: (c, path, cb) => status('unlink', path, cb, () => ops.unlink(toCtx(c), path)),
    rename: (c, from, to, cb) => status('rename', from, cb, () => ops.rename(toCtx(c), from, to)),
    link: (c, from, to, cb) => status('link', to, cb, () => ops.link(toCtx(c), from, to)),
    symlink: (c, target, path, cb) => status('symlink', path, cb, () => ops.symlink(toCtx(c), target, path)),
    readlink: (_c, path, cb) => run('readlink', path, cb, () => ops.readlink(path)),
    chmod: (c, path, mode, cb) => status('chmod', path, cb, () => ops.chmod(toCtx(c), path, mode)),
    chown: (c, path, uid, gid, cb) => status('chown', path, cb, () => ops.chown(toCtx(c), path, uid, gid)),
    utimens: (c, path, atime, mtime, cb) => status('utimens', path, cb, () => ops.utimens(toCtx(c), path, atime, mtime)),
    setxattr: (_c, path, name, value, flags, cb) => status('setxattr', path, cb, () => ops.setxattr(path, name, value, flags)),
    getxattr: (_c, path, name, cb) => run('getxattr', path, cb, () => ops.getxattr(path, name)),
    listxattr: (_c, path, cb) => run('listxattr', path, cb, () => ops.listxattr(path)),
    removexattr: (_c, path, name, cb) => status('removexattr', path, cb, () => ops.removexattr(path, name)),
  };
}

/** libfuse options of a zippy-fs mount. */
export function fuseOptionsFor(options: MountOptions): Record<string, FuseOptionValue> {
  const fuseOptions: Record<string, FuseOptionValue> = {
    default_permissions: true,
    auto_cache: true,
    attr_timeout: cacheTimeoutSeconds,
    entry_timeout: cacheTimeoutSeconds,
    negative_timeout: 0,
    fsname: 'zippy-fs',
    subtype: 'zippy',
  };
  if (options.allowOther) fuseOptions['allow_other'] = true;
  if (options.uid !== undefined) fuseOptions['uid'] = options.uid;
  if (options.gid !== undefined) fuseOptions['gid'] = options.gid;
  if (options.debug) fuseOptions['debug'] = true;
  for (const extra of options.extra) {
    const eq = extra.indexOf('=');
    fuseOptions[eq < 0 ? extra : extra.slice(0, eq)] = eq < 0 ? true : extra.slice(eq + 1);
  }
  return fuseOptions;
}

/** Mounts `fs` at options.mountpoint and resolves once the kernel has initialised the mount. */
export async function mountBridge(fs: FileSystem, options: MountOptions, log: Logger): Promise<MountHandle> {
  const fuse = new Fuse(options.mountpoint, makeOperations(fs, log), {
    fuseOptions: fuseOptionsFor(options),
    singleThreaded: options.singleThreaded,
    onError: (error, op, path) => log(`bridge error in ${op} ${path ?? ''}: ${String((error as Error)?.stack ?? error)}`),
  });
  await fuse.mount();
  return { unmount: () => fuse.unmount(), ended: fuse.ended };
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
