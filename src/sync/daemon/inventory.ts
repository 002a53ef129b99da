/**
 * What the daemon moves, and how it names it: the files of a sync dir that travel between a machine
 * and the server, by path relative to the sync dir (`/`-separated, the same on both sides).
 *
 * - archives: `<32 hex>.zip` and `<32 hex>.idx` at the top level;
 * - rm-log chunks: `rmlog/<boxid>/<32 hex>.rm`;
 * - key files: `keys/<name>` and `keys/requests/<name>` (names of letters, digits, `.`, `_`, `-`,
 *   not starting with `.`).
 *
 * Everything else — temp names (`.tmp-*`), plain zips, other files — is never moved and never
 * deleted by the daemon. An inventory is a snapshot of one side: which of these files exist, with
 * their sizes. Plans compare two inventories; they never look at file contents.
 */
import { isHex128, tempNamePrefix } from '../names.js';
import { isRmChunkName, rmLogDirName } from '../rmlog.js';

export type ArchivePart = 'zip' | 'idx';

export interface ArchiveFiles {
  /** Size of `<name>.zip` when present. */
  zip?: number;
  /** Size of `<name>.idx` when present. */
  idx?: number;
}

export interface Inventory {
  /** Archives by name, with the parts present. */
  readonly archives: Map<string, ArchiveFiles>;
  /** rm-log chunks and key files by relative path, with sizes. */
  readonly files: Map<string, number>;
}

export type Classified =
  | { readonly kind: 'archive'; readonly name: string; readonly part: ArchivePart }
  | { readonly kind: 'chunk' | 'key' }
  | { readonly kind: 'temp' }
  | { readonly kind: 'other' };

const keyNamePattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$/;

/** What a relative path of a sync dir (or of the server) is to the daemon. */
export function classifyPath(path: string): Classified {
  const parts = path.split('/');
  if (parts.some((p) => p.startsWith(tempNamePrefix))) return { kind: 'temp' };
  if (parts.length === 1) {
    const m = /^([0-9a-f]{32})\.(zip|idx)$/.exec(path);
    return m === null ? { kind: 'other' } : { kind: 'archive', name: m[1]!, part: m[2] as ArchivePart };
  }
  if (parts[0] === rmLogDirName) {
    return parts.length === 3 && isHex128(parts[1]!) && isRmChunkName(parts[2]!) ? { kind: 'chunk' } : { kind: 'other' };
  }
  if (parts[0] === 'keys') {
    if (parts.length === 2 && keyNamePattern.test(parts[1]!)) return { kind: 'key' };
    if (parts.length === 3 && parts[1] === 'requests' && keyNamePattern.test(parts[2]!)) return { kind: 'key' };
  }
  return { kind: 'other' };
}

export function emptyInventory(): Inventory {
  return { archives: new Map(), files: new Map() };
}

/** Adds one listed file to an inventory (ignoring what the daemon does not move). */
export function addToInventory(inventory: Inventory, path: string, sizeBytes: number): void {
  const c = classifyPath(path);
  if (c.kind === 'archive') {
    let a = inventory.archives.get(c.name);
    if (a === undefined) {
      a = {};
      inventory.archives.set(c.name, a);
    }
    a[c.part] = sizeBytes;
  } else if (c.kind === 'chunk' || c.kind === 'key') {
    inventory.files.set(path, sizeBytes);
  }
}

/** True when both files of the archive are present. */
export function isWhole(inventory: Inventory, name: string): boolean {
  const a = inventory.archives.get(name);
  return a?.zip !== undefined && a.idx !== undefined;
}

/** `<name>.zip` or `<name>.idx`. */
export function archiveFile(name: string, part: ArchivePart): string {
  return `${name}.${part}`;
}

/**
 * Key files in the order they must become visible: `keys/fs.json` (the encryption marker, the
 * commit point of `zippy-key init`) after everything else, as init writes it last.
 */
export function keyCommitOrder(paths: readonly string[]): string[] {
  const rank = (p: string): number => (p === 'keys/fs.json' ? 1 : 0);
  return [...paths].sort((a, b) => rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0));
}
