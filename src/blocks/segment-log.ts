/**
 * The append-only segment log: block records appended to numbered segment files, read back
 * by location, verified on every read.
 *
 * Lifecycle of an append, as the layer above uses it:
 *   1. append(records) places each record with the SegmentSpaceAllocator and writes one
 *      buffer per segment touched (no fsync);
 *   2. sync() makes every segment written since the last sync durable (and the directory,
 *      when a segment file was created);
 *   3. the caller commits metadata that references the locations, with head() as the new
 *      high-water mark, in one LMDB transaction;
 *   4. after a crash, open(dir, { head }) cuts whatever lies beyond that committed mark.
 *
 * Invariants:
 * - Records never straddle segments; a segment file never grows beyond the configured
 *   maximum it was started with.
 * - The file of the head segment exists exactly when the head offset is beyond the segment
 *   header, and its size is then the head offset (up to records appended but not synced).
 * - read() returns the payload only after magic, version, length, checksum and owner have
 *   been verified; anything else is a CORRUPT error naming the file and offset.
 * - After a failed fdatasync the log refuses further appends and syncs (the kernel may have
 *   dropped the dirty pages, so retrying could report success for lost data); reads still work.
 */
import * as fs from 'node:fs';
import { BumpSegmentSpaceAllocator, type SegmentSpaceMark } from '../alloc/index.js';
import { assert, corrupt, fsError, type FsError } from '../errors.js';
import { segmentSizeMaxBytesDefault, segmentSizeMaxBytesLimit } from '../limits.js';
import type { BlockLocation } from './location.js';
import * as blockRecord from './record.js';
import { recover, validateHead, type SegmentLogOpenReport } from './recovery.js';
import { scanSegmentFile, type ScanItem } from './scan.js';
import {
  fsyncDir, listSegmentNumbers, readvFully, segmentNumberMax, segmentPath, toFsError, writevFully,
} from './segment-files.js';
import * as segmentHeader from './segment-header.js';

/** A block to append: its owner (inode number, block index) and its payload of 1..4096 bytes. */
export interface BlockRecordInput {
  readonly ino: number;
  readonly blockIndex: number;
  readonly payload: Uint8Array;
}

/** Options of SegmentLog.open. */
/** Free disk space kept for metadata (LMDB) when data appends fill the disk. */
export const spaceReserveBytes = 4 * 1024 * 1024;

export interface SegmentLogOptions {
  /** Maximum size of a segment file; default limits.segmentSizeMaxBytesDefault (64 MiB). */
  readonly segmentSizeMaxBytes?: number | undefined;
  /** The high-water mark committed with the metadata; undefined when there is no metadata. */
  readonly head?: SegmentSpaceMark | undefined;
  /** Most file descriptors kept open for reading old segments; default 64. */
  readonly openFileCountMax?: number | undefined;
}

/** Number of the first segment of an empty log; segment 0 is never used, so a zeroed location is never valid. */
export const segmentNumberFirst = 1;
/** Default bound on open segment file descriptors. */
export const openFileCountMaxDefault = 64;
/** An append skips statfs while its estimate of free space is younger than this... */
const freeEstimateMaxAgeMs = 1000;
/** ...and stays this far above the reserve (others may fill the disk meanwhile). */
const freeEstimateMarginBytes = 256 * 1024 * 1024;
/** Vectors per gather write (two per record), well below IOV_MAX (1024). */
const appendVectorCountMax = 512;
/** Records per scatter read: two vectors each, well below IOV_MAX (1024). */
const runRecordCountMax = 256;
/** The smallest segment that holds a header and one record of the largest size. */
const segmentSizeMinBytes = segmentHeader.headerSizeBytes + blockRecord.recordSizeMaxBytes;

interface OpenFile {
  readonly fd: number;
  readonly writable: boolean;
}

/** The append-only log of block records in `<dir>/NNNNNNNN.seg` files. */
export class SegmentLog {
  readonly dir: string;
  readonly segmentSizeMaxBytes: number;
  /** What open found and did; log it with formatOpenReport(). */
  readonly openReport: SegmentLogOpenReport;
  private readonly allocator: BumpSegmentSpaceAllocator;
  private readonly openFileCountMax: number;
  /** Open descriptors, least recently used first. */
  private readonly files = new Map<number, OpenFile>();
  private readonly segmentSet: Set<number>;
  /** Segments written since the last sync; their descriptors stay open until synced. */
  private readonly dirty = new Set<number>();
  private dirDirty = false;
  /** Record headers (and a segment header) of the gather write in progress. */
  private readonly headerBuffer: Buffer = Buffer.allocUnsafeSlow(segmentHeader.headerSizeBytes + (appendVectorCountMax / 2) * blockRecord.headerSizeBytes);
  /** Record headers of a scatter read (readRunInto). */
  private headerScratch: Buffer = Buffer.alloc(0);
  /** Checksums of one append flush or one read run, computed by one native call. */
  private readonly checksumScratch = new Uint32Array(Math.max(appendVectorCountMax / 2, runRecordCountMax));
  private failure: FsError | undefined;
  /** Free bytes of the file system as of the last statfs, minus what was appended since. */
  private freeEstimateBytes = 0;
  private freeCheckedAtMs = 0;
  private closed = false;

  private constructor(dir: string, segmentSizeMaxBytes: number, openFileCountMax: number, report: SegmentLogOpenReport, segments: number[]) {
    this.dir = dir;
    this.segmentSizeMaxBytes = segmentSizeMaxBytes;
    this.openFileCountMax = openFileCountMax;
    this.openReport = report;
    this.segmentSet = new Set(segments);
    this.allocator = BumpSegmentSpaceAllocator.fromMark(report.head, {
      segmentSizeMaxBytes,
      recordOffsetMinBytes: segmentHeader.headerSizeBytes,
      segmentNumberFirst,
      segmentNumberMax,
    });
  }

  /**
   * Opens (creating if needed) the log in `dir`, recovers it against the committed `head`
   * (see recovery.ts for the rules) and returns it with a report of what was found and done.
   */
  static open(dir: string, options: SegmentLogOptions = {}): { log: SegmentLog; report: SegmentLogOpenReport } {
    const segmentSizeMaxBytes = options.segmentSizeMaxBytes ?? segmentSizeMaxBytesDefault;
    const openFileCountMax = options.openFileCountMax ?? openFileCountMaxDefault;
    if (!Number.isSafeInteger(segmentSizeMaxBytes) || segmentSizeMaxBytes < segmentSizeMinBytes || segmentSizeMaxBytes > segmentSizeMaxBytesLimit) {
      throw fsError('EINVAL', `segment size ${segmentSizeMaxBytes} outside ${segmentSizeMinBytes}..${segmentSizeMaxBytesLimit}`, dir);
    }
    if (!Number.isSafeInteger(openFileCountMax) || openFileCountMax < 1) {
      throw fsError('EINVAL', `open file count ${openFileCountMax} is not a positive integer`, dir);
    }
    if (options.head !== undefined) validateHead(options.head, segmentNumberFirst, segmentNumberMax);
    try {
      fs.mkdirSync(dir, { recursive: true });
    } catch (e) {
      throw toFsError(e, 'cannot create the segments directory', dir);
    }
    const { report, segments } = recover({
      dir, segments: listSegmentNumbers(dir), head: options.head, segmentNumberFirst, segmentSizeMaxBytes,
    });
    const log = new SegmentLog(dir, segmentSizeMaxBytes, openFileCountMax, report, segments);
    return { log, report };
  }

  /**
   * Appends the records in order and returns their locations (same order). Writes one buffer
   * per segment touched; does not fsync. On failure nothing of this call remains and the
   * error is ENOSPC or EIO.
   */
  append(records: readonly BlockRecordInput[]): BlockLocation[] {
    this.assertWritable();
    for (const r of records) assertRecordInput(r);
    this.assertSpaceLeft(records.reduce((sum, r) => sum + blockRecord.size(r.payload.length), 0));
    const before = this.allocator.mark();
    const created: number[] = [];
    const locations: BlockLocation[] = [];
    try {
      let next = 0;
      while (next < records.length) next = this.appendRun(records, next, locations, created);
    } catch (e) {
      this.rollBack(before, created);
      throw toFsError(e, 'append failed', this.dir);
    }
    return locations;
  }

  /**
   * Returns the payload of the record at `loc` after verifying magic, version, length,
   * checksum and that it belongs to (expectedIno, expectedBlockIndex); otherwise throws CORRUPT
   * naming the segment file and offset. Never returns wrong bytes.
   */
  read(loc: BlockLocation, expectedIno: number, expectedBlockIndex: number): Buffer {
    const payload = Buffer.allocUnsafe(loc.lengthBytes);
    this.readRunInto([loc], [expectedIno], [expectedBlockIndex], [payload]);
    return payload;
  }

  /**
   * Reads records that lie back to back in one segment (each starts where the previous one
   * ends), verifying each exactly as read() does. `locs[i]` must belong to (inos[i],
   * blockIndexes[i]). Returns the payloads, which share one buffer.
   */
  readRun(locs: readonly BlockLocation[], inos: readonly number[], blockIndexes: readonly number[]): Buffer[] {
    const total = locs.reduce((sum, loc) => sum + loc.lengthBytes, 0);
    const buf = Buffer.allocUnsafe(total);
    const targets: Buffer[] = [];
    let at = 0;
    for (const loc of locs) {
      targets.push(buf.subarray(at, at + loc.lengthBytes));
      at += loc.lengthBytes;
    }
    this.readRunInto(locs, inos, blockIndexes, targets);
    return targets;
  }

  /**
   * Like readRun, but reads each payload straight into `targets[i]` (at its start; the caller's
   * buffers, at least locs[i].lengthBytes long) with one scatter read (preadv) per run: no
   * buffer is allocated. On failure the targets hold unspecified bytes.
   */
  readRunInto(locs: readonly BlockLocation[], inos: readonly number[], blockIndexes: readonly number[], targets: readonly Uint8Array[]): void {
    this.assertOpen();
    const first = locs[0];
    if (first === undefined) return;
    assert(inos.length === locs.length && blockIndexes.length === locs.length && targets.length === locs.length,
      `a run of ${locs.length} locations has as many owners and targets`);
    for (let start = 0; start < locs.length; start += runRecordCountMax) {
      this.readRunSlice(locs, inos, blockIndexes, targets, start, Math.min(locs.length, start + runRecordCountMax));
    }
  }

  private readRunSlice(locs: readonly BlockLocation[], inos: readonly number[], blockIndexes: readonly number[],
    targets: readonly Uint8Array[], start: number, end: number): void {
    const first = locs[start]!;
    const count = end - start;
    if (this.headerScratch.length < count * blockRecord.headerSizeBytes) this.headerScratch = Buffer.allocUnsafeSlow(runRecordCountMax * blockRecord.headerSizeBytes);
    const headers = this.headerScratch;
    const vectors: Uint8Array[] = [];
    let spanBytes = 0;
    for (let i = start; i < end; i++) {
      const loc = locs[i]!;
      // Error places are built only on failure: this is the hot path of every cache miss.
      checkLocation(loc, this);
      if (loc.segment !== first.segment || loc.offset !== first.offset + spanBytes) assert(false, `records of a run are adjacent: ${this.place(loc)}`);
      const target = targets[i]!;
      if (target.length < loc.lengthBytes) assert(false, `target of ${target.length} bytes holds ${loc.lengthBytes}`);
      const h = (i - start) * blockRecord.headerSizeBytes;
      vectors.push(headers.subarray(h, h + blockRecord.headerSizeBytes), target.length === loc.lengthBytes ? target : target.subarray(0, loc.lengthBytes));
      spanBytes += blockRecord.size(loc.lengthBytes);
    }
    const fd = this.fdForRead(first);
    let got: number;
    try {
      got = readvFully(fd, vectors, spanBytes, first.offset);
    } catch (e) {
      throw toFsError(e, `read of ${spanBytes} bytes failed`, this.place(first));
    }
    // The checksums of every record read in full, with one native call; each is then checked in order.
    let complete = 0;
    for (let i = start, readBytes = 0; i < end; i++, complete++) {
      readBytes += blockRecord.size(locs[i]!.lengthBytes);
      if (got < readBytes) break;
    }
    const computed = this.checksumScratch;
    blockRecord.computeChecksums(headers, 0, complete, vectors, 1, 2, computed);
    let at = 0;
    for (let i = start; i < end; i++) {
      const loc = locs[i]!;
      const sizeBytes = blockRecord.size(loc.lengthBytes);
      if (got < at + sizeBytes) throw corrupt(`short read: ${Math.max(0, got - at)} of ${sizeBytes} bytes (the file ends early)`, this.place(loc));
      const h = (i - start) * blockRecord.headerSizeBytes;
      const owner = blockRecord.tryVerifySplit(headers, h, vectors[2 * (i - start) + 1]!, computed[i - start]!);
      if (typeof owner === 'string') throw corrupt(owner, this.place(loc));
      if (owner.ino !== inos[i] || owner.blockIndex !== blockIndexes[i]) {
        throw corrupt(`record belongs to ino ${owner.ino} block ${owner.blockIndex}, expected ino ${inos[i]} block ${blockIndexes[i]}`, this.place(loc));
      }
      at += sizeBytes;
    }
  }

  /**
   * Refuses (ENOSPC) an append that would leave less than spaceReserveBytes free on the disk.
   * Data fails first, while metadata still has room: LMDB must never hit a full disk (after a
   * failed page write the lmdb package's state is not to be trusted), and the commits that
   * free space (unlink, truncate) must keep working, like ext4's reserved blocks.
   */
  private assertSpaceLeft(appendBytes: number): void {
    const now = Date.now();
    // Far from full, a fresh-enough estimate answers without a statfs per append.
    if (now - this.freeCheckedAtMs < freeEstimateMaxAgeMs && this.freeEstimateBytes - appendBytes >= spaceReserveBytes + freeEstimateMarginBytes) {
      this.freeEstimateBytes -= appendBytes;
      return;
    }
    const stats = fs.statfsSync(this.dir);
    const freeBytes = stats.bavail * stats.bsize;
    this.freeCheckedAtMs = now;
    this.freeEstimateBytes = freeBytes - appendBytes;
    if (freeBytes - appendBytes < spaceReserveBytes) {
      throw fsError('ENOSPC', `${freeBytes} bytes free, an append of ${appendBytes} bytes would leave less than the ${spaceReserveBytes}-byte reserve for metadata`, this.dir);
    }
  }

  /** Returns the place string of errors about the record at `loc`: its file and offset. */
  place(loc: BlockLocation): string {
    return blockRecord.recordPlace(this.segmentFile(loc.segment), loc.offset);
  }

  /** Makes every record appended so far durable: fdatasync of each segment written since the last sync, then the directory if a file was created or removed. */
  sync(): void {
    this.assertWritable();
    try {
      for (const segment of this.dirty) {
        const open = this.files.get(segment);
        assert(open !== undefined, `dirty segment ${segment} has an open descriptor`);
        fs.fdatasyncSync(open.fd);
      }
      if (this.dirDirty) fsyncDir(this.dir);
    } catch (e) {
      this.failure = toFsError(e, 'sync failed; the segment log refuses further writes until reopened', this.dir);
      throw this.failure;
    }
    this.dirty.clear();
    this.dirDirty = false;
  }

  /** Returns the high-water mark: the next record goes at or after it. Persist it with the metadata that references the records before it. */
  head(): SegmentSpaceMark {
    return this.allocator.mark();
  }

  /** Returns the numbers of the existing segment files, ascending. */
  segments(): number[] {
    return [...this.segmentSet].sort((a, b) => a - b);
  }

  /** Returns the path of the file of `segment` (whether or not it exists). */
  segmentFile(segment: number): string {
    return Number.isSafeInteger(segment) && segment >= 0 && segment <= segmentNumberMax
      ? segmentPath(this.dir, segment)
      : `${this.dir}/<invalid segment ${segment}>`;
  }

  /**
   * Yields every record and damaged region of `segment` in file order (see scan.ts): records
   * as {kind:'record', loc, ino, blockIndex, payload}, damage as {kind:'corrupt'|'torn', ...}.
   * Throws ENOENT when the segment does not exist.
   */
  *scan(segment: number): Generator<ScanItem> {
    this.assertOpen();
    if (!this.segmentSet.has(segment)) throw fsError('ENOENT', 'no such segment', this.segmentFile(segment));
    yield* scanSegmentFile(this.segmentFile(segment), segment);
  }

  /** Deletes the file of `segment` (never the head segment) and makes the deletion durable. */
  removeSegment(segment: number): void {
    this.assertWritable();
    assert(segment !== this.allocator.mark().segment, `segment ${segment} is not the head segment`);
    const file = this.segmentFile(segment);
    if (!this.segmentSet.has(segment)) throw fsError('ENOENT', 'no such segment', file);
    this.closeFile(segment);
    this.dirty.delete(segment);
    try {
      fs.unlinkSync(file);
      this.segmentSet.delete(segment);
      fsyncDir(this.dir);
    } catch (e) {
      throw toFsError(e, 'cannot remove segment', file);
    }
  }

  /** Closes every file descriptor. Does not sync: call sync() first to keep unsynced appends across power loss. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const segment of [...this.files.keys()]) this.closeFile(segment);
  }

  /**
   * Appends the run of records from `first` that land in one segment; returns the index after
   * the run. Gather writes (pwritev): headers are encoded into `headerBuffer`, payloads are
   * written from the caller's buffers without a copy. The headers of one write are sealed
   * (checksummed) together, with one native call, just before the write.
   */
  private appendRun(records: readonly BlockRecordInput[], first: number, locations: BlockLocation[], created: number[]): number {
    const segment = this.allocator.segmentFor(blockRecord.size(recordAt(records, first).payload.length));
    const headers = this.headerBuffer;
    let fd: number | undefined;
    let writeOffset = 0;
    let fill = 0;
    let vectors: Uint8Array[] = [];
    let vectorBytes = 0;
    // The record headers not sealed yet start at headers[sealAt] and at vectors[sealVector].
    let sealAt = 0;
    let sealVector = 0;
    const flush = (target: number): void => {
      const count = (fill - sealAt) / blockRecord.headerSizeBytes;
      if (count > 0) blockRecord.sealHeaders(headers, sealAt, count, vectors, sealVector + 1, 2, this.checksumScratch);
      writevFully(target, vectors, vectorBytes, writeOffset);
      writeOffset += vectorBytes;
      vectors = [];
      vectorBytes = 0;
      fill = 0;
      sealAt = 0;
      sealVector = 0;
    };
    let index = first;
    for (; index < records.length; index++) {
      const record = recordAt(records, index);
      const sizeBytes = blockRecord.size(record.payload.length);
      if (this.allocator.segmentFor(sizeBytes) !== segment) break;
      const range = this.allocator.allocate(sizeBytes);
      if (fd === undefined) {
        writeOffset = range.offset;
        if (this.allocator.isSegmentStart(range.offset)) {
          fd = this.createSegment(segment, created);
          fill = segmentHeader.encode(headers, 0, { segment, segmentSizeMaxBytes: this.segmentSizeMaxBytes });
          vectors.push(headers.subarray(0, fill));
          vectorBytes = fill;
          sealAt = fill;
          sealVector = vectors.length;
          writeOffset = 0;
        } else {
          fd = this.fdForWrite(segment);
        }
        this.dirty.add(segment);
      }
      if (fill + blockRecord.headerSizeBytes > headers.length || vectors.length + 2 > appendVectorCountMax) flush(fd);
      blockRecord.encodeHeaderUnsealed(headers, fill, record.ino, record.blockIndex, record.payload);
      vectors.push(headers.subarray(fill, fill + blockRecord.headerSizeBytes), record.payload);
      fill += blockRecord.headerSizeBytes;
      vectorBytes += sizeBytes;
      locations.push({ segment, offset: range.offset, lengthBytes: record.payload.length });
    }
    assert(fd !== undefined, `append run from record ${first} placed at least one record`);
    flush(fd);
    return index;
  }

  /** Undoes a failed append: allocator back to `before`, files created removed, the old head segment cut back. */
  private rollBack(before: SegmentSpaceMark, created: readonly number[]): void {
    try {
      this.allocator.restore(before);
      for (const segment of created) {
        this.closeFile(segment);
        this.dirty.delete(segment);
        fs.rmSync(this.segmentFile(segment), { force: true });
        this.segmentSet.delete(segment);
        this.dirDirty = true;
      }
      const open = this.files.get(before.segment);
      if (open !== undefined && open.writable && !created.includes(before.segment)) fs.ftruncateSync(open.fd, before.offset);
    } catch (e) {
      this.failure = toFsError(e, 'rollback of a failed append failed; the segment log refuses further writes until reopened', this.dir);
    }
  }

  private createSegment(segment: number, created: number[]): number {
    const file = this.segmentFile(segment);
    assert(!this.segmentSet.has(segment), `segment file ${file} does not exist before the head reaches it`);
    const flags = fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL;
    const fd = fs.openSync(file, flags, 0o600);
    created.push(segment);
    this.segmentSet.add(segment);
    this.dirDirty = true;
    this.files.set(segment, { fd, writable: true });
    this.evict(segment);
    return fd;
  }

  private fdForWrite(segment: number): number {
    const open = this.touch(segment);
    if (open?.writable === true) return open.fd;
    if (open !== undefined) this.closeFile(segment);
    const fd = fs.openSync(this.segmentFile(segment), 'r+');
    this.files.set(segment, { fd, writable: true });
    this.evict(segment);
    return fd;
  }

  private fdForRead(loc: BlockLocation): number {
    const segment = loc.segment;
    const open = this.touch(segment);
    if (open !== undefined) return open.fd;
    if (!this.segmentSet.has(segment)) throw corrupt('segment file does not exist', this.place(loc));
    let fd: number;
    try {
      fd = fs.openSync(this.segmentFile(segment), 'r');
    } catch (e) {
      const error = toFsError(e, 'cannot open segment file', this.place(loc));
      throw error.code === 'ENOENT' ? corrupt('segment file does not exist', this.place(loc)) : error;
    }
    this.files.set(segment, { fd, writable: false });
    this.evict(segment);
    return fd;
  }

  /** Returns the open descriptor of `segment`, marking it most recently used. */
  private touch(segment: number): OpenFile | undefined {
    const open = this.files.get(segment);
    if (open !== undefined) {
      this.files.delete(segment);
      this.files.set(segment, open);
    }
    return open;
  }

  /** Closes least recently used descriptors beyond the bound, never `keep`, a dirty segment or the head segment. */
  private evict(keep: number): void {
    if (this.files.size <= this.openFileCountMax) return;
    const headSegment = this.allocator.mark().segment;
    for (const segment of [...this.files.keys()]) {
      if (this.files.size <= this.openFileCountMax) return;
      if (segment === keep || segment === headSegment || this.dirty.has(segment)) continue;
      this.closeFile(segment);
    }
  }

  private closeFile(segment: number): void {
    const open = this.files.get(segment);
    if (open === undefined) return;
    this.files.delete(segment);
    fs.closeSync(open.fd);
  }

  private assertOpen(): void {
    if (this.closed) throw fsError('EBADF', 'segment log is closed', this.dir);
  }

  private assertWritable(): void {
    this.assertOpen();
    if (this.failure !== undefined) throw this.failure;
  }
}

function recordAt(records: readonly BlockRecordInput[], index: number): BlockRecordInput {
  const record = records[index];
  if (record === undefined) throw fsError('ASSERT', `record ${index} exists`);
  return record;
}

function assertRecordInput(r: BlockRecordInput): void {
  const length = r.payload.length;
  if (Number.isSafeInteger(r.ino) && r.ino >= 0 && Number.isSafeInteger(r.blockIndex) && r.blockIndex >= 0
    && length >= blockRecord.payloadLengthMinBytes && length <= blockRecord.payloadLengthMaxBytes) return;
  assert(Number.isSafeInteger(r.ino) && r.ino >= 0, `ino ${r.ino} is a u53`);
  assert(Number.isSafeInteger(r.blockIndex) && r.blockIndex >= 0, `block index ${r.blockIndex} is a u53`);
  assert(r.payload.length >= blockRecord.payloadLengthMinBytes && r.payload.length <= blockRecord.payloadLengthMaxBytes,
    `payload of ${r.payload.length} bytes within ${blockRecord.payloadLengthMinBytes}..${blockRecord.payloadLengthMaxBytes}`);
}

/** Throws CORRUPT when `loc` cannot be the location of a record (metadata damage). */
function checkLocation(loc: BlockLocation, log: SegmentLog): void {
  const { segment, offset, lengthBytes } = loc;
  const segmentOk = Number.isSafeInteger(segment) && segment >= segmentNumberFirst && segment <= segmentNumberMax;
  const lengthOk = Number.isSafeInteger(lengthBytes) && lengthBytes >= blockRecord.payloadLengthMinBytes
    && lengthBytes <= blockRecord.payloadLengthMaxBytes;
  const offsetOk = Number.isSafeInteger(offset) && offset >= segmentHeader.headerSizeBytes
    && offset + blockRecord.size(lengthBytes) <= segmentSizeMaxBytesLimit;
  if (segmentOk && lengthOk && offsetOk) return;
  const what = !segmentOk ? `segment number ${segment}` : !lengthOk ? `payload length ${lengthBytes}` : `offset ${offset}`;
  throw corrupt(`invalid ${what} in block location`, log.place(loc));
}
