/**
 * Which version of a path is visible: a pure function of the set of versions known for that path,
 * so every peer that holds the same versions shows the same thing, whatever order they came in.
 *
 * Rules (docs/ARCHITECTURE.md, "Sync"):
 * 1. The heads of a path are its versions that no other known version of the path names as base.
 *    Sequential edits chain bases, so they leave one head; concurrent edits leave several.
 * 2. Tombstone heads hide the path only when no live head exists: delete against modify keeps the
 *    modified file.
 * 3. Among live heads, a directory beats files (its children keep their place); otherwise the
 *    highest stamp wins. Directories never conflict with directories: the highest stamp gives the
 *    attributes.
 * 4. Every other live non-directory head stays visible as a conflict copy named
 *    `name.sync-conflict-<yyyymmdd>-<hhmmss>-<boxid8>.ext` from its own mtime (UTC) and the boxid
 *    of the machine that made it (stamps carry per-store replica ids; the catalog maps them).
 */
import { compareStamps, type FileType, type Stamp } from './idx.js';

/** A version as the sync state keeps it: an idx FileVersion without its block runs. */
export interface VersionMeta {
  readonly path: string;
  readonly type: FileType;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly rdev: number;
  /** Decimal string of the mtime in ns (bigints do not survive msgpack portably). */
  readonly mtimeNs: string;
  readonly sizeBytes: number;
  readonly symlinkTarget: string;
  readonly xattrs: readonly (readonly [string, Uint8Array])[];
  readonly deleted: boolean;
  readonly stamp: Stamp;
  readonly base: Stamp | null;
}

export interface PathResolution {
  /** The version that has the name, or undefined when the path is hidden (or only implied). */
  readonly winner: VersionMeta | undefined;
  /** Live non-directory heads that lost the name: shown as conflict copies. */
  readonly losers: readonly VersionMeta[];
}

export function stampString(stamp: Stamp): string {
  return `${stamp.counter}:${stamp.boxid}`;
}

/** Resolves one path's versions by the rules above. */
export function resolveVersions(versions: readonly VersionMeta[]): PathResolution {
  const bases = new Set<string>();
  for (const v of versions) if (v.base !== null) bases.add(stampString(v.base));
  const live = versions.filter((v) => !bases.has(stampString(v.stamp)) && !v.deleted);
  if (live.length === 0) return { winner: undefined, losers: [] };
  const byStampDesc = (a: VersionMeta, b: VersionMeta): number => compareStamps(b.stamp, a.stamp);
  const dirs = live.filter((v) => v.type === 'dir').sort(byStampDesc);
  const others = live.filter((v) => v.type !== 'dir').sort(byStampDesc);
  if (dirs.length > 0) return { winner: dirs[0], losers: others };
  return { winner: others[0], losers: others.slice(1) };
}

/** The highest-stamped head (live or not): the base a new local version of the path builds on. */
export function latestHead(versions: readonly VersionMeta[]): Stamp | null {
  const bases = new Set<string>();
  for (const v of versions) if (v.base !== null) bases.add(stampString(v.base));
  let best: Stamp | null = null;
  for (const v of versions) {
    if (bases.has(stampString(v.stamp))) continue;
    if (best === null || compareStamps(v.stamp, best) > 0) best = v.stamp;
  }
  return best;
}

/** The conflict-copy path of `loser` (a version of `path`) made on machine `boxid`. */
export function conflictPath(path: string, loser: VersionMeta, boxid: string = loser.stamp.boxid): string {
  const slash = path.lastIndexOf('/');
  const dir = slash < 0 ? '' : path.slice(0, slash + 1);
  const name = slash < 0 ? path : path.slice(slash + 1);
  const dot = name.lastIndexOf('.');
  const stem = dot > 0 ? name.slice(0, dot) : name;
  const ext = dot > 0 ? name.slice(dot) : '';
  const ms = Number(BigInt(loser.mtimeNs) / 1_000_000n);
  const d = new Date(Number.isFinite(ms) ? ms : 0);
  const p2 = (n: number): string => String(n).padStart(2, '0');
  const date = `${d.getUTCFullYear()}${p2(d.getUTCMonth() + 1)}${p2(d.getUTCDate())}`;
  const time = `${p2(d.getUTCHours())}${p2(d.getUTCMinutes())}${p2(d.getUTCSeconds())}`;
  return `${dir}${stem}.sync-conflict-${date}-${time}-${boxid.slice(0, 8)}${ext}`;
}

/** True when `name` (a last component) is a conflict-copy name. */
export function isConflictName(name: string): boolean {
  return /\.sync-conflict-\d{8}-\d{6}-[0-9a-f]{8}/.test(name);
}
