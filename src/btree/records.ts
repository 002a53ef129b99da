/**
 * Value codecs of the LMDB tables (docs/FORMAT.md, "LMDB values"). Each record has fixed
 * offsets named here once; decode checks the length and version before trusting a byte.
 */
import { assert, corrupt } from '../errors.js';
import { readU64 } from './keys.js';

/**
 * Inode record layout (all big-endian). Version 2 added `blockCount`; a version-1 record (64
 * fixed bytes, no count) still decodes, with `blockCount` = blockCountUnknown: Store.open
 * rewrites every one of them when it opens a format-1 store for writing, so only read-only
 * openers of an old store ever see one.
 */
export const inodeRecord = {
  versionOffset: 0, // u8: record version (2; 1 still decodes)
  flagsOffset: 1, // u8: reserved, 0
  reservedOffset: 2, // u16: reserved, 0
  modeOffset: 4, // u32: st_mode (type and permission bits)
  uidOffset: 8, // u32
  gidOffset: 12, // u32
  nlinkOffset: 16, // u32
  rdevOffset: 20, // u32
  sizeOffset: 24, // u64: size in bytes
  atimeOffset: 32, // i64: ns since the epoch
  mtimeOffset: 40, // i64
  ctimeOffset: 48, // i64
  generationOffset: 56, // u64: bumped when the sync layer replaces the content (cache invalidation)
  blockCountOffset: 64, // u64: block map entries of this inode (st_blocks = 8 × it)
  fixedBytes: 72, // followed by the symlink target (utf8 bytes) for symlinks
  fixedBytesV1: 64, // version 1: no blockCount; the target starts here
  version: 2,
  versionV1: 1,
} as const;

/** `blockCount` of a decoded version-1 record, which carries none (never encoded). */
export const blockCountUnknown = -1;

/** Attributes of one inode as stored. Times are ns since the epoch. */
export interface InodeRecord {
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  rdev: number;
  size: number;
  atimeNs: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
  generation: number;
  /**
   * Number of block map entries of the inode, kept in the transaction that adds or removes
   * them; blockCountUnknown only in a record decoded from a version-1 store.
   */
  blockCount: number;
  /** Symlink target bytes; empty for other types. */
  target: Buffer;
}

export function encodeInode(rec: InodeRecord): Buffer {
  const L = inodeRecord;
  const buf = Buffer.alloc(L.fixedBytes + rec.target.length);
  buf.writeUInt8(L.version, L.versionOffset);
  buf.writeUInt32BE(rec.mode >>> 0, L.modeOffset);
  buf.writeUInt32BE(rec.uid >>> 0, L.uidOffset);
  buf.writeUInt32BE(rec.gid >>> 0, L.gidOffset);
  buf.writeUInt32BE(rec.nlink >>> 0, L.nlinkOffset);
  buf.writeUInt32BE(rec.rdev >>> 0, L.rdevOffset);
  writeCount(buf, rec.size, L.sizeOffset, 'size');
  buf.writeBigInt64BE(rec.atimeNs, L.atimeOffset);
  buf.writeBigInt64BE(rec.mtimeNs, L.mtimeOffset);
  buf.writeBigInt64BE(rec.ctimeNs, L.ctimeOffset);
  writeCount(buf, rec.generation, L.generationOffset, 'generation');
  writeCount(buf, rec.blockCount, L.blockCountOffset, 'block count');
  rec.target.copy(buf, L.fixedBytes);
  return buf;
}

/**
 * Writes a count (a safe integer >= 0) as u64 BE, the bytes writeBigUInt64BE(BigInt(value))
 * wrote, without the BigInts: inode records are encoded at every create, write-back and setattr.
 */
function writeCount(buf: Buffer, value: number, offset: number, what: string): void {
  if (!(Number.isSafeInteger(value) && value >= 0)) assert(false, `inode ${what} ${value} is not a count`);
  buf.writeUInt32BE(Math.floor(value / 2 ** 32), offset);
  buf.writeUInt32BE(value >>> 0, offset + 4);
}

/** The target of every non-symlink record: shared, since nothing writes into a decoded target. */
const noTarget = Buffer.alloc(0);

export function decodeInode(buf: Buffer, place: string): InodeRecord {
  const L = inodeRecord;
  const fixedBytes = inodeFixedBytes(buf, place);
  return {
    mode: buf.readUInt32BE(L.modeOffset),
    uid: buf.readUInt32BE(L.uidOffset),
    gid: buf.readUInt32BE(L.gidOffset),
    nlink: buf.readUInt32BE(L.nlinkOffset),
    rdev: buf.readUInt32BE(L.rdevOffset),
    size: readU64(buf, L.sizeOffset),
    atimeNs: buf.readBigInt64BE(L.atimeOffset),
    mtimeNs: buf.readBigInt64BE(L.mtimeOffset),
    ctimeNs: buf.readBigInt64BE(L.ctimeOffset),
    generation: readU64(buf, L.generationOffset),
    blockCount: fixedBytes === L.fixedBytes ? readU64(buf, L.blockCountOffset) : blockCountUnknown,
    target: buf.length === fixedBytes ? noTarget : Buffer.from(buf.subarray(fixedBytes)),
  };
}

/** The block count of an encoded inode record without decoding the rest (blockCountUnknown for version 1). */
export function decodeInodeBlockCount(buf: Buffer, place: string): number {
  return inodeFixedBytes(buf, place) === inodeRecord.fixedBytes ? readU64(buf, inodeRecord.blockCountOffset) : blockCountUnknown;
}

/** The fixed part's length for the record's version, after checking version and length. */
function inodeFixedBytes(buf: Buffer, place: string): number {
  const L = inodeRecord;
  if (buf.length < 1) throw corrupt('inode record is empty', place);
  const version = buf.readUInt8(L.versionOffset);
  if (version !== L.version && version !== L.versionV1) throw corrupt(`inode record version ${version}, expected ${L.version} (or ${L.versionV1})`, place);
  const fixedBytes = version === L.version ? L.fixedBytes : L.fixedBytesV1;
  if (buf.length < fixedBytes) throw corrupt(`inode record version ${version} is ${buf.length} bytes, needs ${fixedBytes}`, place);
  return fixedBytes;
}

/** Dirent value layout: child ino u64 ‖ file type u8 (the S_IFMT bits >> 12). */
export const direntRecord = { inoOffset: 0, typeOffset: 8, bytes: 9 } as const;

export interface DirentRecord {
  ino: number;
  /** (mode & S_IFMT) >> 12 of the child, so readdir needs no inode lookup. */
  type: number;
}

export function encodeDirent(rec: DirentRecord): Buffer {
  const buf = Buffer.allocUnsafe(direntRecord.bytes);
  buf.writeUInt32BE(Math.floor(rec.ino / 2 ** 32), direntRecord.inoOffset);
  buf.writeUInt32BE(rec.ino >>> 0, direntRecord.inoOffset + 4);
  buf.writeUInt8(rec.type, direntRecord.typeOffset);
  return buf;
}

export function decodeDirent(buf: Buffer, place: string): DirentRecord {
  if (buf.length !== direntRecord.bytes) throw corrupt(`dirent record is ${buf.length} bytes, expected ${direntRecord.bytes}`, place);
  return { ino: readU64(buf, direntRecord.inoOffset), type: buf.readUInt8(direntRecord.typeOffset) };
}

/** Where a block's bytes live. */
export const blockPointerKind = {
  /** In a local segment: `segment`, `offset` of the record, `lengthBytes` of the payload. */
  segment: 0,
  /** In an archive of the sync dir: `segment` = catalog archive number, `offset` = block table index. */
  archive: 1,
} as const;

/** Block pointer layout: kind u8 ‖ reserved u8 ‖ lengthBytes u16 ‖ segment u32 ‖ offset u32 ‖ blockId 16 bytes. */
export const blockPointerRecord = {
  kindOffset: 0,
  reservedOffset: 1,
  lengthOffset: 2,
  segmentOffset: 4,
  offsetOffset: 8,
  blockIdOffset: 12,
  blockIdBytes: 16,
  bytes: 28,
} as const;

/** Where a block's bytes live, without its id: what the read path needs. */
export interface BlockPlace {
  kind: number;
  /** Payload length, 1..4096; bytes past it read as zeros. */
  lengthBytes: number;
  segment: number;
  offset: number;
}

export interface BlockPointer {
  kind: number;
  /** Payload length, 1..4096; bytes past it read as zeros. */
  lengthBytes: number;
  segment: number;
  offset: number;
  /** Content id used by the sync layer; all zeros when not computed yet. */
  blockId: Buffer;
}

/** The all-zero block id: "not computed yet". */
export const blockIdUnknown = Buffer.alloc(blockPointerRecord.blockIdBytes);

export function encodeBlockPointer(ptr: BlockPointer): Buffer {
  const L = blockPointerRecord;
  const buf = Buffer.allocUnsafe(L.bytes);
  buf.writeUInt8(ptr.kind, L.kindOffset);
  buf.writeUInt8(0, L.reservedOffset);
  buf.writeUInt16BE(ptr.lengthBytes, L.lengthOffset);
  buf.writeUInt32BE(ptr.segment, L.segmentOffset);
  buf.writeUInt32BE(ptr.offset, L.offsetOffset);
  ptr.blockId.copy(buf, L.blockIdOffset, 0, L.blockIdBytes);
  return buf;
}

export function decodeBlockPointer(buf: Buffer, place: string): BlockPointer {
  const L = blockPointerRecord;
  if (buf.length !== L.bytes) throw corrupt(`block pointer is ${buf.length} bytes, expected ${L.bytes}`, place);
  const kind = buf.readUInt8(L.kindOffset);
  if (kind !== blockPointerKind.segment && kind !== blockPointerKind.archive) throw corrupt(`block pointer kind ${kind}`, place);
  const lengthBytes = buf.readUInt16BE(L.lengthOffset);
  if (lengthBytes < 1 || lengthBytes > 4096) throw corrupt(`block pointer length ${lengthBytes}`, place);
  return {
    kind,
    lengthBytes,
    segment: buf.readUInt32BE(L.segmentOffset),
    offset: buf.readUInt32BE(L.offsetOffset),
    blockId: Buffer.from(buf.subarray(L.blockIdOffset, L.blockIdOffset + L.blockIdBytes)),
  };
}

/**
 * The place fields of a block pointer of block `blockIndex` of `ino`, checked as by
 * decodeBlockPointer, without copying the block id or building the error place unless it fails:
 * the hot path of reads, one call per block.
 */
export function decodeBlockPlace(buf: Buffer, ino: number, blockIndex: number): BlockPlace {
  const L = blockPointerRecord;
  const kind = buf.length === L.bytes ? buf[L.kindOffset]! : -1;
  const lengthBytes = buf.length === L.bytes ? buf.readUInt16BE(L.lengthOffset) : 0;
  if (kind !== blockPointerKind.segment && kind !== blockPointerKind.archive || lengthBytes < 1 || lengthBytes > 4096) {
    decodeBlockPointer(buf, `block ${ino}:${blockIndex}`); // throws the precise error
  }
  return { kind, lengthBytes, segment: buf.readUInt32BE(L.segmentOffset), offset: buf.readUInt32BE(L.offsetOffset) };
}

/** u64 value codec (segment usage, counters). */
export function encodeU64(value: number): Buffer {
  const buf = Buffer.allocUnsafe(8);
  buf.writeUInt32BE(Math.floor(value / 2 ** 32), 0);
  buf.writeUInt32BE(value >>> 0, 4);
  return buf;
}

export function decodeU64(buf: Buffer, place: string): number {
  if (buf.length !== 8) throw corrupt(`u64 value is ${buf.length} bytes`, place);
  return readU64(buf, 0);
}
