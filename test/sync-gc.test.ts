/**
 * Garbage collection and repacking between in-process boxes (each on its own sync dir, plus a
 * "server" dir; `syncDirs` copies archives and rm-log chunks and deletes what the rm-logs allow,
 * by the same rule the daemon applies): a file overwritten 100 times leaves a bounded number of
 * archives everywhere, history inside the keep period stays readable, and after every step every
 * sync dir holds every archive and block its box's visible tree needs. Also: repack merges small
 * archives and a peer importing it shows the same tree without conflict copies; archives leaving
 * a shared sync dir are re-pointed, not EIO; encrypted dirs get sealed rm-log chunks;
 * keep_history=0 against the default.
 */
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { unpack } from 'msgpackr';
import { rootCtx } from '../src/inode/types.js';
import { ArchiveBlockReader } from '../src/sync/archive-reader.js';
import { archivePaths, readIdx } from '../src/sync/archive-store.js';
import { grantAccess, initEncryptedSyncDir, loadKeyring, loadOrCreateBoxid, readSealedFile, requestAccess, requestFingerprint } from '../src/sync/crypto/index.js';
import { presentArchives } from '../src/sync/gc.js';
import type { Idx, Stamp } from '../src/sync/idx.js';
import { idxSizeMaxBytes } from '../src/sync/limits.js';
import { stampString } from '../src/sync/merge.js';
import { deadArchives, deletableArchives, readRmLogs, rmLogDirName } from '../src/sync/rmlog.js';
import type { Identity } from '../src/sync/state.js';
import { spawnSync } from 'node:child_process';
import { mountMainPath, openSyncBox, readBoxFile, tempDir, type SyncBox, writeBoxFile } from './fixtures.js';
import { seededRandom } from './random.js';
import { runOnce } from '../src/sync/daemon/run.js';
import { parseRemoteSpec, type RemoteSpec } from '../src/sync/daemon/remote.js';
import { RsyncRemote } from '../src/sync/daemon/remote-rsync.js';

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function dir(prefix = 'zippy-gc-'): string {
  const d = tempDir(prefix);
  dirs.push(d);
  return d;
}

type Keys = ReadonlyMap<string, Uint8Array> | undefined;

/** Every whole archive's idx in `syncDir`, by name. */
async function idxsOf(syncDir: string, keys: Keys = undefined): Promise<Map<string, Idx>> {
  const out = new Map<string, Idx>();
  for (const name of [...await presentArchives(syncDir)].sort()) {
    const { idxPath } = archivePaths(syncDir, name);
    out.set(name, keys === undefined ? await readIdx(idxPath)
      : await readIdx(idxPath, (p, n) => readSealedFile(p, { keys, archiveName: n, kind: 'idx', syncDir }, idxSizeMaxBytes)));
  }
  return out;
}

/**
 * One direction of a sync round, as the daemon does it: copy archives `to` lacks (zip before idx,
 * each under a temporary name first) and rm-log chunks, then delete in `to` what the rm-logs allow
 * (deletableArchives), idx before zip.
 */
async function syncDirs(from: string, to: string, keys: Keys = undefined): Promise<void> {
  const there = await presentArchives(to);
  for (const name of await presentArchives(from)) {
    if (there.has(name)) continue;
    const src = archivePaths(from, name);
    const dst = archivePaths(to, name);
    for (const [s, d] of [[src.zipPath, dst.zipPath], [src.idxPath, dst.idxPath]] as const) {
      const temp = join(to, `.tmp-${'0'.repeat(32)}`);
      copyFileSync(s, temp);
      renameSync(temp, d);
    }
  }
  const rmFrom = join(from, rmLogDirName);
  if (existsSync(rmFrom)) {
    for (const box of readdirSync(rmFrom)) {
      mkdirSync(join(to, rmLogDirName, box), { recursive: true });
      for (const chunk of readdirSync(join(rmFrom, box))) {
        const d = join(to, rmLogDirName, box, chunk);
        if (!chunk.startsWith('.') && !existsSync(d)) copyFileSync(join(rmFrom, box, chunk), d);
      }
    }
  }
  const { chunks, problems } = await readRmLogs(to, keys);
  assert.deepEqual(problems, []);
  for (const name of deletableArchives(deadArchives(chunks), await presentArchives(to))) {
    const p = archivePaths(to, name);
    unlinkSync(p.idxPath);
    unlinkSync(p.zipPath);
  }
}

/** Versions the local tree of `box` shows (its inodes' identities). */
function shownVersions(box: SyncBox): Identity[] {
  const out: Identity[] = [];
  for (const { value } of box.engine.port.syncTable('pubino').getRange({})) out.push(...(unpack(value) as Identity[]));
  return out;
}

/**
 * Asserts that `syncDir` holds what `box`'s visible tree needs: the record of every version it
 * shows and every block of those versions — read from the dir's own idx files, not from the
 * box's catalog — and that every file of the tree reads back whole.
 */
async function assertServes(box: SyncBox, syncDir: string, label: string, keys: Keys = undefined): Promise<void> {
  const idxs = await idxsOf(syncDir, keys);
  const stamps = new Set<string>();
  const blocks = new Set<string>();
  for (const idx of idxs.values()) {
    for (const v of idx.versions) stamps.add(stampString(v.stamp));
    for (const b of idx.blocks) blocks.add(Buffer.from(b.blockId).toString('hex'));
  }
  for (const id of shownVersions(box)) {
    if (id.stamp.counter === 0) continue;
    assert.ok(stamps.has(stampString(id.stamp)), `${label}: ${syncDir} lacks the record of ${id.path} ${stampString(id.stamp)}`);
    const flat = box.engine.state.flatList(id.stamp) ?? new Uint8Array(0);
    for (let i = 0; i < flat.length; i += 16) {
      const hex = Buffer.from(flat.subarray(i, i + 16)).toString('hex');
      if (!/^0+$/.test(hex)) assert.ok(blocks.has(hex), `${label}: ${syncDir} lacks block ${hex} of ${id.path}`);
    }
  }
  for (const name of box.fs.readdir(1).map((e) => e.name)) {
    const ino = box.fs.resolve(`/${name}`);
    if ((box.fs.getattr(ino).mode & 0o170000) === 0o100000) box.fs.read(ino, 0, box.fs.getattr(ino).size);
  }
}

/** Names of the archives in `syncDir` that carry a version of `path`. */
async function archivesOfPath(syncDir: string, path: string, keys: Keys = undefined): Promise<string[]> {
  return [...(await idxsOf(syncDir, keys))].filter(([, idx]) => idx.versions.some((v) => v.path === path)).map(([n]) => n);
}

/** The content of version `stamp` read through a box's block index from the archives in its sync dir. */
function readVersion(box: SyncBox, syncDir: string, stamp: Stamp, sizeBytes: number, keys: Keys = undefined): Buffer {
  const reader = new ArchiveBlockReader(syncDir, box.engine.state, () => keys);
  try {
    const flat = box.engine.state.flatList(stamp);
    assert.ok(flat !== undefined, `no block list for ${stampString(stamp)}`);
    const parts: Buffer[] = [];
    for (let i = 0; i < flat.length; i += 16) {
      const stored = box.engine.state.block(flat.subarray(i, i + 16));
      assert.ok(stored !== undefined, `block ${i / 16} of ${stampString(stamp)} is in no archive`);
      parts.push(reader.readStored(stored));
    }
    return Buffer.concat(parts).subarray(0, sizeBytes);
  } finally {
    reader.close();
  }
}

function stampOf(box: SyncBox, path: string): Stamp {
  const id = box.engine.state.identities(box.fs.resolve(`/${path}`)).find((i) => i.path === path);
  assert.ok(id !== undefined, `no identity for ${path}`);
  return id.stamp;
}

function content(step: number, random: ReturnType<typeof seededRandom>): Buffer {
  const data = Buffer.alloc(4096 + 1000 + random.int(4000));
  for (let i = 0; i < data.length; i++) data[i] = random.int(256);
  data.write(`version ${step}\n`);
  return data;
}

function overwrite(box: SyncBox, path: string, data: Buffer): void {
  const ino = box.fs.resolve(`/${path}`);
  box.fs.truncate(rootCtx, ino, 0);
  writeBoxFile(box, `/${path}`, data);
}

test('GC must-show: a file overwritten 100 times with zippy-sync rounds (real rsync) in between stays bounded, history stays readable, no dir ever lacks what its tree needs', async () => {
  const server = dir();
  const dirA = dir();
  const dirB = dir();
  const minuteMs = 60_000;
  let clock = Date.UTC(2026, 10, 22, 12, 0, 0);
  const gc = { gc: { keepHistoryMs: 10 * minuteMs, retireGraceMs: 0, repack: { archiveCountMin: 8 } }, gcIntervalMs: false as const, now: () => clock };
  const a = await openSyncBox(dirA, { gc });
  const b = await openSyncBox(dirB, { gc });
  const random = seededRandom(5);
  const history: { stamp: Stamp; data: Buffer; atMs: number }[] = [];
  const bound = 16;
  let most = { a: 0, b: 0, server: 0 };
  const remote = new RsyncRemote(parseRemoteSpec(server) as Extract<RemoteSpec, { kind: 'rsync' }>, 'ssh');
  const configDir = dir('zippy-gc-config-');
  const daemonRun = async (box: SyncBox, syncDir: string): Promise<void> => {
    const report = await runOnce({ syncDir, remote, boxid: box.boxid, configDir, signal: new AbortController().signal, rmLogSettleMs: 0 });
    assert.deepEqual(report.errors, [], `zippy-sync run of ${syncDir}`);
  };
  try {
    writeBoxFile(a, '/f.bin', 'start');
    for (let step = 1; step <= 100; step++) {
      clock += minuteMs;
      const data = content(step, random);
      overwrite(a, 'f.bin', data);
      await a.engine.publishNow();
      history.push({ stamp: stampOf(a, 'f.bin'), data, atMs: clock });
      if (step % 7 === 0) {
        writeBoxFile(b, `/b${step % 3}.txt`, `from b at ${step}`);
        await b.engine.publishNow();
      }
      await a.engine.gcNow();
      await assertServes(a, dirA, `step ${step} A`);
      await b.engine.gcNow();
      await assertServes(b, dirB, `step ${step} B`);
      // One zippy-sync run per machine (the daemon's own code: upload, delete on the server what
      // this box retired, download, delete locally what the other box retired); then B again,
      // so both have everything before the checks.
      await daemonRun(a, dirA);
      await assertServes(a, server, `step ${step} server after A's run`);
      await assertServes(a, dirA, `step ${step} A after its run`);
      await daemonRun(b, dirB);
      await b.engine.importNow();
      await assertServes(b, dirB, `step ${step} B after its run`);
      assert.equal(readBoxFile(b, '/f.bin'), data.toString());
      await daemonRun(a, dirA);
      await a.engine.importNow();
      await assertServes(a, dirA, `step ${step} A after download`);
      const counts = { a: (await archivesOfPath(dirA, 'f.bin')).length, b: (await archivesOfPath(dirB, 'f.bin')).length, server: (await archivesOfPath(server, 'f.bin')).length };
      most = { a: Math.max(most.a, counts.a), b: Math.max(most.b, counts.b), server: Math.max(most.server, counts.server) };
      for (const [where, n] of Object.entries(counts)) assert.ok(n <= bound, `step ${step}: ${n} archives of f.bin in ${where} > ${bound}`);
    }
    console.log(`most archives holding f.bin: ${JSON.stringify(most)} (bound ${bound}); archives in A's dir ${(await presentArchives(dirA)).size}, server ${(await presentArchives(server)).size}`);
    // History inside the keep period reads back, from every dir; versions before it are gone.
    const cutoffMs = clock - 10 * minuteMs;
    for (const h of history.filter((x) => x.atMs > cutoffMs)) {
      assert.deepEqual(readVersion(a, dirA, h.stamp, h.data.length), h.data);
      assert.deepEqual(readVersion(b, dirB, h.stamp, h.data.length), h.data);
    }
    const kept = new Set<string>();
    for (const idx of (await idxsOf(server)).values()) for (const v of idx.versions) kept.add(stampString(v.stamp));
    const old = history.filter((x) => x.atMs < cutoffMs - minuteMs);
    assert.ok(old.length > 80);
    assert.equal(old.filter((x) => kept.has(stampString(x.stamp))).length, 0, 'versions older than the keep period are retired');
    assert.equal(readBoxFile(a, '/b0.txt').startsWith('from b'), true);
  } finally {
    await a.cleanup();
    await b.cleanup();
  }
});

test('repack merges many small archives into one; a peer importing it and the rm-log shows the same tree, no conflict copies', async () => {
  const dirA = dir();
  const dirB = dir();
  const a = await openSyncBox(dirA, { gc: { gc: { retireGraceMs: 0 }, gcIntervalMs: false } });
  const b = await openSyncBox(dirB, { gc: { gc: { retireGraceMs: 0 }, gcIntervalMs: false } });
  try {
    for (let i = 0; i < 20; i++) {
      writeBoxFile(a, `/small-${i}.txt`, `small file ${i}\n`.repeat(i + 1));
      await a.engine.publishNow();
    }
    a.fs.mkdir(rootCtx, 1, 'dir', 0o755);
    writeBoxFile(a, '/dir/same.txt', 'small file 3\n'.repeat(4));
    await a.engine.publishNow();
    assert.equal((await presentArchives(dirA)).size, 21);
    await syncDirs(dirA, dirB);
    await b.engine.importNow();
    const report = await a.engine.gcNow();
    assert.ok(report.repacked !== undefined, 'a repack ran');
    assert.equal(report.repacked.from.length, 21);
    assert.deepEqual([...await presentArchives(dirA)], [report.repacked.name]);
    assert.equal(report.retired.length, 21);
    await syncDirs(dirA, dirB);
    assert.deepEqual([...await presentArchives(dirB)], [report.repacked.name], 'the peer deleted the merged archives');
    await b.engine.importNow();
    const names = (box: SyncBox): string[] => box.fs.readdir(1).map((e) => e.name).sort();
    assert.deepEqual(names(b), names(a));
    assert.equal(names(b).some((n) => n.includes('sync-conflict')), false);
    for (let i = 0; i < 20; i++) assert.equal(readBoxFile(b, `/small-${i}.txt`), `small file ${i}\n`.repeat(i + 1));
    assert.equal(readBoxFile(b, '/dir/same.txt'), 'small file 3\n'.repeat(4));
    // The repacked versions are the same versions: editing on B and importing on A conflicts with nothing.
    writeBoxFile(b, '/small-5.txt', 'edited on b');
    await b.engine.publishNow();
    await syncDirs(dirB, dirA);
    await a.engine.importNow();
    assert.equal(readBoxFile(a, '/small-5.txt').startsWith('edited on b'), true);
    assert.equal(names(a).some((n) => n.includes('sync-conflict')), false);
    // A fresh machine bootstrapping from the repacked dir alone gets the same tree.
    const dirC = dir();
    await syncDirs(dirA, dirC);
    const c = await openSyncBox(dirC);
    try {
      assert.deepEqual(names(c), names(a));
      assert.equal(readBoxFile(c, '/small-7.txt'), `small file 7\n`.repeat(8));
      await assertServes(c, dirC, 'fresh peer');
    } finally {
      await c.cleanup();
    }
  } finally {
    await a.cleanup();
    await b.cleanup();
  }
});

test('an archive leaving a shared sync dir (another mount\'s GC) is re-pointed, never EIO, for blocks held elsewhere', async () => {
  const shared = dir();
  const a = await openSyncBox(shared, { gc: { gc: { retireGraceMs: 0 }, gcIntervalMs: false } });
  const b = await openSyncBox(shared, { gc: { gc: { retireGraceMs: 0 }, gcIntervalMs: false } });
  try {
    for (let i = 0; i < 18; i++) {
      writeBoxFile(a, `/f${i}.txt`, Buffer.alloc(9000, 65 + i));
      await a.engine.publishNow();
    }
    await b.engine.importNow();
    // B reads some files first, so its reader holds open descriptors of soon-deleted zips.
    for (let i = 0; i < 18; i += 3) assert.equal(readBoxFile(b, `/f${i}.txt`), Buffer.alloc(9000, 65 + i).toString());
    const before = (await presentArchives(shared)).size;
    const report = await a.engine.gcNow();
    assert.ok(report.repacked !== undefined);
    assert.equal((await presentArchives(shared)).size, before - 18 + 1);
    await b.engine.importNow();
    for (let i = 0; i < 18; i++) {
      const ino = b.fs.resolve(`/f${i}.txt`);
      assert.deepEqual(b.fs.read(ino, 0, 9000), Buffer.alloc(9000, 65 + i), `f${i}.txt reads after its archive left`);
    }
    assert.equal(b.engine.state.archiveNames().size, (await presentArchives(shared)).size);
  } finally {
    await a.cleanup();
    await b.cleanup();
  }
});

test('keep_history=0 keeps only the visible version; the default keeps every version of the last week', async () => {
  for (const keepHistoryMs of [0, undefined]) {
    const syncDir = dir();
    const a = await openSyncBox(syncDir, { gc: { gc: keepHistoryMs === undefined ? { retireGraceMs: 0 } : { keepHistoryMs, retireGraceMs: 0 }, gcIntervalMs: false } });
    try {
      const random = seededRandom(9);
      const versions: { stamp: Stamp; data: Buffer }[] = [];
      writeBoxFile(a, '/f.bin', 'x');
      for (let step = 0; step < 12; step++) {
        const data = content(step, random);
        overwrite(a, 'f.bin', data);
        await a.engine.publishNow();
        versions.push({ stamp: stampOf(a, 'f.bin'), data });
        await a.engine.gcNow();
        await assertServes(a, syncDir, `keep ${String(keepHistoryMs)} step ${step}`);
      }
      const holding = await archivesOfPath(syncDir, 'f.bin');
      const archiveCount = (await presentArchives(syncDir)).size;
      if (keepHistoryMs === 0) {
        // The first archive stays for the root directory's version (it also carries the first,
        // dead, version of f.bin until a repack); every other old version's archive is retired.
        assert.equal(archiveCount, 2);
        assert.ok(holding.length <= 2);
        const kept = [...(await idxsOf(syncDir)).values()].flatMap((idx) => idx.versions.filter((v) => v.path === 'f.bin').map((v) => stampString(v.stamp)));
        assert.ok(kept.includes(stampString(versions.at(-1)!.stamp)));
        assert.ok(kept.length <= 2, `versions of f.bin kept: ${kept.length}`);
      } else {
        assert.equal(archiveCount, 12, 'nothing retired inside the week');
        for (const v of versions) assert.deepEqual(readVersion(a, syncDir, v.stamp, v.data.length), v.data);
      }
      assert.equal(readBoxFile(a, '/f.bin'), versions.at(-1)!.data.toString());
    } finally {
      await a.cleanup();
    }
  }
});

test('GC in an encrypted sync dir writes sealed rm-log chunks that only members open', async () => {
  const configA = join(dir('zippy-gc-home-'), 'zippy-fs');
  const configB = join(dir('zippy-gc-home-'), 'zippy-fs');
  const boxA = loadOrCreateBoxid(configA);
  const boxB = loadOrCreateBoxid(configB);
  const syncDir = dir();
  initEncryptedSyncDir(syncDir, configA);
  requestAccess(syncDir, configB);
  assert.equal(grantAccess(syncDir, configA, boxB, requestFingerprint(syncDir, boxB)), true);
  const keyring = loadKeyring(syncDir, configA);
  assert.ok(keyring.encrypted);
  const keys = keyring.keys;
  const a = await openSyncBox(syncDir, { boxid: boxA, configDir: configA, gc: { gc: { keepHistoryMs: 0, retireGraceMs: 0, repack: { archiveCountMin: 2 } }, gcIntervalMs: false } });
  const b = await openSyncBox(syncDir, { boxid: boxB, configDir: configB, gc: { gc: { retireGraceMs: 0 }, gcIntervalMs: false } });
  try {
    for (let step = 0; step < 4; step++) {
      writeBoxFile(a, '/secret.txt', `secret number ${step}`);
      await a.engine.publishNow();
    }
    await b.engine.importNow();
    const report = await a.engine.gcNow();
    assert.ok(report.retired.length >= 2, `retired ${report.retired.length}`);
    assert.ok(report.repacked !== undefined, 'the two small archives left were repacked');
    assert.deepEqual([...await presentArchives(syncDir)], [report.repacked.name]);
    for (const path of Object.values(archivePaths(syncDir, report.repacked.name))) {
      assert.equal(readFileSync(path).subarray(0, 8).toString('latin1'), 'ZIPPYENC', `${path} is sealed`);
    }
    const chunkDir = join(syncDir, rmLogDirName, boxA);
    const chunks = readdirSync(chunkDir);
    assert.equal(chunks.length, 1);
    const bytes = readFileSync(join(chunkDir, chunks[0]!));
    assert.equal(bytes.subarray(0, 8).toString('latin1'), 'ZIPPYENC');
    assert.equal(bytes.includes(Buffer.from(report.retired[0]!)), false, 'archive names are not readable in the chunk');
    const opened = await readRmLogs(syncDir, keys);
    assert.deepEqual(opened.problems, []);
    assert.deepEqual(opened.chunks.flatMap((c) => c.entries.map((e) => e.archive)).sort(), [...report.retired].sort());
    const plain = await readRmLogs(syncDir);
    assert.equal(plain.chunks.length, 0);
    assert.equal(plain.problems.length, 1);
    await b.engine.importNow();
    assert.equal(readBoxFile(b, '/secret.txt'), 'secret number 3');
    await assertServes(b, syncDir, 'encrypted peer', keys);
  } finally {
    await a.cleanup();
    await b.cleanup();
  }
});

test('versions named by copy runs stay until a repack rewrites the copies: a fresh peer can always rebuild the file', async () => {
  const syncDir = dir();
  const a = await openSyncBox(syncDir, { gc: { gc: { keepHistoryMs: 0, retireGraceMs: 0, repack: { archiveCountMin: 8 } }, gcIntervalMs: false } });
  const random = seededRandom(11);
  try {
    const size = 64 * 1024;
    const expected = Buffer.alloc(size);
    for (let i = 0; i < size; i++) expected[i] = random.int(256);
    writeBoxFile(a, '/big.bin', expected);
    await a.engine.publishNow();
    let repacks = 0;
    for (let step = 0; step < 20; step++) {
      // A 4 KiB edit: the new version copies every other block from the one before.
      const offset = random.int(16) * 4096;
      const patch = Buffer.alloc(4096, step + 1);
      patch.copy(expected, offset);
      writeBoxFile(a, '/big.bin', patch, offset);
      await a.engine.publishNow();
      const report = await a.engine.gcNow();
      if (report.repacked !== undefined) repacks++;
      const fresh = dir();
      await syncDirs(syncDir, fresh);
      const c = await openSyncBox(fresh);
      try {
        const ino = c.fs.resolve('/big.bin');
        assert.deepEqual(c.fs.read(ino, 0, size), expected, `step ${step}: a fresh peer rebuilds the file`);
      } finally {
        await c.cleanup();
      }
    }
    assert.ok(repacks >= 1, 'the chain of small archives was repacked');
    assert.ok((await archivesOfPath(syncDir, 'big.bin')).length <= 9, 'a repack cut the chain of copies');
  } finally {
    await a.cleanup();
  }
});

test('a peer offline with unpublished edits on a version retired meanwhile still merges: its GC rescues the blocks before the dying archive goes', async () => {
  const server = dir();
  const dirA = dir();
  const dirB = dir();
  const a = await openSyncBox(dirA, { gc: { gc: { keepHistoryMs: 0, retireGraceMs: 0 }, gcIntervalMs: false } });
  const b = await openSyncBox(dirB, { gc: { gc: { retireGraceMs: 0 }, gcIntervalMs: false } });
  const random = seededRandom(21);
  const bytes = (n: number): Buffer => Buffer.from(Array.from({ length: n }, () => random.int(256)));
  try {
    writeBoxFile(a, '/readme.txt', 'the first archive carries the root directory');
    await a.engine.publishNow();
    const v1 = bytes(5 * 4096);
    writeBoxFile(a, '/doc.bin', v1);
    await a.engine.publishNow();
    await syncDirs(dirA, server);
    await syncDirs(server, dirB);
    await b.engine.importNow();
    assert.deepEqual(b.fs.read(b.fs.resolve('/doc.bin'), 0, v1.length), v1);
    // B, offline, edits one block: its version copies the four others from A's first version.
    const patch = Buffer.alloc(4096, 0x42);
    writeBoxFile(b, '/doc.bin', patch, 2 * 4096);
    await b.engine.publishNow();
    const edited = Buffer.from(v1);
    patch.copy(edited, 2 * 4096);
    // Meanwhile A overwrites the file twice and retires the archives of the old versions.
    for (let i = 0; i < 2; i++) {
      overwrite(a, 'doc.bin', bytes(5 * 4096));
      await a.engine.publishNow();
      await a.engine.gcNow();
    }
    const last = a.fs.read(a.fs.resolve('/doc.bin'), 0, 5 * 4096);
    await syncDirs(dirA, server);
    // B comes back: upload, download; its GC runs before the dying archives are deleted here.
    await syncDirs(dirB, server);
    const downloadOnly = async (): Promise<void> => {
      const there = await presentArchives(dirB);
      for (const name of await presentArchives(server)) {
        if (there.has(name)) continue;
        for (const kind of ['zipPath', 'idxPath'] as const) copyFileSync(archivePaths(server, name)[kind], archivePaths(dirB, name)[kind]);
      }
      for (const box of readdirSync(join(server, rmLogDirName))) {
        mkdirSync(join(dirB, rmLogDirName, box), { recursive: true });
        for (const chunk of readdirSync(join(server, rmLogDirName, box))) copyFileSync(join(server, rmLogDirName, box, chunk), join(dirB, rmLogDirName, box, chunk));
      }
    };
    await downloadOnly();
    await b.engine.importNow();
    const rescue = await b.engine.gcNow();
    assert.ok(rescue.repacked !== undefined, 'B rescued what only dying archives held');
    await syncDirs(server, dirB);
    await b.engine.importNow();
    await assertServes(b, dirB, 'B after the dying archives went');
    await syncDirs(dirB, server);
    await syncDirs(server, dirA);
    await a.engine.importNow();
    await assertServes(a, dirA, 'A after B\'s rescue');
    const conflictName = (box: SyncBox): string => box.fs.readdir(1).map((e) => e.name).find((n) => n.includes('sync-conflict'))!;
    assert.deepEqual(a.fs.read(a.fs.resolve('/doc.bin'), 0, last.length), last);
    assert.ok(conflictName(a) !== undefined, 'B\'s concurrent edit shows as a conflict copy on A');
    assert.deepEqual(a.fs.read(a.fs.resolve(`/${conflictName(a)}`), 0, edited.length), edited);
    assert.equal(conflictName(b), conflictName(a));
    // A machine bootstrapping from the server alone sees the same.
    const dirC = dir();
    await syncDirs(server, dirC);
    const c = await openSyncBox(dirC);
    try {
      assert.deepEqual(c.fs.readdir(1).map((e) => e.name).sort(), a.fs.readdir(1).map((e) => e.name).sort());
      assert.deepEqual(c.fs.read(c.fs.resolve(`/${conflictName(a)}`), 0, edited.length), edited);
    } finally {
      await c.cleanup();
    }
  } finally {
    await a.cleanup();
    await b.cleanup();
  }
});

test('deletion rule: a dead archive goes once its superseding archives are there, or dead with theirs there (chains)', () => {
  const n = (c: string): string => c.repeat(32);
  const chunk = (entries: [string, string[]][]): Parameters<typeof deadArchives>[0][number] => ({
    boxid: n('b'), chunk: n('c'), relativePath: 'x', entries: entries.map(([archive, supersededBy]) => ({ archive, retiredAtMs: 1, supersededBy })),
  });
  // 1 superseded by 2, 2 (retired later) by 3; 4 by 5, which never arrived; 6 by nothing; 7 and 8 by each other.
  const dead = deadArchives([chunk([[n('1'), [n('2')]], [n('2'), [n('3')]], [n('4'), [n('5')]], [n('6'), []], [n('7'), [n('8')]], [n('8'), [n('7')]]])]);
  assert.deepEqual(deletableArchives(dead, new Set([n('1'), n('3'), n('4'), n('6'), n('7'), n('8')])), [n('1'), n('6')]);
  assert.deepEqual(deletableArchives(dead, new Set([n('1'), n('2')])), [], 'nothing that replaced 2 is here yet');
  assert.deepEqual(deletableArchives(dead, new Set([n('1'), n('2'), n('3')])), [n('1'), n('2')]);
});

test('zippy-fs documents keep_history and gc_interval_ms, and refuses bad values as usage errors (exit 2)', () => {
  const help = spawnSync(process.execPath, [mountMainPath(), '--help'], { encoding: 'utf8' });
  assert.equal(help.status, 0);
  assert.match(help.stdout, /keep_history=D/);
  assert.match(help.stdout, /gc_interval_ms=N/);
  const mnt = dir();
  for (const bad of ['keep_history=3y', 'keep_history=1.5d', 'keep_history=-1', 'gc_interval_ms=x']) {
    const run = spawnSync(process.execPath, [mountMainPath(), '-f', '-o', bad, mnt, dir()], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(run.status, 2, `${bad}: ${run.stderr}`);
    assert.match(run.stderr, /keep_history|gc_interval_ms/);
  }
});

test('automatic GC waits while the mount serves requests: it runs once they stop, or when it waited deferMaxMs', async () => {
  const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
  const waitForRun = async (box: SyncBox): Promise<void> => {
    for (let i = 0; i < 1000 && box.engine.gcRunCount === 0; i++) await sleep(10);
    assert.equal(box.engine.gcRunCount, 1, 'GC ran');
  };
  // A request counter that every look finds moved while `busy`.
  let busy = true;
  let requests = 0;
  const activity = (): number => (busy ? ++requests : requests);
  const quiet = await openSyncBox(dir(), { gc: { gcIntervalMs: 1, gcYield: { activity, quietMs: 5, deferMaxMs: 600_000 } } });
  const never = await openSyncBox(dir(), { gc: { gcIntervalMs: 1, gcYield: { activity: () => ++requests, quietMs: 5, deferMaxMs: 50 } } });
  try {
    for (const box of [quiet, never]) {
      writeBoxFile(box, '/f', 'one');
      await box.engine.publishNow(); // a publish that wrote an archive schedules GC
    }
    await sleep(300);
    assert.equal(quiet.engine.gcRunCount, 0, 'no run while every look finds new requests');
    busy = false;
    await waitForRun(quiet);
    await waitForRun(never); // always busy: runs once deferMaxMs is over
  } finally {
    await quiet.cleanup();
    await never.cleanup();
  }
});

test('GC planning gives the event loop a turn between slices of its per-block loops, and the store reads the same after the run', async () => {
  const box = await openSyncBox(dir()); // the fixture's slice is 0: a turn every 64 steps
  try {
    writeBoxFile(box, '/big', Buffer.from(Array.from({ length: 1024 * 1024 }, (_, i) => (i * 7) & 0xff)));
    await box.engine.publishNow();
    writeBoxFile(box, '/big', 'shorter');
    await box.engine.publishNow();
    const report = await box.engine.gcNow();
    assert.ok(report.pauses >= 2, `256 blocks of the first version planned in turns (pauses: ${report.pauses})`);
    assert.ok(readBoxFile(box, '/big').startsWith('shorter'), 'the store reads the same after the run');
  } finally {
    await box.cleanup();
  }
});
