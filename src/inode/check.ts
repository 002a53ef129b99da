/**
 * The store checker: the library behind `zippy-fsck` and the fixture that runs after every
 * test. It reads everything and changes nothing. Checked:
 * - every directory entry names an existing inode of the type the entry says;
 * - every directory has a ".." naming its parent, and the tree is reachable from the root;
 * - nlink equals the number of names (files) or 2 + subdirectories (directories);
 * - every inode is reachable, or unlinked-but-open and listed as an orphan;
 * - every block map entry is within its file's size and points at a record that reads back
 *   with a good checksum and the right owner;
 * - per-segment live bytes equal what the block maps reference;
 * - allocator marks lie above everything in use.
 */
import { isFsError } from '../errors.js';
import { blockSizeBytes, treeDepthMax } from '../limits.js';
import { blockKeyIndex, direntKey, direntKeyName, inoPrefixRange, keyIno } from '../btree/keys.js';
import { blockPointerKind, decodeBlockPointer, decodeDirent, decodeInode, decodeU64, type InodeRecord } from '../btree/records.js';
import type { Store } from './store.js';
import { isDir, isLnk, isReg, rootIno, S_IFMT } from './types.js';

export type ProblemCode =
  | 'dangling-dirent' | 'dirent-type' | 'missing-dotdot' | 'bad-dotdot' | 'nlink' | 'unreachable-inode'
  | 'block-beyond-size' | 'block-unreadable' | 'block-orphan' | 'segment-usage' | 'mark-below-use'
  | 'xattr-orphan' | 'orphan-list' | 'symlink-size' | 'too-deep' | 'record';

export interface Problem {
  code: ProblemCode;
  /** Where: an inode, a path, a segment and offset. */
  place: string;
  message: string;
}

export interface CheckReport {
  problems: Problem[];
  inodeCount: number;
  directoryCount: number;
  blockCount: number;
  blockBytes: number;
}

export interface CheckOptions {
  /** Read and verify every block record (default true). */
  readBlocks?: boolean;
  /** Called now and then with a count of items done, for progress bars. */
  progress?: (done: number) => void;
}

/** Checks the whole store; returns every problem found (an empty list means healthy). */
export function checkStore(store: Store, options: CheckOptions = {}): CheckReport {
  const problems: Problem[] = [];
  const report = (code: ProblemCode, place: string, message: string): void => {
    problems.push({ code, place, message });
  };
  const inodes = loadInodes(store, report);
  const { linkCounts, reachable, directoryCount } = walkTree(store, inodes, report);
  checkInodes(store, inodes, linkCounts, reachable, report);
  const { blockCount, blockBytes } = checkBlocks(store, inodes, options, report);
  checkXattrs(store, inodes, report);
  return { problems, inodeCount: inodes.size, directoryCount, blockCount, blockBytes };
}

type Report = (code: ProblemCode, place: string, message: string) => void;

function loadInodes(store: Store, report: Report): Map<number, InodeRecord> {
  const inodes = new Map<number, InodeRecord>();
  for (const { key, value } of store.btree.table('inode').getRange({})) {
    const ino = keyIno(key);
    try {
      inodes.set(ino, decodeInode(value, `inode ${ino}`));
    } catch (e) {
      report('record', `inode ${ino}`, String((e as Error).message));
    }
  }
  return inodes;
}

function walkTree(store: Store, inodes: Map<number, InodeRecord>, report: Report): { linkCounts: Map<number, number>; reachable: Set<number>; directoryCount: number } {
  const dirents = store.btree.table('dirent');
  const linkCounts = new Map<number, number>();
  const reachable = new Set<number>([rootIno]);
  const stack: { ino: number; path: string; depth: number }[] = [{ ino: rootIno, path: '/', depth: 0 }];
  let directoryCount = 0;
  while (stack.length > 0) {
    const dir = stack.pop()!;
    directoryCount++;
    let subdirs = 0;
    let sawDotdot = false;
    for (const { key, value } of dirents.getRange(inoPrefixRange(dir.ino))) {
      const name = direntKeyName(key).toString('utf8');
      const rec = decodeDirent(value, `dirent ${dir.path}${name}`);
      if (name === '..') {
        sawDotdot = true;
        continue;
      }
      const path = `${dir.path}${name}`;
      const child = inodes.get(rec.ino);
      if (child === undefined) {
        report('dangling-dirent', path, `names inode ${rec.ino}, which does not exist`);
        continue;
      }
      if ((child.mode & S_IFMT) >> 12 !== rec.type) report('dirent-type', path, `entry type ${rec.type}, inode type ${(child.mode & S_IFMT) >> 12}`);
      linkCounts.set(rec.ino, (linkCounts.get(rec.ino) ?? 0) + 1);
      if (!isDir(child.mode)) {
        reachable.add(rec.ino);
        continue;
      }
      subdirs++;
      if (reachable.has(rec.ino)) {
        report('nlink', path, `directory inode ${rec.ino} has more than one name`);
        continue;
      }
      reachable.add(rec.ino);
      const parentValue = dirents.get(direntKey(rec.ino, Buffer.from('..')));
      if (parentValue === undefined) report('missing-dotdot', path, 'directory has no ".." entry');
      else if (decodeDirent(parentValue, `${path}/..`).ino !== dir.ino) report('bad-dotdot', path, `".." names ${decodeDirent(parentValue, path).ino}, parent is ${dir.ino}`);
      if (dir.depth + 1 >= treeDepthMax) report('too-deep', path, `deeper than ${treeDepthMax}`);
      else stack.push({ ino: rec.ino, path: `${path}/`, depth: dir.depth + 1 });
    }
    if (dir.ino !== rootIno && !sawDotdot) report('missing-dotdot', dir.path, 'directory has no ".." entry');
    linkCounts.set(dir.ino, (linkCounts.get(dir.ino) ?? 0) + 1 + subdirs + (dir.ino === rootIno ? 1 : 0));
  }
  return { linkCounts, reachable, directoryCount };
}

function checkInodes(store: Store, inodes: Map<number, InodeRecord>, linkCounts: Map<number, number>, reachable: Set<number>, report: Report): void {
  const orphans = new Set<number>();
  for (const key of store.btree.table('orphan').getKeys({})) orphans.add(keyIno(key));
  const inoNext = store.inoNext();
  for (const [ino, rec] of inodes) {
    const place = `inode ${ino}`;
    if (ino >= inoNext) report('mark-below-use', place, `inode number not below the allocator mark ${inoNext}`);
    if (isLnk(rec.mode) && rec.size !== rec.target.length) report('symlink-size', place, `size ${rec.size}, target ${rec.target.length} bytes`);
    if (!reachable.has(ino)) {
      if (rec.nlink === 0 && orphans.has(ino)) continue;
      report('unreachable-inode', place, `nlink ${rec.nlink} but no directory names it`);
      continue;
    }
    const expected = linkCounts.get(ino) ?? 0;
    if (rec.nlink !== expected) report('nlink', place, `nlink ${rec.nlink}, names counted ${expected}`);
  }
  for (const ino of orphans) {
    const rec = inodes.get(ino);
    if (rec === undefined || rec.nlink !== 0) report('orphan-list', `inode ${ino}`, 'listed as orphan but missing or still linked');
  }
}

function checkBlocks(store: Store, inodes: Map<number, InodeRecord>, options: CheckOptions, report: Report): { blockCount: number; blockBytes: number } {
  const live = new Map<number, number>();
  const head = store.log.head();
  let blockCount = 0;
  let blockBytes = 0;
  for (const { key, value } of store.btree.table('blockmap').getRange({})) {
    const ino = keyIno(key);
    const blockIndex = blockKeyIndex(key);
    const place = `inode ${ino} block ${blockIndex}`;
    blockCount++;
    if (options.progress !== undefined && blockCount % 4096 === 0) options.progress(blockCount);
    const rec = inodes.get(ino);
    if (rec === undefined) {
      report('block-orphan', place, 'block map entry of a missing inode');
      continue;
    }
    if (!isReg(rec.mode) || blockIndex * blockSizeBytes >= rec.size) report('block-beyond-size', place, `block beyond the file size ${rec.size}`);
    let ptr;
    try {
      ptr = decodeBlockPointer(value, place);
    } catch (e) {
      report('record', place, (e as Error).message);
      continue;
    }
    if (ptr.kind !== blockPointerKind.segment) continue;
    blockBytes += ptr.lengthBytes;
    live.set(ptr.segment, (live.get(ptr.segment) ?? 0) + ptr.lengthBytes);
    if (ptr.segment > head.segment || (ptr.segment === head.segment && ptr.offset >= head.offset)) {
      report('mark-below-use', place, `points at ${ptr.segment}:${ptr.offset}, beyond the log head ${head.segment}:${head.offset}`);
    }
    if (options.readBlocks === false) continue;
    try {
      store.log.read({ segment: ptr.segment, offset: ptr.offset, lengthBytes: ptr.lengthBytes }, ino, blockIndex);
    } catch (e) {
      if (!isFsError(e)) throw e;
      report('block-unreadable', `${place} (segment ${ptr.segment} offset ${ptr.offset})`, e.message);
    }
  }
  const recorded = new Map<number, number>();
  for (const { key, value } of store.btree.table('seguse').getRange({})) recorded.set(key.readUInt32BE(0), decodeU64(value, 'seguse'));
  for (const segment of new Set([...live.keys(), ...recorded.keys()])) {
    const want = live.get(segment) ?? 0;
    const have = recorded.get(segment) ?? 0;
    if (want !== have) report('segment-usage', `segment ${segment}`, `usage records ${have} live bytes, block maps reference ${want}`);
  }
  return { blockCount, blockBytes };
}

function checkXattrs(store: Store, inodes: Map<number, InodeRecord>, report: Report): void {
  for (const key of store.btree.table('xattr').getKeys({})) {
    const ino = keyIno(key);
    if (!inodes.has(ino)) report('xattr-orphan', `inode ${ino}`, `xattr ${direntKeyName(key).toString()} of a missing inode`);
  }
}
