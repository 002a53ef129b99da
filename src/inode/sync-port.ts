/**
 * The narrow port through which the sync layer (src/sync) sees the inode layer. Sync never
 * opens an inode-layer table itself: it reads nodes, names and block maps, and installs other
 * machines' versions, only through the methods here. The port also owns the outbox hook: every
 * change the file system commits puts the changed inode into the `outbox` table inside the same
 * LMDB transaction, except changes made inside `importing(...)` (an imported change must not be
 * published again).
 *
 * Invariants:
 * - an outbox row's value is a change sequence number; `clearOutbox` removes a row only when its
 *   sequence is still the one the publisher saw, so a change made while publishing stays queued;
 * - the reverse index (`link` table, maintained by fs.ts) has one row per name of an inode, so
 *   `pathsOf` needs no tree walk from the root;
 * - sync-owned tables (`catalog`, `version`, `blockid`, `stamp`, `pubino`) are handed out by
 *   `syncTable`, inode-layer tables never.
 */
import { fsError, isFsError } from '../errors.js';
import { recordSizeBytes } from '../blocks/index.js';
import { blockSizeBytes, treeDepthMax } from '../limits.js';
import type { Table } from '../btree/db.js';
import { blockKey, direntKeyName, inoKey, inoPrefixRange, keyIno, linkKeyParts, blockKeyIndex } from '../btree/keys.js';
import { blockPointerKind, decodeBlockPointer, decodeDirent, encodeBlockPointer, type BlockPointer } from '../btree/records.js';
import type { ExternalBlockReader, FileSystem } from './fs.js';
import { rootCtx, rootIno, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK } from './types.js';

export type { BlockPointer } from '../btree/records.js';
export { blockPointerKind } from '../btree/records.js';

/** Tables the sync layer owns. */
export type SyncTableName = 'catalog' | 'version' | 'blockid' | 'stamp' | 'pubino';

export type NodeType = 'file' | 'dir' | 'symlink' | 'fifo' | 'socket' | 'chardev' | 'blockdev';

/** What sync needs to know of one inode. */
export interface PortNode {
  readonly ino: number;
  readonly type: NodeType;
  /** Permission bits only (0..0o7777). */
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly rdev: number;
  readonly mtimeNs: bigint;
  readonly sizeBytes: number;
  readonly symlinkTarget: string;
  /** Sorted by name. */
  readonly xattrs: readonly { readonly name: string; readonly value: Buffer }[];
}

/** Attributes to install for a node (the content comes separately). */
export interface PortAttrs {
  readonly type: NodeType;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly rdev: number;
  readonly mtimeNs: bigint;
  readonly symlinkTarget: string;
  readonly xattrs: readonly { readonly name: string; readonly value: Uint8Array }[];
}

const typeBits: Readonly<Record<NodeType, number>> = {
  file: S_IFREG, dir: S_IFDIR, symlink: S_IFLNK, fifo: S_IFIFO, socket: S_IFSOCK, chardev: S_IFCHR, blockdev: S_IFBLK,
};

function typeOf(mode: number): NodeType {
  const bits = mode & S_IFMT;
  for (const [type, value] of Object.entries(typeBits)) if (value === bits) return type as NodeType;
  throw fsError('CORRUPT', `mode 0o${mode.toString(8)} has no file type`);
}

/** Splits a sync path ('' = root, 'a/b') into components. */
function components(path: string): string[] {
  return path === '' ? [] : path.split('/');
}

export class SyncPort {
  private importDepth = 0;
  private sequence = Date.now() * 1000;
  private readonly changeListeners: (() => void)[] = [];

  constructor(readonly fs: FileSystem) {
    fs.onChange((ino) => {
      if (this.importDepth > 0) return;
      this.fs.store.btree.table('outbox').putSync(inoKey(ino), seqBytes(++this.sequence));
      for (const listener of this.changeListeners) listener();
    });
  }

  /** Called (inside the committing transaction) whenever a change enters the outbox. */
  onOutbox(listener: () => void): void {
    this.changeListeners.push(listener);
  }

  /** A table owned by the sync layer. */
  syncTable(name: SyncTableName): Table {
    return this.fs.store.btree.table(name);
  }

  /** Runs `action` in one LMDB write transaction (nested calls join it). */
  transaction<T>(action: () => T): T {
    return this.fs.store.transaction(action);
  }

  /** Runs `action` with the outbox hook off: what it changes is not published again. */
  importing<T>(action: () => T): T {
    this.importDepth++;
    try {
      return this.transaction(action);
    } finally {
      this.importDepth--;
    }
  }

  /** Sets the reader of blocks stored in archives. */
  setExternalBlockReader(reader: ExternalBlockReader): void {
    this.fs.setExternalBlockReader(reader);
  }

  // ---------------------------------------------------------------- outbox

  /** True while the file is open and being written (written within `withinMs`, not fsynced since). */
  beingWritten(ino: number, withinMs: number): boolean {
    return this.fs.beingWritten(ino, withinMs);
  }

  /** Writes back every dirty file, so the outbox and the block maps are current. */
  writeBackAll(): void {
    this.fs.writeBackAll();
  }

  /** The outbox rows: inode and change sequence. */
  outbox(): { ino: number; sequence: number }[] {
    const rows: { ino: number; sequence: number }[] = [];
    for (const { key, value } of this.fs.store.btree.table('outbox').getRange({})) rows.push({ ino: keyIno(key), sequence: seqOf(value) });
    return rows;
  }

  /** Number of outbox rows (0 means everything is published). */
  outboxCount(): number {
    let count = 0;
    for (const _ of this.fs.store.btree.table('outbox').getKeys({})) count++;
    return count;
  }

  /** Removes the rows whose sequence is unchanged (call inside the publishing transaction). */
  clearOutbox(rows: readonly { ino: number; sequence: number }[]): void {
    const table = this.fs.store.btree.table('outbox');
    for (const row of rows) {
      const value = table.get(inoKey(row.ino));
      if (value !== undefined && seqOf(value) === row.sequence) table.removeSync(inoKey(row.ino));
    }
  }

  /** True when `ino` has unpublished changes. */
  inOutbox(ino: number): boolean {
    // Changes still in the cache (written, or closed within the last write-back delay) reach the
    // outbox at write-back; until then they count as unpublished too.
    return this.fs.hasUnwrittenChanges(ino) || this.fs.store.btree.table('outbox').get(inoKey(ino)) !== undefined;
  }

  // ---------------------------------------------------------------- reading

  /** The node `ino`, or undefined when it no longer exists. */
  node(ino: number): PortNode | undefined {
    // One inode read (the publisher asks for every changed file three times per publish).
    const attr = this.fs.getattrOrUndefined(ino);
    if (attr === undefined) return undefined;
    const symlinkTarget = (attr.mode & S_IFMT) === S_IFLNK ? this.fs.readlink(ino) : '';
    const xattrs = this.fs.listxattr(ino).sort().map((name) => ({ name, value: Buffer.from(this.fs.getxattr(ino, name)) }));
    return {
      ino, type: typeOf(attr.mode), mode: attr.mode & 0o7777, uid: attr.uid, gid: attr.gid, rdev: attr.rdev,
      mtimeNs: attr.mtimeNs, sizeBytes: attr.size, symlinkTarget, xattrs,
    };
  }

  /** Every path of `ino` ('' for the root), from the reverse index; empty when it has no name. */
  pathsOf(ino: number): string[] {
    if (ino === rootIno) return [''];
    const paths: string[] = [];
    for (const key of this.fs.store.btree.table('link').getKeys(inoPrefixRange(ino))) {
      const { parentIno, name } = linkKeyParts(key);
      const parentPath = this.firstPathOf(parentIno);
      if (parentPath === undefined) continue;
      const own = name.toString('utf8');
      paths.push(parentPath === '' ? own : `${parentPath}/${own}`);
    }
    return paths.sort();
  }

  /** The path of a directory (directories have one name), walking up with a bound. */
  private firstPathOf(ino: number): string | undefined {
    const parts: string[] = [];
    let current = ino;
    for (let depth = 0; depth < treeDepthMax; depth++) {
      if (current === rootIno) return parts.reverse().join('/');
      let key: Buffer | undefined;
      for (const k of this.fs.store.btree.table('link').getKeys({ ...inoPrefixRange(current), limit: 1 })) key = k;
      if (key === undefined) return undefined;
      const { parentIno, name } = linkKeyParts(key);
      parts.push(name.toString('utf8'));
      current = parentIno;
    }
    throw fsError('ELOOP', `deeper than ${treeDepthMax}`, `inode ${ino}`);
  }

  /** The inode at `path`, or undefined. */
  lookup(path: string): number | undefined {
    try {
      return this.fs.resolve(`/${path}`);
    } catch (e) {
      if ((e as { code?: string }).code === 'ENOENT' || (e as { code?: string }).code === 'ENOTDIR') return undefined;
      throw e;
    }
  }

  /** Children of directory `ino`: name and inode. */
  children(ino: number): { name: string; ino: number }[] {
    const out: { name: string; ino: number }[] = [];
    for (const { key, value } of this.fs.store.btree.table('dirent').getRange(inoPrefixRange(ino))) {
      const name = direntKeyName(key).toString('utf8');
      if (name === '..') continue;
      out.push({ name, ino: decodeDirent(value, `dirent of ${ino}`).ino });
    }
    return out;
  }

  /** The block pointers of file `ino`, by block index. */
  blockPointers(ino: number): Map<number, BlockPointer> {
    const out = new Map<number, BlockPointer>();
    for (const { key, value } of this.fs.store.btree.table('blockmap').getRange(inoPrefixRange(ino))) {
      out.set(blockKeyIndex(key), decodeBlockPointer(value, `block ${ino}:${blockKeyIndex(key)}`));
    }
    return out;
  }

  /** The stored payload of one block of `ino` (its pointer's length; zeros past it are implied). */
  readBlockPayload(ino: number, blockIndex: number, lengthBytes: number): Buffer {
    return this.fs.read(ino, blockIndex * blockSizeBytes, lengthBytes);
  }

  /** The payload of a block as stored locally (segment blocks: read by location, immutable). */
  readStoredBlock(ino: number, blockIndex: number, pointer: BlockPointer): Buffer {
    if (pointer.kind === blockPointerKind.segment) {
      return this.fs.store.log.read({ segment: pointer.segment, offset: pointer.offset, lengthBytes: pointer.lengthBytes }, ino, blockIndex);
    }
    return this.readBlockPayload(ino, blockIndex, pointer.lengthBytes);
  }

  /**
   * The stored payloads of many blocks, in the order given (each as readStoredBlock returns it).
   * Segment records that lie back to back in the log are read with one positional read per run
   * (SegmentLog.readRun, as FileSystem.prefetch does); other blocks, and a run whose read fails,
   * are read one at a time, so an error names the block it concerns. Callers bound the list.
   */
  readStoredBlocks(blocks: readonly { ino: number; blockIndex: number; pointer: BlockPointer }[]): Buffer[] {
    const out: Buffer[] = [];
    let start = 0;
    while (start < blocks.length) {
      let end = start + 1;
      const first = blocks[start]!;
      if (first.pointer.kind === blockPointerKind.segment) {
        let last = first.pointer;
        while (end < blocks.length) {
          const next = blocks[end]!.pointer;
          if (next.kind !== blockPointerKind.segment || next.segment !== last.segment || next.offset !== last.offset + recordSizeBytes(last)) break;
          last = next;
          end++;
        }
      }
      const run = blocks.slice(start, end);
      if (run.length > 1) out.push(...this.readRun(run));
      else out.push(this.readStoredBlock(first.ino, first.blockIndex, first.pointer));
      start = end;
    }
    return out;
  }

  private readRun(run: readonly { ino: number; blockIndex: number; pointer: BlockPointer }[]): Buffer[] {
    const locs = run.map((b) => ({ segment: b.pointer.segment, offset: b.pointer.offset, lengthBytes: b.pointer.lengthBytes }));
    try {
      return this.fs.store.log.readRun(locs, run.map((b) => b.ino), run.map((b) => b.blockIndex));
    } catch (e) {
      if (!isFsError(e)) throw e;
      return run.map((b) => this.readStoredBlock(b.ino, b.blockIndex, b.pointer));
    }
  }

  /**
   * Remembers computed block ids in the block map, for pointers that still are what the caller
   * read (a block rewritten meanwhile keeps its unknown id). No outbox row: content is unchanged.
   */
  rememberBlockIds(ino: number, ids: readonly { blockIndex: number; pointer: BlockPointer; blockId: Buffer }[]): void {
    const table = this.fs.store.btree.table('blockmap');
    this.transaction(() => {
      for (const { blockIndex, pointer, blockId } of ids) {
        const value = table.get(blockKey(ino, blockIndex));
        if (value === undefined) continue;
        const now = decodeBlockPointer(value, `block ${ino}:${blockIndex}`);
        if (now.kind !== pointer.kind || now.segment !== pointer.segment || now.offset !== pointer.offset) continue;
        table.putSync(blockKey(ino, blockIndex), encodeBlockPointer({ ...now, blockId }));
      }
    });
  }

  // ---------------------------------------------------------------- installing (call inside importing)

  /** Makes sure every directory on the way to `path`'s parent exists; returns the parent inode. */
  ensureParent(path: string): number {
    const parts = components(path);
    parts.pop();
    let ino = rootIno;
    for (const part of parts) {
      const child = this.childIno(ino, part);
      if (child !== undefined && typeOf(this.fs.getattr(child).mode) === 'dir') {
        ino = child;
        continue;
      }
      if (child !== undefined) this.removeTree(ino, part);
      ino = this.fs.mkdir(rootCtx, ino, part, 0o755).ino;
    }
    return ino;
  }

  private childIno(parent: number, name: string): number | undefined {
    try {
      return this.fs.lookup(parent, name).ino;
    } catch (e) {
      if ((e as { code?: string }).code === 'ENOENT') return undefined;
      throw e;
    }
  }

  /** Removes `path` (recursively for a directory) if it exists. */
  removePath(path: string): void {
    const parts = components(path);
    const name = parts.pop();
    if (name === undefined) return;
    const parent = this.lookup(parts.join('/'));
    if (parent === undefined) return;
    this.removeTree(parent, name);
  }

  /** Removes entry `name` of `parent`, with everything below it (explicit stack, bounded). */
  private removeTree(parent: number, name: string): void {
    const stack: { parent: number; name: string; expanded: boolean }[] = [{ parent, name, expanded: false }];
    let steps = 0;
    while (stack.length > 0) {
      if (++steps > 100_000_000) throw fsError('LIMIT', 'tree too large to remove', name);
      const top = stack[stack.length - 1]!;
      const ino = this.childIno(top.parent, top.name);
      if (ino === undefined) {
        stack.pop();
        continue;
      }
      if (typeOf(this.fs.getattr(ino).mode) !== 'dir') {
        this.fs.unlink(rootCtx, top.parent, top.name);
        stack.pop();
        continue;
      }
      const kids = this.children(ino);
      if (kids.length === 0 || top.expanded) {
        if (kids.length > 0) throw fsError('ASSERT', 'directory still has entries after removing them', top.name);
        this.fs.rmdir(rootCtx, top.parent, top.name);
        stack.pop();
        continue;
      }
      top.expanded = true;
      if (stack.length > treeDepthMax) throw fsError('ELOOP', `deeper than ${treeDepthMax}`, name);
      for (const kid of kids) stack.push({ parent: ino, name: kid.name, expanded: false });
    }
  }

  /**
   * Installs `attrs` at `path`: reuses the existing node when it has the same type (and, for a
   * symlink, the same target), else replaces it. Files get `content` as their block map and size.
   * Returns the inode.
   */
  install(path: string, attrs: PortAttrs, content?: { sizeBytes: number; pointers: ReadonlyMap<number, BlockPointer> }): number {
    const parent = this.ensureParent(path);
    const name = components(path).pop();
    let ino: number;
    if (name === undefined) {
      ino = rootIno;
    } else {
      const existing = this.childIno(parent, name);
      let keep = false;
      if (existing !== undefined) {
        const attr = this.fs.getattr(existing);
        keep = typeOf(attr.mode) === attrs.type && attr.rdev === attrs.rdev
          && (attrs.type !== 'symlink' || this.fs.readlink(existing) === attrs.symlinkTarget);
        if (!keep) this.removeTree(parent, name);
      }
      ino = keep && existing !== undefined ? existing : this.create(parent, name, attrs);
    }
    if (attrs.type === 'file' && content !== undefined) this.fs.replaceContent(ino, content.sizeBytes, attrs.mtimeNs, content.pointers);
    this.setAttrs(ino, attrs);
    return ino;
  }

  /** Installs a regular file at `path` whose content is `data` (written to the local log). */
  installData(path: string, attrs: PortAttrs, data: Buffer): number {
    const ino = this.install(path, attrs, { sizeBytes: 0, pointers: new Map() });
    if (data.length > 0) {
      this.fs.write(rootCtx, ino, 0, data);
      this.fs.flushFile(ino);
    }
    this.setAttrs(ino, attrs);
    return ino;
  }

  private create(parent: number, name: string, attrs: PortAttrs): number {
    switch (attrs.type) {
      case 'dir': return this.fs.mkdir(rootCtx, parent, name, attrs.mode).ino;
      case 'symlink': return this.fs.symlink(rootCtx, parent, name, attrs.symlinkTarget).ino;
      default: return this.fs.mknod(rootCtx, parent, name, typeBits[attrs.type] | attrs.mode, attrs.rdev).ino;
    }
  }

  private setAttrs(ino: number, attrs: PortAttrs): void {
    const attr = this.fs.getattr(ino);
    if (attrs.type !== 'symlink' && (attr.mode & 0o7777) !== attrs.mode) this.fs.chmod(rootCtx, ino, attrs.mode);
    if (attr.uid !== attrs.uid || attr.gid !== attrs.gid) this.fs.chown(rootCtx, ino, attrs.uid, attrs.gid);
    const wanted = new Map(attrs.xattrs.map((x) => [x.name, Buffer.from(x.value)]));
    for (const name of this.fs.listxattr(ino)) if (!wanted.has(name)) this.fs.removexattr(ino, name);
    for (const [name, value] of wanted) {
      let current: Buffer | undefined;
      try {
        current = this.fs.getxattr(ino, name);
      } catch {
        current = undefined;
      }
      if (current === undefined || !current.equals(value)) this.fs.setxattr(ino, name, value, 0);
    }
    if (this.fs.getattr(ino).mtimeNs !== attrs.mtimeNs) this.fs.utimens(rootCtx, ino, 'omit', attrs.mtimeNs);
  }
}

/** An archive block pointer for a block id (the archive reader resolves the id). */
export function archivePointer(blockId: Buffer, lengthBytes: number, archiveNumber: number): BlockPointer {
  return { kind: blockPointerKind.archive, lengthBytes, segment: archiveNumber, offset: 0, blockId };
}

function seqBytes(sequence: number): Buffer {
  const buf = Buffer.allocUnsafe(8);
  buf.writeBigUInt64BE(BigInt(sequence));
  return buf;
}

function seqOf(value: Buffer): number {
  return value.length === 8 ? Number(value.readBigUInt64BE(0)) : 0;
}
