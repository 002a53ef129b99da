/**
 * Everyday tools on a real zippy-fs mount, each with checked results: cp -a, tar, git,
 * sqlite3, rsync, mv, ln, chmod/chown/touch, setfattr/getfattr, df; then persistence: the
 * whole tree, contents and metadata survive an unmount and a mount by a new process.
 *
 * Needs root and /dev/fuse, and the compiled mount (npm run build). One mount serves the
 * whole file; the store checker runs after each unmount.
 */
import assert from 'node:assert/strict';
import { chmodSync, lstatSync, mkdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { diffTrees, mountSkipReason, mountZippy, runTool, snapshotTree, tempDir, writeTestTree, XattrHelper, type TestMount, type TreeField } from './fixtures.js';

const skip = mountSkipReason();
const contentFields: TreeField[] = ['type', 'mode', 'size', 'sha256', 'target', 'mtimeNs'];
/** Kernel attribute cache timeout of the mount (bridge.ts): a hard link's other names show the new nlink after it. */

describe('everyday tools on a zippy-fs mount', { skip }, () => {
  let m: TestMount;
  let work: string;
  let src: string;
  let xattrs: XattrHelper;

  before(async () => {
    m = await mountZippy();
    work = tempDir('zippy-tools-');
    src = join(work, 'src');
    writeTestTree(src, 1200, 7);
    xattrs = new XattrHelper();
  });

  after(async () => {
    xattrs?.close();
    await m?.cleanup();
    if (work !== undefined) rmSync(work, { recursive: true, force: true });
  });

  test('cp -a of a 1,200-file tree in and out keeps contents, modes, times and links', async () => {
    const inMount = join(m.mountpoint, 'tree');
    const out = join(work, 'out');
    runTool('cp', ['-a', src, inMount]);
    runTool('cp', ['-a', inMount, out]);
    const a = snapshotTree(src);
    assert.ok([...a.values()].filter((e) => e.type === 'file').length >= 1000);
    assert.deepEqual(diffTrees(a, snapshotTree(inMount), contentFields), []);
    assert.deepEqual(diffTrees(a, snapshotTree(out), contentFields), []);
    // Link counts at once: all names of a file are one kernel inode.
    assert.deepEqual(diffTrees(a, snapshotTree(inMount), ['nlink']), []);
  });

  test('tar c / tar x round trip through the mount', () => {
    const tarInMount = join(m.mountpoint, 'src.tar');
    runTool('tar', ['--format=posix', '-cf', tarInMount, '-C', src, '.']);
    const untarred = join(m.mountpoint, 'untar');
    mkdirSync(untarred);
    runTool('tar', ['xf', tarInMount, '-C', untarred]);
    assert.deepEqual(diffTrees(snapshotTree(src), snapshotTree(untarred), contentFields), []);
    const outTar = join(work, 'from-mount.tar');
    runTool('tar', ['--format=posix', '-cf', outTar, '-C', untarred, '.']);
    const back = join(work, 'tar-back');
    mkdirSync(back);
    runTool('tar', ['xf', outTar, '-C', back]);
    assert.deepEqual(diffTrees(snapshotTree(src), snapshotTree(back), contentFields), []);
    assert.equal(runTool('tar', ['df', tarInMount, '-C', untarred]), '');
  });

  test('git init, add, commit, log, status on the mount', () => {
    const repo = join(m.mountpoint, 'repo');
    mkdirSync(repo);
    const env = { ...process.env, GIT_AUTHOR_NAME: 't', GIT_AUTHOR_EMAIL: 't@e', GIT_COMMITTER_NAME: 't', GIT_COMMITTER_EMAIL: 't@e', GIT_CONFIG_NOSYSTEM: '1', HOME: work };
    const git = (...args: string[]): string => runTool('git', ['-c', 'init.defaultBranch=main', '-c', 'safe.directory=*', ...args], { cwd: repo, env });
    git('init', '-q');
    runTool('cp', ['-a', join(src, 'd1'), join(repo, 'd1')]);
    writeFileSync(join(repo, 'README'), 'hello\n');
    git('add', '-A');
    git('commit', '-q', '-m', 'first');
    writeFileSync(join(repo, 'README'), 'hello again\n');
    git('commit', '-q', '-am', 'second');
    assert.deepEqual(git('log', '--format=%s').trim().split('\n'), ['second', 'first']);
    assert.equal(git('status', '--porcelain'), '');
    git('fsck', '--strict');
    git('gc', '-q');
    assert.equal(git('status', '--porcelain'), '');
    assert.equal(git('show', 'HEAD~1:README'), 'hello\n');
  });

  test('sqlite3: 10,000 inserts in transactions, integrity_check ok', () => {
    const db = join(m.mountpoint, 'db.sqlite');
    const script: string[] = ['CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, n INTEGER);', 'CREATE INDEX t_v ON t(v);'];
    for (let batch = 0; batch < 10; batch++) {
      script.push('BEGIN;');
      for (let i = 0; i < 1000; i++) {
        const id = batch * 1000 + i;
        script.push(`INSERT INTO t (id, v, n) VALUES (${id}, 'value-${(id * 7919) % 10007}-${'x'.repeat(id % 50)}', ${id * 3});`);
      }
      script.push('COMMIT;');
    }
    runTool('sqlite3', [db], { input: script.join('\n') });
    assert.equal(runTool('sqlite3', [db, 'PRAGMA integrity_check;']).trim(), 'ok');
    assert.equal(runTool('sqlite3', [db, 'SELECT count(*), sum(n) FROM t;']).trim(), `10000|${3 * (9999 * 10000) / 2}`);
    runTool('sqlite3', [db, 'PRAGMA journal_mode=WAL; DELETE FROM t WHERE id % 2 = 0; VACUUM;']);
    assert.equal(runTool('sqlite3', [db, 'PRAGMA integrity_check; SELECT count(*) FROM t;']).trim(), 'ok\n5000');
  });

  test('rsync -a into the mount, then a second rsync finds nothing to do', () => {
    const dest = join(m.mountpoint, 'rsynced');
    runTool('rsync', ['-a', '-H', `${src}/`, `${dest}/`]);
    assert.deepEqual(diffTrees(snapshotTree(src), snapshotTree(dest), contentFields), []);
    const again = runTool('rsync', ['-a', '-H', '-i', `${src}/`, `${dest}/`]);
    assert.equal(again, '', 'nothing left to transfer');
    runTool('rsync', ['-a', '-H', '--checksum', `${dest}/`, join(work, 'rsync-back/')]);
    assert.deepEqual(diffTrees(snapshotTree(src), snapshotTree(join(work, 'rsync-back')), contentFields), []);
  });

  test('mv of directories within and between directories', () => {
    const before = snapshotTree(join(m.mountpoint, 'tree'));
    mkdirSync(join(m.mountpoint, 'mvdest'));
    runTool('mv', [join(m.mountpoint, 'tree'), join(m.mountpoint, 'mvdest', 'moved')]);
    assert.throws(() => statSync(join(m.mountpoint, 'tree')), { code: 'ENOENT' });
    runTool('mv', [join(m.mountpoint, 'mvdest', 'moved', 'd1'), join(m.mountpoint, 'mvdest', 'd1-up')]);
    runTool('mv', [join(m.mountpoint, 'mvdest', 'd1-up'), join(m.mountpoint, 'mvdest', 'moved', 'd1')]);
    assert.deepEqual(diffTrees(before, snapshotTree(join(m.mountpoint, 'mvdest', 'moved')), contentFields), []);
    const dir = join(m.mountpoint, 'mvdest');
    assert.equal(statSync(dir).nlink, 3);
    runTool('mv', [join(dir, 'moved'), join(m.mountpoint, 'tree')]);
    assert.equal(statSync(dir).nlink, 2);
  });

  test('ln and ln -s', () => {
    const file = join(m.mountpoint, 'lnfile');
    writeFileSync(file, 'linked\n');
    runTool('ln', [file, join(m.mountpoint, 'lnhard')]);
    runTool('ln', ['-s', 'lnfile', join(m.mountpoint, 'lnsoft')]);
    runTool('ln', ['-s', '/does/not/exist', join(m.mountpoint, 'lndangling')]);
    const a = statSync(file);
    const b = statSync(join(m.mountpoint, 'lnhard'));
    assert.equal(a.ino, b.ino);
    assert.equal(a.nlink, 2);
    assert.equal(readlinkSync(join(m.mountpoint, 'lnsoft')), 'lnfile');
    assert.equal(readFileSync(join(m.mountpoint, 'lnsoft'), 'utf8'), 'linked\n');
    assert.equal(readlinkSync(join(m.mountpoint, 'lndangling')), '/does/not/exist');
    assert.equal(lstatSync(join(m.mountpoint, 'lnsoft')).size, 'lnfile'.length);
    runTool('sh', ['-c', 'echo changed > "$1"', 'sh', join(m.mountpoint, 'lnhard')]);
    assert.equal(runTool('cat', [file]), 'changed\n');
  });

  // Through libfuse's low-level API the kernel's inode is the file system's inode, so all names
  // of a file share one attribute and page cache (the high-level API gave each path its own).
  test('link() shows the new link count at once through the old name', () => {
    const a = join(m.mountpoint, 'count-a');
    writeFileSync(a, 'x');
    assert.equal(statSync(a).nlink, 1);
    runTool('ln', [a, join(m.mountpoint, 'count-b')]);
    assert.equal(statSync(a).nlink, 2);
  });

  test('a write through one hard link is visible at once through the other', () => {
    const a = join(m.mountpoint, 'coherent-a');
    const b = join(m.mountpoint, 'coherent-b');
    writeFileSync(a, 'linked\n');
    runTool('ln', [a, b]);
    assert.equal(readFileSync(a, 'utf8'), 'linked\n');
    writeFileSync(b, 'changed!\n');
    assert.equal(readFileSync(a, 'utf8'), 'changed!\n');
  });

  test('chmod, chown and touch -d with nanoseconds', () => {
    const file = join(m.mountpoint, 'attrs');
    writeFileSync(file, 'x');
    runTool('chmod', ['0640', file]);
    assert.equal(statSync(file).mode & 0o7777, 0o640);
    runTool('chmod', ['u+s,g+s,o+t', file]);
    assert.equal(statSync(file).mode & 0o7777, 0o7640);
    runTool('chown', ['1234:5678', file]);
    assert.deepEqual([statSync(file).uid, statSync(file).gid], [1234, 5678]);
    runTool('touch', ['-m', '-d', '2001-02-03 04:05:06.123456789 UTC', file]);
    runTool('touch', ['-a', '-d', '2002-03-04 05:06:07.987654321 UTC', file]);
    const st = statSync(file, { bigint: true });
    assert.equal(st.mtimeNs, BigInt(Date.UTC(2001, 1, 3, 4, 5, 6)) * 1_000_000n + 123_456_789n);
    assert.equal(st.atimeNs, BigInt(Date.UTC(2002, 2, 4, 5, 6, 7)) * 1_000_000n + 987_654_321n);
    assert.equal(runTool('stat', ['-c', '%y', file]).trim(), '2001-02-03 04:05:06.123456789 +0000');
    const dir = join(m.mountpoint, 'attrdir');
    mkdirSync(dir);
    runTool('chown', ['-R', '42:43', dir]);
    runTool('chmod', ['1777', dir]);
    assert.equal(statSync(dir).mode & 0o7777, 0o1777);
    assert.deepEqual([statSync(dir).uid, statSync(dir).gid], [42, 43]);
  });

  test('setfattr / getfattr', () => {
    const file = join(m.mountpoint, 'xattrs');
    writeFileSync(file, 'x');
    runTool('setfattr', ['-n', 'user.colour', '-v', 'blue', file]);
    runTool('setfattr', ['-n', 'user.bin', '-v', '0x00ff10', file]);
    runTool('setfattr', ['-n', 'user.empty', file]);
    const dumped = runTool('getfattr', ['-d', '-e', 'hex', '--absolute-names', file]);
    assert.match(dumped, /user\.bin=0x00ff10/);
    assert.match(dumped, /user\.colour=0x626c7565/);
    assert.equal(runTool('getfattr', ['--only-values', '-n', 'user.colour', '--absolute-names', file]), 'blue');
    runTool('setfattr', ['-x', 'user.colour', file]);
    assert.deepEqual(xattrs.list(file), { ok: true, value: ['user.bin', 'user.empty'] });
    assert.deepEqual(xattrs.get(file, 'user.colour'), { ok: false, code: 'ENODATA' });
    const dir = join(m.mountpoint, 'attrdir');
    runTool('setfattr', ['-n', 'user.onadir', '-v', 'yes', dir]);
    assert.equal(runTool('getfattr', ['--only-values', '-n', 'user.onadir', '--absolute-names', dir]), 'yes');
  });

  test('xattrs of new files: "none yet" answers never hide a later setfattr or removal', () => {
    // New inodes are remembered as having no xattrs (FileSystem.noXattrs); every write(2) asks
    // for security.capability. Each setfattr must end that, through any name of the inode.
    const file = join(m.mountpoint, 'fresh-xattrs');
    writeFileSync(file, 'first');
    writeFileSync(file, 'second write, another security.capability query');
    assert.deepEqual(xattrs.get(file, 'user.k'), { ok: false, code: 'ENODATA' });
    assert.deepEqual(xattrs.list(file), { ok: true, value: [] });
    runTool('setfattr', ['-n', 'user.k', '-v', 'one', file]);
    assert.equal(runTool('getfattr', ['--only-values', '-n', 'user.k', '--absolute-names', file]), 'one');
    assert.deepEqual(xattrs.list(file), { ok: true, value: ['user.k'] });
    runTool('setfattr', ['-x', 'user.k', file]);
    assert.deepEqual(xattrs.get(file, 'user.k'), { ok: false, code: 'ENODATA' });
    assert.deepEqual(xattrs.list(file), { ok: true, value: [] });
    runTool('setfattr', ['-n', 'user.k', '-v', 'two', file]);
    assert.equal(runTool('getfattr', ['--only-values', '-n', 'user.k', '--absolute-names', file]), 'two');
    // Through a second name of the same inode, and on a new directory and a new symlink's target.
    const other = join(m.mountpoint, 'fresh-xattrs-link');
    runTool('ln', [file, other]);
    runTool('setfattr', ['-n', 'user.via', '-v', 'link', other]);
    assert.deepEqual(xattrs.list(file), { ok: true, value: ['user.k', 'user.via'] });
    const dir = join(m.mountpoint, 'fresh-xattr-dir');
    mkdirSync(dir);
    assert.deepEqual(xattrs.get(dir, 'user.d'), { ok: false, code: 'ENODATA' });
    runTool('setfattr', ['-n', 'user.d', '-v', 'dir', dir]);
    assert.equal(runTool('getfattr', ['--only-values', '-n', 'user.d', '--absolute-names', dir]), 'dir');
    // A refused setfattr (replace of a missing name) changes nothing and is not cached wrongly.
    const untouched = join(m.mountpoint, 'fresh-xattrs-2');
    writeFileSync(untouched, 'x');
    const xattrReplace = 2; // XATTR_REPLACE
    assert.deepEqual(xattrs.set(untouched, 'user.no', Buffer.from('x'), xattrReplace), { ok: false, code: 'ENODATA' });
    assert.deepEqual(xattrs.list(untouched), { ok: true, value: [] });
    runTool('setfattr', ['-n', 'user.yes', '-v', 'y', untouched]);
    assert.deepEqual(xattrs.list(untouched), { ok: true, value: ['user.yes'] });
  });

  test('dd of 64 MiB in 1 MiB writes, sparse files, mkfifo', () => {
    const big = join(m.mountpoint, 'big');
    const plainBig = join(work, 'big');
    runTool('dd', ['if=/dev/urandom', `of=${plainBig}`, 'bs=1M', 'count=64', 'status=none']);
    runTool('dd', [`if=${plainBig}`, `of=${big}`, 'bs=1M', 'conv=fsync', 'status=none']);
    assert.equal(runTool('sha256sum', [big]).split(' ')[0], runTool('sha256sum', [plainBig]).split(' ')[0]);
    const sparse = join(m.mountpoint, 'sparse');
    runTool('truncate', ['-s', '1G', sparse]);
    runTool('dd', ['if=/dev/zero', `of=${sparse}`, 'bs=4096', 'count=1', 'seek=100000', 'conv=notrunc', 'status=none']);
    runTool('sh', ['-c', 'printf abc | dd of="$1" bs=1 seek=500000000 conv=notrunc status=none', 'sh', sparse]);
    assert.equal(statSync(sparse).size, 1024 ** 3);
    assert.equal(runTool('dd', [`if=${sparse}`, 'bs=1', 'skip=499999998', 'count=7', 'status=none']), '\0\0abc\0\0');
    const fifo = join(m.mountpoint, 'fifo');
    runTool('mkfifo', ['-m', '0620', fifo]);
    assert.ok(lstatSync(fifo).isFIFO());
    assert.equal(lstatSync(fifo).mode & 0o777, 0o620);
    assert.equal(runTool('sh', ['-c', 'echo through > "$1" & cat "$1"; wait', 'sh', fifo]), 'through\n');
    rmSync(big);
    rmSync(plainBig);
  });

  test('st_blocks of a sparse file counts only written blocks; truncate down gives them back; du agrees', () => {
    const sparse = join(m.mountpoint, 'sparse2');
    const seed = join(work, 'seed');
    writeFileSync(seed, Buffer.alloc(3 * 4096, 0x5a));
    const du = (): number => Number(runTool('du', ['-B1', sparse]).split('\t')[0]);
    runTool('truncate', ['-s', '1G', sparse]);
    assert.equal(statSync(sparse).blocks, 0);
    // Three 4 KiB blocks far apart, then 100 bytes into a fourth: each is one block (8 sectors).
    for (const seek of [10, 1000, 200_000]) runTool('dd', [`if=${seed}`, `of=${sparse}`, 'bs=4096', 'count=1', `seek=${seek}`, 'conv=notrunc', 'status=none']);
    runTool('dd', [`if=${seed}`, `of=${sparse}`, 'bs=100', 'count=1', `seek=${(50_000 * 4096) / 100}`, 'conv=notrunc', 'status=none']);
    assert.equal(statSync(sparse).size, 1024 ** 3);
    assert.equal(statSync(sparse).blocks, 4 * 8);
    assert.equal(du(), 4 * 4096);
    // Truncating below block 200,000 frees it (a hole punch at the end).
    runTool('truncate', ['-s', String(100_000 * 4096), sparse]);
    assert.equal(statSync(sparse).blocks, 3 * 8);
    assert.equal(du(), 3 * 4096);
    // Into the middle of block 1000: its kept bytes stay a (short) block; blocks past it go.
    runTool('truncate', ['-s', String(1000 * 4096 + 10), sparse]);
    assert.equal(statSync(sparse).blocks, 2 * 8);
    // A file just written by dd (no sync) shows its blocks at once, as on ext4.
    const fresh = join(m.mountpoint, 'fresh');
    runTool('dd', [`if=${seed}`, `of=${fresh}`, 'bs=4096', 'count=3', 'status=none']);
    assert.equal(Number(runTool('du', ['-B1', fresh]).split('\t')[0]), 3 * 4096);
    // Still open and written: the blocks in the cache count before any write-back.
    const open = runTool('python3', ['-c', 'import os,sys\nfd=os.open(sys.argv[1],os.O_WRONLY|os.O_CREAT)\nos.write(fd,b"q"*(5*4096+1))\nprint(os.fstat(fd).st_blocks)\nos.close(fd)', join(m.mountpoint, 'fresh-open')]);
    assert.equal(Number(open), 6 * 8);
    rmSync(fresh);
    rmSync(join(m.mountpoint, 'fresh-open'));
  });

  test('df and df -i report the mount', () => {
    const line = runTool('df', ['-P', '-B1', m.mountpoint]).trim().split('\n')[1]!;
    const [fsname, size, used, avail, , target] = line.split(/\s+/);
    assert.equal(fsname, 'zippy-fs');
    assert.equal(target, m.mountpoint);
    assert.ok(Number(size) > 0, line);
    assert.ok(Number(used) >= 0 && Number(avail) > 0, line);
    const inodes = runTool('df', ['-P', '-i', m.mountpoint]).trim().split('\n')[1]!.split(/\s+/);
    assert.ok(Number(inodes[2]) > 1000, `inodes used ${inodes[2]}`);
    const type = runTool('stat', ['-f', '-c', '%T', m.mountpoint]).trim();
    assert.match(type, /fuse/);
  });

  test('persistence: after unmount and a new mount process, tree, contents and metadata are identical', async () => {
    const fields: TreeField[] = ['type', 'mode', 'uid', 'gid', 'size', 'sha256', 'target', 'mtimeNs', 'nlink', 'xattrs'];
    const before = snapshotTree(m.mountpoint, { xattrs });
    const inoBefore = statSync(join(m.mountpoint, 'lnfile')).ino;
    const oldPid = m.pid;
    await m.unmount();
    await m.remount();
    assert.notEqual(m.pid, oldPid);
    const after = snapshotTree(m.mountpoint, { xattrs });
    assert.ok(before.size > 2000, `${before.size} entries`);
    assert.deepEqual(diffTrees(before, after, fields), []);
    assert.equal(statSync(join(m.mountpoint, 'lnhard')).ino, inoBefore);
    assert.equal(runTool('sqlite3', [join(m.mountpoint, 'db.sqlite'), 'PRAGMA integrity_check;']).trim(), 'ok');
    chmodSync(join(m.mountpoint, 'attrs'), 0o600);
    await m.unmount();
  });
});
