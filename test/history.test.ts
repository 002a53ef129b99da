/**
 * History through real mounts: a sequence of edits, deletes, a chmod and a rename, each published
 * (waited for by reading the sync dir's idx files); `zippy-fs -o at=T` at each earlier time shows
 * exactly the tree of that time, refuses writes with EROFS and publishes nothing;
 * `zippy-export --versions` lists each version with its publish time and machine, and
 * `zippy-export --cat` reads any of them.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { listVersions, parseTimeNs, parseVersionId } from '../src/sync/history.js';
import { diffTrees, mountSkipReason, mountZippy, repoRoot, snapshotTree, scratchDirs, type TestMount, type TreeEntry } from './fixtures.js';

const skip = mountSkipReason();

/** Temporary directories of this file, removed when it ends. */
const scratchSet = scratchDirs();
const scratch = (prefix: string): string => scratchSet.make(prefix);
after(() => scratchSet.removeAll());

function exportCli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, [join(repoRoot(), 'dist', 'src', 'sync', 'export-main.js'), ...args], { encoding: 'utf8', timeout: 60_000 });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** Waits until the sync dir's archives hold `counts[path]` versions of each path (the publishes landed). */
async function published(syncDir: string, counts: Record<string, number>): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    let done = true;
    for (const [path, count] of Object.entries(counts)) {
      if ((await listVersions(syncDir, path, undefined)).versions.length < count) done = false;
    }
    if (done) return;
    if (Date.now() > deadline) throw new Error(`publishes of ${JSON.stringify(counts)} did not land within 10 s`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The parts of a snapshot that history must reproduce (directory mtimes are local, never synced). */
function comparable(tree: Map<string, TreeEntry>): Map<string, TreeEntry> {
  const out = new Map<string, TreeEntry>();
  for (const [path, e] of tree) out.set(path, { ...e, mtimeNs: e.type === 'file' ? e.mtimeNs : 0n, nlink: 0 });
  return out;
}

const fields = ['type', 'mode', 'uid', 'gid', 'size', 'sha256', 'target', 'mtimeNs'] as const;

function nowNs(): bigint {
  return BigInt(Date.now()) * 1_000_000n;
}

async function sleep(ms: number): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
}

test('a mount at=T shows exactly the tree of T, read-only; versions list and read', { skip }, async () => {
  const syncDir = scratch('zippy-history-sync-');
  const config = scratch('zippy-config-');
  process.env['XDG_CONFIG_HOME'] = config;
  const a = await mountZippy({ syncDir });
  const history: TestMount[] = [];
  try {
    const p = (rel: string): string => join(a.mountpoint, rel);
    const t0 = nowNs();
    await sleep(20);
    // Step 1.
    writeFileSync(p('a.txt'), 'v1');
    writeFileSync(p('b.txt'), 'b1');
    mkdirSync(p('d'));
    writeFileSync(p('d/c.txt'), 'c1');
    await published(syncDir, { 'a.txt': 1, 'b.txt': 1, 'd/c.txt': 1 });
    const tree1 = comparable(snapshotTree(a.mountpoint));
    const t1 = nowNs();
    await sleep(20);
    // Step 2: edit, delete, edit below a directory, create.
    writeFileSync(p('a.txt'), 'v2 longer');
    unlinkSync(p('b.txt'));
    writeFileSync(p('d/c.txt'), 'c2');
    writeFileSync(p('e.txt'), 'e1');
    await published(syncDir, { 'a.txt': 2, 'b.txt': 2, 'd/c.txt': 2, 'e.txt': 1 });
    const tree2 = comparable(snapshotTree(a.mountpoint));
    const t2 = nowNs();
    await sleep(20);
    // Step 3: delete a directory, edit and chmod, rename.
    rmSync(p('d'), { recursive: true });
    writeFileSync(p('a.txt'), 'v3');
    chmodSync(p('a.txt'), 0o600);
    renameSync(p('e.txt'), p('f.txt'));
    await published(syncDir, { 'a.txt': 3, 'd/c.txt': 3, 'e.txt': 2, 'f.txt': 1 });
    const tree3 = comparable(snapshotTree(a.mountpoint));
    assert.deepEqual([...tree3.keys()].sort(), ['a.txt', 'f.txt']);
    const archiveCount = readdirSync(syncDir).length;

    for (const [at, expected, name] of [[t0, new Map<string, TreeEntry>(), 't0'], [t1, tree1, 't1'], [t2, tree2, 't2'], [nowNs(), tree3, 'now']] as const) {
      const h = await mountZippy({ syncDir, options: [`at=${(Number(at / 1_000_000n) / 1000).toFixed(3)}`] });
      history.push(h);
      assert.deepEqual(diffTrees(expected, comparable(snapshotTree(h.mountpoint)), [...fields]), [], `tree at ${name}`);
      assert.throws(() => writeFileSync(join(h.mountpoint, 'new.txt'), 'x'), { code: 'EROFS' });
      if (expected.has('a.txt')) assert.throws(() => writeFileSync(join(h.mountpoint, 'a.txt'), 'x'), { code: 'EROFS' });
      assert.throws(() => mkdirSync(join(h.mountpoint, 'dir')), { code: 'EROFS' });
      await h.unmount();
    }
    assert.equal(readdirSync(syncDir).length, archiveCount, 'history mounts published nothing');

    // ISO 8601 works as well as unix seconds.
    const iso = new Date(Number(t1 / 1_000_000n)).toISOString();
    const h = await mountZippy({ syncDir, options: [`at=${iso}`] });
    history.push(h);
    assert.equal(readFileSync(join(h.mountpoint, 'a.txt'), 'utf8'), 'v1');
    await h.unmount();

    // The version list: every version with its publish time (in its step's window) and machine.
    const boxid = readFileSync(join(config, 'zippy-fs', 'boxid'), 'utf8').trim();
    const listed = exportCli(['--versions', 'a.txt', '--json', syncDir]);
    assert.equal(listed.status, 0, listed.stderr);
    const versions = (JSON.parse(listed.stdout) as { versions: { publishedNs: string; machine: string; sizeBytes: number; deleted: boolean; version: string }[] }).versions;
    assert.equal(versions.length, 3);
    const windows = [[t0, t1], [t1, t2], [t2, nowNs()]] as const;
    for (const [i, v] of versions.entries()) {
      assert.equal(v.machine, boxid);
      assert.ok(BigInt(v.publishedNs) > windows[i]![0] && BigInt(v.publishedNs) <= windows[i]![1], `version ${i} published in its window`);
    }
    assert.deepEqual(versions.map((v) => [v.sizeBytes, v.deleted]), [[2, false], [9, false], [2, false]]);
    const b = (JSON.parse(exportCli(['--versions', 'b.txt', '--json', syncDir]).stdout) as { versions: { deleted: boolean }[] }).versions;
    assert.deepEqual(b.map((v) => v.deleted), [false, true]);
    const text = exportCli(['--versions', 'a.txt', syncDir]);
    assert.match(text.stdout, new RegExp(`${boxid.slice(0, 8)}`));
    // Read any version with ordinary tools: --cat by id, or as of a time.
    assert.equal(exportCli(['--cat', 'a.txt', '--version', versions[0]!.version, syncDir]).stdout, 'v1');
    assert.equal(exportCli(['--cat', 'a.txt', '--version', versions[1]!.version, syncDir]).stdout, 'v2 longer');
    assert.equal(exportCli(['--cat', 'd/c.txt', '--at', String(Number(t2 / 1_000_000n) / 1000), syncDir]).stdout, 'c2');
    assert.equal(exportCli(['--cat', 'a.txt', syncDir]).stdout, 'v3');
    assert.equal(exportCli(['--cat', 'b.txt', syncDir]).status, 2);
    await a.unmount();
    // A history mount never empties a real store given with -o store=.
    const refused = spawnSync(process.execPath, [join(repoRoot(), 'dist', 'src', 'fuse', 'main.js'), '-f', '-o', `store=${a.storeDir},at=${String(Number(t1 / 1_000_000n) / 1000)}`, a.mountpoint, syncDir], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(refused.status, 2, refused.stderr);
    assert.match(refused.stderr, /not a history mount's/);
    await a.check();
  } finally {
    for (const h of history) await h.cleanup();
    await a.cleanup();
  }
});

test('times: unix seconds and ISO 8601 to ns; bad ones are refused; version ids parse back', () => {
  assert.equal(parseTimeNs('1764000000'), 1_764_000_000_000_000_000n);
  assert.equal(parseTimeNs('1764000000.25'), 1_764_000_000_250_000_000n);
  assert.equal(parseTimeNs('2026-11-22'), 1_795_305_600_000_000_000n);
  assert.equal(parseTimeNs('2026-11-22T23:10:00Z'), 1_795_389_000_000_000_000n);
  assert.equal(parseTimeNs('2026-11-22T23:10:00.123456789Z'), 1_795_389_000_123_456_789n);
  assert.equal(parseTimeNs('2026-11-22T23:10:00+01:00'), 1_795_385_400_000_000_000n);
  for (const bad of ['', 'yesterday', '2026-13-45', '17640000000000000', '-5', '2026-11-22T25:00:00Z']) {
    assert.throws(() => parseTimeNs(bad), { code: 'BAD_INPUT' }, bad);
  }
  assert.deepEqual(parseVersionId(`17:${'ab'.repeat(16)}`), { counter: 17, boxid: 'ab'.repeat(16) });
  assert.equal(parseVersionId('0:' + 'ab'.repeat(16)), undefined);
  assert.equal(parseVersionId('17:xyz'), undefined);
});
