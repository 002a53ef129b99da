/**
 * The local store of one mount: a directory holding `segments/` (the block log), `lmdb/`
 * (the B+Tree) and `LOCK` (the pid of the process that has it open). Opening a store takes
 * the lock, restores the allocators from the marks committed in LMDB, recovers the segment
 * log's tail against those marks, and creates the root directory of a new store.
 *
 * Lifecycle:
 * 1. take the lock (a live other process → LOCKED; a dead one's lock is replaced);
 * 2. open LMDB and read the marks;
 * 3. open the segment log at the committed head (unreferenced or torn tail records go);
 * 4. create the root inode on first open;
 * 5. ... operations, each committing its marks with its data ...
 * 6. close: sync the log, sync LMDB, close both, drop the lock.
 */
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeSync, fsyncSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { fsError } from '../errors.js';
import { MonotonicCounter, SegmentUsage } from '../alloc/index.js';
import { SegmentLog, type SegmentLogOpenReport } from '../blocks/index.js';
import { Btree } from '../btree/db.js';
import { btreeFormatVersion, btreeFormatVersionOldest, inoKey, inoPrefixRange, keyIno, metaKeys, segmentKey } from '../btree/keys.js';
import { decodeInode, decodeU64, encodeInode, encodeU64 } from '../btree/records.js';
import { segmentSizeMaxBytesDefault } from '../limits.js';
import { nowNs, rootIno, S_IFDIR } from './types.js';
import { PlaceCache } from './place-cache.js';

export interface StoreOptions {
  segmentSizeMaxBytes?: number;
  readOnly?: boolean;
}

export class Store {
  readonly dir: string;
  readonly btree: Btree;
  readonly log: SegmentLog;
  readonly openReport: SegmentLogOpenReport;
  readonly segmentSizeMaxBytes: number;
  private readonly inoCounter: MonotonicCounter;
  private readonly usage: SegmentUsage;
  private readonly lockPath: string | undefined;
  /** Block places of recently read ranges (place-cache.ts); every block-map writer forgets what it changes. */
  readonly places: PlaceCache;
  /** The marks last written to LMDB (-1 / '' when unknown), so unchanged ones are not rewritten. */
  private persistedInoNext = -1;
  private persistedHead = '';

  private constructor(dir: string, btree: Btree, log: SegmentLog, report: SegmentLogOpenReport, segmentSizeMaxBytes: number, lockPath: string | undefined) {
    this.dir = dir;
    this.btree = btree;
    this.log = log;
    this.openReport = report;
    this.segmentSizeMaxBytes = segmentSizeMaxBytes;
    this.lockPath = lockPath;
    this.places = new PlaceCache(btree);
    const meta = btree.table('meta');
    const inoNext = meta.get(Buffer.from(metaKeys.inoNext));
    this.inoCounter = MonotonicCounter.fromMark({ next: inoNext === undefined ? rootIno + 1 : decodeU64(inoNext, 'meta ino-next') }, rootIno + 1);
    const entries = [...btree.table('seguse').getRange({})].map(({ key, value }) => ({ segment: key.readUInt32BE(0), liveBytes: decodeU64(value, 'seguse') }));
    this.usage = SegmentUsage.fromEntries(entries);
  }

  /** Opens (creating if needed) the store in `dir`. */
  static open(dir: string, options: StoreOptions = {}): Store {
    mkdirSync(dir, { recursive: true });
    const readOnly = options.readOnly ?? false;
    const lockPath = readOnly ? undefined : takeLock(join(dir, 'LOCK'));
    try {
      const btree = Btree.open(join(dir, 'lmdb'), { readOnly });
      const meta = btree.table('meta');
      const headValue = meta.get(Buffer.from(metaKeys.segmentHead));
      const head = headValue === undefined ? undefined : JSON.parse(headValue.toString('utf8')) as { segment: number; offset: number };
      const segmentSizeMaxBytes = options.segmentSizeMaxBytes ?? segmentSizeMaxBytesDefault;
      const { log, report } = SegmentLog.open(join(dir, 'segments'), { segmentSizeMaxBytes, ...(head === undefined ? {} : { head }) });
      const store = new Store(dir, btree, log, report, segmentSizeMaxBytes, lockPath);
      if (!readOnly) store.initialise();
      return store;
    } catch (e) {
      if (lockPath !== undefined) rmSync(lockPath, { force: true });
      throw e;
    }
  }

  /** A fresh inode number (persisted by persistMarks in the same transaction). */
  allocateIno(): number {
    return this.inoCounter.take();
  }

  /** Records `lengthBytes` more live bytes in `segment`. */
  usageAdd(segment: number, lengthBytes: number): void {
    this.usage.add(segment, lengthBytes);
  }

  /** Records `lengthBytes` fewer live bytes in `segment`. */
  usageRelease(segment: number, lengthBytes: number): void {
    this.usage.release(segment, lengthBytes);
  }

  /** The live-byte accounting, for the cleaner's victim choice. */
  usageAccounting(): Pick<SegmentUsage, 'segmentsBelow' | 'liveBytes'> {
    return this.usage;
  }

  /** Live bytes of `segment`. */
  liveBytes(segment: number): number {
    return this.usage.liveBytes(segment);
  }

  /**
   * Runs `action` in one LMDB transaction and commits the allocator marks and segment usage
   * it changed in the same transaction. Every transaction that allocates or moves blocks goes
   * through here.
   */
  transaction<T>(action: () => T): T {
    try {
      return this.btree.transaction(() => {
        const result = action();
        this.persistMarks();
        return result;
      });
    } catch (e) {
      // The transaction was rolled back: what we remember as persisted may not be.
      this.persistedInoNext = -1;
      this.persistedHead = '';
      throw e;
    }
  }

  /** Writes the marks that changed since they were last written (most transactions change none). */
  private persistMarks(): void {
    const meta = this.btree.table('meta');
    const inoNext = this.inoCounter.mark().next;
    if (inoNext !== this.persistedInoNext) {
      meta.putSync(Buffer.from(metaKeys.inoNext), encodeU64(inoNext));
      this.persistedInoNext = inoNext;
    }
    const head = JSON.stringify(this.log.head());
    if (head !== this.persistedHead) {
      meta.putSync(Buffer.from(metaKeys.segmentHead), Buffer.from(head));
      this.persistedHead = head;
    }
    const seguse = this.btree.table('seguse');
    for (const { segment, liveBytes } of this.usage.drainChanges()) {
      if (liveBytes === 0) seguse.removeSync(segmentKey(segment));
      else seguse.putSync(segmentKey(segment), encodeU64(liveBytes));
    }
  }

  /** The next inode number (every used one is below it). */
  inoNext(): number {
    return this.inoCounter.peek();
  }

  /** Rough number of inodes in use, for statfs. */
  inodeCountEstimate(): number {
    return (this.btree.table('inode').getStats() as { entryCount: number }).entryCount;
  }

  /** Syncs and closes everything and drops the lock. */
  async close(): Promise<void> {
    this.log.sync();
    await this.btree.sync();
    this.log.close();
    await this.btree.close();
    if (this.lockPath !== undefined) rmSync(this.lockPath, { force: true });
  }

  /** Closes without syncing anything, as a killed process would (tests only). */
  async abandon(): Promise<void> {
    this.log.close();
    await this.btree.close();
    if (this.lockPath !== undefined) rmSync(this.lockPath, { force: true });
  }

  private initialise(): void {
    const meta = this.btree.table('meta');
    if (meta.get(Buffer.from(metaKeys.formatVersion)) !== undefined) {
      const version = decodeU64(meta.get(Buffer.from(metaKeys.formatVersion))!, 'meta format');
      if (version < btreeFormatVersionOldest || version > btreeFormatVersion) {
        throw fsError('CORRUPT', `store format ${version}, this build reads ${btreeFormatVersionOldest} to ${btreeFormatVersion}`, this.dir);
      }
      if (version === 1) this.transaction(() => upgradeFormat1(this.btree));
      return;
    }
    const now = nowNs();
    this.transaction(() => {
      meta.putSync(Buffer.from(metaKeys.formatVersion), encodeU64(btreeFormatVersion));
      meta.putSync(Buffer.from(metaKeys.storeId), Buffer.from(randomBytes(16).toString('hex')));
      const root = { mode: S_IFDIR | 0o755, uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, nlink: 2, rdev: 0, size: 0, atimeNs: now, mtimeNs: now, ctimeNs: now, generation: 0, blockCount: 0, target: Buffer.alloc(0) };
      this.btree.table('inode').putSync(inoKey(rootIno), encodeInode(root));
    });
  }
}

/**
 * Format 1 → 2 (inside one transaction): every inode record is rewritten as version 2 with its
 * block count, counted from its block map entries. One pass over the inode table and one range
 * count per inode; run once, at the first writable open by a build that knows format 2.
 */
function upgradeFormat1(btree: Btree): void {
  const inodes = btree.table('inode');
  const blockmap = btree.table('blockmap');
  for (const { key, value } of [...inodes.getRange({})]) {
    const ino = keyIno(key);
    const rec = decodeInode(value, `inode ${ino}`);
    let blockCount = 0;
    for (const _ of blockmap.getKeys(inoPrefixRange(ino))) blockCount++;
    inodes.putSync(key, encodeInode({ ...rec, blockCount }));
  }
  btree.table('meta').putSync(Buffer.from(metaKeys.formatVersion), encodeU64(btreeFormatVersion));
}

/** Creates the lock file with our pid; replaces it when its pid is dead. Returns its path. */
function takeLock(path: string): string {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(path, 'wx', 0o644);
      writeSync(fd, `${process.pid}\n`);
      fsyncSync(fd);
      closeSync(fd);
      return path;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const pid = Number.parseInt(readFileSafe(path), 10);
      if (Number.isSafeInteger(pid) && pid > 0 && pid !== process.pid && processAlive(pid)) {
        throw fsError('LOCKED', `store is in use by process ${pid}`, path);
      }
      rmSync(path, { force: true });
    }
  }
  throw fsError('LOCKED', 'could not take the store lock', path);
}

function readFileSafe(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

