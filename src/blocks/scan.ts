/**
 * Read-only scanning of a segment file: every record in order, and every damaged region.
 *
 * Records are not aligned, so after a record that does not verify the scanner searches
 * forward byte by byte for the next position where a whole record verifies (magic, header
 * fields and checksum). The region in between is reported as `corrupt` when a valid record
 * follows it, or as `torn` when nothing valid follows up to the end of the file: a torn tail
 * is what an interrupted append leaves behind. The search costs nothing on undamaged files.
 *
 * The scanner reads in chunks of a bounded size with positional reads, never modifies the
 * file and owns the file descriptor it opens (so a suspended scan cannot be hurt by the log
 * closing its own descriptors). fsck uses it directly on a segments directory.
 */
import * as fs from 'node:fs';
import { corrupt, type FsError } from '../errors.js';
import type { BlockLocation } from './location.js';
import * as blockRecord from './record.js';
import { readFully, toFsError } from './segment-files.js';
import * as segmentHeader from './segment-header.js';

/** Bytes read per chunk while scanning. */
export const scanChunkSizeBytes = 1024 * 1024;

/** A valid record found by a scan. `payload` is a view into a chunk buffer that the scanner does not reuse. */
export interface ScannedRecord {
  readonly kind: 'record';
  readonly loc: BlockLocation;
  readonly ino: number;
  readonly blockIndex: number;
  readonly payload: Buffer;
}

/** A damaged region: `corrupt` when valid records follow it, `torn` when it runs to the end of the file. */
export interface ScannedDamage {
  readonly kind: 'corrupt' | 'torn';
  readonly segment: number;
  readonly offset: number;
  readonly lengthBytes: number;
  readonly error: FsError;
}

/** Damage that valid records follow (or a segment header that does not verify). */
export interface ScannedCorrupt extends ScannedDamage {
  readonly kind: 'corrupt';
}

/** Damage that runs to the end of the file: what an interrupted append leaves. */
export interface ScannedTorn extends ScannedDamage {
  readonly kind: 'torn';
}

/** One item of a scan, in file order. */
export type ScanItem = ScannedRecord | ScannedCorrupt | ScannedTorn;

/** Totals of a scan, for reports. */
export interface ScanSummary {
  recordCount: number;
  recordBytes: number;
  corruptBytes: number;
  tornBytes: number;
  /** End of the last valid record (or the scan start when there is none). */
  validEndOffset: number;
  /** Offset of the first damaged byte, or undefined when the scanned range is clean. */
  firstDamageOffset: number | undefined;
  /** Offset where the torn tail starts, or undefined when there is none. */
  tornOffset: number | undefined;
}

/**
 * Yields the records and damage of segment file `file` (segment number `segment`): first a
 * `corrupt` item for a header that does not verify (or a `torn` item for a file shorter than
 * a header), then the records from the first record offset to the end of the file.
 */
export function* scanSegmentFile(file: string, segment: number): Generator<ScanItem> {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (e) {
    throw toFsError(e, 'cannot open segment file for scanning', file);
  }
  try {
    const sizeBytes = fs.fstatSync(fd).size;
    const reader = new ChunkReader(fd, file, sizeBytes);
    const header = verifyHeader(reader, segment);
    if ('kind' in header) yield header;
    if (sizeBytes < segmentHeader.headerSizeBytes) return;
    yield* scanRecords(reader, segment, segmentHeader.headerSizeBytes);
  } finally {
    fs.closeSync(fd);
  }
}

/** Yields the records and damage of an open segment file from `fromOffset` (a record boundary) to its end. */
export function* scanSegmentRange(fd: number, file: string, segment: number, fromOffset: number): Generator<ScanItem> {
  const sizeBytes = fs.fstatSync(fd).size;
  yield* scanRecords(new ChunkReader(fd, file, sizeBytes), segment, fromOffset);
}

/** Returns the verified header of an open segment file, or the damage item describing why it does not verify. */
export function readSegmentHeader(fd: number, file: string, segment: number): segmentHeader.SegmentHeader | ScannedCorrupt | ScannedTorn {
  return verifyHeader(new ChunkReader(fd, file, fs.fstatSync(fd).size), segment);
}

/** Adds up the items of a scan. */
export function summarize(items: Iterable<ScanItem>, fromOffset: number): ScanSummary {
  const summary: ScanSummary = {
    recordCount: 0, recordBytes: 0, corruptBytes: 0, tornBytes: 0, validEndOffset: fromOffset, firstDamageOffset: undefined, tornOffset: undefined,
  };
  for (const item of items) {
    if (item.kind === 'record') {
      summary.recordCount += 1;
      summary.recordBytes += blockRecord.size(item.loc.lengthBytes);
      summary.validEndOffset = item.loc.offset + blockRecord.size(item.loc.lengthBytes);
      continue;
    }
    summary.firstDamageOffset ??= item.offset;
    if (item.kind === 'corrupt') {
      summary.corruptBytes += item.lengthBytes;
    } else {
      summary.tornBytes += item.lengthBytes;
      summary.tornOffset = item.offset;
    }
  }
  return summary;
}

function verifyHeader(reader: ChunkReader, segment: number): segmentHeader.SegmentHeader | ScannedCorrupt | ScannedTorn {
  const headerBytes = segmentHeader.headerSizeBytes;
  const place = `${reader.file} offset 0`;
  if (reader.sizeBytes < headerBytes) {
    const error = corrupt(`file of ${reader.sizeBytes} bytes is shorter than a segment header (${headerBytes})`, place);
    return { kind: 'torn', segment, offset: 0, lengthBytes: reader.sizeBytes, error };
  }
  const { buf, at } = reader.window(0, headerBytes);
  const header = segmentHeader.tryDecode(buf, at);
  let reason: string | undefined;
  if (typeof header === 'string') reason = header;
  else if (header.segment !== segment) reason = `header names segment ${header.segment}, file name says ${segment}`;
  if (reason === undefined && typeof header !== 'string') return header;
  return { kind: 'corrupt', segment, offset: 0, lengthBytes: headerBytes, error: corrupt(reason ?? 'unreachable', place) };
}

function* scanRecords(reader: ChunkReader, segment: number, fromOffset: number): Generator<ScanItem> {
  let offset = fromOffset;
  while (offset < reader.sizeBytes) {
    const { buf, at } = reader.window(offset, blockRecord.recordSizeMaxBytes);
    const decoded = blockRecord.tryDecode(buf, at);
    if (typeof decoded !== 'string') {
      const loc: BlockLocation = { segment, offset, lengthBytes: decoded.payload.length };
      yield { kind: 'record', loc, ino: decoded.ino, blockIndex: decoded.blockIndex, payload: decoded.payload };
      offset += decoded.sizeBytes;
      continue;
    }
    const error = corrupt(decoded, blockRecord.recordPlace(reader.file, offset));
    const next = findNextRecord(reader, offset + 1);
    if (next === undefined) {
      yield { kind: 'torn', segment, offset, lengthBytes: reader.sizeBytes - offset, error };
      return;
    }
    yield { kind: 'corrupt', segment, offset, lengthBytes: next - offset, error };
    offset = next;
  }
}

/** Returns the first offset >= `from` where a whole record verifies, or undefined when there is none. */
function findNextRecord(reader: ChunkReader, from: number): number | undefined {
  const recordSizeMinBytes = blockRecord.size(blockRecord.payloadLengthMinBytes);
  const magic = blockRecord.recordMagicBytes;
  let position = from;
  while (position + recordSizeMinBytes <= reader.sizeBytes) {
    const { buf, at } = reader.window(position, recordSizeMinBytes);
    const found = buf.indexOf(magic, at);
    if (found === -1) {
      // A magic may straddle the end of this window: continue where its first byte could be.
      const windowEnd = position + (buf.length - at);
      if (windowEnd >= reader.sizeBytes) return undefined;
      position = Math.max(position + 1, windowEnd - magic.length + 1);
      continue;
    }
    const candidate = position + (found - at);
    const window = reader.window(candidate, blockRecord.recordSizeMaxBytes);
    if (typeof blockRecord.tryDecode(window.buf, window.at) !== 'string') return candidate;
    position = candidate + 1;
  }
  return undefined;
}

/**
 * Positional reads of a file through a chunk buffer. window(position, needBytes) returns a
 * buffer holding at least min(needBytes, size - position) bytes from `position`; a fresh
 * buffer is allocated on each refill, so views handed out earlier stay valid.
 */
class ChunkReader {
  private buf: Buffer = Buffer.alloc(0);
  private start = 0;

  constructor(
    private readonly fd: number,
    readonly file: string,
    readonly sizeBytes: number,
  ) {}

  window(position: number, needBytes: number): { buf: Buffer; at: number } {
    const need = Math.max(0, Math.min(needBytes, this.sizeBytes - position));
    if (position >= this.start && position + need <= this.start + this.buf.length) {
      return { buf: this.buf, at: position - this.start };
    }
    const length = Math.max(0, Math.min(Math.max(need, scanChunkSizeBytes), this.sizeBytes - position));
    const buf = Buffer.allocUnsafe(length);
    let got: number;
    try {
      got = readFully(this.fd, buf, length, position);
    } catch (e) {
      throw toFsError(e, `read of ${length} bytes at ${position} failed`, this.file);
    }
    this.buf = got === length ? buf : buf.subarray(0, got);
    this.start = position;
    return { buf: this.buf, at: 0 };
  }
}
