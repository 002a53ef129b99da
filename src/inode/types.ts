/**
 * Shared types of the POSIX layer: file attributes as callers see them, the calling user,
 * mode bits, and the wall clock in nanoseconds.
 */

export const S_IFMT = 0o170000;
export const S_IFSOCK = 0o140000;
export const S_IFLNK = 0o120000;
export const S_IFREG = 0o100000;
export const S_IFBLK = 0o060000;
export const S_IFDIR = 0o040000;
export const S_IFCHR = 0o020000;
export const S_IFIFO = 0o010000;
export const S_ISUID = 0o4000;
export const S_ISGID = 0o2000;
export const S_ISVTX = 0o1000;
export const permissionBits = 0o7777;

export const rootIno = 1;

/** Attributes of one inode, as getattr returns them. Times in ns since the epoch. */
export interface Attr {
  ino: number;
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  rdev: number;
  size: number;
  /** 512-byte units allocated, as st_blocks. */
  blocks: number;
  atimeNs: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
  /** Bumped when another machine's version replaced the content; the FUSE layer invalidates on change. */
  generation: number;
}

/** Who is calling: the FUSE request's uid, gid and pid (root for in-process callers). */
export interface Ctx {
  uid: number;
  gid: number;
  pid: number;
}

export const rootCtx: Ctx = { uid: 0, gid: 0, pid: 0 };

/** A time to set in utimens: a value in ns, "now", or "leave unchanged". */
export type TimeSpec = bigint | 'now' | 'omit';

/** One readdir entry. */
export interface DirEntry {
  name: string;
  ino: number;
  /** S_IFMT bits of the child. */
  typeBits: number;
}

/** Flags of setxattr (as in <sys/xattr.h>). */
export const XATTR_CREATE = 1;
export const XATTR_REPLACE = 2;

export function isDir(mode: number): boolean {
  return (mode & S_IFMT) === S_IFDIR;
}
export function isReg(mode: number): boolean {
  return (mode & S_IFMT) === S_IFREG;
}
export function isLnk(mode: number): boolean {
  return (mode & S_IFMT) === S_IFLNK;
}

/** The wall clock in ns since the epoch, with sub-millisecond resolution. */
export function nowNs(): bigint {
  return BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000)) * 1000n;
}
