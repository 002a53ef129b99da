/**
 * zippy-fsck as a user runs it: on a healthy store, on its segments/ directory, and on a store
 * with a damaged block (exit 1, the place named; --json is data).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, openSync, readSync, writeSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { openTestFs } from './fixtures.js';
import { blockKey } from '../src/btree/keys.js';
import { decodeBlockPointer } from '../src/btree/records.js';
import { rootCtx, rootIno, S_IFREG } from '../src/inode/types.js';

const fsckJs = fileURLToPath(new URL('../tools/fsck.js', import.meta.url));

function fsck(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [fsckJs, ...args], { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('zippy-fsck: clean store, segments dir, damaged block, --json, usage errors', async () => {
  const t = openTestFs();
  const f = t.fs.mknod(rootCtx, rootIno, 'f', S_IFREG | 0o644);
  t.fs.write(rootCtx, f.ino, 0, Buffer.alloc(3 * 4096, 7));
  await t.fs.close();
  const ptr = decodeBlockPointer(t.store.btree.table('blockmap').get(blockKey(f.ino, 2))!, 'test');
  const segmentFile = t.store.log.segmentFile(ptr.segment);
  await t.store.close();
  try {
    assert.equal(fsck('--help').status, 0);
    assert.equal(fsck().status, 2);
    assert.equal(fsck('/nonexistent-dir').status, 2);
    const clean = fsck(t.dir);
    assert.equal(clean.status, 0, clean.stdout + clean.stderr);
    assert.match(clean.stdout, /clean/);
    assert.equal(fsck(join(t.dir, 'segments')).status, 0, 'segments/ inside a store checks that store');
    const fd = openSync(segmentFile, 'r+');
    const byte = Buffer.alloc(1);
    readSync(fd, byte, 0, 1, ptr.offset + 40);
    byte[0] = byte[0]! ^ 1;
    writeSync(fd, byte, 0, 1, ptr.offset + 40);
    closeSync(fd);
    const damaged = fsck('--json', t.dir);
    assert.equal(damaged.status, 1);
    const result = JSON.parse(damaged.stdout) as { problems: { code: string; place: string }[] };
    assert.equal(result.problems.length, 1);
    assert.equal(result.problems[0]!.code, 'block-unreadable');
    assert.match(result.problems[0]!.place, new RegExp(`inode ${f.ino} block 2`));
  } finally {
    const { rmSync } = await import('node:fs');
    rmSync(t.dir, { recursive: true, force: true });
  }
});
