/**
 * Encrypted sync dirs through the sync engine (in-process boxes, one machine config dir each):
 * nothing of a tree's names or contents reaches the sync dir in clear; a changed byte anywhere in
 * a sealed archive gets it rejected whole; a machine never granted imports nothing and says why;
 * after a revoke, later archives are unreadable to the revoked machine.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { rootCtx } from '../src/inode/types.js';
import { plainBlockIdKey, blockIdOf } from '../src/sync/block-id.js';
import { grantAccess, initEncryptedSyncDir, loadOrCreateBoxid, requestAccess, requestFingerprint, revokeAccess } from '../src/sync/crypto/index.js';
import { boxPathExists, openSyncBox, readBoxFile, tempDir, type SyncBox, writeBoxFile } from './fixtures.js';
import { seededRandom } from './random.js';

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function dir(prefix: string): string {
  const d = tempDir(prefix);
  dirs.push(d);
  return d;
}

interface Machine {
  readonly configDir: string;
  readonly boxid: string;
  readonly warnings: string[];
}

function machine(): Machine {
  const configDir = join(dir('zippy-crypto-home-'), 'zippy-fs');
  return { configDir, boxid: loadOrCreateBoxid(configDir), warnings: [] };
}

async function box(syncDir: string, m: Machine): Promise<SyncBox> {
  return openSyncBox(syncDir, { boxid: m.boxid, configDir: m.configDir, log: (w) => m.warnings.push(w) });
}

/** An encrypted sync dir created by `a`, with `b` enrolled (request, matching fingerprints, grant). */
function encryptedDir(a: Machine, b: Machine): string {
  const syncDir = dir('zippy-crypto-sync-');
  initEncryptedSyncDir(syncDir, a.configDir);
  const request = requestAccess(syncDir, b.configDir);
  assert.equal(request.boxid, b.boxid);
  const seen = requestFingerprint(syncDir, b.boxid);
  assert.equal(seen, request.fingerprint, 'both machines show the same fingerprint');
  assert.equal(grantAccess(syncDir, a.configDir, b.boxid, seen), true);
  return syncDir;
}

/** Every file below `root` (the sync dir, keys/ included), with its bytes. */
function allFiles(root: string): { path: string; bytes: Buffer }[] {
  const out: { path: string; bytes: Buffer }[] = [];
  for (const name of readdirSync(root)) {
    const path = join(root, name);
    if (statSync(path).isDirectory()) out.push(...allFiles(path));
    else out.push({ path, bytes: readFileSync(path) });
  }
  return out;
}

function archiveNames(syncDir: string): Set<string> {
  return new Set(readdirSync(syncDir).filter((n) => /^[0-9a-f]{32}\.idx$/.test(n)).map((n) => n.slice(0, 32)));
}

/** Random (incompressible) bytes around a marker, so a plain archive would store the marker as is. */
function contentWith(marker: string, seed: number): Buffer {
  const random = seededRandom(seed);
  const noise = (n: number): Buffer => Buffer.from(Array.from({ length: n }, () => random.int(256)));
  return Buffer.concat([noise(700), Buffer.from(marker), noise(900)]);
}

const markers = ['SENTINELNAMEALPHA', 'SENTINELDIRBRAVO', 'SENTINELCONTENTCHARLIE', 'SENTINELCONTENTDELTA', 'SENTINELLINKECHO'];

/** Writes the marker tree into `a`; returns the files (path, content). */
function writeMarkerTree(a: SyncBox): Map<string, Buffer> {
  const dirIno = a.fs.mkdir(rootCtx, 1, `docs-${markers[1]}`, 0o755).ino;
  assert.ok(dirIno > 1);
  const files = new Map<string, Buffer>([
    [`/docs-${markers[1]}/${markers[0]}.txt`, contentWith(markers[2]!, 1)],
    [`/plain-${markers[0]}-2.bin`, contentWith(markers[3]!, 2)],
  ]);
  for (const [path, content] of files) writeBoxFile(a, path, content);
  a.fs.symlink(rootCtx, 1, `link-${markers[4]}`, `docs-${markers[1]}`);
  return files;
}

function markerHits(syncDir: string, extra: Buffer[]): string[] {
  const needles = [...markers.map((m) => Buffer.from(m)), ...extra];
  const hits: string[] = [];
  for (const { path, bytes } of allFiles(syncDir)) {
    for (const needle of needles) if (bytes.includes(needle)) hits.push(`${path} holds ${needle.toString('hex').slice(0, 32)}`);
  }
  return hits;
}

test('sentinel: names, paths and contents never appear in an encrypted sync dir; the granted box reads them', async () => {
  const [ma, mb] = [machine(), machine()];
  const syncDir = encryptedDir(ma, mb);
  const a = await box(syncDir, ma);
  const b = await box(syncDir, mb);
  try {
    const files = writeMarkerTree(a);
    const report = await a.engine.publishNow();
    assert.equal(report.archives.length, 1);
    const imported = await b.engine.importNow();
    assert.deepEqual(imported.imported, [report.archives[0]!.name]);
    for (const [path, content] of files) {
      const ino = b.fs.resolve(path);
      assert.ok(b.fs.read(ino, 0, b.fs.getattr(ino).size).equals(content), `${path} reads back in B`);
    }
    // Full paths, and the block ids an unencrypted dir would have used (plain content addresses).
    const extra: Buffer[] = [...files.keys()].map((p) => Buffer.from(p.slice(1)));
    for (const content of files.values()) extra.push(blockIdOf(content, plainBlockIdKey));
    assert.deepEqual(markerHits(syncDir, extra), []);
    assert.deepEqual(ma.warnings.concat(mb.warnings), []);
  } finally {
    await a.cleanup();
    await b.cleanup();
  }
  // Control: the same tree in a plain sync dir shows the markers, so the search above can find them.
  const plainDir = dir('zippy-crypto-plain-');
  const p = await openSyncBox(plainDir, { configDir: machine().configDir });
  try {
    writeMarkerTree(p);
    await p.engine.publishNow();
    assert.ok(markerHits(plainDir, []).length >= markers.length, 'a plain archive shows every marker');
  } finally {
    await p.cleanup();
  }
});

test('a changed byte anywhere in a sealed idx or zip gets the archive rejected whole', async () => {
  const [ma, mb] = [machine(), machine()];
  const syncDir = encryptedDir(ma, mb);
  const a = await box(syncDir, ma);
  const b = await box(syncDir, mb);
  try {
    writeBoxFile(a, '/victim.bin', contentWith('VICTIM', 3));
    writeBoxFile(a, '/second.txt', 'second file');
    const { archives } = await a.engine.publishNow();
    const name = archives[0]!.name;
    const random = seededRandom(Number(process.env['ZIPPY_TAMPER_SEED'] ?? 6)); // fixed (reproducible); set the env variable to explore others
    const trials = 60;
    for (let trial = 0; trial < trials; trial++) {
      const path = join(syncDir, `${name}.${trial % 2 === 0 ? 'idx' : 'zip'}`);
      const original = readFileSync(path);
      const changed = Buffer.from(original);
      const position = random.int(changed.length);
      changed[position] = changed[position]! ^ (1 + random.int(255));
      writeFileSync(path, changed);
      try {
        const report = await b.engine.importNow();
        assert.deepEqual(report.imported, [], `trial ${trial}: byte ${position} of ${path} changed, yet imported`);
        assert.equal(boxPathExists(b, '/victim.bin'), false);
        assert.equal(boxPathExists(b, '/second.txt'), false);
      } finally {
        writeFileSync(path, original);
      }
    }
    assert.ok(mb.warnings.some((w) => w.includes(name)), 'the warnings name the archive');
    assert.ok(mb.warnings.some((w) => w.includes('BAD_ARCHIVE')));
    // Restored, it imports whole (the rejections were the changes, not the archive).
    assert.deepEqual((await b.engine.importNow()).imported, [name]);
    assert.equal(readBoxFile(b, '/second.txt'), 'second file');
  } finally {
    await a.cleanup();
    await b.cleanup();
  }
});

test('a machine never granted imports nothing, says to run zippy-key request, and keeps serving', async () => {
  const [ma, mb, mc] = [machine(), machine(), machine()];
  const syncDir = encryptedDir(ma, mb);
  const a = await box(syncDir, ma);
  try {
    writeBoxFile(a, '/secret.txt', 'for members only');
    const { archives } = await a.engine.publishNow();
    const c = await box(syncDir, mc);
    try {
      const report = await c.engine.importNow();
      assert.deepEqual(report.imported, []);
      assert.equal(boxPathExists(c, '/secret.txt'), false);
      const named = mc.warnings.filter((w) => w.includes(archives[0]!.name));
      assert.ok(named.some((w) => w.includes('BAD_KEY') && w.includes('zippy-key request')), mc.warnings.join('\n'));
      // Still serving: local writes and reads work; nothing is published in clear.
      const before = readdirSync(syncDir).sort();
      writeBoxFile(c, '/local.txt', 'local only');
      assert.equal(readBoxFile(c, '/local.txt'), 'local only');
      await assert.rejects(c.engine.publishNow(), /BAD_KEY/);
      assert.deepEqual(readdirSync(syncDir).sort(), before);
    } finally {
      await c.engine.abandon();
      await c.t.cleanup();
    }
  } finally {
    await a.cleanup();
  }
});

test('after revoke, archives written later are unreadable to the revoked machine; earlier ones stay readable', async () => {
  const [ma, mb] = [machine(), machine()];
  const syncDir = encryptedDir(ma, mb);
  const a = await box(syncDir, ma);
  const b = await box(syncDir, mb);
  try {
    a.fs.mkdir(rootCtx, 1, 'shared', 0o755);
    writeBoxFile(a, '/shared/before.txt', 'shared before the revoke');
    await a.engine.publishNow();
    await b.engine.importNow();
    assert.equal(readBoxFile(b, '/shared/before.txt'), 'shared before the revoke');
    // Published before the revoke, imported by B only after it (and after B wrote locally).
    writeBoxFile(a, '/late.txt', 'sealed before the revoke');
    const late = (await a.engine.publishNow()).archives[0]!.name;
    const known = archiveNames(syncDir);
    revokeAccess(syncDir, ma.configDir, mb.boxid);
    writeBoxFile(a, '/after.txt', 'not for the revoked machine');
    const { archives } = await a.engine.publishNow();
    assert.equal(archives.length, 1);
    assert.equal(known.has(archives[0]!.name), false);
    // The revoked machine no longer publishes (its changes stay local, in its outbox) ...
    // (in /shared: the reconciler leaves a directory with unpublished changes alone, and a revoked
    // machine's changes stay unpublished)
    writeBoxFile(b, '/shared/from-revoked.txt', 'written after being revoked');
    const count = archiveNames(syncDir).size;
    await assert.rejects(b.engine.publishNow(), /was revoked/);
    assert.equal(archiveNames(syncDir).size, count);
    assert.ok(b.engine.port.outboxCount() > 0);
    // ... which does not stop it from importing what it can still open.
    const report = await b.engine.importNow();
    assert.deepEqual(report.imported, [late]);
    assert.equal(boxPathExists(b, '/after.txt'), false);
    assert.ok(mb.warnings.some((w) => w.includes(archives[0]!.name) && w.includes('BAD_KEY')), mb.warnings.join('\n'));
    assert.equal(readBoxFile(b, '/shared/before.txt'), 'shared before the revoke');
    assert.equal(readBoxFile(b, '/late.txt'), 'sealed before the revoke');
    assert.equal(readBoxFile(b, '/shared/from-revoked.txt'), 'written after being revoked');
  } finally {
    await a.cleanup();
    await b.cleanup();
  }
});

test('stop on a machine without a key keeps unpublished changes in the outbox, says so, and the next start with a key publishes them', async () => {
  const [ma, mb, mc] = [machine(), machine(), machine()];
  const syncDir = encryptedDir(ma, mb);
  const c = await box(syncDir, mc);
  let engine = c.engine;
  try {
    writeBoxFile(c, '/waiting.txt', 'written before any grant');
    const before = readdirSync(syncDir).sort();
    const pending = engine.port.outboxCount();
    assert.ok(pending >= 1);
    const report = await engine.stop();
    assert.equal(report.unpublishedCount, pending);
    assert.match(report.reason ?? '', /BAD_KEY/);
    const said = mc.warnings.find((w) => w.includes('could not be published'));
    assert.ok(said !== undefined, mc.warnings.join('\n'));
    assert.match(said, /stay in the outbox/);
    assert.match(said, /zippy-key request/);
    assert.match(said, /once this machine has a key/);
    assert.deepEqual(readdirSync(syncDir).sort(), before, 'nothing reached the encrypted dir in clear');
    // A restart without a key still starts (the outbox waits) and keeps the row.
    await c.t.reopen();
    const { SyncEngine } = await import('../src/sync/engine.js');
    const options = { syncDir, boxid: mc.boxid, configDir: mc.configDir, publishDelayMs: 60_000, log: (w: string) => mc.warnings.push(w) };
    engine = await SyncEngine.start(c.t.fs, options);
    assert.equal(engine.port.outboxCount(), pending);
    assert.ok(mc.warnings.some((w) => w.includes('wait in the outbox until this machine has a key')), mc.warnings.join('\n'));
    await engine.abandon();
    // Granted: the next start publishes what waited, and a member reads it.
    requestAccess(syncDir, mc.configDir);
    grantAccess(syncDir, ma.configDir, mc.boxid, requestFingerprint(syncDir, mc.boxid));
    await c.t.reopen();
    engine = await SyncEngine.start(c.t.fs, options);
    assert.equal(engine.port.outboxCount(), 0);
    const a = await box(syncDir, ma);
    try {
      assert.equal(readBoxFile(a, '/waiting.txt'), 'written before any grant');
    } finally {
      await a.cleanup();
    }
  } finally {
    await engine.stop();
    await c.t.cleanup();
  }
});

test('a plain zip dropped into an encrypted sync dir is ignored with a warning (it could come from anyone)', async () => {
  const [ma, mb] = [machine(), machine()];
  const syncDir = encryptedDir(ma, mb);
  const zipPath = join(syncDir, 'injected.zip');
  const src = dir('zippy-crypto-zipsrc-');
  writeFileSync(join(src, 'injected.txt'), 'not from a member');
  assert.equal(spawnSync('zip', ['-q', zipPath, 'injected.txt'], { cwd: src }).status, 0);
  const a = await box(syncDir, ma);
  try {
    await a.engine.importNow();
    assert.equal(boxPathExists(a, '/injected.txt'), false);
    assert.ok(ma.warnings.some((w) => w.includes(zipPath) && w.includes('only takes sealed archives')), ma.warnings.join('\n'));
  } finally {
    await a.cleanup();
  }
});
