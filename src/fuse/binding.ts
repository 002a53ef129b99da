/**
 * Typed bridge to zippy-fs's FUSE addon (native/fuse/, see PATCHES.md there), which drives
 * libfuse 2.9's LOW-LEVEL, inode-based API: every kernel request is one handler call, files
 * are named by inode number (the kernel's nodeid is the file system's inode number, 1 is the
 * root) and entries by (parent inode, name).
 *
 * This file is a thin bridge: it turns the addon's positional arguments into typed values,
 * hands them with the caller's context to the operation handlers, and turns the handlers'
 * answers back into what the addon expects. It holds no file system logic. Handlers answer
 * `cb(result, ...values)` where `result` is 0 (or a byte count for read and write) on
 * success and a negative errno on failure.
 *
 * Invariants kept here:
 *   - Every request is answered exactly once: a second answer is reported and ignored, a
 *     handler that throws or answers with a malformed value answers EIO (and is reported),
 *     and with `opTimeoutMs` a handler that never answers answers ETIMEDOUT. The addon
 *     tears the session down only after every request has been answered.
 *   - Every handle an open, opendir or create handler answers with is released exactly once:
 *     by the kernel's release/releasedir, or, when the kernel never took it (the reply failed
 *     because the opener was interrupted or the connection aborted, or the answer came after
 *     ETIMEDOUT), by this file calling the release/releasedir handler itself.
 *   - The read/write buffer a handler receives is valid only until the handler answers; the
 *     addon detaches it then, so a kept reference reads as empty instead of as freed memory.
 *     Copy what must outlive the call.
 *   - A mounted Fuse keeps the Node event loop alive until the session has ended.
 */
import { execFile, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { constants as osConstants } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fsError } from '../errors.js';
import { nativeAddonPath } from '../native-path.js';

// ---------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------

/** Who made the request, from fuse_req_ctx(). pid is 0 for requests the kernel makes on
 *  its own behalf (e.g. release after the last close of a file in another process). */
export interface CallerContext {
  readonly uid: number;
  readonly gid: number;
  readonly pid: number;
  readonly umask: number;
}

/** Attributes of one file. Times are nanoseconds since the epoch. `ino` is the kernel's
 *  nodeid and what stat(2) reports; it must be a safe integer > 0 and name the same file for
 *  as long as the mount lives (never reused), as must `size` and `blocks` (512-byte units)
 *  be safe integers. */
export interface Stat {
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly size: number;
  readonly nlink: number;
  readonly ino: number;
  readonly rdev?: number;
  readonly blksize: number;
  readonly blocks: number;
  readonly atime: bigint;
  readonly mtime: bigint;
  readonly ctime: bigint;
}

/** What readdir tells the kernel about an entry (d_ino and d_type). */
export interface DirentStat {
  readonly ino: number;
  readonly mode: number;
}

/** statvfs(3) fields; counts are safe integers. */
export interface Statfs {
  readonly bsize: number;
  readonly frsize: number;
  readonly blocks: number;
  readonly bfree: number;
  readonly bavail: number;
  readonly files: number;
  readonly ffree: number;
  readonly favail: number;
  readonly fsid: number;
  readonly flag: number;
  readonly namemax: number;
}

/** A time to set: nanoseconds since the epoch, or the caller asked for "now" (UTIME_NOW,
 *  also what touch(1) without -d sends). A time that is not to be set is absent. */
export type TimeSpec = bigint | 'now' | 'omit';

/** The attributes one setattr request changes; absent fields stay as they are. The kernel
 *  sends chmod, chown, truncate and utimensat as setattr, sometimes several at once. */
export interface SetAttr {
  readonly mode?: number;
  readonly uid?: number;
  readonly gid?: number;
  readonly size?: number;
  readonly atime?: bigint | 'now';
  readonly mtime?: bigint | 'now';
}

/** Negotiated connection parameters, as libfuse saw them when INIT arrived. */
export interface ConnectionInfo {
  readonly protoMajor: number;
  readonly protoMinor: number;
  readonly maxWrite: number;
  readonly maxReadahead: number;
  /** FUSE_CAP_* bits the kernel offers. */
  readonly capable: number;
  /** FUSE_CAP_* bits libfuse will ask for (FUSE_CAP_BIG_WRITES = 1 << 5 with big_writes). */
  readonly want: number;
}

/** Per-open flags an open/create handler may return. */
export interface OpenReply {
  readonly directIo?: boolean;
  /** Keep the kernel's page cache of the file from earlier opens (else it is dropped). */
  readonly keepCache?: boolean;
  readonly nonSeekable?: boolean;
}

/** result: 0 or a negative errno. */
export type StatusCallback = (result: number) => void;
/** result: 0 with a value, or a negative errno without one. */
export type ValueCallback<T> = (result: number, value?: T) => void;
/** result: 0 with a file handle (a safe non-negative integer), or a negative errno. */
export type OpenCallback = (result: number, fh?: number, reply?: OpenReply) => void;
/** result: 0 with the new file's attributes and an open handle, or a negative errno. */
export type CreateCallback = (result: number, stat?: Stat, fh?: number, reply?: OpenReply) => void;
/** result: 0 with names (and one DirentStat per name), or a negative errno. */
export type ReaddirCallback = (result: number, names?: readonly string[], stats?: readonly DirentStat[]) => void;
/** result: bytes transferred (0..buffer.length), or a negative errno. */
export type IoCallback = (result: number) => void;

/**
 * The operations a file system implements. Inodes are numbers (1 = the root); `fh` is the
 * handle open/opendir/create answered, or undefined where the request has none (getattr or
 * setattr on a path). lookup and getattr are required; libfuse answers ENOSYS for the rest,
 * and the kernel then falls back where it can (create -> mknod + open). Operations that
 * create a name answer with the new file's Stat (an "entry").
 */
export interface FuseOperations {
  lookup(ctx: CallerContext, parent: number, name: string, cb: ValueCallback<Stat>): void;
  getattr(ctx: CallerContext, ino: number, fh: number | undefined, cb: ValueCallback<Stat>): void;
  /** Answer with the attributes after the change. */
  setattr?(ctx: CallerContext, ino: number, fh: number | undefined, attr: SetAttr, cb: ValueCallback<Stat>): void;
  /** mask: R_OK | W_OK | X_OK, or F_OK (0). Not sent under default_permissions. */
  access?(ctx: CallerContext, ino: number, mask: number, cb: StatusCallback): void;
  statfs?(ctx: CallerContext, ino: number, cb: ValueCallback<Statfs>): void;
  opendir?(ctx: CallerContext, ino: number, flags: number, cb: OpenCallback): void;
  /**
   * The entries from position `offset` of the listing on (0 = the first; include "." and
   * ".." if wanted), at most `maxCount` of them. The kernel asks again with the position
   * after the last entry that fitted its buffer, so positions must stay stable while the
   * directory is open (a snapshot taken at opendir or at offset 0 does).
   */
  readdir?(ctx: CallerContext, ino: number, fh: number, offset: number, maxCount: number, cb: ReaddirCallback): void;
  releasedir?(ctx: CallerContext, ino: number, fh: number, cb: StatusCallback): void;
  fsyncdir?(ctx: CallerContext, ino: number, datasync: boolean, fh: number, cb: StatusCallback): void;
  create?(ctx: CallerContext, parent: number, name: string, mode: number, flags: number, cb: CreateCallback): void;
  mknod?(ctx: CallerContext, parent: number, name: string, mode: number, rdev: number, cb: ValueCallback<Stat>): void;
  open?(ctx: CallerContext, ino: number, flags: number, cb: OpenCallback): void;
  release?(ctx: CallerContext, ino: number, fh: number, flags: number, cb: StatusCallback): void;
  flush?(ctx: CallerContext, ino: number, fh: number, cb: StatusCallback): void;
  fsync?(ctx: CallerContext, ino: number, datasync: boolean, fh: number, cb: StatusCallback): void;
  /** Fill `buffer` (valid until cb) from `offset`; fewer bytes than asked means end of file. */
  read?(ctx: CallerContext, ino: number, fh: number, buffer: Buffer, offset: number, cb: IoCallback): void;
  /** `buffer` is valid until cb: copy what you keep. */
  write?(ctx: CallerContext, ino: number, fh: number, buffer: Buffer, offset: number, cb: IoCallback): void;
  mkdir?(ctx: CallerContext, parent: number, name: string, mode: number, cb: ValueCallback<Stat>): void;
  rmdir?(ctx: CallerContext, parent: number, name: string, cb: StatusCallback): void;
  unlink?(ctx: CallerContext, parent: number, name: string, cb: StatusCallback): void;
  rename?(ctx: CallerContext, parent: number, name: string, newParent: number, newName: string, cb: StatusCallback): void;
  /** A new name `newName` in `newParent` for inode `ino`; answer with its attributes. */
  link?(ctx: CallerContext, ino: number, newParent: number, newName: string, cb: ValueCallback<Stat>): void;
  symlink?(ctx: CallerContext, target: string, parent: number, name: string, cb: ValueCallback<Stat>): void;
  readlink?(ctx: CallerContext, ino: number, cb: ValueCallback<string>): void;
  /** flags: 0, XATTR_CREATE (1) or XATTR_REPLACE (2). `value` is a copy the handler may keep. */
  setxattr?(ctx: CallerContext, ino: number, name: string, value: Buffer, flags: number, cb: StatusCallback): void;
  /** Answer with the whole value (or -ENODATA); the size probing of getxattr(2) is done for you. */
  getxattr?(ctx: CallerContext, ino: number, name: string, cb: ValueCallback<Buffer>): void;
  /** Answer with all names; the size probing of listxattr(2) is done for you. */
  listxattr?(ctx: CallerContext, ino: number, cb: ValueCallback<readonly string[]>): void;
  removexattr?(ctx: CallerContext, ino: number, name: string, cb: StatusCallback): void;
}

export type OperationName = keyof FuseOperations;

/** A libfuse -o option: true adds the bare name, false leaves it out, else name=value. */
export type FuseOptionValue = boolean | number | string;

/** libfuse options every mount gets unless overridden (set a key to false to drop it). */
export const defaultFuseOptions: Readonly<Record<string, FuseOptionValue>> = {
  big_writes: true,     // write requests up to max_write instead of one page
  max_write: 131072,    // libfuse 2.9 caps this at 128 KiB
  atomic_o_trunc: true, // open(O_TRUNC) arrives as one open instead of open + setattr
};

/** Kernel cache timeouts in seconds, given with every entry and attribute reply. */
export interface CacheTimeouts {
  /** How long the kernel may trust a name → inode lookup. */
  readonly entry: number;
  /** How long the kernel may trust attributes. */
  readonly attr: number;
  /** How long the kernel may remember that a name does not exist (0: not at all). */
  readonly negative: number;
}

export const defaultCacheTimeouts: CacheTimeouts = { entry: 1, attr: 1, negative: 0 };

/**
 * Options of libfuse's high-level API (fuse_new) that the low-level session does not know.
 * The three timeouts are taken over as CacheTimeouts; the rest are refused with a message
 * rather than left for libfuse to reject with "unknown option".
 */
const timeoutOptions = { entry_timeout: 'entry', attr_timeout: 'attr', negative_timeout: 'negative' } as const;
const highLevelOnlyOptions = new Set([
  'use_ino', 'readdir_ino', 'auto_cache', 'noauto_cache', 'kernel_cache', 'direct_io', 'hard_remove',
  'umask', 'uid', 'gid', 'ac_attr_timeout', 'noforget', 'remember', 'intr', 'intr_signal', 'modules',
  'nopath', 'nonempty_ok',
]);

export interface MountOptions {
  /** libfuse options, merged over defaultFuseOptions: mount options (allow_other,
   *  default_permissions, fsname, subtype, max_read, ...) and low-level session options
   *  (big_writes, max_write, atomic_o_trunc, debug, ...). entry_timeout, attr_timeout and
   *  negative_timeout are accepted and become `timeouts`; other high-level-only options
   *  (use_ino, auto_cache, hard_remove, uid, ...) are refused with EINVAL. */
  readonly fuseOptions?: Readonly<Record<string, FuseOptionValue>>;
  /** Kernel cache timeouts; default defaultCacheTimeouts. */
  readonly timeouts?: Partial<CacheTimeouts>;
  /**
   * Who reads requests from the FUSE device. 'js' (the default): the JS thread itself, through
   * a libuv poll handle, so a request costs one thread wake-up. 'threads': a libfuse session
   * thread (a pool with fuse_session_loop_mt, one thread with singleThreaded) that queues each
   * request to the JS thread.
   */
  readonly reader?: 'js' | 'threads';
  /** With reader 'threads': one libfuse thread (fuse_session_loop) instead of a pool. */
  readonly singleThreaded?: boolean;
  /** Answer ETIMEDOUT for a request whose handler has not answered after this long.
   *  0 (the default) waits forever. */
  readonly opTimeoutMs?: number;
  /** Lazily unmount (fusermount -uz) on process 'exit' if still mounted. Default true.
   *  Signals that kill the process skip 'exit' handlers: handle SIGINT/SIGTERM yourself. */
  readonly unmountOnExit?: boolean;
  /** Clear a stale mount ("Transport endpoint is not connected") at the mountpoint first. */
  readonly force?: boolean;
  /** Receives handler errors and bridge misuse; the request itself has answered EIO. */
  readonly onError?: (error: unknown, op: OperationName, target: string | undefined) => void;
}

export type MountState = 'none' | 'live' | 'stale';

// ---------------------------------------------------------------------------------------
// The addon
// ---------------------------------------------------------------------------------------

/** Opaque handle of one in-flight request (an external wrapping a C pointer). */
interface NativeCall {
  readonly __nativeCall: unique symbol;
}

/** Opaque handle of one mounted session. */
interface NativeSession {
  readonly __nativeSession: unique symbol;
}

type NativeHandler = (call: NativeCall, uid: number, gid: number, pid: number, umask: number, ...args: never[]) => void;

interface NativeBinding {
  mount(mountpoint: string, args: string[], handlers: (NativeHandler | undefined)[], onExit: (loopResult: number) => void, singleThreaded: boolean, timeouts: Float64Array, inLoop: boolean): NativeSession;
  /** 0, or the negative errno of an open, opendir or create reply the kernel refused
   *  (PATCHES.md L9; an addon older than L9 returns undefined). */
  signal(call: NativeCall, result: number, a?: unknown, b?: unknown, c?: unknown): number | undefined;
  invalidate(session: NativeSession, ino: number): boolean;
  readonly ops: Readonly<Record<OperationName | 'init', number>>;
  readonly opCount: number;
  readonly statFieldCount: number;
  readonly statfsFieldCount: number;
  readonly fuseVersion: number;
  readonly bindingVersion: number;
}

/** Stat layout shared with fuse-native.c (STAT_* enum). */
const statField = {
  mode: 0, uid: 1, gid: 2, size: 3, nlink: 4, ino: 5, rdev: 6, blksize: 7, blocks: 8,
  atimeSec: 9, mtimeSec: 11, ctimeSec: 13,
} as const;
const statFieldCount = 15;
const statfsKeys = ['bsize', 'frsize', 'blocks', 'bfree', 'bavail', 'files', 'ffree', 'favail', 'fsid', 'flag', 'namemax'] as const;
const bindingVersionExpected = 2;
const openReplyBits = { directIo: 1, keepCache: 2, nonSeekable: 4 } as const;
/** FUSE_SET_ATTR_* bits of a setattr request (fuse_lowlevel.h). */
const setAttrBits = { mode: 1, uid: 2, gid: 4, size: 8, atime: 16, mtime: 32, atimeNow: 128, mtimeNow: 256 } as const;
/** Smallest readdir entry in the kernel's buffer: 24-byte header + name padded to 8 bytes. */
const direntSizeMin = 32;
const nsPerSecond = 1_000_000_000n;
const errnoEIO = -osConstants.errno.EIO;
const errnoETIMEDOUT = -osConstants.errno.ETIMEDOUT;
/** Largest errno Linux uses; results below -errnoMax are malformed. */
const errnoMax = 4095;

let nativeLoaded: NativeBinding | undefined;

/** Path of the compiled addon; $ZIPPY_FUSE_ADDON overrides. */
export function addonPath(): string {
  const override = process.env['ZIPPY_FUSE_ADDON'];
  if (override !== undefined && override !== '') return override;
  return nativeAddonPath('fuse', 'fuse_native.node');
}

/** Loads the addon once and checks that it is the one this file was written for. */
function loadNative(): NativeBinding {
  if (nativeLoaded !== undefined) return nativeLoaded;
  const path = addonPath();
  if (!existsSync(path)) throw fsError('ENOENT', 'FUSE addon not built: run `npm run build:native`', path);
  const binding = createRequire(import.meta.url)(path) as NativeBinding;
  if (binding.bindingVersion !== bindingVersionExpected) throw fsError('ASSERT', `addon version ${binding.bindingVersion}, expected ${bindingVersionExpected}: rebuild it`, path);
  if (binding.statFieldCount !== statFieldCount) throw fsError('ASSERT', `stat layout has ${binding.statFieldCount} fields, expected ${statFieldCount}`, path);
  if (binding.statfsFieldCount !== statfsKeys.length) throw fsError('ASSERT', `statfs layout has ${binding.statfsFieldCount} fields, expected ${statfsKeys.length}`, path);
  nativeLoaded = binding;
  return binding;
}

// ---------------------------------------------------------------------------------------
// Encoding handler answers for the addon
// ---------------------------------------------------------------------------------------

// The addon copies these synchronously inside signal(), so one scratch array each is enough.
const statScratch = new Float64Array(statFieldCount);
const statfsScratch = new Float64Array(statfsKeys.length);

function checkCount(value: number, what: string): number {
  if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`${what} must be a non-negative safe integer, got ${value}`);
  return value;
}

/** Splits ns since the epoch into (seconds, nanoseconds 0..999999999), flooring negatives. */
function putTime(target: Float64Array, index: number, ns: bigint, what: string): void {
  if (typeof ns !== 'bigint') throw new TypeError(`${what} must be a bigint of nanoseconds, got ${typeof ns}`);
  let seconds = ns / nsPerSecond;
  let nanos = ns - seconds * nsPerSecond;
  if (nanos < 0n) {
    nanos += nsPerSecond;
    seconds -= 1n;
  }
  target[index] = Number(seconds);
  target[index + 1] = Number(nanos);
}

function encodeStat(stat: Stat | undefined): Float64Array {
  if (stat === undefined || stat === null) throw new TypeError('answered 0 without a Stat');
  const s = statScratch;
  s[statField.mode] = checkCount(stat.mode, 'mode');
  s[statField.uid] = checkCount(stat.uid, 'uid');
  s[statField.gid] = checkCount(stat.gid, 'gid');
  s[statField.size] = checkCount(stat.size, 'size');
  s[statField.nlink] = checkCount(stat.nlink, 'nlink');
  s[statField.ino] = checkCount(stat.ino, 'ino');
  s[statField.rdev] = checkCount(stat.rdev ?? 0, 'rdev');
  s[statField.blksize] = checkCount(stat.blksize, 'blksize');
  s[statField.blocks] = checkCount(stat.blocks, 'blocks');
  putTime(s, statField.atimeSec, stat.atime, 'atime');
  putTime(s, statField.mtimeSec, stat.mtime, 'mtime');
  putTime(s, statField.ctimeSec, stat.ctime, 'ctime');
  return s;
}

function encodeStatfs(statfs: Statfs | undefined): Float64Array {
  if (statfs === undefined || statfs === null) throw new TypeError('answered 0 without a Statfs');
  statfsKeys.forEach((key, index) => {
    statfsScratch[index] = checkCount(statfs[key], key);
  });
  return statfsScratch;
}

/** Names as one buffer of NUL-terminated UTF-8 strings (one crossing for the listing). */
function encodeNames(names: readonly string[] | undefined, what: string, slashAllowed: boolean): Buffer {
  if (names === undefined || names === null) throw new TypeError(`answered 0 without ${what}`);
  for (const name of names) {
    if (typeof name !== 'string' || name.length === 0 || name.includes('\0') || (!slashAllowed && name.includes('/'))) {
      throw new TypeError(`bad ${what} entry ${JSON.stringify(name)}`);
    }
  }
  return Buffer.from(names.length === 0 ? '' : `${names.join('\0')}\0`, 'utf8');
}

function encodeDirentStats(stats: readonly DirentStat[] | undefined, nameCount: number): Float64Array {
  if (stats === undefined || stats === null) throw new TypeError('readdir answered 0 without stats');
  if (stats.length !== nameCount) throw new RangeError(`readdir answered ${nameCount} names but ${stats.length} stats`);
  const out = new Float64Array(2 * nameCount);
  for (let i = 0; i < nameCount; i++) {
    const st = stats[i]!;
    out[2 * i] = checkCount(st.ino, 'ino');
    out[2 * i + 1] = checkCount(st.mode, 'mode');
  }
  return out;
}

function encodeOpenReply(reply: OpenReply | undefined): number {
  if (reply === undefined || reply === null) return 0;
  return (reply.directIo === true ? openReplyBits.directIo : 0) |
    (reply.keepCache === true ? openReplyBits.keepCache : 0) |
    (reply.nonSeekable === true ? openReplyBits.nonSeekable : 0);
}

function toTime(seconds: number, nanos: number): bigint {
  return BigInt(seconds) * nsPerSecond + BigInt(nanos);
}

/** The SetAttr of a setattr request's FUSE_SET_ATTR_* mask and values. */
function decodeSetAttr(toSet: number, mode: number, uid: number, gid: number, size: number, aSec: number, aNsec: number, mSec: number, mNsec: number): SetAttr {
  const attr: { -readonly [K in keyof SetAttr]: SetAttr[K] } = {};
  if ((toSet & setAttrBits.mode) !== 0) attr.mode = mode;
  if ((toSet & setAttrBits.uid) !== 0) attr.uid = uid;
  if ((toSet & setAttrBits.gid) !== 0) attr.gid = gid;
  if ((toSet & setAttrBits.size) !== 0) attr.size = size;
  if ((toSet & setAttrBits.atimeNow) !== 0) attr.atime = 'now';
  else if ((toSet & setAttrBits.atime) !== 0) attr.atime = toTime(aSec, aNsec);
  if ((toSet & setAttrBits.mtimeNow) !== 0) attr.mtime = 'now';
  else if ((toSet & setAttrBits.mtime) !== 0) attr.mtime = toTime(mSec, mNsec);
  return attr;
}

/**
 * Splits libfuse options into what libfuse gets and the cache timeouts we apply ourselves;
 * refuses options of the high-level API, which the low-level session would reject with a
 * bare "unknown option".
 */
export function splitFuseOptions(options: Readonly<Record<string, FuseOptionValue>>, timeouts: Partial<CacheTimeouts> = {}): { libfuse: Record<string, FuseOptionValue>; timeouts: CacheTimeouts } {
  const libfuse: Record<string, FuseOptionValue> = {};
  const t: { -readonly [K in keyof CacheTimeouts]: number } = { ...defaultCacheTimeouts, ...timeouts };
  for (const [name, value] of Object.entries(options)) {
    if (name in timeoutOptions) {
      if (value === false) continue;
      const seconds = Number(value);
      if (!Number.isFinite(seconds) || seconds < 0) throw fsError('EINVAL', `${name} must be a number of seconds >= 0, got ${String(value)}`);
      t[timeoutOptions[name as keyof typeof timeoutOptions]] = seconds;
      continue;
    }
    if (highLevelOnlyOptions.has(name) && value !== false) {
      throw fsError('EINVAL', `libfuse option ${name} belongs to libfuse's high-level API; this mount uses the low-level API, where it does not exist (see native/fuse/PATCHES.md)`);
    }
    libfuse[name] = value;
  }
  return { libfuse, timeouts: t };
}

/** libfuse argv for `options`: ["-o", "a,b=c"], with "," and "\" in values escaped. */
export function fuseArgs(options: Readonly<Record<string, FuseOptionValue>>): string[] {
  const parts: string[] = [];
  for (const [name, value] of Object.entries(options)) {
    if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw fsError('EINVAL', `bad libfuse option name ${JSON.stringify(name)}`);
    if (value === false) continue;
    if (value === true) {
      parts.push(name);
      continue;
    }
    const text = String(value);
    if (text.includes('\0')) throw fsError('EINVAL', `libfuse option ${name} contains NUL`);
    parts.push(`${name}=${text.replace(/[\\,]/g, (c) => `\\${c}`)}`);
  }
  return parts.length === 0 ? [] : ['-o', parts.join(',')];
}

// ---------------------------------------------------------------------------------------
// Mount table helpers
// ---------------------------------------------------------------------------------------

/** Undoes the octal escapes (\040 etc.) of /proc/self/mountinfo. */
function unescapeMountinfo(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

/** The canonical path of a mountpoint without stat()ing the mountpoint itself, which fails
 *  with ENOTCONN on a stale mount and blocks on a hung one. */
function canonicalMountpoint(mountpoint: string): string {
  const absolute = resolve(mountpoint);
  const parent = dirname(absolute);
  if (parent === absolute) return absolute;
  try {
    return join(realpathSync(parent), basename(absolute));
  } catch {
    return absolute;
  }
}

/** True when /proc/self/mountinfo lists `mountpoint` (canonical) as a mount point. */
function isListedMount(mountpoint: string): boolean {
  const text = readFileSync('/proc/self/mountinfo', 'utf8');
  for (const line of text.split('\n')) {
    const field = line.split(' ')[4];
    if (field !== undefined && unescapeMountinfo(field) === mountpoint) return true;
  }
  return false;
}

/** fusermount -u [-z]; rejects with EBUSY when the kernel says the mount is busy. */
function runUnmount(mountpoint: string, lazy: boolean): Promise<void> {
  const args = lazy ? ['-u', '-z', mountpoint] : ['-u', mountpoint];
  return new Promise((resolvePromise, reject) => {
    execFile('fusermount', args, (error, _stdout, stderr) => {
      if (error === null) return resolvePromise();
      const detail = stderr.trim() || error.message;
      reject(fsError(/busy/i.test(detail) ? 'EBUSY' : 'EIO', `fusermount ${args.join(' ')} failed: ${detail}`, mountpoint));
    });
  });
}

// Mounted instances, unmounted lazily on process exit (spawnSync: 'exit' handlers cannot wait).
const mountedForExit = new Set<Fuse>();
let exitHookInstalled = false;

function exitHook(): void {
  for (const fuse of mountedForExit) {
    spawnSync('fusermount', ['-u', '-z', fuse.mountpoint], { stdio: 'ignore' });
  }
}

// ---------------------------------------------------------------------------------------
// The mount
// ---------------------------------------------------------------------------------------


/** Answers a request; true when the kernel took the answer (false: ignored or refused). */
type Answer = (result: number, a?: unknown, b?: unknown, c?: unknown) => boolean;
export type FuseState = 'idle' | 'mounting' | 'mounted' | 'unmounting' | 'unmounted';

function defaultOnError(error: unknown, op: OperationName, target: string | undefined): void {
  const detail = error instanceof Error ? (error.stack ?? error.message) : String(error);
  process.stderr.write(`zippy-fs fuse: ${op}${target === undefined ? '' : ` ${target}`}: ${detail}\n`);
}

/** How a request names its target in error reports: "ino 12" or "ino 1/name". */
function targetOf(ino: number, name?: string): string {
  return name === undefined ? `ino ${ino}` : `ino ${ino}/${name}`;
}

const inoTarget = (args: readonly unknown[]): string => targetOf(args[0] as number);
const entryTarget = (args: readonly unknown[]): string => targetOf(args[0] as number, args[1] as string);

/** The fh argument the addon passes: -1 when the request carries no file handle. */
function optionalFh(fh: number): number | undefined {
  return fh < 0 ? undefined : fh;
}

/** One FUSE mount of `ops` at `mountpoint`. mount() and unmount() may be repeated. */
export class Fuse {
  readonly mountpoint: string;
  private readonly ops: FuseOperations;
  private readonly options: MountOptions;
  private readonly onError: NonNullable<MountOptions['onError']>;
  private stateValue: FuseState = 'idle';
  private mounting: Promise<ConnectionInfo> | undefined;
  private endedPromise: Promise<number> = Promise.resolve(0);
  private session: NativeSession | undefined;
  private requests = 0;

  constructor(mountpoint: string, ops: FuseOperations, options: MountOptions = {}) {
    this.mountpoint = canonicalMountpoint(mountpoint);
    this.ops = ops;
    this.options = options;
    this.onError = options.onError ?? defaultOnError;
    if (typeof ops.getattr !== 'function' || typeof ops.lookup !== 'function') throw fsError('EINVAL', 'FuseOperations.lookup and getattr are required', this.mountpoint);
  }

  /** idle, mounting, mounted, unmounting or unmounted. */
  get state(): FuseState {
    return this.stateValue;
  }

  /** Kernel requests received so far (all mounts of this instance): a measure of foreground activity. */
  get requestCount(): number {
    return this.requests;
  }

  /** Resolves with libfuse's loop result once the session has ended (after any unmount). */
  get ended(): Promise<number> {
    return this.endedPromise;
  }

  /**
   * Tells the kernel to forget its cached attributes and pages of inode `ino` (its content
   * changed behind the kernel's back, e.g. another machine's version was installed). Returns
   * at once; false when not mounted.
   */
  invalidate(ino: number): boolean {
    const session = this.session;
    if (session === undefined || nativeLoaded === undefined) return false;
    return nativeLoaded.invalidate(session, checkCount(ino, 'ino'));
  }

  /** Mounts and resolves once the kernel's INIT has arrived. Refuses a mountpoint that is
   *  already mounted; a stale one is cleared only with options.force. */
  mount(): Promise<ConnectionInfo> {
    if (this.stateValue === 'mounting' || this.stateValue === 'mounted') {
      return this.mounting ?? Promise.reject(fsError('EBUSY', 'already mounted', this.mountpoint));
    }
    if (this.stateValue === 'unmounting') return Promise.reject(fsError('EBUSY', 'still unmounting', this.mountpoint));
    this.stateValue = 'mounting';
    this.mounting = this.doMount().catch((error: unknown) => {
      this.stateValue = 'idle';
      throw error;
    });
    return this.mounting;
  }

  private async doMount(): Promise<ConnectionInfo> {
    const native = loadNative();
    const split = splitFuseOptions({ ...defaultFuseOptions, ...this.options.fuseOptions }, this.options.timeouts);
    const args = fuseArgs(split.libfuse);
    const timeouts = new Float64Array([split.timeouts.entry, split.timeouts.attr, split.timeouts.negative]);
    await this.checkMountpoint();
    let resolveInit: (info: ConnectionInfo) => void = () => undefined;
    let rejectInit: (error: unknown) => void = () => undefined;
    const init = new Promise<ConnectionInfo>((res, rej) => {
      resolveInit = res;
      rejectInit = rej;
    });
    let resolveEnded: (loopResult: number) => void = () => undefined;
    this.endedPromise = new Promise<number>((res) => {
      resolveEnded = res;
    });
    const handlers = this.makeHandlers(native, (info) => resolveInit(info));
    const onExit = (loopResult: number): void => {
      this.stateValue = 'unmounted';
      this.session = undefined;
      mountedForExit.delete(this);
      rejectInit(fsError('EIO', 'FUSE session ended before INIT', this.mountpoint));
      resolveEnded(loopResult);
    };
    try {
      this.session = native.mount(this.mountpoint, args, handlers, onExit, this.options.singleThreaded === true, timeouts, this.options.reader !== 'threads');
    } catch (error) {
      throw fsError('EIO', `mount failed: ${(error as Error).message}`, this.mountpoint, error);
    }
    const info = await init;
    this.stateValue = 'mounted';
    if (this.options.unmountOnExit !== false) {
      mountedForExit.add(this);
      if (!exitHookInstalled) {
        process.on('exit', exitHook);
        exitHookInstalled = true;
      }
    }
    return info;
  }

  private async checkMountpoint(): Promise<void> {
    const state = await Fuse.mountState(this.mountpoint);
    if (state === 'stale' && this.options.force === true) {
      await Fuse.clearStale(this.mountpoint);
    } else if (state === 'stale') {
      throw fsError('EBUSY', `stale FUSE mount (Transport endpoint is not connected): clear it with \`fusermount -uz ${this.mountpoint}\` or Fuse.clearStale()`, this.mountpoint);
    } else if (state === 'live') {
      throw fsError('EBUSY', 'already a mount point', this.mountpoint);
    }
    const st = await stat(this.mountpoint).catch((error: NodeJS.ErrnoException) => {
      throw fsError(error.code === 'ENOENT' ? 'ENOENT' : 'EIO', `mountpoint: ${error.message}`, this.mountpoint, error);
    });
    if (!st.isDirectory()) throw fsError('ENOTDIR', 'mountpoint is not a directory', this.mountpoint);
  }

  /**
   * Unmounts with `fusermount -u` and resolves when the session has ended. Rejects with
   * EBUSY when files are still open. With lazy, detaches at once (`fusermount -uz`) and
   * resolves without waiting for the last open file to close (see `ended`).
   */
  async unmount(options: { readonly lazy?: boolean } = {}): Promise<void> {
    if (this.stateValue === 'mounting') await this.mounting?.catch(() => undefined);
    if (this.stateValue !== 'mounted') return;
    this.stateValue = 'unmounting';
    try {
      await runUnmount(this.mountpoint, options.lazy === true);
    } catch (error) {
      if (this.stateValue === 'unmounting') this.stateValue = 'mounted';
      throw error;
    }
    if (options.lazy !== true) await this.endedPromise;
  }

  /** Whether `mountpoint` is a mount, and if so whether its FUSE server is gone. */
  static async mountState(mountpoint: string): Promise<MountState> {
    const path = canonicalMountpoint(mountpoint);
    if (!isListedMount(path)) return 'none';
    try {
      await stat(path);
      return 'live';
    } catch (error) {
      return (error as NodeJS.ErrnoException).code === 'ENOTCONN' ? 'stale' : 'live';
    }
  }

  /** Lazily unmounts a stale mount at `mountpoint` (fusermount -uz). Returns false when
   *  there was nothing to clear; refuses a live mount. */
  static async clearStale(mountpoint: string): Promise<boolean> {
    const path = canonicalMountpoint(mountpoint);
    const state = await Fuse.mountState(path);
    if (state === 'none') return false;
    if (state === 'live') throw fsError('EBUSY', 'mount is live, not stale: unmount it instead', path);
    await runUnmount(path, true);
    return true;
  }


  // -------------------------------------------------------------------------------------
  // Request plumbing
  // -------------------------------------------------------------------------------------

  /** An answer function for one request: exactly once, optional timeout, errors -> EIO. */
  private answer(native: NativeBinding, call: NativeCall, op: OperationName, target: string, timeoutArg?: unknown): Answer {
    let done = false;
    let timedOut = false;
    let timer: NodeJS.Timeout | undefined;
    const timeoutMs = this.options.opTimeoutMs ?? 0;
    if (timeoutMs > 0) {
      timer = setTimeout(() => {
        timedOut = true;
        this.onError(new Error(`no answer after ${timeoutMs} ms: ETIMEDOUT`), op, target);
        finish(errnoETIMEDOUT, timeoutArg);
      }, timeoutMs);
    }
    const finish: Answer = (result, a, b, c) => {
      if (done) {
        if (!timedOut) this.onError(new Error('answered twice; the second answer is ignored'), op, target);
        return false;
      }
      done = true;
      if (timer !== undefined) clearTimeout(timer);
      const refused = native.signal(call, result, a, b, c);
      return typeof refused !== 'number' || refused === 0;
    };
    return finish;
  }

  /**
   * Releases a handle the kernel never took (its open, opendir or create reply was refused or
   * came too late), so the file system frees what the handle keeps alive — an unlinked file,
   * a directory snapshot. `release` is undefined when the file system has no such handler.
   */
  private releaseUntaken(op: 'release' | 'releasedir', target: string, release: ((cb: StatusCallback) => void) | undefined): void {
    if (release === undefined) return;
    try {
      release((result) => {
        if (result !== 0) this.onError(new Error(`${op} of a handle the kernel never took answered ${result}`), op, target);
      });
    } catch (error) {
      this.onError(error, op, target);
    }
  }

  /** Runs `body` (an encoder or a handler call) and turns a throw into an EIO answer. */
  private guard(op: OperationName, target: string, finish: Answer, failArg: unknown, body: () => void): void {
    try {
      body();
    } catch (error) {
      this.onError(error, op, target);
      finish(errnoEIO, failArg);
    }
  }

  /** Checks a status result (0 or -errno). */
  private status(op: OperationName, target: string, result: number): number {
    if (Number.isInteger(result) && result <= 0 && result >= -errnoMax) return result;
    this.onError(new RangeError(`answered ${result}; expected 0 or a negative errno`), op, target);
    return errnoEIO;
  }

  /** Checks a byte-count result of read/write. */
  private byteCount(op: OperationName, target: string, result: number, max: number): number {
    if (Number.isInteger(result) && result <= max && result >= -errnoMax) return result;
    this.onError(new RangeError(`answered ${result}; expected 0..${max} or a negative errno`), op, target);
    return errnoEIO;
  }

  /** Builds the handler array the addon indexes by op number. */
  private makeHandlers(native: NativeBinding, onInit: (info: ConnectionInfo) => void): (NativeHandler | undefined)[] {
    const handlers: (NativeHandler | undefined)[] = new Array<NativeHandler | undefined>(native.opCount).fill(undefined);
    const set: HandlerSetter = (name, handler) => {
      handlers[native.ops[name]] = ((call: NativeCall, uid: number, gid: number, pid: number, umask: number, ...args: never[]) => {
        this.requests++;
        handler(call, { uid, gid, pid, umask }, ...args);
      }) as NativeHandler;
    };

    // init has no answer: it only says that the kernel connection is up.
    set('init', (_call, _ctx, ...args: number[]) => {
      const [protoMajor = 0, protoMinor = 0, maxWrite = 0, maxReadahead = 0, capable = 0, want = 0] = args;
      onInit({ protoMajor, protoMinor, maxWrite, maxReadahead, capable, want });
    });
    this.addAttrHandlers(native, set);
    this.addDirHandlers(native, set);
    this.addFileHandlers(native, set);
    this.addNameHandlers(native, set);
    this.addXattrHandlers(native, set);
    return handlers;
  }

  /** Registers a handler whose only answer is a status; `target` names the request in reports. */
  private addStatusOp<A extends unknown[]>(native: NativeBinding, set: HandlerSetter, name: OperationName, target: (args: readonly unknown[]) => string, invoke: (ctx: CallerContext, args: A, cb: StatusCallback) => void): void {
    set(name, (call, ctx, ...args: never[]) => {
      const where = target(args);
      const finish = this.answer(native, call, name, where);
      this.guard(name, where, finish, undefined, () => invoke(ctx, args as unknown as A, (result) => finish(this.status(name, where, result))));
    });
  }

  /** A callback that answers with a Stat (attributes or an entry). */
  private statAnswer(name: OperationName, target: string, finish: Answer): ValueCallback<Stat> {
    return (result, st) => {
      this.guard(name, target, finish, undefined, () => {
        const r = this.status(name, target, result);
        if (r === 0) finish(0, encodeStat(st));
        else finish(r);
      });
    };
  }

  private addAttrHandlers(native: NativeBinding, set: HandlerSetter): void {
    const ops = this.ops;
    set('lookup', (call, ctx, parent: number, name: string) => {
      const where = targetOf(parent, name);
      const finish = this.answer(native, call, 'lookup', where);
      this.guard('lookup', where, finish, undefined, () => ops.lookup(ctx, parent, name, this.statAnswer('lookup', where, finish)));
    });
    set('getattr', (call, ctx, ino: number, fh: number) => {
      const where = targetOf(ino);
      const finish = this.answer(native, call, 'getattr', where);
      this.guard('getattr', where, finish, undefined, () => ops.getattr(ctx, ino, optionalFh(fh), this.statAnswer('getattr', where, finish)));
    });
    const { setattr, statfs, access } = ops;
    if (setattr) {
      set('setattr', (call, ctx, ino: number, fh: number, toSet: number, mode: number, uid: number, gid: number, size: number, aSec: number, aNsec: number, mSec: number, mNsec: number) => {
        const where = targetOf(ino);
        const finish = this.answer(native, call, 'setattr', where);
        this.guard('setattr', where, finish, undefined, () => {
          const attr = decodeSetAttr(toSet, mode, uid, gid, size, aSec, aNsec, mSec, mNsec);
          setattr.call(ops, ctx, ino, optionalFh(fh), attr, this.statAnswer('setattr', where, finish));
        });
      });
    }
    if (statfs) {
      set('statfs', (call, ctx, ino: number) => {
        const where = targetOf(ino);
        const finish = this.answer(native, call, 'statfs', where);
        this.guard('statfs', where, finish, undefined, () => statfs.call(ops, ctx, ino, (result, sv) => {
          this.guard('statfs', where, finish, undefined, () => {
            const r = this.status('statfs', where, result);
            if (r === 0) finish(0, encodeStatfs(sv));
            else finish(r);
          });
        }));
      });
    }
    if (access) this.addStatusOp(native, set, 'access', inoTarget, (ctx, [ino, mask]: [number, number], cb) => access.call(ops, ctx, ino, mask, cb));
  }

  /** open and opendir answer with a file handle and optional open flags; `release` frees a handle the kernel did not take. */
  private openAnswer(name: 'open' | 'opendir', target: string, finish: Answer, release: (fh: number) => void): OpenCallback {
    return (result, fh, reply) => {
      this.guard(name, target, finish, undefined, () => {
        const r = this.status(name, target, result);
        if (r !== 0) return void finish(r);
        const handle = checkCount(fh ?? 0, 'fh');
        if (!finish(0, handle, encodeOpenReply(reply))) release(handle);
      });
    };
  }

  private addDirHandlers(native: NativeBinding, set: HandlerSetter): void {
    const ops = this.ops;
    const { opendir, readdir, releasedir, fsyncdir, mkdir, rmdir } = ops;
    if (opendir) {
      set('opendir', (call, ctx, ino: number, flags: number) => {
        const where = targetOf(ino);
        const finish = this.answer(native, call, 'opendir', where);
        const release = (fh: number): void => this.releaseUntaken('releasedir', where, releasedir && ((cb) => releasedir.call(ops, ctx, ino, fh, cb)));
        this.guard('opendir', where, finish, undefined, () => opendir.call(ops, ctx, ino, flags, this.openAnswer('opendir', where, finish, release)));
      });
    }
    if (readdir) {
      set('readdir', (call, ctx, ino: number, fh: number, offset: number, size: number) => {
        const where = targetOf(ino);
        const finish = this.answer(native, call, 'readdir', where);
        const maxCount = Math.max(1, Math.floor(size / direntSizeMin));
        this.guard('readdir', where, finish, undefined, () => readdir.call(ops, ctx, ino, fh, offset, maxCount, (result, names, stats) => {
          this.guard('readdir', where, finish, undefined, () => {
            const r = this.status('readdir', where, result);
            if (r !== 0) return void finish(r);
            const count = names?.length ?? 0;
            finish(0, encodeNames(names, 'readdir', false), encodeDirentStats(stats, count));
          });
        }));
      });
    }
    if (releasedir) this.addStatusOp(native, set, 'releasedir', inoTarget, (ctx, [ino, fh]: [number, number], cb) => releasedir.call(ops, ctx, ino, fh, cb));
    if (fsyncdir) this.addStatusOp(native, set, 'fsyncdir', inoTarget, (ctx, [ino, datasync, fh]: [number, number, number], cb) => fsyncdir.call(ops, ctx, ino, datasync !== 0, fh, cb));
    if (mkdir) {
      set('mkdir', (call, ctx, parent: number, name: string, mode: number) => {
        const where = targetOf(parent, name);
        const finish = this.answer(native, call, 'mkdir', where);
        this.guard('mkdir', where, finish, undefined, () => mkdir.call(ops, ctx, parent, name, mode, this.statAnswer('mkdir', where, finish)));
      });
    }
    if (rmdir) this.addStatusOp(native, set, 'rmdir', entryTarget, (ctx, [parent, name]: [number, string], cb) => rmdir.call(ops, ctx, parent, name, cb));
  }

  private addFileHandlers(native: NativeBinding, set: HandlerSetter): void {
    const ops = this.ops;
    const { open, create, mknod, release, flush, fsync, read, write } = ops;
    if (open) {
      set('open', (call, ctx, ino: number, flags: number) => {
        const where = targetOf(ino);
        const finish = this.answer(native, call, 'open', where);
        const untaken = (fh: number): void => this.releaseUntaken('release', where, release && ((cb) => release.call(ops, ctx, ino, fh, flags, cb)));
        this.guard('open', where, finish, undefined, () => open.call(ops, ctx, ino, flags, this.openAnswer('open', where, finish, untaken)));
      });
    }
    if (create) {
      set('create', (call, ctx, parent: number, name: string, mode: number, flags: number) => {
        const where = targetOf(parent, name);
        const finish = this.answer(native, call, 'create', where);
        this.guard('create', where, finish, undefined, () => create.call(ops, ctx, parent, name, mode, flags, (result, st, fh, reply) => {
          this.guard('create', where, finish, undefined, () => {
            const r = this.status('create', where, result);
            if (r !== 0) return void finish(r);
            const encoded = encodeStat(st);
            const handle = checkCount(fh ?? 0, 'fh');
            const ino = st!.ino;
            if (!finish(0, encoded, handle, encodeOpenReply(reply))) {
              this.releaseUntaken('release', where, release && ((cb) => release.call(ops, ctx, ino, handle, flags, cb)));
            }
          });
        }));
      });
    }
    if (mknod) {
      set('mknod', (call, ctx, parent: number, name: string, mode: number, rdev: number) => {
        const where = targetOf(parent, name);
        const finish = this.answer(native, call, 'mknod', where);
        this.guard('mknod', where, finish, undefined, () => mknod.call(ops, ctx, parent, name, mode, rdev, this.statAnswer('mknod', where, finish)));
      });
    }
    if (release) this.addStatusOp(native, set, 'release', inoTarget, (ctx, [ino, fh, flags]: [number, number, number], cb) => release.call(ops, ctx, ino, fh, flags, cb));
    if (flush) this.addStatusOp(native, set, 'flush', inoTarget, (ctx, [ino, fh]: [number, number], cb) => flush.call(ops, ctx, ino, fh, cb));
    if (fsync) this.addStatusOp(native, set, 'fsync', inoTarget, (ctx, [ino, datasync, fh]: [number, number, number], cb) => fsync.call(ops, ctx, ino, datasync !== 0, fh, cb));
    for (const [name, io] of [['read', read], ['write', write]] as const) {
      if (!io) continue;
      set(name, (call, ctx, ino: number, fh: number, buffer: Buffer, offset: number) => {
        // The ArrayBuffer goes back with every answer so the addon can detach it.
        const arrayBuffer = buffer.buffer;
        const where = targetOf(ino);
        const finish = this.answer(native, call, name, where, arrayBuffer);
        this.guard(name, where, finish, arrayBuffer, () => io.call(ops, ctx, ino, fh, buffer, offset, (result) => {
          finish(this.byteCount(name, where, result, buffer.length), arrayBuffer);
        }));
      });
    }
  }

  private addNameHandlers(native: NativeBinding, set: HandlerSetter): void {
    const ops = this.ops;
    const { unlink, rename, link, symlink, readlink } = ops;
    if (unlink) this.addStatusOp(native, set, 'unlink', entryTarget, (ctx, [parent, name]: [number, string], cb) => unlink.call(ops, ctx, parent, name, cb));
    if (rename) {
      this.addStatusOp(native, set, 'rename', entryTarget,
        (ctx, [parent, name, newParent, newName]: [number, string, number, string], cb) => rename.call(ops, ctx, parent, name, newParent, newName, cb));
    }
    if (link) {
      set('link', (call, ctx, ino: number, newParent: number, newName: string) => {
        const where = targetOf(newParent, newName);
        const finish = this.answer(native, call, 'link', where);
        this.guard('link', where, finish, undefined, () => link.call(ops, ctx, ino, newParent, newName, this.statAnswer('link', where, finish)));
      });
    }
    if (symlink) {
      set('symlink', (call, ctx, target: string, parent: number, name: string) => {
        const where = targetOf(parent, name);
        const finish = this.answer(native, call, 'symlink', where);
        this.guard('symlink', where, finish, undefined, () => symlink.call(ops, ctx, target, parent, name, this.statAnswer('symlink', where, finish)));
      });
    }
    if (readlink) {
      set('readlink', (call, ctx, ino: number) => {
        const where = targetOf(ino);
        const finish = this.answer(native, call, 'readlink', where);
        this.guard('readlink', where, finish, undefined, () => readlink.call(ops, ctx, ino, (result, target) => {
          this.guard('readlink', where, finish, undefined, () => {
            const r = this.status('readlink', where, result);
            if (r !== 0) return void finish(r);
            if (typeof target !== 'string') throw new TypeError('readlink answered 0 without a target');
            finish(0, target);
          });
        }));
      });
    }
  }

  private addXattrHandlers(native: NativeBinding, set: HandlerSetter): void {
    const ops = this.ops;
    const { setxattr, getxattr, listxattr, removexattr } = ops;
    if (setxattr) {
      // args: ino, name, value (a copy), flags
      this.addStatusOp(native, set, 'setxattr', inoTarget,
        (ctx, [ino, name, value, flags]: [number, string, Buffer, number], cb) => setxattr.call(ops, ctx, ino, name, value, flags, cb));
    }
    if (removexattr) this.addStatusOp(native, set, 'removexattr', inoTarget, (ctx, [ino, name]: [number, string], cb) => removexattr.call(ops, ctx, ino, name, cb));
    if (getxattr) {
      set('getxattr', (call, ctx, ino: number, name: string) => {
        const where = targetOf(ino);
        const finish = this.answer(native, call, 'getxattr', where);
        this.guard('getxattr', where, finish, undefined, () => getxattr.call(ops, ctx, ino, name, (result, value) => {
          this.guard('getxattr', where, finish, undefined, () => {
            const r = this.status('getxattr', where, result);
            if (r !== 0) return void finish(r);
            if (!Buffer.isBuffer(value)) throw new TypeError('getxattr answered 0 without a Buffer');
            finish(0, value);
          });
        }));
      });
    }
    if (listxattr) {
      set('listxattr', (call, ctx, ino: number) => {
        const where = targetOf(ino);
        const finish = this.answer(native, call, 'listxattr', where);
        this.guard('listxattr', where, finish, undefined, () => listxattr.call(ops, ctx, ino, (result, names) => {
          this.guard('listxattr', where, finish, undefined, () => {
            const r = this.status('listxattr', where, result);
            if (r !== 0) return void finish(r);
            finish(0, encodeNames(names, 'listxattr', true));
          });
        }));
      });
    }
  }
}

type HandlerSetter = (name: OperationName | 'init', handler: (call: NativeCall, ctx: CallerContext, ...args: never[]) => void) => void;
