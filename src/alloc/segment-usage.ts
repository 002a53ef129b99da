/**
 * Per-segment live-byte accounting: how many bytes of each segment are still referenced.
 *
 * The layer above adds the size of every record it commits a reference to and releases it
 * when the reference goes away (overwrite, truncate, unlink, or a cleaner move). The cleaner
 * picks segments whose live ratio is low. The accounting is in memory; `entries()` and
 * `drainChanges()` give what to persist (with the metadata, in the same transaction), and
 * `fromEntries()` rebuilds it.
 *
 * Invariants: live bytes of a segment are a non-negative integer; a release never takes a
 * segment below zero (that would mean a double free, which is a bug: it throws ASSERT);
 * segments with zero live bytes have no entry.
 */
import { assert, fsError } from '../errors.js';

/** Live bytes of one segment. Plain data, serialisable. */
export interface SegmentUsageEntry {
  readonly segment: number;
  readonly liveBytes: number;
}

/** Live-byte accounting per segment. */
export interface SegmentUsageAccounting {
  /** Records that `sizeBytes` more bytes of `segment` are referenced. */
  add(segment: number, sizeBytes: number): void;
  /** Records that `sizeBytes` bytes of `segment` are no longer referenced; throws ASSERT if that would go below zero. */
  release(segment: number, sizeBytes: number): void;
  /** Returns the referenced bytes of `segment` (0 for an unknown segment). */
  liveBytes(segment: number): number;
  /** Returns liveBytes(segment) / segmentSizeBytes. */
  liveRatio(segment: number, segmentSizeBytes: number): number;
  /** Returns the segments among `segments` whose live ratio is below `liveRatioMax`, lowest ratio first. */
  segmentsBelow(liveRatioMax: number, segmentSizeBytes: number, segments: Iterable<number>): number[];
  /** Returns every segment with live bytes, in segment order, for persistence. */
  entries(): SegmentUsageEntry[];
  /** Returns the entries changed since the last drain (liveBytes 0 means: delete the persisted entry) and forgets them. */
  drainChanges(): SegmentUsageEntry[];
  /** Returns the sum of live bytes over all segments. */
  totalLiveBytes(): number;
}

/** The Map-backed implementation of SegmentUsageAccounting. */
export class SegmentUsage implements SegmentUsageAccounting {
  private readonly live = new Map<number, number>();
  private readonly changed = new Set<number>();
  private total = 0;

  /** Rebuilds the accounting from persisted entries (each segment at most once). */
  static fromEntries(entries: Iterable<SegmentUsageEntry>): SegmentUsage {
    const usage = new SegmentUsage();
    const seen = new Set<number>();
    for (const entry of entries) {
      if (!Number.isSafeInteger(entry.segment) || entry.segment < 0) {
        throw fsError('BAD_INPUT', `segment number ${entry.segment} is not a non-negative integer`, 'segment usage entries');
      }
      if (seen.has(entry.segment)) {
        throw fsError('BAD_INPUT', `segment ${entry.segment} listed twice`, 'segment usage entries');
      }
      if (!Number.isSafeInteger(entry.liveBytes) || entry.liveBytes < 0) {
        throw fsError('BAD_INPUT', `segment ${entry.segment} has live bytes ${entry.liveBytes}`, 'segment usage entries');
      }
      seen.add(entry.segment);
      if (entry.liveBytes > 0) usage.live.set(entry.segment, entry.liveBytes);
      usage.total += entry.liveBytes;
    }
    return usage;
  }

  add(segment: number, sizeBytes: number): void {
    assertSegment(segment);
    assertSize(sizeBytes);
    this.live.set(segment, (this.live.get(segment) ?? 0) + sizeBytes);
    this.total += sizeBytes;
    this.changed.add(segment);
  }

  release(segment: number, sizeBytes: number): void {
    assertSegment(segment);
    assertSize(sizeBytes);
    const before = this.live.get(segment) ?? 0;
    if (!(before >= sizeBytes)) assert(false, `release of ${sizeBytes} bytes from segment ${segment} that has only ${before} live bytes`);
    const after = before - sizeBytes;
    if (after === 0) this.live.delete(segment);
    else this.live.set(segment, after);
    this.total -= sizeBytes;
    this.changed.add(segment);
  }

  liveBytes(segment: number): number {
    return this.live.get(segment) ?? 0;
  }

  liveRatio(segment: number, segmentSizeBytes: number): number {
    assert(Number.isSafeInteger(segmentSizeBytes) && segmentSizeBytes > 0, `segment size ${segmentSizeBytes} is positive`);
    return this.liveBytes(segment) / segmentSizeBytes;
  }

  segmentsBelow(liveRatioMax: number, segmentSizeBytes: number, segments: Iterable<number>): number[] {
    assert(liveRatioMax >= 0 && liveRatioMax <= 1, `live ratio threshold ${liveRatioMax} within 0..1`);
    const below: { segment: number; ratio: number }[] = [];
    for (const segment of segments) {
      const ratio = this.liveRatio(segment, segmentSizeBytes);
      if (ratio < liveRatioMax) below.push({ segment, ratio });
    }
    below.sort((a, b) => a.ratio - b.ratio || a.segment - b.segment);
    return below.map((b) => b.segment);
  }

  entries(): SegmentUsageEntry[] {
    return [...this.live.entries()]
      .sort((a, b) => a[0] - b[0])
      .map(([segment, liveBytes]) => ({ segment, liveBytes }));
  }

  drainChanges(): SegmentUsageEntry[] {
    const changes = [...this.changed].sort((a, b) => a - b).map((segment) => ({ segment, liveBytes: this.liveBytes(segment) }));
    this.changed.clear();
    return changes;
  }

  totalLiveBytes(): number {
    return this.total;
  }
}

function assertSegment(segment: number): void {
  if (!(Number.isSafeInteger(segment) && segment >= 0)) assert(false, `segment number ${segment} is a non-negative integer`);
}

function assertSize(sizeBytes: number): void {
  if (!(Number.isSafeInteger(sizeBytes) && sizeBytes > 0)) assert(false, `byte count ${sizeBytes} is a positive integer`);
}
