/**
 * Garbage collection of archives in the sync dir (design section 6; docs/ARCHITECTURE.md "GC").
 *
 * One GC run of a store, on the engine's queue (never interleaved with a publish or an import):
 *   1. Index any catalog archive recorded before GC kept its rows (archive-index.ts).
 *   2. Plan (gc-plan.ts): which versions and blocks are needed, and one holder archive for each.
 *   3. Repack (repack.ts) when enough of this store's kept archives are small or mostly dead:
 *      their needed versions and blocks go into one new archive, and the plan is made again (the
 *      new archive is now the newest holder, so the merged ones fall out of it). The same write
 *      rescues needed blocks of this store's versions (and of what its inodes show) that only
 *      archives named by some rm-log still carry, and rewrites own copy runs whose source only
 *      such archives carry.
 *   4. Retire every archive of THIS store that holds nothing of the plan: append it to
 *      rmlog/<boxid> (sealed in an encrypted dir) with supersededBy = the holders of what it held
 *      and of the current heads of its paths; re-point blocks away from it; after the grace period
 *      (a later run) delete idx, then zip, and drop it from the catalog.
 *
 * A store retires only archives it wrote itself (catalog `own`): a peer's archive is retired by
 * that peer, which knows whether it still has unpublished work on it, and two stores never retire
 * each other's copy of a block relying on the other's (holders prefer own archives).
 *
 * forgetVanished (called by every import) handles archives that left the sync dir by any hand
 * (this GC, another mount's GC, the sync daemon applying rm-logs, a user): their blocks are
 * re-pointed at other archives with the same block id, and they leave the catalog.
 */
import { readdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { isFsError } from '../errors.js';
import type { SyncPort } from '../inode/sync-port.js';
import type { ArchiveIndex } from './archive-index.js';
import type { ArchiveBlockReader } from './archive-reader.js';
import { archivePaths, fsyncDirectory, idxSuffix, zipSuffix, type CompleteArchive } from './archive-store.js';
import type { Keyring } from './crypto/index.js';
import type { Idx } from './idx.js';
import { gcSliceMsDefault, keepHistoryMsDefault, retireGraceMsDefault, repackArchiveCountMin, repackDeadBytesMin,
  repackInputArchiveCountMax, repackLiveRatioMin, repackOutputBlockCountMax, repackOutputSizeMaxBytes, repackOutputVersionCountMax,
  repackSmallArchiveBytes } from './limits.js';
import { stampString } from './merge.js';
import { isArchiveName } from './names.js';
import { Pacer } from './pacer.js';
import { readArchiveIdx, repackArchives } from './repack.js';
import { type GcPlan, makePlan } from './gc-plan.js';
export type { GcPlan } from './gc-plan.js';
import { appendRmLog, deadArchives, readRmLogs, rmLogDirName, type RmLogEntry, rmEntrySupersededByCountMax } from './rmlog.js';
import type { SyncState } from './state.js';
import type { BlockPayload, PreparedBlock } from './zipfile.js';

/** What the GC needs from the engine. */
export interface GcHost {
  readonly syncDir: string;
  /** The machine's boxid: the rm-log written is rmlog/<boxid>, the idx writer of a repack. */
  readonly boxid: string;
  /** This store's stamp id: versions stamped with it are this store's own. */
  readonly replicaId: string;
  readonly port: SyncPort;
  readonly state: SyncState;
  readonly index: ArchiveIndex;
  readonly reader: ArchiveBlockReader;
  readonly compressionLevel: number;
  /** Zip entry data (CRC-32, deflate) of blocks off the JS thread (the block worker); absent: on the JS thread. */
  readonly prepareBlocks?: (blocks: readonly BlockPayload[], level: number) => Promise<PreparedBlock[]>;
  readonly log: (message: string) => void;
  /** Wall clock in ms (tests move it). */
  readonly now: () => number;
  /** The keyring of an encrypted sync dir, undefined for a plain one; throws BAD_KEY without a usable key. */
  keyring(): Keyring | undefined;
  /** Archives waiting for versions or blocks (their references are kept). */
  waiting(): readonly CompleteArchive[];
}

/** When a repack runs (limits.ts holds the defaults; tests lower them). */
export interface RepackThresholds {
  readonly smallArchiveBytes: number;
  readonly liveRatioMin: number;
  readonly archiveCountMin: number;
  readonly deadBytesMin: number;
}

export const repackThresholdsDefault: RepackThresholds = {
  smallArchiveBytes: repackSmallArchiveBytes, liveRatioMin: repackLiveRatioMin,
  archiveCountMin: repackArchiveCountMin, deadBytesMin: repackDeadBytesMin,
};

export interface GcOptions {
  /** History period in ms (`-o keep_history=`); 0 keeps only what is visible. */
  readonly keepHistoryMs?: number;
  readonly repack?: Partial<RepackThresholds>;
  /**
   * How long a retired archive stays in the sync dir after its rm-log entry, so other mounts of
   * the dir import what superseded it before it goes (default retireGraceMsDefault; 0: at once).
   */
  readonly retireGraceMs?: number;
  /** Work between two turns of the event loop in planning (default gcSliceMsDefault; tests use 0). */
  readonly sliceMs?: number;
}

export interface GcReport {
  /** Archives of this store retired and deleted by this run (named in the rm-log by it or an earlier one). */
  readonly retired: readonly string[];
  /** Archives named in the rm-log whose deletion waits for the grace period (a later run deletes them). */
  readonly retiring: number;
  /** The archive a repack wrote, and the archives it merged. */
  readonly repacked: { readonly name: string; readonly from: readonly string[] } | undefined;
  /** Archives in the catalog after the run. */
  readonly archiveCount: number;
  /** Turns the planning gave the event loop (FUSE requests) while it ran. */
  readonly pauses: number;
}

/** Names of the archives in `syncDir` whose idx and zip are both there. */
export async function presentArchives(syncDir: string): Promise<Set<string>> {
  const idx = new Set<string>();
  const zip = new Set<string>();
  for (const name of await readdir(syncDir)) {
    const stem = name.slice(0, -4);
    if (!isArchiveName(stem)) continue;
    if (name.endsWith(idxSuffix)) idx.add(stem);
    else if (name.endsWith(zipSuffix)) zip.add(stem);
  }
  return new Set([...idx].filter((n) => zip.has(n)));
}

function hexOf(id: Uint8Array): string {
  return Buffer.from(id).toString('hex');
}

export class GarbageCollector {
  readonly keepHistoryMs: number;
  private readonly repackThresholds: RepackThresholds;
  readonly retireGraceMs: number;
  /** When each archive being retired was first found dead (the grace period runs from there). */
  private readonly retiringSinceMs = new Map<string, number>();
  private rmLogSignature = '';
  private dyingNames = new Set<string>();
  private readonly sliceMs: number;

  constructor(private readonly host: GcHost, options: GcOptions = {}) {
    this.sliceMs = options.sliceMs ?? gcSliceMsDefault;
    this.keepHistoryMs = options.keepHistoryMs ?? keepHistoryMsDefault;
    this.repackThresholds = { ...repackThresholdsDefault, ...options.repack };
    this.retireGraceMs = options.retireGraceMs ?? retireGraceMsDefault;
  }

  /** What each archive holds (the publisher and the importer record into it). */
  get index(): ArchiveIndex {
    return this.host.index;
  }

  /** One GC run (the steps above). Call on the engine's queue. */
  async collect(): Promise<GcReport> {
    let keyring: Keyring | undefined;
    try {
      keyring = this.host.keyring();
    } catch (e) {
      // Without a key nothing here can be read or sealed; the engine already warned once.
      if (isFsError(e, 'BAD_KEY')) return { retired: [], retiring: 0, repacked: undefined, archiveCount: this.host.state.archiveNames().size, pauses: 0 };
      throw e;
    }
    await this.ensureIndexed(keyring);
    const dying = await this.dyingArchives(keyring);
    const pacer = new Pacer(this.sliceMs);
    let plan = await this.plan(dying, pacer);
    const candidates = [...new Set([...await this.repackCandidates(plan, pacer), ...plan.forced])].sort((a, b) => a - b);
    let repacked: GcReport['repacked'];
    // A repack also rescues what only dying archives (named by some rm-log) still carry.
    if (candidates.length > 0 || plan.orphanBlocks.size > 0) {
      try {
        const written = await repackArchives(this.host, plan, candidates, keyring);
        if (written !== undefined) {
          repacked = { name: written.name, from: written.merged.map((a) => plan.archives.get(a)!.name) };
          plan = await this.plan(dying, pacer);
        }
      } catch (e) {
        // An archive that cannot be read whole is left as it is; retiring goes on without it.
        if (!isFsError(e)) throw e;
        this.host.log(`repack skipped (will retry): ${e.message}`);
      }
    }
    const { deleted, waiting } = plan.dead.length === 0 ? { deleted: [], waiting: 0 } : await this.retire(plan, keyring);
    return { retired: deleted, retiring: waiting, repacked, archiveCount: this.host.state.archiveNames().size, pauses: pacer.rests };
  }

  /**
   * Names of the archives any rm-log in the sync dir names (they may be deleted at any time: what
   * only they carry must be copied elsewhere). Chunks are read again only when the set of chunk
   * files changed. Unreadable chunks are skipped (readRmLogs reports them; skipping only delays).
   */
  private async dyingArchives(keyring: Keyring | undefined): Promise<Set<string>> {
    const root = join(this.host.syncDir, rmLogDirName);
    const listing: string[] = [];
    for (const box of await readdir(root).catch(() => [] as string[])) {
      for (const chunk of await readdir(join(root, box)).catch(() => [] as string[])) listing.push(`${box}/${chunk}`);
    }
    const signature = listing.sort().join('\n');
    if (signature !== this.rmLogSignature) {
      const { chunks } = await readRmLogs(this.host.syncDir, keyring?.keys);
      this.dyingNames = new Set(deadArchives(chunks).keys());
      this.rmLogSignature = signature;
    }
    return this.dyingNames;
  }

  /**
   * Drops archives that left the sync dir from the catalog, re-pointing their blocks at other
   * archives with the same block id. Returns their names.
   */
  async forgetVanished(): Promise<string[]> {
    const { state, index, port, reader } = this.host;
    const known = state.archiveNames();
    if (known.size === 0) return [];
    const present = await presentArchives(this.host.syncDir);
    const gone = [...known].filter((n) => !present.has(n)).sort();
    if (gone.length === 0) return [];
    let lostCount = 0;
    const ownGone: string[] = [];
    port.transaction(() => {
      for (const name of gone) {
        const number = state.archiveNumber(name);
        if (number === undefined) continue;
        if (state.archive(number)?.own === true) ownGone.push(name);
        reader.forget(number);
        lostCount += index.dropArchive(number).length;
      }
    });
    // A zip left without its idx by a retirement cut short (idx first, then zip): ours to finish.
    for (const name of ownGone) await unlinkIfThere(archivePaths(this.host.syncDir, name).zipPath);
    this.host.log(`${gone.length} archive(s) left the sync dir; their blocks are re-pointed at other archives`
      + (lostCount > 0 ? `, except ${lostCount} block(s) no other archive here holds` : ''));
    return gone;
  }

  /** Reads the idx of catalog archives recorded before GC kept its rows, and indexes them. */
  private async ensureIndexed(keyring: Keyring | undefined): Promise<void> {
    const { state, index, port } = this.host;
    for (const name of state.archiveNames()) {
      const number = state.archiveNumber(name);
      if (number === undefined || !index.needsIndex(number)) continue;
      let idx: Idx;
      try {
        idx = await readArchiveIdx(this.host, name, keyring);
      } catch (e) {
        if (!isFsError(e)) throw e;
        continue; // gone or unreadable: forgetVanished or the next run
      }
      port.transaction(() => index.indexArchive(number, idx));
    }
  }

  /** Step 2: what is needed and who holds it (gc-plan.ts). */
  private plan(dyingNames: ReadonlySet<string>, pacer: Pacer): Promise<GcPlan> {
    return makePlan(this.host, this.host.now() - this.keepHistoryMs, dyingNames, pacer);
  }

  /** Own kept archives that are small or mostly dead, when there are enough of them (step 3). */
  private async repackCandidates(plan: GcPlan, pacer: Pacer): Promise<number[]> {
    const t = this.repackThresholds;
    const liveBytes = new Map<number, number>();
    const liveBlocks = new Map<number, number>();
    const liveVersions = new Map<number, number>();
    for (const [hex, holder] of plan.blockHolder) {
      const rec = plan.archives.get(holder);
      if (rec === undefined || !rec.own) continue;
      const stored = this.host.index.stored(holder, Buffer.from(hex, 'hex'));
      liveBytes.set(holder, (liveBytes.get(holder) ?? 0) + (stored?.location.storedSizeBytes ?? 0));
      liveBlocks.set(holder, (liveBlocks.get(holder) ?? 0) + 1);
      if (pacer.due()) await pacer.rest();
    }
    for (const holder of plan.versionHolder.values()) liveVersions.set(holder, (liveVersions.get(holder) ?? 0) + 1);
    const dead = new Set(plan.dead);
    const candidates: { archive: number; deadBytes: number; liveBytes: number }[] = [];
    for (const [archive, rec] of plan.archives) {
      if (!rec.own || dead.has(archive)) continue;
      const live = liveBytes.get(archive) ?? 0;
      if (rec.zipSizeBytes < t.smallArchiveBytes || live < t.liveRatioMin * rec.zipSizeBytes) {
        candidates.push({ archive, deadBytes: Math.max(0, rec.zipSizeBytes - live), liveBytes: live });
      }
    }
    const deadBytes = candidates.reduce((sum, c) => sum + c.deadBytes, 0);
    if (candidates.length < t.archiveCountMin && (deadBytes < t.deadBytesMin || candidates.length === 0)) return [];
    candidates.sort((a, b) => a.archive - b.archive);
    const chosen: number[] = [];
    const out = { bytes: 0, blocks: 0, versions: 0 };
    for (const c of candidates) {
      const blocks = liveBlocks.get(c.archive) ?? 0;
      const versions = liveVersions.get(c.archive) ?? 0;
      const full = out.bytes + c.liveBytes > repackOutputSizeMaxBytes || out.blocks + blocks > repackOutputBlockCountMax
        || out.versions + versions > repackOutputVersionCountMax;
      if (chosen.length >= repackInputArchiveCountMax || (chosen.length > 0 && full)) break;
      chosen.push(c.archive);
      out.bytes += c.liveBytes;
      out.blocks += blocks;
      out.versions += versions;
    }
    return chosen.length >= 2 || deadBytes >= t.deadBytesMin ? chosen : [];
  }

  /** What supersedes archive `archive`: the holders of what it held and of its paths' heads. */
  private supersededBy(archive: number, plan: GcPlan): Set<number> {
    const { index, state } = this.host;
    const out = new Set<number>();
    const paths = new Set<string>();
    const take = (holder: number | undefined): void => {
      if (holder !== undefined && holder !== archive) out.add(holder);
    };
    for (const { stamp, path } of index.versionsIn(archive)) {
      take(plan.versionHolder.get(stampString(stamp)));
      paths.add(path);
    }
    for (const path of paths) for (const head of state.pathRecord(path).versions) take(plan.versionHolder.get(stampString(head.stamp)));
    for (const { blockId } of index.blocksIn(archive)) take(plan.blockHolder.get(hexOf(blockId)));
    return out;
  }

  /** Step 4: rm-log first (durable), then re-point, delete idx and zip, drop from the catalog. */
  private async retire(plan: GcPlan, keyring: Keyring | undefined): Promise<{ deleted: string[]; waiting: number }> {
    const { index, port, reader, syncDir } = this.host;
    const nowMs = this.host.now();
    const entries: RmLogEntry[] = [];
    for (const archive of plan.dead) {
      const name = plan.archives.get(archive)!.name;
      if (!this.retiringSinceMs.has(name)) this.retiringSinceMs.set(name, nowMs);
      if (this.dyingNames.has(name)) continue; // logged by an earlier run (before a restart, say)
      const by = [...this.supersededBy(archive, plan)].map((a) => plan.archives.get(a)!.name).sort();
      for (let i = 0; i === 0 || i < by.length; i += rmEntrySupersededByCountMax) {
        entries.push({ archive: name, retiredAtMs: nowMs, supersededBy: by.slice(i, i + rmEntrySupersededByCountMax) });
      }
    }
    const seal = keyring === undefined ? undefined : { key: keyring.keys.get(keyring.currentKeyId)!, keyId: keyring.currentKeyId };
    if (entries.length > 0) await appendRmLog(syncDir, this.host.boxid, entries, seal);
    for (const e of entries) this.dyingNames.add(e.archive);
    port.transaction(() => index.repointAway(new Set(plan.dead)));
    // Other mounts of this sync dir get the grace period to import what superseded these first.
    const due = plan.dead.filter((a) => nowMs - this.retiringSinceMs.get(plan.archives.get(a)!.name)! >= this.retireGraceMs);
    for (const archive of due) {
      reader.forget(archive);
      const { idxPath, zipPath } = archivePaths(syncDir, plan.archives.get(archive)!.name);
      await unlinkIfThere(idxPath);
      await unlinkIfThere(zipPath);
    }
    if (due.length > 0) await fsyncDirectory(syncDir);
    port.transaction(() => {
      for (const archive of due) index.dropArchive(archive);
    });
    const deleted = due.map((a) => plan.archives.get(a)!.name);
    for (const name of deleted) this.retiringSinceMs.delete(name);
    return { deleted, waiting: plan.dead.length - due.length };
  }
}

async function unlinkIfThere(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
}
