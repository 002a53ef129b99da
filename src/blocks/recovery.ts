/**
 * Open-time recovery of a segments directory: bring the files in line with the committed
 * high-water mark (or, without one, cut the torn tail of the newest segment), and say what
 * was found and done in a report that names the files.
 *
 * Rules (docs/FORMAT.md "Segment files" > "Recovery" states them for readers of the format):
 * 1. With a committed head {segment N, offset H}:
 *    a. segment files numbered above N hold nothing the metadata references: removed;
 *    b. if H is the first record offset, nothing in N is referenced: file N is removed;
 *    c. if file N is missing or shorter than H, referenced bytes are gone: reported as data
 *       loss (reads of them fail with CORRUPT), and new records go to segment N + 1;
 *    d. bytes of N beyond H are unreferenced: counted (valid records vs torn bytes) and cut;
 *    e. if N's header does not verify, N is kept but sealed: new records go to N + 1.
 * 2. Without a head (no metadata, e.g. a rebuild), the newest segment is scanned from its start:
 *    a. a torn tail (damage with nothing valid after it) is cut;
 *    b. a file with no valid record at all (a torn creation) is removed, and re-created on the
 *       next append;
 *    c. damage followed by valid records, or a bad header, is kept for fsck and the segment
 *       is sealed: cutting it would destroy valid records.
 * Every cut and removal is made durable (file fsync, directory fsync) before open returns.
 *
 * Invariant on return: the file of the head segment exists exactly when the head offset is
 * beyond the first record offset, and then its size equals the head offset.
 */
import * as fs from 'node:fs';
import type { SegmentSpaceMark } from '../alloc/index.js';
import { fsError } from '../errors.js';
import { readSegmentHeader, scanSegmentFile, scanSegmentRange, summarize } from './scan.js';
import { fsyncDir, segmentFileName, segmentPath, toFsError } from './segment-files.js';
import * as segmentHeader from './segment-header.js';

/** One thing open found and did, naming the file. */
export type SegmentLogOpenEvent =
  | {
    readonly kind: 'truncated';
    readonly file: string;
    readonly segment: number;
    readonly fromSizeBytes: number;
    readonly toSizeBytes: number;
    /** Valid records past the cut: written but never referenced by committed metadata. */
    readonly unreferencedRecordCount: number;
    readonly unreferencedBytes: number;
    /** Bytes past the cut that were not valid records (an interrupted write). */
    readonly tornBytes: number;
  }
  | {
    readonly kind: 'removed';
    readonly file: string;
    readonly segment: number;
    readonly reason: 'beyond-head' | 'unreferenced' | 'no-valid-record';
    readonly sizeBytes: number;
    readonly unreferencedRecordCount: number;
    readonly tornBytes: number;
  }
  | {
    readonly kind: 'data-loss';
    readonly file: string;
    readonly segment: number;
    /** Bytes the committed head says the file holds. */
    readonly expectedSizeBytes: number;
    /** Bytes it holds (0 when the file is missing). */
    readonly actualSizeBytes: number;
  }
  | {
    readonly kind: 'sealed';
    readonly file: string;
    readonly segment: number;
    readonly reason: string;
  }
  | {
    readonly kind: 'damage-kept';
    readonly file: string;
    readonly segment: number;
    readonly corruptBytes: number;
    readonly firstDamageOffset: number;
    readonly message: string;
  };

/** What SegmentLog.open found and did. */
export interface SegmentLogOpenReport {
  readonly dir: string;
  /** The head the caller passed (the mark committed with the metadata), if any. */
  readonly headGiven: SegmentSpaceMark | undefined;
  /** Where the next record goes. */
  readonly head: SegmentSpaceMark;
  /** Segment files present after recovery. */
  readonly segmentCount: number;
  readonly events: readonly SegmentLogOpenEvent[];
  /** True when committed metadata references bytes that are gone (see the data-loss events). */
  readonly dataLoss: boolean;
  /** Total valid but unreferenced records dropped. */
  readonly unreferencedRecordCount: number;
  /** Total torn bytes dropped. */
  readonly tornBytes: number;
  /** The report as log lines, each naming its file (formatOpenReport). */
  readonly messages: readonly string[];
}

/** Parameters of recovery. */
export interface RecoveryInput {
  readonly dir: string;
  readonly segments: readonly number[];
  readonly head: SegmentSpaceMark | undefined;
  readonly segmentNumberFirst: number;
  readonly segmentSizeMaxBytes: number;
}

/** Result of recovery: the report, and the segments left. */
export interface RecoveryResult {
  readonly report: SegmentLogOpenReport;
  readonly segments: number[];
}

const recordOffsetMinBytes = segmentHeader.headerSizeBytes;

/** Runs the recovery rules above on `input.dir` and returns what it did. */
export function recover(input: RecoveryInput): RecoveryResult {
  const state = new RecoveryState(input.dir, input.segments);
  const head = input.head === undefined
    ? recoverWithoutHead(state, input.segmentNumberFirst)
    : recoverWithHead(state, input.head, input.segmentSizeMaxBytes);
  if (state.dirChanged) fsyncDir(input.dir);
  const events = state.events;
  const facts: Omit<SegmentLogOpenReport, 'messages'> = {
    dir: input.dir,
    headGiven: input.head,
    head,
    segmentCount: state.segments.size,
    events,
    dataLoss: events.some((e) => e.kind === 'data-loss'),
    unreferencedRecordCount: events.reduce((n, e) => n + ('unreferencedRecordCount' in e ? e.unreferencedRecordCount : 0), 0),
    tornBytes: events.reduce((n, e) => n + ('tornBytes' in e ? e.tornBytes : 0), 0),
  };
  const report: SegmentLogOpenReport = { ...facts, messages: formatOpenReport(facts) };
  return { report, segments: [...state.segments].sort((a, b) => a - b) };
}

/** Returns the report as log lines, one per event, each naming its file. */
export function formatOpenReport(report: Omit<SegmentLogOpenReport, 'messages'>): string[] {
  const headText = `${segmentFileName(report.head.segment)} offset ${report.head.offset}`;
  const lines = [`segment log ${report.dir}: ${report.segmentCount} segment files, next record at ${headText}`];
  if (report.events.length === 0) lines.push('segment log: nothing to recover');
  for (const event of report.events) lines.push(formatEvent(event));
  return lines;
}

function formatEvent(e: SegmentLogOpenEvent): string {
  switch (e.kind) {
    case 'truncated':
      return `${e.file}: truncated from ${e.fromSizeBytes} to ${e.toSizeBytes} bytes: ${e.unreferencedRecordCount} valid records `
        + `(${e.unreferencedBytes} bytes) not referenced by committed metadata, ${e.tornBytes} torn bytes`;
    case 'removed':
      return `${e.file}: removed (${e.reason}): ${e.sizeBytes} bytes, ${e.unreferencedRecordCount} unreferenced valid records, `
        + `${e.tornBytes} torn bytes`;
    case 'data-loss':
      return `${e.file}: DATA LOSS: committed metadata references ${e.expectedSizeBytes} bytes but the file has `
        + `${e.actualSizeBytes}; blocks in the lost range will read as CORRUPT`;
    case 'sealed':
      return `${e.file}: sealed (${e.reason}); new records go to the next segment`;
    case 'damage-kept':
      return `${e.file}: ${e.corruptBytes} damaged bytes from offset ${e.firstDamageOffset} kept for fsck: ${e.message}`;
  }
}

class RecoveryState {
  readonly segments: Set<number>;
  readonly events: SegmentLogOpenEvent[] = [];
  dirChanged = false;

  constructor(readonly dir: string, segments: readonly number[]) {
    this.segments = new Set(segments);
  }

  path(segment: number): string {
    return segmentPath(this.dir, segment);
  }

  /** Removes a segment file after counting what it held. */
  remove(segment: number, reason: 'beyond-head' | 'unreferenced' | 'no-valid-record'): void {
    const file = this.path(segment);
    const summary = summarize(scanSegmentFile(file, segment), recordOffsetMinBytes);
    const sizeBytes = fileSize(file);
    unlink(file);
    this.segments.delete(segment);
    this.dirChanged = true;
    this.events.push({
      kind: 'removed', file, segment, reason, sizeBytes,
      unreferencedRecordCount: summary.recordCount, tornBytes: summary.tornBytes + summary.corruptBytes,
    });
  }
}

function recoverWithHead(state: RecoveryState, head: SegmentSpaceMark, segmentSizeMaxBytes: number): SegmentSpaceMark {
  for (const segment of [...state.segments].filter((s) => s > head.segment)) state.remove(segment, 'beyond-head');
  const segment = head.segment;
  const file = state.path(segment);
  const next = { segment: segment + 1, offset: recordOffsetMinBytes };
  // Rule 1b: nothing in the head segment is referenced.
  if (head.offset === recordOffsetMinBytes) {
    if (state.segments.has(segment)) state.remove(segment, 'unreferenced');
    return head;
  }
  // Rule 1c: referenced bytes are gone.
  const actualSizeBytes = state.segments.has(segment) ? fileSize(file) : 0;
  if (actualSizeBytes < head.offset) {
    state.events.push({ kind: 'data-loss', file, segment, expectedSizeBytes: head.offset, actualSizeBytes });
    return next;
  }
  // Rule 1d: cut what lies beyond the committed head.
  if (actualSizeBytes > head.offset) {
    const tail = withFd(file, 'r', (fd) => summarize(scanSegmentRange(fd, file, segment, head.offset), head.offset));
    truncate(file, head.offset);
    state.events.push({
      kind: 'truncated', file, segment, fromSizeBytes: actualSizeBytes, toSizeBytes: head.offset,
      unreferencedRecordCount: tail.recordCount, unreferencedBytes: tail.recordBytes, tornBytes: tail.tornBytes + tail.corruptBytes,
    });
  }
  // Rule 1e, and a segment size lowered since the head segment was started.
  const header = withFd(file, 'r', (fd) => readSegmentHeader(fd, file, segment));
  if ('kind' in header) {
    state.events.push({ kind: 'sealed', file, segment, reason: `header does not verify: ${header.error.message}` });
    return next;
  }
  if (head.offset > segmentSizeMaxBytes) {
    state.events.push({ kind: 'sealed', file, segment, reason: `head offset ${head.offset} beyond the segment size ${segmentSizeMaxBytes}` });
    return next;
  }
  return head;
}

function recoverWithoutHead(state: RecoveryState, segmentNumberFirst: number): SegmentSpaceMark {
  if (state.segments.size === 0) return { segment: segmentNumberFirst, offset: recordOffsetMinBytes };
  const segment = Math.max(...state.segments);
  const file = state.path(segment);
  const sizeBytes = fileSize(file);
  const { header, records } = withFd(file, 'r', (fd) => ({
    header: readSegmentHeader(fd, file, segment),
    records: summarize(scanSegmentRange(fd, file, segment, recordOffsetMinBytes), recordOffsetMinBytes),
  }));
  // Rule 2b: a torn creation, or a file that holds nothing else worth keeping.
  if (records.recordCount === 0) {
    state.remove(segment, 'no-valid-record');
    return { segment, offset: recordOffsetMinBytes };
  }
  // Rule 2a: cut the torn tail.
  if (records.tornOffset !== undefined) {
    truncate(file, records.tornOffset);
    state.events.push({
      kind: 'truncated', file, segment, fromSizeBytes: sizeBytes, toSizeBytes: records.tornOffset,
      unreferencedRecordCount: 0, unreferencedBytes: 0, tornBytes: records.tornBytes,
    });
  }
  // Rule 2c: keep damage that valid records follow, and stop writing into this segment.
  const headerMessage = 'kind' in header ? header.error.message : undefined;
  if (headerMessage !== undefined || records.corruptBytes > 0) {
    if (records.corruptBytes > 0) {
      state.events.push({
        kind: 'damage-kept', file, segment, corruptBytes: records.corruptBytes, firstDamageOffset: records.firstDamageOffset ?? 0,
        message: 'valid records follow the damage, so it is not a torn tail',
      });
    }
    const reason = headerMessage === undefined ? 'damaged records before valid ones' : `header does not verify: ${headerMessage}`;
    state.events.push({ kind: 'sealed', file, segment, reason });
    return { segment: segment + 1, offset: recordOffsetMinBytes };
  }
  return { segment, offset: records.tornOffset ?? sizeBytes };
}

function fileSize(file: string): number {
  try {
    return fs.statSync(file).size;
  } catch (e) {
    throw toFsError(e, 'cannot stat segment file', file);
  }
}

function truncate(file: string, sizeBytes: number): void {
  withFd(file, 'r+', (fd) => {
    fs.ftruncateSync(fd, sizeBytes);
    fs.fsyncSync(fd);
  });
}

function unlink(file: string): void {
  try {
    fs.unlinkSync(file);
  } catch (e) {
    throw toFsError(e, 'cannot remove segment file', file);
  }
}

function withFd<T>(file: string, flags: 'r' | 'r+', use: (fd: number) => T): T {
  let fd: number;
  try {
    fd = fs.openSync(file, flags);
  } catch (e) {
    throw toFsError(e, 'cannot open segment file', file);
  }
  try {
    return use(fd);
  } catch (e) {
    throw toFsError(e, 'recovery of segment file failed', file);
  } finally {
    fs.closeSync(fd);
  }
}

/** Throws BAD_INPUT when `head` is not a mark this configuration can continue from. */
export function validateHead(head: SegmentSpaceMark, segmentNumberFirst: number, segmentNumberMax: number): void {
  if (!Number.isSafeInteger(head.segment) || head.segment < segmentNumberFirst || head.segment >= segmentNumberMax) {
    throw fsError('BAD_INPUT', `head segment ${head.segment} outside ${segmentNumberFirst}..${segmentNumberMax - 1}`, 'segment log head');
  }
  if (!Number.isSafeInteger(head.offset) || head.offset < recordOffsetMinBytes || head.offset >= 2 ** 32) {
    throw fsError('BAD_INPUT', `head offset ${head.offset} outside ${recordOffsetMinBytes}..2^32-1`, 'segment log head');
  }
}
