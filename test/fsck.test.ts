/**
 * zippy-fsck as a user runs it: on a healthy store, on its segments/ directory, and on a store
 * with a damaged block (exit 1, the place named; --json is data); and no false positive on 100
 * seeded random healthy stores and a few healthy multi-peer sync dirs.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, cpSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { openSyncBox, openTestFs, seededRandom, tempDir, writeBoxFile } from './fixtures.js';
import { checkStoreDir } from '../src/inode/check.js';
import { cleanSegments } from '../src/inode/cleaner.js';
import { checkSyncDir } from '../src/sync/check.js';
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
    const bare = join(tempDir('zippy-fsck-bare-'), 'segs');
    cpSync(join(t.dir, 'segments'), bare, { recursive: true });
    const bareClean = fsck('--json', bare);
    assert.equal(bareClean.status, 0, 'a bare segments directory: every record verified');
    assert.equal((JSON.parse(bareClean.stdout) as { kind: string }).kind, 'segments');
    const fd = openSync(segmentFile, 'r+');
    const byte = Buffer.alloc(1);
    readSync(fd, byte, 0, 1, ptr.offset + 40);
    byte[0] = byte[0]! ^ 1;
    writeSync(fd, byte, 0, 1, ptr.offset + 40);
    closeSync(fd);
    const damaged = fsck('--json', t.dir);
    assert.equal(damaged.status, 1);
    const result = JSON.parse(damaged.stdout) as { problems: { kind: string; place: string }[] };
    assert.deepEqual(result.problems.map((p) => p.kind).sort(), ['block-unreadable', 'torn-tail'], 'the damaged last record is a torn tail, and its pointer is unreadable');
    assert.match(result.problems.find((p) => p.kind === 'block-unreadable')!.place, new RegExp(`inode ${f.ino} block 2`));
    assert.match(result.problems.find((p) => p.kind === 'torn-tail')!.place, new RegExp(`${segmentFile}:${ptr.offset}$`));
    cpSync(segmentFile, join(bare, segmentFile.split('/').pop()!));
    const bareDamaged = fsck('--json', bare);
    assert.equal(bareDamaged.status, 1);
    assert.deepEqual((JSON.parse(bareDamaged.stdout) as { problems: { kind: string }[] }).problems.map((p) => p.kind), ['torn-tail']);
    assert.equal(fsck('--repair', bare).status, 2, '--repair needs the store around the segments');
    rmSync(dirname(bare), { recursive: true, force: true });
  } finally {
    rmSync(t.dir, { recursive: true, force: true });
  }
});

/** A random healthy store: a seeded mix of namespace operations, writes, truncates, xattrs, links, fsyncs, a cleaner pass, sometimes a crash and remount. */
async function randomStore(seed: number): Promise<string> {
  const rnd = seededRandom(seed);
  const t = openTestFs({ store: { segmentSizeMaxBytes: 64 * 1024 } });
  const dirs = [rootIno];
  const files: number[] = [];
  const names = new Map<number, { parent: number; name: string }>();
  const steps = 20 + rnd.int(40);
  for (let step = 0; step < steps; step++) {
    const op = rnd.int(10);
    const parent = rnd.pick(dirs);
    const name = `n${step}`;
    try {
      if (op === 0) dirs.push(t.fs.mkdir(rootCtx, parent, name, 0o755).ino);
      else if (op <= 3) {
        const f = t.fs.mknod(rootCtx, parent, name, S_IFREG | 0o644);
        files.push(f.ino);
        names.set(f.ino, { parent, name });
        t.fs.write(rootCtx, f.ino, rnd.int(3) * 4096 + rnd.int(100), Buffer.alloc(1 + rnd.int(3 * 4096), 1 + rnd.int(250)));
      } else if (op === 4 && files.length > 0) t.fs.write(rootCtx, rnd.pick(files), rnd.int(20000), Buffer.alloc(1 + rnd.int(9000), 1 + rnd.int(250)));
      else if (op === 5 && files.length > 0) t.fs.truncate(rootCtx, rnd.pick(files), rnd.int(12000));
      else if (op === 6 && files.length > 0) t.fs.link(rootCtx, rnd.pick(files), parent, name);
      else if (op === 7 && names.size > 0) {
        const ino = rnd.pick([...names.keys()]);
        const n = names.get(ino)!;
        t.fs.unlink(rootCtx, n.parent, n.name);
        names.delete(ino);
      } else if (op === 8) t.fs.symlink(rootCtx, parent, name, `target-${step}`);
      else if (op === 9 && files.length > 0) t.fs.setxattr(rnd.pick(files), 'user.k', Buffer.from(`v${step}`), 0);
    } catch {
      // An operation on an unlinked inode fails as it would through a mount; the store stays consistent.
    }
    if (rnd.int(8) === 0) await t.fs.fsync();
  }
  if (rnd.int(3) === 0) await cleanSegments(t.store, { liveRatioMax: 0.9, protectedSegmentCount: 0 });
  if (rnd.int(4) === 0) {
    await t.fs.fsync();
    await t.crashAndReopen();
  }
  await t.fs.close();
  await t.store.close();
  return t.dir;
}

test('no false positive: 100 random healthy stores check clean (library, read-only), every 10th through the CLI', async () => {
  for (let seed = 1; seed <= 100; seed++) {
    const dir = await randomStore(seed);
    try {
      const report = await checkStoreDir(dir);
      assert.deepEqual(report.problems.map((p) => `${p.code} ${p.place}: ${p.message}`), [], `seed ${seed}`);
      if (seed % 10 === 0) {
        const r = fsck('--json', dir);
        assert.equal(r.status, 0, `seed ${seed}: ${r.stdout}`);
        assert.equal((JSON.parse(r.stdout) as { clean: boolean }).clean, true);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
});

test('no false positive: healthy sync dirs (several peers, edits, renames, deletes) check clean', async () => {
  for (let seed = 1; seed <= 5; seed++) {
    const rnd = seededRandom(1000 + seed);
    const syncDir = tempDir('zippy-fsck-sync-');
    const a = await openSyncBox(syncDir);
    const b = await openSyncBox(syncDir);
    try {
      for (let step = 0; step < 12; step++) {
        const box = rnd.pick([a, b]);
        writeBoxFile(box, `/f${rnd.int(5)}`, Buffer.alloc(1 + rnd.int(3 * 4096), 1 + rnd.int(250)), rnd.int(3) * 4096);
        if (rnd.int(4) === 0) {
          try {
            box.fs.rename(rootCtx, rootIno, `f${rnd.int(5)}`, rootIno, `g${step}`);
          } catch {
            // no such file
          }
        }
        await box.engine.publishNow();
        await rnd.pick([a, b]).engine.importNow();
      }
      const configDir = tempDir('zippy-fsck-cfg-');
      const report = await checkSyncDir(syncDir, { configDir });
      rmSync(configDir, { recursive: true, force: true });
      assert.deepEqual(report.problems, [], `seed ${seed}`);
      assert.ok(report.archiveCount > 0 && report.visibleCount > 0);
    } finally {
      await a.cleanup();
      await b.cleanup();
      rmSync(syncDir, { recursive: true, force: true });
    }
  }
});
