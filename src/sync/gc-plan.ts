/**
 * GC planning (docs/ARCHITECTURE.md "Garbage collection and repacking", steps 1–3): which
 * versions and blocks are needed, and which archive is kept for each. A pure read of the sync
 * state and the GC index; gc.ts acts on the result.
 *
 * Needed versions: every head of every path (tombstone heads only while a live version of the
 * path is still in some archive); every version a local inode shows; every version younger than
 * the cutoff; per path the heads as of the cutoff; what archives waiting to be imported refer to;
 * then, transitively, the versions their copy runs name. Holders: the newest archive of this
 * store carrying the thing, else the newest carrying it at all; an archive named by an rm-log
 * (dying) only when nothing else carries it — those are "orphans" a rescue copies.
 */
import { unpack } from 'msgpackr';
import type { IndexedVersion } from './archive-index.js';
import type { GcHost } from './gc.js';
import type { Pacer } from './pacer.js';
import type { Stamp } from './idx.js';
import { blockIdBytes } from './limits.js';
import { stampString } from './merge.js';
import type { ArchiveRecord, Identity } from './state.js';

/** The result of planning: what is needed, and which archive holds each needed thing. */
export interface GcPlan {
  readonly archives: ReadonlyMap<number, ArchiveRecord>;
  /** Needed versions (stamp string → stamp), copy-run sources included. */
  readonly needed: ReadonlyMap<string, Stamp>;
  /** Needed for themselves, not only as a copy-run source (a repack may rewrite copies of the others). */
  readonly direct: ReadonlySet<string>;
  /** Stamp string → the archive kept for that version's record. */
  readonly versionHolder: ReadonlyMap<string, number>;
  /** Block id hex → the archive kept for that block. */
  readonly blockHolder: ReadonlyMap<string, number>;
  /** Own archives that hold nothing needed. */
  readonly dead: readonly number[];
  /** Needed blocks that only archives named by an rm-log carry: a rescue copies them (block id hex). */
  readonly orphanBlocks: ReadonlySet<string>;
  /** Needed versions some archive not named by an rm-log carries (copy runs may keep naming them). */
  readonly liveVersions: ReadonlySet<string>;
  /** Own archives holding a needed version that copies from a version no live archive carries. */
  readonly forced: readonly number[];
}

function hexOf(id: Uint8Array): string {
  return Buffer.from(id).toString('hex');
}

/** One planning pass over the catalog as it is now. */
class Planner {
  private readonly archives = new Map<number, ArchiveRecord>();
  private readonly own = new Set<number>();
  private readonly dying = new Set<number>();
  /** Every version an archive here carries, by stamp string. */
  private readonly all = new Map<string, IndexedVersion>();
  private readonly byPath = new Map<string, IndexedVersion[]>();
  private readonly direct = new Map<string, Stamp>();
  private readonly needed = new Map<string, Stamp>();
  private readonly versionHolder = new Map<string, number>();
  private readonly blockHolder = new Map<string, number>();
  private readonly forced = new Set<number>();
  /** Versions local inodes show. */
  private readonly shown: Stamp[] = [];
  /** Blocks archives waiting to be imported name in ids runs. */
  private readonly waitingBlocks: Uint8Array[] = [];

  constructor(private readonly host: GcHost, dyingNames: ReadonlySet<string>) {
    const { state } = host;
    for (const name of state.archiveNames()) {
      const number = state.archiveNumber(name);
      const rec = number === undefined ? undefined : state.archive(number);
      if (number === undefined || rec === undefined) continue;
      this.archives.set(number, rec);
      if (rec.own) this.own.add(number);
      if (dyingNames.has(rec.name)) this.dying.add(number);
    }
    for (const v of host.index.versions()) {
      this.all.set(stampString(v.stamp), v);
      const list = this.byPath.get(v.path);
      if (list === undefined) this.byPath.set(v.path, [v]);
      else list.push(v);
    }
  }

  /** Own archives first, then the newest; a dying archive only when nothing else has it. */
  private choose(holders: number[]): number | undefined {
    const live = holders.filter((h) => !this.dying.has(h));
    const mine = live.filter((h) => this.own.has(h));
    const from = mine.length > 0 ? mine : live.length > 0 ? live : holders;
    return from.length === 0 ? undefined : Math.max(...from);
  }

  private addDirect(s: Stamp): void {
    const k = stampString(s);
    if (this.all.has(k)) this.direct.set(k, s);
  }

  /** Versions needed for themselves (not only as copy sources). */
  findDirect(cutoffMs: number): void {
    for (const [path, versions] of this.byPath) this.neededOfPath(path, versions, cutoffMs);
    for (const { value } of this.host.port.syncTable('pubino').getRange({})) for (const id of unpack(value) as Identity[]) this.shown.push(id.stamp);
    for (const s of this.shown) this.addDirect(s);
    for (const a of this.host.waiting()) {
      for (const v of a.idx?.versions ?? []) {
        for (const run of v.blockRuns) {
          if (run.kind === 'copy') this.addDirect(run.source);
          else for (let i = 0; i < run.ids.length; i += blockIdBytes) this.waitingBlocks.push(run.ids.subarray(i, i + blockIdBytes));
        }
      }
    }
  }

  /**
   * The needed versions of one path: its heads, the versions younger than the cutoff, and the
   * heads as of the cutoff. Tombstones count only while a live version of the path is in some
   * archive (a tombstone's job is to hide those; with none left it can go too).
   */
  private neededOfPath(path: string, versions: readonly IndexedVersion[], cutoffMs: number): void {
    const hasLive = versions.some((v) => !v.deleted);
    for (const head of this.host.state.pathRecord(path).versions) if (!head.deleted || hasLive) this.addDirect(head.stamp);
    const oldBases = new Set<string>();
    for (const v of versions) if (v.timeMs <= cutoffMs && v.base !== null) oldBases.add(stampString(v.base));
    for (const v of versions) {
      if (v.deleted && !hasLive) continue;
      if (v.timeMs > cutoffMs || !oldBases.has(stampString(v.stamp))) this.addDirect(v.stamp);
    }
  }

  /** Holders of the needed versions, adding the copy sources of each (as its holder encodes it). */
  closeOverSources(): void {
    const { index } = this.host;
    for (const [k, s] of this.direct) this.needed.set(k, s);
    const stack = [...this.direct.values()];
    while (stack.length > 0) {
      const s = stack.pop()!;
      const holder = this.choose(index.holdersOfVersion(s));
      if (holder === undefined) continue;
      this.versionHolder.set(stampString(s), holder);
      for (const src of index.sourcesIn(holder, s)) {
        const k = stampString(src);
        // A copy from a version no live archive carries: its own copier must be rewritten with ids.
        const srcHolders = this.all.has(k) ? index.holdersOfVersion(src) : [];
        if (this.own.has(holder) && srcHolders.every((h) => this.dying.has(h))) this.forced.add(holder);
        if (!this.all.has(k) || this.needed.has(k)) continue;
        this.needed.set(k, src);
        stack.push(src);
      }
    }
  }

  private keepBlock(id: Uint8Array): void {
    const hex = hexOf(id);
    if (this.blockHolder.has(hex) || id.every((b) => b === 0)) return;
    const holder = this.choose(this.host.index.holdersOfBlock(id));
    if (holder !== undefined) this.blockHolder.set(hex, holder);
  }

  /** Holders of every block of every needed file version (and of what waiting archives name). */
  async keepBlocks(pacer: Pacer): Promise<void> {
    for (const [k, s] of this.needed) {
      if (this.all.get(k)?.deleted === true) continue;
      const flat = this.host.state.flatList(s);
      for (let i = 0; flat !== undefined && i < flat.length; i += blockIdBytes) {
        this.keepBlock(flat.subarray(i, i + blockIdBytes));
        if (pacer.due()) await pacer.rest();
      }
    }
    for (const id of this.waitingBlocks) this.keepBlock(id);
  }

  /**
   * Blocks that only dying archives carry, of the versions this store answers for: what local
   * inodes show, its own versions, and the versions their copy runs name. (A peer's history is its
   * own business: rescuing it here would copy what its owner chose to retire.)
   */
  async orphans(pacer: Pacer): Promise<Set<string>> {
    const orphans = new Set<string>();
    if (this.dying.size === 0) return orphans;
    const local = new Map<string, Stamp>();
    const stack = [...this.shown, ...[...this.needed.values()].filter((s) => s.boxid === this.host.replicaId)];
    while (stack.length > 0) {
      const s = stack.pop()!;
      const k = stampString(s);
      if (local.has(k)) continue;
      local.set(k, s);
      const holder = this.versionHolder.get(k);
      if (holder !== undefined) stack.push(...this.host.index.sourcesIn(holder, s));
    }
    for (const s of local.values()) {
      const flat = this.host.state.flatList(s);
      for (let i = 0; flat !== undefined && i < flat.length; i += blockIdBytes) {
        const hex = hexOf(flat.subarray(i, i + blockIdBytes));
        const holder = this.blockHolder.get(hex);
        if (holder !== undefined && this.dying.has(holder)) orphans.add(hex);
        if (pacer.due()) await pacer.rest();
      }
    }
    return orphans;
  }

  result(orphanBlocks: ReadonlySet<string>): GcPlan {
    const keep = new Set([...this.versionHolder.values(), ...this.blockHolder.values()]);
    return {
      archives: this.archives, needed: this.needed, direct: new Set(this.direct.keys()),
      versionHolder: this.versionHolder, blockHolder: this.blockHolder,
      dead: [...this.own].filter((a) => !keep.has(a)).sort((a, b) => a - b),
      orphanBlocks,
      liveVersions: new Set([...this.versionHolder].filter(([, h]) => !this.dying.has(h)).map(([k]) => k)),
      forced: [...this.forced].sort((a, b) => a - b),
    };
  }
}

/**
 * Plans one GC run: versions younger than `cutoffMs` are kept; `dyingNames` are named by rm-logs.
 * The loops over blocks give the event loop a turn through `pacer`; what they read (catalog, GC
 * index, flat lists) only changes on the engine's queue, which this run holds.
 */
export async function makePlan(host: GcHost, cutoffMs: number, dyingNames: ReadonlySet<string>, pacer: Pacer): Promise<GcPlan> {
  const planner = new Planner(host, dyingNames);
  planner.findDirect(cutoffMs);
  planner.closeOverSources();
  await planner.keepBlocks(pacer);
  return planner.result(await planner.orphans(pacer));
}
