/**
 * GC with a real mount: (1) another store's GC repacks and, after its grace period, deletes
 * archives a running mount reads lazily; once the mount has seen them go, every file reads back
 * whole (blocks re-pointed at the repacked archive, never EIO); (2) a mount with `-o keep_history=0,gc_interval_ms=0` retires the
 * archives of the versions it overwrote by itself.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { archivePaths, readIdx } from '../src/sync/archive-store.js';
import { presentArchives } from '../src/sync/gc.js';
import { mountSkipReason, mountZippy, openSyncBox, tempDir, within, writeBoxFile } from './fixtures.js';

const skip = mountSkipReason();


function fileData(i: number): Buffer {
  const data = Buffer.alloc(9000 + i * 100, 97 + (i % 26));
  data.write(`file ${i}\n`);
  return data;
}

test('a mount keeps reading files whose archives another store repacked and deleted', { skip }, async () => {
  const syncDir = tempDir('zippy-gc-sync-');
  process.env['XDG_CONFIG_HOME'] = tempDir('zippy-config-');
  const m = await mountZippy({ syncDir });
  // The other store's grace period: the mount imports the repacked archive before the old ones go.
  const graceMs = 4000;
  const a = await openSyncBox(syncDir, { gc: { gc: { retireGraceMs: graceMs }, gcIntervalMs: false } });
  try {
    const count = 18;
    for (let i = 0; i < count; i++) {
      writeBoxFile(a, `/f${i}.bin`, fileData(i));
      await a.engine.publishNow();
    }
    await within(10_000, 'the mount imports every file', () => readFileSync(join(m.mountpoint, `f${count - 1}.bin`)).equals(fileData(count - 1)));
    // Some files are read before the archives go (their zips are open in the mount), most are not.
    for (let i = 0; i < count; i += 4) assert.deepEqual(readFileSync(join(m.mountpoint, `f${i}.bin`)), fileData(i));
    const first = await a.engine.gcNow();
    assert.ok(first.repacked !== undefined, 'the small archives were repacked');
    assert.equal(first.retiring, count, 'named in the rm-log, deleted after the grace period');
    assert.equal(first.retired.length, 0);
    await new Promise((r) => setTimeout(r, graceMs));
    const report = await a.engine.gcNow();
    assert.equal(report.retired.length, count);
    assert.deepEqual([...await presentArchives(syncDir)], [first.repacked.name]);
    // The deletions may reach the mount in several batches (inotify events, rescans).
    const leftCount = (): number => [...m.logs().matchAll(/(\d+) archive\(s\) left the sync dir; their blocks are re-pointed/g)].reduce((sum, x) => sum + Number(x[1]), 0);
    await within(10_000, 'the mount notices the archives left', () => leftCount() === count);
    for (let i = 0; i < count; i++) assert.deepEqual(readFileSync(join(m.mountpoint, `f${i}.bin`)), fileData(i), `f${i}.bin after its archive left`);
    assert.doesNotMatch(m.logs(), /no other archive here holds/);
  } finally {
    await a.cleanup();
    await m.cleanup();
  }
});

test('-o keep_history=0: the mount retires the archives of overwritten versions itself', { skip }, async () => {
  const syncDir = tempDir('zippy-gc-sync-');
  process.env['XDG_CONFIG_HOME'] = tempDir('zippy-config-');
  const m = await mountZippy({ syncDir, options: ['keep_history=0', 'gc_interval_ms=0', 'publish_delay_ms=50'] });
  const archivesOf = async (path: string): Promise<number> => {
    let n = 0;
    for (const name of await presentArchives(syncDir)) {
      if ((await readIdx(archivePaths(syncDir, name).idxPath)).versions.some((v) => v.path === path)) n++;
    }
    return n;
  };
  try {
    const path = join(m.mountpoint, 'f.txt');
    writeFileSync(join(m.mountpoint, 'other.txt'), 'the root directory and this file stay');
    const text = (step: number): string => `version ${step}\n`.repeat(2000 + step);
    for (let step = 0; step < 8; step++) {
      writeFileSync(path, text(step));
      // Wait for the publish, so each version gets an archive of its own.
      await within(10_000, `publish ${step}`, async () => {
        for (const name of await presentArchives(syncDir)) {
          const idx = await readIdx(archivePaths(syncDir, name).idxPath);
          if (idx.versions.some((v) => v.path === 'f.txt' && v.sizeBytes === text(step).length)) return true;
        }
        return false;
      });
    }
    await within(30_000, 'old versions retired (after the 10 s grace period)', async () => (await archivesOf('f.txt')) <= 2);
    assert.equal(readFileSync(path, 'utf8'), text(7));
    await m.unmount();
    const m2 = await mountZippy({ syncDir });
    try {
      assert.equal(readFileSync(join(m2.mountpoint, 'f.txt'), 'utf8'), text(7));
      assert.equal(readFileSync(join(m2.mountpoint, 'other.txt'), 'utf8'), 'the root directory and this file stay');
    } finally {
      await m2.cleanup();
    }
  } finally {
    await m.cleanup();
  }
});
