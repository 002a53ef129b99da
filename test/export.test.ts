/**
 * zippy-export through real mounts and real tools: the standard zip passes Info-ZIP `unzip -t` and
 * Python's `zipfile.testzip()`, and unpacked with `unzip` it is the mount's tree (contents, modes,
 * file mtimes to the second, symlinks, empty directories, a conflict copy), and so does a mount of
 * an empty sync dir holding only that zip (a plain zip); a checkpoint copied alone into an empty
 * sync dir mounts to the same tree. Also: zip64 end records (more than 65,535
 * entries) for both readers, and an encrypted sync dir (the checkpoint is sealed, -o decrypts).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readdirSync, readFileSync, symlinkSync, utimesSync, writeFileSync, chmodSync, openSync, closeSync, writeSync, cpSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { after, test } from 'node:test';
import { isSealed, initEncryptedSyncDir, loadOrCreateBoxid } from '../src/sync/crypto/index.js';
import { TreeZipWriter } from '../src/sync/export-zip.js';
import { writeCheckpoint } from '../src/sync/export.js';
import { openSyncView } from '../src/sync/view.js';
import { rootCtx } from '../src/inode/types.js';
import {
  diffTrees, mountSkipReason, mountZippy, openSyncBox, readBoxFile, repoRoot, runTool, seededRandom, snapshotTree, scratchDirs,
  type TestMount, type TreeEntry, writeBoxFile, within,
} from './fixtures.js';

const skip = mountSkipReason();

/** Temporary directories of this file, removed when it ends. */
const scratchSet = scratchDirs();
const scratch = (prefix: string): string => scratchSet.make(prefix);
after(() => scratchSet.removeAll());

function exportCli(args: string[], env: NodeJS.ProcessEnv = process.env): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, [join(repoRoot(), 'dist', 'src', 'sync', 'export-main.js'), ...args], { env, encoding: 'utf8', timeout: 120_000, maxBuffer: 256 * 1024 * 1024 });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}


/** Files' mtimes to whole seconds (zip precision), directories' mtimes left out (never synced). */
function comparable(tree: Map<string, TreeEntry>): Map<string, TreeEntry> {
  const out = new Map<string, TreeEntry>();
  for (const [path, e] of tree) {
    const mtimeNs = e.type === 'file' ? (e.mtimeNs / 1_000_000_000n) * 1_000_000_000n : 0n;
    out.set(path, { ...e, mtimeNs, nlink: 0 });
  }
  return out;
}

/** A tree with every kind of entry a zip holds, written through the mount. */
function writeTree(root: string): void {
  const rand = seededRandom(7);
  mkdirSync(join(root, 'docs/deep/er'), { recursive: true });
  mkdirSync(join(root, 'empty'));
  mkdirSync(join(root, 'private'), 0o700);
  chmodSync(join(root, 'private'), 0o700);
  writeFileSync(join(root, 'empty-file'), '');
  writeFileSync(join(root, 'docs/readme.txt'), 'hello zip\n'.repeat(100));
  writeFileSync(join(root, 'docs/deep/er/ümlaut é.txt'), 'unicode name');
  const random = Buffer.alloc(1_500_000);
  for (let i = 0; i < random.length; i += 4) random.writeUInt32LE(rand.int(0x100000000), i);
  writeFileSync(join(root, 'random.bin'), random); // above the whole-file limit: streamed, data descriptor
  writeFileSync(join(root, 'zeros.bin'), Buffer.alloc(3 * 1024 * 1024 + 5));
  writeFileSync(join(root, 'private/secret'), 'only me');
  writeFileSync(join(root, 'tool.sh'), '#!/bin/sh\necho hi\n');
  chmodSync(join(root, 'tool.sh'), 0o755);
  chmodSync(join(root, 'private/secret'), 0o400);
  symlinkSync('docs/readme.txt', join(root, 'link-to-readme'));
  symlinkSync('../nowhere', join(root, 'docs/dangling'));
  utimesSync(join(root, 'docs/readme.txt'), 1_600_000_000.75, 1_600_000_000.75);
  utimesSync(join(root, 'tool.sh'), 1_234_567_890, 1_234_567_890);
}

test('export -o: unzip -t and python zipfile accept it, unzip gives the mount\'s tree, so does the zip as a plain zip; the checkpoint alone mounts to it', { skip }, async () => {
  const syncDir = scratch('zippy-export-sync-');
  const work = scratch('zippy-export-work-');
  process.env['XDG_CONFIG_HOME'] = scratch('zippy-config-');
  const env = { ...process.env };
  let a: TestMount | undefined = await mountZippy({ syncDir });
  let b: TestMount | undefined;
  try {
    writeTree(a.mountpoint);
    writeFileSync(join(a.mountpoint, 'c.txt'), 'base');
    await a.unmount();
    // A conflict: an in-process peer edits c.txt from the base while the mount edits it too.
    const peer = await openSyncBox(syncDir);
    await a.remount();
    writeFileSync(join(a.mountpoint, 'c.txt'), 'from the mount');
    await a.unmount();
    writeBoxFile(peer, '/c.txt', 'from the peer, longer');
    await peer.engine.publishNow();
    assert.equal(readBoxFile(peer, '/c.txt'), 'from the peer, longer');
    await peer.cleanup();
    await a.remount();
    const mnt = a.mountpoint;
    await within(5000, 'conflict copy', () => readdirSync(mnt).some((n) => n.startsWith('c.sync-conflict-')));
    const mountTree = comparable(snapshotTree(mnt));
    assert.ok([...mountTree.keys()].some((p) => p.startsWith('c.sync-conflict-')));

    const zipPath = join(work, 'out.zip');
    const exported = exportCli(['--zip', '-o', zipPath, '--json', syncDir], env);
    assert.equal(exported.status, 0, exported.stderr);
    const report = JSON.parse(exported.stdout) as { ok: boolean; entries: number; problems: string[] };
    assert.equal(report.ok, true);
    assert.deepEqual(report.problems, []);
    assert.equal(report.entries, mountTree.size);
    assert.match(runTool('unzip', ['-t', zipPath]), /No errors detected/);
    assert.equal(runTool('python3', ['-c', 'import sys, zipfile; print(zipfile.ZipFile(sys.argv[1]).testzip())', zipPath]).trim(), 'None');
    const unpacked = join(work, 'unpacked');
    mkdirSync(unpacked);
    runTool('unzip', ['-q', zipPath, '-d', unpacked]);
    const unzipTree = comparable(snapshotTree(unpacked));
    assert.deepEqual(diffTrees(mountTree, unzipTree, ['type', 'mode', 'size', 'sha256', 'target', 'mtimeNs']), []);
    assert.equal(unzipTree.get('empty')?.type, 'dir');

    // The standard zip itself dropped into an empty sync dir mounts (as a plain zip) to the same tree.
    const plainSync = scratch('zippy-export-plain-');
    copyFileSync(zipPath, join(plainSync, 'export.zip'));
    const plainMount = await mountZippy({ syncDir: plainSync });
    try {
      const plainTree = comparable(snapshotTree(plainMount.mountpoint));
      assert.deepEqual(diffTrees(mountTree, plainTree, ['type', 'mode', 'size', 'sha256', 'target', 'mtimeNs']), []);
      await plainMount.unmount();
    } finally {
      await plainMount.cleanup();
    }

    // --path: a subtree, entries relative to it.
    const subZip = join(work, 'docs.zip');
    assert.equal(exportCli(['-o', subZip, '--path', 'docs', syncDir], env).status, 0);
    const listed = runTool('python3', ['-c', 'import sys, zipfile; print("\\n".join(sorted(zipfile.ZipFile(sys.argv[1]).namelist())))', subZip]).trim().split('\n');
    assert.deepEqual(listed, ['dangling', 'deep/', 'deep/er/', 'deep/er/ümlaut é.txt', 'readme.txt']);

    // The checkpoint: new archives in the sync dir; alone in an empty sync dir they mount to the same tree.
    const before = new Set(readdirSync(syncDir));
    const checkpoint = exportCli(['--zip', '--json', syncDir], env);
    assert.equal(checkpoint.status, 0, checkpoint.stderr);
    const written = readdirSync(syncDir).filter((n) => !before.has(n));
    assert.ok(written.length >= 2 && written.every((n) => /^[0-9a-f]{32}\.(zip|idx)$/.test(n)), written.join(' '));
    const emptySync = scratch('zippy-export-bootstrap-');
    for (const n of written) copyFileSync(join(syncDir, n), join(emptySync, n));
    b = await mountZippy({ syncDir: emptySync });
    const bootTree = comparable(snapshotTree(b.mountpoint));
    assert.deepEqual(diffTrees(mountTree, bootTree, ['type', 'mode', 'uid', 'gid', 'size', 'sha256', 'target', 'mtimeNs']), []);
    // The running mount imported the checkpoint too and shows nothing new.
    await a.unmount();
    await a.remount();
    assert.deepEqual(diffTrees(mountTree, comparable(snapshotTree(a.mountpoint)), ['type', 'mode', 'size', 'sha256', 'target', 'mtimeNs']), []);
    await b.unmount();
    await a.unmount();
  } finally {
    await a?.cleanup();
    await b?.cleanup();
    a = undefined;
  }
});

test('more than 65,535 entries: zip64 end records, accepted by unzip -t and python zipfile', async () => {
  const dir = scratch('zippy-zip64-');
  const path = join(dir, 'many.zip');
  const handle = await open(path, 'wx');
  let batch: Buffer[] = [];
  let batchBytes = 0;
  const flush = async (): Promise<void> => {
    await handle.write(Buffer.concat(batch));
    batch = [];
    batchBytes = 0;
  };
  const writer = new TreeZipWriter(async (chunk) => {
    batch.push(chunk);
    batchBytes += chunk.length;
    if (batchBytes > 1 << 20) await flush();
  }, { compressionLevel: 1 });
  const count = 66_000;
  for (let i = 0; i < count; i++) {
    if (i % 1000 === 0) await writer.addDirectory(`d${i / 1000}`, 0o755, 1_700_000_000_000_000_000n);
    const data = Buffer.from(`entry ${i}\n`);
    await writer.addFile(`d${Math.floor(i / 1000)}/f${i}`, 0o644, 1_700_000_000_000_000_000n, data.length, (o, l) => data.subarray(o, o + l));
  }
  await writer.finish();
  await flush();
  await handle.close();
  assert.match(runTool('unzip', ['-tq', path]), /No errors detected/);
  const n = runTool('python3', ['-c', 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); assert z.testzip() is None; print(len(z.infolist()))', path]).trim();
  assert.equal(Number(n), count + 66);
});

test('a file above 4 GiB: zip64 sizes in the local and central headers and the data descriptor (ZIPPY_SOAK=1)', { skip: process.env['ZIPPY_SOAK'] === '1' ? false : 'soak only: deflates and verifies 4 GiB' }, async () => {
  const dir = scratch('zippy-zip64-huge-');
  const path = join(dir, 'huge.zip');
  const handle = await open(path, 'wx');
  const writer = new TreeZipWriter(async (chunk) => {
    await handle.write(chunk);
  }, { compressionLevel: 1 });
  const sizeBytes = 2 ** 32 + 4096;
  const pattern = Buffer.alloc(1 << 20, 0x5a);
  await writer.addFile('huge.bin', 0o644, 1_700_000_000_000_000_000n, sizeBytes, (_offset, length) => pattern.subarray(0, length));
  await writer.addFile('after.txt', 0o600, 1_700_000_000_000_000_000n, 5, () => Buffer.from('after'));
  await writer.finish();
  await handle.close();
  assert.match(runTool('unzip', ['-tq', path], { timeoutMs: 600_000 }), /No errors detected/);
  const listed = runTool('python3', ['-c', 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); assert z.testzip() is None; print([(i.filename, i.file_size) for i in z.infolist()])', path], { timeoutMs: 600_000 });
  assert.equal(listed.trim(), `[('huge.bin', ${sizeBytes}), ('after.txt', 5)]`);
});

test('encrypted sync dir: the checkpoint is sealed and bootstraps a member; -o decrypts', async () => {
  const syncDir = scratch('zippy-export-enc-');
  const home = scratch('zippy-export-enc-home-');
  const configDir = join(home, 'zippy-fs');
  const boxid = loadOrCreateBoxid(configDir);
  initEncryptedSyncDir(syncDir, configDir);
  const box = await openSyncBox(syncDir, { boxid, configDir });
  writeBoxFile(box, '/secret.txt', 'sealed content '.repeat(1000));
  await box.engine.publishNow();
  await box.cleanup();
  const env = { ...process.env, XDG_CONFIG_HOME: home };
  const before = new Set(readdirSync(syncDir));
  const result = exportCli(['--zip', '--json', syncDir], env);
  assert.equal(result.status, 0, result.stderr);
  const written = readdirSync(syncDir).filter((n) => !before.has(n));
  assert.equal(written.length, 2);
  for (const n of written) assert.equal(isSealed(readFileSync(join(syncDir, n))), true, `${n} is sealed`);
  // A new sync dir with only keys/ and the checkpoint: the member reads the file.
  const fresh = scratch('zippy-export-enc-fresh-');
  cpSync(join(syncDir, 'keys'), join(fresh, 'keys'), { recursive: true });
  for (const n of written) copyFileSync(join(syncDir, n), join(fresh, n));
  const reader = await openSyncBox(fresh, { boxid, configDir });
  assert.equal(readBoxFile(reader, '/secret.txt'), 'sealed content '.repeat(1000));
  await reader.cleanup();
  const zipPath = join(fresh, '..', `${written[0]!.slice(0, 8)}-plain.zip`);
  const zipped = exportCli(['-o', zipPath, fresh], env);
  assert.equal(zipped.status, 0, zipped.stderr);
  assert.equal(runTool('unzip', ['-p', zipPath, 'secret.txt']), 'sealed content '.repeat(1000));
  // Without the key: exit 2, and the message says how to get one.
  const stranger = exportCli(['-o', join(home, 'x.zip'), fresh], { ...process.env, XDG_CONFIG_HOME: scratch('zippy-export-stranger-') });
  assert.equal(stranger.status, 2);
  assert.match(stranger.stderr, /zippy-key request/);
});

test('a checkpoint of its own older versions does not set a mount back: later edits build on its newest version', async () => {
  const syncDir = scratch('zippy-export-own-');
  const home = scratch('zippy-export-own-home-');
  const env = { ...process.env, XDG_CONFIG_HOME: home };
  const box = await openSyncBox(syncDir);
  try {
    writeBoxFile(box, '/a.txt', 'v1');
    await box.engine.publishNow();
    // The checkpoint carries v1 (this box's own stamp); the box then publishes v2 before seeing it.
    assert.equal(exportCli(['--zip', syncDir], env).status, 0);
    writeBoxFile(box, '/a.txt', 'v2');
    await box.engine.publishNow();
    await box.engine.importNow();
    writeBoxFile(box, '/a.txt', 'v3');
    await box.engine.publishNow();
    await box.engine.importNow();
    assert.deepEqual(box.fs.readdir(box.fs.resolve('/')).map((e) => e.name).filter((n) => n !== '.' && n !== '..').sort(), ['a.txt']);
    assert.equal(readBoxFile(box, '/a.txt'), 'v3');
  } finally {
    await box.cleanup();
  }
});

test('a checkpoint split over many archives (tiny limits: a file spans archives, two machines) bootstraps a fresh sync dir', async () => {
  const syncDir = scratch('zippy-export-split-');
  const rand = seededRandom(11);
  const content = (blocks: number): Buffer => {
    const b = Buffer.alloc(blocks * 4096 - 100);
    for (let i = 0; i < b.length; i += 4) b.writeUInt32LE(rand.int(0x100000000), i);
    return b;
  };
  const files: Record<string, Buffer> = { '/f1': content(3), '/f2': content(2), '/d/f3': content(10), '/d/e/f4': content(1) };
  const a = await openSyncBox(syncDir);
  const b = await openSyncBox(syncDir);
  try {
    a.fs.mkdir(rootCtx, a.fs.resolve('/'), 'd', 0o755);
    a.fs.mkdir(rootCtx, a.fs.resolve('/d'), 'e', 0o750);
    for (const [path, data] of Object.entries(files)) writeBoxFile(a, path, data);
    await a.engine.publishNow();
    const g = content(2);
    writeBoxFile(b, '/g', g);
    await b.engine.publishNow();
    files['/g'] = g;
    const view = await openSyncView({ syncDir, boxid: a.boxid });
    let report;
    try {
      assert.deepEqual(view.warnings, []);
      report = await writeCheckpoint(view, { syncDir, boxid: a.boxid, keyring: undefined, subPath: '', limits: { versionCountMax: 2, blockCountMax: 3, idxSizeSoftMaxBytes: 1 << 20 } });
    } finally {
      await view.close();
    }
    assert.equal(report.blockCount, 18);
    assert.ok(report.archives.length >= 7, `${report.archives.length} archives`);
    const fresh = scratch('zippy-export-split-fresh-');
    for (const archive of report.archives) {
      copyFileSync(archive.zipPath, join(fresh, basename(archive.zipPath)));
      copyFileSync(archive.idxPath, join(fresh, basename(archive.idxPath)));
    }
    const warnings: string[] = [];
    const c = await openSyncBox(fresh, { log: (m) => warnings.push(m) });
    try {
      assert.deepEqual(warnings, []);
      for (const [path, data] of Object.entries(files)) {
        const ino = c.fs.resolve(path);
        assert.ok(c.fs.read(ino, 0, data.length + 1).equals(data), path);
      }
      assert.equal(c.fs.getattr(c.fs.resolve('/d/e')).mode & 0o7777, 0o750);
    } finally {
      await c.cleanup();
    }
  } finally {
    await a.cleanup();
    await b.cleanup();
  }
});

test('exit codes: usage 2, unreadable archive 1 with its name, --help 0', async () => {
  assert.equal(exportCli(['relative/dir']).status, 2);
  assert.equal(exportCli(['/tmp']).status, 2, 'a checkpoint only when asked for with --zip');
  assert.equal(exportCli(['--versions', 'a', '--at', '1', '/tmp']).status, 2);
  const help = exportCli(['--help']);
  assert.equal(help.status, 0);
  assert.match(help.stdout, /Usage:/);
  const syncDir = scratch('zippy-export-bad-');
  const box = await openSyncBox(syncDir);
  writeBoxFile(box, '/ok.txt', 'fine');
  await box.engine.publishNow();
  await box.cleanup();
  // A damaged idx: the export goes on without it and exits 1 naming it.
  const name = '0123456789abcdef0123456789abcdef';
  writeFileSync(join(syncDir, `${name}.zip`), 'not a zip');
  const fd = openSync(join(syncDir, `${name}.idx`), 'w');
  writeSync(fd, Buffer.alloc(200, 7));
  closeSync(fd);
  const dir = scratch('zippy-export-bad-out-');
  const result = exportCli(['-o', join(dir, 'x.zip'), syncDir], { ...process.env, XDG_CONFIG_HOME: dir });
  assert.equal(result.status, 1);
  assert.match(result.stderr, new RegExp(name));
  assert.equal(runTool('unzip', ['-p', join(dir, 'x.zip'), 'ok.txt']), 'fine');
});
