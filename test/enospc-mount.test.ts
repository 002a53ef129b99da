/**
 * Full disk through a real mount: the store and the sync dir live on a 16 MiB tmpfs. Writing
 * until it is full must fail with ENOSPC (never EIO), leave every acknowledged file intact and
 * readable, keep the mount serving reads, and once space comes back — first by deleting files in
 * the mount, then, if the store has not given space back, by growing the tmpfs — writes work
 * again without a restart. The store checks clean after unmount.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { isFsError } from '../src/errors.js';
import { checkStore } from '../src/inode/check.js';
import { FileSystem } from '../src/inode/fs.js';
import { Store } from '../src/inode/store.js';
import { rootCtx, rootIno, S_IFREG } from '../src/inode/types.js';
import { mountSkipReason, mountZippy, seededRandom, tempDir, type TestMount } from './fixtures.js';

const skip = mountSkipReason();
let tmpfsDir: string | undefined;
let m: TestMount | undefined;

before(() => {
  if (skip !== false) return;
  tmpfsDir = tempDir('zippy-enospc-');
  const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=16m', 'tmpfs', tmpfsDir], { encoding: 'utf8' });
  if (mounted.status !== 0) throw new Error(`mount tmpfs: ${mounted.stderr}`);
});

after(async () => {
  await m?.cleanup();
  if (tmpfsDir !== undefined) {
    spawnSync('umount', ['-l', tmpfsDir]);
    fs.rmSync(tmpfsDir, { recursive: true, force: true });
  }
});

function sha(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Writes `data` to `path` with write, fsync and close; returns the errno code of the first failure, or 'ok'. */
function writeFsynced(path: string, data: Buffer, chunkBytes = 256 * 1024): string {
  let fd: number | undefined;
  try {
    fd = fs.openSync(path, 'w');
    for (let at = 0; at < data.length; at += chunkBytes) fs.writeSync(fd, data, at, Math.min(chunkBytes, data.length - at));
    fs.fsyncSync(fd);
    const closing = fd;
    fd = undefined;
    fs.closeSync(closing);
    return 'ok';
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? String(e);
  } finally {
    if (fd !== undefined) {
      try {
        fs.closeSync(fd);
      } catch {
        // The close of a file whose write-back failed reports the same error again.
      }
    }
  }
}

test('full disk: ENOSPC, acknowledged data intact and readable, writes work again once space is back', { skip, timeout: 120_000 }, async (t) => {
  const rand = seededRandom(8);
  const randomData = (length: number): Buffer => {
    const data = Buffer.alloc(length);
    for (let at = 0; at + 4 <= length; at += 4) data.writeUInt32LE(rand.int(0x100000000), at);
    return data;
  };
  m = await mountZippy({ storeDir: join(tmpfsDir!, 'store'), syncDir: join(tmpfsDir!, 'sync') });
  const p = m.mountpoint;
  // 1. Acknowledged files.
  const acknowledged = new Map<string, string>();
  for (let i = 0; i < 8; i++) {
    const data = randomData(100_000 + rand.int(200_000));
    assert.equal(writeFsynced(join(p, `keep${i}`), data), 'ok');
    acknowledged.set(`keep${i}`, sha(data));
  }
  // 2. Fill the disk: the first failure must be ENOSPC.
  const failures: string[] = [];
  for (let i = 0; i < 40 && failures.length < 3; i++) {
    const outcome = writeFsynced(join(p, `fill${i}`), randomData(1024 * 1024));
    if (outcome !== 'ok') failures.push(outcome);
  }
  assert.ok(failures.length > 0, 'a 16 MiB file system never filled up');
  assert.deepEqual([...new Set(failures)], ['ENOSPC'], `failures while filling: ${failures.join(', ')}\n${m.logs().slice(-2000)}`);
  const usage = (): string => ['store', 'sync'].map((d) => `${d} ${spawnSync('du', ['-sh', join(tmpfsDir!, d)], { encoding: 'utf8' }).stdout.split('\t')[0]}`).join(', ');
  const usageAtFull = usage();
  // 3. Acknowledged data is intact and the mount keeps serving reads.
  for (const [name, digest] of acknowledged) assert.equal(sha(fs.readFileSync(join(p, name))), digest, `${name} after ENOSPC`);
  assert.ok(fs.readdirSync(p).length >= acknowledged.size);
  // 4. Free space by deleting the fill files; does the store give the space back?
  for (const name of fs.readdirSync(p)) if (name.startsWith('fill')) fs.unlinkSync(join(p, name));
  await new Promise((resolvePromise) => setTimeout(resolvePromise, 3000));
  const afterDelete = writeFsynced(join(p, 'again0'), randomData(2 * 1024 * 1024));
  const usageAfterDelete = usage();
  let grew = false;
  if (afterDelete !== 'ok') {
    assert.equal(afterDelete, 'ENOSPC', `after deleting: ${afterDelete}`);
    const remounted = spawnSync('mount', ['-o', 'remount,size=64m', tmpfsDir!], { encoding: 'utf8' });
    assert.equal(remounted.status, 0, remounted.stderr);
    grew = true;
  }
  // 5. Writes work again without a restart.
  const again = randomData(2 * 1024 * 1024);
  assert.equal(writeFsynced(join(p, 'again1'), again), 'ok', m.logs().slice(-2000));
  assert.equal(sha(fs.readFileSync(join(p, 'again1'))), sha(again));
  for (const [name, digest] of acknowledged) assert.equal(sha(fs.readFileSync(join(p, name))), digest, `${name} after space came back`);
  t.diagnostic(`full: ${usageAtFull}; after deleting the fill files: ${usageAfterDelete}; ${grew ? 'deleting files did not give space back; writes worked again after growing the tmpfs' : 'deleting files gave space back; writes worked again'}`);
  await m.unmount();
});

// Regression: an LMDB commit that hits a full disk threw a plain Error with the numeric code 28,
// which the FUSE edge turned into EIO; src/btree/db.ts now reports it as FsError ENOSPC.
test('full disk: a metadata commit that cannot write its pages is ENOSPC, and the store stays consistent', { skip }, async () => {
  const dir = tempDir('zippy-enospc-meta-');
  const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', dir], { encoding: 'utf8' });
  assert.equal(mounted.status, 0, mounted.stderr);
  try {
    const store = Store.open(join(dir, 'store'));
    // Every write goes through the cache, so the failure comes from the write-back (a large
    // aligned write going straight to the log fails in write() itself).
    const fsys = new FileSystem(store, { writebackDelayMs: 0, directWriteBlockCountMin: Number.MAX_SAFE_INTEGER });
    const codeOf = (fn: () => unknown): string => {
      try {
        fn();
        return 'ok';
      } catch (e) {
        assert.ok(isFsError(e), `not an FsError: ${String(e)}`);
        return e.code;
      }
    };
    const big = fsys.mknod(rootCtx, rootIno, 'big', S_IFREG | 0o644);
    let dataCode = 'ok';
    for (let at = 0; dataCode === 'ok' && at < 64 * 1024 * 1024; at += 65536) {
      dataCode = codeOf(() => {
        fsys.write(rootCtx, big.ino, at, Buffer.alloc(65536, 7));
        fsys.flushFile(big.ino);
      });
    }
    assert.equal(dataCode, 'ENOSPC');
    // What close(2) reports (FUSE flush): the failed write-back, once.
    assert.equal(codeOf(() => fsys.takeWriteBackFailure(big.ino)), 'ENOSPC');
    assert.equal(codeOf(() => fsys.takeWriteBackFailure(big.ino)), 'ok');
    let metaCode = 'ok';
    for (let i = 0; metaCode === 'ok' && i < 10_000; i++) {
      metaCode = codeOf(() => {
        const x = fsys.mknod(rootCtx, rootIno, `name-${'x'.repeat(200)}-${i}`, S_IFREG | 0o644);
        fsys.setxattr(x.ino, 'user.pad', Buffer.alloc(2000, 1), 0);
      });
    }
    assert.equal(metaCode, 'ENOSPC', 'a metadata commit on a full disk');
    assert.equal(spawnSync('mount', ['-o', 'remount,size=16m', dir]).status, 0);
    assert.equal(codeOf(() => fsys.mknod(rootCtx, rootIno, 'after', S_IFREG | 0o644)), 'ok');
    fsys.writeBackAll();
    await fsys.close();
    const problems = checkStore(store).problems;
    assert.deepEqual(problems.map((p) => `${p.code} ${p.place}: ${p.message}`), []);
    await store.close();
  } finally {
    spawnSync('umount', ['-l', dir]); // lazy: the lmdb package may still hold its files open
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
