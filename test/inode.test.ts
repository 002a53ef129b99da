/**
 * Unit tests of the POSIX layer (src/inode) without FUSE: namespace operations, data at any
 * offset, holes, truncation, attributes, xattrs, unlink-while-open, errors, persistence.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openTestFs, type TestFs } from './fixtures.js';
import { rootCtx, rootIno, S_IFIFO, S_IFREG, S_ISGID, S_ISUID, XATTR_CREATE, XATTR_REPLACE, type Ctx } from '../src/inode/types.js';
import { isFsError } from '../src/errors.js';
import { inoKey, metaKeys } from '../src/btree/keys.js';
import { blockCountUnknown, decodeInode, decodeU64, encodeU64 } from '../src/btree/records.js';
import { checkStore } from '../src/inode/check.js';

const user: Ctx = { uid: 1000, gid: 1000, pid: 1 };

async function withFs(fn: (t: TestFs) => Promise<void> | void, options?: Parameters<typeof openTestFs>[0]): Promise<void> {
  const t = openTestFs(options);
  try {
    await fn(t);
  } finally {
    await t.cleanup();
  }
}

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (isFsError(e)) return e.code;
    throw e;
  }
  return 'ok';
}

test('create, write, read back, and reopen', () =>
  withFs(async (t) => {
    const a = t.fs.mknod(rootCtx, rootIno, 'a.txt', S_IFREG | 0o644);
    assert.equal(t.fs.write(rootCtx, a.ino, 0, Buffer.from('hello world')), 11);
    assert.equal(t.fs.read(a.ino, 0, 100).toString(), 'hello world');
    assert.equal(t.fs.read(a.ino, 6, 3).toString(), 'wor');
    await t.reopen();
    const ino = t.fs.resolve('/a.txt');
    assert.equal(ino, a.ino);
    assert.equal(t.fs.read(ino, 0, 100).toString(), 'hello world');
    assert.equal(t.fs.getattr(ino).size, 11);
  }));

test('writes at any offset leave holes that read as zeros', () =>
  withFs(async (t) => {
    const f = t.fs.mknod(rootCtx, rootIno, 'sparse', S_IFREG | 0o644);
    t.fs.write(rootCtx, f.ino, 10 * 4096 + 100, Buffer.from('x'));
    t.fs.flushFile(f.ino);
    assert.equal(t.fs.getattr(f.ino).size, 10 * 4096 + 101);
    const all = t.fs.read(f.ino, 0, 20 * 4096);
    assert.equal(all.length, 10 * 4096 + 101);
    assert.ok(all.subarray(0, 10 * 4096 + 100).every((b) => b === 0));
    assert.equal(all[10 * 4096 + 100], 'x'.charCodeAt(0));
    assert.equal([...t.store.btree.table('blockmap').getKeys({})].length, 1, 'only one block stored');
  }));

test('unaligned writes across block boundaries', () =>
  withFs(async (t) => {
    const f = t.fs.mknod(rootCtx, rootIno, 'f', S_IFREG | 0o644);
    const data = Buffer.alloc(3 * 4096 + 17);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7 + 3) & 0xff;
    t.fs.write(rootCtx, f.ino, 4000, data);
    await t.reopen();
    const back = t.fs.read(f.ino, 4000, data.length);
    assert.ok(back.equals(data));
    t.fs.write(rootCtx, f.ino, 4090, Buffer.from('ABCDEFGHIJ'));
    await t.reopen();
    assert.equal(t.fs.read(f.ino, 4090, 10).toString(), 'ABCDEFGHIJ');
    assert.equal(t.fs.read(f.ino, 4000, 90).compare(data.subarray(0, 90)), 0);
  }));

test('truncate down frees blocks and zeroes the tail; truncate up reads zeros', () =>
  withFs(async (t) => {
    const f = t.fs.mknod(rootCtx, rootIno, 'f', S_IFREG | 0o644);
    t.fs.write(rootCtx, f.ino, 0, Buffer.alloc(5 * 4096, 0x61));
    t.fs.truncate(rootCtx, f.ino, 4096 + 10);
    assert.equal(t.fs.getattr(f.ino).size, 4106);
    assert.equal([...t.store.btree.table('blockmap').getKeys({})].length, 2);
    t.fs.truncate(rootCtx, f.ino, 3 * 4096);
    const back = t.fs.read(f.ino, 0, 3 * 4096);
    assert.ok(back.subarray(0, 4106).every((b) => b === 0x61));
    assert.ok(back.subarray(4106).every((b) => b === 0));
    await t.reopen();
    assert.ok(t.fs.read(f.ino, 0, 3 * 4096).equals(back));
    t.fs.truncate(rootCtx, f.ino, 0);
    assert.equal([...t.store.btree.table('blockmap').getKeys({})].length, 0);
  }));

test('truncate inside a block whose kept part is zeros drops the stale tail for good', () =>
  withFs(async (t) => {
    const f = t.fs.mknod(rootCtx, rootIno, 'f', S_IFREG | 0o644);
    t.fs.write(rootCtx, f.ino, 3000, Buffer.alloc(1096, 0x5a)); // block 0: zeros, then data
    t.fs.flushFile(f.ino);
    t.fs.truncate(rootCtx, f.ino, 2993);
    t.fs.truncate(rootCtx, f.ino, 8192);
    await t.reopen(); // an empty cache: the block map alone decides
    assert.ok(t.fs.read(f.ino, 0, 8192).every((b) => b === 0), 'no byte of the cut tail comes back');
  }));

test('directories: mkdir, readdir, rmdir, nlink, errors', () =>
  withFs((t) => {
    const d = t.fs.mkdir(rootCtx, rootIno, 'd', 0o755);
    assert.equal(t.fs.getattr(rootIno).nlink, 3);
    t.fs.mkdir(rootCtx, d.ino, 'sub', 0o700);
    t.fs.mknod(rootCtx, d.ino, 'file', S_IFREG | 0o600);
    assert.equal(t.fs.getattr(d.ino).nlink, 3);
    assert.deepEqual(t.fs.readdir(d.ino).map((e) => e.name).sort(), ['file', 'sub']);
    assert.equal(code(() => t.fs.rmdir(rootCtx, rootIno, 'd')), 'ENOTEMPTY');
    assert.equal(code(() => t.fs.mkdir(rootCtx, rootIno, 'd', 0o755)), 'EEXIST');
    assert.equal(code(() => t.fs.unlink(rootCtx, rootIno, 'd')), 'EISDIR');
    assert.equal(code(() => t.fs.rmdir(rootCtx, d.ino, 'file')), 'ENOTDIR');
    assert.equal(code(() => t.fs.resolve('/d/file/x')), 'ENOTDIR');
    assert.equal(code(() => t.fs.resolve('/nope')), 'ENOENT');
    assert.equal(code(() => t.fs.mknod(rootCtx, rootIno, 'x'.repeat(256), S_IFREG)), 'ENAMETOOLONG');
    t.fs.unlink(rootCtx, d.ino, 'file');
    t.fs.rmdir(rootCtx, d.ino, 'sub');
    t.fs.rmdir(rootCtx, rootIno, 'd');
    assert.equal(t.fs.getattr(rootIno).nlink, 2);
    assert.deepEqual(t.fs.readdir(rootIno), []);
  }));

test('rename: files, directories, replacing targets, into own subtree', () =>
  withFs((t) => {
    const a = t.fs.mkdir(rootCtx, rootIno, 'a', 0o755);
    const b = t.fs.mkdir(rootCtx, rootIno, 'b', 0o755);
    const inner = t.fs.mkdir(rootCtx, a.ino, 'inner', 0o755);
    const f = t.fs.mknod(rootCtx, a.ino, 'f', S_IFREG | 0o644);
    t.fs.write(rootCtx, f.ino, 0, Buffer.from('data'));
    t.fs.rename(rootCtx, a.ino, 'f', b.ino, 'g');
    assert.equal(t.fs.resolve('/b/g'), f.ino);
    assert.equal(t.fs.read(f.ino, 0, 10).toString(), 'data');
    assert.equal(code(() => t.fs.rename(rootCtx, rootIno, 'a', inner.ino, 'x')), 'EINVAL');
    t.fs.rename(rootCtx, a.ino, 'inner', b.ino, 'inner2');
    assert.equal(t.fs.getattr(a.ino).nlink, 2);
    assert.equal(t.fs.getattr(b.ino).nlink, 3);
    assert.equal(t.fs.resolve('/b/inner2/..'), b.ino);
    const h = t.fs.mknod(rootCtx, b.ino, 'h', S_IFREG | 0o644);
    t.fs.rename(rootCtx, b.ino, 'h', b.ino, 'g');
    assert.equal(t.fs.resolve('/b/g'), h.ino);
    assert.equal(code(() => t.fs.getattr(f.ino)), 'ENOENT');
    assert.equal(code(() => t.fs.rename(rootCtx, b.ino, 'g', b.ino, 'inner2')), 'EISDIR');
    assert.equal(code(() => t.fs.rename(rootCtx, rootIno, 'a', b.ino, 'g')), 'ENOTDIR');
    t.fs.mkdir(rootCtx, b.ino, 'full', 0o755);
    t.fs.mknod(rootCtx, t.fs.resolve('/b/full'), 'x', S_IFREG);
    assert.equal(code(() => t.fs.rename(rootCtx, rootIno, 'a', b.ino, 'full')), 'ENOTEMPTY');
    t.fs.rename(rootCtx, b.ino, 'inner2', rootIno, 'a'); // replaces the empty dir a
    assert.equal(t.fs.resolve('/a'), inner.ino);
    assert.equal(t.fs.getattr(rootIno).nlink, 4);
  }));

test('hard links share the inode and count links', () =>
  withFs(async (t) => {
    const f = t.fs.mknod(rootCtx, rootIno, 'f', S_IFREG | 0o644);
    t.fs.write(rootCtx, f.ino, 0, Buffer.from('shared'));
    t.fs.link(rootCtx, f.ino, rootIno, 'g');
    assert.equal(t.fs.getattr(f.ino).nlink, 2);
    assert.equal(t.fs.resolve('/g'), f.ino);
    t.fs.unlink(rootCtx, rootIno, 'f');
    assert.equal(t.fs.getattr(f.ino).nlink, 1);
    await t.reopen();
    assert.equal(t.fs.read(t.fs.resolve('/g'), 0, 10).toString(), 'shared');
    const d = t.fs.mkdir(rootCtx, rootIno, 'd', 0o755);
    assert.equal(code(() => t.fs.link(rootCtx, d.ino, rootIno, 'd2')), 'EPERM');
  }));

test('symlinks and FIFOs', () =>
  withFs(async (t) => {
    const l = t.fs.symlink(user, rootIno, 'l', '../some/where');
    assert.equal(t.fs.readlink(l.ino), '../some/where');
    assert.equal(t.fs.getattr(l.ino).size, 13);
    assert.equal(t.fs.getattr(l.ino).uid, 1000);
    const p = t.fs.mknod(rootCtx, rootIno, 'pipe', S_IFIFO | 0o600);
    assert.equal(t.fs.getattr(p.ino).mode & 0o170000, S_IFIFO);
    await t.reopen();
    assert.equal(t.fs.readlink(t.fs.resolve('/l')), '../some/where');
  }));

test('unlinked files stay readable while open and are freed at release', () =>
  withFs(async (t) => {
    const f = t.fs.mknod(rootCtx, rootIno, 'f', S_IFREG | 0o644);
    const fh = t.fs.open(f.ino);
    t.fs.write(rootCtx, f.ino, 0, Buffer.alloc(10000, 1));
    t.fs.unlink(rootCtx, rootIno, 'f');
    assert.equal(code(() => t.fs.resolve('/f')), 'ENOENT');
    assert.equal(t.fs.read(f.ino, 0, 10000).length, 10000);
    t.fs.write(rootCtx, f.ino, 10000, Buffer.from('more'));
    t.check();
    t.fs.release(fh);
    assert.equal(code(() => t.fs.getattr(f.ino)), 'ENOENT');
    assert.equal([...t.store.btree.table('blockmap').getKeys({})].length, 0);
  }));

test('an unlinked open file left by a crash is freed at the next open', () =>
  withFs(async (t) => {
    const f = t.fs.mknod(rootCtx, rootIno, 'f', S_IFREG | 0o644);
    t.fs.open(f.ino);
    t.fs.write(rootCtx, f.ino, 0, Buffer.alloc(10000, 1));
    t.fs.flushFile(f.ino);
    t.fs.unlink(rootCtx, rootIno, 'f');
    await t.crashAndReopen();
    assert.equal(code(() => t.fs.getattr(f.ino)), 'ENOENT');
    assert.equal([...t.store.btree.table('orphan').getKeys({})].length, 0);
  }));

test('ownership, chmod, chown, setgid directories, setuid cleared by writes', () =>
  withFs((t) => {
    const d = t.fs.mkdir(rootCtx, rootIno, 'shared', 0o2775);
    t.fs.chown(rootCtx, d.ino, 0, 50);
    const f = t.fs.mknod(user, d.ino, 'f', S_IFREG | 0o644);
    assert.equal(f.uid, 1000);
    assert.equal(f.gid, 50, 'setgid directory passes its group on');
    const sub = t.fs.mkdir(user, d.ino, 'sub', 0o755);
    assert.ok((sub.mode & S_ISGID) !== 0, 'subdirectories inherit setgid');
    assert.equal(code(() => t.fs.chmod({ uid: 1001, gid: 1001, pid: 1 }, f.ino, 0o777)), 'EPERM');
    assert.equal(code(() => t.fs.chown(user, f.ino, 0, -1)), 'EPERM');
    t.fs.chmod(user, f.ino, 0o4755);
    assert.ok((t.fs.getattr(f.ino).mode & S_ISUID) !== 0);
    t.fs.write(user, f.ino, 0, Buffer.from('x'));
    assert.equal(t.fs.getattr(f.ino).mode & S_ISUID, 0, 'non-root write clears setuid');
    t.fs.chmod(rootCtx, f.ino, 0o4755);
    t.fs.chown(rootCtx, f.ino, 1001, -1);
    assert.equal(t.fs.getattr(f.ino).uid, 1001);
    assert.equal(t.fs.getattr(f.ino).mode & S_ISUID, 0, 'chown clears setuid');
  }));

test('utimens keeps nanoseconds and honours now/omit', () =>
  withFs(async (t) => {
    const f = t.fs.mknod(rootCtx, rootIno, 'f', S_IFREG | 0o644);
    const at = 1577934245123456789n;
    t.fs.utimens(rootCtx, f.ino, at, 'omit');
    const before = t.fs.getattr(f.ino);
    assert.equal(before.atimeNs, at);
    assert.equal(before.mtimeNs, f.mtimeNs);
    t.fs.utimens(rootCtx, f.ino, 'omit', at + 1n);
    await t.reopen();
    const after = t.fs.getattr(f.ino);
    assert.equal(after.atimeNs, at);
    assert.equal(after.mtimeNs, at + 1n);
    assert.equal(code(() => t.fs.utimens(user, f.ino, at, at)), 'EPERM');
  }));

test('extended attributes with create/replace flags', () =>
  withFs(async (t) => {
    const f = t.fs.mknod(rootCtx, rootIno, 'f', S_IFREG | 0o644);
    t.fs.setxattr(f.ino, 'user.a', Buffer.from('1'), 0);
    assert.equal(code(() => t.fs.setxattr(f.ino, 'user.a', Buffer.from('2'), XATTR_CREATE)), 'EEXIST');
    assert.equal(code(() => t.fs.setxattr(f.ino, 'user.b', Buffer.from('2'), XATTR_REPLACE)), 'ENODATA');
    t.fs.setxattr(f.ino, 'user.a', Buffer.from('3'), XATTR_REPLACE);
    t.fs.setxattr(f.ino, 'user.empty', Buffer.alloc(0), 0);
    await t.reopen();
    assert.equal(t.fs.getxattr(f.ino, 'user.a').toString(), '3');
    assert.equal(t.fs.getxattr(f.ino, 'user.empty').length, 0);
    assert.deepEqual(t.fs.listxattr(f.ino).sort(), ['user.a', 'user.empty']);
    t.fs.removexattr(f.ino, 'user.a');
    assert.equal(code(() => t.fs.getxattr(f.ino, 'user.a')), 'ENODATA');
    assert.equal(code(() => t.fs.removexattr(f.ino, 'user.a')), 'ENODATA');
    t.fs.unlink(rootCtx, rootIno, 'f');
    assert.equal([...t.store.btree.table('xattr').getKeys({})].length, 0);
  }));

test('xattr answers of inodes remembered without xattrs follow every change', () =>
  withFs(async (t) => {
    // Created here: remembered without xattrs. Read after a reopen: learned from a miss.
    const f = t.fs.create(rootCtx, rootIno, 'f', 0o644);
    assert.equal(t.fs.getxattrOrUndefined(f.attr.ino, 'security.capability'), undefined);
    assert.deepEqual(t.fs.listxattr(f.attr.ino), []);
    assert.equal(code(() => t.fs.setxattr(f.attr.ino, 'user.a', Buffer.from('1'), XATTR_REPLACE)), 'ENODATA');
    assert.equal(t.fs.getxattrOrUndefined(f.attr.ino, 'user.a'), undefined);
    t.fs.setxattr(f.attr.ino, 'user.a', Buffer.from('1'), 0);
    assert.equal(t.fs.getxattr(f.attr.ino, 'user.a').toString(), '1');
    assert.deepEqual(t.fs.listxattr(f.attr.ino), ['user.a']);
    t.fs.removexattr(f.attr.ino, 'user.a');
    assert.deepEqual(t.fs.listxattr(f.attr.ino), []);
    t.fs.setxattr(f.attr.ino, 'user.b', Buffer.from('2'), 0);
    assert.equal(t.fs.getxattr(f.attr.ino, 'user.b').toString(), '2');
    t.fs.release(f.fh);
    const g = t.fs.mknod(rootCtx, rootIno, 'g', S_IFREG | 0o644);
    await t.reopen();
    assert.equal(t.fs.getxattrOrUndefined(g.ino, 'user.x'), undefined); // learned: none
    t.fs.setxattr(g.ino, 'user.x', Buffer.from('x'), 0);
    assert.equal(t.fs.getxattr(g.ino, 'user.x').toString(), 'x');
    assert.equal(t.fs.getxattr(f.attr.ino, 'user.b').toString(), '2');
    // A freed inode is forgotten: its number answers ENOENT, not "no xattr".
    t.fs.unlink(rootCtx, rootIno, 'g');
    assert.equal(code(() => t.fs.getxattrOrUndefined(g.ino, 'user.x')), 'ENOENT');
    assert.equal(code(() => t.fs.listxattr(g.ino)), 'ENOENT');
    assert.equal(t.fs.lookupOrUndefined(rootIno, 'g'), undefined);
    assert.equal(t.fs.lookupOrUndefined(rootIno, 'f')?.ino, f.attr.ino);
    assert.equal(code(() => t.fs.lookupOrUndefined(f.attr.ino, 'x')), 'ENOTDIR');
  }));

test('a second process cannot open a locked store', () =>
  withFs(async (t) => {
    const { Store } = await import('../src/inode/store.js');
    const { writeFileSync } = await import('node:fs');
    const { join } = await import('node:path');
    // Our own lock is held by this process; simulate another live process by naming pid 1.
    writeFileSync(join(t.dir, 'LOCK'), '1\n');
    assert.throws(() => Store.open(t.dir), (e: unknown) => isFsError(e, 'LOCKED'));
    writeFileSync(join(t.dir, 'LOCK'), `${process.pid}\n`);
  }));

test('many files: 2,000 creates and lookups, then a clean check', () =>
  withFs(async (t) => {
    const d = t.fs.mkdir(rootCtx, rootIno, 'many', 0o755);
    for (let i = 0; i < 2000; i++) {
      const f = t.fs.mknod(rootCtx, d.ino, `file-${i}`, S_IFREG | 0o644);
      t.fs.write(rootCtx, f.ino, 0, Buffer.from(`content ${i}`));
      t.fs.release(t.fs.open(f.ino));
    }
    await t.reopen();
    assert.equal(t.fs.readdir(d.ino).length, 2000);
    for (let i = 0; i < 2000; i += 97) assert.equal(t.fs.read(t.fs.resolve(`/many/file-${i}`), 0, 100).toString(), `content ${i}`);
  }));

test('path resolution follows every rename, unlink and replaced target (path cache)', () =>
  withFs((t) => {
    const d = t.fs.mkdir(rootCtx, rootIno, 'd', 0o755);
    const sub = t.fs.mkdir(rootCtx, d.ino, 'sub', 0o755);
    const f = t.fs.mknod(rootCtx, sub.ino, 'f', S_IFREG | 0o644);
    const g = t.fs.mknod(rootCtx, rootIno, 'g', S_IFREG | 0o644);
    assert.equal(t.fs.resolve('/d/sub/f'), f.ino);
    assert.equal(t.fs.resolveParent('/d/sub/x').parent, sub.ino);
    t.fs.rename(rootCtx, rootIno, 'd', rootIno, 'e');
    assert.equal(code(() => t.fs.resolve('/d/sub/f')), 'ENOENT');
    assert.equal(code(() => t.fs.resolveParent('/d/sub/x')), 'ENOENT');
    assert.equal(t.fs.resolve('/e/sub/f'), f.ino);
    t.fs.rename(rootCtx, rootIno, 'g', sub.ino, 'f'); // replaces f
    assert.equal(t.fs.resolve('/e/sub/f'), g.ino);
    assert.equal(code(() => t.fs.resolve('/g')), 'ENOENT');
    t.fs.unlink(rootCtx, sub.ino, 'f');
    assert.equal(code(() => t.fs.resolve('/e/sub/f')), 'ENOENT');
    const again = t.fs.mknod(rootCtx, sub.ino, 'f', S_IFREG | 0o644);
    assert.equal(t.fs.resolve('/e/sub/f'), again.ino);
    assert.equal(code(() => t.fs.rmdir(rootCtx, rootIno, 'e')), 'ENOTEMPTY');
    assert.equal(t.fs.resolve('/e/sub'), sub.ino);
  }));

test('st_blocks counts the blocks a file holds, written back or still dirty, never its size', () =>
  withFs(async (t) => {
    const f = t.fs.mknod(rootCtx, rootIno, 'sparse', S_IFREG | 0o644);
    const blocks = (): number => t.fs.getattr(f.ino).blocks;
    const storedCount = (): number => decodeInode(t.store.btree.table('inode').get(inoKey(f.ino))!, 't').blockCount;
    const whole = (byte: number): Buffer => Buffer.alloc(4096, byte);
    t.fs.truncate(rootCtx, f.ino, 1024 ** 3);
    assert.equal(blocks(), 0);
    t.fs.write(rootCtx, f.ino, 5 * 4096, whole(1));
    t.fs.write(rootCtx, f.ino, 9 * 4096, Buffer.alloc(100, 2)); // a short tail record still takes a block
    assert.equal(blocks(), 2 * 8, 'dirty blocks count before write-back');
    assert.equal(storedCount(), 0);
    t.fs.flushFile(f.ino);
    assert.equal(blocks(), 2 * 8);
    assert.equal(storedCount(), 2);
    t.fs.write(rootCtx, f.ino, 5 * 4096, whole(3)); // overwrite of a cached stored block
    assert.equal(blocks(), 2 * 8);
    await t.reopen();
    t.fs.write(rootCtx, f.ino, 5 * 4096, whole(4)); // whole-block overwrite of a stored block not in the cache
    t.fs.write(rootCtx, f.ino, 6 * 4096, whole(5));
    assert.equal(blocks(), 3 * 8);
    t.fs.write(rootCtx, f.ino, 7 * 4096, whole(0)); // zeros into a hole: dirty now, a hole once written back
    assert.equal(blocks(), 4 * 8);
    t.fs.flushFile(f.ino);
    assert.equal(blocks(), 3 * 8);
    // Attribute changes while blocks are pending keep the count (the pending record is older).
    t.fs.write(rootCtx, f.ino, 20 * 4096, whole(6));
    t.fs.chmod(rootCtx, f.ino, 0o600);
    t.fs.utimens(rootCtx, f.ino, 'now', 'now');
    assert.equal(blocks(), 4 * 8);
    t.fs.flushFile(f.ino);
    assert.equal(storedCount(), 4);
    assert.equal(t.fs.truncate(rootCtx, f.ino, 6 * 4096 + 10).blocks, 2 * 8, 'truncate frees blocks 9 and 20, keeps the tail of 6');
    assert.equal(t.fs.truncate(rootCtx, f.ino, 6 * 4096).blocks, 8);
    assert.equal(t.fs.truncate(rootCtx, f.ino, 4096 + 1).blocks, 0);
    assert.equal(t.fs.getattr(t.fs.mkdir(rootCtx, rootIno, 'd', 0o755).ino).blocks, 0);
    assert.equal(t.fs.getattr(t.fs.symlink(rootCtx, rootIno, 'l', 'x'.repeat(600)).ino).blocks, 0);
    t.fs.write(rootCtx, f.ino, 0, whole(7));
    await t.reopen();
    assert.equal(blocks(), 8);
    assert.equal(storedCount(), 1);
  }));

test('a format-1 store (inode records without a block count) reads right and is upgraded at a writable open', () =>
  withFs(async (t) => {
    const f = t.fs.mknod(rootCtx, rootIno, 'f', S_IFREG | 0o644);
    t.fs.write(rootCtx, f.ino, 0, Buffer.alloc(3 * 4096, 1));
    const g = t.fs.mknod(rootCtx, rootIno, 'g', S_IFREG | 0o644);
    t.fs.write(rootCtx, g.ino, 4096, Buffer.alloc(10, 1));
    t.fs.symlink(rootCtx, rootIno, 'l', 'target');
    await t.fs.fsync();
    // Rewrite every record as version 1 (no count: 64 fixed bytes) and the store as format 1.
    const inodes = t.store.btree.table('inode');
    t.store.btree.transaction(() => {
      for (const { key, value } of [...inodes.getRange({})]) {
        const v1 = Buffer.concat([value.subarray(0, 64), value.subarray(72)]);
        v1[0] = 1;
        inodes.putSync(key, v1);
      }
      t.store.btree.table('meta').putSync(Buffer.from(metaKeys.formatVersion), encodeU64(1));
    });
    assert.equal(decodeInode(inodes.get(inoKey(f.ino))!, 't').blockCount, blockCountUnknown);
    assert.equal(t.fs.readlink(t.fs.resolve('/l')), 'target');
    assert.equal(t.fs.getattr(f.ino).blocks, 3 * 8, 'counted from the block map');
    assert.deepEqual(checkStore(t.store).problems, []);
    t.fs.write(rootCtx, g.ino, 0, Buffer.alloc(10, 2)); // a write on a version-1 record
    t.fs.flushFile(g.ino);
    assert.equal(decodeInode(inodes.get(inoKey(g.ino))!, 't').blockCount, 2);
    await t.reopen();
    const format = t.store.btree.table('meta').get(Buffer.from(metaKeys.formatVersion))!;
    assert.equal(decodeU64(format, 't'), 2);
    for (const { value } of t.store.btree.table('inode').getRange({})) assert.equal(value[0], 2, 'every record upgraded');
    assert.equal(decodeInode(t.store.btree.table('inode').get(inoKey(f.ino))!, 't').blockCount, 3);
    assert.equal(t.fs.getattr(g.ino).blocks, 2 * 8);
    assert.equal(t.fs.readlink(t.fs.resolve('/l')), 'target');
  }));

test('files closed with dirty data are written back together shortly after release (or at once when 256 wait)', () =>
  withFs(async (t) => {
    const blockmap = t.store.btree.table('blockmap');
    const storedBlocks = (ino: number): number => [...blockmap.getKeys({ start: inoKey(ino), end: inoKey(ino + 1) })].length;
    const closeWith = (name: string, data: string): number => {
      const ino = t.fs.mknod(rootCtx, rootIno, name, S_IFREG | 0o644).ino;
      const fh = t.fs.open(ino);
      t.fs.write(rootCtx, ino, 0, Buffer.from(data));
      t.fs.release(fh);
      return ino;
    };
    const a = closeWith('a', 'first');
    const b = closeWith('b', 'second');
    // Released but not yet written back: readable from the cache, not in the block map.
    assert.equal(t.fs.read(a, 0, 10).toString(), 'first');
    assert.equal(storedBlocks(a) + storedBlocks(b), 0);
    for (let i = 0; i < 100 && storedBlocks(a) + storedBlocks(b) < 2; i++) await new Promise((r) => setTimeout(r, 5));
    assert.equal(storedBlocks(a), 1);
    assert.equal(storedBlocks(b), 1);
    // A full batch is written back by the release that fills it, without waiting.
    const many = Array.from({ length: 256 }, (_, i) => closeWith(`m${i}`, `file ${i}`));
    assert.ok(many.every((ino) => storedBlocks(ino) === 1));
    assert.equal(t.fs.read(many[200]!, 0, 20).toString(), 'file 200');
  }));
