/**
 * Remount speed: archives already imported are remembered in the LMDB catalog and not read
 * again, so a mount with 10,000 archives in the sync dir is ready in under 2 s.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { encodeIdx, type Idx } from '../src/sync/idx.js';
import { buildBlockZip } from '../src/sync/zipfile.js';
import { newArchiveName } from '../src/sync/names.js';
import { openSyncBox, tempDir } from './fixtures.js';

test('a remount with 10,000 archives in the sync dir is ready in under 2 s', async () => {
  const dir = tempDir();
  const archiveCount = Number(process.env['ZIPPY_REMOUNT_ARCHIVES'] ?? 10_000);
  const boxid = 'ee'.repeat(16);
  const empty = await buildBlockZip([]);
  for (let i = 0; i < archiveCount; i++) {
    const name = newArchiveName();
    const idx: Idx = {
      header: { archiveName: name, writerBoxid: boxid, createdNs: 1n, encrypted: false, zipSizeBytes: empty.bytes.length },
      versions: [{
        path: `d${i % 100}/f${i}`, type: 'symlink', mode: 0o777, uid: 0, gid: 0, rdev: 0, mtimeNs: 1_000_000_000n, sizeBytes: 1,
        symlinkTarget: 'x', xattrs: [], deleted: false, stamp: { counter: i + 1, boxid }, base: null, blockRuns: [],
      }],
      blocks: [],
    };
    writeFileSync(join(dir, `${name}.zip`), empty.bytes);
    writeFileSync(join(dir, `${name}.idx`), encodeIdx(idx));
  }
  const box = await openSyncBox(dir);
  try {
    assert.equal(box.fs.readdir(box.fs.resolve('/d7')).length, archiveCount / 100);
    await box.engine.abandon();
    await box.t.reopen();
    const started = Date.now();
    const { SyncEngine } = await import('../src/sync/engine.js');
    const engine = await SyncEngine.start(box.t.fs, { syncDir: dir, boxid: 'ff'.repeat(16), log: () => undefined });
    const elapsedMs = Date.now() - started;
    await engine.stop();
    assert.ok(elapsedMs < 2000, `remount took ${elapsedMs} ms`);
    process.stdout.write(`remount with ${archiveCount} archives: ${elapsedMs} ms\n`);
  } finally {
    await box.t.cleanup();
  }
});
