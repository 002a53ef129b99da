/**
 * Path-based file system operations for the FUSE bridge: each method resolves the path and
 * calls the inode layer, returning a value or throwing FsError. No errno here (errno.ts) and
 * no binding details (bridge.ts), so these are testable and the bridge stays mechanical.
 */
import { constants } from 'node:fs';
import { fsError } from '../errors.js';
import type { FileSystem } from '../inode/fs.js';
import { S_IFREG, type Attr, type Ctx, type TimeSpec } from '../inode/types.js';

const R_OK = 4;
const W_OK = 2;
const X_OK = 1;
const O_ACCMODE = 3;
const O_TRUNC = constants.O_TRUNC ?? 0o1000;

export interface ReaddirResult {
  names: string[];
  stats: { ino: number; mode: number }[];
}

/** The names libfuse 2.9 gives open files it was asked to unlink (hide_node: ".fuse_hidden%08x%08x"). */
const hiddenNamePattern = /^\.fuse_hidden[0-9a-f]{16}$/;

export class PathOps {
  readonly fs: FileSystem;
  /** Hidden path (as libfuse names it) → inode of an unlinked file that is still open. */
  private readonly hidden = new Map<string, number>();

  constructor(fs: FileSystem) {
    this.fs = fs;
  }

  getattr(path: string): Attr {
    return this.forLibfuse(path, this.fs.getattr(this.ino(path)));
  }

  fgetattr(fd: number, path: string): Attr {
    return this.forLibfuse(path, this.fs.getattr(this.fs.handleIno(fd)));
  }

  /**
   * libfuse subtracts one from st_nlink of a hidden node, taking the hidden name for a link; here
   * it is none (see rename), so the count is raised by one for libfuse to give the true one back.
   */
  private forLibfuse(path: string, attr: Attr): Attr {
    return this.hidden.has(path) ? { ...attr, nlink: attr.nlink + 1 } : attr;
  }

  /** Checks `mode` (R_OK|W_OK|X_OK) against the caller; the kernel does most of this itself under default_permissions. */
  access(ctx: Ctx, path: string, mode: number): void {
    const attr = this.getattr(path);
    if (ctx.uid === 0) {
      if ((mode & X_OK) !== 0 && (attr.mode & 0o111) === 0 && (attr.mode & 0o170000) !== 0o040000) throw fsError('EACCES', 'not executable', path);
      return;
    }
    const bits = ctx.uid === attr.uid ? (attr.mode >> 6) & 7 : ctx.gid === attr.gid ? (attr.mode >> 3) & 7 : attr.mode & 7;
    const want = (mode & (R_OK | W_OK | X_OK));
    if ((bits & want) !== want) throw fsError('EACCES', 'permission denied', path);
  }

  /** Names and (ino, type) of a directory's entries, "." and ".." first. */
  readdir(path: string): ReaddirResult {
    const ino = this.ino(path);
    const entries = this.fs.readdir(ino);
    const names = ['.', '..'];
    const stats = [{ ino, mode: 0o040000 }, { ino: this.fs.resolve(parentOf(path)), mode: 0o040000 }];
    for (const entry of entries) {
      names.push(entry.name);
      stats.push({ ino: entry.ino, mode: entry.typeBits });
    }
    return { names, stats };
  }

  /** Creates and opens a regular file; returns the handle. */
  create(ctx: Ctx, path: string, mode: number): number {
    const { parent, name } = this.fs.resolveParent(path);
    const attr = this.fs.mknod(ctx, parent, name, S_IFREG | (mode & 0o7777));
    return this.fs.open(attr.ino);
  }

  mknod(ctx: Ctx, path: string, mode: number, dev: number): void {
    const { parent, name } = this.fs.resolveParent(path);
    this.fs.mknod(ctx, parent, name, mode, dev);
  }

  /** Opens a file; O_TRUNC truncates it. Returns the handle. */
  open(ctx: Ctx, path: string, flags: number): number {
    const ino = this.ino(path);
    if ((flags & O_TRUNC) !== 0 && (flags & O_ACCMODE) !== 0) this.fs.truncate(ctx, ino, 0);
    return this.fs.open(ino);
  }

  release(fd: number): void {
    this.fs.release(fd);
  }

  flush(fd: number): void {
    this.fs.flushFile(this.fs.handleIno(fd));
  }

  async fsync(fd: number): Promise<void> {
    await this.fs.fsync(this.fs.handleIno(fd));
  }

  /** Reads into `buffer` (up to its length) at `position`; returns the byte count. */
  read(fd: number, buffer: Buffer, length: number, position: number): number {
    const data = this.fs.read(this.fs.handleIno(fd), position, length);
    data.copy(buffer, 0);
    return data.length;
  }

  write(ctx: Ctx, fd: number, buffer: Buffer, length: number, position: number): number {
    return this.fs.write(ctx, this.fs.handleIno(fd), position, length === buffer.length ? buffer : buffer.subarray(0, length));
  }

  truncate(ctx: Ctx, path: string, size: number): void {
    this.fs.truncate(ctx, this.ino(path), size);
  }

  ftruncate(ctx: Ctx, fd: number, size: number): void {
    this.fs.truncate(ctx, this.fs.handleIno(fd), size);
  }

  mkdir(ctx: Ctx, path: string, mode: number): void {
    const { parent, name } = this.fs.resolveParent(path);
    this.fs.mkdir(ctx, parent, name, mode);
  }

  rmdir(ctx: Ctx, path: string): void {
    const { parent, name } = this.fs.resolveParent(path);
    this.fs.rmdir(ctx, parent, name);
  }

  unlink(ctx: Ctx, path: string): void {
    if (this.hidden.delete(path)) return; // libfuse drops a hidden name at the last release
    const { parent, name } = this.fs.resolveParent(path);
    this.fs.unlink(ctx, parent, name);
  }

  /**
   * Renames; a rename to a libfuse hidden name is an unlink. libfuse's high-level API does not
   * unlink a file that is still open: it renames it to `.fuse_hidden<16 hex>` and unlinks that
   * name at the last release. Stored as such, the name would show in readdir, keep rmdir failing
   * with ENOTEMPTY and be published to every peer. So the file is unlinked here at once, as on
   * ext4 (it lives on as an open orphan), and the hidden path only maps to its inode for the
   * path-based calls libfuse still makes with it (fchmod, fgetattr without a handle, the final
   * unlink).
   */
  rename(ctx: Ctx, src: string, dst: string): void {
    const from = this.fs.resolveParent(src);
    if (hiddenNamePattern.test(basenameOf(dst)) && !this.hidden.has(src)) {
      const ino = this.fs.resolve(src);
      this.fs.unlink(ctx, from.parent, from.name);
      this.hidden.set(dst, ino);
      return;
    }
    const to = this.fs.resolveParent(dst);
    this.fs.rename(ctx, from.parent, from.name, to.parent, to.name);
    this.moveHidden(src, dst);
  }

  /** After a directory rename, libfuse names the hidden files below it by their new paths. */
  private moveHidden(src: string, dst: string): void {
    const prefix = `${src}/`;
    for (const [path, ino] of [...this.hidden]) {
      if (!path.startsWith(prefix)) continue;
      this.hidden.delete(path);
      this.hidden.set(`${dst}/${path.slice(prefix.length)}`, ino);
    }
  }

  /** The inode of `path`: a hidden name (see rename) or a name in the tree. */
  private ino(path: string): number {
    return this.hidden.get(path) ?? this.fs.resolve(path);
  }

  link(ctx: Ctx, src: string, dst: string): void {
    const ino = this.ino(src);
    const { parent, name } = this.fs.resolveParent(dst);
    this.fs.link(ctx, ino, parent, name);
  }

  symlink(ctx: Ctx, target: string, path: string): void {
    const { parent, name } = this.fs.resolveParent(path);
    this.fs.symlink(ctx, parent, name, target);
  }

  readlink(path: string): string {
    return this.fs.readlink(this.ino(path));
  }

  chmod(ctx: Ctx, path: string, mode: number): void {
    this.fs.chmod(ctx, this.ino(path), mode);
  }

  chown(ctx: Ctx, path: string, uid: number, gid: number): void {
    this.fs.chown(ctx, this.ino(path), uid === 0xffffffff ? -1 : uid, gid === 0xffffffff ? -1 : gid);
  }

  utimens(ctx: Ctx, path: string, atime: TimeSpec, mtime: TimeSpec): void {
    this.fs.utimens(ctx, this.ino(path), atime, mtime);
  }

  setxattr(path: string, name: string, value: Buffer, flags: number): void {
    this.fs.setxattr(this.ino(path), name, value, flags);
  }

  getxattr(path: string, name: string): Buffer {
    return this.fs.getxattr(this.ino(path), name);
  }

  listxattr(path: string): string[] {
    return this.fs.listxattr(this.ino(path));
  }

  removexattr(path: string, name: string): void {
    this.fs.removexattr(this.ino(path), name);
  }

  statfs(): ReturnType<FileSystem['statfs']> {
    return this.fs.statfs();
  }
}

function basenameOf(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

function parentOf(path: string): string {
  const index = path.lastIndexOf('/');
  return index <= 0 ? '/' : path.slice(0, index);
}
