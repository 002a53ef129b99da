/**
 * The zip records this layer writes (APPNOTE.TXT 6.3: local file header, central directory header,
 * zip64 end of central directory record and locator, end of central directory record) and the
 * shape of one block entry in an archive zip, shared by the idx codec (which records where each
 * block is) and the zip reader and writer (which put it there and fetch it back).
 *
 * A block entry is a zip local file header (30 fixed bytes), the entry name `blocks/<32 hex of the
 * block id>` (39 bytes), no extra field, then the stored bytes. The local header always carries
 * the CRC-32 and both sizes (general purpose bit 3 clear), so one positional read of
 * `blockEntrySpanBytes(storedSizeBytes)` bytes at the header offset yields everything needed to
 * check and decode the block.
 */
import { type ErrorCode, FsError } from '../errors.js';
import { blockSizeBytes } from '../limits.js';
import { blockIdBytes, blockStoredSizeMaxBytes } from './limits.js';

/** Zip compression methods this layer reads and writes: 0 stored, 8 deflated. */
export type ZipMethod = 0 | 8;
export const zipMethodStore = 0;
export const zipMethodDeflate = 8;

/** Folder of block entries inside an archive zip (the zip also has a directory entry for it). */
export const blockEntryPrefix = 'blocks/';
/** Length of a block entry name: `blocks/` + 32 hex digits. */
export const blockEntryNameLengthBytes = blockEntryPrefix.length + blockIdBytes * 2;

/** Zip local file header (APPNOTE 4.3.7), little-endian. */
export const localHeaderLayout = {
  signature: { offset: 0, sizeBytes: 4 },
  versionNeeded: { offset: 4, sizeBytes: 2 },
  flags: { offset: 6, sizeBytes: 2 },
  method: { offset: 8, sizeBytes: 2 },
  dosTime: { offset: 10, sizeBytes: 2 },
  dosDate: { offset: 12, sizeBytes: 2 },
  crc32: { offset: 14, sizeBytes: 4 },
  storedSizeBytes: { offset: 18, sizeBytes: 4 },
  sizeBytes: { offset: 22, sizeBytes: 4 },
  nameLengthBytes: { offset: 26, sizeBytes: 2 },
  extraLengthBytes: { offset: 28, sizeBytes: 2 },
} as const;
export const localHeaderFixedSizeBytes = 30;
export const localHeaderSignature = 0x04034b50;
export const centralHeaderSignature = 0x02014b50;
/** General purpose flag bits a block entry must not have: encrypted (0), data descriptor (3), strong encryption (6). */
export const forbiddenFlagBits = (1 << 0) | (1 << 3) | (1 << 6);

/** Bytes from a block entry's local header to the end of its data, when it has no extra field. */
export function blockEntrySpanBytes(storedSizeBytes: number): number {
  return localHeaderFixedSizeBytes + blockEntryNameLengthBytes + storedSizeBytes;
}

/** Where one block lives in an archive zip: one entry of the idx block table. */
export interface BlockLocation {
  /** The block id (16 bytes), also the entry name `blocks/<hex>`. */
  readonly blockId: Uint8Array;
  /** Offset of the entry's local file header from the start of the zip. */
  readonly headerOffset: number;
  /** Bytes of entry data as stored (compressed size). */
  readonly storedSizeBytes: number;
  /** Bytes of the block once decoded (uncompressed size), 1..blockSizeBytes. */
  readonly sizeBytes: number;
  /** CRC-32 of the decoded block, as in the zip headers. */
  readonly crc32: number;
  /** 0 stored or 8 deflated. */
  readonly method: ZipMethod;
}

/**
 * Checks one block location against the limits and, when known, the zip's size. Throws FsError
 * with `code` (BAD_ARCHIVE for what was read, BAD_INPUT for what is about to be written).
 */
export function checkBlockLocation(location: BlockLocation, zipSizeBytes: number | undefined,
  code: ErrorCode, place: string): void {
  const fail = (what: string): never => {
    throw new FsError(code, `block ${hexOf(location.blockId)}: ${what}`, place);
  };
  if (location.blockId.length !== blockIdBytes) fail(`block id of ${location.blockId.length} bytes, expected ${blockIdBytes}`);
  if (location.blockId.every((byte) => byte === 0)) fail('the all-zero block id means a hole and has no data');
  if (location.method !== zipMethodStore && location.method !== zipMethodDeflate) fail(`compression method ${String(location.method)} is not 0 or 8`);
  if (!Number.isInteger(location.sizeBytes) || location.sizeBytes < 1 || location.sizeBytes > blockSizeBytes) {
    fail(`size ${location.sizeBytes} outside 1..${blockSizeBytes}`);
  }
  if (!Number.isInteger(location.storedSizeBytes) || location.storedSizeBytes < 1 || location.storedSizeBytes > blockStoredSizeMaxBytes) {
    fail(`stored size ${location.storedSizeBytes} outside 1..${blockStoredSizeMaxBytes}`);
  }
  if (location.method === zipMethodStore && location.storedSizeBytes !== location.sizeBytes) {
    fail(`stored entry with stored size ${location.storedSizeBytes} != size ${location.sizeBytes}`);
  }
  if (!Number.isInteger(location.crc32) || location.crc32 < 0 || location.crc32 > 0xffffffff) fail(`crc32 ${location.crc32} is not a u32`);
  if (!Number.isSafeInteger(location.headerOffset) || location.headerOffset < 0) fail(`header offset ${location.headerOffset} is not a safe non-negative integer`);
  if (zipSizeBytes !== undefined) {
    const end = location.headerOffset + blockEntrySpanBytes(location.storedSizeBytes);
    if (end > zipSizeBytes) fail(`entry ends at ${end}, past the zip's ${zipSizeBytes} bytes`);
  }
}

/** Lowercase hex of a byte array (for names and messages). */
export function hexOf(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

/** The entry name of a block in an archive zip. */
export function blockEntryName(blockId: Uint8Array): string {
  return blockEntryPrefix + hexOf(blockId);
}

// ---------------------------------------------------------------------------------------------
// Record encoders for the archive zip writer. Only what that writer needs: no data descriptors,
// no local extra fields, zip64 only in the central directory (offsets) and end records (counts).

export const centralHeaderLayout = {
  signature: { offset: 0, sizeBytes: 4 },
  versionMadeBy: { offset: 4, sizeBytes: 2 },
  versionNeeded: { offset: 6, sizeBytes: 2 },
  flags: { offset: 8, sizeBytes: 2 },
  method: { offset: 10, sizeBytes: 2 },
  dosTime: { offset: 12, sizeBytes: 2 },
  dosDate: { offset: 14, sizeBytes: 2 },
  crc32: { offset: 16, sizeBytes: 4 },
  storedSizeBytes: { offset: 20, sizeBytes: 4 },
  sizeBytes: { offset: 24, sizeBytes: 4 },
  nameLengthBytes: { offset: 28, sizeBytes: 2 },
  extraLengthBytes: { offset: 30, sizeBytes: 2 },
  commentLengthBytes: { offset: 32, sizeBytes: 2 },
  diskNumberStart: { offset: 34, sizeBytes: 2 },
  internalAttributes: { offset: 36, sizeBytes: 2 },
  externalAttributes: { offset: 38, sizeBytes: 4 },
  headerOffset: { offset: 42, sizeBytes: 4 },
} as const;
export const centralHeaderFixedSizeBytes = 46;

export const endRecordLayout = {
  signature: { offset: 0, sizeBytes: 4 },
  diskNumber: { offset: 4, sizeBytes: 2 },
  centralDirectoryDisk: { offset: 6, sizeBytes: 2 },
  entryCountOnDisk: { offset: 8, sizeBytes: 2 },
  entryCount: { offset: 10, sizeBytes: 2 },
  centralDirectorySizeBytes: { offset: 12, sizeBytes: 4 },
  centralDirectoryOffset: { offset: 16, sizeBytes: 4 },
  commentLengthBytes: { offset: 20, sizeBytes: 2 },
} as const;
export const endRecordSizeBytes = 22;
export const endRecordSignature = 0x06054b50;

export const zip64EndRecordLayout = {
  signature: { offset: 0, sizeBytes: 4 },
  recordSizeBytes: { offset: 4, sizeBytes: 8 },
  versionMadeBy: { offset: 12, sizeBytes: 2 },
  versionNeeded: { offset: 14, sizeBytes: 2 },
  diskNumber: { offset: 16, sizeBytes: 4 },
  centralDirectoryDisk: { offset: 20, sizeBytes: 4 },
  entryCountOnDisk: { offset: 24, sizeBytes: 8 },
  entryCount: { offset: 32, sizeBytes: 8 },
  centralDirectorySizeBytes: { offset: 40, sizeBytes: 8 },
  centralDirectoryOffset: { offset: 48, sizeBytes: 8 },
} as const;
export const zip64EndRecordSizeBytes = 56;
export const zip64EndRecordSignature = 0x06064b50;

export const zip64LocatorLayout = {
  signature: { offset: 0, sizeBytes: 4 },
  endRecordDisk: { offset: 4, sizeBytes: 4 },
  endRecordOffset: { offset: 8, sizeBytes: 8 },
  diskCount: { offset: 16, sizeBytes: 4 },
} as const;
export const zip64LocatorSizeBytes = 20;
export const zip64LocatorSignature = 0x07064b50;

/** Zip64 extended information extra field carrying only the local header offset (id, size, u64). */
export const zip64OffsetExtraSizeBytes = 12;
const zip64ExtraId = 0x0001;

/** "Version made by": Unix (3) in the high byte, APPNOTE 4.5 in the low byte. */
const versionMadeByUnix = (3 << 8) | 45;
const versionNeededDefault = 20;
const versionNeededZip64 = 45;
const u16Max = 0xffff;
const u32Max = 0xffffffff;

/** MS-DOS date and time fields of `date` in local time (the zip convention), clamped to 1980..2107. */
export function dosDateTime(date: Date): { dosDate: number; dosTime: number } {
  const min = new Date(1980, 0, 1);
  const max = new Date(2107, 11, 31, 23, 59, 58);
  const d = date < min ? min : date > max ? max : date;
  return {
    dosDate: ((d.getFullYear() - 1980) << 9) | ((d.getMonth() + 1) << 5) | d.getDate(),
    dosTime: (d.getHours() << 11) | (d.getMinutes() << 5) | Math.floor(d.getSeconds() / 2),
  };
}

/** The fields of one entry the writer emits, in both its local and its central header. */
export interface EntryRecord {
  readonly name: Buffer;
  readonly method: ZipMethod;
  readonly crc32: number;
  readonly storedSizeBytes: number;
  readonly sizeBytes: number;
  readonly dosDate: number;
  readonly dosTime: number;
  /** Unix mode including the file type bits (e.g. 0o100644). */
  readonly unixMode: number;
  readonly headerOffset: number;
}

/** A local file header with sizes and CRC, followed by the name; no extra field. */
export function encodeLocalHeader(entry: EntryRecord): Buffer {
  const L = localHeaderLayout;
  const out = Buffer.alloc(localHeaderFixedSizeBytes + entry.name.length);
  out.writeUInt32LE(localHeaderSignature, L.signature.offset);
  out.writeUInt16LE(versionNeededDefault, L.versionNeeded.offset);
  out.writeUInt16LE(0, L.flags.offset);
  out.writeUInt16LE(entry.method, L.method.offset);
  out.writeUInt16LE(entry.dosTime, L.dosTime.offset);
  out.writeUInt16LE(entry.dosDate, L.dosDate.offset);
  out.writeUInt32LE(entry.crc32, L.crc32.offset);
  out.writeUInt32LE(entry.storedSizeBytes, L.storedSizeBytes.offset);
  out.writeUInt32LE(entry.sizeBytes, L.sizeBytes.offset);
  out.writeUInt16LE(entry.name.length, L.nameLengthBytes.offset);
  out.writeUInt16LE(0, L.extraLengthBytes.offset);
  entry.name.copy(out, localHeaderFixedSizeBytes);
  return out;
}

/**
 * A central directory header. The header offset goes into a zip64 extra field when it does not
 * fit in u32, or always when `forceZip64` (tests use that to exercise zip64 readers).
 */
export function encodeCentralHeader(entry: EntryRecord, forceZip64: boolean): Buffer {
  const zip64 = forceZip64 || entry.headerOffset >= u32Max;
  const C = centralHeaderLayout;
  const extraLength = zip64 ? zip64OffsetExtraSizeBytes : 0;
  const out = Buffer.alloc(centralHeaderFixedSizeBytes + entry.name.length + extraLength);
  out.writeUInt32LE(centralHeaderSignature, C.signature.offset);
  out.writeUInt16LE(versionMadeByUnix, C.versionMadeBy.offset);
  out.writeUInt16LE(zip64 ? versionNeededZip64 : versionNeededDefault, C.versionNeeded.offset);
  out.writeUInt16LE(0, C.flags.offset);
  out.writeUInt16LE(entry.method, C.method.offset);
  out.writeUInt16LE(entry.dosTime, C.dosTime.offset);
  out.writeUInt16LE(entry.dosDate, C.dosDate.offset);
  out.writeUInt32LE(entry.crc32, C.crc32.offset);
  out.writeUInt32LE(entry.storedSizeBytes, C.storedSizeBytes.offset);
  out.writeUInt32LE(entry.sizeBytes, C.sizeBytes.offset);
  out.writeUInt16LE(entry.name.length, C.nameLengthBytes.offset);
  out.writeUInt16LE(extraLength, C.extraLengthBytes.offset);
  out.writeUInt16LE(0, C.commentLengthBytes.offset);
  out.writeUInt16LE(0, C.diskNumberStart.offset);
  out.writeUInt16LE(0, C.internalAttributes.offset);
  const isDirectory = (entry.unixMode & 0o170000) === 0o040000;
  out.writeUInt32LE(((entry.unixMode << 16) | (isDirectory ? 0x10 : 0)) >>> 0, C.externalAttributes.offset);
  out.writeUInt32LE(zip64 ? u32Max : entry.headerOffset, C.headerOffset.offset);
  entry.name.copy(out, centralHeaderFixedSizeBytes);
  if (zip64) {
    const at = centralHeaderFixedSizeBytes + entry.name.length;
    out.writeUInt16LE(zip64ExtraId, at);
    out.writeUInt16LE(8, at + 2);
    out.writeBigUInt64LE(BigInt(entry.headerOffset), at + 4);
  }
  return out;
}

/**
 * The records after the central directory: zip64 end record and locator when a count or offset
 * does not fit the classic fields (or when forced), then the classic end record.
 */
export function encodeEndRecords(entryCount: number, centralDirectoryOffset: number,
  centralDirectorySizeBytes: number, forceZip64: boolean): Buffer {
  const zip64 = forceZip64 || entryCount >= u16Max || centralDirectoryOffset >= u32Max || centralDirectorySizeBytes >= u32Max;
  const parts: Buffer[] = [];
  if (zip64) {
    const Z = zip64EndRecordLayout;
    const record = Buffer.alloc(zip64EndRecordSizeBytes);
    record.writeUInt32LE(zip64EndRecordSignature, Z.signature.offset);
    record.writeBigUInt64LE(BigInt(zip64EndRecordSizeBytes - 12), Z.recordSizeBytes.offset);
    record.writeUInt16LE(versionMadeByUnix, Z.versionMadeBy.offset);
    record.writeUInt16LE(versionNeededZip64, Z.versionNeeded.offset);
    record.writeBigUInt64LE(BigInt(entryCount), Z.entryCountOnDisk.offset);
    record.writeBigUInt64LE(BigInt(entryCount), Z.entryCount.offset);
    record.writeBigUInt64LE(BigInt(centralDirectorySizeBytes), Z.centralDirectorySizeBytes.offset);
    record.writeBigUInt64LE(BigInt(centralDirectoryOffset), Z.centralDirectoryOffset.offset);
    const Lz = zip64LocatorLayout;
    const locator = Buffer.alloc(zip64LocatorSizeBytes);
    locator.writeUInt32LE(zip64LocatorSignature, Lz.signature.offset);
    locator.writeBigUInt64LE(BigInt(centralDirectoryOffset + centralDirectorySizeBytes), Lz.endRecordOffset.offset);
    locator.writeUInt32LE(1, Lz.diskCount.offset);
    parts.push(record, locator);
  }
  const E = endRecordLayout;
  const end = Buffer.alloc(endRecordSizeBytes);
  end.writeUInt32LE(endRecordSignature, E.signature.offset);
  end.writeUInt16LE(zip64 ? u16Max : entryCount, E.entryCountOnDisk.offset);
  end.writeUInt16LE(zip64 ? u16Max : entryCount, E.entryCount.offset);
  end.writeUInt32LE(zip64 ? u32Max : centralDirectorySizeBytes, E.centralDirectorySizeBytes.offset);
  end.writeUInt32LE(zip64 ? u32Max : centralDirectoryOffset, E.centralDirectoryOffset.offset);
  parts.push(end);
  return Buffer.concat(parts);
}

// ---------------------------------------------------------------------------------------------
// Records of a tree zip (zippy-export -o): any path, UTF-8 names, the Info-ZIP extended timestamp,
// zip64 sizes, and data descriptors for large files deflated on the fly. The archive zip above
// never uses these, so its block entries keep their fixed shape.

/** General purpose flag bit 3: CRC-32 and sizes follow the data in a data descriptor. */
export const flagDataDescriptor = 1 << 3;
/** General purpose flag bit 11: the name is UTF-8. */
export const flagUtf8 = 1 << 11;
export const dataDescriptorSignature = 0x08074b50;
/** Info-ZIP extended timestamp extra field ("UT"): flags u8 (bit 0 = mtime) and mtime as u32 UTC seconds. */
export const extendedTimestampExtraId = 0x5455;
export const extendedTimestampExtraSizeBytes = 9;

/** One entry of a tree zip as both its headers describe it: an archive entry plus its mtime. */
export interface TreeEntryRecord extends EntryRecord {
  /** mtime in whole UTC seconds for the UT extra field; undefined when it does not fit a u32. */
  readonly mtimeSeconds: number | undefined;
  /** CRC-32 and sizes come after the data (the local header holds zeros). */
  readonly dataDescriptor: boolean;
  /** The local header carries a zip64 extra field with both sizes (and the descriptor 8-byte sizes). */
  readonly zip64Local: boolean;
}

function timestampExtra(mtimeSeconds: number | undefined): Buffer {
  if (mtimeSeconds === undefined) return Buffer.alloc(0);
  const out = Buffer.alloc(extendedTimestampExtraSizeBytes);
  out.writeUInt16LE(extendedTimestampExtraId, 0);
  out.writeUInt16LE(5, 2);
  out.writeUInt8(1, 4);
  out.writeUInt32LE(mtimeSeconds, 5);
  return out;
}

function zip64Extra(values: readonly number[]): Buffer {
  if (values.length === 0) return Buffer.alloc(0);
  const out = Buffer.alloc(4 + 8 * values.length);
  out.writeUInt16LE(zip64ExtraId, 0);
  out.writeUInt16LE(8 * values.length, 2);
  values.forEach((v, i) => out.writeBigUInt64LE(BigInt(v), 4 + 8 * i));
  return out;
}

/** The local file header of a tree entry, name and extra fields included. */
export function encodeTreeLocalHeader(entry: TreeEntryRecord): Buffer {
  const L = localHeaderLayout;
  const deferred = entry.dataDescriptor;
  const extra = Buffer.concat([
    entry.zip64Local ? zip64Extra([deferred ? 0 : entry.sizeBytes, deferred ? 0 : entry.storedSizeBytes]) : Buffer.alloc(0),
    timestampExtra(entry.mtimeSeconds),
  ]);
  const out = Buffer.alloc(localHeaderFixedSizeBytes + entry.name.length + extra.length);
  out.writeUInt32LE(localHeaderSignature, L.signature.offset);
  out.writeUInt16LE(entry.zip64Local ? versionNeededZip64 : versionNeededDefault, L.versionNeeded.offset);
  out.writeUInt16LE(flagUtf8 | (deferred ? flagDataDescriptor : 0), L.flags.offset);
  out.writeUInt16LE(entry.method, L.method.offset);
  out.writeUInt16LE(entry.dosTime, L.dosTime.offset);
  out.writeUInt16LE(entry.dosDate, L.dosDate.offset);
  out.writeUInt32LE(deferred ? 0 : entry.crc32, L.crc32.offset);
  out.writeUInt32LE(entry.zip64Local ? u32Max : deferred ? 0 : entry.storedSizeBytes, L.storedSizeBytes.offset);
  out.writeUInt32LE(entry.zip64Local ? u32Max : deferred ? 0 : entry.sizeBytes, L.sizeBytes.offset);
  out.writeUInt16LE(entry.name.length, L.nameLengthBytes.offset);
  out.writeUInt16LE(extra.length, L.extraLengthBytes.offset);
  entry.name.copy(out, localHeaderFixedSizeBytes);
  extra.copy(out, localHeaderFixedSizeBytes + entry.name.length);
  return out;
}

/** The data descriptor after a deferred entry's data (8-byte sizes when its local header is zip64). */
export function encodeDataDescriptor(entry: TreeEntryRecord): Buffer {
  const out = Buffer.alloc(entry.zip64Local ? 24 : 16);
  out.writeUInt32LE(dataDescriptorSignature, 0);
  out.writeUInt32LE(entry.crc32, 4);
  if (entry.zip64Local) {
    out.writeBigUInt64LE(BigInt(entry.storedSizeBytes), 8);
    out.writeBigUInt64LE(BigInt(entry.sizeBytes), 16);
  } else {
    out.writeUInt32LE(entry.storedSizeBytes, 8);
    out.writeUInt32LE(entry.sizeBytes, 12);
  }
  return out;
}

/** The central directory header of a tree entry: zip64 fields (APPNOTE order) only for the values that need them. */
export function encodeTreeCentralHeader(entry: TreeEntryRecord): Buffer {
  const C = centralHeaderLayout;
  const big = (n: number): boolean => n >= u32Max;
  const zip64Values = [entry.sizeBytes, entry.storedSizeBytes, entry.headerOffset].filter(big);
  const extra = Buffer.concat([zip64Extra(zip64Values), timestampExtra(entry.mtimeSeconds)]);
  const out = Buffer.alloc(centralHeaderFixedSizeBytes + entry.name.length + extra.length);
  out.writeUInt32LE(centralHeaderSignature, C.signature.offset);
  out.writeUInt16LE(versionMadeByUnix, C.versionMadeBy.offset);
  out.writeUInt16LE(zip64Values.length > 0 || entry.zip64Local ? versionNeededZip64 : versionNeededDefault, C.versionNeeded.offset);
  out.writeUInt16LE(flagUtf8 | (entry.dataDescriptor ? flagDataDescriptor : 0), C.flags.offset);
  out.writeUInt16LE(entry.method, C.method.offset);
  out.writeUInt16LE(entry.dosTime, C.dosTime.offset);
  out.writeUInt16LE(entry.dosDate, C.dosDate.offset);
  out.writeUInt32LE(entry.crc32, C.crc32.offset);
  out.writeUInt32LE(big(entry.storedSizeBytes) ? u32Max : entry.storedSizeBytes, C.storedSizeBytes.offset);
  out.writeUInt32LE(big(entry.sizeBytes) ? u32Max : entry.sizeBytes, C.sizeBytes.offset);
  out.writeUInt16LE(entry.name.length, C.nameLengthBytes.offset);
  out.writeUInt16LE(extra.length, C.extraLengthBytes.offset);
  out.writeUInt16LE(0, C.commentLengthBytes.offset);
  out.writeUInt16LE(0, C.diskNumberStart.offset);
  out.writeUInt16LE(0, C.internalAttributes.offset);
  const isDirectory = (entry.unixMode & 0o170000) === 0o040000;
  out.writeUInt32LE(((entry.unixMode << 16) | (isDirectory ? 0x10 : 0)) >>> 0, C.externalAttributes.offset);
  out.writeUInt32LE(big(entry.headerOffset) ? u32Max : entry.headerOffset, C.headerOffset.offset);
  entry.name.copy(out, centralHeaderFixedSizeBytes);
  extra.copy(out, centralHeaderFixedSizeBytes + entry.name.length);
  return out;
}
