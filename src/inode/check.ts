/**
 * The store checker: the library behind `zippy-fsck` and the fixture that runs after every
 * test. It reads everything and changes nothing. Checked:
 * - every directory entry names an existing inode of the type the entry says;
 * - every directory has a ".." naming its parent, and the tree is reachable from the root;
 * - nlink equals the number of names (files) or 2 + subdirectories (directories);
 * - the `link` reverse index holds exactly one row per name;
 * - every inode is reachable, or unlinked-but-open and listed as an orphan;
 * - every block map entry is within its file's size and points at a record that reads back
 *   with a good checksum and the right owner (segment pointers), or at a block id the sync
 *   catalog knows (archive pointers);
 * - every inode's stored block count (st_blocks / 8) equals its block map entries;
 * - per-segment live bytes equal what the block maps reference;
 * - allocator marks lie above everything in use.
 *
 * Two entry points: `checkStore(store)` on an open store (blocks read through the log), and
 * `checkStoreDir(dir)`, which opens nothing for writing — LMDB read-only, the segment files
 * scanned once (blocks/check.ts) — so a store that is not mounted is checked exactly as it lies
 * on disk, torn tails included.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { isFsError } from '../errors.js';
import { blockSizeBytes, treeDepthMax } from '../limits.js';
import type { SegmentSpaceMark } from '../alloc/index.js';
import { checkSegments, type SegmentCheck, type SegmentFinding } from '../blocks/check.js';
import { segmentFileName } from '../blocks/index.js';
import { Btree } from '../btree/db.js';
import { blockKeyIndex, direntKey, direntKeyName, inoPrefixRange, keyIno, linkKey, linkKeyParts, metaKeys, tableNames, type TableName } from '../btree/keys.js';
import { blockCountUnknown, blockPointerKind, decodeBlockPointer, decodeDirent, decodeInode, decodeU64, type BlockPointer, type InodeRecord } from '../btree/records.js';
import type { Store } from './store.js';
import { isDir, isLnk, isReg, rootIno, S_IFMT } from './types.js';

export type ProblemCode =
  | 'dangling-dirent' | 'dirent-type' | 'missing-dotdot' | 'bad-dotdot' | 'nlink' | 'unreachable-inode'
  | 'block-beyond-size' | 'block-unreadable' | 'block-orphan' | 'block-archive' | 'segment-usage' | 'mark-below-use'
  | 'xattr-orphan' | 'orphan-list' | 'symlink-size' | 'too-deep' | 'record' | 'link-table' | 'segment-missing'
  | 'btree-unreadable' | 'block-count' | SegmentFinding['code'];

export interface Problem {
  code: ProblemCode;
  /** Where: an inode, a path, a segment and offset, an archive. */
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
  /** Called now and then with the block pointers checked so far and their total, for progress bars. */
  progress?: (done: number, total: number) => void;
}

/** What the tree checks need from a store, open or lying on disk. */
interface CheckSource {
  readonly btree: Btree;
  /** The committed log head; undefined when the mark is missing. */
  readonly head: SegmentSpaceMark | undefined;
  readonly inoNext: number | undefined;
  /** Undefined when the record at `ptr` holds block (ino, blockIndex); else why not. */
  verifyBlock(ptr: BlockPointer, ino: number, blockIndex: number): string | undefined;
  /** False when the segment file does not exist (its pointers are reported once per segment). */
  segmentExists(segment: number): boolean;
}

type Report = (code: ProblemCode, place: string, message: string) => void;

/** Checks an open store; returns every problem found (an empty list means healthy). */
export function checkStore(store: Store, options: CheckOptions = {}): CheckReport {
  const segments = new Set(store.log.segments());
  return checkTree({
    btree: store.btree,
    head: store.log.head(),
    inoNext: store.inoNext(),
    segmentExists: (segment) => segments.has(segment),
    verifyBlock(ptr, ino, blockIndex) {
      if (options.readBlocks === false) return undefined;
      try {
        store.log.read({ segment: ptr.segment, offset: ptr.offset, lengthBytes: ptr.lengthBytes }, ino, blockIndex);
        return undefined;
      } catch (e) {
        if (!isFsError(e)) throw e;
        return e.message;
      }
    },
  }, options);
}

/** The report of checkStoreDir: the tree report plus what the segment pass found. */
export interface StoreDirReport extends CheckReport {
  segments: SegmentCheck;
  /** The committed marks as read (undefined when missing or when LMDB could not be read). */
  head: SegmentSpaceMark | undefined;
  inoNext: number | undefined;
  /** Set when LMDB is missing or unreadable: only the segments were checked. */
  btreeError: string | undefined;
  /** Valid records no block pointer references: overwritten or deleted data the cleaner will reclaim (not a problem). */
  deadRecordCount: number;
}

export interface StoreDirOptions {
  /**
   * Decides, before this process maps LMDB, whether it can be read safely: returns why not, or
   * undefined. LMDB trusts its pages, and a damaged page can crash the reading process (SIGSEGV),
   * so the CLI walks the environment in a child process first (probeBtree).
   */
  probe?: (lmdbDir: string) => string | undefined;
  /** Bytes of segments scanned so far. */
  progressBytes?: (bytesDone: number) => void;
  /** Block map entries checked so far. */
  progressBlocks?: (done: number, total: number) => void;
}

/** True when `dir` looks like a store: it has lmdb/ or segments/. */
export function isStoreDir(dir: string): boolean {
  return existsSync(join(dir, 'lmdb')) || existsSync(join(dir, 'segments'));
}

/**
 * Checks the store in `dir` without modifying anything: LMDB opened read-only, each segment
 * file read once. A missing or unreadable LMDB environment is a `btree-unreadable` problem
 * (the segments are still checked), never an exception.
 */
export async function checkStoreDir(dir: string, options: StoreDirOptions = {}): Promise<StoreDirReport> {
  let btree: Btree | undefined;
  let btreeError: string | undefined;
  const lmdbDir = join(dir, 'lmdb');
  if (!existsSync(join(lmdbDir, 'data.mdb'))) btreeError = `${join(lmdbDir, 'data.mdb')} is missing`;
  else if ((btreeError = options.probe?.(lmdbDir)) !== undefined) {
    // unreadable: checked without it
  } else {
    try {
      btree = Btree.open(lmdbDir, { readOnly: true });
    } catch (e) {
      btreeError = (e as Error).message;
    }
  }
  try {
    let head: SegmentSpaceMark | undefined;
    let inoNext: number | undefined;
    if (btree !== undefined) {
      try {
        ({ head, inoNext } = readMarks(btree));
      } catch (e) {
        btreeError = `cannot read the marks: ${(e as Error).message}`;
      }
    }
    const segments = checkSegments(join(dir, 'segments'), { head, progress: options.progressBytes });
    const segmentProblems: Problem[] = segments.findings.map((f) => ({ code: f.code, place: `${f.file}:${f.offset}`, message: f.message }));
    const empty = { problems: [], inodeCount: 0, directoryCount: 0, blockCount: 0, blockBytes: 0 };
    if (btree === undefined || btreeError !== undefined) {
      const problem: Problem = { code: 'btree-unreadable', place: lmdbDir, message: `${btreeError ?? 'unreadable'}; --repair rebuilds it from the segments (and --sync)` };
      return { ...empty, problems: [problem, ...segmentProblems], segments, head, inoNext, btreeError, deadRecordCount: 0 };
    }
    let referenced = 0;
    const source: CheckSource = {
      btree, head, inoNext,
      segmentExists: (segment) => segments.sizes.has(segment),
      verifyBlock(ptr, ino, blockIndex) {
        const record = segments.records.get(ptr.segment, ptr.offset);
        if (record === undefined) return `no valid record at ${segmentFileName(ptr.segment)}:${ptr.offset} (damaged or never written)`;
        if (record.ino !== ino || record.blockIndex !== blockIndex) return `record at ${segmentFileName(ptr.segment)}:${ptr.offset} belongs to ino ${record.ino} block ${record.blockIndex}`;
        if (record.lengthBytes !== ptr.lengthBytes) return `record holds ${record.lengthBytes} payload bytes, the pointer says ${ptr.lengthBytes}`;
        referenced++;
        return undefined;
      },
    };
    let report: CheckReport;
    try {
      report = checkTree(source, options.progressBlocks === undefined ? {} : { progress: options.progressBlocks });
    } catch (e) {
      if (isFsError(e, 'ASSERT')) throw e;
      const problem: Problem = { code: 'btree-unreadable', place: lmdbDir, message: `reading the B+Tree failed: ${(e as Error).message}; --repair rebuilds it` };
      return { ...empty, problems: [problem, ...segmentProblems], segments, head, inoNext, btreeError: problem.message, deadRecordCount: 0 };
    }
    return { ...report, problems: [...segmentProblems, ...report.problems], segments, head, inoNext, btreeError: undefined, deadRecordCount: segments.recordCount - referenced };
  } finally {
    await btree?.close();
  }
}

/**
 * Reads every key and value of every table of the environment in `lmdbDir` (read-only) and
 * returns the number of entries. Run it in a child process: on a damaged environment it may
 * throw, or the process may die of a signal.
 */
export async function probeBtree(lmdbDir: string): Promise<number> {
  const btree = Btree.open(lmdbDir, { readOnly: true });
  let count = 0;
  try {
    for (const name of Object.keys(tableNames) as TableName[]) {
      for (const { key, value } of btree.table(name).getRange({})) count += key.length > 0 && value.length >= 0 ? 1 : 0;
    }
  } finally {
    await btree.close();
  }
  return count;
}

/** Every block pointer of kind archive in the store: the block lives in the sync dir under `blockId`. */
export function* archivePointers(btree: Btree): Generator<{ ino: number; blockIndex: number; blockId: Buffer }> {
  for (const { key, value } of btree.table('blockmap').getRange({})) {
    if (value.length === 0 || value[0] !== blockPointerKind.archive) continue;
    let ptr: BlockPointer;
    try {
      ptr = decodeBlockPointer(value, 'block');
    } catch {
      continue; // reported by the tree check
    }
    yield { ino: keyIno(key), blockIndex: blockKeyIndex(key), blockId: ptr.blockId };
  }
}

/** The committed marks of a B+Tree (undefined when missing). */
export function readMarks(btree: Btree): { head: SegmentSpaceMark | undefined; inoNext: number | undefined } {
  const meta = btree.table('meta');
  const headValue = meta.get(Buffer.from(metaKeys.segmentHead));
  const inoValue = meta.get(Buffer.from(metaKeys.inoNext));
  const head = headValue === undefined ? undefined : JSON.parse(headValue.toString('utf8')) as SegmentSpaceMark;
  return { head, inoNext: inoValue === undefined ? undefined : decodeU64(inoValue, 'meta ino-next') };
}

/** The pid in a store's LOCK file when that process is alive (the store is in use), else undefined. */
export function liveLockPid(dir: string): number | undefined {
  let text: string;
  try {
    text = readFileSync(join(dir, 'LOCK'), 'utf8');
  } catch {
    return undefined;
  }
  const pid = Number.parseInt(text, 10);
  if (!Number.isSafeInteger(pid) || pid <= 0 || pid === process.pid) return undefined;
  try {
    process.kill(pid, 0);
    return pid;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM' ? pid : undefined;
  }
}

function checkTree(source: CheckSource, options: CheckOptions): CheckReport {
  const problems: Problem[] = [];
  const report: Report = (code, place, message) => {
    problems.push({ code, place, message });
  };
  const inodes = loadInodes(source.btree, report);
  if (!inodes.has(rootIno)) report('btree-unreadable', 'inode 1', 'the root directory is missing; --repair rebuilds the tree');
  const { linkCounts, reachable, directoryCount, nameCount } = walkTree(source.btree, inodes, report);
  checkLinks(source.btree, nameCount, report);
  checkInodes(source, inodes, linkCounts, reachable, report);
  const { blockCount, blockBytes } = checkBlocks(source, inodes, options, report);
  checkXattrs(source.btree, inodes, report);
  return { problems, inodeCount: inodes.size, directoryCount, blockCount, blockBytes };
}

function loadInodes(btree: Btree, report: Report): Map<number, InodeRecord> {
  const inodes = new Map<number, InodeRecord>();
  for (const { key, value } of btree.table('inode').getRange({})) {
    const ino = keyIno(key);
    try {
      inodes.set(ino, decodeInode(value, `inode ${ino}`));
    } catch (e) {
      report('record', `inode ${ino}`, String((e as Error).message));
    }
  }
  return inodes;
}

interface TreeWalk {
  linkCounts: Map<number, number>;
  reachable: Set<number>;
  directoryCount: number;
  /** Names (dirents other than "..") seen, each of which must have its link row. */
  nameCount: number;
}

function walkTree(btree: Btree, inodes: Map<number, InodeRecord>, report: Report): TreeWalk {
  const dirents = btree.table('dirent');
  const links = btree.table('link');
  const linkCounts = new Map<number, number>();
  const reachable = new Set<number>([rootIno]);
  const stack: { ino: number; path: string; depth: number }[] = [{ ino: rootIno, path: '/', depth: 0 }];
  let directoryCount = 0;
  let nameCount = 0;
  while (stack.length > 0) {
    const dir = stack.pop()!;
    directoryCount++;
    let subdirs = 0;
    let sawDotdot = false;
    for (const { key, value } of dirents.getRange(inoPrefixRange(dir.ino))) {
      const nameBytes = direntKeyName(key);
      const name = nameBytes.toString('utf8');
      const rec = decodeDirent(value, `dirent ${dir.path}${name}`);
      if (name === '..') {
        sawDotdot = true;
        continue;
      }
      const path = `${dir.path}${name}`;
      nameCount++;
      if (links.get(linkKey(rec.ino, dir.ino, nameBytes)) === undefined) report('link-table', path, `no link row for inode ${rec.ino} under directory ${dir.ino}`);
      const child = inodes.get(rec.ino);
      if (child === undefined) {
        report('dangling-dirent', path, `names inode ${rec.ino}, which does not exist`);
        continue;
      }
      if ((child.mode & S_IFMT) >> 12 !== rec.type) report('dirent-type', path, `entry type ${rec.type}, inode ${rec.ino} type ${(child.mode & S_IFMT) >> 12}`);
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
      if (parentValue === undefined) report('missing-dotdot', path, `directory inode ${rec.ino} has no ".." entry`);
      else if (decodeDirent(parentValue, `${path}/..`).ino !== dir.ino) report('bad-dotdot', path, `".." of inode ${rec.ino} names ${decodeDirent(parentValue, path).ino}, parent is ${dir.ino}`);
      if (dir.depth + 1 >= treeDepthMax) report('too-deep', path, `deeper than ${treeDepthMax}`);
      else stack.push({ ino: rec.ino, path: `${path}/`, depth: dir.depth + 1 });
    }
    if (dir.ino !== rootIno && !sawDotdot) report('missing-dotdot', dir.path, 'directory has no ".." entry');
    linkCounts.set(dir.ino, (linkCounts.get(dir.ino) ?? 0) + 1 + subdirs + (dir.ino === rootIno ? 1 : 0));
  }
  return { linkCounts, reachable, directoryCount, nameCount };
}

/** Link rows beyond the names seen: each must match a dirent (only walked when the counts differ). */
function checkLinks(btree: Btree, nameCount: number, report: Report): void {
  const links = btree.table('link');
  const rowCount = (links.getStats() as { entryCount: number }).entryCount;
  if (rowCount === nameCount) return;
  const dirents = btree.table('dirent');
  for (const key of links.getKeys({})) {
    const ino = keyIno(key);
    const { parentIno, name } = linkKeyParts(key);
    const value = dirents.get(direntKey(parentIno, name));
    if (value === undefined || decodeDirent(value, 'dirent').ino !== ino) {
      report('link-table', `inode ${ino}`, `link row names ${JSON.stringify(name.toString('utf8'))} in directory ${parentIno}, which is not one of its names`);
    }
  }
}

function checkInodes(source: CheckSource, inodes: Map<number, InodeRecord>, linkCounts: Map<number, number>, reachable: Set<number>, report: Report): void {
  const orphans = new Set<number>();
  for (const key of source.btree.table('orphan').getKeys({})) orphans.add(keyIno(key));
  const inoNext = source.inoNext;
  if (inoNext === undefined && inodes.size > 1) report('mark-below-use', 'meta alloc.ino-next', 'the inode number mark is missing');
  for (const [ino, rec] of inodes) {
    const place = `inode ${ino}`;
    if (inoNext !== undefined && ino >= inoNext) report('mark-below-use', place, `inode number not below the allocator mark ${inoNext}`);
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

function checkBlocks(source: CheckSource, inodes: Map<number, InodeRecord>, options: CheckOptions, report: Report): { blockCount: number; blockBytes: number } {
  const live = new Map<number, number>();
  const missingSegments = new Map<number, { count: number; inos: Set<number> }>();
  const head = source.head;
  const blockids = source.btree.table('blockid');
  if (head === undefined) report('mark-below-use', 'meta alloc.segment-head', 'the segment log head mark is missing');
  let blockCount = 0;
  let blockBytes = 0;
  const entriesByIno = new Map<number, number>();
  const blockTotal = options.progress === undefined ? 0 : (source.btree.table('blockmap').getStats() as { entryCount: number }).entryCount;
  for (const { key, value } of source.btree.table('blockmap').getRange({})) {
    const ino = keyIno(key);
    const blockIndex = blockKeyIndex(key);
    const place = `inode ${ino} block ${blockIndex}`;
    blockCount++;
    if (options.progress !== undefined && blockCount % 4096 === 0) options.progress(blockCount, blockTotal);
    const rec = inodes.get(ino);
    if (rec === undefined) {
      report('block-orphan', place, 'block map entry of a missing inode');
      continue;
    }
    entriesByIno.set(ino, (entriesByIno.get(ino) ?? 0) + 1);
    if (!isReg(rec.mode) || blockIndex * blockSizeBytes >= rec.size) report('block-beyond-size', place, `block beyond the file size ${rec.size}`);
    let ptr;
    try {
      ptr = decodeBlockPointer(value, place);
    } catch (e) {
      report('record', place, (e as Error).message);
      continue;
    }
    if (ptr.kind === blockPointerKind.archive) {
      if (blockids.get(ptr.blockId) === undefined) report('block-archive', place, `block id ${ptr.blockId.toString('hex')} is not in the sync catalog`);
      continue;
    }
    blockBytes += ptr.lengthBytes;
    live.set(ptr.segment, (live.get(ptr.segment) ?? 0) + ptr.lengthBytes);
    if (head !== undefined && (ptr.segment > head.segment || (ptr.segment === head.segment && ptr.offset >= head.offset))) {
      report('mark-below-use', place, `points at ${segmentFileName(ptr.segment)}:${ptr.offset}, beyond the log head ${segmentFileName(head.segment)}:${head.offset}`);
    }
    if (!source.segmentExists(ptr.segment)) {
      const m = missingSegments.get(ptr.segment) ?? { count: 0, inos: new Set<number>() };
      m.count++;
      m.inos.add(ino);
      missingSegments.set(ptr.segment, m);
      continue;
    }
    const why = source.verifyBlock(ptr, ino, blockIndex);
    if (why !== undefined) report('block-unreadable', `${place} (${segmentFileName(ptr.segment)}:${ptr.offset})`, why);
  }
  checkBlockCounts(inodes, entriesByIno, report);
  for (const [segment, m] of missingSegments) {
    const inos = [...m.inos].slice(0, 10).join(', ');
    report('segment-missing', segmentFileName(segment), `segment file is missing; ${m.count} blocks of inodes ${inos}${m.inos.size > 10 ? ', …' : ''} point into it`);
  }
  const recorded = new Map<number, number>();
  for (const { key, value } of source.btree.table('seguse').getRange({})) recorded.set(key.readUInt32BE(0), decodeU64(value, 'seguse'));
  for (const segment of new Set([...live.keys(), ...recorded.keys()])) {
    const want = live.get(segment) ?? 0;
    const have = recorded.get(segment) ?? 0;
    if (want !== have) report('segment-usage', `segment ${segment}`, `usage records ${have} live bytes, block maps reference ${want}`);
  }
  return { blockCount, blockBytes };
}

/** Each inode's stored block count against its block map entries (a version-1 record has none to check). */
function checkBlockCounts(inodes: Map<number, InodeRecord>, entriesByIno: Map<number, number>, report: Report): void {
  for (const [ino, rec] of inodes) {
    if (rec.blockCount === blockCountUnknown) continue;
    const entries = entriesByIno.get(ino) ?? 0;
    if (rec.blockCount !== entries) report('block-count', `inode ${ino}`, `block count ${rec.blockCount}, block map entries ${entries}`);
  }
}

function checkXattrs(btree: Btree, inodes: Map<number, InodeRecord>, report: Report): void {
  for (const key of btree.table('xattr').getKeys({})) {
    const ino = keyIno(key);
    if (!inodes.has(ino)) report('xattr-orphan', `inode ${ino}`, `xattr ${direntKeyName(key).toString()} of a missing inode`);
  }
}
