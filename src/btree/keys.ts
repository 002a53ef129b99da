/**
 * The whole key space of the LMDB environment, in one file (mirrored by docs/FORMAT.md,
 * "LMDB key space"). Every table is a named LMDB database with binary keys; integers in keys
 * are big-endian so that LMDB's byte order equals numeric order, which readdir, truncate and
 * the checker rely on for range scans.
 */
import { assert } from '../errors.js';

/** Names of the LMDB databases. Changing one is a format change. */
export const tableNames = {
  /** ino u64 → inode record (records.ts). */
  inode: 'inode',
  /** parent ino u64 ‖ name bytes → dirent record. */
  dirent: 'dirent',
  /** ino u64 ‖ blockIndex u64 → block pointer record. */
  blockmap: 'blockmap',
  /** ino u64 ‖ xattr name bytes → raw value. */
  xattr: 'xattr',
  /** segment u32 → live bytes u64 (for the cleaner). */
  seguse: 'seguse',
  /** ino u64 → empty: inodes with nlink 0 still open at the last commit; freed at next open. */
  orphan: 'orphan',
  /** utf8 name → value: allocator marks, format version, store identity. */
  meta: 'meta',
  /** ino u64 → u8 change flags: inodes changed since they were last published (sync layer). */
  outbox: 'outbox',
  /** Sync layer's own tables (catalog of archives, versions); their layouts live in src/sync. */
  catalog: 'catalog',
  version: 'version',
  /** Reverse index: ino u64 ‖ parent ino u64 ‖ name bytes → empty; one row per name of the inode (not ".."). */
  link: 'link',
  /** Sync layer: block id (16 bytes) → where that block is stored in the sync dir (src/sync/state.ts). */
  blockid: 'blockid',
  /** Sync layer: stamp (counter u64 ‖ boxid 16 bytes) → flat block-id list of that version. */
  stamp: 'stamp',
  /** Sync layer: local ino u64 → the published identities (path, stamp) this inode carries. */
  pubino: 'pubino',
} as const;

export type TableName = keyof typeof tableNames;

/** Keys of the `meta` table. */
export const metaKeys = {
  formatVersion: 'format.version',
  segmentHead: 'alloc.segment-head',
  inoNext: 'alloc.ino-next',
  versionNext: 'alloc.version-next',
  storeId: 'store.id',
} as const;

/**
 * Current on-disk format version of the LMDB layout; stored under metaKeys.formatVersion.
 * 2: inode records carry their block count (records.ts); a format-1 store is upgraded when
 * opened for writing (Store.open).
 */
export const btreeFormatVersion = 2;
/** The oldest format this build opens (and upgrades). */
export const btreeFormatVersionOldest = 1;

const u64Bytes = 8;
const u32Bytes = 4;

function writeU64(buf: Buffer, value: number, offset: number): void {
  if (!(Number.isSafeInteger(value) && value >= 0)) assert(false, `u64 key part out of range: ${value}`);
  buf.writeUInt32BE(Math.floor(value / 2 ** 32), offset);
  buf.writeUInt32BE(value >>> 0, offset + 4);
}

/** Reads a u64 written by writeU64 (values above 2^53 are rejected as corrupt by the caller). */
export function readU64(buf: Buffer, offset: number): number {
  return buf.readUInt32BE(offset) * 2 ** 32 + buf.readUInt32BE(offset + 4);
}

/** Key of an inode-addressed table: ino as u64 BE. */
export function inoKey(ino: number): Buffer {
  const key = Buffer.allocUnsafe(u64Bytes);
  writeU64(key, ino, 0);
  return key;
}

/** Key of a directory entry: parent ino u64 BE followed by the raw name bytes. */
export function direntKey(parentIno: number, name: Buffer): Buffer {
  const key = Buffer.allocUnsafe(u64Bytes + name.length);
  writeU64(key, parentIno, 0);
  name.copy(key, u64Bytes);
  return key;
}

/** Name part of a dirent key. */
export function direntKeyName(key: Buffer): Buffer {
  return key.subarray(u64Bytes);
}

/** Key of a block map entry: ino u64 BE ‖ blockIndex u64 BE. */
export function blockKey(ino: number, blockIndex: number): Buffer {
  const key = Buffer.allocUnsafe(2 * u64Bytes);
  writeU64(key, ino, 0);
  writeU64(key, blockIndex, u64Bytes);
  return key;
}

/** Block index part of a block map key. */
export function blockKeyIndex(key: Buffer): number {
  return readU64(key, u64Bytes);
}

/** Ino part of any key that starts with an ino. */
export function keyIno(key: Buffer): number {
  return readU64(key, 0);
}

/** Key of a reverse-index row: ino u64 BE ‖ parent ino u64 BE ‖ name bytes. */
export function linkKey(ino: number, parentIno: number, name: Buffer): Buffer {
  const key = Buffer.allocUnsafe(2 * u64Bytes + name.length);
  writeU64(key, ino, 0);
  writeU64(key, parentIno, u64Bytes);
  name.copy(key, 2 * u64Bytes);
  return key;
}

/** Parent ino and name of a reverse-index key. */
export function linkKeyParts(key: Buffer): { parentIno: number; name: Buffer } {
  return { parentIno: readU64(key, u64Bytes), name: key.subarray(2 * u64Bytes) };
}

/** Key of an extended attribute: ino u64 BE ‖ name bytes. */
export function xattrKey(ino: number, name: Buffer): Buffer {
  return direntKey(ino, name);
}

/** Key of a segment usage entry: segment number u32 BE. */
export function segmentKey(segment: number): Buffer {
  const key = Buffer.allocUnsafe(u32Bytes);
  key.writeUInt32BE(segment, 0);
  return key;
}

/** Range [start, end) covering every key whose first 8 bytes are `ino`, from `fromSuffix` on. */
export function inoPrefixRange(ino: number, fromBlockIndex?: number): { start: Buffer; end: Buffer } {
  return {
    start: fromBlockIndex === undefined ? inoKey(ino) : blockKey(ino, fromBlockIndex),
    end: inoKey(ino + 1),
  };
}
