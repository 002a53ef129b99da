/**
 * Repair of a local store (the library behind `zippy-fsck --repair`). Two paths:
 *
 * - `repairStore`: LMDB is readable. Numbered steps:
 *   1. save what will change into the backup directory: lmdb/data.mdb, the bytes of every
 *      segment tail that is cut, every segment file that is removed;
 *   2. cut the unreferenced tail of the head segment, move segment files beyond the head away;
 *   3. raise the marks (inode number, log head past every segment file), so the store opens
 *      without recovery touching anything and new records go to a fresh segment;
 *   4. one transaction fixes the tree: block map entries of missing inodes, beyond the size or
 *      pointing at a record that does not verify are repointed at the sync dir's copy of the
 *      block when its id is known there, else dropped (the block reads as zeros, and the
 *      report names it); dangling entries go; entry types and ".." are fixed; inodes no
 *      directory names go to `/lost+found/#<ino>`; the link index, nlink, the orphan list and
 *      xattrs of missing inodes are made consistent; each inode's block count is set to its
 *      block map entries;
 *   5. every segment with damage has its live records copied to the head and is then moved
 *      into the backup (never deleted), so no damaged bytes stay in the log;
 *   6. per-segment live bytes are recomputed; log and LMDB synced.
 * - `rebuildStore`: LMDB is missing or unreadable. The old environment is moved into the
 *   backup; a fresh one is made; the caller may first fill it from the sync dir; then every
 *   inode that owns records in the segments (records carry owner ino and block index) and that
 *   the caller does not claim gets a file `/lost+found/#<ino>` made of its newest record per
 *   block, keeping its inode number so the records verify. Names, modes and non-file inodes
 *   are not in the segments and cannot be recovered from them.
 *
 * Nothing is deleted: whatever a step removes from the store is first copied to the backup.
 */
import { closeSync, copyFileSync, existsSync, mkdirSync, openSync, readSync, renameSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fsError } from '../errors.js';
import { blockSizeBytes } from '../limits.js';
import type { SegmentSpaceMark } from '../alloc/index.js';
import type { RecordIndex, SegmentCheck } from '../blocks/check.js';
import { recordSizeBytes, segmentFileName, type BlockRecordInput } from '../blocks/index.js';
import * as segmentHeader from '../blocks/segment-header.js';
import { Btree } from '../btree/db.js';
import {
  blockKey, blockKeyIndex, direntKey, direntKeyName, inoKey, inoPrefixRange, keyIno, linkKey, metaKeys, segmentKey,
} from '../btree/keys.js';
import {
  blockPointerKind, decodeBlockPointer, decodeDirent, decodeInode, encodeBlockPointer, encodeDirent, encodeInode, encodeU64,
  type BlockPointer, type InodeRecord,
} from '../btree/records.js';
import { Store } from './store.js';
import { isDir, isReg, nowNs, rootIno, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG } from './types.js';

/** Name of the directory, under the root, that receives inodes no directory names. */
export const lostFoundName = 'lost+found';

/** One thing repair did, for the report. */
export interface RepairAction {
  readonly place: string;
  readonly message: string;
}

export interface RepairResult {
  readonly backupDir: string;
  readonly actions: RepairAction[];
  /** Blocks whose data could not be saved (no valid record, no copy in the sync dir): they now read as zeros. */
  readonly lostBlocks: number;
}

/** Makes `<dir>/fsck-backup-<UTC time>` (unique) and returns its path. */
export function makeBackupDir(dir: string, now = new Date()): string {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  for (let n = 0; ; n++) {
    const path = join(dir, `fsck-backup-${stamp}${n === 0 ? '' : `-${n}`}`);
    if (existsSync(path)) continue;
    mkdirSync(join(path, 'segments'), { recursive: true });
    return path;
  }
}

/** Where a block id lives in the sync dir, as the store's sync catalog knows it (undefined: unknown). */
export type ArchiveBlockLookup = (blockId: Buffer) => { archiveNumber: number } | undefined;

/** The default lookup: the store's own `blockid` table (u32 archive number first). */
function catalogLookup(btree: Btree): ArchiveBlockLookup {
  const table = btree.table('blockid');
  return (blockId) => {
    if (blockId.every((b) => b === 0)) return undefined;
    const value = table.get(blockId);
    return value === undefined || value.length < 4 ? undefined : { archiveNumber: value.readUInt32BE(0) };
  };
}

/** Segments that hold damage (their live records are moved out and the file goes to the backup). */
function damagedSegments(check: SegmentCheck, head: SegmentSpaceMark | undefined): Set<number> {
  const damaged = new Set<number>();
  for (const f of check.findings) {
    if (f.code === 'segment-corrupt' || f.code === 'segment-header' || f.code === 'torn-tail') damaged.add(f.segment);
    if (f.code === 'segment-short' && check.sizes.has(f.segment)) damaged.add(f.segment);
  }
  if (head !== undefined) for (const s of [...damaged]) if (s > head.segment) damaged.delete(s);
  return damaged;
}

/**
 * Where the records the block maps reference end, per segment. A head mark that is too low
 * makes referenced bytes look like a tail past the head: those are never cut.
 */
async function referencedEnds(lmdbDir: string): Promise<Map<number, number>> {
  const btree = Btree.open(lmdbDir, { readOnly: true });
  const ends = new Map<number, number>();
  try {
    for (const { value } of btree.table('blockmap').getRange({})) {
      let ptr: BlockPointer;
      try {
        ptr = decodeBlockPointer(value, 'block');
      } catch {
        continue;
      }
      if (ptr.kind !== blockPointerKind.segment) continue;
      ends.set(ptr.segment, Math.max(ends.get(ptr.segment) ?? 0, ptr.offset + recordSizeBytes(ptr)));
    }
  } finally {
    await btree.close();
  }
  return ends;
}

/** Step 1–2: saves and cuts the unreferenced tail, moves segment files beyond the head into the backup (never referenced bytes). */
function cutTails(check: SegmentCheck, referenced: ReadonlyMap<number, number>, backupDir: string, actions: RepairAction[]): void {
  for (const f of check.findings) {
    const end = referenced.get(f.segment);
    if (f.code === 'segment-beyond-head' && end === undefined) {
      renameSync(f.file, join(backupDir, 'segments', segmentFileName(f.segment)));
      actions.push({ place: f.file, message: `segment beyond the committed head moved to ${join(backupDir, 'segments')}` });
    } else if (f.code === 'unreferenced-tail') {
      const from = Math.max(f.offset, end ?? 0);
      const sizeBytes = check.sizes.get(f.segment) ?? 0;
      if (from >= sizeBytes) continue;
      const saved = join(backupDir, 'segments', `${segmentFileName(f.segment)}.from-${from}`);
      writeFileSync(saved, readRange(f.file, from, sizeBytes - from));
      truncateSync(f.file, from);
      actions.push({ place: `${f.file}:${from}`, message: `cut ${sizeBytes - from} unreferenced bytes (saved as ${saved})` });
    }
  }
}

function readRange(file: string, offset: number, lengthBytes: number): Buffer {
  const buf = Buffer.alloc(lengthBytes);
  const fd = openSync(file, 'r');
  try {
    let done = 0;
    while (done < lengthBytes) {
      const n = readSync(fd, buf, done, lengthBytes - done, offset + done);
      if (n === 0) break;
      done += n;
    }
    return buf.subarray(0, done);
  } finally {
    closeSync(fd);
  }
}

/** Step 3: marks raised above everything in the files: a fresh head segment, the next inode number above every inode and record owner. */
async function raiseMarks(lmdbDir: string, check: SegmentCheck, inoFloor: number): Promise<void> {
  const btree = Btree.open(lmdbDir);
  try {
    let maxIno = Math.max(inoFloor, rootIno);
    for (const key of btree.table('inode').getKeys({ reverse: true, limit: 1 })) maxIno = Math.max(maxIno, keyIno(key));
    for (const r of check.records.records()) maxIno = Math.max(maxIno, r.ino);
    const lastSegment = Math.max(0, ...check.segments.filter((s) => existsSync(join(check.dir, segmentFileName(s)))));
    const head = { segment: lastSegment + 1, offset: segmentHeader.headerSizeBytes };
    btree.transaction(() => {
      const meta = btree.table('meta');
      meta.putSync(Buffer.from(metaKeys.inoNext), encodeU64(maxIno + 1));
      meta.putSync(Buffer.from(metaKeys.segmentHead), Buffer.from(JSON.stringify(head)));
    });
    await btree.sync();
  } finally {
    await btree.close();
  }
}

/**
 * Repairs a store whose LMDB is readable (steps 1–6 above). `check` is the segment pass of the
 * check just made; `lookup` finds blocks in the sync dir (default: the store's own catalog).
 */
export async function repairStore(dir: string, check: SegmentCheck, head: SegmentSpaceMark | undefined, options: { lookup?: ArchiveBlockLookup } = {}): Promise<RepairResult> {
  const backupDir = makeBackupDir(dir);
  const actions: RepairAction[] = [];
  const lmdbDir = join(dir, 'lmdb');
  mkdirSync(join(backupDir, 'lmdb'), { recursive: true });
  copyFileSync(join(lmdbDir, 'data.mdb'), join(backupDir, 'lmdb', 'data.mdb'));
  actions.push({ place: lmdbDir, message: `LMDB saved to ${join(backupDir, 'lmdb')}` });
  cutTails(check, await referencedEnds(lmdbDir), backupDir, actions);
  await raiseMarks(lmdbDir, check, 0);
  const store = Store.open(dir);
  let lostBlocks = 0;
  try {
    const lookup = options.lookup ?? catalogLookup(store.btree);
    store.transaction(() => {
      lostBlocks = fixBlockMaps(store, check.records, lookup, actions);
      fixTree(store, actions);
      fixBlockCounts(store, actions);
    });
    await evacuate(store, damagedSegments(check, head), backupDir, actions);
    store.transaction(() => recomputeUsage(store));
  } finally {
    await store.close();
  }
  return { backupDir, actions, lostBlocks };
}

/** Step 4a: every block map entry either verifies, is repointed at the sync dir, or goes. */
function fixBlockMaps(store: Store, records: RecordIndex, lookup: ArchiveBlockLookup, actions: RepairAction[]): number {
  const blockmap = store.btree.table('blockmap');
  const inodes = store.btree.table('inode');
  let lost = 0;
  const drop = (key: Buffer, place: string, why: string): void => {
    blockmap.removeSync(key);
    actions.push({ place, message: `block map entry removed: ${why}` });
  };
  for (const { key, value } of blockmap.getRange({})) {
    const ino = keyIno(key);
    const blockIndex = blockKeyIndex(key);
    const place = `inode ${ino} block ${blockIndex}`;
    const inodeValue = inodes.get(inoKey(ino));
    if (inodeValue === undefined) {
      drop(key, place, 'its inode does not exist');
      continue;
    }
    const rec = decodeInode(inodeValue, `inode ${ino}`);
    if (!isReg(rec.mode) || blockIndex * blockSizeBytes >= rec.size) {
      drop(key, place, `beyond the file size ${rec.size}`);
      continue;
    }
    let ptr: BlockPointer;
    try {
      ptr = decodeBlockPointer(value, place);
    } catch {
      drop(key, place, 'undecodable pointer');
      lost++;
      continue;
    }
    if (ptr.kind === blockPointerKind.segment) {
      const record = records.get(ptr.segment, ptr.offset);
      if (record !== undefined && record.ino === ino && record.blockIndex === blockIndex && record.lengthBytes === ptr.lengthBytes) continue;
    } else if (lookup(ptr.blockId) !== undefined) continue;
    const copy = lookup(ptr.blockId);
    if (copy !== undefined) {
      blockmap.putSync(key, encodeBlockPointer({ kind: blockPointerKind.archive, lengthBytes: ptr.lengthBytes, segment: copy.archiveNumber, offset: 0, blockId: ptr.blockId }));
      actions.push({ place, message: `block repointed at its copy in the sync dir (archive ${copy.archiveNumber}, block id ${ptr.blockId.toString('hex')})` });
      continue;
    }
    drop(key, place, `its data is damaged or gone and no copy is known (${ptr.kind === blockPointerKind.segment ? `${segmentFileName(ptr.segment)}:${ptr.offset}` : `block id ${ptr.blockId.toString('hex')}`}); the block now reads as zeros`);
    lost++;
  }
  return lost;
}

interface Walk {
  reachable: Set<number>;
  /** Names per inode (dirents other than ".."). */
  names: Map<number, number>;
  /** Subdirectory count per directory. */
  subdirs: Map<number, number>;
}

/** Step 4b–g, one helper per step. */
function fixTree(store: Store, actions: RepairAction[]): void {
  const decoded = loadInodesForRepair(store, actions);
  if (!decoded.has(rootIno)) throw fsError('CORRUPT', 'the root inode is missing: rebuild instead', `inode ${rootIno}`);
  fixDirents(store, decoded, actions);
  const orphans = new Set<number>();
  for (const key of store.btree.table('orphan').getKeys({})) orphans.add(keyIno(key));
  const walk = relinkUnreachable(store, decoded, orphans, actions);
  rebuildLinkIndex(store);
  fixCounts(store, decoded, walk, actions);
  cleanLists(store, decoded, orphans, walk, actions);
}

/** Every inode record that decodes; the others are removed (their names then dangle and go too). */
function loadInodesForRepair(store: Store, actions: RepairAction[]): Map<number, InodeRecord> {
  const inodes = store.btree.table('inode');
  const decoded = new Map<number, InodeRecord>();
  for (const { key, value } of inodes.getRange({})) {
    const ino = keyIno(key);
    try {
      decoded.set(ino, decodeInode(value, `inode ${ino}`));
    } catch {
      inodes.removeSync(key);
      actions.push({ place: `inode ${ino}`, message: 'undecodable inode record removed (saved in the LMDB backup)' });
    }
  }
  return decoded;
}

/** Entries that are undecodable, in a non-directory or naming a missing inode go; wrong types are fixed. */
function fixDirents(store: Store, decoded: Map<number, InodeRecord>, actions: RepairAction[]): void {
  const dirents = store.btree.table('dirent');
  for (const { key, value } of dirents.getRange({})) {
    const parent = keyIno(key);
    const name = direntKeyName(key);
    const isDotdot = name.toString('latin1') === '..';
    const entry = decodeDirentSafe(value);
    const child = entry === undefined ? undefined : decoded.get(entry.ino);
    const parentRec = decoded.get(parent);
    const place = `directory ${parent} entry ${JSON.stringify(name.toString('utf8'))}`;
    if (entry === undefined || parentRec === undefined || !isDir(parentRec.mode) || (child === undefined && !isDotdot)) {
      dirents.removeSync(key);
      const why = entry === undefined ? 'undecodable' : parentRec === undefined || !isDir(parentRec.mode) ? 'its directory does not exist' : `names inode ${entry.ino}, which does not exist`;
      actions.push({ place, message: `entry removed: ${why}` });
      continue;
    }
    if (!isDotdot && child !== undefined && (child.mode & S_IFMT) >> 12 !== entry.type) {
      dirents.putSync(key, encodeDirent({ ino: entry.ino, type: (child.mode & S_IFMT) >> 12 }));
      actions.push({ place, message: `entry type fixed to ${(child.mode & S_IFMT) >> 12}` });
    }
  }
}

/**
 * Links inodes nothing reachable names into lost+found, tops of detached subtrees first (those
 * no entry names at all), so a detached directory brings its contents along; repeats until
 * everything is reachable (bounded). Returns the final walk.
 */
function relinkUnreachable(store: Store, decoded: Map<number, InodeRecord>, orphans: Set<number>, actions: RepairAction[]): Walk {
  let walk = walkNames(store, decoded, actions);
  for (let round = 0; round < 64; round++) {
    const unreachable = [...decoded.keys()].filter((ino) => !walk.reachable.has(ino) && !(orphans.has(ino) && decoded.get(ino)!.nlink === 0));
    if (unreachable.length === 0) break;
    const named = namedInos(store);
    let chosen = unreachable.filter((ino) => !named.has(ino));
    if (chosen.length === 0) chosen = unreachable.filter((ino) => isDir(decoded.get(ino)!.mode)).slice(0, 1);
    if (chosen.length === 0 || round === 63) chosen = unreachable;
    const lostFound = ensureLostFound(store, decoded, actions);
    for (const ino of chosen) {
      if (ino === lostFound) continue;
      linkIntoLostFound(store, lostFound, ino, decoded.get(ino)!);
      orphans.delete(ino);
      store.btree.table('orphan').removeSync(inoKey(ino));
      actions.push({ place: `inode ${ino}`, message: `no directory named it: linked as /${lostFoundName}/#${ino}` });
    }
    walk = walkNames(store, decoded, actions);
  }
  return walk;
}

/** Symlink sizes from their targets; nlink from the names counted. */
function fixCounts(store: Store, decoded: Map<number, InodeRecord>, walk: Walk, actions: RepairAction[]): void {
  const inodes = store.btree.table('inode');
  for (const [ino, rec] of decoded) {
    let changed = false;
    if ((rec.mode & S_IFMT) === S_IFLNK && rec.size !== rec.target.length) {
      actions.push({ place: `inode ${ino}`, message: `symlink size ${rec.size} set to its target's ${rec.target.length} bytes` });
      rec.size = rec.target.length;
      changed = true;
    }
    if (walk.reachable.has(ino)) {
      const names = walk.names.get(ino) ?? 0;
      const want = isDir(rec.mode) ? 1 + (walk.subdirs.get(ino) ?? 0) + (ino === rootIno ? 1 : names) : names;
      if (rec.nlink !== want) {
        actions.push({ place: `inode ${ino}`, message: `nlink ${rec.nlink} set to ${want}` });
        rec.nlink = want;
        changed = true;
      }
    }
    if (changed) inodes.putSync(inoKey(ino), encodeInode(rec));
  }
}

/**
 * Step 4h, after everything that removes block map entries: each inode's stored block count set
 * to the entries its block map holds. Reads the records again: the steps before may have
 * rewritten them from copies decoded earlier.
 */
function fixBlockCounts(store: Store, actions: RepairAction[]): void {
  const inodes = store.btree.table('inode');
  const entries = new Map<number, number>();
  for (const key of store.btree.table('blockmap').getKeys({})) entries.set(keyIno(key), (entries.get(keyIno(key)) ?? 0) + 1);
  for (const { key, value } of [...inodes.getRange({})]) {
    const ino = keyIno(key);
    const rec = decodeInode(value, `inode ${ino}`);
    const want = entries.get(ino) ?? 0;
    if (rec.blockCount === want) continue;
    actions.push({ place: `inode ${ino}`, message: `block count ${rec.blockCount} set to its ${want} block map entries` });
    inodes.putSync(key, encodeInode({ ...rec, blockCount: want }));
  }
}

/** The orphan list keeps only unlinked, unreachable inodes; xattrs of missing inodes go. */
function cleanLists(store: Store, decoded: Map<number, InodeRecord>, orphans: Set<number>, walk: Walk, actions: RepairAction[]): void {
  const btree = store.btree;
  for (const ino of orphans) {
    const rec = decoded.get(ino);
    if (rec === undefined || rec.nlink !== 0 || walk.reachable.has(ino)) {
      btree.table('orphan').removeSync(inoKey(ino));
      actions.push({ place: `inode ${ino}`, message: 'removed from the orphan list' });
    }
  }
  for (const key of btree.table('xattr').getKeys({})) {
    if (!decoded.has(keyIno(key))) {
      btree.table('xattr').removeSync(key);
      actions.push({ place: `inode ${keyIno(key)}`, message: `xattr ${direntKeyName(key).toString()} of a missing inode removed` });
    }
  }
}

function decodeDirentSafe(value: Buffer): { ino: number; type: number } | undefined {
  try {
    return decodeDirent(value, 'dirent');
  } catch {
    return undefined;
  }
}

/** Walks from the root fixing "..", counting names; a directory met twice loses its second name. */
function walkNames(store: Store, decoded: Map<number, InodeRecord>, actions: RepairAction[]): Walk {
  const dirents = store.btree.table('dirent');
  const reachable = new Set<number>([rootIno]);
  const names = new Map<number, number>();
  const subdirs = new Map<number, number>();
  const stack = [rootIno];
  while (stack.length > 0) {
    const dir = stack.pop()!;
    for (const { key, value } of dirents.getRange(inoPrefixRange(dir))) {
      const name = direntKeyName(key);
      if (name.toString('latin1') === '..') continue;
      const entry = decodeDirent(value, 'dirent');
      const child = decoded.get(entry.ino);
      if (child === undefined) continue;
      if (isDir(child.mode)) {
        if (reachable.has(entry.ino)) {
          dirents.removeSync(key);
          actions.push({ place: `directory ${dir} entry ${JSON.stringify(name.toString('utf8'))}`, message: `second name of directory ${entry.ino} removed` });
          continue;
        }
        const dotdot = dirents.get(direntKey(entry.ino, Buffer.from('..')));
        if (dotdot === undefined || decodeDirent(dotdot, 'dirent').ino !== dir) {
          dirents.putSync(direntKey(entry.ino, Buffer.from('..')), encodeDirent({ ino: dir, type: S_IFDIR >> 12 }));
          actions.push({ place: `inode ${entry.ino}`, message: `".." set to its parent ${dir}` });
        }
        subdirs.set(dir, (subdirs.get(dir) ?? 0) + 1);
        stack.push(entry.ino);
      }
      reachable.add(entry.ino);
      names.set(entry.ino, (names.get(entry.ino) ?? 0) + 1);
    }
  }
  return { reachable, names, subdirs };
}

function namedInos(store: Store): Set<number> {
  const named = new Set<number>();
  for (const { key, value } of store.btree.table('dirent').getRange({})) {
    if (direntKeyName(key).toString('latin1') === '..') continue;
    named.add(decodeDirent(value, 'dirent').ino);
  }
  return named;
}

/** The ino of /lost+found, made (mode 0700, root's) when absent. */
function ensureLostFound(store: Store, decoded: Map<number, InodeRecord>, actions: RepairAction[]): number {
  const dirents = store.btree.table('dirent');
  const name = Buffer.from(lostFoundName);
  const existing = dirents.get(direntKey(rootIno, name));
  if (existing !== undefined) {
    const ino = decodeDirent(existing, 'dirent').ino;
    if (isDir(decoded.get(ino)?.mode ?? 0)) return ino;
    throw fsError('EEXIST', `/${lostFoundName} exists and is not a directory: rename it and run the repair again`, `inode ${ino}`);
  }
  const ino = store.allocateIno();
  const now = nowNs();
  const rec: InodeRecord = { mode: S_IFDIR | 0o700, uid: 0, gid: 0, nlink: 2, rdev: 0, size: 0, atimeNs: now, mtimeNs: now, ctimeNs: now, generation: 0, blockCount: 0, target: Buffer.alloc(0) };
  const inodes = store.btree.table('inode');
  inodes.putSync(inoKey(ino), encodeInode(rec));
  dirents.putSync(direntKey(rootIno, name), encodeDirent({ ino, type: S_IFDIR >> 12 }));
  dirents.putSync(direntKey(ino, Buffer.from('..')), encodeDirent({ ino: rootIno, type: S_IFDIR >> 12 }));
  store.btree.table('link').putSync(linkKey(ino, rootIno, name), Buffer.alloc(0));
  const root = decodeInode(inodes.get(inoKey(rootIno))!, 'inode 1');
  root.nlink++;
  inodes.putSync(inoKey(rootIno), encodeInode(root));
  decoded.set(rootIno, root);
  decoded.set(ino, rec);
  actions.push({ place: `/${lostFoundName}`, message: `created (inode ${ino})` });
  return ino;
}

/** Names `ino` as `#<ino>` in lost+found (entry and link row; ".." and lost+found's nlink for a directory; the caller sets the child's nlink). */
function linkIntoLostFound(store: Store, lostFound: number, ino: number, rec: InodeRecord): void {
  const dirents = store.btree.table('dirent');
  const name = Buffer.from(`#${ino}`);
  dirents.putSync(direntKey(lostFound, name), encodeDirent({ ino, type: (rec.mode & S_IFMT) >> 12 }));
  store.btree.table('link').putSync(linkKey(ino, lostFound, name), Buffer.alloc(0));
  if (!isDir(rec.mode)) return;
  dirents.putSync(direntKey(ino, Buffer.from('..')), encodeDirent({ ino: lostFound, type: S_IFDIR >> 12 }));
  const inodes = store.btree.table('inode');
  const parent = decodeInode(inodes.get(inoKey(lostFound))!, 'lost+found');
  parent.nlink++;
  inodes.putSync(inoKey(lostFound), encodeInode(parent));
}

/** The `link` reverse index made again from the directory entries. */
function rebuildLinkIndex(store: Store): void {
  const links = store.btree.table('link');
  for (const key of links.getKeys({})) links.removeSync(key);
  for (const { key, value } of store.btree.table('dirent').getRange({})) {
    const name = direntKeyName(key);
    if (name.toString('latin1') === '..') continue;
    links.putSync(linkKey(decodeDirent(value, 'dirent').ino, keyIno(key), name), Buffer.alloc(0));
  }
}

/** Step 5: live records of damaged segments copied to the head; the old files moved into the backup. */
async function evacuate(store: Store, segments: Set<number>, backupDir: string, actions: RepairAction[]): Promise<void> {
  const blockmap = store.btree.table('blockmap');
  const liveAt = (ino: number, blockIndex: number, segment: number, offset: number): BlockPointer | undefined => {
    const value = blockmap.get(blockKey(ino, blockIndex));
    if (value === undefined) return undefined;
    const ptr = decodeBlockPointer(value, 'block');
    return ptr.kind === blockPointerKind.segment && ptr.segment === segment && ptr.offset === offset ? ptr : undefined;
  };
  for (const segment of [...segments].sort((a, b) => a - b)) {
    if (!store.log.segments().includes(segment)) continue;
    const inputs: BlockRecordInput[] = [];
    const pointers: BlockPointer[] = [];
    for (const item of store.log.scan(segment)) {
      if (item.kind !== 'record') continue;
      const ptr = liveAt(item.ino, item.blockIndex, segment, item.loc.offset);
      if (ptr === undefined) continue;
      inputs.push({ ino: item.ino, blockIndex: item.blockIndex, payload: Buffer.from(item.payload) });
      pointers.push(ptr);
    }
    const locations = inputs.length === 0 ? [] : store.log.append(inputs);
    store.log.sync();
    store.transaction(() => {
      locations.forEach((loc, i) => {
        blockmap.putSync(blockKey(inputs[i]!.ino, inputs[i]!.blockIndex), encodeBlockPointer({ ...pointers[i]!, segment: loc.segment, offset: loc.offset }));
      });
    });
    await store.btree.sync();
    const file = store.log.segmentFile(segment);
    copyFileSync(file, join(backupDir, 'segments', segmentFileName(segment)));
    store.log.removeSegment(segment);
    actions.push({ place: file, message: `damaged segment: ${inputs.length} live records copied to the head, the file moved to ${join(backupDir, 'segments')}` });
  }
}

/** Step 6: `seguse` recomputed from the block maps. */
function recomputeUsage(store: Store): void {
  const seguse = store.btree.table('seguse');
  const live = new Map<number, number>();
  for (const { value } of store.btree.table('blockmap').getRange({})) {
    const ptr = decodeBlockPointer(value, 'block');
    if (ptr.kind === blockPointerKind.segment) live.set(ptr.segment, (live.get(ptr.segment) ?? 0) + ptr.lengthBytes);
  }
  for (const key of seguse.getKeys({})) if (!live.has(key.readUInt32BE(0))) seguse.removeSync(key);
  for (const [segment, bytes] of live) seguse.putSync(segmentKey(segment), encodeU64(bytes));
}

/**
 * Rebuild, first half: moves the old LMDB environment (if any) into a new backup directory and
 * makes a fresh one whose marks lie above every record in the segments. Returns the backup
 * directory; the caller then opens the store (and may fill it from the sync dir) and calls
 * `recoverOrphanRecords`.
 */
export async function prepareRebuild(dir: string, check: SegmentCheck, actions: RepairAction[]): Promise<string> {
  const backupDir = makeBackupDir(dir);
  const lmdbDir = join(dir, 'lmdb');
  if (existsSync(lmdbDir)) {
    renameSync(lmdbDir, join(backupDir, 'lmdb'));
    actions.push({ place: lmdbDir, message: `unreadable LMDB environment moved to ${join(backupDir, 'lmdb')}` });
  }
  mkdirSync(lmdbDir, { recursive: true });
  await raiseMarks(lmdbDir, check, 0);
  return backupDir;
}

/**
 * Rebuild, second half, on the freshly opened store: each inode that owns records and that
 * `claimed` does not cover becomes `/lost+found/#<ino>` (its newest record per block, size up
 * to the end of its last block's payload); then damaged segments are evacuated and usage
 * recomputed. `claimed(ino, newest)` lets the caller skip inodes whose data the sync dir holds.
 */
export async function recoverOrphanRecords(store: Store, check: SegmentCheck, backupDir: string, actions: RepairAction[],
  claimed: (ino: number, newest: Map<number, { segment: number; offset: number; lengthBytes: number }>) => boolean = () => false): Promise<number> {
  const newest = new Map<number, Map<number, { segment: number; offset: number; lengthBytes: number }>>();
  for (const r of check.records.records()) {
    let blocks = newest.get(r.ino);
    if (blocks === undefined) newest.set(r.ino, (blocks = new Map()));
    blocks.set(r.blockIndex, { segment: r.segment, offset: r.offset, lengthBytes: r.lengthBytes });
  }
  let recovered = 0;
  store.transaction(() => {
    const inodes = store.btree.table('inode');
    const blockmap = store.btree.table('blockmap');
    const decoded = new Map<number, InodeRecord>();
    for (const { key, value } of inodes.getRange({})) decoded.set(keyIno(key), decodeInode(value, 'inode'));
    let lostFound: number | undefined;
    for (const [ino, blocks] of newest) {
      if (decoded.has(ino) || claimed(ino, blocks)) continue;
      lostFound ??= ensureLostFound(store, decoded, actions);
      const lastIndex = Math.max(...blocks.keys());
      const size = lastIndex * blockSizeBytes + blocks.get(lastIndex)!.lengthBytes;
      const now = nowNs();
      const rec: InodeRecord = { mode: S_IFREG | 0o600, uid: 0, gid: 0, nlink: 1, rdev: 0, size, atimeNs: now, mtimeNs: now, ctimeNs: now, generation: 0, blockCount: blocks.size, target: Buffer.alloc(0) };
      inodes.putSync(inoKey(ino), encodeInode(rec));
      for (const [blockIndex, loc] of blocks) {
        blockmap.putSync(blockKey(ino, blockIndex), encodeBlockPointer({ kind: blockPointerKind.segment, lengthBytes: loc.lengthBytes, segment: loc.segment, offset: loc.offset, blockId: Buffer.alloc(16) }));
      }
      linkIntoLostFound(store, lostFound, ino, rec);
      actions.push({ place: `inode ${ino}`, message: `recovered from the segments as /${lostFoundName}/#${ino} (${blocks.size} blocks, ${size} bytes)` });
      recovered++;
    }
  });
  await evacuate(store, damagedSegments(check, undefined), backupDir, actions);
  store.transaction(() => recomputeUsage(store));
  return recovered;
}

/** True when `dir/lmdb/data.mdb` exists (else a rebuild is the only repair). */
export function hasLmdb(dir: string): boolean {
  const path = join(dir, 'lmdb', 'data.mdb');
  return existsSync(path) && statSync(path).size > 0;
}
