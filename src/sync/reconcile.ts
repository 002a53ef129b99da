/**
 * The reconciler: makes the local tree show what the versions say. For each touched path and its
 * ancestors it computes the plan (`merge.ts` picks the winner and the conflict copies; a path with
 * something live below it is shown as a directory), then removes what must go, deepest first, and
 * installs what must show, shallowest first, through the inode port with the outbox hook off.
 *
 * Invariant: it never installs over unpublished local changes. A path whose inode, or whose
 * nearest existing ancestor directory, is in the outbox is remembered (`takeDeferred`) and
 * reconciled again after the next publish has turned those changes into versions.
 */
import { FsError } from '../errors.js';
import { blockSizeBytes } from '../limits.js';
import { archivePointer, blockPointerKind, type BlockPointer, type PortAttrs, type SyncPort } from '../inode/sync-port.js';
import type { Stamp } from './idx.js';
import { blockIdBytes } from './limits.js';
import { conflictPath, resolveVersions, stampString, type VersionMeta } from './merge.js';
import type { PlainUnion } from './plain.js';
import type { PathRecord, SyncState } from './state.js';

interface Plan {
  readonly path: string;
  readonly record: PathRecord;
  readonly show: VersionMeta | 'implicit' | undefined;
  readonly copies: Map<string, VersionMeta>;
}

export function sameStamp(a: Stamp | null | undefined, b: Stamp | null | undefined): boolean {
  return a != null && b != null && a.counter === b.counter && a.boxid === b.boxid;
}

export function isZeroId(flat: Uint8Array, slot: number): boolean {
  for (let i = slot * blockIdBytes; i < (slot + 1) * blockIdBytes; i++) if (flat[i] !== 0) return false;
  return true;
}

export function depth(path: string): number {
  return path === '' ? 0 : path.split('/').length;
}

export function parentOf(path: string): string {
  const slash = path.lastIndexOf('/');
  return slash < 0 ? '' : path.slice(0, slash);
}

function ancestors(path: string): string[] {
  const out: string[] = [];
  for (let p = path; p !== '';) {
    p = parentOf(p);
    out.push(p);
  }
  return out;
}

export class Reconciler {
  /** Paths skipped because their local inode had unpublished changes. */
  private readonly deferredPaths = new Set<string>();
  /** See held(); reset by each reconcile. */
  private heldPaths: Set<string> | undefined;

  constructor(private readonly port: SyncPort, private readonly state: SyncState, private readonly plain: PlainUnion,
    private readonly log: (message: string) => void) {}

  /** The deferred paths (cleared): reconcile them after a publish. */
  takeDeferred(): string[] {
    const paths = [...this.deferredPaths];
    this.deferredPaths.clear();
    return paths;
  }


  /** Makes the local tree show, for each of `paths` (and their ancestors), what the versions say. */
  reconcile(paths: Set<string>): void {
    this.heldPaths = undefined;
    const all = new Set<string>();
    for (const p of paths) {
      all.add(p);
      for (const a of ancestors(p)) all.add(a);
    }
    const plans = [...all].map((p) => this.plan(p));
    for (const plan of [...plans].sort((a, b) => depth(b.path) - depth(a.path))) {
      this.guard(plan.path, () => this.removeStale(plan));
    }
    for (const plan of plans.sort((a, b) => depth(a.path) - depth(b.path))) {
      this.guard(plan.path, () => this.installPlan(plan));
    }
  }

  private guard(path: string, action: () => void): void {
    try {
      action();
    } catch (e) {
      this.log(`cannot apply ${JSON.stringify(path)}: ${String(e)}`);
    }
  }

  private plan(path: string): Plan {
    const record = this.state.pathRecord(path);
    const { winner, losers } = resolveVersions(record.versions);
    const liveBelow = path === '' || this.liveBelow(path);
    let show: VersionMeta | 'implicit' | undefined = winner;
    const lost = [...losers];
    if (winner !== undefined && winner.type !== 'dir' && liveBelow) {
      lost.unshift(winner);
      show = 'implicit';
    } else if (winner === undefined && liveBelow) {
      show = 'implicit';
    }
    const copies = new Map<string, VersionMeta>();
    if (show !== undefined) {
      for (const loser of lost) {
        const copy = conflictPath(path, loser, this.state.replicaBoxid(loser.stamp.boxid));
        if (!this.realPathLive(copy)) copies.set(copy, loser);
      }
    }
    return { path, record, show, copies };
  }

  private realPathLive(path: string): boolean {
    return resolveVersions(this.state.pathRecord(path).versions).winner !== undefined || this.liveBelow(path);
  }

  private liveBelow(path: string): boolean {
    for (const p of this.state.pathsBelow(path)) {
      if (resolveVersions(this.state.pathRecord(p).versions).winner !== undefined) return true;
    }
    return false;
  }

  /**
   * True (and the path is remembered for after the next publish) when the local tree around
   * `path` has unpublished changes: its inode, or the nearest existing ancestor directory (an
   * unlink, rename or create changes the parent), is in the outbox. Installing over it now could
   * resurrect a file deleted after the last publish, or overwrite a change not yet published.
   */
  private busy(path: string): boolean {
    const ino = this.port.lookup(path);
    let hit = (ino !== undefined && this.port.inOutbox(ino)) || this.held().has(path);
    for (let p = path; !hit && p !== '';) {
      p = parentOf(p);
      const ancestor = this.port.lookup(p);
      if (ancestor === undefined) continue;
      hit = this.port.inOutbox(ancestor);
      break;
    }
    if (hit) this.deferredPaths.add(path);
    return hit;
  }

  /**
   * The published paths (and their ancestors) of inodes with unpublished changes, computed once
   * per reconcile. Such an inode may have left the path since (renamed or unlinked while still
   * being written, so the publisher holds it back): its old version still looks visible at that
   * path, and its old directory still looks needed, until the change is published. Installing
   * them now would put back a name the user removed.
   */
  private held(): Set<string> {
    if (this.heldPaths !== undefined) return this.heldPaths;
    const held = new Set<string>();
    for (const row of this.port.outbox()) {
      for (const id of this.state.identities(row.ino)) {
        held.add(id.path);
        for (const a of ancestors(id.path)) if (a !== '') held.add(a);
      }
    }
    this.heldPaths = held;
    return held;
  }

  private removeStale(plan: Plan): void {
    for (const copy of plan.record.copies) {
      if (plan.copies.has(copy) || this.busy(copy)) continue;
      const ino = this.port.lookup(copy);
      if (ino === undefined) continue;
      if (this.state.identities(ino).every((id) => id.path === plan.path)) this.port.importing(() => this.port.removePath(copy));
    }
    if (plan.show !== undefined || plan.path === '' || this.busy(plan.path)) return;
    if (this.port.lookup(plan.path) !== undefined) this.port.importing(() => this.port.removePath(plan.path));
  }

  private installPlan(plan: Plan): void {
    if (plan.show !== undefined && !this.busy(plan.path)) {
      if (plan.show === 'implicit') this.installImplicitDir(plan.path);
      else this.installVersion(plan.path, plan.show);
    }
    const installed: string[] = [];
    for (const [copy, loser] of plan.copies) {
      if (this.busy(copy)) continue;
      this.guard(copy, () => {
        this.installVersion(copy, loser);
        installed.push(copy);
      });
    }
    const before = plan.record.copies.join('\0');
    const kept = plan.record.copies.filter((c) => plan.copies.has(c) && this.port.lookup(c) !== undefined);
    const copies = [...new Set([...kept, ...installed])].sort();
    if (copies.join('\0') !== before) {
      this.port.transaction(() => {
        const rec = this.state.pathRecord(plan.path);
        rec.copies = copies;
        this.state.putPathRecord(plan.path, rec);
      });
    }
  }

  private installImplicitDir(path: string): void {
    const ino = this.port.lookup(path);
    if (ino !== undefined && this.port.node(ino)?.type === 'dir') return;
    this.port.importing(() => {
      const installed = this.port.install(path, { type: 'dir', mode: 0o755, uid: 0, gid: 0, rdev: 0, mtimeNs: 0n, symlinkTarget: '', xattrs: [] });
      this.state.setIdentities(installed, []);
    });
  }

  /** Installs version `v` at `at` (its own path, or a conflict-copy path). */
  private installVersion(at: string, v: VersionMeta): void {
    const existing = this.port.lookup(at);
    if (existing !== undefined && this.state.identities(existing).some((id) => id.path === v.path && sameStamp(id.stamp, v.stamp))) return;
    const attrs: PortAttrs = {
      type: v.type, mode: v.mode, uid: v.uid, gid: v.gid, rdev: v.rdev, mtimeNs: BigInt(v.mtimeNs),
      symlinkTarget: v.symlinkTarget, xattrs: v.xattrs.map(([name, value]) => ({ name, value })),
    };
    if (v.stamp.counter === 0 && v.type === 'file') {
      const data = this.plain.content(v.stamp);
      if (data === undefined) throw new FsError('EIO', `content of the plain-zip entry is no longer held; remount to re-read it`, v.path);
      this.port.importing(() => {
        const ino = this.port.installData(at, attrs, data);
        this.state.setIdentities(ino, [{ path: v.path, stamp: v.stamp }]);
      });
      return;
    }
    let content: { sizeBytes: number; pointers: Map<number, BlockPointer> } | undefined;
    if (v.type === 'file') content = { sizeBytes: v.sizeBytes, pointers: this.pointersFor(v, existing) };
    this.port.importing(() => {
      const ino = this.port.install(at, attrs, content);
      const others = this.state.identities(ino).filter((id) => id.path !== v.path && this.port.pathsOf(ino).includes(id.path));
      this.state.setIdentities(ino, [...others, { path: v.path, stamp: v.stamp }]);
    });
  }

  /** Block pointers for a version: local segment blocks with the same id are reused, others point into archives. */
  private pointersFor(v: VersionMeta, existing: number | undefined): Map<number, BlockPointer> {
    const flat = this.state.flatList(v.stamp);
    if (flat === undefined) throw new FsError('ASSERT', `no block list for version ${stampString(v.stamp)} of ${v.path}`);
    // A local block is reused only in its own slot: segment records name their owner (ino, block index).
    const local = existing !== undefined && this.port.node(existing)?.type === 'file' ? this.port.blockPointers(existing) : new Map<number, BlockPointer>();
    const pointers = new Map<number, BlockPointer>();
    for (let slot = 0; slot < flat.length / blockIdBytes; slot++) {
      if (isZeroId(flat, slot)) continue;
      if (slot * blockSizeBytes >= v.sizeBytes) break;
      const id = Buffer.from(flat.subarray(slot * blockIdBytes, (slot + 1) * blockIdBytes));
      const reuse = local.get(slot);
      if (reuse !== undefined && reuse.kind === blockPointerKind.segment && reuse.blockId.equals(id)) {
        pointers.set(slot, reuse);
        continue;
      }
      const stored = this.state.block(id);
      if (stored !== undefined) {
        pointers.set(slot, archivePointer(id, stored.location.sizeBytes, stored.archive));
        continue;
      }
      throw new FsError('ASSERT', `block ${id.toString('hex')} of ${v.path} is in no known archive`);
    }
    return pointers;
  }

}
