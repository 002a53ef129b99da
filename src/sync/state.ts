/**
 * The sync layer's own LMDB tables (docs/FORMAT.md, "LMDB key space", sync rows), reached
 * through the inode port's `syncTable`:
 * - `catalog`: `a` ‖ archive number u32 → archive record; `n` ‖ name (32 ascii) → number u32;
 *   `counter` → Lamport counter u64; `archive-next` → next archive number u32; `r` ‖ replica id
 *   (32 ascii hex) → machine boxid (32 ascii hex).
 * - `blockid`: block id (16) → where the block is stored (26 bytes, `blockLocationRecord`).
 * - `stamp`: counter u64 BE ‖ boxid (16) → flat block-id list of that file version (16 bytes/slot).
 * - `version`: '/' ‖ path (UTF-8) → path record (msgpack): the heads of the path (versions no known
 *   version is based on) and the conflict copies installed for it; 0x01 ‖ path ‖ NUL ‖ stamp key →
 *   empty: some version of the path is based on that stamp. Keeping only heads keeps a record
 *   small however often a file is edited; the markers let a late, older version be recognised
 *   as superseded.
 * - `pubino`: local ino u64 → published identities (msgpack): for each name of the inode, the path
 *   and stamp of the version it shows. A conflict copy carries the identity of the losing version.
 * All values are written only inside the transaction that commits the change they describe.
 */
import { pack, unpack } from 'msgpackr';
import { FsError } from '../errors.js';
import type { SyncPort } from '../inode/sync-port.js';
import type { BlockLocation, Stamp, ZipMethod } from './idx.js';
import { hex128FromBytes, hex128ToBytes } from './names.js';
import type { VersionMeta } from './merge.js';

/** Layout of a `blockid` value. */
export const blockLocationRecord = {
  archive: 0, // u32: catalog archive number
  headerOffset: 4, // u64
  storedSizeBytes: 12, // u32
  sizeBytes: 16, // u32
  crc32: 20, // u32
  method: 24, // u16
  bytes: 26,
} as const;

/** A `blockid` value: where one archive stores a block (blockLocationRecord layout). */
export function encodeBlockLocation(archive: number, location: BlockLocation): Buffer {
  const L = blockLocationRecord;
  const v = Buffer.alloc(L.bytes);
  v.writeUInt32BE(archive, L.archive);
  v.writeBigUInt64BE(BigInt(location.headerOffset), L.headerOffset);
  v.writeUInt32BE(location.storedSizeBytes, L.storedSizeBytes);
  v.writeUInt32BE(location.sizeBytes, L.sizeBytes);
  v.writeUInt32BE(location.crc32, L.crc32);
  v.writeUInt16BE(location.method, L.method);
  return v;
}

/** Decodes a `blockid` value (or a GC `b` row, same layout) of block `blockId`. */
export function decodeBlockLocation(blockId: Uint8Array, v: Buffer): StoredBlock {
  const L = blockLocationRecord;
  if (v.length !== L.bytes) throw new FsError('CORRUPT', `blockid record of ${v.length} bytes`, hex128FromBytes(blockId));
  return {
    archive: v.readUInt32BE(L.archive),
    location: {
      blockId: Uint8Array.from(blockId),
      headerOffset: Number(v.readBigUInt64BE(L.headerOffset)),
      storedSizeBytes: v.readUInt32BE(L.storedSizeBytes),
      sizeBytes: v.readUInt32BE(L.sizeBytes),
      crc32: v.readUInt32BE(L.crc32),
      method: v.readUInt16BE(L.method) as ZipMethod,
    },
  };
}

export interface StoredBlock {
  readonly archive: number;
  readonly location: BlockLocation;
}

export interface ArchiveRecord {
  readonly name: string;
  readonly zipSizeBytes: number;
  /** Written by this store's publisher. */
  readonly own: boolean;
}

/** An identity of a local inode: it shows version `stamp` of `path` (at `path`, or as its conflict copy). */
export interface Identity {
  readonly path: string;
  readonly stamp: Stamp;
}

export interface PathRecord {
  readonly versions: VersionMeta[];
  /** Conflict-copy paths currently installed for this path. */
  copies: string[];
}

const archiveKeyPrefix = Buffer.from('a');
const nameKeyPrefix = Buffer.from('n');
const counterKey = Buffer.from('counter');
const replicaKeyPrefix = Buffer.from('r');
const archiveNextKey = Buffer.from('archive-next');

function u32(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(n);
  return b;
}

export function stampKey(stamp: Stamp): Buffer {
  const b = Buffer.allocUnsafe(24);
  b.writeBigUInt64BE(BigInt(stamp.counter), 0);
  Buffer.from(hex128ToBytes(stamp.boxid)).copy(b, 8);
  return b;
}

/** Key of a path record: '/' ‖ path (the root '' would be an empty key, which LMDB refuses). */
function pathKey(path: string): Buffer {
  return Buffer.from(`/${path}`, 'utf8');
}

/** Key of a base marker: 0x01 ‖ path ‖ NUL ‖ stamp key (sorts before every '/' path key). */
function baseKey(path: string, stamp: Stamp): Buffer {
  return Buffer.concat([Buffer.from([1]), Buffer.from(path, 'utf8'), Buffer.from([0]), stampKey(stamp)]);
}

function inoKey(ino: number): Buffer {
  const b = Buffer.allocUnsafe(8);
  b.writeBigUInt64BE(BigInt(ino));
  return b;
}

/** Typed access to the sync tables. Writes must run inside a port transaction. */
export class SyncState {
  constructor(private readonly port: SyncPort) {}

  // ---- catalog
  archiveNumber(name: string): number | undefined {
    const v = this.port.syncTable('catalog').get(Buffer.concat([nameKeyPrefix, Buffer.from(name)]));
    return v === undefined ? undefined : v.readUInt32BE(0);
  }

  archive(number: number): ArchiveRecord | undefined {
    const v = this.port.syncTable('catalog').get(Buffer.concat([archiveKeyPrefix, u32(number)]));
    return v === undefined ? undefined : (unpack(v) as ArchiveRecord);
  }

  /** Names of every archive in the catalog (own and imported). */
  archiveNames(): Set<string> {
    const names = new Set<string>();
    const start = nameKeyPrefix;
    const end = Buffer.from('o');
    for (const key of this.port.syncTable('catalog').getKeys({ start, end })) names.add(key.subarray(1).toString('latin1'));
    return names;
  }

  /** Removes an archive from the catalog (it left the sync dir; GC). Its number is never reused. */
  removeArchive(number: number): void {
    const table = this.port.syncTable('catalog');
    const rec = this.archive(number);
    if (rec === undefined) return;
    table.removeSync(Buffer.concat([nameKeyPrefix, Buffer.from(rec.name)]));
    table.removeSync(Buffer.concat([archiveKeyPrefix, u32(number)]));
  }

  addArchive(record: ArchiveRecord): number {
    const table = this.port.syncTable('catalog');
    const nextValue = table.get(archiveNextKey);
    const number = nextValue === undefined ? 1 : nextValue.readUInt32BE(0);
    table.putSync(archiveNextKey, u32(number + 1));
    table.putSync(Buffer.concat([archiveKeyPrefix, u32(number)]), pack(record));
    table.putSync(Buffer.concat([nameKeyPrefix, Buffer.from(record.name)]), u32(number));
    return number;
  }

  /** Remembers the machine boxid behind a replica id (stamps carry replica ids). First one wins. */
  setReplicaBoxid(replica: string, boxid: string): void {
    const key = Buffer.concat([replicaKeyPrefix, Buffer.from(replica)]);
    const table = this.port.syncTable('catalog');
    if (table.get(key) === undefined) table.putSync(key, Buffer.from(boxid));
  }

  /** The machine boxid of a replica id, or undefined when unknown (plain-zip pseudo-stamps). */
  replicaBoxid(replica: string): string | undefined {
    return this.port.syncTable('catalog').get(Buffer.concat([replicaKeyPrefix, Buffer.from(replica)]))?.toString('latin1');
  }

  counter(): number {
    const v = this.port.syncTable('catalog').get(counterKey);
    return v === undefined ? 0 : Number(v.readBigUInt64BE(0));
  }

  setCounter(value: number): void {
    const b = Buffer.allocUnsafe(8);
    b.writeBigUInt64BE(BigInt(value));
    this.port.syncTable('catalog').putSync(counterKey, b);
  }

  // ---- blocks
  block(blockId: Uint8Array): StoredBlock | undefined {
    const v = this.port.syncTable('blockid').get(Buffer.from(blockId));
    return v === undefined ? undefined : decodeBlockLocation(blockId, v);
  }

  hasBlock(blockId: Uint8Array): boolean {
    return this.port.syncTable('blockid').get(Buffer.from(blockId)) !== undefined;
  }

  /** Records where a block is, unless an earlier archive already has it. */
  addBlock(archive: number, location: BlockLocation): void {
    const table = this.port.syncTable('blockid');
    const key = Buffer.from(location.blockId);
    if (table.get(key) !== undefined) return;
    table.putSync(key, encodeBlockLocation(archive, location));
  }

  /** Points a block id at another archive's copy (the archive it named is going away; GC). */
  setBlockRecord(blockId: Uint8Array, record: Buffer): void {
    if (record.length !== blockLocationRecord.bytes) throw new FsError('ASSERT', `blockid record of ${record.length} bytes`);
    this.port.syncTable('blockid').putSync(Buffer.from(blockId), record);
  }

  /** Forgets a block no present archive holds any more (GC). */
  removeBlock(blockId: Uint8Array): void {
    this.port.syncTable('blockid').removeSync(Buffer.from(blockId));
  }

  // ---- stamps
  flatList(stamp: Stamp): Uint8Array | undefined {
    const v = this.port.syncTable('stamp').get(stampKey(stamp));
    return v === undefined ? undefined : new Uint8Array(v);
  }

  hasStamp(stamp: Stamp): boolean {
    return this.port.syncTable('stamp').get(stampKey(stamp)) !== undefined;
  }

  putFlatList(stamp: Stamp, flat: Uint8Array): void {
    this.port.syncTable('stamp').putSync(stampKey(stamp), Buffer.from(flat));
  }

  // ---- paths
  pathRecord(path: string): PathRecord {
    const v = this.port.syncTable('version').get(pathKey(path));
    return v === undefined ? { versions: [], copies: [] } : (unpack(v) as PathRecord);
  }

  putPathRecord(path: string, record: PathRecord): void {
    this.port.syncTable('version').putSync(pathKey(path), pack(record));
  }

  /** Records that some version of `path` is based on `stamp` (so a version with that stamp is not a head). */
  addBase(path: string, stamp: Stamp): void {
    this.port.syncTable('version').putSync(baseKey(path, stamp), Buffer.alloc(0));
  }

  /** True when a known version of `path` is based on `stamp`. */
  hasBase(path: string, stamp: Stamp): boolean {
    return this.port.syncTable('version').get(baseKey(path, stamp)) !== undefined;
  }

  /** Paths strictly below `path` that have a record (for "is anything live below?"). */
  *pathsBelow(path: string): Generator<string> {
    const start = pathKey(path === '' ? '' : `${path}/`);
    const end = path === '' ? Buffer.from('0') : pathKey(`${path}0`);
    for (const key of this.port.syncTable('version').getKeys({ start, end })) {
      const p = key.toString('utf8', 1);
      if (p !== '') yield p;
    }
  }

  // ---- local identities
  identities(ino: number): Identity[] {
    const v = this.port.syncTable('pubino').get(inoKey(ino));
    return v === undefined ? [] : (unpack(v) as Identity[]);
  }

  setIdentities(ino: number, identities: readonly Identity[]): void {
    const table = this.port.syncTable('pubino');
    if (identities.length === 0) table.removeSync(inoKey(ino));
    else table.putSync(inoKey(ino), pack(identities));
  }
}
