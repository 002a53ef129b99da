/**
 * Typed bridge to zippy-fs's patched fuse-native addon (native/fuse/, see PATCHES.md there).
 *
 * This file is a thin bridge: it turns the addon's positional arguments into typed values,
 * hands them with the caller's context to the operation handlers, and turns the handlers'
 * answers back into what the addon expects. It holds no file system logic. Handlers answer
 * the way fuse-native's do: `cb(result, ...values)` where `result` is 0 (or a byte count for
 * read and write) on success and a negative errno on failure.
 *
 * Invariants kept here:
 *   - Every request is answered exactly once: a second answer is reported and ignored, a
 *     handler that throws or answers with a malformed value answers EIO (and is reported),
 *     and with `opTimeoutMs` a handler that never answers answers ETIMEDOUT.
 *   - The read/write buffer a handler receives aliases libfuse memory and is valid only
 *     until the handler answers; the addon detaches it then, so a kept reference reads as
 *     empty instead of as freed memory. Copy what must outlive the call.
 *   - A mounted Fuse keeps the Node event loop alive until the session has ended.
 */
import { execFile, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { constants as osConstants } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fsError } from '../errors.js';

// ---------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------

/** Who made the request, from fuse_get_context(). pid is 0 for requests the kernel makes on
 *  its own behalf (e.g. release after the last close of a file in another process). */
export interface CallerContext {
  readonly uid: number;
  readonly gid: number;
  readonly pid: number;
  readonly umask: number;
}

/** Attributes of one file. Times are nanoseconds since the epoch. `ino` is what stat(2)
 *  reports (the mount passes use_ino by default) and must be a safe integer, as must `size`
 *  and `blocks` (512-byte units). */
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

/** What readdir can tell libfuse about an entry: libfuse 2 uses only these two fields (d_ino
 *  and d_type). A full Stat is accepted too. */
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

/** A utimens time: nanoseconds since the epoch, or the caller asked for "now" (UTIME_NOW,
 *  also what touch(1) without -d sends), or "leave this one alone" (UTIME_OMIT). */
export type TimeSpec = bigint | 'now' | 'omit';

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
  readonly keepCache?: boolean;
  readonly nonSeekable?: boolean;
}

/** result: 0 or a negative errno. */
export type StatusCallback = (result: number) => void;
/** result: 0 with a value, or a negative errno without one. */
export type ValueCallback<T> = (result: number, value?: T) => void;
/** result: 0 with a file handle (a safe non-negative integer), or a negative errno. */
export type OpenCallback = (result: number, fh?: number, reply?: OpenReply) => void;
/** result: 0 with names (and optionally one DirentStat per name), or a negative errno. */
export type ReaddirCallback = (result: number, names?: readonly string[], stats?: readonly DirentStat[]) => void;
/** result: bytes transferred (0..buffer.length), or a negative errno. */
export type IoCallback = (result: number) => void;

/**
 * The operations a file system implements. Paths are absolute within the mount ("/a/b").
 * Only getattr is required; libfuse answers ENOSYS for the rest, and the kernel then falls
 * back where it can (fgetattr -> getattr, ftruncate -> truncate, create -> mknod + open).
 */
export interface FuseOperations {
  getattr(ctx: CallerContext, path: string, cb: ValueCallback<Stat>): void;
  fgetattr?(ctx: CallerContext, path: string, fh: number, cb: ValueCallback<Stat>): void;
  /** mask: R_OK | W_OK | X_OK, or F_OK (0). */
  access?(ctx: CallerContext, path: string, mask: number, cb: StatusCallback): void;
  statfs?(ctx: CallerContext, path: string, cb: ValueCallback<Statfs>): void;
  opendir?(ctx: CallerContext, path: string, flags: number, cb: OpenCallback): void;
  /** The whole listing at once; libfuse adds nothing, so include "." and ".." if wanted. */
  readdir?(ctx: CallerContext, path: string, fh: number, cb: ReaddirCallback): void;
  releasedir?(ctx: CallerContext, path: string, fh: number, cb: StatusCallback): void;
  fsyncdir?(ctx: CallerContext, path: string, datasync: boolean, fh: number, cb: StatusCallback): void;
  create?(ctx: CallerContext, path: string, mode: number, flags: number, cb: OpenCallback): void;
  mknod?(ctx: CallerContext, path: string, mode: number, rdev: number, cb: StatusCallback): void;
  open?(ctx: CallerContext, path: string, flags: number, cb: OpenCallback): void;
  release?(ctx: CallerContext, path: string, fh: number, flags: number, cb: StatusCallback): void;
  flush?(ctx: CallerContext, path: string, fh: number, cb: StatusCallback): void;
  fsync?(ctx: CallerContext, path: string, datasync: boolean, fh: number, cb: StatusCallback): void;
  /** Fill `buffer` (valid until cb) from `offset`; fewer bytes than asked means end of file. */
  read?(ctx: CallerContext, path: string, fh: number, buffer: Buffer, offset: number, cb: IoCallback): void;
  /** `buffer` is valid until cb: copy what you keep. */
  write?(ctx: CallerContext, path: string, fh: number, buffer: Buffer, offset: number, cb: IoCallback): void;
  truncate?(ctx: CallerContext, path: string, size: number, cb: StatusCallback): void;
  ftruncate?(ctx: CallerContext, path: string, fh: number, size: number, cb: StatusCallback): void;
  mkdir?(ctx: CallerContext, path: string, mode: number, cb: StatusCallback): void;
  rmdir?(ctx: CallerContext, path: string, cb: StatusCallback): void;
  unlink?(ctx: CallerContext, path: string, cb: StatusCallback): void;
  rename?(ctx: CallerContext, from: string, to: string, cb: StatusCallback): void;
  link?(ctx: CallerContext, existingPath: string, newPath: string, cb: StatusCallback): void;
  symlink?(ctx: CallerContext, target: string, linkPath: string, cb: StatusCallback): void;
  readlink?(ctx: CallerContext, path: string, cb: ValueCallback<string>): void;
  chmod?(ctx: CallerContext, path: string, mode: number, cb: StatusCallback): void;
  /** uid or gid -1 means "leave unchanged". */
  chown?(ctx: CallerContext, path: string, uid: number, gid: number, cb: StatusCallback): void;
  utimens?(ctx: CallerContext, path: string, atime: TimeSpec, mtime: TimeSpec, cb: StatusCallback): void;
  /** flags: 0, XATTR_CREATE (1) or XATTR_REPLACE (2). `value` is a copy the handler may keep. */
  setxattr?(ctx: CallerContext, path: string, name: string, value: Buffer, flags: number, cb: StatusCallback): void;
  /** Answer with the whole value (or -ENODATA); the size probing of getxattr(2) is done for you. */
  getxattr?(ctx: CallerContext, path: string, name: string, cb: ValueCallback<Buffer>): void;
  /** Answer with all names; the size probing of listxattr(2) is done for you. */
  listxattr?(ctx: CallerContext, path: string, cb: ValueCallback<readonly string[]>): void;
  removexattr?(ctx: CallerContext, path: string, name: string, cb: StatusCallback): void;
}

export type OperationName = keyof FuseOperations;

/** A libfuse -o option: true adds the bare name, false leaves it out, else name=value. */
export type FuseOptionValue = boolean | number | string;

/** libfuse options every mount gets unless overridden (set a key to false to drop it). */
export const defaultFuseOptions: Readonly<Record<string, FuseOptionValue>> = {
  use_ino: true,        // stat(2) reports Stat.ino, so hard links share an inode number
  big_writes: true,     // write requests up to max_write instead of one page
  max_write: 131072,    // libfuse 2.9 caps this at 128 KiB
};

export interface MountOptions {
  /** libfuse options, merged over defaultFuseOptions: allow_other, default_permissions,
   *  auto_cache, attr_timeout, entry_timeout, negative_timeout, fsname, subtype, max_read,
   *  hard_remove, debug, ... Passed through as they are; libfuse rejects unknown ones. */
  readonly fuseOptions?: Readonly<Record<string, FuseOptionValue>>;
  /** Serve requests from one libfuse thread (fuse_loop) instead of a pool (fuse_loop_mt). */
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
  readonly onError?: (error: unknown, op: OperationName, path: string | undefined) => void;
}

export type MountState = 'none' | 'live' | 'stale';

// ---------------------------------------------------------------------------------------
// The addon
// ---------------------------------------------------------------------------------------

/** Opaque handle of one in-flight request (an external wrapping a C pointer). */
interface NativeCall {
  readonly __nativeCall: unique symbol;
}

type NativeHandler = (call: NativeCall, uid: number, gid: number, pid: number, umask: number, ...args: never[]) => void;

interface NativeBinding {
  mount(mountpoint: string, args: string[], handlers: (NativeHandler | undefined)[], onExit: (loopResult: number) => void, singleThreaded: boolean): void;
  signal(call: NativeCall, result: number, a?: unknown, b?: unknown): void;
  readonly ops: Readonly<Record<OperationName | 'init', number>>;
  readonly opCount: number;
  readonly statFieldCount: number;
  readonly statfsFieldCount: number;
  readonly UTIME_NOW: number;
  readonly UTIME_OMIT: number;
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
const bindingVersionExpected = 1;
const openReplyBits = { directIo: 1, keepCache: 2, nonSeekable: 4 } as const;
const nsPerSecond = 1_000_000_000n;
const errnoEIO = -osConstants.errno.EIO;
const errnoETIMEDOUT = -osConstants.errno.ETIMEDOUT;
/** Largest errno Linux uses; results below -errnoMax are malformed. */
const errnoMax = 4095;
const repoRootSearchDepthMax = 16;

let nativeLoaded: NativeBinding | undefined;

/** Walks up from this file to the directory holding package.json and native/fuse; works from
 *  src/fuse/ (tsx) and from dist/src/fuse/ (compiled) alike. */
function findRepoRoot(start: string): string {
  let dir = start;
  for (let depth = 0; depth < repoRootSearchDepthMax; depth++) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'native', 'fuse', 'binding.gyp'))) return dir;
    const parent = dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  throw fsError('ENOENT', 'cannot find the repository root (package.json next to native/fuse/)', start);
}

/** Path of the compiled addon; $ZIPPY_FUSE_ADDON overrides. */
export function addonPath(): string {
  const override = process.env['ZIPPY_FUSE_ADDON'];
  if (override !== undefined && override !== '') return override;
  const root = findRepoRoot(dirname(fileURLToPath(import.meta.url)));
  return join(root, 'native', 'fuse', 'build', 'Release', 'fuse_native.node');
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

function encodeDirentStats(stats: readonly DirentStat[] | undefined, nameCount: number): Float64Array | undefined {
  if (stats === undefined || stats === null) return undefined;
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

function toTimeSpec(native: NativeBinding, seconds: number, nanos: number): TimeSpec {
  if (nanos === native.UTIME_NOW) return 'now';
  if (nanos === native.UTIME_OMIT) return 'omit';
  return BigInt(seconds) * nsPerSecond + BigInt(nanos);
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

type Answer = (result: number, a?: unknown, b?: unknown) => void;
export type FuseState = 'idle' | 'mounting' | 'mounted' | 'unmounting' | 'unmounted';

function defaultOnError(error: unknown, op: OperationName, path: string | undefined): void {
  const detail = error instanceof Error ? (error.stack ?? error.message) : String(error);
  process.stderr.write(`zippy-fs fuse: ${op}${path === undefined ? '' : ` ${path}`}: ${detail}\n`);
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

  constructor(mountpoint: string, ops: FuseOperations, options: MountOptions = {}) {
    this.mountpoint = canonicalMountpoint(mountpoint);
    this.ops = ops;
    this.options = options;
    this.onError = options.onError ?? defaultOnError;
    if (typeof ops.getattr !== 'function') throw fsError('EINVAL', 'FuseOperations.getattr is required', this.mountpoint);
  }

  /** idle, mounting, mounted, unmounting or unmounted. */
  get state(): FuseState {
    return this.stateValue;
  }

  /** Resolves with libfuse's loop result once the session has ended (after any unmount). */
  get ended(): Promise<number> {
    return this.endedPromise;
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
    await this.checkMountpoint();
    const args = fuseArgs({ ...defaultFuseOptions, ...this.options.fuseOptions });
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
      mountedForExit.delete(this);
      rejectInit(fsError('EIO', 'FUSE session ended before INIT', this.mountpoint));
      resolveEnded(loopResult);
    };
    try {
      native.mount(this.mountpoint, args, handlers, onExit, this.options.singleThreaded === true);
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
  private answer(native: NativeBinding, call: NativeCall, op: OperationName, path: string, timeoutArg?: unknown): Answer {
    let done = false;
    let timedOut = false;
    let timer: NodeJS.Timeout | undefined;
    const timeoutMs = this.options.opTimeoutMs ?? 0;
    if (timeoutMs > 0) {
      timer = setTimeout(() => {
        timedOut = true;
        this.onError(new Error(`no answer after ${timeoutMs} ms: ETIMEDOUT`), op, path);
        finish(errnoETIMEDOUT, timeoutArg);
      }, timeoutMs);
    }
    const finish: Answer = (result, a, b) => {
      if (done) {
        if (!timedOut) this.onError(new Error('answered twice; the second answer is ignored'), op, path);
        return;
      }
      done = true;
      if (timer !== undefined) clearTimeout(timer);
      native.signal(call, result, a, b);
    };
    return finish;
  }

  /** Runs `body` (an encoder or a handler call) and turns a throw into an EIO answer. */
  private guard(op: OperationName, path: string, finish: Answer, failArg: unknown, body: () => void): void {
    try {
      body();
    } catch (error) {
      this.onError(error, op, path);
      finish(errnoEIO, failArg);
    }
  }

  /** Checks a status result (0 or -errno). */
  private status(op: OperationName, path: string, result: number): number {
    if (Number.isInteger(result) && result <= 0 && result >= -errnoMax) return result;
    this.onError(new RangeError(`answered ${result}; expected 0 or a negative errno`), op, path);
    return errnoEIO;
  }

  /** Checks a byte-count result of read/write. */
  private byteCount(op: OperationName, path: string, result: number, max: number): number {
    if (Number.isInteger(result) && result <= max && result >= -errnoMax) return result;
    this.onError(new RangeError(`answered ${result}; expected 0..${max} or a negative errno`), op, path);
    return errnoEIO;
  }

  /** Builds the handler array the addon indexes by op number. */
  private makeHandlers(native: NativeBinding, onInit: (info: ConnectionInfo) => void): (NativeHandler | undefined)[] {
    const handlers: (NativeHandler | undefined)[] = new Array<NativeHandler | undefined>(native.opCount).fill(undefined);
    const set = (name: OperationName | 'init', handler: (call: NativeCall, ctx: CallerContext, ...args: never[]) => void): void => {
      handlers[native.ops[name]] = ((call: NativeCall, uid: number, gid: number, pid: number, umask: number, ...args: never[]) => {
        handler(call, { uid, gid, pid, umask }, ...args);
      }) as NativeHandler;
    };

    set('init', (call, _ctx, ...args: number[]) => {
      const [protoMajor = 0, protoMinor = 0, maxWrite = 0, maxReadahead = 0, capable = 0, want = 0] = args;
      native.signal(call, 0);
      onInit({ protoMajor, protoMinor, maxWrite, maxReadahead, capable, want });
    });
    this.addAttrHandlers(native, set);
    this.addDirHandlers(native, set);
    this.addFileHandlers(native, set);
    this.addNameHandlers(native, set);
    this.addXattrHandlers(native, set);
    return handlers;
  }

  /** Registers handlers whose only answer is a status, for ops whose arguments pass through. */
  private addStatusOp<A extends unknown[]>(native: NativeBinding, set: HandlerSetter, name: OperationName, invoke: (ctx: CallerContext, args: A, cb: StatusCallback) => void): void {
    set(name, (call, ctx, ...args: never[]) => {
      const path = String((args as unknown[])[0]);
      const finish = this.answer(native, call, name, path);
      this.guard(name, path, finish, undefined, () => invoke(ctx, args as unknown as A, (result) => finish(this.status(name, path, result))));
    });
  }

  private addAttrHandlers(native: NativeBinding, set: HandlerSetter): void {
    const ops = this.ops;
    const statAnswer = (name: OperationName, path: string, finish: Answer): ValueCallback<Stat> => (result, st) => {
      this.guard(name, path, finish, undefined, () => {
        const r = this.status(name, path, result);
        if (r === 0) finish(0, encodeStat(st));
        else finish(r);
      });
    };
    set('getattr', (call, ctx, path: string) => {
      const finish = this.answer(native, call, 'getattr', path);
      this.guard('getattr', path, finish, undefined, () => ops.getattr(ctx, path, statAnswer('getattr', path, finish)));
    });
    const { fgetattr, statfs, access, truncate, ftruncate, chmod, chown, utimens } = ops;
    if (fgetattr) {
      set('fgetattr', (call, ctx, path: string, fh: number) => {
        const finish = this.answer(native, call, 'fgetattr', path);
        this.guard('fgetattr', path, finish, undefined, () => fgetattr.call(ops, ctx, path, fh, statAnswer('fgetattr', path, finish)));
      });
    }
    if (statfs) {
      set('statfs', (call, ctx, path: string) => {
        const finish = this.answer(native, call, 'statfs', path);
        this.guard('statfs', path, finish, undefined, () => statfs.call(ops, ctx, path, (result, sv) => {
          this.guard('statfs', path, finish, undefined, () => {
            const r = this.status('statfs', path, result);
            if (r === 0) finish(0, encodeStatfs(sv));
            else finish(r);
          });
        }));
      });
    }
    if (access) this.addStatusOp<[string, number]>(native, set, 'access', (ctx, [path, mask], cb) => access.call(ops, ctx, path, mask, cb));
    if (truncate) this.addStatusOp<[string, number]>(native, set, 'truncate', (ctx, [path, size], cb) => truncate.call(ops, ctx, path, size, cb));
    if (ftruncate) this.addStatusOp<[string, number, number]>(native, set, 'ftruncate', (ctx, [path, fh, size], cb) => ftruncate.call(ops, ctx, path, fh, size, cb));
    if (chmod) this.addStatusOp<[string, number]>(native, set, 'chmod', (ctx, [path, mode], cb) => chmod.call(ops, ctx, path, mode, cb));
    if (chown) this.addStatusOp<[string, number, number]>(native, set, 'chown', (ctx, [path, uid, gid], cb) => chown.call(ops, ctx, path, uid, gid, cb));
    if (utimens) {
      this.addStatusOp<[string, number, number, number, number]>(native, set, 'utimens', (ctx, [path, aSec, aNsec, mSec, mNsec], cb) =>
        utimens.call(ops, ctx, path, toTimeSpec(native, aSec, aNsec), toTimeSpec(native, mSec, mNsec), cb));
    }
  }

  /** open, opendir and create answer with a file handle and optional open flags. */
  private openAnswer(name: OperationName, path: string, finish: Answer): OpenCallback {
    return (result, fh, reply) => {
      this.guard(name, path, finish, undefined, () => {
        const r = this.status(name, path, result);
        if (r !== 0) return finish(r);
        finish(0, checkCount(fh ?? 0, 'fh'), encodeOpenReply(reply));
      });
    };
  }

  private addDirHandlers(native: NativeBinding, set: HandlerSetter): void {
    const ops = this.ops;
    const { opendir, readdir, releasedir, fsyncdir, mkdir, rmdir } = ops;
    if (opendir) {
      set('opendir', (call, ctx, path: string, flags: number) => {
        const finish = this.answer(native, call, 'opendir', path);
        this.guard('opendir', path, finish, undefined, () => opendir.call(ops, ctx, path, flags, this.openAnswer('opendir', path, finish)));
      });
    }
    if (readdir) {
      set('readdir', (call, ctx, path: string, fh: number) => {
        const finish = this.answer(native, call, 'readdir', path);
        this.guard('readdir', path, finish, undefined, () => readdir.call(ops, ctx, path, fh, (result, names, stats) => {
          this.guard('readdir', path, finish, undefined, () => {
            const r = this.status('readdir', path, result);
            if (r !== 0) return finish(r);
            const encoded = encodeNames(names, 'readdir', false);
            finish(0, encoded, encodeDirentStats(stats, names?.length ?? 0));
          });
        }));
      });
    }
    if (releasedir) this.addStatusOp<[string, number]>(native, set, 'releasedir', (ctx, [path, fh], cb) => releasedir.call(ops, ctx, path, fh, cb));
    if (fsyncdir) this.addStatusOp<[string, number, number]>(native, set, 'fsyncdir', (ctx, [path, datasync, fh], cb) => fsyncdir.call(ops, ctx, path, datasync !== 0, fh, cb));
    if (mkdir) this.addStatusOp<[string, number]>(native, set, 'mkdir', (ctx, [path, mode], cb) => mkdir.call(ops, ctx, path, mode, cb));
    if (rmdir) this.addStatusOp<[string]>(native, set, 'rmdir', (ctx, [path], cb) => rmdir.call(ops, ctx, path, cb));
  }

  private addFileHandlers(native: NativeBinding, set: HandlerSetter): void {
    const ops = this.ops;
    const { open, create, mknod, release, flush, fsync, read, write } = ops;
    if (open) {
      set('open', (call, ctx, path: string, flags: number) => {
        const finish = this.answer(native, call, 'open', path);
        this.guard('open', path, finish, undefined, () => open.call(ops, ctx, path, flags, this.openAnswer('open', path, finish)));
      });
    }
    if (create) {
      set('create', (call, ctx, path: string, mode: number, flags: number) => {
        const finish = this.answer(native, call, 'create', path);
        this.guard('create', path, finish, undefined, () => create.call(ops, ctx, path, mode, flags, this.openAnswer('create', path, finish)));
      });
    }
    if (mknod) this.addStatusOp<[string, number, number]>(native, set, 'mknod', (ctx, [path, mode, rdev], cb) => mknod.call(ops, ctx, path, mode, rdev, cb));
    if (release) this.addStatusOp<[string, number, number]>(native, set, 'release', (ctx, [path, fh, flags], cb) => release.call(ops, ctx, path, fh, flags, cb));
    if (flush) this.addStatusOp<[string, number]>(native, set, 'flush', (ctx, [path, fh], cb) => flush.call(ops, ctx, path, fh, cb));
    if (fsync) this.addStatusOp<[string, number, number]>(native, set, 'fsync', (ctx, [path, datasync, fh], cb) => fsync.call(ops, ctx, path, datasync !== 0, fh, cb));
    for (const [name, io] of [['read', read], ['write', write]] as const) {
      if (!io) continue;
      set(name, (call, ctx, path: string, fh: number, buffer: Buffer, offset: number) => {
        // The ArrayBuffer goes back with every answer so the addon can detach it.
        const arrayBuffer = buffer.buffer;
        const finish = this.answer(native, call, name, path, arrayBuffer);
        this.guard(name, path, finish, arrayBuffer, () => io.call(ops, ctx, path, fh, buffer, offset, (result) => {
          finish(this.byteCount(name, path, result, buffer.length), arrayBuffer);
        }));
      });
    }
  }

  private addNameHandlers(native: NativeBinding, set: HandlerSetter): void {
    const ops = this.ops;
    const { unlink, rename, link, symlink, readlink } = ops;
    if (unlink) this.addStatusOp<[string]>(native, set, 'unlink', (ctx, [path], cb) => unlink.call(ops, ctx, path, cb));
    if (rename) this.addStatusOp<[string, string]>(native, set, 'rename', (ctx, [from, to], cb) => rename.call(ops, ctx, from, to, cb));
    if (link) this.addStatusOp<[string, string]>(native, set, 'link', (ctx, [from, to], cb) => link.call(ops, ctx, from, to, cb));
    if (symlink) this.addStatusOp<[string, string]>(native, set, 'symlink', (ctx, [target, linkPath], cb) => symlink.call(ops, ctx, target, linkPath, cb));
    if (readlink) {
      set('readlink', (call, ctx, path: string) => {
        const finish = this.answer(native, call, 'readlink', path);
        this.guard('readlink', path, finish, undefined, () => readlink.call(ops, ctx, path, (result, target) => {
          this.guard('readlink', path, finish, undefined, () => {
            const r = this.status('readlink', path, result);
            if (r !== 0) return finish(r);
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
      // args: path, name, value (a copy), flags
      this.addStatusOp<[string, string, Buffer, number]>(native, set, 'setxattr', (ctx, [path, name, value, flags], cb) => setxattr.call(ops, ctx, path, name, value, flags, cb));
    }
    if (removexattr) this.addStatusOp<[string, string]>(native, set, 'removexattr', (ctx, [path, name], cb) => removexattr.call(ops, ctx, path, name, cb));
    if (getxattr) {
      set('getxattr', (call, ctx, path: string, name: string) => {
        const finish = this.answer(native, call, 'getxattr', path);
        this.guard('getxattr', path, finish, undefined, () => getxattr.call(ops, ctx, path, name, (result, value) => {
          this.guard('getxattr', path, finish, undefined, () => {
            const r = this.status('getxattr', path, result);
            if (r !== 0) return finish(r);
            if (!Buffer.isBuffer(value)) throw new TypeError('getxattr answered 0 without a Buffer');
            finish(0, value);
          });
        }));
      });
    }
    if (listxattr) {
      set('listxattr', (call, ctx, path: string) => {
        const finish = this.answer(native, call, 'listxattr', path);
        this.guard('listxattr', path, finish, undefined, () => listxattr.call(ops, ctx, path, (result, names) => {
          this.guard('listxattr', path, finish, undefined, () => {
            const r = this.status('listxattr', path, result);
            if (r !== 0) return finish(r);
            finish(0, encodeNames(names, 'listxattr', true));
          });
        }));
      });
    }
  }
}

type HandlerSetter = (name: OperationName | 'init', handler: (call: NativeCall, ctx: CallerContext, ...args: never[]) => void) => void;
