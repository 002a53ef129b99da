/**
 * Bump allocation of space in numbered segments of a fixed maximum size.
 *
 * The allocator only moves forward: it hands out the next `sizeBytes` bytes of the current
 * segment, and when a record does not fit in what is left, it moves to the start of the next
 * segment number. A record never straddles two segments. The whole state is the high-water
 * mark {segment, offset}; the layer above persists that mark in the same transaction as the
 * metadata that references the space, and restores from it after a restart.
 *
 * Invariants:
 * - `recordOffsetMinBytes <= mark.offset <= segmentSizeMaxBytes` (space below the minimum is
 *   reserved for a per-segment header that the allocator never hands out).
 * - Ranges handed out are disjoint and increasing in (segment, offset) order.
 * - `segmentNumberFirst <= mark.segment <= segmentNumberMax`.
 */
import { assert, fsError } from '../errors.js';

/** The high-water mark: the next record goes at `offset` in segment `segment`. Plain data, serialisable. */
export interface SegmentSpaceMark {
  readonly segment: number;
  readonly offset: number;
}

/** A range handed out by the allocator: `sizeBytes` bytes at `offset` in segment `segment`. */
export interface SegmentRange {
  readonly segment: number;
  readonly offset: number;
  readonly sizeBytes: number;
}

/** Configuration of a segment space allocator. */
export interface SegmentSpaceOptions {
  /** Largest size of one segment; no range ends beyond it. */
  readonly segmentSizeMaxBytes: number;
  /** First offset handed out in a fresh segment (bytes below it hold the segment header). */
  readonly recordOffsetMinBytes: number;
  /** Number of the first segment of an empty store. Default 1 (segment 0 is never used). */
  readonly segmentNumberFirst?: number;
  /** Largest segment number the allocator may move to. Default 2^32 - 1. */
  readonly segmentNumberMax?: number;
}

/** Hands out disjoint ranges in numbered segments, never straddling a segment boundary. */
export interface SegmentSpaceAllocator {
  /** Returns where a record of `sizeBytes` goes and advances past it; moves to the next segment when the current one cannot fit it. */
  allocate(sizeBytes: number): SegmentRange;
  /** Returns the segment the next allocation of `sizeBytes` would land in, without allocating. */
  segmentFor(sizeBytes: number): number;
  /** Abandons the rest of the current segment: the next allocation starts a fresh segment. */
  seal(): void;
  /** Returns the high-water mark: everything before it has been handed out. */
  mark(): SegmentSpaceMark;
  /** Resets the allocator to a mark previously returned by mark() (e.g. after an aborted transaction). */
  restore(mark: SegmentSpaceMark): void;
  /** True when `offset` is the first record offset of a segment, i.e. the range starts a fresh segment. */
  isSegmentStart(offset: number): boolean;
  /** Largest record that fits in one segment. */
  readonly recordSizeMaxBytes: number;
}

const segmentNumberFirstDefault = 1;
const segmentNumberMaxDefault = 2 ** 32 - 1;

/** The bump implementation of SegmentSpaceAllocator. */
export class BumpSegmentSpaceAllocator implements SegmentSpaceAllocator {
  readonly segmentSizeMaxBytes: number;
  readonly recordOffsetMinBytes: number;
  readonly segmentNumberFirst: number;
  readonly segmentNumberMax: number;
  readonly recordSizeMaxBytes: number;
  private segment: number;
  private offset: number;

  /** Creates an allocator for an empty store: the first range starts segment `segmentNumberFirst`. */
  constructor(options: SegmentSpaceOptions) {
    const first = options.segmentNumberFirst ?? segmentNumberFirstDefault;
    const max = options.segmentNumberMax ?? segmentNumberMaxDefault;
    assert(Number.isSafeInteger(options.segmentSizeMaxBytes), 'segmentSizeMaxBytes is an integer');
    assert(Number.isSafeInteger(options.recordOffsetMinBytes), 'recordOffsetMinBytes is an integer');
    assert(options.recordOffsetMinBytes >= 0, 'recordOffsetMinBytes is not negative');
    assert(options.recordOffsetMinBytes < options.segmentSizeMaxBytes,
      `recordOffsetMinBytes ${options.recordOffsetMinBytes} below segmentSizeMaxBytes ${options.segmentSizeMaxBytes}`);
    assert(Number.isSafeInteger(first) && first >= 0, `segmentNumberFirst ${first} is a non-negative integer`);
    assert(Number.isSafeInteger(max) && max >= first, `segmentNumberMax ${max} is an integer >= segmentNumberFirst`);
    this.segmentSizeMaxBytes = options.segmentSizeMaxBytes;
    this.recordOffsetMinBytes = options.recordOffsetMinBytes;
    this.segmentNumberFirst = first;
    this.segmentNumberMax = max;
    this.recordSizeMaxBytes = options.segmentSizeMaxBytes - options.recordOffsetMinBytes;
    this.segment = first;
    this.offset = options.recordOffsetMinBytes;
  }

  /** Creates an allocator that continues from `mark` (validated against the options). */
  static fromMark(mark: SegmentSpaceMark, options: SegmentSpaceOptions): BumpSegmentSpaceAllocator {
    const allocator = new BumpSegmentSpaceAllocator(options);
    allocator.restore(mark);
    return allocator;
  }

  allocate(sizeBytes: number): SegmentRange {
    this.assertRecordSize(sizeBytes);
    if (this.offset + sizeBytes > this.segmentSizeMaxBytes) this.moveToNextSegment();
    const range: SegmentRange = { segment: this.segment, offset: this.offset, sizeBytes };
    this.offset += sizeBytes;
    return range;
  }

  segmentFor(sizeBytes: number): number {
    this.assertRecordSize(sizeBytes);
    return this.offset + sizeBytes > this.segmentSizeMaxBytes ? this.segment + 1 : this.segment;
  }

  seal(): void {
    // A segment that holds nothing yet needs no sealing: the next range would start it anyway.
    if (this.offset === this.recordOffsetMinBytes) return;
    this.moveToNextSegment();
  }

  mark(): SegmentSpaceMark {
    return { segment: this.segment, offset: this.offset };
  }

  restore(mark: SegmentSpaceMark): void {
    if (!Number.isSafeInteger(mark.segment) || mark.segment < this.segmentNumberFirst || mark.segment > this.segmentNumberMax) {
      throw fsError('BAD_INPUT', `segment ${mark.segment} outside ${this.segmentNumberFirst}..${this.segmentNumberMax}`, 'segment space mark');
    }
    if (!Number.isSafeInteger(mark.offset) || mark.offset < this.recordOffsetMinBytes || mark.offset > this.segmentSizeMaxBytes) {
      throw fsError('BAD_INPUT', `offset ${mark.offset} outside ${this.recordOffsetMinBytes}..${this.segmentSizeMaxBytes}`, 'segment space mark');
    }
    this.segment = mark.segment;
    this.offset = mark.offset;
  }

  isSegmentStart(offset: number): boolean {
    return offset === this.recordOffsetMinBytes;
  }

  private moveToNextSegment(): void {
    if (this.segment >= this.segmentNumberMax) {
      throw fsError('LIMIT', `no segment number after ${this.segment} (max ${this.segmentNumberMax})`, 'segment space');
    }
    this.segment += 1;
    this.offset = this.recordOffsetMinBytes;
  }

  private assertRecordSize(sizeBytes: number): void {
    // The hot path is one comparison chain; messages are built only when it fails.
    if (Number.isSafeInteger(sizeBytes) && sizeBytes > 0 && sizeBytes <= this.recordSizeMaxBytes) return;
    if (!Number.isSafeInteger(sizeBytes)) assert(false, `record size ${sizeBytes} is an integer`);
    if (!(sizeBytes > 0)) assert(false, `record size ${sizeBytes} is positive`);
    if (!(sizeBytes <= this.recordSizeMaxBytes)) assert(false, `record size ${sizeBytes} fits in a segment (max ${this.recordSizeMaxBytes})`);
  }
}
