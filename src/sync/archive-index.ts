/**
 * What each archive holds, for garbage collection (docs/FORMAT.md "Sync state in LMDB", GC rows of
 * the `catalog` table). The importer and the publisher record, in the transaction that records an
 * archive, one row per version record and per block it carries; GC reads them to decide which
 * archives are still needed, and when an archive leaves the sync dir its rows go and every block
 * the `blockid` table served from it is re-pointed at another archive holding the same block id.
 *
 * Rows (all in `catalog`; archive numbers u32 BE, stamp keys as in the `stamp` table):
 * - `v` ‖ archive ‖ stamp → msgpack `[path, sources]`: the archive carries that version's record;
 *   `sources` are the stamps its copy runs name (an importer of this archive needs them).
 * - `s` ‖ stamp ‖ archive → empty: the reverse (which archives carry a version's record).
 * - `t` ‖ stamp → msgpack `{path, timeMs, deleted, base}`: the version, dated by the creation time
 *   of the first archive that brought it here (history keeps versions by this time).
 * - `b` ‖ archive ‖ block id → `blockid` value (26 bytes) for that archive's copy of the block.
 * - `B` ‖ block id ‖ archive → empty: the reverse (which archives carry a block).
 * - `x` ‖ archive → empty: the archive's rows are complete (catalog entries written before GC
 *   existed are indexed from their idx once, `needsIndex`).
 *
 * Invariant: the `blockid` row of a block names an archive in the catalog that carries it (a `b`
 * row exists), or the block is in no archive of the catalog and has no `blockid` row.
 */
import { pack, unpack } from 'msgpackr';
import type { SyncPort } from '../inode/sync-port.js';
import type { FileVersion, Idx, Stamp } from './idx.js';
import { hex128FromBytes } from './names.js';
import { decodeBlockLocation, encodeBlockLocation, type StoredBlock, type SyncState, stampKey } from './state.js';

const versionRow = 0x76; // 'v'
const stampRow = 0x73; // 's'
const timeRow = 0x74; // 't'
const blockRow = 0x62; // 'b'
const blockHolderRow = 0x42; // 'B'
const indexedRow = 0x78; // 'x'
const stampKeyBytes = 24;
const blockIdBytes = 16;

/** A version as GC sees it. */
export interface IndexedVersion {
  readonly stamp: Stamp;
  readonly path: string;
  readonly timeMs: number;
  readonly deleted: boolean;
  readonly base: Stamp | null;
}

type PackedStamp = readonly [number, string];

function u32(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(n);
  return b;
}

function key(...parts: (number | Buffer | Uint8Array)[]): Buffer {
  return Buffer.concat(parts.map((p) => (typeof p === 'number' ? Buffer.from([p]) : Buffer.from(p))));
}

function stampFromKey(bytes: Buffer, offset: number): Stamp {
  return { counter: Number(bytes.readBigUInt64BE(offset)), boxid: hex128FromBytes(bytes.subarray(offset + 8, offset + stampKeyBytes)) };
}

function packStamp(s: Stamp): PackedStamp {
  return [s.counter, s.boxid];
}

function unpackStamp(p: PackedStamp | null): Stamp | null {
  return p === null ? null : { counter: p[0], boxid: p[1] };
}

/** Keys in [prefix, prefix + 1) of one table. */
function prefixRange(prefix: Buffer): { start: Buffer; end: Buffer } {
  const end = Buffer.from(prefix);
  let i = end.length - 1;
  while (i >= 0 && end[i] === 0xff) end[i--] = 0;
  if (i >= 0) end[i] = end[i]! + 1;
  return { start: prefix, end: i < 0 ? Buffer.from([0xff, 0xff, 0xff, 0xff]) : end.subarray(0, i + 1) };
}

/** The copy-run sources of a version, distinct. */
export function copySources(v: FileVersion): Stamp[] {
  const seen = new Map<string, Stamp>();
  for (const run of v.blockRuns) if (run.kind === 'copy') seen.set(`${run.source.counter}:${run.source.boxid}`, run.source);
  return [...seen.values()];
}

export class ArchiveIndex {
  constructor(private readonly port: SyncPort, private readonly state: SyncState) {}

  private get table(): ReturnType<SyncPort['syncTable']> {
    return this.port.syncTable('catalog');
  }

  /** Records what archive `archive` holds (inside the transaction that records the archive). */
  indexArchive(archive: number, idx: Idx): void {
    const t = this.table;
    const timeMs = Number(idx.header.createdNs / 1_000_000n);
    for (const v of idx.versions) {
      const sk = stampKey(v.stamp);
      t.putSync(key(versionRow, u32(archive), sk), pack([v.path, copySources(v).map(packStamp)]));
      t.putSync(key(stampRow, sk, u32(archive)), Buffer.alloc(0));
      const tk = key(timeRow, sk);
      if (t.get(tk) === undefined) {
        t.putSync(tk, pack({ path: v.path, timeMs, deleted: v.deleted, base: v.base === null ? null : packStamp(v.base) }));
      }
    }
    for (const loc of idx.blocks) {
      t.putSync(key(blockRow, u32(archive), loc.blockId), encodeBlockLocation(archive, loc));
      t.putSync(key(blockHolderRow, loc.blockId, u32(archive)), Buffer.alloc(0));
    }
    t.putSync(key(indexedRow, u32(archive)), Buffer.alloc(0));
  }

  /** True when the archive was recorded before GC kept these rows (index it from its idx once). */
  needsIndex(archive: number): boolean {
    return this.table.get(key(indexedRow, u32(archive))) === undefined;
  }

  /** Every version some archive in the catalog carries. */
  *versions(): Generator<IndexedVersion> {
    for (const { key: k, value } of this.table.getRange(prefixRange(Buffer.from([timeRow])))) {
      const rec = unpack(value) as { path: string; timeMs: number; deleted: boolean; base: PackedStamp | null };
      yield { stamp: stampFromKey(k, 1), path: rec.path, timeMs: rec.timeMs, deleted: rec.deleted, base: unpackStamp(rec.base) };
    }
  }

  /** The version with this stamp, if an archive in the catalog carries it. */
  version(stamp: Stamp): IndexedVersion | undefined {
    const value = this.table.get(key(timeRow, stampKey(stamp)));
    if (value === undefined) return undefined;
    const rec = unpack(value) as { path: string; timeMs: number; deleted: boolean; base: PackedStamp | null };
    return { stamp, path: rec.path, timeMs: rec.timeMs, deleted: rec.deleted, base: unpackStamp(rec.base) };
  }

  /** Archives carrying the record of version `stamp`. */
  holdersOfVersion(stamp: Stamp): number[] {
    const out: number[] = [];
    for (const k of this.table.getKeys(prefixRange(key(stampRow, stampKey(stamp))))) out.push(k.readUInt32BE(1 + stampKeyBytes));
    return out;
  }

  /** Copy-run sources of `stamp` as archive `archive` encodes it. */
  sourcesIn(archive: number, stamp: Stamp): Stamp[] {
    const value = this.table.get(key(versionRow, u32(archive), stampKey(stamp)));
    if (value === undefined) return [];
    const [, sources] = unpack(value) as [string, PackedStamp[]];
    return sources.map((s) => unpackStamp(s)!);
  }

  /** Versions whose records archive `archive` carries: stamp and path. */
  versionsIn(archive: number): { stamp: Stamp; path: string }[] {
    const out: { stamp: Stamp; path: string }[] = [];
    for (const { key: k, value } of this.table.getRange(prefixRange(key(versionRow, u32(archive))))) {
      out.push({ stamp: stampFromKey(k, 5), path: (unpack(value) as [string])[0] });
    }
    return out;
  }

  /** Blocks archive `archive` carries: id and stored size. */
  blocksIn(archive: number): { blockId: Buffer; storedSizeBytes: number }[] {
    const out: { blockId: Buffer; storedSizeBytes: number }[] = [];
    for (const { key: k, value } of this.table.getRange(prefixRange(key(blockRow, u32(archive))))) {
      out.push({ blockId: Buffer.from(k.subarray(5, 5 + blockIdBytes)), storedSizeBytes: value.readUInt32BE(12) });
    }
    return out;
  }

  /** Where archive `archive` stores block `blockId`, if it carries it. */
  stored(archive: number, blockId: Uint8Array): StoredBlock | undefined {
    const value = this.table.get(key(blockRow, u32(archive), blockId));
    return value === undefined ? undefined : decodeBlockLocation(blockId, value);
  }

  /** Every copy of block `blockId` in an archive of the catalog, newest archive first. */
  locations(blockId: Uint8Array): StoredBlock[] {
    const out: StoredBlock[] = [];
    for (const holder of this.holdersOfBlock(blockId).sort((a, b) => b - a)) {
      const stored = this.stored(holder, blockId);
      if (stored !== undefined) out.push(stored);
    }
    return out;
  }

  /** Archives carrying block `blockId`. */
  holdersOfBlock(blockId: Uint8Array): number[] {
    const out: number[] = [];
    for (const k of this.table.getKeys(prefixRange(key(blockHolderRow, blockId)))) out.push(k.readUInt32BE(1 + blockIdBytes));
    return out;
  }

  /**
   * Re-points every block the `blockid` table serves from one of `archives` at another archive
   * carrying it, outside the set, while those archives are still there (GC, before it deletes
   * them: a read in between never finds a block pointing at a file being unlinked). Blocks no
   * other archive carries keep their row until dropArchive.
   */
  repointAway(archives: ReadonlySet<number>): void {
    for (const archive of archives) {
      for (const { blockId } of this.blocksIn(archive)) {
        if (this.state.block(blockId)?.archive !== archive) continue;
        const other = this.holdersOfBlock(blockId).filter((a) => !archives.has(a)).sort((a, b) => b - a)[0];
        const record = other === undefined ? undefined : this.table.get(key(blockRow, u32(other), blockId));
        if (record !== undefined) this.state.setBlockRecord(blockId, record);
      }
    }
  }

  /**
   * Forgets archive `archive` (it left the sync dir, or GC retires it): its rows go, every block
   * the `blockid` table served from it is re-pointed at another archive in the catalog carrying
   * it (or forgotten when none does), and versions no archive carries any more lose their `t`
   * row. The `stamp` table keeps every flat list (the publisher and importer resolve copy runs
   * with it). Call inside a transaction. Returns the blocks no archive holds any more.
   */
  dropArchive(archive: number): Buffer[] {
    const t = this.table;
    const lost: Buffer[] = [];
    for (const { blockId } of this.blocksIn(archive)) {
      t.removeSync(key(blockRow, u32(archive), blockId));
      t.removeSync(key(blockHolderRow, blockId, u32(archive)));
      if (this.state.block(blockId)?.archive !== archive) continue;
      const other = this.holdersOfBlock(blockId).sort((a, b) => b - a)[0];
      const record = other === undefined ? undefined : t.get(key(blockRow, u32(other), blockId));
      if (record === undefined) {
        this.state.removeBlock(blockId);
        lost.push(blockId);
      } else {
        this.state.setBlockRecord(blockId, record);
      }
    }
    for (const { stamp } of this.versionsIn(archive)) {
      const sk = stampKey(stamp);
      t.removeSync(key(versionRow, u32(archive), sk));
      t.removeSync(key(stampRow, sk, u32(archive)));
      if (this.holdersOfVersion(stamp).length === 0) t.removeSync(key(timeRow, sk));
    }
    t.removeSync(key(indexedRow, u32(archive)));
    this.state.removeArchive(archive);
    return lost;
  }
}
