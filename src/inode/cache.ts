/**
 * The block cache: 4 KiB blocks of open and recently used files, bounded in bytes, LRU.
 * Reads go through it; writes land in it and are marked dirty; the file system writes dirty
 * blocks back on flush, fsync, release, memory pressure and a timer. Clean blocks of a file
 * are dropped when another machine changes that file (invalidateFile).
 *
 * Invariants: every entry's data is exactly blockSizeBytes long; `bytes` equals
 * entryCount × blockSizeBytes; a dirty entry is also in its file's dirty set; a file's
 * new-dirty count is the number of its entries that are dirty and not `stored`.
 *
 * Buffers: the cache owns the data of its entries and reuses the buffer of a dropped entry for
 * the next block (take), so steady-state reading and writing allocate nothing and leave the
 * garbage collector nothing to do. New buffers are slices of 1 MiB slabs. The rule that makes
 * reuse safe: nobody keeps a reference to an entry's data beyond the synchronous call that got
 * it (FileSystem copies out of and into the cache; the log copies what it appends).
 */
import { assert } from '../errors.js';
import { blockSizeBytes } from '../limits.js';

/** Blocks per slab of new cache buffers (1 MiB). */
const slabBlockCount = 256;
/** Most spare buffers kept for reuse (1 MiB, several requests' worth) beyond the cache's capacity. */
const spareCountMax = 256;

export interface CacheEntry {
  ino: number;
  blockIndex: number;
  data: Buffer;
  dirty: boolean;
  /**
   * The block map holds this block (it was read from the store or written back). A dirty entry
   * that is not stored will add a block map entry at write-back: st_blocks counts it already.
   */
  stored: boolean;
  /** Used since eviction last passed it (second chance). */
  used: boolean;
}

export class BlockCache {
  readonly capacityBytes: number;
  private readonly files = new Map<number, Map<number, CacheEntry>>();
  /**
   * Eviction order (second chance, a cheap LRU): oldest first. A hit only sets `used`; eviction
   * moves a used entry to the end once instead of dropping it.
   */
  private readonly lru = new Set<CacheEntry>();
  private readonly dirtyByFile = new Map<number, Set<CacheEntry>>();
  /** Per file: dirty entries that are not stored (absent key: 0). */
  private readonly newDirtyByFile = new Map<number, number>();
  private dirtyCount = 0;
  /** Buffers of dropped entries, handed out again by take(). */
  private readonly spare: Buffer[] = [];
  private slab: Buffer = Buffer.alloc(0);
  private slabUsed = 0;

  constructor(capacityBytes: number) {
    assert(capacityBytes >= blockSizeBytes, `cache capacity ${capacityBytes} below one block`);
    this.capacityBytes = capacityBytes;
  }

  get bytes(): number {
    return this.lru.size * blockSizeBytes;
  }

  get dirtyBytes(): number {
    return this.dirtyCount * blockSizeBytes;
  }

  /** A block-sized buffer with unspecified content, for a new entry (put) or a load (give it back if unused). */
  take(): Buffer {
    const reused = this.spare.pop();
    if (reused !== undefined) return reused;
    if (this.slabUsed + blockSizeBytes > this.slab.length) {
      this.slab = Buffer.allocUnsafeSlow(slabBlockCount * blockSizeBytes);
      this.slabUsed = 0;
    }
    const data = this.slab.subarray(this.slabUsed, this.slabUsed + blockSizeBytes);
    this.slabUsed += blockSizeBytes;
    return data;
  }

  /** Returns a buffer from take() that did not become an entry's data. */
  give(data: Buffer): void {
    if (this.spare.length < spareCountMax && data.length === blockSizeBytes) this.spare.push(data);
  }

  /** The cached block, marked used, or undefined. */
  get(ino: number, blockIndex: number): CacheEntry | undefined {
    const entry = this.files.get(ino)?.get(blockIndex);
    if (entry !== undefined) entry.used = true;
    return entry;
  }

  /** True when the block is cached (does not count as a use). */
  has(ino: number, blockIndex: number): boolean {
    return this.files.get(ino)?.has(blockIndex) ?? false;
  }

  /** Inserts (or replaces) a block; `data` must be exactly one block; `stored`: the block map holds it. Does not evict. */
  put(ino: number, blockIndex: number, data: Buffer, dirty: boolean, stored: boolean): CacheEntry {
    if (data.length !== blockSizeBytes) assert(false, `cache block of ${data.length} bytes`);
    let file = this.files.get(ino);
    if (file === undefined) {
      file = new Map();
      this.files.set(ino, file);
    }
    const old = file.get(blockIndex);
    if (old !== undefined) this.remove(old);
    const entry: CacheEntry = { ino, blockIndex, data, dirty: false, stored, used: false };
    file.set(blockIndex, entry);
    this.lru.add(entry);
    if (dirty) this.markDirty(entry);
    return entry;
  }

  /** Marks a cached block dirty (it must be written back before it can be evicted). */
  markDirty(entry: CacheEntry): void {
    if (entry.dirty) return;
    entry.dirty = true;
    this.dirtyCount++;
    if (!entry.stored) this.newDirtyAdd(entry.ino, 1);
    let set = this.dirtyByFile.get(entry.ino);
    if (set === undefined) {
      set = new Set();
      this.dirtyByFile.set(entry.ino, set);
    }
    set.add(entry);
  }

  /** Marks a dirty block clean after it was written back. */
  markClean(entry: CacheEntry): void {
    if (!entry.dirty) return;
    entry.dirty = false;
    this.dirtyCount--;
    if (!entry.stored) this.newDirtyAdd(entry.ino, -1);
    const set = this.dirtyByFile.get(entry.ino);
    set?.delete(entry);
    if (set !== undefined && set.size === 0) this.dirtyByFile.delete(entry.ino);
  }

  /** Records whether the block map holds the entry's block (after a write-back or a truncate changed it). */
  setStored(entry: CacheEntry, stored: boolean): void {
    if (entry.stored === stored) return;
    entry.stored = stored;
    if (entry.dirty) this.newDirtyAdd(entry.ino, stored ? -1 : 1);
  }

  /** Dirty blocks of `ino` the block map does not hold yet: the blocks its write-back will add. */
  newDirtyCountOf(ino: number): number {
    return this.newDirtyByFile.get(ino) ?? 0;
  }

  private newDirtyAdd(ino: number, delta: number): void {
    const count = (this.newDirtyByFile.get(ino) ?? 0) + delta;
    assert(count >= 0, `new dirty block count of inode ${ino} went to ${count}`);
    if (count === 0) this.newDirtyByFile.delete(ino);
    else this.newDirtyByFile.set(ino, count);
  }

  /** True when `ino` has dirty blocks. */
  hasDirty(ino: number): boolean {
    return this.dirtyByFile.has(ino);
  }

  /** Dirty blocks of one file, in block order. */
  dirtyOf(ino: number): CacheEntry[] {
    const set = this.dirtyByFile.get(ino);
    if (set === undefined) return [];
    return [...set].sort((a, b) => a.blockIndex - b.blockIndex);
  }

  /** Inodes that have dirty blocks, the one whose oldest block is least recently used first. */
  dirtyFiles(): number[] {
    return [...this.dirtyByFile.keys()];
  }

  /** Drops one block whatever its state (the caller has written it back or wants it gone). */
  remove(entry: CacheEntry): void {
    this.markClean(entry);
    if (!this.lru.delete(entry)) return;
    const file = this.files.get(entry.ino);
    if (file?.get(entry.blockIndex) === entry) {
      file.delete(entry.blockIndex);
      if (file.size === 0) this.files.delete(entry.ino);
    }
    this.give(entry.data);
  }

  /** Drops the cached copy of one block, which must be clean (a direct write replaces it). */
  dropClean(ino: number, blockIndex: number): void {
    const entry = this.files.get(ino)?.get(blockIndex);
    if (entry === undefined) return;
    assert(!entry.dirty, `dropClean of dirty block ${ino}:${blockIndex}`);
    this.remove(entry);
  }

  /** Drops blocks of `ino` with index ≥ fromBlockIndex, dirty or not (truncate, delete). */
  dropFrom(ino: number, fromBlockIndex: number): void {
    const file = this.files.get(ino);
    if (file === undefined) return;
    for (const entry of [...file.values()]) {
      if (entry.blockIndex >= fromBlockIndex) this.remove(entry);
    }
  }

  /** Drops the clean blocks of `ino` (another version of the file arrived). */
  invalidateFile(ino: number): void {
    const file = this.files.get(ino);
    if (file === undefined) return;
    for (const entry of [...file.values()]) {
      if (!entry.dirty) this.remove(entry);
    }
  }

  /**
   * Evicts clean blocks, oldest first, until the cache fits its capacity; a block used since the
   * last pass gets a second chance (moved to the end, visited again at most once). Returns how
   * many were evicted.
   */
  evictClean(): number {
    if (this.bytes <= this.capacityBytes) return 0;
    let evicted = 0;
    for (const entry of this.lru) {
      if (this.bytes <= this.capacityBytes) break;
      if (entry.dirty) continue;
      if (entry.used) {
        entry.used = false;
        this.lru.delete(entry);
        this.lru.add(entry);
        continue;
      }
      this.remove(entry);
      evicted++;
    }
    return evicted;
  }

  /** True when dirty blocks take more than half the capacity: time to write back. */
  underPressure(): boolean {
    return this.dirtyBytes * 2 > this.capacityBytes;
  }

  /** Drops everything (the caller has written back what it wanted kept). */
  clear(): void {
    for (const entry of this.lru) this.give(entry.data);
    this.files.clear();
    this.lru.clear();
    this.dirtyByFile.clear();
    this.newDirtyByFile.clear();
    this.dirtyCount = 0;
  }
}
