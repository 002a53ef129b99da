/**
 * Two real mounts of one sync dir in two processes (different stores, different boxids): what
 * one does is visible in the other within 2 s, polled. Also: a SIGTERM publishes before exit,
 * and plain zips made by Info-ZIP `zip` mount as a newest-wins union.
 */
import { test } from 'node:test';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import assert from 'node:assert/strict';
import { runTool } from './fixtures.js';
import { join } from 'node:path';
import { mountSkipReason, mountZippy, tempDir, type TestMount, within } from './fixtures.js';

const skip = mountSkipReason();


async function mountAs(syncDir: string): Promise<TestMount> {
  process.env['XDG_CONFIG_HOME'] = tempDir('zippy-config-');
  return mountZippy({ syncDir });
}

test('two mounts in two processes see each other\'s writes, deletes, renames, chmods and mkdirs within 2 s', { skip }, async () => {
  const syncDir = tempDir('zippy-sync-');
  const a = await mountAs(syncDir);
  const b = await mountAs(syncDir);
  try {
    const pa = (p: string): string => join(a.mountpoint, p);
    const pb = (p: string): string => join(b.mountpoint, p);
    writeFileSync(pa('note.txt'), 'first version');
    await within(2000, 'create', () => readFileSync(pb('note.txt'), 'utf8') === 'first version');
    writeFileSync(pb('note.txt'), 'second version');
    await within(2000, 'overwrite', () => readFileSync(pa('note.txt'), 'utf8') === 'second version');
    chmodSync(pa('note.txt'), 0o640);
    await within(2000, 'chmod', () => (statSync(pb('note.txt')).mode & 0o7777) === 0o640);
    mkdirSync(pb('dir'));
    await within(2000, 'mkdir', () => statSync(pa('dir')).isDirectory());
    renameSync(pa('note.txt'), pa('dir/renamed.txt'));
    await within(2000, 'rename', () => !existsSync(pb('note.txt')) && readFileSync(pb('dir/renamed.txt'), 'utf8') === 'second version');
    unlinkSync(pb('dir/renamed.txt'));
    await within(2000, 'delete', () => !existsSync(pa('dir/renamed.txt')));
  } finally {
    await a.unmount().catch(() => undefined);
    await b.unmount().catch(() => undefined);
    await a.cleanup();
    await b.cleanup();
  }
});

test('SIGTERM publishes before exit; tar x of 10,000 files makes a handful of archives', { skip }, async () => {
  const syncDir = tempDir('zippy-sync-');
  const work = tempDir('zippy-tar-');
  const fileCount = Number(process.env['ZIPPY_TAR_FILES'] ?? 10_000);
  mkdirSync(join(work, 'src'));
  for (let d = 0; d < 100; d++) {
    mkdirSync(join(work, 'src', `d${d}`));
    for (let f = 0; f < fileCount / 100; f++) writeFileSync(join(work, 'src', `d${d}`, `f${f}`), `file ${d}/${f}\n`);
  }
  runTool('tar', ['cf', join(work, 'src.tar'), '-C', join(work, 'src'), '.']);
  const a = await mountAs(syncDir);
  try {
    const started = Date.now();
    runTool('tar', ['xf', join(work, 'src.tar'), '-C', a.mountpoint], { timeoutMs: 300_000 });
    const tarMs = Date.now() - started;
    writeFileSync(join(a.mountpoint, 'last.txt'), 'written just before SIGTERM');
    await a.unmount();
    const idxCount = readdirSync(syncDir).filter((f) => f.endsWith('.idx')).length;
    process.stdout.write(`tar x of ${fileCount} files: ${tarMs} ms, ${idxCount} archives\n`);
    // One archive per second of burst at most (burstPublishDelayMs), plus the first and the last.
    assert.ok(idxCount <= Math.ceil(tarMs / 1000) + 3, `${idxCount} archives for ${fileCount} files in ${tarMs} ms`);
    const b = await mountAs(syncDir);
    try {
      assert.equal(readFileSync(join(b.mountpoint, 'last.txt'), 'utf8'), 'written just before SIGTERM');
      assert.equal(readFileSync(join(b.mountpoint, 'd42', 'f7'), 'utf8'), 'file 42/7\n');
      assert.equal(readdirSync(join(b.mountpoint, 'd99')).length, fileCount / 100);
    } finally {
      await b.cleanup();
    }
  } finally {
    await a.cleanup();
  }
});
