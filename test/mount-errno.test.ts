/**
 * Errors and open-file semantics through a real zippy-fs mount: failing calls return the
 * errno a kernel file system returns (checked beside a plain directory on the local disk where
 * it makes sense), EACCES for a non-root user under default_permissions, ownership of files a
 * non-root user creates, and unlink-while-open / rename-while-open as on ext4.
 *
 * The non-root checks run tools as nobody (setpriv); the mount uses -o allow_other so that
 * another user may enter it at all.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { mountSkipReason, mountZippy, tempDir, type TestMount } from './fixtures.js';

const skip = mountSkipReason();
const nobody = 65534;

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? String(e);
  }
  return 'ok';
}

/** Runs a python3 snippet as nobody; returns its stdout (errno names it prints). */
function asNobody(code: string, ...args: string[]): string {
  const result = spawnSync('setpriv', [`--reuid=${nobody}`, `--regid=${nobody}`, '--clear-groups', '/usr/bin/python3', '-c', code, ...args], { encoding: 'utf8', timeout: 30_000 });
  if (result.status !== 0) throw new Error(`as nobody: ${result.stderr}`);
  return result.stdout.trim();
}

const tryPy = (body: string): string => `
import errno, os, sys
try:
    ${body}
    print('ok')
except OSError as e:
    print(errno.errorcode[e.errno])
`;

describe('errno and open files on a zippy-fs mount', { skip }, () => {
  let m: TestMount;
  let plain: string;
  let p: string;

  before(async () => {
    m = await mountZippy({ options: ['allow_other'] });
    plain = tempDir('zippy-errno-');
    p = m.mountpoint;
  });

  after(async () => {
    await m?.cleanup();
    if (plain !== undefined) fs.rmSync(plain, { recursive: true, force: true });
  });

  test('ENOENT, EEXIST, ENOTEMPTY, EISDIR, ENOTDIR, ENAMETOOLONG, EINVAL, EPERM match a kernel file system', () => {
    const cases: [string, (root: string) => unknown][] = [
      ['stat missing', (r) => fs.statSync(join(r, 'missing'))],
      ['open missing', (r) => fs.openSync(join(r, 'missing/x'), 'r')],
      ['unlink missing', (r) => fs.unlinkSync(join(r, 'missing'))],
      ['rename missing', (r) => fs.renameSync(join(r, 'missing'), join(r, 'x'))],
      ['mkdir exists', (r) => fs.mkdirSync(join(r, 'dir'))],
      ['mkdir over file', (r) => fs.mkdirSync(join(r, 'file'))],
      ['create excl exists', (r) => fs.openSync(join(r, 'file'), 'wx')],
      ['link onto existing', (r) => fs.linkSync(join(r, 'file'), join(r, 'file2'))],
      ['symlink onto existing', (r) => fs.symlinkSync('x', join(r, 'dir'))],
      ['rmdir non-empty', (r) => fs.rmdirSync(join(r, 'dir'))],
      ['rename dir onto non-empty dir', (r) => fs.renameSync(join(r, 'empty'), join(r, 'dir'))],
      ['open dir for writing', (r) => fs.openSync(join(r, 'dir'), 'r+')],
      ['unlink dir', (r) => fs.unlinkSync(join(r, 'dir'))],
      ['rename file onto dir', (r) => fs.renameSync(join(r, 'file2'), join(r, 'empty'))],
      ['truncate dir', (r) => fs.truncateSync(join(r, 'dir'), 0)],
      ['rmdir file', (r) => fs.rmdirSync(join(r, 'file'))],
      ['path through file', (r) => fs.statSync(join(r, 'file', 'x'))],
      ['mkdir below file', (r) => fs.mkdirSync(join(r, 'file', 'x'))],
      ['rename dir onto file', (r) => fs.renameSync(join(r, 'empty'), join(r, 'file2'))],
      ['readdir file', (r) => fs.readdirSync(join(r, 'file'))],
      ['name of 256 bytes', (r) => fs.writeFileSync(join(r, 'n'.repeat(256)), 'x')],
      ['mkdir name of 256 bytes', (r) => fs.mkdirSync(join(r, 'n'.repeat(256)))],
      ['stat name of 256 bytes', (r) => fs.statSync(join(r, 'n'.repeat(256)))],
      ['rename to 256 bytes', (r) => fs.renameSync(join(r, 'file2'), join(r, 'é'.repeat(128)))],
      ['name of 255 bytes', (r) => fs.writeFileSync(join(r, 'n'.repeat(255)), 'x')],
      ['rename dir into itself', (r) => fs.renameSync(join(r, 'dir'), join(r, 'dir', 'sub', 'x'))],
      ['readlink of a file', (r) => fs.readlinkSync(join(r, 'file'))],
      ['hard link to dir', (r) => fs.linkSync(join(r, 'dir'), join(r, 'dirlink'))],
      ['rmdir dot', (r) => fs.rmdirSync(join(r, 'dir', '.'))],
    ];
    for (const root of [p, plain]) {
      fs.mkdirSync(join(root, 'dir'));
      fs.mkdirSync(join(root, 'dir', 'sub'));
      fs.mkdirSync(join(root, 'empty'));
      fs.writeFileSync(join(root, 'file'), 'x');
      fs.writeFileSync(join(root, 'file2'), 'y');
    }
    const mismatches: string[] = [];
    const seen = new Set<string>();
    for (const [what, fn] of cases) {
      const onMount = codeOf(() => fn(p));
      const onPlain = codeOf(() => fn(plain));
      seen.add(onMount);
      if (onMount !== onPlain) mismatches.push(`${what}: mount ${onMount}, ext4 ${onPlain}`);
    }
    assert.deepEqual(mismatches, []);
    for (const code of ['ENOENT', 'EEXIST', 'ENOTEMPTY', 'EISDIR', 'ENOTDIR', 'ENAMETOOLONG', 'EINVAL', 'EPERM']) assert.ok(seen.has(code), `no case returned ${code}`);
  });

  test('EXDEV: rename from the mount to another file system', () => {
    fs.writeFileSync(join(p, 'xdev'), 'x');
    assert.equal(codeOf(() => fs.renameSync(join(p, 'xdev'), join(plain, 'xdev'))), 'EXDEV');
    assert.equal(codeOf(() => fs.renameSync(join(plain, 'file'), join(p, 'xdev2'))), 'EXDEV');
    assert.equal(codeOf(() => fs.linkSync(join(p, 'xdev'), join(plain, 'xdev'))), 'EXDEV');
    assert.equal(fs.readFileSync(join(p, 'xdev'), 'utf8'), 'x');
  });

  test('EACCES for a non-root user under default_permissions; EPERM for chmod/chown of others\' files', () => {
    const secret = join(p, 'secret');
    fs.writeFileSync(secret, 'top secret');
    fs.chmodSync(secret, 0o600);
    const closed = join(p, 'closed');
    fs.mkdirSync(closed, 0o700);
    fs.writeFileSync(join(closed, 'inside'), 'x');
    const readonlyDir = join(p, 'rodir');
    fs.mkdirSync(readonlyDir, 0o755);
    const publicFile = join(p, 'public');
    fs.writeFileSync(publicFile, 'hello');
    fs.chmodSync(publicFile, 0o644);
    assert.equal(asNobody(tryPy('open(sys.argv[1]).read()'), secret), 'EACCES');
    assert.equal(asNobody(tryPy('open(sys.argv[1], "a").write("x")'), publicFile), 'EACCES');
    assert.equal(asNobody(tryPy('os.listdir(sys.argv[1])'), closed), 'EACCES');
    assert.equal(asNobody(tryPy('os.stat(sys.argv[1] + "/inside")'), closed), 'EACCES');
    assert.equal(asNobody(tryPy('open(sys.argv[1] + "/new", "w")'), readonlyDir), 'EACCES');
    assert.equal(asNobody(tryPy('os.mkdir(sys.argv[1] + "/new")'), readonlyDir), 'EACCES');
    assert.equal(asNobody(tryPy('os.unlink(sys.argv[1])'), publicFile), 'EACCES');
    assert.equal(asNobody(tryPy('os.chmod(sys.argv[1], 0o777)'), publicFile), 'EPERM');
    assert.equal(asNobody(tryPy('os.chown(sys.argv[1], 65534, 65534)'), publicFile), 'EPERM');
    assert.equal(asNobody(tryPy('open(sys.argv[1]).read()'), publicFile), 'ok');
    assert.equal(fs.readFileSync(publicFile, 'utf8'), 'hello');
  });

  test('a non-root user creating in a 0777 directory owns what it creates', () => {
    const shared = join(p, 'shared');
    fs.mkdirSync(shared);
    fs.chmodSync(shared, 0o777);
    assert.equal(asNobody(tryPy('open(sys.argv[1] + "/mine", "w").write("x"); os.mkdir(sys.argv[1] + "/mydir"); os.symlink("mine", sys.argv[1] + "/mylink")'), shared), 'ok');
    for (const name of ['mine', 'mydir', 'mylink']) {
      const st = fs.lstatSync(join(shared, name));
      assert.deepEqual([name, st.uid, st.gid], [name, nobody, nobody]);
    }
    assert.equal(asNobody(tryPy('os.chmod(sys.argv[1] + "/mine", 0o600)'), shared), 'ok');
    assert.equal(fs.statSync(join(shared, 'mine')).mode & 0o777, 0o600);
    // A setgid directory passes its group on.
    const sgid = join(p, 'sgid');
    fs.mkdirSync(sgid);
    fs.chownSync(sgid, 0, 4242);
    fs.chmodSync(sgid, 0o2777);
    assert.equal(asNobody(tryPy('open(sys.argv[1] + "/f", "w"); os.mkdir(sys.argv[1] + "/d")'), sgid), 'ok');
    assert.equal(fs.statSync(join(sgid, 'f')).gid, 4242);
    assert.equal(fs.statSync(join(sgid, 'd')).gid, 4242);
    assert.equal(fs.statSync(join(sgid, 'd')).mode & 0o2000, 0o2000);
    // Others may not remove it from a sticky directory.
    fs.chmodSync(shared, 0o1777);
    fs.writeFileSync(join(shared, 'roots'), 'x');
    assert.equal(asNobody(tryPy('os.unlink(sys.argv[1] + "/roots")'), shared), 'EPERM');
  });

  test('a non-root write clears setuid/setgid; utimensat: UTIME_NOW for writers, explicit times for the owner only', () => {
    const file = join(p, 'suid');
    fs.writeFileSync(file, 'x');
    fs.chmodSync(file, 0o6777);
    assert.equal(asNobody(tryPy('f = open(sys.argv[1], "a"); f.write("more"); f.close()'), file), 'ok');
    assert.equal(fs.statSync(file).mode & 0o7777, 0o0777);
    assert.equal(fs.readFileSync(file, 'utf8'), 'xmore');
    fs.utimesSync(file, 1_000_000_000, 1_000_000_000);
    assert.equal(asNobody(tryPy('os.utime(sys.argv[1], None)'), file), 'ok');
    assert.ok(fs.statSync(file).mtimeMs > Date.now() - 60_000, 'UTIME_NOW by a writer sets the time to now');
    assert.equal(asNobody(tryPy('os.utime(sys.argv[1], (1, 2))'), file), 'EPERM');
    fs.chmodSync(file, 0o644);
    assert.equal(asNobody(tryPy('os.utime(sys.argv[1], None)'), file), 'EACCES');
  });

  test('unlink while open: the open file keeps reading, writing and fstat; the name is gone', () => {
    const file = join(p, 'unlinked');
    fs.writeFileSync(file, 'hello world');
    const fd = fs.openSync(file, 'r+');
    try {
      fs.unlinkSync(file);
      assert.equal(codeOf(() => fs.statSync(file)), 'ENOENT');
      const buffer = Buffer.alloc(64);
      assert.equal(fs.readSync(fd, buffer, 0, 64, 0), 11);
      assert.equal(buffer.subarray(0, 11).toString(), 'hello world');
      assert.equal(fs.writeSync(fd, 'HELLO', 0), 5);
      fs.writeSync(fd, Buffer.alloc(100_000, 7), 0, 100_000, 50_000);
      const st = fs.fstatSync(fd);
      assert.equal(st.size, 150_000);
      assert.equal(st.nlink, 0);
      fs.ftruncateSync(fd, 5);
      assert.equal(fs.fstatSync(fd).size, 5);
      assert.equal(fs.readSync(fd, buffer, 0, 64, 0), 5);
      assert.equal(buffer.subarray(0, 5).toString(), 'HELLO');
      fs.fsyncSync(fd);
      fs.writeFileSync(file, 'new file, same name');
      assert.equal(fs.readSync(fd, buffer, 0, 64, 0), 5);
    } finally {
      fs.closeSync(fd);
    }
    assert.equal(fs.readFileSync(file, 'utf8'), 'new file, same name');
  });

  test('unlink while open leaves no trace in the directory (ext4: readdir, rmdir, fstat, fchmod)', () => {
    const dir = join(p, 'vanish');
    fs.mkdirSync(dir);
    fs.writeFileSync(join(dir, 'f'), 'x');
    fs.writeFileSync(join(dir, 'g'), 'y');
    fs.linkSync(join(dir, 'g'), join(p, 'g-link'));
    const fd = fs.openSync(join(dir, 'f'), 'r+');
    const fdLinked = fs.openSync(join(dir, 'g'), 'r');
    try {
      fs.unlinkSync(join(dir, 'f'));
      fs.unlinkSync(join(dir, 'g'));
      assert.deepEqual(fs.readdirSync(dir), []);
      assert.equal(fs.fstatSync(fd).nlink, 0);
      assert.equal(fs.fstatSync(fdLinked).nlink, 1);
      fs.fchmodSync(fd, 0o600);
      assert.equal(fs.fstatSync(fd).mode & 0o777, 0o600);
      fs.writeSync(fd, 'still writable', 0);
      const buffer = Buffer.alloc(32);
      assert.equal(buffer.subarray(0, fs.readSync(fd, buffer, 0, 32, 0)).toString(), 'still writable');
      fs.rmdirSync(dir);
    } finally {
      fs.closeSync(fd);
      fs.closeSync(fdLinked);
    }
    assert.equal(fs.readFileSync(join(p, 'g-link'), 'utf8'), 'y');
    fs.unlinkSync(join(p, 'g-link'));
  });

  test('rename while open: the open file follows its inode, reads and writes go on', () => {
    const a = join(p, 'ren-a');
    const b = join(p, 'ren-dir');
    fs.mkdirSync(b);
    fs.writeFileSync(a, 'first');
    const fd = fs.openSync(a, 'r+');
    try {
      fs.renameSync(a, join(b, 'moved'));
      fs.writeSync(fd, ' second', 5);
      assert.equal(fs.readFileSync(join(b, 'moved'), 'utf8'), 'first second');
      fs.writeFileSync(a, 'replacement');
      const buffer = Buffer.alloc(32);
      assert.equal(buffer.subarray(0, fs.readSync(fd, buffer, 0, 32, 0)).toString(), 'first second');
      fs.renameSync(a, join(b, 'moved'));
      assert.equal(buffer.subarray(0, fs.readSync(fd, buffer, 0, 32, 0)).toString(), 'first second');
      assert.equal(fs.fstatSync(fd).size, 12);
    } finally {
      fs.closeSync(fd);
    }
    assert.equal(fs.readFileSync(join(b, 'moved'), 'utf8'), 'replacement');
  });

  test('unmount is clean and the store checks clean', async () => {
    await m.unmount();
  });
});
