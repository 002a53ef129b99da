/**
 * The POSIX layer: files, directories, symlinks, hard links, FIFOs and device nodes,
 * attributes, extended attributes and sparse files, over the store (LMDB tables + segment
 * log) and behind the block cache. Everything is addressed by inode number; `resolve` turns
 * a path into one for the path-based FUSE adapter.
 *
 * Invariants kept by every operation:
 * - one namespace or attribute operation is one LMDB transaction;
 * - file data reaches the log before the transaction that points at it commits, and a
 *   file's new size commits together with its blocks (no window where a crash shows zeros
 *   that were never written);
 * - a directory holds a ".." entry naming its parent; its nlink is 2 + its subdirectories;
 * - an inode with nlink 0 that is still open is listed in the orphan table until released.
 */
import { statfsSync } from 'node:fs';
import { assert, fsError, isFsError, type FsError } from '../errors.js';
import { recordSizeBytes, type BlockLocation, type BlockRecordInput } from '../blocks/index.js';
import { blockSizeBytes, cacheSizeBytesDefault, fileSizeMaxBytes, linkCountMax, nameLengthMaxBytes, noXattrInodeCountMax, pathCacheEntryCountMax, symlinkLengthMaxBytes, treeDepthMax, writebackDelayMsDefault, xattrNameLengthMaxBytes, xattrValueSizeMaxBytes } from '../limits.js';
import { blockKey, direntKey, direntKeyName, inoKey, inoPrefixRange, blockKeyIndex, linkKey, xattrKey } from '../btree/keys.js';
import { blockCountUnknown, blockIdUnknown, blockPointerKind, decodeBlockPlace, decodeBlockPointer, decodeDirent, decodeInode, decodeInodeBlockCount, encodeBlockPointer, encodeDirent, encodeInode, type BlockPlace, type BlockPointer, type InodeRecord } from '../btree/records.js';
import { BlockCache, type CacheEntry } from './cache.js';
import { cleanSegments } from './cleaner.js';
import { nameBytes, splitPath } from './names.js';
import type { Store } from './store.js';
import { isDir, isLnk, isReg, nowNs, permissionBits, rootIno, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, S_ISGID, S_ISUID, S_ISVTX, XATTR_CREATE, XATTR_REPLACE, type Attr, type Ctx, type DirEntry, type TimeSpec } from './types.js';

export interface FileSystemOptions {
  cacheSizeBytes?: number;
  writebackDelayMs?: number;
  readOnly?: boolean;
  /** Whole blocks from which an aligned write goes straight to the log (default directWriteBlockCountMinDefault). */
  directWriteBlockCountMin?: number;
}

/** Source of block bytes that do not live in the local segments (the sync layer's archives). */
export interface ExternalBlockReader {
  readBlock(pointer: BlockPointer, ino: number, blockIndex: number): Buffer;
}

/** Listener told, inside the committing transaction, which inodes an operation changed. */
export type ChangeListener = (ino: number) => void;

const dotdot = Buffer.from('..');
const zeroBlock = Buffer.alloc(blockSizeBytes);

/** True when every byte of `payload` (at most a block) is zero; data blocks mostly fail at the first test. */
function isZero(payload: Buffer): boolean {
  if (payload[0] !== 0 || payload[payload.length - 1] !== 0) return false;
  return payload.equals(zeroBlock.subarray(0, payload.length));
}
/** Blocks per log append during write-back: 1 MiB writes. */
const appendSliceBlockCount = 256;

export class FileSystem {
  readonly store: Store;
  readonly cache: BlockCache;
  private readonly readOnly: boolean;
  private readonly directWriteBlockCountMin: number;
  /** Latest attributes of files with writes not yet committed (size, times, mode). */
  private readonly pending = new Map<number, InodeRecord>();
  /** Blocks written straight to the log whose block-map entries are not committed yet (writeDirect). */
  private readonly pendingPlaces = new Map<number, PendingPlaces>();
  /** Entries of all pendingPlaces maps. */
  private pendingPlaceCount = 0;
  private readonly openCounts = new Map<number, number>();
  /** When each open file was last written (cleared by fsync and by its last release). */
  private readonly lastWriteMs = new Map<number, number>();
  private readonly handles = new Map<number, number>();
  /** The error of each file whose last write-back failed (its data stays dirty and is retried). */
  private readonly writeBackFailures = new Map<number, FsError>();
  /** Files closed with dirty data, written back together by writeBackClosed. */
  private readonly closedDirty = new Set<number>();
  private closedTimer: NodeJS.Timeout | undefined;
  /** Path components joined by "/" → inode (resolveParts). */
  private readonly pathCache = new Map<string, number>();
  /**
   * Inodes known to exist and to have no extended attributes: the kernel asks for
   * security.capability before every write(2) to a file (file_remove_privs), and the publisher
   * lists the xattrs of every changed file, so these are answered without reading LMDB. An
   * inode enters when it is created or when a read finds it without any xattr, and leaves
   * before any xattr of it is set (setxattr) and when it is freed (freeInode) — this process
   * holds the store's lock and those are the only writers of the xattr table and the only way
   * an inode disappears. Removal happens before the transaction commits, so a failed one
   * leaves the set too small, never wrong.
   */
  private readonly noXattrs = new Set<number>();
  private handleNext = 1;
  private timer: NodeJS.Timeout | undefined;
  private changedSinceSync = false;
  /** The running cleaner pass, awaited by close(). */
  private cleanPass: Promise<void> | undefined;
  private lastCleanMs = Date.now();
  private external: ExternalBlockReader | undefined;
  private readonly changeListeners: ChangeListener[] = [];
  private readonly replaceListeners: ChangeListener[] = [];

  constructor(store: Store, options: FileSystemOptions = {}) {
    this.store = store;
    this.cache = new BlockCache(options.cacheSizeBytes ?? cacheSizeBytesDefault);
    this.readOnly = options.readOnly ?? false;
    this.directWriteBlockCountMin = options.directWriteBlockCountMin ?? directWriteBlockCountMinDefault;
    assert(this.directWriteBlockCountMin >= 1, `directWriteBlockCountMin ${this.directWriteBlockCountMin} is at least 1`);
    const delayMs = options.writebackDelayMs ?? writebackDelayMsDefault;
    if (!this.readOnly) this.freeOrphans();
    if (delayMs > 0 && !this.readOnly) {
      this.timer = setInterval(() => this.onTimer(), delayMs);
      this.timer.unref();
    }
  }

  /** Sets the reader for blocks that live in sync-dir archives. */
  setExternalBlockReader(reader: ExternalBlockReader): void {
    this.external = reader;
  }

  /** Registers a listener called inside each transaction with every changed inode. */
  onChange(listener: ChangeListener): void {
    this.changeListeners.push(listener);
  }

  /**
   * Registers a listener called after replaceContent has installed another version of a file,
   * outside the transaction: the FUSE layer drops the kernel's cached pages of it.
   */
  onContentReplaced(listener: ChangeListener): void {
    this.replaceListeners.push(listener);
  }

  // ---------------------------------------------------------------- lookup and attributes

  /** The inode number of an absolute path. */
  resolve(path: string): number {
    return this.resolveParts(splitPath(path));
  }

  /** The parent directory's inode and the last component of an absolute path. */
  resolveParent(path: string): { parent: number; name: string } {
    const parts = splitPath(path);
    const name = parts.pop();
    if (name === undefined) throw fsError('EBUSY', 'the root has no parent', path);
    return { parent: this.resolveParts(parts), name };
  }

  /**
   * Walks path components from the root, through the path cache: the sync port names files by
   * their whole paths, so the same directories are walked again and again (the FUSE layer is
   * inode-based and does not resolve paths). The
   * cache holds only successful walks and is cleared whenever a directory entry is removed or a
   * transaction fails (direntRemove, commit), which are the only ways an existing path can come
   * to name another inode or none; adding an entry never changes an existing path.
   */
  private resolveParts(parts: readonly string[]): number {
    const key = parts.join('/');
    const hit = this.pathCache.get(key);
    if (hit !== undefined) return hit;
    let ino = rootIno;
    for (const part of parts) ino = this.lookupIno(ino, part);
    if (this.pathCache.size >= pathCacheEntryCountMax) this.pathCache.clear();
    this.pathCache.set(key, ino);
    return ino;
  }

  /** Attributes of the entry `name` in directory `parent`. */
  lookup(parent: number, name: string): Attr {
    return this.getattr(this.lookupIno(parent, name));
  }

  /**
   * Attributes of the entry `name` in directory `parent`, or undefined when the directory has
   * no such entry (the common answer of a lookup before a create, so no error is built for it);
   * other failures (ENOTDIR, ENAMETOOLONG, a missing parent) still throw.
   */
  lookupOrUndefined(parent: number, name: string): Attr | undefined {
    const ino = this.lookupInoOrUndefined(parent, name);
    return ino === undefined ? undefined : this.getattr(ino);
  }

  /** Attributes of inode `ino`, including writes not yet committed. */
  getattr(ino: number): Attr {
    return this.attrOf(ino, this.inode(ino));
  }

  /** Attributes of inode `ino` as getattr gives them, or undefined when it does not exist. */
  getattrOrUndefined(ino: number): Attr | undefined {
    const rec = this.inodeOrUndefined(ino);
    return rec === undefined ? undefined : this.attrOf(ino, rec);
  }

  /** Entries of directory `ino`, without "." and "..". */
  readdir(ino: number): DirEntry[] {
    this.requireDir(ino);
    const entries: DirEntry[] = [];
    const table = this.store.btree.table('dirent');
    for (const { key, value } of table.getRange(inoPrefixRange(ino))) {
      const name = direntKeyName(key);
      if (name.equals(dotdot)) continue;
      const rec = decodeDirent(value, `dirent of ${ino}`);
      entries.push({ name: name.toString('utf8'), ino: rec.ino, typeBits: rec.type << 12 });
    }
    return entries;
  }

  /** Target of symlink `ino`. */
  readlink(ino: number): string {
    const rec = this.inode(ino);
    if (!isLnk(rec.mode)) throw fsError('EINVAL', 'not a symlink', `inode ${ino}`);
    return rec.target.toString('utf8');
  }

  // ---------------------------------------------------------------- creating names

  /** Creates a regular file, FIFO, socket or device node `name` in `parent`. */
  mknod(ctx: Ctx, parent: number, name: string, mode: number, rdev = 0): Attr {
    const type = mode & S_IFMT;
    if (type === S_IFDIR || type === S_IFLNK) throw fsError('EINVAL', 'mknod of a directory or symlink', name);
    return this.createNode(ctx, parent, name, (type === 0 ? S_IFREG : type) | (mode & permissionBits), rdev, Buffer.alloc(0));
  }

  /** Creates directory `name` in `parent`. */
  mkdir(ctx: Ctx, parent: number, name: string, mode: number): Attr {
    return this.createNode(ctx, parent, name, S_IFDIR | (mode & permissionBits), 0, Buffer.alloc(0));
  }

  /** Creates symlink `name` in `parent` pointing at `target`. */
  symlink(ctx: Ctx, parent: number, name: string, target: string): Attr {
    const targetBytes = Buffer.from(target, 'utf8');
    if (targetBytes.length > symlinkLengthMaxBytes) throw fsError('ENAMETOOLONG', `symlink target is ${targetBytes.length} bytes`, name);
    return this.createNode(ctx, parent, name, S_IFLNK | 0o777, 0, targetBytes);
  }

  /** Adds a hard link `name` in `parent` to inode `ino`. */
  link(ctx: Ctx, ino: number, parent: number, name: string): Attr {
    this.writable();
    const nameBuf = nameBytes(name);
    const rec = this.inode(ino);
    if (isDir(rec.mode)) throw fsError('EPERM', 'hard link to a directory', name);
    if (rec.nlink >= linkCountMax) throw fsError('EMLINK', `inode ${ino} has ${rec.nlink} links`, name);
    const parentRec = this.requireDir(parent);
    void ctx;
    return this.commit(() => {
      if (this.direntGet(parent, nameBuf) !== undefined) throw fsError('EEXIST', 'name exists', name);
      const now = nowNs();
      rec.nlink++;
      rec.ctimeNs = now;
      this.putInode(ino, rec);
      this.store.btree.table('orphan').removeSync(inoKey(ino));
      this.direntPut(parent, nameBuf, ino, rec.mode);
      parentRec.mtimeNs = parentRec.ctimeNs = now;
      this.putInode(parent, parentRec);
      return this.attrOf(ino, rec);
    });
  }

  // ---------------------------------------------------------------- removing names

  /** Removes the non-directory `name` from `parent`. */
  unlink(ctx: Ctx, parent: number, name: string): void {
    this.writable();
    const nameBuf = nameBytes(name);
    this.commit(() => {
      const parentRec = this.requireDir(parent);
      const child = this.direntGet(parent, nameBuf);
      if (child === undefined) throw fsError('ENOENT', 'no such entry', name);
      const rec = this.inode(child);
      if (isDir(rec.mode)) throw fsError('EISDIR', 'unlink of a directory', name);
      this.checkSticky(ctx, parentRec, rec, name);
      this.direntRemove(parent, nameBuf, child);
      const now = nowNs();
      parentRec.mtimeNs = parentRec.ctimeNs = now;
      this.putInode(parent, parentRec);
      this.dropLink(child, rec, now);
    });
  }

  /** Removes the empty directory `name` from `parent`. */
  rmdir(ctx: Ctx, parent: number, name: string): void {
    this.writable();
    const nameBuf = nameBytes(name);
    this.commit(() => {
      const parentRec = this.requireDir(parent);
      const child = this.direntGet(parent, nameBuf);
      if (child === undefined) throw fsError('ENOENT', 'no such entry', name);
      const rec = this.inode(child);
      if (!isDir(rec.mode)) throw fsError('ENOTDIR', 'rmdir of a non-directory', name);
      this.checkSticky(ctx, parentRec, rec, name);
      if (!this.dirIsEmpty(child)) throw fsError('ENOTEMPTY', 'directory not empty', name);
      this.removeDir(parent, parentRec, nameBuf, child, rec);
    });
  }

  /** Renames `srcName` in `srcParent` to `dstName` in `dstParent`, replacing a compatible target. */
  rename(ctx: Ctx, srcParent: number, srcName: string, dstParent: number, dstName: string): void {
    this.writable();
    const srcBuf = nameBytes(srcName);
    const dstBuf = nameBytes(dstName);
    this.commit(() => {
      const srcParentRec = this.requireDir(srcParent);
      const dstParentRec = srcParent === dstParent ? srcParentRec : this.requireDir(dstParent);
      const ino = this.direntGet(srcParent, srcBuf);
      if (ino === undefined) throw fsError('ENOENT', 'no such entry', srcName);
      const rec = this.inode(ino);
      const movingDir = isDir(rec.mode);
      if (movingDir && srcParent !== dstParent && this.isAncestor(ino, dstParent)) {
        throw fsError('EINVAL', 'cannot move a directory into itself', dstName);
      }
      this.checkSticky(ctx, srcParentRec, rec, srcName);
      const target = this.direntGet(dstParent, dstBuf);
      if (target === ino) return; // same inode (or same name): POSIX says do nothing
      const now = nowNs();
      if (target !== undefined) this.replaceTarget(ctx, dstParent, dstParentRec, dstBuf, target, movingDir, now);
      const dirents = this.store.btree.table('dirent');
      this.direntRemove(srcParent, srcBuf, ino);
      this.direntPut(dstParent, dstBuf, ino, rec.mode);
      if (movingDir && srcParent !== dstParent) {
        dirents.putSync(direntKey(ino, dotdot), encodeDirent({ ino: dstParent, type: S_IFDIR >> 12 }));
        srcParentRec.nlink--;
        dstParentRec.nlink++;
      }
      rec.ctimeNs = now;
      this.putInode(ino, rec);
      srcParentRec.mtimeNs = srcParentRec.ctimeNs = now;
      dstParentRec.mtimeNs = dstParentRec.ctimeNs = now;
      this.putInode(srcParent, srcParentRec);
      if (dstParent !== srcParent) this.putInode(dstParent, dstParentRec);
    });
  }

  // ---------------------------------------------------------------- attributes

  /** Sets the permission bits of `ino` (owner or root only). */
  chmod(ctx: Ctx, ino: number, mode: number): Attr {
    this.writable();
    this.flushFile(ino);
    return this.commit(() => {
      const rec = this.inode(ino);
      // A write or truncate by a non-owner makes the kernel drop setuid/setgid with a chmod sent
      // under the writer's identity (FUSE_SETATTR after file_remove_privs); refusing it failed
      // the write with EPERM. Dropping those bits grants nothing, and under default_permissions
      // the kernel has already refused an explicit chmod(2) by a non-owner.
      const setid = S_ISUID | S_ISGID;
      const current = rec.mode & permissionBits;
      const onlyDropsSetid = (mode & permissionBits & ~setid) === (current & ~setid) && (mode & setid & ~current) === 0;
      if (ctx.uid !== 0 && ctx.uid !== rec.uid && !onlyDropsSetid) throw fsError('EPERM', 'only the owner may chmod', `inode ${ino}`);
      let bits = mode & permissionBits;
      if (ctx.uid !== 0 && !isDir(rec.mode) && rec.gid !== ctx.gid) bits &= ~S_ISGID;
      rec.mode = (rec.mode & S_IFMT) | bits;
      rec.ctimeNs = nowNs();
      this.putInode(ino, rec);
      return this.attrOf(ino, rec);
    });
  }

  /** Changes owner and/or group (-1 leaves one unchanged). Only root gives files away. */
  chown(ctx: Ctx, ino: number, uid: number, gid: number): Attr {
    this.writable();
    this.flushFile(ino);
    return this.commit(() => {
      const rec = this.inode(ino);
      const newUid = uid === -1 ? rec.uid : uid >>> 0;
      const newGid = gid === -1 ? rec.gid : gid >>> 0;
      if (ctx.uid !== 0) {
        if (newUid !== rec.uid) throw fsError('EPERM', 'only root may change the owner', `inode ${ino}`);
        if (ctx.uid !== rec.uid) throw fsError('EPERM', 'only the owner may change the group', `inode ${ino}`);
        if (newGid !== rec.gid && newGid !== ctx.gid) throw fsError('EPERM', `not a member of group ${newGid}`, `inode ${ino}`);
      }
      if (!isDir(rec.mode) && (uid !== -1 || gid !== -1)) rec.mode = clearSetId(rec.mode);
      rec.uid = newUid;
      rec.gid = newGid;
      rec.ctimeNs = nowNs();
      this.putInode(ino, rec);
      return this.attrOf(ino, rec);
    });
  }

  /** Sets access and modification times (ns, "now" or "omit"). */
  utimens(ctx: Ctx, ino: number, atime: TimeSpec, mtime: TimeSpec): Attr {
    this.writable();
    this.flushFile(ino);
    return this.commit(() => {
      const rec = this.inode(ino);
      if (ctx.uid !== 0 && ctx.uid !== rec.uid) {
        const bothNow = (atime === 'now' || atime === 'omit') && (mtime === 'now' || mtime === 'omit');
        if (!bothNow) throw fsError('EPERM', 'only the owner may set explicit times', `inode ${ino}`);
        if (!mayWrite(ctx, rec)) throw fsError('EACCES', 'no write permission to touch', `inode ${ino}`);
      }
      const now = nowNs();
      if (atime !== 'omit') rec.atimeNs = atime === 'now' ? now : atime;
      if (mtime !== 'omit') rec.mtimeNs = mtime === 'now' ? now : mtime;
      rec.ctimeNs = now;
      this.putInode(ino, rec);
      return this.attrOf(ino, rec);
    });
  }

  /** Sets the size of regular file `ino`; blocks past the end are freed. */
  truncate(ctx: Ctx, ino: number, size: number): Attr {
    this.writable();
    if (!Number.isSafeInteger(size) || size < 0) throw fsError('EINVAL', `bad size ${size}`, `inode ${ino}`);
    if (size > fileSizeMaxBytes) throw fsError('EFBIG', `size ${size} above ${fileSizeMaxBytes}`, `inode ${ino}`);
    const current = this.inode(ino);
    if (isDir(current.mode)) throw fsError('EISDIR', 'truncate of a directory', `inode ${ino}`);
    if (!isReg(current.mode)) throw fsError('EINVAL', 'truncate of a special file', `inode ${ino}`);
    this.flushFile(ino);
    const tail = this.tailBlockAfterTruncate(ino, size);
    const tailLoc = tail?.payload === undefined ? undefined : this.store.log.append([{ ino, blockIndex: tail.blockIndex, payload: tail.payload }])[0];
    return this.commit(() => {
      const rec = this.inode(ino);
      const keepBlockCount = Math.ceil(size / blockSizeBytes);
      let added = -this.freeBlocks(ino, keepBlockCount);
      if (tail !== undefined && tailLoc !== undefined) added += this.putBlock(ino, tail.blockIndex, tailLoc);
      else if (tail !== undefined) added -= this.removeBlock(ino, tail.blockIndex); // what is kept is all zeros: a hole
      this.blockCountAdd(ino, added);
      if (rec.size !== size) {
        rec.size = size;
        rec.mtimeNs = rec.ctimeNs = nowNs();
      }
      if (ctx.uid !== 0) rec.mode = clearSetId(rec.mode);
      this.putInode(ino, rec);
      this.cache.dropFrom(ino, keepBlockCount);
      this.zeroCachedTail(ino, size);
      const tailEntry = tail === undefined ? undefined : this.cache.get(ino, tail.blockIndex);
      if (tailEntry !== undefined) this.cache.setStored(tailEntry, tailLoc !== undefined);
      return this.attrOf(ino, rec);
    });
  }

  /** Sets extended attribute `name` of `ino`. flags: XATTR_CREATE / XATTR_REPLACE. */
  setxattr(ino: number, name: string, value: Buffer, flags: number): void {
    this.writable();
    // POSIX ACLs are not supported: storing system.posix_acl_* as plain xattrs would report
    // success while the mode stays unchanged (cp -a, rsync -A set modes this way and only
    // fall back to chmod on ENOTSUP).
    if (name.startsWith('system.posix_acl_')) throw fsError('ENOTSUP', 'POSIX ACLs are not supported', name);
    const key = xattrKey(ino, xattrName(name));
    if (value.length > xattrValueSizeMaxBytes) throw fsError('E2BIG', `xattr value is ${value.length} bytes`, name);
    this.noXattrs.delete(ino);
    this.commit(() => {
      const rec = this.inode(ino);
      const table = this.store.btree.table('xattr');
      const exists = table.get(key) !== undefined;
      if (exists && (flags & XATTR_CREATE) !== 0) throw fsError('EEXIST', 'xattr exists', name);
      if (!exists && (flags & XATTR_REPLACE) !== 0) throw fsError('ENODATA', 'no such xattr', name);
      table.putSync(key, Buffer.from(value));
      rec.ctimeNs = nowNs();
      this.putInode(ino, rec);
    });
  }

  /** Value of extended attribute `name` of `ino`, or ENODATA. */
  getxattr(ino: number, name: string): Buffer {
    const value = this.getxattrOrUndefined(ino, name);
    if (value === undefined) throw fsError('ENODATA', 'no such xattr', name);
    return value;
  }

  /** Value of extended attribute `name` of `ino`, or undefined when it has none of that name (ENOENT for a missing inode). */
  getxattrOrUndefined(ino: number, name: string): Buffer | undefined {
    const key = xattrKey(ino, xattrName(name));
    if (this.noXattrs.has(ino)) return undefined;
    const table = this.store.btree.table('xattr');
    const value = table.get(key);
    if (value !== undefined) return value; // freeInode deletes an inode's xattrs with it: a hit proves the inode exists
    this.inode(ino);
    if (this.hasNoXattrs(ino)) this.rememberNoXattrs(ino);
    return undefined;
  }

  /** Names of the extended attributes of `ino`. */
  listxattr(ino: number): string[] {
    if (this.noXattrs.has(ino)) return [];
    this.inode(ino);
    const names: string[] = [];
    for (const key of this.store.btree.table('xattr').getKeys(inoPrefixRange(ino))) names.push(direntKeyName(key).toString('utf8'));
    if (names.length === 0) this.rememberNoXattrs(ino);
    return names;
  }

  private hasNoXattrs(ino: number): boolean {
    for (const _ of this.store.btree.table('xattr').getKeys({ ...inoPrefixRange(ino), limit: 1 })) return false;
    return true;
  }

  private rememberNoXattrs(ino: number): void {
    if (this.noXattrs.size >= noXattrInodeCountMax) this.noXattrs.clear();
    this.noXattrs.add(ino);
  }

  /** Removes extended attribute `name` of `ino`, or ENODATA. */
  removexattr(ino: number, name: string): void {
    this.writable();
    const key = xattrKey(ino, xattrName(name));
    this.commit(() => {
      const rec = this.inode(ino);
      const table = this.store.btree.table('xattr');
      if (table.get(key) === undefined) throw fsError('ENODATA', 'no such xattr', name);
      table.removeSync(key);
      rec.ctimeNs = nowNs();
      this.putInode(ino, rec);
    });
  }

  /** Space figures of the disk that holds the store. */
  statfs(): { bsize: number; frsize: number; blocks: number; bfree: number; bavail: number; files: number; ffree: number; favail: number; namemax: number } {
    const s = statfsSync(this.store.dir);
    const scale = s.bsize / blockSizeBytes;
    return {
      bsize: blockSizeBytes,
      frsize: blockSizeBytes,
      blocks: Math.floor(s.blocks * scale),
      bfree: Math.floor(s.bfree * scale),
      bavail: Math.floor(s.bavail * scale),
      files: 2 ** 32,
      ffree: 2 ** 32 - this.store.inodeCountEstimate(),
      favail: 2 ** 32 - this.store.inodeCountEstimate(),
      namemax: nameLengthMaxBytes,
    };
  }

  // ---------------------------------------------------------------- open files and data

  /** Opens inode `ino`; returns a handle that keeps the inode alive until release. */
  open(ino: number): number {
    this.inode(ino);
    return this.addHandle(ino);
  }

  /**
   * Creates the regular file `name` in `parent` (mode: permission bits) and opens it: FUSE's
   * create. One transaction, as mknod; the new inode is not read back to open it.
   */
  create(ctx: Ctx, parent: number, name: string, mode: number): { attr: Attr; fh: number } {
    const attr = this.mknod(ctx, parent, name, S_IFREG | (mode & permissionBits));
    return { attr, fh: this.addHandle(attr.ino) };
  }

  private addHandle(ino: number): number {
    const fh = this.handleNext++;
    this.handles.set(fh, ino);
    this.openCounts.set(ino, (this.openCounts.get(ino) ?? 0) + 1);
    return fh;
  }

  /** The inode a handle refers to, or EBADF. */
  handleIno(fh: number): number {
    const ino = this.handles.get(fh);
    if (ino === undefined) throw fsError('EBADF', `no open handle ${fh}`);
    return ino;
  }

  /** Closes a handle: writes the file back, and frees it if it was unlinked and this was the last handle. */
  release(fh: number): void {
    const ino = this.handleIno(fh);
    this.handles.delete(fh);
    const count = (this.openCounts.get(ino) ?? 1) - 1;
    if (count > 0) {
      this.openCounts.set(ino, count);
      if (!this.readOnly) this.flushFile(ino);
      return;
    }
    this.openCounts.delete(ino);
    this.lastWriteMs.delete(ino);
    if (this.readOnly) return;
    // Only nlink is needed: a pending record carries the current one (putInode keeps it), so a
    // file closed after writing skips the LMDB read.
    const rec = this.pending.get(ino) ?? this.inodeOrUndefined(ino);
    if (rec !== undefined && rec.nlink === 0) {
      this.commit(() => this.freeInode(ino));
    } else if (this.cache.dirtyOf(ino).length > 0 || this.pending.has(ino)) {
      // Written back shortly, together with other files closed meanwhile: a burst of small
      // files then costs one log append and one transaction per batch instead of per file.
      this.closedDirty.add(ino);
      if (this.closedDirty.size >= closedWriteBackCountMax) this.writeBackClosed();
      else this.closedTimer ??= setTimeout(() => this.writeBackClosed(), closedWriteBackDelayMs);
    }
  }

  /** Writes back the files closed since the last such write-back (timer or batch size). */
  private writeBackClosed(): void {
    if (this.closedTimer !== undefined) clearTimeout(this.closedTimer);
    this.closedTimer = undefined;
    const inos = [...this.closedDirty];
    this.closedDirty.clear();
    if (inos.length === 0 || this.readOnly) return;
    try {
      this.writeBackFiles(inos);
    } catch (e) {
      process.emitWarning(`zippy-fs: write-back of ${inos.length} closed file(s) failed (their data stays in the cache, is retried every second and reported by fsync): ${String(e)}`);
    }
  }

  /** Reads up to `length` bytes at `offset`; holes read as zeros; short at end of file. */
  read(ino: number, offset: number, length: number): Buffer {
    if (length < 0) throw fsError('EINVAL', `bad read length ${length}`, `inode ${ino}`);
    const rec = this.inode(ino);
    const out = Buffer.allocUnsafe(Math.max(0, Math.min(length, rec.size - offset)));
    return out.subarray(0, this.readFrom(ino, rec, offset, out));
  }

  /** Reads up to `out.length` bytes at `offset` into `out`; returns the count (short at end of file). */
  readInto(ino: number, offset: number, out: Buffer): number {
    return this.readFrom(ino, this.inode(ino), offset, out);
  }

  private readFrom(ino: number, rec: InodeRecord, offset: number, out: Buffer): number {
    if (isDir(rec.mode)) throw fsError('EISDIR', 'read of a directory', `inode ${ino}`);
    if (offset < 0) throw fsError('EINVAL', `bad read offset ${offset}`, `inode ${ino}`);
    const end = Math.min(offset + out.length, rec.size);
    if (end <= offset) return 0;
    const direct = new DirectRun();
    const pending = this.pendingPlaces.get(ino);
    const small = out.length <= cacheAdmitReadBytesMax;
    for (let pos = offset; pos < end; ) {
      const blockIndex = Math.floor(pos / blockSizeBytes);
      const within = pos - blockIndex * blockSizeBytes;
      const count = Math.min(blockSizeBytes - within, end - pos);
      const at = pos - offset;
      pos += count;
      const cached = this.cache.get(ino, blockIndex);
      if (cached !== undefined) {
        out.set(count === blockSizeBytes ? cached.data : cached.data.subarray(within, within + count), at);
        continue;
      }
      const pendingLoc = pending?.places.get(blockIndex);
      const ptr = pendingLoc !== undefined ? placeOfPending(pendingLoc) : this.store.places.get(ino, blockIndex);
      if (ptr === undefined) {
        out.fill(0, at, at + count);
      } else if (count === blockSizeBytes && ptr.kind === blockPointerKind.segment) {
        // Whole uncached blocks are read in runs (readDirect).
        const loc = { segment: ptr.segment, offset: ptr.offset, lengthBytes: ptr.lengthBytes };
        if (!direct.extends(loc)) this.readDirect(ino, direct, small);
        direct.add(loc, blockIndex, out.subarray(at, at + blockSizeBytes));
      } else {
        const data = this.loadPointer(ino, blockIndex, ptr);
        this.cache.put(ino, blockIndex, data, false, true);
        data.copy(out, at, within, within + count);
      }
    }
    this.readDirect(ino, direct, small);
    this.cache.evictClean();
    return end - offset;
  }

  /**
   * Writes `data` at `offset` into the cache, or its whole blocks straight to the log when the
   * write is large and aligned (writeDirect); returns the byte count. Durable after fsync.
   */
  write(ctx: Ctx, ino: number, offset: number, data: Buffer): number {
    this.writable();
    const wholeBlockCount = offset % blockSizeBytes === 0 ? Math.floor(data.length / blockSizeBytes) : 0;
    const direct = wholeBlockCount >= this.directWriteBlockCountMin && !this.cache.hasDirty(ino);
    // A file is written either through the cache or straight to the log, never both at once.
    // (Before taking the pending record: the write-back ends it.)
    if (!direct && this.pendingPlaces.has(ino)) this.writeBackFiles([ino]);
    const rec = this.pendingInode(ino);
    if (!isReg(rec.mode)) throw fsError(isDir(rec.mode) ? 'EISDIR' : 'EINVAL', 'write to a non-regular file', `inode ${ino}`);
    const end = offset + data.length;
    if (offset < 0 || end > fileSizeMaxBytes) throw fsError('EFBIG', `write to ${end} beyond ${fileSizeMaxBytes}`, `inode ${ino}`);
    if (direct) {
      const directBytes = wholeBlockCount * blockSizeBytes;
      this.writeDirect(ctx, ino, rec, offset, data.subarray(0, directBytes));
      return directBytes === data.length ? data.length : directBytes + this.write(ctx, ino, offset + directBytes, data.subarray(directBytes));
    }
    // Whole-block writes skip reading the block, so whether the map holds it is asked once per
    // call, for the whole range (an append to a new file finds nothing there).
    let stored: ReadonlySet<number> | undefined;
    const isStored = (blockIndex: number): boolean => (stored ??= this.storedBlockIndexes(ino, Math.floor(offset / blockSizeBytes), Math.floor((end - 1) / blockSizeBytes))).has(blockIndex);
    for (let pos = offset; pos < end; ) {
      const blockIndex = Math.floor(pos / blockSizeBytes);
      const within = pos - blockIndex * blockSizeBytes;
      const count = Math.min(blockSizeBytes - within, end - pos);
      const entry = this.blockForWrite(ino, blockIndex, count === blockSizeBytes, isStored);
      data.copy(entry.data, within, pos - offset, pos - offset + count);
      this.cache.markDirty(entry);
      pos += count;
    }
    if (end > rec.size) rec.size = end;
    rec.mtimeNs = rec.ctimeNs = nowNs();
    if (this.openCounts.has(ino)) this.lastWriteMs.set(ino, Date.now());
    if (ctx.uid !== 0) rec.mode = clearSetId(rec.mode);
    if (this.cache.underPressure()) this.writeBackAll();
    this.cache.evictClean();
    return data.length;
  }

  /**
   * Writes whole blocks at a block-aligned `offset` of a file with no dirty cached blocks straight
   * from `data` to the log: no copy into the cache, no cache bookkeeping. Their places wait in
   * `pendingPlaces` (reads look there first) and reach the block map at write-back, in one
   * transaction with the file's size, like dirty cached blocks: at flush, fsync, release, the
   * timer, or once the file has directPendingBlockCountMax of them. Cached clean copies of those
   * blocks are dropped; all-zero blocks become holes.
   */
  private writeDirect(ctx: Ctx, ino: number, rec: InodeRecord, offset: number, data: Buffer): void {
    const first = offset / blockSizeBytes;
    const count = data.length / blockSizeBytes;
    const writes: BlockRecordInput[] = [];
    for (let i = 0; i < count; i++) {
      const payload = data.subarray(i * blockSizeBytes, (i + 1) * blockSizeBytes);
      this.cache.dropClean(ino, first + i);
      if (!isZero(payload)) writes.push({ ino, blockIndex: first + i, payload });
    }
    const locations = this.appendBlocks(writes);
    assert(locations.length === writes.length, `log returned ${locations.length} locations for ${writes.length} blocks`);
    let pending = this.pendingPlaces.get(ino);
    if (pending === undefined) this.pendingPlaces.set(ino, (pending = { places: new Map(), newCount: 0, committedSlots: Math.ceil(this.committedSize(ino) / blockSizeBytes) }));
    let w = 0;
    for (let i = 0; i < count; i++) {
      const blockIndex = first + i;
      const loc = w < writes.length && writes[w]!.blockIndex === blockIndex ? locations[w++]! : null;
      const before = pending.places.get(blockIndex);
      if (before === undefined) this.pendingPlaceCount++;
      // st_blocks counts a pending data block that the block map does not hold yet.
      const held = blockIndex < pending.committedSlots && this.store.places.get(ino, blockIndex) !== undefined;
      if (!held) pending.newCount += (loc === null ? 0 : 1) - (before === undefined || before === null ? 0 : 1);
      pending.places.set(blockIndex, loc);
    }
    const end = offset + data.length;
    if (end > rec.size) rec.size = end;
    rec.mtimeNs = rec.ctimeNs = nowNs();
    if (ctx.uid !== 0) rec.mode = clearSetId(rec.mode);
    if (this.openCounts.has(ino)) this.lastWriteMs.set(ino, Date.now());
    if (this.pendingPlaceCount >= pendingPlaceCountMax) this.writeBackAll();
    else if (pending.places.size >= directPendingBlockCountMax) this.writeBackFiles([ino]);
  }

  /** The size of `ino` as committed in the block map's transaction order (0 when it has no record). */
  private committedSize(ino: number): number {
    const value = this.store.btree.table('inode').get(inoKey(ino));
    return value === undefined ? 0 : decodeInode(value, `inode ${ino}`).size;
  }

  /** True while `ino` has data or attributes in memory that are not written back yet. */
  hasUnwrittenChanges(ino: number): boolean {
    return this.cache.hasDirty(ino) || this.pending.has(ino) || this.pendingPlaces.has(ino);
  }

  /**
   * Throws (once) the error of the last failed write-back of `ino`, if it has not succeeded since:
   * what close(2) reports (FUSE flush), since the write-back itself happens at release.
   */
  takeWriteBackFailure(ino: number): void {
    const failure = this.writeBackFailures.get(ino);
    if (failure === undefined) return;
    this.writeBackFailures.delete(ino);
    throw failure;
  }

  /** Writes the dirty blocks and pending attributes of `ino` to the store (no fsync). */
  flushFile(ino: number): void {
    this.writeBackFiles([ino]);
  }

  /**
   * Writes back the dirty blocks and pending attributes of `inos` (no fsync) with one log append
   * and one transaction for all of them. A failure is remembered for each file (flush reports
   * it, see takeWriteBackFailure) and thrown; the data stays dirty and is retried.
   */
  private writeBackFiles(inos: readonly number[]): void {
    try {
      this.writeBack(inos);
    } catch (e) {
      if (isFsError(e)) for (const ino of inos) this.writeBackFailures.set(ino, e);
      throw e;
    }
    for (const ino of inos) this.writeBackFailures.delete(ino);
  }

  private writeBack(inos: readonly number[]): void {
    // The records to append (payloads are the cache blocks themselves: the log writes them before
    // returning) and, index for index, their cache entries.
    const writes: BlockRecordInput[] = [];
    const written: CacheEntry[] = [];
    const files: { ino: number; entries: CacheEntry[]; rec: InodeRecord | undefined; writes: number[]; holes: CacheEntry[]; places: PendingPlaces | undefined }[] = [];
    for (const ino of inos) {
      const entries = this.cache.dirtyOf(ino);
      const rec = this.pending.get(ino);
      const places = this.pendingPlaces.get(ino);
      if (entries.length === 0 && rec === undefined && places === undefined) continue;
      const size = rec?.size ?? this.inode(ino).size;
      const file = { ino, entries, rec, writes: [] as number[], holes: [] as CacheEntry[], places };
      for (const entry of entries) {
        const validBytes = Math.min(blockSizeBytes, size - entry.blockIndex * blockSizeBytes);
        if (validBytes <= 0) continue;
        const payload = validBytes === blockSizeBytes ? entry.data : entry.data.subarray(0, validBytes);
        if (isZero(payload)) {
          file.holes.push(entry);
        } else {
          file.writes.push(writes.length);
          writes.push({ ino, blockIndex: entry.blockIndex, payload });
          written.push(entry);
        }
      }
      files.push(file);
    }
    if (files.length === 0) return;
    const locations = this.appendBlocks(writes);
    assert(locations.length === writes.length, `log returned ${locations.length} locations for ${writes.length} blocks`);
    this.commit(() => {
      for (const { ino, rec, writes: indexes, holes, places } of files) {
        const value = this.store.btree.table('inode').get(inoKey(ino));
        if (value === undefined) continue; // freed meanwhile: nothing to keep
        // No block is stored at or past the committed size (truncate frees them): blocks there are new.
        const slotsBelowSize = Math.ceil(decodeInode(value, `inode ${ino}`).size / blockSizeBytes);
        let added = 0;
        // Blocks already in the log first: a file has either these or dirty cached blocks.
        for (const [blockIndex, loc] of places?.places ?? []) {
          if (loc === null) added -= this.removeBlock(ino, blockIndex);
          else added += this.putBlock(ino, blockIndex, loc, blockIndex >= slotsBelowSize);
        }
        for (const i of indexes) {
          const blockIndex = writes[i]!.blockIndex;
          added += this.putBlock(ino, blockIndex, locations[i]!, blockIndex >= slotsBelowSize);
        }
        for (const hole of holes) added -= this.removeBlock(ino, hole.blockIndex);
        this.blockCountAdd(ino, added);
        // The pending record brings the new size and times; the count is the stored one, which
        // blockCountAdd has just set (the pending copy's may be older).
        if (rec !== undefined) this.store.btree.table('inode').putSync(inoKey(ino), encodeInode({ ...rec, blockCount: this.storedBlockCount(ino) }));
        this.notify(ino);
      }
    });
    for (const entry of written) this.cache.setStored(entry, true);
    for (const { ino, entries, holes } of files) {
      for (const hole of holes) this.cache.setStored(hole, false);
      for (const entry of entries) this.cache.markClean(entry);
      this.pending.delete(ino);
      this.dropPendingPlaces(ino);
    }
  }

  /**
   * Appends blocks to the log in slices of appendSliceBlockCount, so batch buffers stay at
   * 1 MiB: measured here, 32 MiB writeSync calls ran at 300–1,200 MB/s against about 3 GB/s
   * for 128 KiB–1 MiB ones.
   */
  private appendBlocks(writes: readonly BlockRecordInput[]): BlockLocation[] {
    if (writes.length <= appendSliceBlockCount) return this.store.log.append(writes);
    const locations: BlockLocation[] = [];
    for (let start = 0; start < writes.length; start += appendSliceBlockCount) {
      locations.push(...this.store.log.append(writes.slice(start, start + appendSliceBlockCount)));
    }
    return locations;
  }

  /** Forgets the pending places of `ino` (committed, or the file is gone). */
  private dropPendingPlaces(ino: number): void {
    const pending = this.pendingPlaces.get(ino);
    if (pending === undefined) return;
    this.pendingPlaceCount -= pending.places.size;
    this.pendingPlaces.delete(ino);
  }

  /** Writes back every dirty file (no fsync). */
  writeBackAll(): void {
    this.closedDirty.clear();
    const inos = new Set([...this.cache.dirtyFiles(), ...this.pending.keys(), ...this.pendingPlaces.keys()]);
    if (inos.size > 0) this.writeBackFiles([...inos]);
  }

  /** Makes file `ino` (or everything, without `ino`) durable: data first, then metadata. */
  async fsync(ino?: number): Promise<void> {
    if (this.readOnly) return;
    if (ino === undefined) {
      this.writeBackAll();
      this.lastWriteMs.clear();
    } else {
      this.flushFile(ino);
      this.lastWriteMs.delete(ino);
    }
    this.store.log.sync();
    await this.store.btree.sync();
    this.changedSinceSync = false;
  }

  /** Writes everything back, makes it durable, and stops the timer. The store stays open. */
  async close(): Promise<void> {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    if (this.closedTimer !== undefined) clearTimeout(this.closedTimer);
    this.closedTimer = undefined;
    await this.cleanPass;
    await this.fsync();
  }

  /** True while `ino` is open and was written within the last `withinMs`, and not fsynced since. */
  beingWritten(ino: number, withinMs: number): boolean {
    const at = this.lastWriteMs.get(ino);
    return at !== undefined && Date.now() - at < withinMs;
  }

  /** Drops clean cached blocks of `ino` and bumps nothing else (another version arrived). */
  invalidate(ino: number): void {
    this.cache.invalidateFile(ino);
  }

  /**
   * Replaces the whole content of regular file `ino` with `pointers` (index = block index;
   * undefined = hole) and sets its size and mtime, bumping the generation so caches above
   * notice; the sync layer installs another machine's version with it. One transaction.
   */
  replaceContent(ino: number, sizeBytes: number, mtimeNs: bigint, pointers: ReadonlyMap<number, BlockPointer>): void {
    this.writable();
    const current = this.inode(ino);
    if (!isReg(current.mode)) throw fsError('EINVAL', 'replaceContent of a non-regular file', `inode ${ino}`);
    this.flushFile(ino);
    this.commit(() => {
      const rec = this.inode(ino);
      let added = -this.freeBlocks(ino, 0);
      const table = this.store.btree.table('blockmap');
      for (const [blockIndex, ptr] of pointers) {
        assert(blockIndex * blockSizeBytes < sizeBytes, `block ${blockIndex} beyond size ${sizeBytes}`);
        table.putSync(blockKey(ino, blockIndex), encodeBlockPointer(ptr));
        if (ptr.kind === blockPointerKind.segment) this.store.usageAdd(ptr.segment, ptr.lengthBytes);
        added++;
      }
      this.store.places.forgetFrom(ino);
      this.blockCountAdd(ino, added);
      rec.size = sizeBytes;
      rec.mtimeNs = mtimeNs;
      rec.ctimeNs = nowNs();
      rec.generation++;
      this.putInode(ino, rec);
    });
    this.cache.dropFrom(ino, 0);
    for (const listener of this.replaceListeners) listener(ino);
  }

  // ---------------------------------------------------------------- internals: inodes

  private inode(ino: number): InodeRecord {
    const rec = this.inodeOrUndefined(ino);
    if (rec === undefined) throw fsError('ENOENT', 'no such inode', `inode ${ino}`);
    return rec;
  }

  /**
   * The inode's record: the pending one while the file has uncommitted writes, with the stored
   * block count (only blockCountAdd changes it, in the stored record), else the stored one.
   */
  private inodeOrUndefined(ino: number): InodeRecord | undefined {
    const pending = this.pending.get(ino);
    if (pending !== undefined) return { ...pending, blockCount: this.storedBlockCount(ino) };
    const value = readFast(this.store.btree.table('inode'), inoKey(ino));
    if (value === undefined) return undefined;
    const rec = decodeInode(value, `inode ${ino}`);
    if (rec.blockCount === blockCountUnknown) rec.blockCount = this.blockEntryCount(ino);
    return rec;
  }

  /** Attributes of `ino` whose record is `rec`, with its dirty blocks not yet in the block map. */
  private attrOf(ino: number, rec: InodeRecord): Attr {
    return toAttr(ino, rec, this.cache.newDirtyCountOf(ino) + (this.pendingPlaces.get(ino)?.newCount ?? 0));
  }

  /** The block count in the stored record of `ino` (0 when it has none yet); `value`: that record when already read. */
  private storedBlockCount(ino: number, value = readFast(this.store.btree.table('inode'), inoKey(ino))): number {
    if (value === undefined) return 0;
    const count = decodeInodeBlockCount(value, `inode ${ino}`);
    return count === blockCountUnknown ? this.blockEntryCount(ino) : count;
  }

  /**
   * Counts the block map entries of `ino`: only for a version-1 record, which carries no count
   * (a read-only open of a format-1 store; a writable open upgrades the store first).
   */
  private blockEntryCount(ino: number): number {
    let count = 0;
    for (const _ of this.store.btree.table('blockmap').getKeys(inoPrefixRange(ino))) count++;
    return count;
  }

  /**
   * Adds `delta` (may be negative) to the stored block count of `ino`, inside the transaction
   * that changed its block map by that much. The only writer of the count: putInode and
   * flushFile copy the stored value, so a record read earlier never brings back an old count.
   */
  private blockCountAdd(ino: number, delta: number): void {
    if (delta === 0) return;
    const table = this.store.btree.table('inode');
    const value = table.get(inoKey(ino));
    assert(value !== undefined, `block count change of ${delta} for missing inode ${ino}`);
    const rec = decodeInode(value, `inode ${ino}`);
    // A version-1 record has no count to add to: the entries as they are now are the count.
    const count = rec.blockCount === blockCountUnknown ? this.blockEntryCount(ino) : rec.blockCount + delta;
    assert(count >= 0, `block count of inode ${ino} would be ${count} (stored ${rec.blockCount}, change ${delta})`);
    table.putSync(inoKey(ino), encodeInode({ ...rec, blockCount: count }));
  }

  /** The mutable pending record of a file being written (created from the stored one). */
  private pendingInode(ino: number): InodeRecord {
    let rec = this.pending.get(ino);
    if (rec === undefined) {
      rec = this.inode(ino);
      this.pending.set(ino, rec);
    }
    return rec;
  }

  /**
   * Stores an inode record. While a file has writes in the cache, its pending record keeps the
   * new size and the stored one keeps the committed size, so a crash never shows a size whose
   * blocks were not written.
   */
  private putInode(ino: number, rec: InodeRecord): void {
    const table = this.store.btree.table('inode');
    // Only regular files have blocks, and only they become pending: other types skip the read.
    const committed = isReg(rec.mode) ? table.get(inoKey(ino)) : undefined;
    // The block count is blockCountAdd's: `rec` may have been read before the block map changed.
    if (committed !== undefined) rec.blockCount = this.storedBlockCount(ino, committed);
    let stored = rec;
    if (this.pending.has(ino)) {
      this.pending.set(ino, { ...rec });
      stored = { ...rec, size: committed === undefined ? 0 : decodeInode(committed, `inode ${ino}`).size };
    }
    table.putSync(inoKey(ino), encodeInode(stored));
    this.notify(ino);
  }

  private notify(ino: number): void {
    this.changedSinceSync = true;
    for (const listener of this.changeListeners) listener(ino);
  }

  private requireDir(ino: number): InodeRecord {
    const rec = this.inode(ino);
    if (!isDir(rec.mode)) throw fsError('ENOTDIR', 'not a directory', `inode ${ino}`);
    return rec;
  }

  private lookupIno(parent: number, name: string): number {
    const ino = this.lookupInoOrUndefined(parent, name);
    if (ino === undefined) throw fsError('ENOENT', 'no such file or directory', name);
    return ino;
  }

  /** The inode `name` in `parent` names, or undefined when `parent` (a directory) has no such entry. */
  private lookupInoOrUndefined(parent: number, name: string): number | undefined {
    if (name === '.') {
      this.requireDir(parent);
      return parent;
    }
    let nameBuf: Buffer;
    try {
      nameBuf = name === '..' ? dotdot : nameBytes(name);
    } catch (e) {
      this.requireDir(parent); // ENOTDIR / ENOENT of the parent take precedence, as before
      throw e;
    }
    // Only directories hold entries, so a hit proves `parent` is one: the parent's inode is
    // read (for ENOTDIR / ENOENT) only on a miss. This halves the LMDB reads of a lookup.
    const ino = this.direntGet(parent, nameBuf);
    if (ino === undefined) this.requireDir(parent);
    return ino;
  }

  private direntGet(parent: number, name: Buffer): number | undefined {
    const value = readFast(this.store.btree.table('dirent'), direntKey(parent, name));
    return value === undefined ? undefined : decodeDirent(value, `dirent ${parent}/${name.toString()}`).ino;
  }

  /** Adds a directory entry and, for names other than "..", its row in the reverse index. */
  private direntPut(parent: number, name: Buffer, ino: number, mode: number): void {
    this.store.btree.table('dirent').putSync(direntKey(parent, name), encodeDirent({ ino, type: (mode & S_IFMT) >> 12 }));
    if (!name.equals(dotdot)) this.store.btree.table('link').putSync(linkKey(ino, parent, name), Buffer.alloc(0));
  }

  /** Removes the entry `name` (naming `ino`) from `parent` and its reverse-index row. */
  private direntRemove(parent: number, name: Buffer, ino: number): void {
    this.pathCache.clear();
    this.store.btree.table('dirent').removeSync(direntKey(parent, name));
    this.store.btree.table('link').removeSync(linkKey(ino, parent, name));
  }

  private dirIsEmpty(ino: number): boolean {
    for (const key of this.store.btree.table('dirent').getKeys({ ...inoPrefixRange(ino), limit: 2 })) {
      if (!direntKeyName(key).equals(dotdot)) return false;
    }
    return true;
  }

  /** True when directory `ancestor` is `ino` or lies on the path from `ino` up to the root. */
  private isAncestor(ancestor: number, ino: number): boolean {
    let current = ino;
    for (let depth = 0; depth < treeDepthMax; depth++) {
      if (current === ancestor) return true;
      if (current === rootIno) return false;
      const parent = this.direntGet(current, dotdot);
      if (parent === undefined) throw fsError('CORRUPT', 'directory without ".."', `inode ${current}`);
      current = parent;
    }
    throw fsError('ELOOP', `directory deeper than ${treeDepthMax}`, `inode ${ino}`);
  }

  private createNode(ctx: Ctx, parent: number, name: string, mode: number, rdev: number, target: Buffer): Attr {
    this.writable();
    const nameBuf = nameBytes(name);
    const attr = this.commit(() => {
      const parentRec = this.requireDir(parent);
      if (this.direntGet(parent, nameBuf) !== undefined) throw fsError('EEXIST', 'name exists', name);
      const ino = this.store.allocateIno();
      const now = nowNs();
      const inheritGroup = (parentRec.mode & S_ISGID) !== 0;
      const dir = isDir(mode);
      const rec: InodeRecord = {
        mode: dir && inheritGroup ? mode | S_ISGID : mode,
        uid: ctx.uid,
        gid: inheritGroup ? parentRec.gid : ctx.gid,
        nlink: dir ? 2 : 1,
        rdev,
        size: isLnk(mode) ? target.length : 0,
        atimeNs: now,
        mtimeNs: now,
        ctimeNs: now,
        generation: 0,
        blockCount: 0,
        target,
      };
      this.putInode(ino, rec);
      this.direntPut(parent, nameBuf, ino, mode);
      if (dir) {
        this.direntPut(ino, dotdot, parent, S_IFDIR);
        parentRec.nlink++;
      }
      parentRec.mtimeNs = parentRec.ctimeNs = now;
      this.putInode(parent, parentRec);
      return this.attrOf(ino, rec);
    });
    this.rememberNoXattrs(attr.ino); // committed: a new inode has no xattrs
    return attr;
  }

  private checkSticky(ctx: Ctx, parentRec: InodeRecord, rec: InodeRecord, name: string): void {
    if ((parentRec.mode & S_ISVTX) === 0 || ctx.uid === 0) return;
    if (ctx.uid !== rec.uid && ctx.uid !== parentRec.uid) throw fsError('EPERM', 'sticky directory: not the owner', name);
  }

  private replaceTarget(ctx: Ctx, parent: number, parentRec: InodeRecord, name: Buffer, target: number, movingDir: boolean, now: bigint): void {
    const targetRec = this.inode(target);
    this.checkSticky(ctx, parentRec, targetRec, name.toString());
    if (isDir(targetRec.mode)) {
      if (!movingDir) throw fsError('EISDIR', 'cannot replace a directory with a non-directory', name.toString());
      if (!this.dirIsEmpty(target)) throw fsError('ENOTEMPTY', 'target directory not empty', name.toString());
      this.removeDir(parent, parentRec, name, target, targetRec);
      return;
    }
    if (movingDir) throw fsError('ENOTDIR', 'cannot replace a non-directory with a directory', name.toString());
    this.direntRemove(parent, name, target);
    this.dropLink(target, targetRec, now);
  }

  private removeDir(parent: number, parentRec: InodeRecord, name: Buffer, child: number, rec: InodeRecord): void {
    const dirents = this.store.btree.table('dirent');
    this.direntRemove(parent, name, child);
    dirents.removeSync(direntKey(child, dotdot));
    parentRec.nlink--;
    parentRec.mtimeNs = parentRec.ctimeNs = nowNs();
    this.putInode(parent, parentRec);
    rec.nlink = 0;
    if ((this.openCounts.get(child) ?? 0) > 0) {
      this.putInode(child, rec);
      this.store.btree.table('orphan').putSync(inoKey(child), Buffer.alloc(0));
    } else {
      this.freeInode(child);
    }
  }

  /** Drops one link of a non-directory; frees it when no link and no handle remain. */
  private dropLink(ino: number, rec: InodeRecord, now: bigint): void {
    rec.nlink--;
    rec.ctimeNs = now;
    if (rec.nlink > 0) {
      this.putInode(ino, rec);
    } else if ((this.openCounts.get(ino) ?? 0) > 0) {
      this.putInode(ino, rec);
      this.store.btree.table('orphan').putSync(inoKey(ino), Buffer.alloc(0));
    } else {
      this.freeInode(ino);
    }
  }

  /** Deletes an inode with all its blocks and xattrs (inside a transaction). */
  private freeInode(ino: number): void {
    this.noXattrs.delete(ino);
    this.freeBlocks(ino, 0);
    const xattrs = this.store.btree.table('xattr');
    for (const key of [...xattrs.getKeys(inoPrefixRange(ino))]) xattrs.removeSync(key);
    this.store.btree.table('inode').removeSync(inoKey(ino));
    this.store.btree.table('orphan').removeSync(inoKey(ino));
    this.pending.delete(ino);
    this.dropPendingPlaces(ino);
    this.cache.dropFrom(ino, 0);
    this.notify(ino);
  }

  /** Frees inodes left with nlink 0 by a process that died while they were open. */
  private freeOrphans(): void {
    const orphans = [...this.store.btree.table('orphan').getKeys({})];
    if (orphans.length === 0) return;
    this.commit(() => {
      for (const key of orphans) this.freeInode(key.readUInt32BE(0) * 2 ** 32 + key.readUInt32BE(4));
    });
  }

  // ---------------------------------------------------------------- internals: blocks

  /**
   * Reads the records of `run` (back to back in one segment) into their targets with one scatter
   * read, zero-filling past short payloads, and empties the run. For a small read (`small`), while
   * the cache has free room, the blocks are read into cache buffers and copied out (a re-read is
   * then a cache hit); otherwise they go straight into the targets, so a large read never churns
   * the cache (above a mount, the kernel's page cache keeps what large reads bring). When the read
   * fails, each block is read alone, so the error names the block it concerns.
   */
  private readDirect(ino: number, run: DirectRun, small: boolean): void {
    const count = run.locs.length;
    if (count === 0) return;
    const admit = small && this.cache.bytes + count * blockSizeBytes <= this.cache.capacityBytes;
    const buffers = admit ? run.targets.map(() => this.cache.take()) : run.targets;
    try {
      this.store.log.readRunInto(run.locs, run.locs.map(() => ino), run.blockIndexes, buffers);
    } catch (e) {
      if (admit) for (const b of buffers) this.cache.give(b);
      if (!isFsError(e)) throw e;
      run.targets.forEach((target, i) => {
        const blockIndex = run.blockIndexes[i]!;
        const data = this.loadPointer(ino, blockIndex, { kind: blockPointerKind.segment, ...run.locs[i]! });
        target.set(data);
        this.cache.give(data);
      });
      run.clear();
      return;
    }
    for (let i = 0; i < count; i++) {
      const data = buffers[i]!;
      data.fill(0, run.locs[i]!.lengthBytes);
      if (!admit) continue;
      this.cache.put(ino, run.blockIndexes[i]!, data, false, true);
      run.targets[i]!.set(data);
    }
    run.clear();
  }

  /**
   * Reads a block from the store into a cache buffer (cache.take(): put it into the cache or give
   * it back), or undefined for a hole.
   */
  private loadBlock(ino: number, blockIndex: number): Buffer | undefined {
    const ptr = this.store.places.get(ino, blockIndex);
    return ptr === undefined ? undefined : this.loadPointer(ino, blockIndex, ptr);
  }

  /** Reads the block `ptr` points at into a cache buffer (as loadBlock). */
  private loadPointer(ino: number, blockIndex: number, ptr: BlockPlace): Buffer {
    const data = this.cache.take();
    try {
      if (ptr.kind === blockPointerKind.segment) {
        this.store.log.readRunInto([{ segment: ptr.segment, offset: ptr.offset, lengthBytes: ptr.lengthBytes }], [ino], [blockIndex], [data]);
      } else {
        if (this.external === undefined) throw fsError('EIO', 'block lives in an archive but no archive reader is set', `inode ${ino} block ${blockIndex}`);
        const value = this.store.btree.table('blockmap').get(blockKey(ino, blockIndex));
        if (value === undefined) throw fsError('EIO', 'block pointer vanished while reading', `inode ${ino} block ${blockIndex}`);
        const payload = this.external.readBlock(decodeBlockPointer(value, `block ${ino}:${blockIndex}`), ino, blockIndex);
        assert(payload.length === ptr.lengthBytes, `block ${ino}:${blockIndex} payload ${payload.length} bytes, pointer says ${ptr.lengthBytes}`);
        payload.copy(data);
      }
    } catch (e) {
      this.cache.give(data);
      throw e;
    }
    data.fill(0, ptr.lengthBytes);
    return data;
  }

  /** The cache entry a write into block `blockIndex` goes to; `isStored` says whether the block map holds the block. */
  private blockForWrite(ino: number, blockIndex: number, whole: boolean, isStored: (blockIndex: number) => boolean): CacheEntry {
    const cached = this.cache.get(ino, blockIndex);
    if (cached !== undefined) return cached;
    // A whole-block write overwrites every byte right away, so its buffer need not be zeroed.
    if (whole) return this.cache.put(ino, blockIndex, this.cache.take(), true, isStored(blockIndex));
    const loaded = this.loadBlock(ino, blockIndex);
    return this.cache.put(ino, blockIndex, loaded ?? this.cache.take().fill(0), true, loaded !== undefined);
  }

  /** Indexes in [firstBlock, lastBlock] that the block map of `ino` holds. */
  private storedBlockIndexes(ino: number, firstBlock: number, lastBlock: number): Set<number> {
    const indexes = new Set<number>();
    for (const key of this.store.btree.table('blockmap').getKeys({ start: blockKey(ino, firstBlock), end: blockKey(ino, lastBlock + 1) })) indexes.add(blockKeyIndex(key));
    return indexes;
  }

  /**
   * Points block `blockIndex` at `loc`; returns the entries added (1, or 0 when it replaced one).
   * The caller passes it to blockCountAdd. `fresh` when no block can be stored there yet.
   */
  private putBlock(ino: number, blockIndex: number, loc: { segment: number; offset: number; lengthBytes: number }, fresh = false): number {
    const replaced = fresh ? 0 : this.removeBlock(ino, blockIndex);
    this.store.places.forget(ino, blockIndex);
    const ptr: BlockPointer = { kind: blockPointerKind.segment, lengthBytes: loc.lengthBytes, segment: loc.segment, offset: loc.offset, blockId: blockIdUnknown };
    this.store.btree.table('blockmap').putSync(blockKey(ino, blockIndex), encodeBlockPointer(ptr));
    this.store.usageAdd(loc.segment, loc.lengthBytes);
    return 1 - replaced;
  }

  /** Removes block `blockIndex` if stored; returns the entries removed (0 or 1). The caller passes it to blockCountAdd. */
  private removeBlock(ino: number, blockIndex: number): number {
    const table = this.store.btree.table('blockmap');
    const key = blockKey(ino, blockIndex);
    const old = table.get(key);
    if (old === undefined) return 0;
    const ptr = decodeBlockPlace(old, ino, blockIndex);
    if (ptr.kind === blockPointerKind.segment) this.store.usageRelease(ptr.segment, ptr.lengthBytes);
    this.store.places.forget(ino, blockIndex);
    table.removeSync(key);
    return 1;
  }

  /** Removes every block of `ino` from index `fromBlockIndex` on (inside a transaction); returns how many. */
  private freeBlocks(ino: number, fromBlockIndex: number): number {
    const table = this.store.btree.table('blockmap');
    const entries = [...table.getRange(inoPrefixRange(ino, fromBlockIndex))];
    this.store.places.forgetFrom(ino, fromBlockIndex);
    for (const { key, value } of entries) {
      const ptr = decodeBlockPlace(value, ino, blockKeyIndex(key));
      if (ptr.kind === blockPointerKind.segment) this.store.usageRelease(ptr.segment, ptr.lengthBytes);
      table.removeSync(key);
    }
    return entries.length;
  }

  /**
   * For a truncate to `size` inside a stored block: that block's kept bytes as the payload of
   * its new record, or no payload when they are all zeros (the block becomes a hole). The
   * stored block must never survive as it is: its bytes past `size` would reappear when the
   * file grows again.
   */
  private tailBlockAfterTruncate(ino: number, size: number): { blockIndex: number; payload: Buffer | undefined } | undefined {
    const within = size % blockSizeBytes;
    if (within === 0) return undefined;
    const blockIndex = Math.floor(size / blockSizeBytes);
    const data = this.loadBlock(ino, blockIndex);
    if (data === undefined) return undefined;
    const payload = data.subarray(0, within);
    const kept = isZero(payload) ? undefined : Buffer.from(payload);
    this.cache.give(data);
    return { blockIndex, payload: kept };
  }

  private zeroCachedTail(ino: number, size: number): void {
    const within = size % blockSizeBytes;
    if (within === 0) return;
    const entry = this.cache.get(ino, Math.floor(size / blockSizeBytes));
    entry?.data.fill(0, within);
  }

  // ---------------------------------------------------------------- internals: transactions

  private commit<T>(action: () => T): T {
    try {
      return this.store.transaction(action);
    } catch (e) {
      this.pathCache.clear(); // the rolled-back transaction may have added entries the cache saw
      throw e;
    }
  }

  private writable(): void {
    if (this.readOnly) throw fsError('EROFS', 'read-only file system');
  }

  /** Starts a cleaner pass when the last one is done and cleanIntervalMs has passed. */
  private maybeClean(): void {
    const now = Date.now();
    if (this.cleanPass !== undefined || now - this.lastCleanMs < cleanIntervalMs) return;
    this.lastCleanMs = now;
    this.cleanPass = cleanSegments(this.store)
      .then(() => undefined, (e: unknown) => process.emitWarning(`zippy-fs: segment cleaner failed: ${String(e)}`))
      .finally(() => {
        this.cleanPass = undefined;
      });
  }

  private onTimer(): void {
    try {
      this.writeBackAll();
      this.maybeClean();
      if (this.changedSinceSync) {
        this.changedSinceSync = false;
        this.store.log.sync();
        void this.store.btree.sync().catch((e: unknown) => process.emitWarning(`zippy-fs: background sync failed: ${String(e)}`));
      }
    } catch (e) {
      process.emitWarning(`zippy-fs: background write-back failed: ${String(e)}`);
    }
  }
}

/**
 * A value read without lmdb's copy (getBinaryFast): a view of lmdb's reused read buffer, valid
 * only until the next read of any table, so callers decode it at once and keep nothing of it
 * (decodeInode copies the symlink target). That buffer reports the value's size only through an
 * own `length` property; subarray(0, length) makes a view whose real length is the value's.
 * About half the cost of get() on the lookup path (one LMDB read of the dirent, one of the inode).
 */
function readFast(table: { getBinaryFast(key: Buffer): Buffer | undefined }, key: Buffer): Buffer | undefined {
  const value = table.getBinaryFast(key);
  return value === undefined ? undefined : value.subarray(0, value.length);
}

/** Whole blocks of one read request that lie back to back in one segment, read straight into the reply. */
class DirectRun {
  locs: BlockLocation[] = [];
  blockIndexes: number[] = [];
  targets: Buffer[] = [];

  /** True when `loc` continues the run on disk (or the run is empty). */
  extends(loc: BlockLocation): boolean {
    const last = this.locs[this.locs.length - 1];
    return last === undefined || (loc.segment === last.segment && loc.offset === last.offset + recordSizeBytes(last));
  }

  add(loc: BlockLocation, blockIndex: number, target: Buffer): void {
    this.locs.push(loc);
    this.blockIndexes.push(blockIndex);
    this.targets.push(target);
  }

  clear(): void {
    this.locs = [];
    this.blockIndexes = [];
    this.targets = [];
  }
}

/**
 * Whole blocks from which a block-aligned write to a file with no dirty cached blocks goes
 * straight to the log (writeDirect), by default: 64 KiB. Smaller writes gather in the cache and
 * reach the log in batches.
 */
const directWriteBlockCountMinDefault = 16;
/**
 * Largest read whose whole uncached blocks enter the block cache (while it has room): 64 KiB.
 * Larger reads stream straight into the caller's buffer. Filling the cache's fresh memory made the
 * first cold 1 MiB-request read through a mount about 20 % slower, and above a mount the kernel's
 * page cache already keeps what was read.
 */
const cacheAdmitReadBytesMax = 64 * 1024;
/** Pending places after which a file's direct writes are written back (8 MiB of blocks: one transaction each). */
const directPendingBlockCountMax = 2048;
/** Pending places of all files after which everything is written back. */
const pendingPlaceCountMax = 16_384;

/** A file's blocks written by writeDirect whose block-map entries are not committed yet. */
interface PendingPlaces {
  /** Block index → its record in the log, or null for a block of zeros (a hole). */
  readonly places: Map<number, BlockLocation | null>;
  /** Pending data blocks the block map does not hold (st_blocks counts them already). */
  newCount: number;
  /** Blocks below the committed size when the first of these was written (only those can be held). */
  readonly committedSlots: number;
}

function placeOfPending(loc: BlockLocation | null): BlockPlace | undefined {
  return loc === null ? undefined : { kind: blockPointerKind.segment, lengthBytes: loc.lengthBytes, segment: loc.segment, offset: loc.offset };
}

/** A file closed with dirty data is written back within this delay... */
const closedWriteBackDelayMs = 10;
/** ...or as soon as this many such files wait. */
const closedWriteBackCountMax = 256;

/** How often the write-back timer also runs the segment cleaner. */
const cleanIntervalMs = 30_000;

/** 512-byte sectors per stored block, for st_blocks. */
const sectorsPerBlock = blockSizeBytes / 512;

/**
 * Attributes as callers see them. st_blocks counts the blocks the file holds: its block map
 * entries (a short tail record occupies a whole block, as on ext4) and its dirty cached blocks
 * the block map does not hold yet (`newDirtyBlockCount`), so `du` sees written data at once.
 */
function toAttr(ino: number, rec: InodeRecord, newDirtyBlockCount: number): Attr {
  return {
    ino,
    mode: rec.mode,
    uid: rec.uid,
    gid: rec.gid,
    nlink: rec.nlink,
    rdev: rec.rdev,
    size: rec.size,
    blocks: sectorsPerBlock * (rec.blockCount + newDirtyBlockCount),
    atimeNs: rec.atimeNs,
    mtimeNs: rec.mtimeNs,
    ctimeNs: rec.ctimeNs,
    generation: rec.generation,
  };
}

function clearSetId(mode: number): number {
  let out = mode & ~S_ISUID;
  if ((mode & 0o010) !== 0) out &= ~S_ISGID; // setgid without group-exec means mandatory locking: kept
  return out;
}

function mayWrite(ctx: Ctx, rec: InodeRecord): boolean {
  if (ctx.uid === rec.uid) return (rec.mode & 0o200) !== 0;
  if (ctx.gid === rec.gid) return (rec.mode & 0o020) !== 0;
  return (rec.mode & 0o002) !== 0;
}

function xattrName(name: string): Buffer {
  const bytes = Buffer.from(name, 'utf8');
  if (bytes.length === 0 || bytes.length > xattrNameLengthMaxBytes) throw fsError('ERANGE', `xattr name is ${bytes.length} bytes`, name.slice(0, 64));
  return bytes;
}
