/**
 * Repacking (design section 6): merges several of this store's archives into one new archive that
 * carries everything the GC plan still needs from them — the version records they hold for the
 * plan, and the blocks the plan keeps in them — written by the normal write protocol (zip, then
 * idx; sealed in an encrypted dir). The GC then retires the merged archives through the rm-log with
 * the new archive among their superseding archives.
 *
 * Invariants:
 * - a repacked version keeps its stamp, base, path and attributes, so peers that already hold it
 *   skip it (the importer records a stamp once) and peers that do not merge it like the original;
 *   only its block runs may change: copy runs whose source is needed only as a copy source are
 *   rewritten as ids, so the chain of sources can be retired (a copy whose source is needed anyway
 *   stays a copy, and such a source is carried before its copier);
 * - every block a carried version names is in the new archive or in an archive the plan keeps.
 */
import { existsSync } from 'node:fs';
import { writeArchive } from './archive-store.js';
import { archivePaths, readIdx } from './archive-store.js';
import { type Keyring, readSealedFile, sealFile, writeSealedFile } from './crypto/index.js';
import { deltaRuns } from './engine.js';
import type { GcHost, GcPlan } from './gc.js';
import { blockRunsFromIds, compareStamps, type FileVersion, type Idx, idxHeaderSizeBytes, idxSizeBytes, idxTrailerSizeBytes } from './idx.js';
import { idxSizeMaxBytes, repackIdxVersionBytesMax, repackOutputBlockCountMax } from './limits.js';
import { stampString } from './merge.js';
import { newArchiveName } from './names.js';
import type { StoredBlock } from './state.js';
import { type BlockLocation, type BlockPayload, writeSinkFile } from './zipfile.js';
import { blockZipProducer } from './block-worker.js';

/** Reads and decodes archive `name`'s idx (opening it sealed in an encrypted dir). */
export async function readArchiveIdx(host: GcHost, name: string, keyring: Keyring | undefined): Promise<Idx> {
  const { idxPath } = archivePaths(host.syncDir, name);
  if (keyring === undefined) return readIdx(idxPath);
  const keys = keyring.keys;
  return readIdx(idxPath, (path, archiveName) => readSealedFile(path, { keys, archiveName, kind: 'idx', syncDir: host.syncDir }, idxSizeMaxBytes));
}

const emptyIdxBytes = idxHeaderSizeBytes + idxTrailerSizeBytes;

/** A carried version with its copy runs rewritten where the source is needed only as a source. */
function carried(host: GcHost, plan: GcPlan, v: FileVersion): FileVersion {
  if (v.type !== 'file' || !v.blockRuns.some((r) => r.kind === 'copy')) return v;
  const flat = host.state.flatList(v.stamp);
  if (flat === undefined) return v;
  for (const run of v.blockRuns) {
    const source = stampString(run.kind === 'copy' ? run.source : v.stamp);
    if (run.kind !== 'copy' || !plan.direct.has(source) || !plan.liveVersions.has(source)) continue;
    const sourceFlat = host.state.flatList(run.source);
    if (sourceFlat !== undefined) return { ...v, blockRuns: deltaRuns(flat, { stamp: run.source, flat: sourceFlat }) };
  }
  return { ...v, blockRuns: blockRunsFromIds(flat) };
}

/**
 * Writes one archive with what `plan` keeps in `archives` (own archives) and the needed blocks only
 * dying archives carry (plan.orphanBlocks: a rescue, read while they are still here), records and
 * indexes it as this store's own, and returns its name; undefined when there is nothing to carry.
 */
export async function repackArchives(host: GcHost, plan: GcPlan, archives: readonly number[],
  keyring: Keyring | undefined): Promise<{ name: string; merged: number[] } | undefined> {
  const merged = new Set<number>();
  const versions: FileVersion[] = [];
  let versionBytes = 0;
  for (const archive of archives) {
    const idx = await readArchiveIdx(host, plan.archives.get(archive)!.name, keyring);
    const mine = idx.versions.filter((v) => plan.versionHolder.get(stampString(v.stamp)) === archive).map((v) => carried(host, plan, v));
    // Copies rewritten as ids grow the records: the idx stays within its limit, the rest waits.
    const bytes = mine.reduce((sum, v) => sum + idxSizeBytes({ header: idx.header, versions: [v], blocks: [] }) - emptyIdxBytes, 0);
    if (merged.size > 0 && versionBytes + bytes > repackIdxVersionBytesMax) break;
    merged.add(archive);
    versions.push(...mine);
    versionBytes += bytes;
  }
  // Copy sources are older (Lamport) than their copiers: the importer resolves them in order.
  versions.sort((a, b) => compareStamps(a.stamp, b.stamp));
  const blocks: StoredBlock[] = [];
  const readable = new Map<number, boolean>();
  const stillThere = (archive: number): boolean => {
    let there = readable.get(archive);
    if (there === undefined) {
      there = existsSync(archivePaths(host.syncDir, plan.archives.get(archive)!.name).zipPath);
      readable.set(archive, there);
    }
    return there;
  };
  const rescued: StoredBlock[] = [];
  for (const [hex, holder] of plan.blockHolder) {
    // A dying archive already deleted cannot be rescued from (its blocks are lost here).
    const rescue = !merged.has(holder);
    if (rescue && !(plan.orphanBlocks.has(hex) && stillThere(holder))) continue;
    const stored = host.index.stored(holder, Buffer.from(hex, 'hex'));
    if (stored !== undefined) (rescue ? rescued : blocks).push(stored);
  }
  // Merged archives' blocks all go (the candidates were chosen within the limit); rescued ones
  // fill up to it, the rest waits for the next run.
  blocks.push(...rescued.slice(0, Math.max(0, repackOutputBlockCountMax - blocks.length)));
  if (versions.length === 0 && blocks.length === 0) return undefined;
  const name = newArchiveName();
  // Deflate runs on the block worker when there is one (a large repack would otherwise hold the
  // JS thread, and FUSE with it, for seconds).
  const read = (batch: readonly StoredBlock[]): BlockPayload[] => batch.map((stored) => ({ blockId: stored.location.blockId, data: host.reader.readStored(stored) }));
  const produce = blockZipProducer(blocks, read, host.prepareBlocks, host.compressionLevel);
  let locations: BlockLocation[] = [];
  let idx: Idx | undefined;
  const seal = keyring === undefined ? undefined : { key: keyring.keys.get(keyring.currentKeyId)!, keyId: keyring.currentKeyId, archiveName: name };
  const written = await writeArchive(host.syncDir, {
    name,
    writeZip: async (tempPath) => {
      locations = seal === undefined
        ? (await writeSinkFile(tempPath, produce)).locations
        : (await writeSealedFile(tempPath, { ...seal, kind: 'zip' }, produce)).result.locations;
    },
    ...(seal === undefined ? {} : { sealIdx: (idxBytes: Uint8Array) => sealFile(idxBytes, { ...seal, kind: 'idx' }) }),
    idx: (zipSizeBytes): Idx => {
      idx = {
        header: { archiveName: name, writerBoxid: host.boxid, createdNs: BigInt(host.now()) * 1_000_000n, encrypted: seal !== undefined, zipSizeBytes },
        versions, blocks: locations,
      };
      return idx;
    },
  });
  host.port.transaction(() => {
    const number = host.state.addArchive({ name, zipSizeBytes: written.zipSizeBytes, own: true });
    for (const loc of locations) host.state.addBlock(number, loc);
    host.index.indexArchive(number, idx!);
  });
  host.log(`repacked ${merged.size} archives into ${name} (${versions.length} versions, ${blocks.length} blocks)`);
  return { name, merged: [...merged] };
}
