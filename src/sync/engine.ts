/**
 * The sync engine of one mount: scheduling (group commit, inotify, rescan), the publisher and the
 * importer over the inode port. The reconciler (reconcile.ts) applies merged versions to the local
 * tree; archive-reader.ts serves the lazy block reads.
 *
 * Data flow (docs/ARCHITECTURE.md, "Sync"):
 * - publish: a change commits an outbox row in its own transaction; a group-commit timer fires
 *   `publishDelayMs` after the first unpublished change (never reset, so the delay is bounded; 1 s
 *   while a burst such as `tar x` goes on);
 *   the publisher writes back dirty files, turns each outbox inode into versions of its paths
 *   (tombstones for names it lost, copy runs against the version it was based on so unchanged
 *   blocks and renames ship no data), writes one archive (zip, then idx) with the blocks the sync
 *   dir does not have yet, and then commits catalog, block index, versions and the cleared outbox
 *   rows in one transaction. A crash before that transaction leaves the outbox full: the next
 *   mount publishes again (the orphan archive, if its idx was written, is imported as a peer's).
 *   The per-block CPU work of a large publish (block ids before drafting, CRC-32 and deflate while
 *   writing the zip) runs on the block worker thread a batch at a time (block-worker.ts), so FUSE
 *   requests are served between batches.
 * - import: inotify (fs.watch) and a periodic rescan find new complete archives; each idx is
 *   decoded and checked (scanSyncDir), waits until every version it copies from and every block
 *   it names is known, and then merges its versions into the per-path records; the reconciler
 *   installs the visible result into the local tree with archive block pointers (lazy fetch).
 * - Local unpublished changes are published before an import is applied, and a path whose local
 *   inode changed again meanwhile is left alone until the next publish has made it a version.
 *
 * Every step runs on one queue, so publish and import never interleave.
 */
import { createHash } from 'node:crypto';
import { readFileSync, watch, type FSWatcher } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { FsError, isFsError } from '../errors.js';
import type { FileSystem } from '../inode/fs.js';
import { SyncPort, type BlockPointer, type PortNode } from '../inode/sync-port.js';
import { scanSyncDir, writeArchive, type CompleteArchive } from './archive-store.js';
import { type BlockRun, blockRunsFromIds, blockSlotCount, type FileVersion, type Idx, resolveBlockList, type Stamp } from './idx.js';
import { archiveBlockCountMax, blockBatchCountMax, blockBatchSizeMaxBytes, blockIdBytes, blockWorkerBlockCountMin, idxSizeMaxBytes } from './limits.js';
import { latestHead, stampString, type VersionMeta } from './merge.js';
import { newArchiveName } from './names.js';
import { SyncState, type Identity } from './state.js';
import { writeSinkFile, type BlockLocation, type BlockPayload, type ZipSink } from './zipfile.js';
import { BlockWorker, blockZipProducer, pipelined, type BlockWorkerOptions } from './block-worker.js';
import { PlainUnion } from './plain.js';
import { ArchiveBlockReader } from './archive-reader.js';
import { depth, isZeroId, parentOf, Reconciler, sameStamp } from './reconcile.js';
import { blockIdOf, plainBlockIdKey } from './block-id.js';
import { type Keyring, SealedReaderSync, defaultConfigDir, loadKeyring, readSealedFile, sealFile, writeSealedFile } from './crypto/index.js';
import { ArchiveIndex } from './archive-index.js';
import { GarbageCollector, type GcOptions, type GcReport } from './gc.js';
import { gcDeferMaxMsDefault, gcIntervalMsDefault, gcQuietMsDefault } from './limits.js';

/** Default group-commit delay. */
export const publishDelayMsDefault = 300;
/**
 * During a burst (the last publish carried at least burstFileCountMin changed files, as in `tar x`)
 * the group-commit delay grows to this bound, so a long burst makes one archive a second instead
 * of three; a quiet edit is still published after publishDelayMs.
 */
const burstPublishDelayMs = 1000;
const burstFileCountMin = 64;
/** A file written within this long, still open and not fsynced, counts as being written. */
const writingQuietMs = 2000;
/** Longest a file being written waits before it is published anyway. */
const deferMaxMs = 30_000;
/** Default fallback rescan period (inotify is the fast path). */
export const rescanMsDefault = 2000;
/** Stamp counters reserved (persisted) at a time by nextStamp. */
const stampReserveCount = 1024;
/** Versions per archive and new blocks per archive before the publisher starts another archive. */
const archiveVersionCountSoftMax = 100_000;
const archiveBlockCountSoftMax = Math.min(200_000, archiveBlockCountMax);
export interface SyncOptions {
  readonly syncDir: string;
  /** The machine's boxid (32 hex). */
  readonly boxid: string;
  readonly publishDelayMs?: number;
  /** Watch the sync dir and rescan periodically (mounts); off for in-process tests. */
  readonly watch?: boolean;
  readonly rescanMs?: number;
  readonly compressionLevel?: number;
  readonly log?: (message: string) => void;
  /** The zippy-fs config directory holding this machine's key pair (encrypted sync dirs); default defaultConfigDir(). */
  readonly configDir?: string;
  /** Garbage collection: history period (`-o keep_history=`) and repack thresholds. */
  readonly gc?: GcOptions;
  /** Least ms between automatic GC runs after publishes and imports (default 30 s); `false`: only gcNow(). */
  readonly gcIntervalMs?: number | false;
  /**
   * Keeps automatic GC out of the way of the mount's own work (docs/ARCHITECTURE.md "GC", When).
   * `activity` is a number that changes with every request the mount serves (the FUSE request
   * count): a run that falls due while it keeps changing waits until it stood still for `quietMs`,
   * but at most `deferMaxMs` after it was due. Absent (tools, in-process tests): runs when due.
   */
  readonly gcYield?: { readonly activity: () => number; readonly quietMs?: number; readonly deferMaxMs?: number };
  /** Wall clock in ms for archive creation times and the history period (tests move it); default Date.now. */
  readonly now?: () => number;
  /**
   * History views (`zippy-fs -o at=`, `zippy-export --at`): import only archives whose idx header
   * `createdNs` (the publish time) is at or before this time, and plain zips whose file mtime is.
   */
  readonly asOfNs?: bigint;
  /** Never publish (history views, exports): the outbox is never read and nothing is written to the sync dir. */
  readonly readOnly?: boolean;
  /** The publisher's block worker (tests substitute a thread that fails); default: block-worker-thread.js. */
  readonly blockWorker?: BlockWorkerOptions;
}

/** The keys of the sync dir as last loaded: plain, encrypted with keys, or encrypted without a usable key. */
type KeyState = { readonly kind: 'plain' } | { readonly kind: 'keys'; readonly keyring: Keyring } | { readonly kind: 'no-key'; readonly error: FsError };

export interface PublishReport {
  readonly archives: readonly { name: string; zipSizeBytes: number; idxSizeBytes: number }[];
  readonly versionCount: number;
  readonly blockCount: number;
}

/** What stop() could not do: changes it could not publish stay in the store's outbox. */
export interface StopReport {
  /** Outbox rows left unpublished (0 when everything was published). */
  readonly unpublishedCount: number;
  /** Why the final publish failed (the error's message), when it did. */
  readonly reason: string | undefined;
  /** The FsError code of that failure (BAD_KEY: no usable key, an expected state), when it was one. */
  readonly code: string | undefined;
}

export interface ImportReport {
  readonly imported: readonly string[];
  readonly waiting: readonly string[];
}

interface Draft {
  version: FileVersion;
  flat: Uint8Array;
  ino: number | undefined;
  /** A file's block map as drafted (blocksToShip, in the same synchronous stretch, reads it instead of the table again). */
  pointers: ReadonlyMap<number, BlockPointer> | undefined;
}



function sameSlot(a: Uint8Array, b: Uint8Array | undefined, slot: number): boolean {
  if (b === undefined || (slot + 1) * blockIdBytes > b.length) return false;
  return Buffer.compare(a.subarray(slot * blockIdBytes, (slot + 1) * blockIdBytes), b.subarray(slot * blockIdBytes, (slot + 1) * blockIdBytes)) === 0;
}

/** Block runs for `flat`: copy runs where it equals `source`'s list slot for slot, ids elsewhere. */
export function deltaRuns(flat: Uint8Array, source: { stamp: Stamp; flat: Uint8Array } | undefined): BlockRun[] {
  if (source === undefined) return blockRunsFromIds(flat);
  const slots = flat.length / blockIdBytes;
  const runs: BlockRun[] = [];
  let slot = 0;
  while (slot < slots) {
    const copy = !isZeroId(flat, slot) && sameSlot(flat, source.flat, slot);
    const hole = isZeroId(flat, slot);
    let end = slot + 1;
    while (end < slots) {
      const c = !isZeroId(flat, end) && sameSlot(flat, source.flat, end);
      const h = isZeroId(flat, end);
      if (c !== copy || h !== hole) break;
      end++;
    }
    if (copy) runs.push({ kind: 'copy', blockIndex: slot, blockCount: end - slot, source: source.stamp, sourceBlockIndex: slot });
    else if (!hole) runs.push({ kind: 'ids', blockIndex: slot, ids: new Uint8Array(flat.subarray(slot * blockIdBytes, end * blockIdBytes)) });
    slot = end;
  }
  return runs;
}

function metaOf(v: FileVersion): VersionMeta {
  return {
    path: v.path, type: v.type, mode: v.mode, uid: v.uid, gid: v.gid, rdev: v.rdev, mtimeNs: v.mtimeNs.toString(),
    sizeBytes: v.sizeBytes, symlinkTarget: v.symlinkTarget, xattrs: v.xattrs.map((x) => [x.name, Uint8Array.from(x.value)] as const),
    deleted: v.deleted, stamp: v.stamp, base: v.base,
  };
}



/** A block of a local file the publisher reads. */
interface LocalBlock {
  readonly ino: number;
  readonly blockIndex: number;
  readonly pointer: BlockPointer;
}

/** Splits `items` into batches for the block worker: at most blockBatchCountMax blocks and blockBatchSizeMaxBytes each. */
function* blockBatches<T extends LocalBlock>(items: Iterable<T>): Generator<T[]> {
  let batch: T[] = [];
  let batchBytes = 0;
  for (const item of items) {
    if (batch.length >= blockBatchCountMax || batchBytes + item.pointer.lengthBytes > blockBatchSizeMaxBytes) {
      yield batch;
      batch = [];
      batchBytes = 0;
    }
    batch.push(item);
    batchBytes += item.pointer.lengthBytes;
  }
  if (batch.length > 0) yield batch;
}

function isUnknownId(id: Uint8Array): boolean {
  return id.every((b) => b === 0);
}

/** Sends SIGUSR1 to the sync daemon named by its pid file, if one runs (design section 6). */
function signalSyncDaemon(log: (message: string) => void): void {
  const cache = process.env['XDG_CACHE_HOME'] !== undefined && process.env['XDG_CACHE_HOME'] !== '' ? process.env['XDG_CACHE_HOME'] : join(homedir(), '.cache');
  let pid: number;
  try {
    pid = Number.parseInt(readFileSync(join(cache, 'zippy-fs', 'sync.pid'), 'utf8'), 10);
  } catch {
    return;
  }
  if (!Number.isSafeInteger(pid) || pid <= 1) return;
  try {
    process.kill(pid, 'SIGUSR1');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ESRCH') log(`cannot signal the sync daemon ${pid}: ${String(e)}`);
  }
}



export class SyncEngine {
  readonly port: SyncPort;
  readonly state: SyncState;
  /** The id in this store's version stamps: derived from the boxid and the store, so two mounts of one machine never mint equal stamps. */
  readonly replicaId: string;
  private readonly syncDir: string;
  /** The machine's boxid: written as the idx header's writer, mapped from the replica id for conflict names. */
  private readonly boxid: string;
  private readonly publishDelayMs: number;
  /** The local store's directory (named in messages about unpublished changes). */
  private readonly storeDir: string;
  private readonly log: (message: string) => void;
  private readonly compressionLevel: number;
  private queue: Promise<unknown> = Promise.resolve();
  private publishTimer: NodeJS.Timeout | undefined;
  /** Changed files (outbox rows) the last publish carried: decides the next group-commit delay. */
  private lastPublishFileCount = 0;
  /** When each outbox inode that is still being written was first held back. */
  private readonly deferredSince = new Map<number, number>();
  private importTimer: NodeJS.Timeout | undefined;
  private rescanTimer: NodeJS.Timeout | undefined;
  private watcher: FSWatcher | undefined;
  private readonly reader: ArchiveBlockReader;
  readonly reconciler: Reconciler;
  private readonly warned = new Set<string>();
  private stopped = false;
  private readonly signalDaemon: boolean;
  readonly plain: PlainUnion;
  private readonly configDir: string;
  private keyState: KeyState = { kind: 'plain' };
  readonly gc: GarbageCollector;
  private readonly gcIntervalMs: number | false;
  private gcTimer: NodeJS.Timeout | undefined;
  private readonly gcYield: { readonly activity: () => number; readonly quietMs: number; readonly deferMaxMs: number } | undefined;
  /** `gcYield.activity()` when it was last looked at. */
  private gcSeenActivity: number | undefined;
  private gcRuns = 0;
  /** The first automatic run comes a gc interval after start (start-up is busy importing). */
  private lastGcMs = Date.now();
  private readonly now: () => number;
  /** Archives the last import left waiting (GC keeps what they refer to). */
  private waitingArchives: CompleteArchive[] = [];
  private readonly asOfNs: bigint | undefined;
  private readonly readOnly: boolean;
  /** The highest stamp counter issued or recorded by this process (nextStamp). */
  private highestCounter = 0;
  /** The persisted counter: every counter up to it may have been issued (0: nothing reserved yet). */
  private reservedCounter = 0;
  /** Block ids and zip entry data of large publishes, off the JS thread (started at the first use). */
  private readonly blockWorker: BlockWorker;

  private constructor(fs: FileSystem, options: SyncOptions) {
    this.port = new SyncPort(fs);
    this.state = new SyncState(this.port);
    this.syncDir = options.syncDir;
    this.boxid = options.boxid;
    this.publishDelayMs = options.publishDelayMs ?? publishDelayMsDefault;
    this.log = options.log ?? ((m) => process.emitWarning(`zippy-fs sync: ${m}`));
    this.compressionLevel = options.compressionLevel ?? 1;
    this.signalDaemon = options.watch === true;
    this.asOfNs = options.asOfNs;
    this.readOnly = options.readOnly === true;
    this.blockWorker = new BlockWorker(options.blockWorker);
    const storeId = fs.store.dir;
    this.storeDir = fs.store.dir;
    this.replicaId = createHash('sha256').update(`${options.boxid}\0${storeId}`).digest('hex').slice(0, 32);
    this.plain = new PlainUnion(this.syncDir, (m) => this.warnOnce(m));
    this.configDir = options.configDir ?? defaultConfigDir();
    this.reader = new ArchiveBlockReader(this.syncDir, this.state,
      () => (this.keyState.kind === 'keys' ? this.keyState.keyring.keys : this.keyState.kind === 'no-key' ? new Map() : undefined),
      (blockId) => this.gc.index.locations(blockId));
    this.reconciler = new Reconciler(this.port, this.state, this.plain, this.log);
    this.port.setExternalBlockReader({ readBlock: (ptr, ino, blockIndex) => this.reader.readBlock(ptr, ino, blockIndex) });
    this.port.onOutbox(() => this.publishSoon());
    this.now = options.now ?? Date.now;
    this.gcIntervalMs = options.gcIntervalMs ?? gcIntervalMsDefault;
    this.gcYield = options.gcYield === undefined ? undefined
      : { activity: options.gcYield.activity, quietMs: options.gcYield.quietMs ?? gcQuietMsDefault, deferMaxMs: options.gcYield.deferMaxMs ?? gcDeferMaxMsDefault };
    this.gc = new GarbageCollector({
      syncDir: this.syncDir, boxid: this.boxid, replicaId: this.replicaId, port: this.port, state: this.state, index: new ArchiveIndex(this.port, this.state),
      reader: this.reader, compressionLevel: this.compressionLevel, log: this.log, now: this.now,
      prepareBlocks: (blocks, level) => this.blockWorker.prepare(blocks, level),
      keyring: () => {
        this.loadKeys();
        if (this.keyState.kind === 'no-key') throw this.keyState.error;
        return this.keyState.kind === 'keys' ? this.keyState.keyring : undefined;
      },
      waiting: () => this.waitingArchives,
    }, options.gc);
  }

  /** Starts sync for `fs`: imports what is new in the sync dir, republishes a leftover outbox, then watches. */
  static async start(fs: FileSystem, options: SyncOptions): Promise<SyncEngine> {
    const engine = new SyncEngine(fs, options);
    engine.loadKeys();
    await engine.importNow();
    if (engine.port.outboxCount() > 0) {
      try {
        await engine.publishNow();
      } catch (e) {
        // No key yet for an encrypted sync dir: mount anyway; the outbox waits for a grant.
        if (!isFsError(e, 'BAD_KEY')) throw e;
        engine.warnOnce(`${engine.port.outboxCount()} unpublished change(s) wait in the outbox until this machine has a key: ${e.message}`);
        engine.publishSoon(Math.max(engine.publishDelayMs, rescanMsDefault));
      }
    }
    if (options.watch === true) engine.startWatching(options.rescanMs ?? rescanMsDefault);
    return engine;
  }

  private startWatching(rescanMs: number): void {
    try {
      this.watcher = watch(this.syncDir, { persistent: false }, () => this.importSoon());
      this.watcher.on('error', (e) => this.log(`watching ${this.syncDir} failed: ${String(e)}`));
    } catch (e) {
      this.log(`cannot watch ${this.syncDir} (${String(e)}); relying on the periodic rescan`);
    }
    this.rescanTimer = setInterval(() => this.importSoon(), rescanMs);
    this.rescanTimer.unref();
  }

  /** Schedules a publish `delayMs` after the first unpublished change (default publishDelayMs, in a burst burstPublishDelayMs). */
  publishSoon(delayMs?: number): void {
    if (this.publishTimer !== undefined || this.stopped) return;
    const inBurst = this.lastPublishFileCount >= burstFileCountMin;
    const delay = delayMs ?? (inBurst ? Math.max(this.publishDelayMs, burstPublishDelayMs) : this.publishDelayMs);
    this.publishTimer = setTimeout(() => {
      this.publishTimer = undefined;
      void this.enqueue(() => this.publish(false)).catch((e: unknown) => {
        // Without a key the outbox waits for a grant: say so once, and retry at the rescan pace
        // (a grant in keys/ is seen by the next load) instead of every publishDelayMs.
        if (isFsError(e, 'BAD_KEY')) {
          this.warnOnce(`publish waits until this machine has a key (changes stay in the outbox): ${e.message}`);
          this.publishSoon(Math.max(this.publishDelayMs, rescanMsDefault));
          return;
        }
        this.log(`publish failed (will retry): ${String(e)}`);
        this.publishSoon();
      });
    }, delay);
    this.publishTimer.unref();
  }

  private importSoon(): void {
    if (this.importTimer !== undefined || this.stopped) return;
    this.importTimer = setTimeout(() => {
      this.importTimer = undefined;
      void this.importNow().catch((e: unknown) => this.log(`import failed (will retry): ${String(e)}`));
    }, 20);
    this.importTimer.unref();
  }

  private enqueue<T>(task: () => Promise<T>): Promise<T> {
    const run = this.queue.then(task, task);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** Publishes every unpublished change now. */
  publishNow(): Promise<PublishReport> {
    return this.enqueue(() => this.publish(true));
  }

  /** Runs garbage collection (and a repack when due) now; docs/ARCHITECTURE.md "GC". */
  gcNow(): Promise<GcReport> {
    return this.enqueue(async () => {
      // A history view or an export writes nothing to the sync dir: no rm-log, no repack.
      if (this.readOnly) return { retired: [], retiring: 0, repacked: undefined, archiveCount: this.state.archiveNames().size, pauses: 0 };
      this.lastGcMs = Date.now();
      const report = await this.gc.collect();
      this.gcRuns++;
      if (report.retiring > 0) this.gcSoon(this.gc.retireGraceMs); // deletes them once the grace period is over
      return report;
    });
  }

  /** Completed GC runs (automatic or gcNow). */
  get gcRunCount(): number {
    return this.gcRuns;
  }

  /** Schedules a GC run after a publish or an import, at most one per gcIntervalMs (and not before `minDelayMs`). */
  private gcSoon(minDelayMs = 0): void {
    if (this.gcTimer !== undefined || this.stopped || this.gcIntervalMs === false || this.readOnly) return;
    this.armGc(Math.max(minDelayMs, this.lastGcMs + this.gcIntervalMs - Date.now()), undefined);
  }

  /**
   * Runs GC after `delayMs`, or later while the mount is busy: a plan reads every block of every
   * kept version on the JS thread (0.2 s for a 1 GiB store, 1.8 s with its LMDB pages not cached),
   * and every request waits for its slices meanwhile. `dueMs`: when the run first fell due.
   */
  private armGc(delayMs: number, dueMs: number | undefined): void {
    this.gcTimer = setTimeout(() => {
      this.gcTimer = undefined;
      if (this.stopped) return;
      const due = dueMs ?? Date.now();
      if (this.gcYield !== undefined && Date.now() - due < this.gcYield.deferMaxMs) {
        const activity = this.gcYield.activity();
        if (activity !== this.gcSeenActivity) {
          this.gcSeenActivity = activity;
          this.armGc(this.gcYield.quietMs, due);
          return;
        }
      }
      void this.gcNow().catch((e: unknown) => this.log(`garbage collection failed (will retry): ${String(e)}`));
    }, delayMs);
    this.gcTimer.unref();
  }

  /** Imports every new complete archive now. */
  importNow(): Promise<ImportReport> {
    return this.enqueue(() => this.import());
  }

  /**
   * Stops watching, publishes what is left, and closes the archive readers. When that last
   * publish fails (no key for an encrypted sync dir, a full sync dir, ...), nothing is lost: the
   * outbox is only cleared in the transaction that records a written archive, so the changes stay
   * in the store and the next start on this store publishes them. The failure is logged and
   * returned, and the stop completes (the mount can still close and unmount cleanly).
   */
  async stop(): Promise<StopReport> {
    this.stopped = true;
    for (const t of [this.publishTimer, this.importTimer, this.gcTimer]) if (t !== undefined) clearTimeout(t);
    if (this.rescanTimer !== undefined) clearInterval(this.rescanTimer);
    this.watcher?.close();
    let reason: string | undefined;
    let code: string | undefined;
    try {
      await this.enqueue(() => this.publish(true));
    } catch (e) {
      reason = e instanceof Error ? e.message : String(e);
      code = isFsError(e) ? e.code : undefined;
    }
    await this.queue;
    await this.blockWorker.close();
    this.reader.close();
    this.plain.close();
    const unpublishedCount = reason === undefined ? 0 : this.port.outboxCount();
    if (reason !== undefined) {
      this.log(`${unpublishedCount} change(s) could not be published to ${this.syncDir} at unmount: ${reason}. `
        + `They stay in the outbox of the local store ${this.storeDir} and are published at the next mount of that store`
        + `${code === 'BAD_KEY' ? ' once this machine has a key' : ''}.`);
    }
    return { unpublishedCount, reason, code };
  }

  /** Stops everything without publishing (a killed process, for tests). */
  async abandon(): Promise<void> {
    this.stopped = true;
    for (const t of [this.publishTimer, this.importTimer, this.gcTimer]) if (t !== undefined) clearTimeout(t);
    if (this.rescanTimer !== undefined) clearInterval(this.rescanTimer);
    this.watcher?.close();
    await this.queue.catch(() => undefined);
    await this.blockWorker.close();
    this.reader.close();
  }

  /**
   * (Re)loads the keys of the sync dir (at start, and before each publish and import, so a grant
   * or a revoke in keys/ takes effect without a remount). An encrypted dir this machine holds no
   * key for is warned about once and then leaves every archive out; it never falls back to plain.
   */
  private loadKeys(): void {
    try {
      const keyring = loadKeyring(this.syncDir, this.configDir);
      this.keyState = keyring.encrypted ? { kind: 'keys', keyring } : { kind: 'plain' };
    } catch (e) {
      if (!isFsError(e, 'BAD_KEY')) throw e;
      this.keyState = { kind: 'no-key', error: e };
      this.warnOnce(`encrypted sync dir without a usable key, archives are left out: ${e.message}`);
    }
  }

  private get blockIdKey(): Buffer {
    return this.keyState.kind === 'keys' ? this.keyState.keyring.blockIdKey : plainBlockIdKey;
  }

  private warnOnce(message: string): void {
    if (this.warned.has(message)) return;
    this.warned.add(message);
    this.log(message);
  }

  // ================================================================ publishing

  /**
   * A new stamp: its counter is above every counter this store issued or recorded (Lamport).
   * Counters are handed out from a persisted reservation of stampReserveCount at a time, so a
   * publish of many files commits the counter once, not once per version; a restart skips what
   * was left of the reservation (gaps are harmless, reuse would not be).
   */
  private nextStamp(): Stamp {
    const persisted = this.state.counter();
    const counter = Math.max(this.highestCounter, persisted > this.reservedCounter ? persisted : 0) + 1;
    if (counter > this.reservedCounter) {
      const reserved = counter + stampReserveCount - 1;
      this.port.transaction(() => this.state.setCounter(reserved));
      this.reservedCounter = reserved;
    }
    this.highestCounter = counter;
    return { counter, boxid: this.replicaId };
  }

  private async publish(all: boolean): Promise<PublishReport> {
    if (this.readOnly) return { archives: [], versionCount: 0, blockCount: 0 };
    this.port.writeBackAll();
    const rows = this.publishableRows(all);
    this.lastPublishFileCount = rows.length;
    if (rows.length === 0) return { archives: [], versionCount: 0, blockCount: 0 };
    this.loadKeys();
    // Never publish plaintext into an encrypted dir: the outbox waits until this machine has a key.
    if (this.keyState.kind === 'no-key') throw this.keyState.error;
    // A revoked machine still holds the old generations, and members still open them (nothing
    // tells them when an archive was written); an honest one stops publishing.
    if (this.keyState.kind === 'keys' && this.keyState.keyring.revoked) {
      throw new FsError('BAD_KEY', `this machine (boxid ${this.keyState.keyring.boxid}) was revoked: it no longer publishes to this sync dir; `
        + 'its changes stay local', this.syncDir);
    }
    await this.rememberMissingIds(rows.map((r) => r.ino));
    const { drafts, lost } = this.draftVersions(rows.map((r) => r.ino));
    const archives: { name: string; zipSizeBytes: number; idxSizeBytes: number }[] = [];
    let blockCount = 0;
    const chunks = this.chunk(drafts);
    for (const [i, chunk] of chunks.entries()) {
      const last = i === chunks.length - 1;
      const written = await this.writeChunk(chunk.drafts, chunk.blocks, last ? rows : [], last ? lost : []);
      if (written !== undefined) archives.push(written);
      blockCount += chunk.blocks.size;
    }
    if (chunks.length === 0) {
      this.port.transaction(() => {
        this.updateIdentities([], lost);
        this.port.clearOutbox(rows);
      });
    }
    if (archives.length > 0 && this.signalDaemon) signalSyncDaemon(this.log);
    if (archives.length > 0) this.gcSoon();
    // A published path whose only head is the version just published shows it already (it was
    // drafted from the local tree): only paths where other versions met it need reconciling.
    const paths = new Set(drafts.filter((d) => !this.soleHead(d.version)).map((d) => d.version.path));
    for (const p of this.reconciler.takeDeferred()) paths.add(p);
    this.reconciler.reconcile(paths);
    return { archives, versionCount: drafts.length, blockCount };
  }

  /** True when `v` is the only head of its path and the path has no conflict copies. */
  private soleHead(v: FileVersion): boolean {
    const record = this.state.pathRecord(v.path);
    return record.versions.length === 1 && sameStamp(record.versions[0]!.stamp, v.stamp) && record.copies.length === 0;
  }

  /**
   * The outbox rows to publish now. A file still being written (open, written within
   * writingQuietMs, not fsynced since) waits, so a long write is published once, after close or
   * fsync, instead of being re-walked every publishDelayMs; it waits at most deferMaxMs, so a
   * file that is never closed is still published. Waiting rows schedule another publish.
   */
  private publishableRows(all: boolean): { ino: number; sequence: number }[] {
    const now = Date.now();
    const rows = this.port.outbox();
    const ready = rows.filter((row) => {
      if (all || !this.port.beingWritten(row.ino, writingQuietMs) || this.lostName(row.ino)) {
        this.deferredSince.delete(row.ino);
        return true;
      }
      const since = this.deferredSince.get(row.ino) ?? now;
      this.deferredSince.set(row.ino, since);
      if (now - since < deferMaxMs) return false;
      this.deferredSince.delete(row.ino);
      return true;
    });
    if (ready.length < rows.length) this.publishSoon();
    return ready;
  }

  /**
   * True when `ino` no longer has a name it was published under (unlinked or renamed away).
   * Such a file is published at once even while being written: its tombstone must go out with
   * its parent directory's change, or the reconciler, seeing the parent published and the name
   * still live in the versions, would install the old version at the name again.
   */
  private lostName(ino: number): boolean {
    const ids = this.state.identities(ino);
    if (ids.length === 0) return false;
    const paths = this.port.node(ino) === undefined ? [] : this.port.pathsOf(ino);
    return ids.some((id) => !paths.includes(id.path));
  }

  /** Splits drafts into archives under the soft limits; the blocks each must carry. */
  private chunk(drafts: Draft[]): { drafts: Draft[]; blocks: Map<string, { ino: number; blockIndex: number; pointer: BlockPointer }> }[] {
    const chunks: { drafts: Draft[]; blocks: Map<string, { ino: number; blockIndex: number; pointer: BlockPointer }> }[] = [];
    let current: (typeof chunks)[number] | undefined;
    const shipped = new Set<string>();
    for (const draft of drafts) {
      const need = this.blocksToShip(draft, shipped);
      // The block map was needed only until here; the drafts live until the archive is written.
      draft.pointers = undefined;
      if (current === undefined || current.drafts.length >= archiveVersionCountSoftMax || current.blocks.size + need.size > archiveBlockCountSoftMax) {
        current = { drafts: [], blocks: new Map() };
        chunks.push(current);
      }
      current.drafts.push(draft);
      for (const [hex, b] of need) current.blocks.set(hex, b);
    }
    return chunks;
  }

  /** Blocks named by a draft's ids runs that no archive has and no earlier draft ships. */
  private blocksToShip(draft: Draft, shipped: Set<string>): Map<string, { ino: number; blockIndex: number; pointer: BlockPointer }> {
    const need = new Map<string, { ino: number; blockIndex: number; pointer: BlockPointer }>();
    if (draft.version.type !== 'file' || draft.ino === undefined) return need;
    const pointers = draft.pointers ?? this.port.blockPointers(draft.ino);
    for (const run of draft.version.blockRuns) {
      if (run.kind !== 'ids') continue;
      for (let i = 0; i < run.ids.length / blockIdBytes; i++) {
        const id = run.ids.subarray(i * blockIdBytes, (i + 1) * blockIdBytes);
        if (isUnknownId(id)) continue;
        const hex = Buffer.from(id.buffer, id.byteOffset, id.byteLength).toString('hex');
        if (shipped.has(hex) || this.state.hasBlock(id)) continue;
        const blockIndex = run.blockIndex + i;
        const pointer = pointers.get(blockIndex);
        if (pointer === undefined) throw new FsError('ASSERT', `block ${blockIndex} of inode ${draft.ino} vanished while publishing`);
        shipped.add(hex);
        need.set(hex, { ino: draft.ino, blockIndex, pointer });
      }
    }
    return need;
  }

  private async writeChunk(drafts: Draft[], blocks: Map<string, { ino: number; blockIndex: number; pointer: BlockPointer }>,
    rows: { ino: number; sequence: number }[], lost: { ino: number; path: string }[]): Promise<{ name: string; zipSizeBytes: number; idxSizeBytes: number } | undefined> {
    const name = newArchiveName();
    const produce = this.zipProducer(blocks);
    let locations: BlockLocation[] = [];
    let committed: Idx | undefined;
    const keyring = this.keyState.kind === 'keys' ? this.keyState.keyring : undefined;
    const seal = keyring === undefined ? undefined
      : { key: keyring.keys.get(keyring.currentKeyId)!, keyId: keyring.currentKeyId, archiveName: name };
    const written = await writeArchive(this.syncDir, {
      name,
      writeZip: async (tempPath) => {
        locations = seal === undefined
          ? (await writeSinkFile(tempPath, produce)).locations
          : (await writeSealedFile(tempPath, { ...seal, kind: 'zip' }, produce)).result.locations;
      },
      ...(seal === undefined ? {} : { sealIdx: (idxBytes: Uint8Array) => sealFile(idxBytes, { ...seal, kind: 'idx' }) }),
      idx: (zipSizeBytes): Idx => {
        // Crash-test hook: a real kill -9 between the durable zip and the idx (the commit point).
        if (process.env['ZIPPY_TEST_KILL_BEFORE_IDX'] === '1') process.kill(process.pid, 'SIGKILL');
        committed = {
        header: { archiveName: name, writerBoxid: this.boxid, createdNs: BigInt(this.now()) * 1_000_000n, encrypted: seal !== undefined, zipSizeBytes },
        versions: drafts.map((d) => d.version),
        blocks: locations,
        };
        return committed;
      },
    });
    // Crash-test hook: a real kill -9 after the commit point, before the catalog records the archive.
    if (process.env['ZIPPY_TEST_KILL_AFTER_IDX'] === '1') process.kill(process.pid, 'SIGKILL');
    this.port.transaction(() => {
      const number = this.state.addArchive({ name, zipSizeBytes: written.zipSizeBytes, own: true });
      this.state.setReplicaBoxid(this.replicaId, this.boxid);
      for (const loc of locations) this.state.addBlock(number, loc);
      for (const d of drafts) this.recordVersion(d.version, d.flat);
      this.gc.index.indexArchive(number, committed!);
      this.updateIdentities(drafts, lost);
      this.port.clearOutbox(rows);
    });
    return { name, zipSizeBytes: written.zipSizeBytes, idxSizeBytes: written.idxSizeBytes };
  }

  /**
   * The writer of a chunk's archive zip into a sink. Its blocks are read in runs and prepared
   * (CRC-32, deflate) on the block worker a batch at a time, one batch ahead; a few blocks are
   * prepared on the JS thread. Either way the entries are the same (block-prep.ts).
   */
  private zipProducer(blocks: Map<string, LocalBlock>): (sink: ZipSink) => Promise<{ locations: BlockLocation[] }> {
    const list = [...blocks].map(([hex, b]) => ({ ...b, blockId: Buffer.from(hex, 'hex') }));
    const read = (batch: readonly (LocalBlock & { blockId: Buffer })[]): BlockPayload[] => {
      const data = this.port.readStoredBlocks(batch);
      return batch.map((b, i) => ({ blockId: b.blockId, data: data[i]! }));
    };
    return blockZipProducer(list, read, (payloads, level) => this.blockWorker.prepare(payloads, level), this.compressionLevel);
  }

  /** Records a version: its block list, and the path's heads (it replaces its base as a head). */
  private recordVersion(v: FileVersion, flat: Uint8Array): boolean {
    if (this.state.hasStamp(v.stamp)) return false;
    this.state.putFlatList(v.stamp, flat);
    const rec = this.state.pathRecord(v.path);
    if (v.base !== null) this.state.addBase(v.path, v.base);
    const heads = rec.versions.filter((x) => !sameStamp(x.stamp, v.base));
    if (!this.state.hasBase(v.path, v.stamp)) heads.push(metaOf(v));
    this.state.putPathRecord(v.path, { versions: heads, copies: rec.copies });
    if (v.stamp.counter > this.state.counter()) this.state.setCounter(v.stamp.counter);
    this.highestCounter = Math.max(this.highestCounter, v.stamp.counter);
    return true;
  }

  /**
   * Applies a publish to the identities: every name an inode lost is dropped (also when no
   * tombstone was written because another inode's version took the name), then each draft sets
   * the identity of its inode at its path. A stale identity would make a later version of the
   * inode build on a superseded base, i.e. conflict with our own newer version.
   */
  private updateIdentities(drafts: Draft[], lost: readonly { ino: number; path: string }[]): void {
    const byIno = new Map<number, Identity[]>();
    const touched = new Set<number>();
    for (const d of drafts) if (d.ino !== undefined) touched.add(d.ino);
    for (const l of lost) touched.add(l.ino);
    for (const ino of touched) byIno.set(ino, this.state.identities(ino));
    for (const l of lost) byIno.set(l.ino, byIno.get(l.ino)!.filter((id) => id.path !== l.path));
    for (const d of drafts) {
      if (d.ino === undefined) continue;
      const list = byIno.get(d.ino)!.filter((id) => id.path !== d.version.path);
      if (!d.version.deleted) list.push({ path: d.version.path, stamp: d.version.stamp });
      byIno.set(d.ino, list);
    }
    // Identities record what was published, even when the inode moved or vanished during the
    // publish: the next publish compares them with the tree and tombstones the names it lost.
    for (const [ino, list] of byIno) this.state.setIdentities(ino, list);
  }

  /** Turns outbox inodes (and everything below a directory that moved) into version drafts. */
  private draftVersions(inos: number[]): { drafts: Draft[]; lost: { ino: number; path: string }[] } {
    const work = new Set(inos);
    for (const ino of inos) this.addMovedSubtree(ino, work);
    const tombstones = new Map<string, Draft>();
    const live = new Map<string, Draft>();
    const nodes = new Map<number, { node: PortNode | undefined; paths: string[]; ids: Identity[] }>();
    for (const ino of work) {
      const node = this.port.node(ino);
      const paths = node === undefined ? [] : this.port.pathsOf(ino);
      nodes.set(ino, { node, paths, ids: this.state.identities(ino) });
    }
    const lost: { ino: number; path: string }[] = [];
    for (const [ino, { paths, ids }] of nodes) {
      for (const id of ids) {
        if (paths.includes(id.path)) continue;
        lost.push({ ino, path: id.path });
        const t = this.tombstone(id);
        if (t !== undefined) tombstones.set(t.version.path, { ...t, ino });
      }
    }
    for (const [, { node, paths, ids }] of nodes) {
      if (node === undefined) continue;
      for (const path of paths) {
        const d = this.liveDraft(node, path, ids, tombstones.get(path));
        if (d !== undefined) live.set(path, d);
      }
    }
    for (const [path, d] of tombstones) if (!live.has(path)) live.set(path, d);
    return { drafts: [...live.values()].sort((a, b) => depth(a.version.path) - depth(b.version.path)), lost };
  }

  /** When directory `ino`'s paths differ from the ones it published, adds all below it. */
  private addMovedSubtree(ino: number, work: Set<number>): void {
    const node = this.port.node(ino);
    if (node === undefined || node.type !== 'dir') return;
    const paths = this.port.pathsOf(ino);
    const ids = this.state.identities(ino);
    if (ids.length > 0 && ids.every((id) => paths.includes(id.path))) return;
    if (ids.length === 0 && !this.childrenMoved(ino, paths[0])) return;
    const stack = [ino];
    while (stack.length > 0) {
      const dir = stack.pop()!;
      for (const child of this.port.children(dir)) {
        work.add(child.ino);
        if (this.port.node(child.ino)?.type === 'dir') stack.push(child.ino);
      }
    }
  }

  /**
   * For a directory without an identity of its own (a new or implied directory): true when a
   * child shows a version published under another parent path, i.e. the directory was moved.
   */
  private childrenMoved(ino: number, path: string | undefined): boolean {
    if (path === undefined || path === '') return false;
    for (const child of this.port.children(ino)) {
      // A conflict copy's identity names the original path, which lies in the same directory.
      if (this.state.identities(child.ino).some((id) => parentOf(id.path) !== path)) return true;
    }
    return false;
  }

  private tombstone(id: Identity): Draft | undefined {
    const version: FileVersion = {
      path: id.path, type: 'file', mode: 0, uid: 0, gid: 0, rdev: 0, mtimeNs: BigInt(Date.now()) * 1_000_000n, sizeBytes: 0,
      symlinkTarget: '', xattrs: [], deleted: true, stamp: this.nextStamp(), base: id.stamp, blockRuns: [],
    };
    return { version, flat: new Uint8Array(0), ino: undefined, pointers: undefined };
  }

  private liveDraft(node: PortNode, path: string, ids: Identity[], replaced: Draft | undefined): Draft | undefined {
    const own = ids.find((id) => id.path === path);
    const moved = own === undefined ? ids[0] : undefined;
    const base = own?.stamp ?? replaced?.version.base ?? latestHead(this.state.pathRecord(path).versions);
    const listed = node.type === 'file' ? this.flatListOf(node) : undefined;
    const flat = listed?.flat ?? new Uint8Array(0);
    if (own !== undefined && this.unchanged(node, own, flat)) return undefined;
    const sourceStamp = [own?.stamp, moved?.stamp].find((st) => st !== undefined && st.counter > 0);
    // Copy only from a version some archive here still carries: a retired one could not be resolved by peers.
    const sourceFlat = sourceStamp === undefined || this.gc.index.version(sourceStamp) === undefined ? undefined : this.state.flatList(sourceStamp);
    const source = sourceStamp !== undefined && sourceFlat !== undefined && node.type === 'file' ? { stamp: sourceStamp, flat: sourceFlat } : undefined;
    const version: FileVersion = {
      path, type: node.type, mode: node.mode, uid: node.uid, gid: node.gid, rdev: node.rdev, mtimeNs: node.mtimeNs,
      sizeBytes: node.type === 'symlink' ? Buffer.byteLength(node.symlinkTarget) : node.type === 'file' ? node.sizeBytes : 0,
      symlinkTarget: node.type === 'symlink' ? node.symlinkTarget : '',
      xattrs: node.xattrs.map((x) => ({ name: x.name, value: x.value })),
      deleted: false, stamp: this.nextStamp(), base, blockRuns: node.type === 'file' ? deltaRuns(flat, source) : [],
    };
    return { version, flat, ino: node.ino, pointers: listed?.pointers };
  }

  /** True when the node still matches the version it shows (nothing worth a new version). */
  private unchanged(node: PortNode, own: Identity, flat: Uint8Array): boolean {
    const meta = this.state.pathRecord(own.path).versions.find((v) => sameStamp(v.stamp, own.stamp));
    if (meta === undefined || meta.path !== own.path || meta.type !== node.type) return false;
    if (meta.mode !== node.mode || meta.uid !== node.uid || meta.gid !== node.gid || meta.rdev !== node.rdev) return false;
    if (meta.symlinkTarget !== node.symlinkTarget && node.type === 'symlink') return false;
    if (meta.xattrs.length !== node.xattrs.length) return false;
    for (const [i, [name, value]] of meta.xattrs.entries()) {
      const x = node.xattrs[i]!;
      if (x.name !== name || !x.value.equals(Buffer.from(value))) return false;
    }
    if (node.type === 'dir') return true;
    if (meta.mtimeNs !== node.mtimeNs.toString() || meta.sizeBytes !== node.sizeBytes) return false;
    if (node.type !== 'file') return true;
    const old = this.state.flatList(own.stamp);
    return old !== undefined && Buffer.compare(Buffer.from(old), Buffer.from(flat)) === 0;
  }

  /**
   * The id pass of a publish, before drafting: computes the ids of the blocks of `inos` whose id
   * is unknown on the block worker, a batch at a time (FUSE requests are served between batches),
   * and remembers them in the block maps. A block rewritten meanwhile keeps its unknown id
   * (rememberBlockIds compares pointers), and flatListOf hashes those few on the JS thread.
   */
  private async rememberMissingIds(inos: readonly number[]): Promise<void> {
    const missing: LocalBlock[] = [];
    for (const ino of inos) {
      const node = this.port.node(ino);
      if (node === undefined || node.type !== 'file') continue;
      const slots = blockSlotCount(node.sizeBytes);
      for (const [blockIndex, pointer] of this.port.blockPointers(ino)) {
        if (blockIndex < slots && isUnknownId(pointer.blockId)) missing.push({ ino, blockIndex, pointer });
      }
    }
    if (missing.length < blockWorkerBlockCountMin) return;
    const key = this.blockIdKey;
    const hashed = pipelined(blockBatches(missing), async (batch) => {
      const ids = await this.blockWorker.blockIds(this.port.readStoredBlocks(batch), key);
      return batch.map((b, i) => ({ ...b, blockId: ids[i]! }));
    });
    for await (const batch of hashed) {
      const byIno = new Map<number, typeof batch>();
      for (const b of batch) {
        const list = byIno.get(b.ino);
        if (list === undefined) byIno.set(b.ino, [b]);
        else list.push(b);
      }
      this.port.transaction(() => {
        for (const [ino, list] of byIno) this.port.rememberBlockIds(ino, list);
      });
    }
  }

  /** The flat block-id list of a file, hashing (and remembering) blocks whose id is unknown. */
  private flatListOf(node: PortNode): { flat: Uint8Array; pointers: ReadonlyMap<number, BlockPointer> } {
    const slots = blockSlotCount(node.sizeBytes);
    const flat = new Uint8Array(slots * blockIdBytes);
    const remember: { blockIndex: number; pointer: BlockPointer; blockId: Buffer }[] = [];
    const pointers = this.port.blockPointers(node.ino);
    for (const [blockIndex, pointer] of pointers) {
      if (blockIndex >= slots) continue;
      let id = pointer.blockId;
      if (id.every((b) => b === 0)) {
        id = blockIdOf(this.port.readStoredBlock(node.ino, blockIndex, pointer), this.blockIdKey);
        remember.push({ blockIndex, pointer, blockId: id });
      }
      flat.set(id, blockIndex * blockIdBytes);
    }
    if (remember.length > 0) this.port.rememberBlockIds(node.ino, remember);
    return { flat, pointers };
  }

  // ================================================================ importing

  private async import(): Promise<ImportReport> {
    const known = this.state.archiveNames();
    this.loadKeys();
    const keys = this.keyState.kind === 'keys' ? this.keyState.keyring.keys : this.keyState.kind === 'no-key' ? new Map<string, Buffer>() : undefined;
    const readIdxBytes = keys === undefined ? undefined
      : (idxPath: string, name: string): Promise<Uint8Array> => readSealedFile(idxPath, { keys, archiveName: name, kind: 'idx', syncDir: this.syncDir }, idxSizeMaxBytes);
    const scan = await scanSyncDir(this.syncDir, { knownComplete: known, keepIdx: true, skipKnown: true, ...(readIdxBytes === undefined ? {} : { readIdxBytes }) });
    for (const bad of scan.incomplete) this.warnOnce(`skipping archive (will retry): ${bad.message}`);
    const asOf = this.asOfNs;
    // In an encrypted dir a plain zip is not trusted: anyone with access to the server could
    // have put it there (the union would show its files as if a member had written them).
    const plainZips = keys !== undefined ? []
      : asOf === undefined ? scan.plainZips : scan.plainZips.filter((z) => BigInt(Math.floor(z.mtimeMs)) * 1_000_000n <= asOf);
    if (keys !== undefined) {
      for (const z of scan.plainZips) this.warnOnce(`plain zip ${z.path} ignored: an encrypted sync dir only takes sealed archives`);
    }
    const plainPaths = await this.plain.refresh(plainZips, this.port, this.state);
    const fresh = scan.complete.filter((a) => !known.has(a.name) && a.idx !== undefined
      && (asOf === undefined || a.idx.header.createdNs <= asOf) && !this.sealed(a, keys));
    if (fresh.length === 0 && plainPaths.size === 0) {
      if ((await this.gc.forgetVanished()).length > 0) this.gcSoon();
      return { imported: [], waiting: [] };
    }
    const touched = new Set<string>(plainPaths);
    // Our own archives that a killed publisher committed but never recorded come first, so the
    // outbox published below builds on them instead of conflicting with itself.
    const isOwn = (a: CompleteArchive): boolean => a.idx!.versions.length > 0 && a.idx!.versions.every((v) => v.stamp.boxid === this.replicaId);
    const own = this.importArchives(fresh.filter(isOwn), touched, true);
    if (this.port.outboxCount() > 0) await this.publishBeforeImport();
    const foreign = this.importArchives([...own.waiting, ...fresh.filter((a) => !isOwn(a))], touched, false);
    for (const a of foreign.waiting) this.warnOnce(`archive ${a.idxPath} waits for versions or blocks from archives not here yet`);
    this.waitingArchives = foreign.waiting;
    // After the new archives, so blocks of the ones that left can be re-pointed at them.
    await this.gc.forgetVanished();
    this.reconciler.reconcile(touched);
    this.gcSoon();
    return { imported: [...own.imported, ...foreign.imported], waiting: foreign.waiting.map((a) => a.name) };
  }

  /**
   * Publishes local changes before foreign versions are merged. Without a usable key (none yet,
   * or revoked) they cannot be published: the import goes on, and the reconciler leaves the
   * paths of inodes with unpublished changes alone, as it does between two publishes.
   */
  private async publishBeforeImport(): Promise<void> {
    try {
      await this.publish(false);
    } catch (e) {
      if (!isFsError(e, 'BAD_KEY')) throw e;
      this.warnOnce(`local changes stay unpublished while importing: ${e.message}`);
    }
  }

  /** Imports every archive whose dependencies are met, repeating while that makes progress. */
  private importArchives(archives: CompleteArchive[], touched: Set<string>, own: boolean): { imported: string[]; waiting: CompleteArchive[] } {
    const imported: string[] = [];
    let pending = archives;
    for (let progress = true; progress && pending.length > 0; ) {
      progress = false;
      const next: CompleteArchive[] = [];
      for (const archive of pending) {
        const resolved = this.resolveArchive(archive);
        if (resolved === undefined) {
          next.push(archive);
          continue;
        }
        this.port.transaction(() => this.recordArchive(archive, resolved, touched, own));
        imported.push(archive.name);
        progress = true;
      }
      pending = next;
    }
    return { imported, waiting: pending };
  }

  private recordArchive(archive: CompleteArchive, resolved: Uint8Array[], touched: Set<string>, own: boolean): void {
    const idx = archive.idx!;
    // An own archive here was committed by a publisher (or a repack) killed before recording it.
    const number = this.state.addArchive({ name: archive.name, zipSizeBytes: archive.zipSizeBytes, own });
    this.gc.index.indexArchive(number, idx);
    for (const loc of idx.blocks) this.state.addBlock(number, loc);
    // A publisher writes only its own versions, so the header's writer is their machine.
    for (const v of idx.versions) this.state.setReplicaBoxid(v.stamp.boxid, idx.header.writerBoxid);
    for (const [i, v] of idx.versions.entries()) {
      // A version already known (carried again by a repack) changes nothing, but when it is a head
      // its path is reconciled again: the archive may bring back blocks a vanished one took along.
      if (!this.recordVersion(v, resolved[i]!)) {
        if (this.state.pathRecord(v.path).versions.some((h) => sameStamp(h.stamp, v.stamp))) touched.add(v.path);
        continue;
      }
      touched.add(v.path);
      // Only versions this store never recorded (a killed publisher's): a known own version that
      // comes again (a checkpoint repeats versions) may be older than what the inode shows now.
      if (v.stamp.boxid === this.replicaId) this.adopt(v);
    }
  }


  /**
   * An archive with this store's own stamps that the catalog does not know was committed by a
   * publisher killed before it recorded it. Its versions are ours: the inode now at the path takes
   * the version as its identity, so the outbox, published again, builds on it instead of making a
   * sibling that would conflict with itself.
   */
  private adopt(v: FileVersion): void {
    if (v.deleted) return;
    const ino = this.port.lookup(v.path);
    if (ino === undefined) return;
    const kept = this.state.identities(ino).filter((id) => id.path !== v.path);
    this.state.setIdentities(ino, [...kept, { path: v.path, stamp: v.stamp }]);
  }

  /**
   * True when an archive must be left out (warned, retried at the next import): in a plain dir a
   * sealed archive (no keys there); in an encrypted dir one whose idx header is not marked
   * encrypted, or whose zip does not authenticate whole (so it is rejected whole, before any of
   * it is applied, rather than failing block by block later).
   */
  private sealed(archive: CompleteArchive, keys: ReadonlyMap<string, Uint8Array> | undefined): boolean {
    const encrypted = archive.idx?.header.encrypted === true;
    if (keys === undefined) {
      if (encrypted) this.warnOnce(`skipping encrypted archive ${archive.idxPath}: the sync dir is not encrypted (no keys/fs.json)`);
      return encrypted;
    }
    if (!encrypted) {
      this.warnOnce(`skipping archive (will retry): ${archive.idxPath}: its idx is not marked encrypted in an encrypted sync dir`);
      return true;
    }
    try {
      const reader = SealedReaderSync.open(archive.zipPath, { keys, archiveName: archive.name, kind: 'zip', syncDir: this.syncDir });
      try {
        reader.verifyAll();
      } finally {
        reader.close();
      }
    } catch (e) {
      if (!isFsError(e)) throw e;
      this.warnOnce(`skipping archive (will retry): ${e.message}`);
      return true;
    }
    return false;
  }

  /** Flat lists of every version of an archive, or undefined while a source version or block is missing. */
  private resolveArchive(archive: CompleteArchive): Uint8Array[] | undefined {
    const idx = archive.idx!;
    const own = new Map<string, Uint8Array>();
    const inArchive = new Set(idx.blocks.map((b) => Buffer.from(b.blockId).toString('hex')));
    const lists: Uint8Array[] = [];
    for (const v of idx.versions) {
      let flat: Uint8Array;
      try {
        flat = resolveBlockList(v, (s) => own.get(stampString(s)) ?? this.state.flatList(s), archive.idxPath);
      } catch (e) {
        if (isFsError(e, 'BAD_ARCHIVE')) return undefined;
        throw e;
      }
      for (let slot = 0; slot < flat.length / blockIdBytes; slot++) {
        if (isZeroId(flat, slot)) continue;
        const id = flat.subarray(slot * blockIdBytes, (slot + 1) * blockIdBytes);
        if (!inArchive.has(Buffer.from(id).toString('hex')) && !this.state.hasBlock(id)) return undefined;
      }
      own.set(stampString(v.stamp), flat);
      lists.push(flat);
    }
    return lists;
  }

  /** The archive zip path of the store's catalog entry (tests). */
  zipPathOf(name: string): string {
    return join(this.syncDir, `${name}.zip`);
  }
}
