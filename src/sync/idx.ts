/**
 * The idx codec: the commit record of an archive. An idx lists file versions and the table of
 * blocks its zip carries, and ends with a CRC-64/ECMA-182 of everything before the checksum.
 *
 * Layout (all integers little-endian; docs/FORMAT.md "Sync directory and archives" has the tables):
 *   header (80 bytes) | version records (versionsSizeBytes) | block table (blockCount x 40) | trailer (16)
 *
 * Invariants kept by this file:
 * - `encodeIdx` checks its input with the same rules `decodeIdx` applies to what it reads (one
 *   `checkIdx`), so what is written is exactly what a reader accepts.
 * - `decodeIdx` checks size bounds, magic, version, the header's idx size and the trailer CRC before
 *   it parses anything else, then bounds-checks every length while parsing; it throws only FsError
 *   BAD_ARCHIVE naming the file and the numbers involved.
 * - The encoded size is computed first (`idxSizeBytes`) and the buffer written once.
 *
 * Block lists are run-length: a version's block list has ceil(sizeBytes / 4096) slots; `blockRuns`
 * fill some of them, sorted and disjoint; slots no run covers are holes. An `ids` run lists block
 * ids (an all-zero id is a hole); a `copy` run takes a range of slots from another version named by
 * its stamp. Copy runs are what keep a 4 KiB edit of a large file, or a rename, small: the new
 * version copies everything it shares with its base and lists only what changed.
 */
import { type ErrorCode, FsError } from '../errors.js';
import { blockSizeBytes, fileSizeMaxBytes, symlinkLengthMaxBytes, xattrNameLengthMaxBytes,
  xattrValueSizeMaxBytes } from '../limits.js';
import { Crc64 } from './crc64.js';
import {
  archiveBlockCountMax, blockIdBytes, idxSizeMaxBytes, idxVersionCountMax, versionBlockIdCountMax,
  versionBlockRunCountMax, versionXattrCountMax, versionXattrSizeMaxBytes,
} from './limits.js';
import { checkIdxPath, hex128FromBytes, isHex128 } from './names.js';
import { type BlockLocation, type ZipMethod, checkBlockLocation, hexOf } from './zip-format.js';

export type { BlockLocation, ZipMethod } from './zip-format.js';

// ---------------------------------------------------------------------------------------------
// Types

/** File types a version can have. */
export type FileType = 'file' | 'dir' | 'symlink' | 'fifo' | 'socket' | 'chardev' | 'blockdev';

/** On-disk code of each file type (u8). */
export const fileTypeCodes: Readonly<Record<FileType, number>> = {
  file: 1, dir: 2, symlink: 3, fifo: 4, socket: 5, chardev: 6, blockdev: 7,
};
const fileTypesByCode = new Map<number, FileType>(
  Object.entries(fileTypeCodes).map(([type, code]) => [code, type as FileType]));

/** A version stamp: a Lamport counter and the boxid of the machine that made the version. */
export interface Stamp {
  /** Lamport counter, 0..2^53-1. */
  readonly counter: number;
  /** 32 lowercase hex digits. */
  readonly boxid: string;
}

/** One extended attribute. */
export interface Xattr {
  readonly name: string;
  readonly value: Uint8Array;
}

/** Slots [blockIndex, blockIndex + ids.length / 16) hold these ids (16 bytes each; all-zero = hole). */
export interface IdsRun {
  readonly kind: 'ids';
  readonly blockIndex: number;
  readonly ids: Uint8Array;
}

/** Slots [blockIndex, blockIndex + blockCount) hold the slots [sourceBlockIndex, ...) of version `source`. */
export interface CopyRun {
  readonly kind: 'copy';
  readonly blockIndex: number;
  readonly blockCount: number;
  readonly source: Stamp;
  readonly sourceBlockIndex: number;
}

export type BlockRun = IdsRun | CopyRun;

/** One version of one path. */
export interface FileVersion {
  /** Relative to the filesystem root, '/'-separated, no leading or trailing '/'; '' is the root. */
  readonly path: string;
  readonly type: FileType;
  /** Permission bits including setuid, setgid and sticky (0..0o7777); the type is in `type`. */
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  /** Device number for chardev and blockdev; 0 otherwise. */
  readonly rdev: number;
  /** Modification time in nanoseconds since the epoch (may be negative). */
  readonly mtimeNs: bigint;
  /** File size; the symlink target's UTF-8 length for symlinks; 0 for other types. */
  readonly sizeBytes: number;
  /** UTF-8 target of a symlink; '' for other types. */
  readonly symlinkTarget: string;
  /** Extended attributes; the encoder sorts them by UTF-8 name, decoded ones come sorted. */
  readonly xattrs: readonly Xattr[];
  /** A tombstone: the path is deleted as of this version. */
  readonly deleted: boolean;
  readonly stamp: Stamp;
  /** Stamp of the version this one was based on, or null for a new path. */
  readonly base: Stamp | null;
  /** Files only: the block list as runs (see the file comment). */
  readonly blockRuns: readonly BlockRun[];
}

export interface IdxHeader {
  /** The archive's name (32 hex); must match the file names `<name>.idx` and `<name>.zip`. */
  readonly archiveName: string;
  /** boxid of the machine that wrote the archive (32 hex). */
  readonly writerBoxid: string;
  /** Creation time in nanoseconds since the epoch (u64). */
  readonly createdNs: bigint;
  /** Reserved: set when the archive's zip and idx are sealed (section 8 of the design). */
  readonly encrypted: boolean;
  /** Exact size of the companion zip; readers compare it with the file they find. */
  readonly zipSizeBytes: number;
}

export interface Idx {
  readonly header: IdxHeader;
  readonly versions: readonly FileVersion[];
  /** The blocks this archive's zip carries, sorted by block id, ids unique. */
  readonly blocks: readonly BlockLocation[];
}

// ---------------------------------------------------------------------------------------------
// Layout constants. Each record's fields are listed in order; a test checks they are contiguous.

interface Field { readonly offset: number; readonly sizeBytes: number }

export const idxMagic = Buffer.from('ZIPPYIDX', 'ascii');
export const idxTrailerMagic = Buffer.from('ZIPPYEND', 'ascii');
export const idxFormatVersion = 1;
/** Header flag bit 0: the archive is sealed (reserved; the codec carries it, section 8 gives it meaning). */
export const idxFlagEncrypted = 0x0001;
const idxFlagsKnown = idxFlagEncrypted;

export const idxHeaderLayout = {
  magic: { offset: 0, sizeBytes: 8 },
  formatVersion: { offset: 8, sizeBytes: 2 },
  flags: { offset: 10, sizeBytes: 2 },
  headerSizeBytes: { offset: 12, sizeBytes: 4 },
  archiveName: { offset: 16, sizeBytes: 16 },
  writerBoxid: { offset: 32, sizeBytes: 16 },
  createdNs: { offset: 48, sizeBytes: 8 },
  zipSizeBytes: { offset: 56, sizeBytes: 8 },
  idxSizeBytes: { offset: 64, sizeBytes: 4 },
  versionCount: { offset: 68, sizeBytes: 4 },
  versionsSizeBytes: { offset: 72, sizeBytes: 4 },
  blockCount: { offset: 76, sizeBytes: 4 },
} as const satisfies Record<string, Field>;
export const idxHeaderSizeBytes = 80;

/** Version record flags (u8). */
export const versionFlagDeleted = 0x01;
export const versionFlagHasBase = 0x02;
const versionFlagsKnown = versionFlagDeleted | versionFlagHasBase;

export const versionRecordLayout = {
  recordSizeBytes: { offset: 0, sizeBytes: 4 },
  fileType: { offset: 4, sizeBytes: 1 },
  flags: { offset: 5, sizeBytes: 1 },
  pathLengthBytes: { offset: 6, sizeBytes: 2 },
  mode: { offset: 8, sizeBytes: 4 },
  uid: { offset: 12, sizeBytes: 4 },
  gid: { offset: 16, sizeBytes: 4 },
  rdev: { offset: 20, sizeBytes: 4 },
  mtimeNs: { offset: 24, sizeBytes: 8 },
  sizeBytes: { offset: 32, sizeBytes: 8 },
  stampCounter: { offset: 40, sizeBytes: 8 },
  stampBoxid: { offset: 48, sizeBytes: 16 },
  baseCounter: { offset: 64, sizeBytes: 8 },
  baseBoxid: { offset: 72, sizeBytes: 16 },
  symlinkTargetLengthBytes: { offset: 88, sizeBytes: 2 },
  xattrCount: { offset: 90, sizeBytes: 2 },
  blockRunCount: { offset: 92, sizeBytes: 4 },
} as const satisfies Record<string, Field>;
export const versionRecordFixedSizeBytes = 96;

export const xattrHeaderLayout = {
  nameLengthBytes: { offset: 0, sizeBytes: 2 },
  valueSizeBytes: { offset: 2, sizeBytes: 4 },
} as const satisfies Record<string, Field>;
export const xattrHeaderSizeBytes = 6;

/** Block run kinds (u8). */
export const blockRunKindIds = 1;
export const blockRunKindCopy = 2;

export const blockRunHeaderLayout = {
  kind: { offset: 0, sizeBytes: 1 },
  reserved: { offset: 1, sizeBytes: 3 },
  blockIndex: { offset: 4, sizeBytes: 4 },
  blockCount: { offset: 8, sizeBytes: 4 },
} as const satisfies Record<string, Field>;
export const blockRunHeaderSizeBytes = 12;

/** What follows a copy run's header (an ids run's header is followed by blockCount x 16 bytes). */
export const copyRunBodyLayout = {
  sourceCounter: { offset: 0, sizeBytes: 8 },
  sourceBoxid: { offset: 8, sizeBytes: 16 },
  sourceBlockIndex: { offset: 24, sizeBytes: 4 },
} as const satisfies Record<string, Field>;
export const copyRunBodySizeBytes = 28;

export const blockTableEntryLayout = {
  blockId: { offset: 0, sizeBytes: 16 },
  headerOffset: { offset: 16, sizeBytes: 8 },
  storedSizeBytes: { offset: 24, sizeBytes: 4 },
  sizeBytes: { offset: 28, sizeBytes: 4 },
  crc32: { offset: 32, sizeBytes: 4 },
  method: { offset: 36, sizeBytes: 2 },
  reserved: { offset: 38, sizeBytes: 2 },
} as const satisfies Record<string, Field>;
export const blockTableEntrySizeBytes = 40;

export const idxTrailerLayout = {
  magic: { offset: 0, sizeBytes: 8 },
  crc64: { offset: 8, sizeBytes: 8 },
} as const satisfies Record<string, Field>;
export const idxTrailerSizeBytes = 16;

/** Largest block index + 1 in any file. */
const fileBlockCountMax = fileSizeMaxBytes / blockSizeBytes;
const u64Max = (1n << 64n) - 1n;
const i64Min = -(1n << 63n);
const i64Max = (1n << 63n) - 1n;

// ---------------------------------------------------------------------------------------------
// Semantic checks, shared by the encoder (BAD_INPUT) and the decoder (BAD_ARCHIVE).

type Fail = (message: string) => never;

function failWith(code: ErrorCode, place: string): Fail {
  return (message: string): never => {
    throw new FsError(code, message, place);
  };
}

/** Number of block slots of a file of `sizeBytes`. */
export function blockSlotCount(sizeBytes: number): number {
  return Math.ceil(sizeBytes / blockSizeBytes);
}

function stampKey(stamp: Stamp): string {
  return `${stamp.counter}:${stamp.boxid}`;
}

function checkStamp(stamp: Stamp, what: string, fail: Fail): void {
  if (!Number.isSafeInteger(stamp.counter) || stamp.counter < 0) fail(`${what} counter ${stamp.counter} is not in 0..2^53-1`);
  if (!isHex128(stamp.boxid)) fail(`${what} boxid ${JSON.stringify(stamp.boxid)} is not 32 lowercase hex`);
}

function isU32(n: number): boolean {
  return Number.isInteger(n) && n >= 0 && n <= 0xffffffff;
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  return Buffer.compare(a, b);
}

function utf8(s: string): Buffer {
  return Buffer.from(s, 'utf8');
}

function checkVersionScalars(v: FileVersion, fail: Fail): void {
  const path = checkIdxPath(v.path);
  if (!path.ok) fail(`path ${JSON.stringify(v.path)} refused: ${path.reason} (${path.detail})`);
  if (fileTypeCodes[v.type] === undefined) fail(`unknown file type ${JSON.stringify(v.type)}`);
  if (v.path === '' && v.type !== 'dir') fail('the root path must be a directory');
  if (!Number.isInteger(v.mode) || v.mode < 0 || v.mode > 0o7777) fail(`mode ${v.mode} is not in 0..0o7777`);
  if (!isU32(v.uid)) fail(`uid ${v.uid} is not a u32`);
  if (!isU32(v.gid)) fail(`gid ${v.gid} is not a u32`);
  if (!isU32(v.rdev)) fail(`rdev ${v.rdev} is not a u32`);
  if (v.rdev !== 0 && v.type !== 'chardev' && v.type !== 'blockdev') fail(`rdev ${v.rdev} on a ${v.type}`);
  if (typeof v.mtimeNs !== 'bigint' || v.mtimeNs < i64Min || v.mtimeNs > i64Max) fail(`mtime ${String(v.mtimeNs)} ns is not an i64`);
  if (!Number.isSafeInteger(v.sizeBytes) || v.sizeBytes < 0 || v.sizeBytes > fileSizeMaxBytes) {
    fail(`size ${v.sizeBytes} is not in 0..${fileSizeMaxBytes}`);
  }
  checkStamp(v.stamp, 'stamp', fail);
  if (v.base !== null) {
    checkStamp(v.base, 'base stamp', fail);
    if (stampKey(v.base) === stampKey(v.stamp)) fail('base stamp equals the version stamp');
  }
}

function checkSymlink(v: FileVersion, fail: Fail): void {
  const targetBytes = Buffer.byteLength(v.symlinkTarget, 'utf8');
  if (v.type !== 'symlink') {
    if (targetBytes !== 0) fail(`symlink target on a ${v.type}`);
    if (v.type !== 'file' && v.sizeBytes !== 0) fail(`size ${v.sizeBytes} on a ${v.type}`);
    return;
  }
  if (targetBytes > symlinkLengthMaxBytes) fail(`symlink target of ${targetBytes} bytes > ${symlinkLengthMaxBytes}`);
  if (targetBytes === 0 && !v.deleted) fail('empty symlink target');
  if (v.symlinkTarget.includes('\0')) fail('symlink target contains NUL');
  if (v.sizeBytes !== targetBytes) fail(`symlink size ${v.sizeBytes} != target length ${targetBytes}`);
}

function checkXattrs(v: FileVersion, requireSorted: boolean, fail: Fail): void {
  if (v.xattrs.length > versionXattrCountMax) fail(`${v.xattrs.length} xattrs > ${versionXattrCountMax}`);
  let totalBytes = 0;
  let previous: Buffer | undefined;
  const names = v.xattrs.map((x) => utf8(x.name));
  const order = names.map((_, i) => i);
  if (!requireSorted) order.sort((a, b) => compareBytes(names[a]!, names[b]!));
  for (const i of order) {
    const name = names[i]!;
    const value = v.xattrs[i]!.value;
    if (name.length === 0 || name.length > xattrNameLengthMaxBytes) fail(`xattr name of ${name.length} bytes outside 1..${xattrNameLengthMaxBytes}`);
    if (name.includes(0)) fail('xattr name contains NUL');
    if (value.length > xattrValueSizeMaxBytes) fail(`xattr value of ${value.length} bytes > ${xattrValueSizeMaxBytes}`);
    if (previous !== undefined) {
      const order = compareBytes(previous, name);
      if (order === 0) fail(`duplicate xattr ${JSON.stringify(v.xattrs[i]!.name)}`);
      if (order > 0) fail(`xattr ${JSON.stringify(v.xattrs[i]!.name)} out of order`);
    }
    previous = name;
    totalBytes += name.length + value.length;
  }
  if (totalBytes > versionXattrSizeMaxBytes) fail(`xattrs of ${totalBytes} bytes > ${versionXattrSizeMaxBytes}`);
}

function checkBlockRuns(v: FileVersion, fail: Fail): void {
  if (v.type !== 'file' && v.blockRuns.length !== 0) fail(`block runs on a ${v.type}`);
  if (v.blockRuns.length > versionBlockRunCountMax) fail(`${v.blockRuns.length} block runs > ${versionBlockRunCountMax}`);
  const slotCount = blockSlotCount(v.sizeBytes);
  let nextFree = 0;
  let idCount = 0;
  for (const [runIndex, run] of v.blockRuns.entries()) {
    const count = run.kind === 'ids' ? run.ids.length / blockIdBytes : run.blockCount;
    const what = `block run ${runIndex} (${run.kind})`;
    if (run.kind === 'ids') {
      if (run.ids.length % blockIdBytes !== 0) fail(`${what}: ${run.ids.length} id bytes, not a multiple of ${blockIdBytes}`);
      idCount += count;
      if (idCount > versionBlockIdCountMax) fail(`more than ${versionBlockIdCountMax} block ids`);
    } else if (run.kind === 'copy') {
      checkStamp(run.source, `${what} source`, fail);
      if (stampKey(run.source) === stampKey(v.stamp)) fail(`${what} copies from its own version`);
      if (!isU32(run.sourceBlockIndex) || run.sourceBlockIndex + count > fileBlockCountMax) {
        fail(`${what}: source slots ${run.sourceBlockIndex}+${count} beyond ${fileBlockCountMax}`);
      }
    } else {
      fail(`${what}: unknown kind`);
    }
    if (!Number.isInteger(count) || count < 1 || count > 0xffffffff) fail(`${what}: block count ${count} not in 1..2^32-1`);
    if (!isU32(run.blockIndex) || run.blockIndex < nextFree) fail(`${what}: starts at slot ${run.blockIndex}, before ${nextFree} (runs must be sorted and disjoint)`);
    nextFree = run.blockIndex + count;
    if (nextFree > slotCount) fail(`${what}: ends at slot ${nextFree}, past the file's ${slotCount} slots (size ${v.sizeBytes})`);
  }
}

/** Checks one version; `requireSortedXattrs` is true for decoded versions (canonical order on disk). */
function checkVersion(v: FileVersion, requireSortedXattrs: boolean, fail: Fail): void {
  checkVersionScalars(v, fail);
  checkSymlink(v, fail);
  checkXattrs(v, requireSortedXattrs, fail);
  checkBlockRuns(v, fail);
}

function checkHeader(header: IdxHeader, fail: Fail): void {
  if (!isHex128(header.archiveName)) fail(`archive name ${JSON.stringify(header.archiveName)} is not 32 lowercase hex`);
  if (!isHex128(header.writerBoxid)) fail(`writer boxid ${JSON.stringify(header.writerBoxid)} is not 32 lowercase hex`);
  if (typeof header.createdNs !== 'bigint' || header.createdNs < 0n || header.createdNs > u64Max) fail(`creation time ${String(header.createdNs)} ns is not a u64`);
  if (!Number.isSafeInteger(header.zipSizeBytes) || header.zipSizeBytes < 0) fail(`zip size ${header.zipSizeBytes} is not a safe non-negative integer`);
}

/** Checks the whole idx; `code` is BAD_INPUT before encoding, BAD_ARCHIVE after decoding. */
function checkIdx(idx: Idx, decoded: boolean, code: ErrorCode, place: string): void {
  const fail = failWith(code, place);
  checkHeader(idx.header, fail);
  if (idx.versions.length > idxVersionCountMax) fail(`${idx.versions.length} versions > ${idxVersionCountMax}`);
  if (idx.blocks.length > archiveBlockCountMax) fail(`${idx.blocks.length} blocks > ${archiveBlockCountMax}`);
  const stamps = new Set<string>();
  for (const [index, version] of idx.versions.entries()) {
    checkVersion(version, decoded, failWith(code, `${place}: version ${index} (${JSON.stringify(version.path)})`));
    const key = stampKey(version.stamp);
    if (stamps.has(key)) fail(`version ${index}: stamp ${key} appears twice`);
    stamps.add(key);
  }
  let previous: Uint8Array | undefined;
  for (const [index, location] of idx.blocks.entries()) {
    checkBlockLocation(location, idx.header.zipSizeBytes, code, `${place}: block table entry ${index}`);
    if (previous !== undefined && compareBytes(previous, location.blockId) >= 0) {
      fail(`block table entry ${index} (${hexOf(location.blockId)}) is not after ${hexOf(previous)}: ids must be sorted and unique`);
    }
    previous = location.blockId;
  }
}

// ---------------------------------------------------------------------------------------------
// Sizes

function versionSizeBytes(v: FileVersion): number {
  let size = versionRecordFixedSizeBytes + Buffer.byteLength(v.path, 'utf8') + Buffer.byteLength(v.symlinkTarget, 'utf8');
  for (const x of v.xattrs) size += xattrHeaderSizeBytes + Buffer.byteLength(x.name, 'utf8') + x.value.length;
  for (const run of v.blockRuns) {
    size += blockRunHeaderSizeBytes + (run.kind === 'ids' ? run.ids.length : copyRunBodySizeBytes);
  }
  return size;
}

/** Exact encoded size of `idx` in bytes. Does not validate; `encodeIdx` does. */
export function idxSizeBytes(idx: Idx): number {
  let size = idxHeaderSizeBytes + idxTrailerSizeBytes + idx.blocks.length * blockTableEntrySizeBytes;
  for (const v of idx.versions) size += versionSizeBytes(v);
  return size;
}

// ---------------------------------------------------------------------------------------------
// Encoding

class Writer {
  readonly view: DataView;
  offset = 0;
  constructor(readonly bytes: Uint8Array) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  u8(n: number): void { this.view.setUint8(this.offset, n); this.offset += 1; }
  u16(n: number): void { this.view.setUint16(this.offset, n, true); this.offset += 2; }
  u32(n: number): void { this.view.setUint32(this.offset, n, true); this.offset += 4; }
  /** A safe integer as u64. */
  u53(n: number): void {
    this.view.setUint32(this.offset, n % 2 ** 32, true);
    this.view.setUint32(this.offset + 4, Math.floor(n / 2 ** 32), true);
    this.offset += 8;
  }
  u64(n: bigint): void { this.view.setBigUint64(this.offset, n, true); this.offset += 8; }
  i64(n: bigint): void { this.view.setBigInt64(this.offset, n, true); this.offset += 8; }
  raw(b: Uint8Array): void { this.bytes.set(b, this.offset); this.offset += b.length; }
  zeros(count: number): void { this.bytes.fill(0, this.offset, this.offset + count); this.offset += count; }
}

function hexBytes(hex: string): Buffer {
  return Buffer.from(hex, 'hex');
}

function sortedXattrs(xattrs: readonly Xattr[]): { name: Buffer; value: Uint8Array }[] {
  return xattrs.map((x) => ({ name: utf8(x.name), value: x.value }))
    .sort((a, b) => compareBytes(a.name, b.name));
}

function writeVersion(w: Writer, v: FileVersion): void {
  const start = w.offset;
  const path = utf8(v.path);
  const target = utf8(v.symlinkTarget);
  const recordSize = versionSizeBytes(v);
  w.u32(recordSize);
  w.u8(fileTypeCodes[v.type]);
  w.u8((v.deleted ? versionFlagDeleted : 0) | (v.base !== null ? versionFlagHasBase : 0));
  w.u16(path.length);
  w.u32(v.mode);
  w.u32(v.uid);
  w.u32(v.gid);
  w.u32(v.rdev);
  w.i64(v.mtimeNs);
  w.u53(v.sizeBytes);
  w.u53(v.stamp.counter);
  w.raw(hexBytes(v.stamp.boxid));
  if (v.base === null) {
    w.zeros(8 + 16);
  } else {
    w.u53(v.base.counter);
    w.raw(hexBytes(v.base.boxid));
  }
  w.u16(target.length);
  w.u16(v.xattrs.length);
  w.u32(v.blockRuns.length);
  checkOffset(w.offset - start, versionRecordFixedSizeBytes, 'version record fixed part');
  w.raw(path);
  w.raw(target);
  for (const x of sortedXattrs(v.xattrs)) {
    w.u16(x.name.length);
    w.u32(x.value.length);
    w.raw(x.name);
    w.raw(x.value);
  }
  for (const run of v.blockRuns) writeBlockRun(w, run);
  checkOffset(w.offset - start, recordSize, 'version record');
}

function writeBlockRun(w: Writer, run: BlockRun): void {
  w.u8(run.kind === 'ids' ? blockRunKindIds : blockRunKindCopy);
  w.zeros(3);
  w.u32(run.blockIndex);
  if (run.kind === 'ids') {
    w.u32(run.ids.length / blockIdBytes);
    w.raw(run.ids);
  } else {
    w.u32(run.blockCount);
    w.u53(run.source.counter);
    w.raw(hexBytes(run.source.boxid));
    w.u32(run.sourceBlockIndex);
  }
}

function writeBlockTableEntry(w: Writer, location: BlockLocation): void {
  w.raw(location.blockId);
  w.u53(location.headerOffset);
  w.u32(location.storedSizeBytes);
  w.u32(location.sizeBytes);
  w.u32(location.crc32);
  w.u16(location.method);
  w.zeros(2);
}

function checkOffset(actual: number, expected: number, what: string): void {
  if (actual !== expected) throw new FsError('ASSERT', `${what}: wrote ${actual} bytes, expected ${expected}`);
}

/**
 * Encodes `idx` after checking it (FsError BAD_INPUT naming the archive and the first problem).
 * Xattrs are written sorted by UTF-8 name; everything else in the order given.
 */
export function encodeIdx(idx: Idx): Uint8Array {
  const place = `idx ${idx.header.archiveName}`;
  checkIdx(idx, false, 'BAD_INPUT', place);
  const sizeBytes = idxSizeBytes(idx);
  if (sizeBytes > idxSizeMaxBytes) throw new FsError('BAD_INPUT', `encoded size ${sizeBytes} bytes > ${idxSizeMaxBytes}`, place);
  const bytes = new Uint8Array(sizeBytes);
  const w = new Writer(bytes);
  const versionsStart = idxHeaderSizeBytes;
  w.offset = versionsStart;
  for (const v of idx.versions) writeVersion(w, v);
  const versionsSizeBytes = w.offset - versionsStart;
  for (const location of idx.blocks) writeBlockTableEntry(w, location);
  const trailerStart = w.offset;
  checkOffset(trailerStart + idxTrailerSizeBytes, sizeBytes, 'idx');

  w.offset = 0;
  w.raw(idxMagic);
  w.u16(idxFormatVersion);
  w.u16(idx.header.encrypted ? idxFlagEncrypted : 0);
  w.u32(idxHeaderSizeBytes);
  w.raw(hexBytes(idx.header.archiveName));
  w.raw(hexBytes(idx.header.writerBoxid));
  w.u64(idx.header.createdNs);
  w.u53(idx.header.zipSizeBytes);
  w.u32(sizeBytes);
  w.u32(idx.versions.length);
  w.u32(versionsSizeBytes);
  w.u32(idx.blocks.length);
  checkOffset(w.offset, idxHeaderSizeBytes, 'idx header');

  w.offset = trailerStart;
  w.raw(idxTrailerMagic);
  const crc = new Crc64().update(bytes.subarray(0, w.offset)).digest();
  w.u64(crc);
  return bytes;
}

// ---------------------------------------------------------------------------------------------
// Decoding

const utf8Decoder = new TextDecoder('utf-8', { fatal: true });

/** A bounds-checked cursor over an idx being decoded; every failure is BAD_ARCHIVE at `place`. */
class Reader {
  readonly view: DataView;
  offset: number;
  constructor(readonly bytes: Uint8Array, start: number, readonly end: number, readonly place: string) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.offset = start;
  }
  fail(message: string): never {
    throw new FsError('BAD_ARCHIVE', message, this.place);
  }
  need(count: number, what: string): void {
    if (count > this.end - this.offset) {
      this.fail(`${what}: needs ${count} bytes at offset ${this.offset}, only ${this.end - this.offset} left`);
    }
  }
  u8(): number { this.need(1, 'u8'); const n = this.view.getUint8(this.offset); this.offset += 1; return n; }
  u16(): number { this.need(2, 'u16'); const n = this.view.getUint16(this.offset, true); this.offset += 2; return n; }
  u32(): number { this.need(4, 'u32'); const n = this.view.getUint32(this.offset, true); this.offset += 4; return n; }
  u53(what: string): number {
    this.need(8, what);
    const lo = this.view.getUint32(this.offset, true);
    const hi = this.view.getUint32(this.offset + 4, true);
    if (hi >= 2 ** 21) this.fail(`${what} at offset ${this.offset} exceeds 2^53-1`);
    this.offset += 8;
    return hi * 2 ** 32 + lo;
  }
  u64(): bigint { this.need(8, 'u64'); const n = this.view.getBigUint64(this.offset, true); this.offset += 8; return n; }
  i64(): bigint { this.need(8, 'i64'); const n = this.view.getBigInt64(this.offset, true); this.offset += 8; return n; }
  /** A copy of the next `count` bytes (decoded values never alias the input buffer). */
  take(count: number, what: string): Uint8Array {
    this.need(count, what);
    const out = new Uint8Array(count);
    out.set(this.bytes.subarray(this.offset, this.offset + count));
    this.offset += count;
    return out;
  }
  hex128(what: string): string {
    return hex128FromBytes(this.take(16, what));
  }
  text(count: number, what: string): string {
    const raw = this.take(count, what);
    try {
      return utf8Decoder.decode(raw);
    } catch {
      return this.fail(`${what} at offset ${this.offset - count} is not valid UTF-8`);
    }
  }
  zeros(count: number, what: string): void {
    const raw = this.take(count, what);
    if (raw.some((byte) => byte !== 0)) this.fail(`${what} at offset ${this.offset - count} is not zero`);
  }
}

interface HeaderCounts {
  readonly header: IdxHeader;
  readonly versionCount: number;
  readonly versionsSizeBytes: number;
  readonly blockCount: number;
}

/** Steps 1-4: sizes, magic, version, declared size and CRC, before anything else is trusted. */
function checkFrame(bytes: Uint8Array, place: string): void {
  const fail = failWith('BAD_ARCHIVE', place);
  const minSize = idxHeaderSizeBytes + idxTrailerSizeBytes;
  if (bytes.length < minSize) fail(`${bytes.length} bytes, shorter than the minimum ${minSize}`);
  if (bytes.length > idxSizeMaxBytes) fail(`${bytes.length} bytes > the limit ${idxSizeMaxBytes}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const H = idxHeaderLayout;
  if (!Buffer.from(bytes.buffer, bytes.byteOffset + H.magic.offset, H.magic.sizeBytes).equals(idxMagic)) fail('bad magic: not an idx file');
  const version = view.getUint16(H.formatVersion.offset, true);
  if (version !== idxFormatVersion) fail(`format version ${version}, this reader knows ${idxFormatVersion}`);
  const headerSize = view.getUint32(H.headerSizeBytes.offset, true);
  if (headerSize !== idxHeaderSizeBytes) fail(`header size ${headerSize}, expected ${idxHeaderSizeBytes}`);
  const declaredSize = view.getUint32(H.idxSizeBytes.offset, true);
  if (declaredSize !== bytes.length) fail(`header says ${declaredSize} bytes, file has ${bytes.length} (truncated or extended)`);
  const trailerStart = bytes.length - idxTrailerSizeBytes;
  const T = idxTrailerLayout;
  if (!Buffer.from(bytes.buffer, bytes.byteOffset + trailerStart + T.magic.offset, T.magic.sizeBytes).equals(idxTrailerMagic)) {
    fail(`bad trailer magic at offset ${trailerStart}`);
  }
  const stored = view.getBigUint64(trailerStart + T.crc64.offset, true);
  const actual = new Crc64().update(bytes.subarray(0, trailerStart + T.crc64.offset)).digest();
  if (stored !== actual) fail(`trailer CRC64 0x${stored.toString(16)} != computed 0x${actual.toString(16)}`);
}

/** Step 5-6: the header's fields and the section sizes against the limits and the file size. */
function readHeader(bytes: Uint8Array, place: string): HeaderCounts {
  const r = new Reader(bytes, 0, idxHeaderSizeBytes, place);
  r.offset = idxHeaderLayout.flags.offset;
  const flags = r.u16();
  if ((flags & ~idxFlagsKnown) !== 0) r.fail(`unknown header flags 0x${flags.toString(16)}`);
  r.offset = idxHeaderLayout.archiveName.offset;
  const archiveName = r.hex128('archive name');
  const writerBoxid = r.hex128('writer boxid');
  const createdNs = r.u64();
  const zipSizeBytes = r.u53('zip size');
  r.u32(); // idx size, checked by checkFrame
  const versionCount = r.u32();
  const versionsSizeBytes = r.u32();
  const blockCount = r.u32();
  if (versionCount > idxVersionCountMax) r.fail(`${versionCount} versions > the limit ${idxVersionCountMax}`);
  if (blockCount > archiveBlockCountMax) r.fail(`${blockCount} blocks > the limit ${archiveBlockCountMax}`);
  const expectedSize = idxHeaderSizeBytes + versionsSizeBytes + blockCount * blockTableEntrySizeBytes + idxTrailerSizeBytes;
  if (expectedSize !== bytes.length) {
    r.fail(`sections add up to ${expectedSize} bytes (versions ${versionsSizeBytes}, ${blockCount} blocks), file has ${bytes.length}`);
  }
  if (versionCount * versionRecordFixedSizeBytes > versionsSizeBytes) {
    r.fail(`${versionCount} versions cannot fit in ${versionsSizeBytes} bytes`);
  }
  const header: IdxHeader = { archiveName, writerBoxid, createdNs, encrypted: (flags & idxFlagEncrypted) !== 0, zipSizeBytes };
  return { header, versionCount, versionsSizeBytes, blockCount };
}

function readStampPair(r: Reader, what: string): Stamp {
  const counter = r.u53(`${what} counter`);
  const boxid = r.hex128(`${what} boxid`);
  return { counter, boxid };
}

function readBlockRun(r: Reader): BlockRun {
  const kind = r.u8();
  r.zeros(3, 'block run reserved bytes');
  const blockIndex = r.u32();
  const blockCount = r.u32();
  if (kind === blockRunKindIds) {
    if (blockCount > versionBlockIdCountMax) r.fail(`ids run of ${blockCount} blocks > ${versionBlockIdCountMax}`);
    return { kind: 'ids', blockIndex, ids: r.take(blockCount * blockIdBytes, 'block ids') };
  }
  if (kind === blockRunKindCopy) {
    const source = readStampPair(r, 'copy source');
    const sourceBlockIndex = r.u32();
    return { kind: 'copy', blockIndex, blockCount, source, sourceBlockIndex };
  }
  return r.fail(`unknown block run kind ${kind} at offset ${r.offset - blockRunHeaderSizeBytes}`);
}

function readVersion(r: Reader, index: number): FileVersion {
  const start = r.offset;
  const recordSize = r.u32();
  if (recordSize < versionRecordFixedSizeBytes || recordSize > r.end - start) {
    r.fail(`version ${index} at offset ${start}: record size ${recordSize} outside ${versionRecordFixedSizeBytes}..${r.end - start}`);
  }
  const rec = new Reader(r.bytes, r.offset, start + recordSize, `${r.place}: version ${index} at offset ${start}`);
  r.offset = start + recordSize;
  const typeCode = rec.u8();
  const type = fileTypesByCode.get(typeCode) ?? rec.fail(`unknown file type code ${typeCode}`);
  const flags = rec.u8();
  if ((flags & ~versionFlagsKnown) !== 0) rec.fail(`unknown flags 0x${flags.toString(16)}`);
  const pathLength = rec.u16();
  const mode = rec.u32();
  const uid = rec.u32();
  const gid = rec.u32();
  const rdev = rec.u32();
  const mtimeNs = rec.i64();
  const sizeBytes = rec.u53('size');
  const stamp = readStampPair(rec, 'stamp');
  const baseRaw = readStampPair(rec, 'base');
  const hasBase = (flags & versionFlagHasBase) !== 0;
  if (!hasBase && (baseRaw.counter !== 0 || baseRaw.boxid !== '0'.repeat(32))) rec.fail('base stamp fields set without the has-base flag');
  const targetLength = rec.u16();
  const xattrCount = rec.u16();
  const runCount = rec.u32();
  if (xattrCount > versionXattrCountMax) rec.fail(`${xattrCount} xattrs > ${versionXattrCountMax}`);
  if (runCount > versionBlockRunCountMax) rec.fail(`${runCount} block runs > ${versionBlockRunCountMax}`);
  const path = rec.text(pathLength, 'path');
  const symlinkTarget = rec.text(targetLength, 'symlink target');
  const xattrs: Xattr[] = [];
  for (let i = 0; i < xattrCount; i++) {
    const nameLength = rec.u16();
    const valueSize = rec.u32();
    if (valueSize > xattrValueSizeMaxBytes) rec.fail(`xattr ${i}: value of ${valueSize} bytes > ${xattrValueSizeMaxBytes}`);
    xattrs.push({ name: rec.text(nameLength, 'xattr name'), value: rec.take(valueSize, 'xattr value') });
  }
  const blockRuns: BlockRun[] = [];
  for (let i = 0; i < runCount; i++) blockRuns.push(readBlockRun(rec));
  if (rec.offset !== rec.end) rec.fail(`record has ${rec.end - rec.offset} unused bytes`);
  return {
    path, type, mode, uid, gid, rdev, mtimeNs, sizeBytes, symlinkTarget, xattrs,
    deleted: (flags & versionFlagDeleted) !== 0, stamp, base: hasBase ? baseRaw : null, blockRuns,
  };
}

function readBlockTableEntry(r: Reader): BlockLocation {
  const blockId = r.take(16, 'block id');
  const headerOffset = r.u53('header offset');
  const storedSizeBytes = r.u32();
  const sizeBytes = r.u32();
  const crc32 = r.u32();
  const method = r.u16();
  r.zeros(2, 'block table reserved bytes');
  if (method !== 0 && method !== 8) r.fail(`block ${hexOf(blockId)}: compression method ${method} is not 0 or 8`);
  return { blockId, headerOffset, storedSizeBytes, sizeBytes, crc32, method: method as ZipMethod };
}

/**
 * Decodes and checks an idx. `place` names the file in error messages. Throws FsError BAD_ARCHIVE
 * (never anything else) for any input that `encodeIdx` would not have produced.
 */
export function decodeIdx(bytes: Uint8Array, place: string): Idx {
  try {
    return decodeChecked(bytes, place);
  } catch (e) {
    if (e instanceof FsError && e.code === 'BAD_ARCHIVE') throw e;
    // A decoder bug must not escape as a crash of the importer: report it as a bad archive, with the cause.
    throw new FsError('BAD_ARCHIVE', `undecodable idx (${e instanceof Error ? e.message : String(e)})`, place, { cause: e });
  }
}

function decodeChecked(bytes: Uint8Array, place: string): Idx {
  checkFrame(bytes, place);
  const { header, versionCount, versionsSizeBytes, blockCount } = readHeader(bytes, place);
  const versionsEnd = idxHeaderSizeBytes + versionsSizeBytes;
  const r = new Reader(bytes, idxHeaderSizeBytes, versionsEnd, place);
  const versions: FileVersion[] = [];
  for (let i = 0; i < versionCount; i++) versions.push(readVersion(r, i));
  if (r.offset !== versionsEnd) r.fail(`version section has ${versionsEnd - r.offset} unused bytes`);
  const tableEnd = versionsEnd + blockCount * blockTableEntrySizeBytes;
  const t = new Reader(bytes, versionsEnd, tableEnd, `${place}: block table`);
  const blocks: BlockLocation[] = [];
  for (let i = 0; i < blockCount; i++) blocks.push(readBlockTableEntry(t));
  const idx: Idx = { header, versions, blocks };
  checkIdx(idx, true, 'BAD_ARCHIVE', place);
  return idx;
}

// ---------------------------------------------------------------------------------------------
// Helpers for callers

/** Orders stamps: counter first, then boxid; the higher stamp is the newer version. */
export function compareStamps(a: Stamp, b: Stamp): number {
  if (a.counter !== b.counter) return a.counter < b.counter ? -1 : 1;
  return a.boxid < b.boxid ? -1 : a.boxid > b.boxid ? 1 : 0;
}

/**
 * Compact `ids` runs for a flat block list (16 bytes per slot, all-zero = hole): one run per
 * stretch of non-hole slots, so holes cost nothing.
 */
export function blockRunsFromIds(flatIds: Uint8Array): IdsRun[] {
  if (flatIds.length % blockIdBytes !== 0) throw new FsError('ASSERT', `flat block list of ${flatIds.length} bytes`);
  const slotCount = flatIds.length / blockIdBytes;
  const runs: IdsRun[] = [];
  let runStart = -1;
  const isHole = (slot: number): boolean => {
    for (let i = slot * blockIdBytes; i < (slot + 1) * blockIdBytes; i++) if (flatIds[i] !== 0) return false;
    return true;
  };
  for (let slot = 0; slot <= slotCount; slot++) {
    const hole = slot === slotCount || isHole(slot);
    if (!hole && runStart < 0) runStart = slot;
    if (hole && runStart >= 0) {
      runs.push({ kind: 'ids', blockIndex: runStart, ids: new Uint8Array(flatIds.subarray(runStart * blockIdBytes, slot * blockIdBytes)) });
      runStart = -1;
    }
  }
  return runs;
}

/**
 * The flat block list of `version` (16 bytes per slot, all-zero = hole). Copy runs are resolved
 * through `sourceList`, which returns the flat list of the version with that stamp, or undefined
 * when it is unknown (then FsError BAD_ARCHIVE naming the missing stamp).
 */
export function resolveBlockList(version: FileVersion,
  sourceList: (stamp: Stamp) => Uint8Array | undefined, place: string): Uint8Array {
  const flat = new Uint8Array(blockSlotCount(version.sizeBytes) * blockIdBytes);
  for (const run of version.blockRuns) {
    if (run.kind === 'ids') {
      flat.set(run.ids, run.blockIndex * blockIdBytes);
      continue;
    }
    const source = sourceList(run.source);
    if (source === undefined) {
      throw new FsError('BAD_ARCHIVE', `${JSON.stringify(version.path)} copies blocks from unknown version ${stampKey(run.source)}`, place);
    }
    const from = run.sourceBlockIndex * blockIdBytes;
    const to = Math.min(source.length, (run.sourceBlockIndex + run.blockCount) * blockIdBytes);
    // Slots past the end of the source's list are holes (the source was shorter), already zero.
    if (to > from) flat.set(source.subarray(from, to), run.blockIndex * blockIdBytes);
  }
  return flat;
}
