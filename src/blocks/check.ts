/**
 * Read-only check of a segments directory in one pass: every segment file is scanned once
 * (scan.ts verifies each record's checksum), every valid record goes into a RecordIndex that
 * the store checker then uses to verify block pointers without reading them again, and every
 * damaged region, torn tail and byte beyond the committed head is reported as a finding that
 * names the file and the offset.
 *
 * Nothing here modifies a file: a mount's open-time recovery (recovery.ts) cuts tails; fsck
 * reports them and cuts only in repair mode, after saving the bytes.
 */
import * as fs from 'node:fs';
import type { SegmentSpaceMark } from '../alloc/index.js';
import { assert } from '../errors.js';
import * as blockRecord from './record.js';
import { scanSegmentFile } from './scan.js';
import { listSegmentNumbers, segmentPath } from './segment-files.js';
import * as segmentHeader from './segment-header.js';

export type SegmentFindingCode =
  /** Damage that valid records follow (a flipped byte, a bad record in the middle). */
  | 'segment-corrupt'
  /** A segment header that does not verify. */
  | 'segment-header'
  /** Damage with nothing valid after it, inside the referenced part of a segment. */
  | 'torn-tail'
  /** Bytes of the head segment past the committed head (an interrupted append, never referenced). */
  | 'unreferenced-tail'
  /** A whole segment file numbered above the committed head. */
  | 'segment-beyond-head'
  /** The head segment is shorter than the committed head says, or missing (referenced bytes lost). */
  | 'segment-short';

/** One thing wrong with the segment files, naming the file and offset. */
export interface SegmentFinding {
  readonly code: SegmentFindingCode;
  readonly segment: number;
  readonly file: string;
  readonly offset: number;
  readonly lengthBytes: number;
  readonly message: string;
}

/** Owner and length of one valid record. */
export interface IndexedRecord {
  readonly ino: number;
  readonly blockIndex: number;
  readonly lengthBytes: number;
}

/**
 * Every valid record of a segments directory by location. Per segment, records are kept in
 * file order in parallel arrays (offsets ascending, so a lookup is a binary search): about
 * 32 bytes a record, 8 MB for 1 GiB of blocks.
 */
export class RecordIndex {
  private readonly bySegment = new Map<number, { offsets: number[]; inos: number[]; blockIndexes: number[]; lengths: number[] }>();

  /** Adds a record; records of one segment must come in ascending offset order (as a scan yields them). */
  add(segment: number, offset: number, record: IndexedRecord): void {
    let s = this.bySegment.get(segment);
    if (s === undefined) {
      s = { offsets: [], inos: [], blockIndexes: [], lengths: [] };
      this.bySegment.set(segment, s);
    }
    assert(s.offsets.length === 0 || s.offsets[s.offsets.length - 1]! < offset, `records of segment ${segment} are added in offset order`);
    s.offsets.push(offset);
    s.inos.push(record.ino);
    s.blockIndexes.push(record.blockIndex);
    s.lengths.push(record.lengthBytes);
  }

  /** The valid record that starts at (segment, offset), if any. */
  get(segment: number, offset: number): IndexedRecord | undefined {
    const s = this.bySegment.get(segment);
    if (s === undefined) return undefined;
    let low = 0;
    let high = s.offsets.length - 1;
    while (low <= high) {
      const mid = (low + high) >>> 1;
      const at = s.offsets[mid]!;
      if (at === offset) return { ino: s.inos[mid]!, blockIndex: s.blockIndexes[mid]!, lengthBytes: s.lengths[mid]! };
      if (at < offset) low = mid + 1;
      else high = mid - 1;
    }
    return undefined;
  }

  /** Every record in log order (segment ascending, then offset): later records are newer. */
  *records(): Generator<IndexedRecord & { segment: number; offset: number }> {
    for (const segment of [...this.bySegment.keys()].sort((a, b) => a - b)) {
      const s = this.bySegment.get(segment)!;
      for (let i = 0; i < s.offsets.length; i++) {
        yield { segment, offset: s.offsets[i]!, ino: s.inos[i]!, blockIndex: s.blockIndexes[i]!, lengthBytes: s.lengths[i]! };
      }
    }
  }

  /** End offset of the last valid record of `segment` (the header size when it has none). */
  endOf(segment: number): number {
    const s = this.bySegment.get(segment);
    if (s === undefined || s.offsets.length === 0) return segmentHeader.headerSizeBytes;
    const last = s.offsets.length - 1;
    return s.offsets[last]! + blockRecord.size(s.lengths[last]!);
  }
}

export interface SegmentCheck {
  readonly dir: string;
  /** Segment files present. */
  readonly segments: readonly number[];
  /** Sizes of the segment files, by number. */
  readonly sizes: ReadonlyMap<number, number>;
  readonly records: RecordIndex;
  readonly recordCount: number;
  readonly recordBytes: number;
  readonly findings: SegmentFinding[];
}

export interface SegmentCheckOptions {
  /** The committed head mark, when metadata is available: bytes past it are reported. */
  readonly head?: SegmentSpaceMark | undefined;
  /** Called with bytes scanned so far, about every MiB. */
  readonly progress?: ((bytesDone: number) => void) | undefined;
}

/** Scans every segment file of `dir` once, read-only, and returns the record index and the findings. */
export function checkSegments(dir: string, options: SegmentCheckOptions = {}): SegmentCheck {
  const segments = fs.existsSync(dir) ? listSegmentNumbers(dir) : [];
  const records = new RecordIndex();
  const findings: SegmentFinding[] = [];
  const sizes = new Map<number, number>();
  const head = options.head;
  let recordCount = 0;
  let recordBytes = 0;
  let bytesDone = 0;
  let reported = 0;
  for (const segment of segments) {
    const file = segmentPath(dir, segment);
    const sizeBytes = fs.statSync(file).size;
    sizes.set(segment, sizeBytes);
    const limit = head === undefined ? sizeBytes : segment < head.segment ? sizeBytes : segment === head.segment ? head.offset : segmentHeader.headerSizeBytes;
    if (head !== undefined && segment > head.segment) {
      findings.push({ code: 'segment-beyond-head', segment, file, offset: 0, lengthBytes: sizeBytes, message: `segment file numbered above the committed head (segment ${head.segment}): ${sizeBytes} bytes nothing references` });
    } else if (head !== undefined && segment === head.segment && sizeBytes > head.offset) {
      findings.push({ code: 'unreferenced-tail', segment, file, offset: head.offset, lengthBytes: sizeBytes - head.offset, message: `${sizeBytes - head.offset} bytes past the committed head (an interrupted append); a mount would cut them` });
    }
    for (const item of scanSegmentFile(file, segment)) {
      if (item.kind === 'record') {
        records.add(segment, item.loc.offset, { ino: item.ino, blockIndex: item.blockIndex, lengthBytes: item.loc.lengthBytes });
        recordCount++;
        const size = blockRecord.size(item.loc.lengthBytes);
        recordBytes += size;
        bytesDone += size;
        if (options.progress !== undefined && bytesDone - reported >= 1 << 20) {
          reported = bytesDone;
          options.progress(bytesDone);
        }
        continue;
      }
      // Damage at or past the committed head is the unreferenced tail reported above.
      if (item.offset >= limit && item.offset > 0) continue;
      const code = item.offset === 0 ? 'segment-header' : item.kind === 'torn' ? 'torn-tail' : 'segment-corrupt';
      findings.push({ code, segment, file, offset: item.offset, lengthBytes: item.lengthBytes, message: `${item.lengthBytes} damaged bytes: ${item.error.message}` });
    }
  }
  if (head !== undefined && head.offset > segmentHeader.headerSizeBytes) {
    const actual = sizes.get(head.segment);
    if (actual === undefined || actual < head.offset) {
      const file = segmentPath(dir, head.segment);
      findings.push({ code: 'segment-short', segment: head.segment, file, offset: actual ?? 0, lengthBytes: head.offset - (actual ?? 0), message: actual === undefined ? `head segment is missing; the committed head says it holds ${head.offset} bytes` : `holds ${actual} bytes, the committed head says ${head.offset}` });
    }
  }
  return { dir, segments, sizes, records, recordCount, recordBytes, findings };
}
