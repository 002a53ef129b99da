/**
 * `zippy-fs [-f] [-s] [-o opt,...] <mountpoint> <abs-sync-dir>`: the mount command.
 *
 * Lifecycle:
 * 1. parse and validate arguments (exit 2 on a usage error, with a message saying what is wrong);
 * 2. without -f, start a detached copy of itself with -f logging to a file, wait until it reports
 *    the mount ready (or failed), print where the log is, and exit;
 * 3. check the mountpoint: a live mount is refused; a stale one ("Transport endpoint is not
 *    connected") left by a killed zippy-fs is lazily unmounted first;
 * 4. open the store (locked), the file system, start sync (import what is new in the sync dir,
 *    republish a leftover outbox, watch the sync dir), and mount;
 * 5. on SIGINT/SIGTERM: stop sync after publishing everything, write back, make it durable,
 *    unmount, exit 0.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, openSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { FsError, isFsError } from '../errors.js';
import { cacheSizeBytesDefault, cacheSizeBytesMin, mountNodeFlags } from '../limits.js';
import { FileSystem } from '../inode/fs.js';
import { Store } from '../inode/store.js';
import { loadBoxid } from '../sync/boxid.js';
import { defaultConfigDir, ensureEncryptedSyncDir } from '../sync/crypto/index.js';
import { publishDelayMsDefault, SyncEngine } from '../sync/engine.js';
import { gcIntervalMsDefault, keepHistoryMsDefault, keepHistoryMsMax } from '../sync/limits.js';
import { isoOfNs, parseTimeNs } from '../sync/history.js';
import { splitFuseOptions } from './binding.js';
import { fuseOptionsFor, mountBridge, mountpointState, clearStaleMount, type MountHandle } from './bridge.js';

export const exitCodes = { ok: 0, failed: 1, usage: 2, busy: 3 } as const;

const help = `Usage: zippy-fs [-f] [-s] [-o opt[,opt...]] <mountpoint> <abs-sync-dir>

Mounts the zippy-fs file system whose archives live in <abs-sync-dir> at <mountpoint>.

  -f             stay in the foreground and log to stderr (default: detach, log to a file)
  -s             single-threaded FUSE loop
  -o OPTIONS     comma-separated mount options:
       store=DIR        local store directory (default: $XDG_CACHE_HOME/zippy-fs/stores/<id>)
       cache_size=N     block cache size, bytes or with K/M/G suffix (default 64M)
       allow_other      let other users see the mount (needs user_allow_other for non-root)
       uid=N, gid=N     report every file as owned by this uid / gid
       debug            log every FUSE request (implies -f)
       publish_delay_ms=N  group-commit delay before changes are published (default 300)
       boxid_file=PATH  the machine's boxid file (default $XDG_CONFIG_HOME/zippy-fs/boxid)
       keep_history=D   keep old versions this long before GC may retire them: a number
                        with s, m, h, d or w (a bare number is seconds); 0 keeps only what
                        is visible (default 7d)
       gc_interval_ms=N least time between two garbage collections (default 30000)
       at=TIME          read-only history: the tree as it was at TIME (archives published at or
                        before it); unix seconds or ISO 8601 (2026-11-22T23:10:00Z); writes fail
                        with EROFS and nothing is published; the store is temporary
       encrypt          make a new, empty sync dir encrypted (as zippy-key init; this machine
                        becomes its first member); no-op on an encrypted one; refused (exit 2)
                        on a plain sync dir that holds archives: a sync dir stays as created
  -h, --help     this text

Exit codes: 0 unmounted cleanly, 1 failure, 2 usage error, 3 mountpoint busy.`;

export interface MountOptions {
  foreground: boolean;
  singleThreaded: boolean;
  mountpoint: string;
  syncDir: string;
  store: string | undefined;
  cacheSizeBytes: number;
  allowOther: boolean;
  uid: number | undefined;
  gid: number | undefined;
  debug: boolean;
  /** Group-commit delay of the publisher. */
  publishDelayMs: number;
  boxidFile: string | undefined;
  /** History period of the garbage collector. */
  keepHistoryMs: number;
  /** Least ms between two automatic GC runs. */
  gcIntervalMs: number;
  /** History mount (`-o at=`): the time as ns since the epoch; read-only, publishes nothing. */
  at: bigint | undefined;
  /** -o encrypt: initialise a new sync dir encrypted (ensureEncryptedSyncDir). */
  encrypt: boolean;
  /** Options not known here, passed to libfuse as they are. */
  extra: string[];
}

class UsageError extends Error {}

/** Parses argv (without node and script) into mount options; throws UsageError. */
export function parseMountArgs(argv: string[]): MountOptions | 'help' {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, options: { f: { type: 'boolean' }, s: { type: 'boolean' }, o: { type: 'string', multiple: true }, help: { type: 'boolean', short: 'h' } } });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (parsed.values.help === true) return 'help';
  if (parsed.positionals.length !== 2) throw new UsageError(`expected <mountpoint> <abs-sync-dir>, got ${parsed.positionals.length} argument(s)`);
  const [mountpointArg, syncDir] = parsed.positionals as [string, string];
  const options: MountOptions = {
    foreground: parsed.values.f === true,
    singleThreaded: parsed.values.s === true,
    mountpoint: resolve(mountpointArg),
    syncDir,
    store: undefined,
    cacheSizeBytes: cacheSizeBytesDefault,
    allowOther: false,
    uid: undefined,
    gid: undefined,
    debug: false,
    publishDelayMs: publishDelayMsDefault,
    boxidFile: undefined,
    keepHistoryMs: keepHistoryMsDefault,
    gcIntervalMs: gcIntervalMsDefault,
    at: undefined,
    encrypt: false,
    extra: [],
  };
  for (const opt of (parsed.values.o ?? []).flatMap((o) => o.split(',')).filter((o) => o.length > 0)) applyOption(options, opt);
  if (options.debug) options.foreground = true;
  try {
    splitFuseOptions(fuseOptionsFor(options)); // refuses high-level-only libfuse options, bad timeouts
  } catch (e) {
    if (isFsError(e, 'EINVAL')) throw new UsageError(e.message.replace(/^EINVAL: /, ''));
    throw e;
  }
  return options;
}

function applyOption(options: MountOptions, opt: string): void {
  const eq = opt.indexOf('=');
  const key = eq < 0 ? opt : opt.slice(0, eq);
  const value = eq < 0 ? undefined : opt.slice(eq + 1);
  switch (key) {
    case 'store':
      options.store = resolve(requireValue(key, value));
      return;
    case 'cache_size':
      options.cacheSizeBytes = parseSize(requireValue(key, value));
      if (options.cacheSizeBytes < cacheSizeBytesMin) throw new UsageError(`cache_size below ${cacheSizeBytesMin} bytes`);
      return;
    case 'allow_other':
      options.allowOther = true;
      return;
    case 'uid':
    case 'gid': {
      const id = Number(requireValue(key, value));
      if (!Number.isSafeInteger(id) || id < 0) throw new UsageError(`${key} must be a number`);
      options[key] = id;
      return;
    }
    case 'debug':
      options.debug = true;
      return;
    case 'publish_delay_ms':
      options.publishDelayMs = intOption(key, value, 60_000);
      return;
    case 'boxid_file':
      options.boxidFile = resolve(requireValue(key, value));
      return;
    case 'gc_interval_ms':
      options.gcIntervalMs = intOption(key, value, 86_400_000);
      return;
    case 'keep_history':
      options.keepHistoryMs = parseDurationMs(requireValue(key, value));
      return;
    case 'at':
      try {
        options.at = parseTimeNs(requireValue(key, value));
      } catch (e) {
        throw new UsageError((e as Error).message);
      }
      return;
    case 'encrypt':
      if (value !== undefined) throw new UsageError('option encrypt takes no value');
      options.encrypt = true;
      return;
    default:
      options.extra.push(opt);
  }
}

/** The integer value of option `key`, in 0..max, or a usage error naming the range. */
function intOption(key: string, value: string | undefined, max: number): number {
  const n = Number(requireValue(key, value));
  if (!Number.isSafeInteger(n) || n < 0 || n > max) throw new UsageError(`${key} must be 0..${max}`);
  return n;
}

function requireValue(key: string, value: string | undefined): string {
  if (value === undefined || value.length === 0) throw new UsageError(`option ${key} needs a value (${key}=...)`);
  return value;
}

const durationUnitMs: Readonly<Record<string, number>> = { '': 1000, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };

/** Parses a history period: "0", "90" (seconds), "30s", "15m", "12h", "7d", "2w" into ms. */
export function parseDurationMs(text: string): number {
  const m = /^(\d+)([smhdw]?)$/.exec(text);
  const ms = m === null ? NaN : Number(m[1]) * durationUnitMs[m[2]!]!;
  if (!Number.isSafeInteger(ms) || ms > keepHistoryMsMax) throw new UsageError(`keep_history must be a number with s, m, h, d or w (at most ${keepHistoryMsMax / 86_400_000}d), got ${JSON.stringify(text)}`);
  return ms;
}

/** Parses "123", "64K", "64M", "1G" into bytes. */
export function parseSize(text: string): number {
  const match = /^(\d+)([KMG]?)i?B?$/i.exec(text);
  if (match === null) throw new UsageError(`bad size "${text}"`);
  const unit = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 }[match[2]!.toUpperCase() as '' | 'K' | 'M' | 'G'];
  return Number(match[1]) * unit;
}

/** The default store directory of a (sync dir, mountpoint) pair: one store per mount. */
export function defaultStoreDir(syncDir: string, mountpoint: string): string {
  const cache = process.env['XDG_CACHE_HOME'] ?? join(homedir(), '.cache');
  const id = createHash('sha256').update(`${syncDir}\0${mountpoint}`).digest('hex').slice(0, 16);
  return join(cache, 'zippy-fs', 'stores', id);
}

/**
 * The store of a mount. A history mount (`-o at=`) gets its own store per (sync dir, mountpoint,
 * time), emptied when it starts and when it unmounts: it is a cache of that view, never the
 * store of the live mount, which it must not touch.
 */
function storeDirOf(options: MountOptions): string {
  if (options.store !== undefined) return options.store;
  if (options.at === undefined) return defaultStoreDir(options.syncDir, options.mountpoint);
  return defaultStoreDir(options.syncDir, `${options.mountpoint}\0at=${options.at}`);
}

/** True when the store lock file names a process that is alive (not this one). */
function lockHolderAlive(lockPath: string): boolean {
  let pid: number;
  try {
    pid = Number.parseInt(readFileSync(lockPath, 'utf8'), 10);
  } catch {
    return false;
  }
  if (!Number.isSafeInteger(pid) || pid <= 0 || pid === process.pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Marks a store directory as a history mount's (so it may be emptied). */
const historyMarker = 'HISTORY';

/**
 * Empties a history mount's store (its log file stays). A store directory that holds a store but
 * no history marker is refused: `-o store=` must never let a history mount wipe a real store.
 */
function clearHistoryStore(storeDir: string): void {
  if (existsSync(join(storeDir, 'lmdb')) && !existsSync(join(storeDir, historyMarker))) {
    throw new UsageError(`store=${storeDir} holds a store that is not a history mount's; give at= mounts their own store directory`);
  }
  // A store another live process holds is left alone: Store.open then refuses it (LOCKED).
  if (lockHolderAlive(join(storeDir, 'LOCK'))) return;
  for (const part of ['lmdb', 'segments', 'LOCK']) rmSync(join(storeDir, part), { recursive: true, force: true });
  mkdirSync(storeDir, { recursive: true });
  writeFileSync(join(storeDir, historyMarker), 'zippy-fs history mount store: emptied at every at= mount\n');
}

function validate(options: MountOptions): void {
  if (!options.syncDir.startsWith('/')) throw new UsageError(`the sync dir must be an absolute path: ${options.syncDir}`);
  if (!existsSync(options.syncDir)) throw new UsageError(`the sync dir does not exist: ${options.syncDir}`);
  if (!statSync(options.syncDir).isDirectory()) throw new UsageError(`the sync dir is not a directory: ${options.syncDir}`);
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

function log(message: string): void {
  process.stderr.write(`${new Date().toISOString()} zippy-fs[${process.pid}]: ${message}\n`);
}

/** Starts a detached foreground copy with its output in a log file; resolves with its exit status. */
async function detach(options: MountOptions, argv: string[]): Promise<number> {
  const storeDir = storeDirOf(options);
  mkdirSync(storeDir, { recursive: true });
  const logPath = join(storeDir, 'zippy-fs.log');
  const logFd = openSync(logPath, 'a');
  const child = spawn(process.execPath, [...mountNodeFlags, process.argv[1]!, '-f', ...argv], { detached: true, stdio: ['ignore', logFd, logFd, 'ipc'] });
  return new Promise((resolvePromise) => {
    child.on('message', (message) => {
      if (message === 'ready') {
        process.stdout.write(`zippy-fs: mounted ${options.mountpoint} (log: ${logPath})\n`);
        child.disconnect();
        child.unref();
        resolvePromise(exitCodes.ok);
      }
    });
    child.on('exit', (code) => {
      process.stderr.write(`zippy-fs: mount failed (exit ${code ?? 'signal'}); see ${logPath}\n`);
      resolvePromise(code === null || code === 0 ? exitCodes.failed : code);
    });
  });
}

/** Runs the mount in this process until a signal unmounts it. */
async function runForeground(options: MountOptions): Promise<number> {
  const state = await mountpointState(options.mountpoint);
  if (state === 'none' && !isDirectory(options.mountpoint)) throw new UsageError(`the mountpoint does not exist or is not a directory: ${options.mountpoint}`);
  if (state === 'live') {
    log(`${options.mountpoint} is already mounted; unmount it first with: fusermount -u ${options.mountpoint}`);
    return exitCodes.busy;
  }
  if (state === 'stale') {
    log(`${options.mountpoint} was left mounted by a process that died ("Transport endpoint is not connected"); cleaning it up`);
    await clearStaleMount(options.mountpoint);
  }
  const storeDir = storeDirOf(options);
  if (options.at !== undefined) clearHistoryStore(storeDir);
  const store = Store.open(storeDir);
  for (const line of store.openReport.messages) log(line);
  const fs = new FileSystem(store, { cacheSizeBytes: options.cacheSizeBytes });
  let handle: MountHandle | undefined;
  let sync: SyncEngine | undefined;
  try {
    const boxid = loadBoxid(options.boxidFile);
    const started = Date.now();
    const history = options.at === undefined ? { watch: true } : { watch: false, readOnly: true, asOfNs: options.at };
    sync = await SyncEngine.start(fs, { syncDir: options.syncDir, boxid, publishDelayMs: options.publishDelayMs, log, ...history,
      gc: { keepHistoryMs: options.keepHistoryMs }, gcIntervalMs: options.gcIntervalMs,
      // GC waits while the mount serves requests (a 1 GiB store's plan holds the JS thread 0.2–1.8 s).
      gcYield: { activity: () => handle?.requestCount() ?? 0 } });
    log(`sync ready in ${Date.now() - started} ms (boxid ${boxid})${options.at === undefined ? '' : `; read-only view as of ${isoOfNs(options.at)}`}`);
    // A history mount is read-only in the kernel (every write is EROFS before it reaches us).
    handle = await mountBridge(fs, options.at === undefined ? options : { ...options, extra: [...options.extra, 'ro'] }, log);
  } catch (e) {
    await sync?.stop().catch((err: unknown) => log(`sync stop failed: ${String(err)}`));
    await fs.close();
    await store.close();
    throw e;
  }
  log(`mounted ${options.mountpoint} (sync dir ${options.syncDir}, store ${storeDir})`);
  process.send?.('ready');
  return new Promise((resolvePromise) => {
    let stopping = false;
    const stop = async (signal: string): Promise<void> => {
      if (stopping) return;
      stopping = true;
      log(`${signal}: writing back and unmounting`);
      try {
        // A failed final publish (e.g. no key yet for an encrypted sync dir) keeps the changes in
        // the store's outbox and is logged by the engine; the unmount itself goes on cleanly.
        const report = await sync?.stop();
        await fs.close();
        await handle.unmount();
        await store.close();
        if (options.at !== undefined && options.store === undefined) clearHistoryStore(storeDir);
        const left = report?.unpublishedCount ?? 0;
        log(left === 0 ? 'unmounted cleanly' : `unmounted cleanly; ${left} change(s) NOT published (kept in the store, published at the next mount)`);
        // No key yet (or revoked) is a state the user chose, exit 0; any other failed publish is a failure.
        resolvePromise(left > 0 && report?.code !== 'BAD_KEY' ? exitCodes.failed : exitCodes.ok);
      } catch (e) {
        log(`unmount failed: ${String(e)}`);
        resolvePromise(exitCodes.failed);
      }
    };
    process.on('SIGINT', () => void stop('SIGINT'));
    process.on('SIGTERM', () => void stop('SIGTERM'));
  });
}

/**
 * -o encrypt, before anything is mounted (so a refusal reaches the terminal with exit 2, also
 * without -f; the detached child repeats it as a no-op): a new or empty sync dir becomes
 * encrypted, an encrypted one stays as it is, a plain one with archives is refused.
 */
function encryptSyncDir(options: MountOptions): void {
  try {
    const { initialised } = ensureEncryptedSyncDir(options.syncDir, defaultConfigDir());
    if (initialised !== undefined) {
      log(`-o encrypt: ${options.syncDir} is now an encrypted sync dir (filesystem ${initialised.fsid}); this machine `
        + `(boxid ${initialised.boxid}, fingerprint ${initialised.fingerprint}) is its first member. Add machines with zippy-key request / grant.`);
    }
  } catch (e) {
    if (e instanceof FsError && e.code === 'BAD_INPUT') {
      throw new UsageError(`-o encrypt: ${options.syncDir} is a plain sync dir (${e.message}); a sync dir stays plain or encrypted for life. `
        + 'Mount it without -o encrypt, or give -o encrypt a new, empty sync dir.');
    }
    throw e;
  }
}

/** Entry point: returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  let options;
  try {
    options = parseMountArgs(argv);
    if (options === 'help') {
      process.stdout.write(`${help}\n`);
      return exitCodes.ok;
    }
    validate(options);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`zippy-fs: ${e.message}\nTry 'zippy-fs --help'.\n`);
      return exitCodes.usage;
    }
    throw e;
  }
  try {
    if (options.encrypt) encryptSyncDir(options);
    return options.foreground ? await runForeground(options) : await detach(options, argv);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`zippy-fs: ${e.message}\n`);
      return exitCodes.usage;
    }
    if (isFsError(e, 'LOCKED')) {
      log(`${e.message} (is another zippy-fs using this store? pass -o store=DIR for another one)`);
      return exitCodes.busy;
    }
    log(`mount failed: ${(e as Error).stack ?? String(e)}`);
    return exitCodes.failed;
  }
}

process.exit(await main(process.argv.slice(2)));
