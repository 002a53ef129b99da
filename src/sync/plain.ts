/**
 * Plain zips (made by anyone with `zip`, no idx) as a read-only union. For each path the newest
 * entry wins: entry mtime, then archive file name. Each winning entry becomes a pseudo-version
 * with stamp counter 0 (below every real version, whose counters start at 1) and a boxid derived
 * from (zip name, path, mtime, CRC-32), so every peer holding the same zips derives the same
 * stamps. A local write to such a path makes a real version based on the pseudo-version, which
 * therefore shadows it (copy-on-write; no EROFS). Content is fetched eagerly into the local store
 * when the entry is installed, because a deflate stream cannot be read at a 4 KiB offset without
 * inflating from its start; entries larger than `plainZipReadMaxBytesDefault` are skipped with a
 * warning. Unsafe or unreadable entries are skipped with a warning naming the zip and the entry.
 */
import { createHash } from 'node:crypto';
import { isFsError } from '../errors.js';
import type { SyncPort } from '../inode/sync-port.js';
import type { PlainZipFile } from './archive-store.js';
import { blockSlotCount, type Stamp } from './idx.js';
import { blockIdBytes, plainZipReadMaxBytesDefault } from './limits.js';
import { stampString, type VersionMeta } from './merge.js';
import type { SyncState } from './state.js';
import { PlainZip, rejectionWarning, type PlainZipEntry } from './zipfile.js';
import { blockIdOf } from './block-id.js';

interface Candidate {
  readonly zip: PlainZipFile;
  readonly entry: PlainZipEntry;
}

export class PlainUnion {
  private signature: string | undefined;
  /** Content of pseudo-versions not installed yet, by stamp string. */
  private readonly contents = new Map<string, Buffer>();

  constructor(readonly syncDir: string, private readonly warn: (message: string) => void) {}

  /** Re-reads the plain zips when the set changed; records pseudo-versions; returns touched paths. */
  async refresh(zips: readonly PlainZipFile[], port: SyncPort, state: SyncState): Promise<Set<string>> {
    const signature = zips.map((z) => `${z.fileName}:${z.sizeBytes}:${z.mtimeMs}`).join('|');
    const touched = new Set<string>();
    if (signature === this.signature) return touched;
    this.signature = signature;
    const best = new Map<string, Candidate>();
    const opened: PlainZip[] = [];
    try {
      for (const zip of zips) {
        let plain: PlainZip;
        try {
          plain = await PlainZip.open(zip.path);
        } catch (e) {
          if (!isFsError(e)) throw e;
          this.warn(`plain zip ignored: ${e.message}`);
          continue;
        }
        opened.push(plain);
        for (const rejected of plain.rejected) this.warn(rejectionWarning(zip.path, rejected));
        for (const entry of plain.entries) {
          const prior = best.get(entry.path);
          if (prior === undefined || entry.mtimeMs > prior.entry.mtimeMs || (entry.mtimeMs === prior.entry.mtimeMs && zip.fileName > prior.zip.fileName)) {
            best.set(entry.path, { zip, entry });
          }
        }
      }
      const wanted = new Map<string, { meta: VersionMeta; flat: Uint8Array }>();
      for (const [path, candidate] of best) {
        const plain = opened.find((z) => z.path === candidate.zip.path)!;
        const made = await this.versionOf(path, candidate, plain);
        if (made !== undefined) wanted.set(path, made);
      }
      port.transaction(() => this.record(wanted, state, touched));
    } finally {
      for (const z of opened) z.close();
    }
    return touched;
  }

  private async versionOf(path: string, c: Candidate, plain: PlainZip): Promise<{ meta: VersionMeta; flat: Uint8Array } | undefined> {
    const e = c.entry;
    const boxid = createHash('sha256').update(`${c.zip.fileName}\0${path}\0${e.mtimeMs}\0${e.crc32}`).digest('hex').slice(0, 32);
    const stamp: Stamp = { counter: 0, boxid };
    let flat = new Uint8Array(0);
    if (e.kind === 'file') {
      let data: Buffer;
      try {
        data = await plain.readEntry(e, plainZipReadMaxBytesDefault);
      } catch (err) {
        if (!isFsError(err)) throw err;
        this.warn(`${c.zip.path}: entry ${path} skipped: ${err.message}`);
        return undefined;
      }
      flat = new Uint8Array(blockSlotCount(data.length) * blockIdBytes);
      for (let slot = 0; slot * 4096 < data.length; slot++) {
        const block = data.subarray(slot * 4096, Math.min(data.length, (slot + 1) * 4096));
        if (!block.every((b) => b === 0)) flat.set(blockIdOf(block), slot * blockIdBytes);
      }
      this.contents.set(stampString(stamp), data);
    }
    const meta: VersionMeta = {
      path, type: e.kind, mode: e.mode, uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, rdev: 0,
      mtimeNs: (BigInt(Math.round(e.mtimeMs)) * 1_000_000n).toString(),
      sizeBytes: e.kind === 'file' ? e.sizeBytes : e.kind === 'symlink' ? Buffer.byteLength(e.symlinkTarget) : 0,
      symlinkTarget: e.symlinkTarget, xattrs: [], deleted: false, stamp, base: null,
    };
    return { meta, flat };
  }

  /** Replaces the pseudo-versions in the path records with the wanted ones. */
  private record(wanted: Map<string, { meta: VersionMeta; flat: Uint8Array }>, state: SyncState, touched: Set<string>): void {
    const paths = new Set(wanted.keys());
    for (const p of state.pathsBelow('')) {
      if (state.pathRecord(p).versions.some((v) => v.stamp.counter === 0)) paths.add(p);
    }
    for (const path of paths) {
      const rec = state.pathRecord(path);
      const want = wanted.get(path);
      const old = rec.versions.filter((v) => v.stamp.counter === 0);
      if (old.length === 1 && want !== undefined && stampString(old[0]!.stamp) === stampString(want.meta.stamp)) continue;
      if (old.length === 0 && (want === undefined || state.hasBase(path, want.meta.stamp))) continue;
      const versions = rec.versions.filter((v) => v.stamp.counter !== 0);
      if (want !== undefined && !state.hasBase(path, want.meta.stamp)) {
        versions.push(want.meta);
        state.putFlatList(want.meta.stamp, want.flat);
      }
      state.putPathRecord(path, { versions, copies: rec.copies });
      touched.add(path);
    }
  }

  /** Content of a pseudo-version, or undefined when it is not held (the union is re-read at the next mount). */
  content(stamp: Stamp): Buffer | undefined {
    return this.contents.get(stampString(stamp));
  }

  /** Drops held content once installed. */
  installed(stamp: Stamp): void {
    this.contents.delete(stampString(stamp));
  }

  close(): void {
    this.contents.clear();
  }
}
