/**
 * Block places in memory: where the blocks of recently read file ranges lie in the segment log,
 * so that a read finds its records without a block-map lookup (an LMDB leaf page, and a disk read
 * when that page is not in the page cache). It plays the part of ext4's extent status cache.
 *
 * Unit: a chunk, the places of chunkBlockCount aligned blocks of one file, filled from one range
 * scan of the block map. Filled only from committed state (never inside a write transaction);
 * every writer of the block map forgets the chunks it touches before its transaction commits, so
 * a chunk never disagrees with the block map. With ZIPPY_CHECK_PLACE_CACHE=1 (the tests set it)
 * every hit is compared with the block map and a difference is an assertion failure.
 *
 * Bounded by placeCacheChunkCountMax chunks; when full, the oldest filled chunk goes first.
 */
import { assert } from '../errors.js';
import { blockKey, blockKeyIndex } from '../btree/keys.js';
import { blockPointerKind, decodeBlockPlace, type BlockPlace } from '../btree/records.js';
import type { Btree } from '../btree/db.js';
import { placeCacheChunkCountMax } from '../limits.js';

/** Blocks per chunk: 1 MiB of file data. */
export const chunkBlockCount = 256;

/** `lens` value of a block the chunk does not describe: an archive pointer, read from the block map. */
const lenOther = 0xffff;

interface Chunk {
  readonly segments: Uint32Array;
  readonly offsets: Uint32Array;
  /** Payload length; 0 for a hole, lenOther for a pointer that is not a segment place. */
  readonly lens: Uint16Array;
}

export class PlaceCache {
  /** ino → chunk index → chunk; the outer and inner maps keep fill order. */
  private readonly files = new Map<number, Map<number, Chunk>>();
  private chunkCount = 0;
  private readonly checkEveryHit = process.env.ZIPPY_CHECK_PLACE_CACHE === '1';

  constructor(private readonly btree: Btree, private readonly chunkCountMax = placeCacheChunkCountMax) {
    assert(chunkCountMax >= 1, `place cache holds at least one chunk (${chunkCountMax})`);
  }

  /**
   * The place of block `blockIndex` of `ino`, or undefined for a hole. Archive pointers, and
   * chunks not held while a write transaction is open, come straight from the block map.
   */
  get(ino: number, blockIndex: number): BlockPlace | undefined {
    const chunkIndex = Math.floor(blockIndex / chunkBlockCount);
    let chunk = this.files.get(ino)?.get(chunkIndex);
    if (chunk === undefined) {
      if (this.btree.inTransaction) return this.fromMap(ino, blockIndex);
      chunk = this.fill(ino, chunkIndex);
    }
    const i = blockIndex - chunkIndex * chunkBlockCount;
    const len = chunk.lens[i]!;
    const place = len === 0 ? undefined : len === lenOther ? this.fromMap(ino, blockIndex) : { kind: blockPointerKind.segment, lengthBytes: len, segment: chunk.segments[i]!, offset: chunk.offsets[i]! };
    if (this.checkEveryHit && len !== lenOther) this.check(ino, blockIndex, place);
    return place;
  }

  /** Forgets the chunk holding block `blockIndex` of `ino` (its block-map entry is changing). */
  forget(ino: number, blockIndex: number): void {
    const chunks = this.files.get(ino);
    if (chunks === undefined) return;
    if (chunks.delete(Math.floor(blockIndex / chunkBlockCount))) this.chunkCount--;
    if (chunks.size === 0) this.files.delete(ino);
  }

  /** Forgets every chunk of `ino` from the one holding `fromBlockIndex` on (default: all). */
  forgetFrom(ino: number, fromBlockIndex = 0): void {
    const chunks = this.files.get(ino);
    if (chunks === undefined) return;
    const first = Math.floor(fromBlockIndex / chunkBlockCount);
    for (const chunkIndex of [...chunks.keys()]) {
      if (chunkIndex >= first && chunks.delete(chunkIndex)) this.chunkCount--;
    }
    if (chunks.size === 0) this.files.delete(ino);
  }

  /** Chunks held, for tests. */
  get size(): number {
    return this.chunkCount;
  }

  private fill(ino: number, chunkIndex: number): Chunk {
    const chunk: Chunk = { segments: new Uint32Array(chunkBlockCount), offsets: new Uint32Array(chunkBlockCount), lens: new Uint16Array(chunkBlockCount) };
    const first = chunkIndex * chunkBlockCount;
    const range = { start: blockKey(ino, first), end: blockKey(ino, first + chunkBlockCount) };
    for (const { key, value } of this.btree.table('blockmap').getRange(range)) {
      const blockIndex = blockKeyIndex(key);
      const place = decodeBlockPlace(value, ino, blockIndex);
      const i = blockIndex - first;
      if (place.kind !== blockPointerKind.segment) {
        chunk.lens[i] = lenOther;
        continue;
      }
      chunk.segments[i] = place.segment;
      chunk.offsets[i] = place.offset;
      chunk.lens[i] = place.lengthBytes;
    }
    while (this.chunkCount >= this.chunkCountMax) this.evictOldest();
    let chunks = this.files.get(ino);
    if (chunks === undefined) this.files.set(ino, (chunks = new Map()));
    chunks.set(chunkIndex, chunk);
    this.chunkCount++;
    return chunk;
  }

  private evictOldest(): void {
    const [ino, chunks] = this.files.entries().next().value as [number, Map<number, Chunk>];
    const [chunkIndex] = chunks.keys();
    chunks.delete(chunkIndex!);
    this.chunkCount--;
    if (chunks.size === 0) this.files.delete(ino);
  }

  private fromMap(ino: number, blockIndex: number): BlockPlace | undefined {
    const value = this.btree.table('blockmap').get(blockKey(ino, blockIndex));
    return value === undefined ? undefined : decodeBlockPlace(value, ino, blockIndex);
  }

  private check(ino: number, blockIndex: number, place: BlockPlace | undefined): void {
    const stored = this.fromMap(ino, blockIndex);
    const same = stored === undefined ? place === undefined
      : place !== undefined && stored.kind === place.kind && stored.segment === place.segment && stored.offset === place.offset && stored.lengthBytes === place.lengthBytes;
    assert(same, `place cache of block ${ino}:${blockIndex} says ${JSON.stringify(place)}, the block map says ${JSON.stringify(stored)}`);
  }
}
