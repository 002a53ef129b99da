/**
 * zippy-fsck against injected damage, through the real CLI (dist/tools/fsck.js): each kind is
 * detected with a message naming its place (file, segment:offset, inode, archive), each
 * repairable one is repaired (exit 0, a clean re-check, a backup saved), and data the damage did
 * not touch reads back after the repair — through a fresh store and, where blocks live in
 * archives, its sync engine.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { appendFileSync, closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, rmSync, statSync, truncateSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openSyncBox, openTestFs, seededRandom, tempDir, writeBoxFile } from './fixtures.js';
import { Btree } from '../src/btree/db.js';
import { blockKey, direntKey, inoKey, linkKey, metaKeys } from '../src/btree/keys.js';
import { decodeBlockPointer, decodeInode, encodeBlockPointer, encodeInode, encodeU64 } from '../src/btree/records.js';
import { FileSystem } from '../src/inode/fs.js';
import { Store } from '../src/inode/store.js';
import { rootCtx, rootIno, S_IFREG } from '../src/inode/types.js';
import { initEncryptedSyncDir, loadOrCreateBoxid } from '../src/sync/crypto/index.js';
import { SyncEngine } from '../src/sync/engine.js';

const fsckJs = fileURLToPath(new URL('../tools/fsck.js', import.meta.url));
const configHome = tempDir('zippy-fsck-config-');
const boxid = 'ab'.repeat(16);
after(() => rmSync(configHome, { recursive: true, force: true }));

interface Reported { kind: string; place: string; message: string; repairable: boolean; repaired: boolean }
interface FsckJson { clean: boolean; problems: Reported[]; remaining: Reported[] | null; repair: { backupDir: string | null; quarantineDir: string | null } | null; notes: string[] }

function fsck(args: string[], home = configHome): { status: number | null; json: FsckJson; stderr: string } {
  const r = spawnSync(process.execPath, [fsckJs, '--json', ...args], { encoding: 'utf8', env: { ...process.env, XDG_CONFIG_HOME: home } });
  let json: FsckJson;
  try {
    json = JSON.parse(r.stdout) as FsckJson;
  } catch {
    throw new Error(`fsck ${args.join(' ')}: exit ${r.status}, not JSON: ${r.stdout}\n${r.stderr}`);
  }
  return { status: r.status, json, stderr: r.stderr };
}

function pattern(length: number, seed: number): Buffer {
  const data = Buffer.alloc(length);
  for (let i = 0; i < length; i++) data[i] = (i * 31 + seed * 17 + (i >> 8)) & 0xff;
  return data;
}

/** A store with files /a (3 blocks), /d/b (2 blocks), /d/c (1 block) and a hard link /d/a2 to /a; optionally published to a sync dir. */
interface Fixture {
  storeDir: string;
  syncDir: string | undefined;
  files: Map<string, Buffer>;
  cleanup(): void;
}

async function makeStore(options: { sync?: boolean; segmentSizeMaxBytes?: number; unpublished?: boolean } = {}): Promise<Fixture> {
  const files = new Map<string, Buffer>([['/a', pattern(3 * 4096, 1)], ['/d/b', pattern(2 * 4096 - 100, 2)], ['/d/c', pattern(4096, 3)]]);
  let storeDir: string;
  let syncDir: string | undefined;
  if (options.sync === true) {
    syncDir = tempDir('zippy-fsck-sync-');
    const box = await openSyncBox(syncDir, { boxid });
    box.fs.mkdir(rootCtx, rootIno, 'd', 0o755);
    for (const [path, data] of files) writeBoxFile(box, path, data);
    box.fs.link(rootCtx, box.fs.resolve('/a'), box.fs.resolve('/d'), 'a2');
    await box.engine.publishNow();
    if (options.unpublished === true) {
      files.set('/u', pattern(2 * 4096, 9));
      writeBoxFile(box, '/u', files.get('/u')!);
      await box.fs.fsync();
      await box.engine.abandon();
    } else {
      await box.engine.stop();
    }
    await box.t.fs.close();
    await box.t.store.close();
    storeDir = box.t.dir;
  } else {
    const t = openTestFs(options.segmentSizeMaxBytes === undefined ? {} : { store: { segmentSizeMaxBytes: options.segmentSizeMaxBytes } });
    const d = t.fs.mkdir(rootCtx, rootIno, 'd', 0o755);
    for (const [path, data] of files) {
      const { parent, name } = t.fs.resolveParent(path);
      const f = t.fs.mknod(rootCtx, parent, name, S_IFREG | 0o644);
      t.fs.write(rootCtx, f.ino, 0, data);
      await t.fs.fsync(f.ino);
    }
    t.fs.link(rootCtx, t.fs.resolve('/a'), d.ino, 'a2');
    await t.fs.close();
    await t.store.close();
    storeDir = t.dir;
  }
  files.set('/d/a2', files.get('/a')!);
  return {
    storeDir, syncDir, files,
    cleanup() {
      rmSync(storeDir, { recursive: true, force: true });
      if (syncDir !== undefined) rmSync(syncDir, { recursive: true, force: true });
    },
  };
}

/** Runs `fn` on the store's LMDB (read-write), then closes it. */
async function withBtree(storeDir: string, fn: (btree: Btree) => void): Promise<void> {
  const btree = Btree.open(join(storeDir, 'lmdb'));
  try {
    btree.transaction(() => fn(btree));
    await btree.sync();
  } finally {
    await btree.close();
  }
}

/** The location of block `blockIndex` of the file at `path`. */
async function locate(storeDir: string, path: string, blockIndex: number): Promise<{ ino: number; segment: number; offset: number; file: string }> {
  const store = Store.open(storeDir, { readOnly: true });
  try {
    const fs = new FileSystem(store, { readOnly: true, writebackDelayMs: 0 });
    const ino = fs.resolve(path);
    const ptr = decodeBlockPointer(store.btree.table('blockmap').get(blockKey(ino, blockIndex))!, 'test');
    return { ino, segment: ptr.segment, offset: ptr.offset, file: store.log.segmentFile(ptr.segment) };
  } finally {
    await store.abandon();
  }
}

function flipByte(file: string, at: number): void {
  const fd = openSync(file, 'r+');
  const byte = Buffer.alloc(1);
  readSync(fd, byte, 0, 1, at);
  byte[0] = byte[0]! ^ 0x5a;
  writeSync(fd, byte, 0, 1, at);
  closeSync(fd);
}

/** Reads every file of `expect` through a fresh store (with its sync engine when there is a sync dir); returns the paths whose content differs. */
async function readBack(storeDir: string, syncDir: string | undefined, expect: Map<string, Buffer>): Promise<string[]> {
  const store = Store.open(storeDir);
  const fs = new FileSystem(store, { writebackDelayMs: 0 });
  const engine = syncDir === undefined ? undefined : await SyncEngine.start(fs, { syncDir, boxid, watch: false, log: () => undefined, configDir: join(configHome, 'zippy-fs') });
  const wrong: string[] = [];
  try {
    for (const [path, data] of expect) {
      try {
        const ino = fs.resolve(path);
        if (!fs.read(ino, 0, data.length + 10).equals(data)) wrong.push(path);
      } catch (e) {
        wrong.push(`${path} (${(e as Error).message})`);
      }
    }
  } finally {
    if (engine !== undefined) await engine.abandon();
    await fs.close();
    await store.close();
  }
  return wrong;
}

/** Checks (expecting `kinds` with places matching), repairs, re-checks clean; returns the repair report. */
function detectAndRepair(fx: Fixture, kinds: { kind: string; place: RegExp }[], options: { sync?: boolean } = {}): FsckJson {
  const args = [fx.storeDir, ...(options.sync === true && fx.syncDir !== undefined ? ['--sync', fx.syncDir] : [])];
  const checked = fsck(args);
  assert.equal(checked.status, 1, `damage detected (exit 1): ${JSON.stringify(checked.json.problems)} ${checked.stderr}`);
  for (const want of kinds) {
    assert.ok(checked.json.problems.some((p) => p.kind === want.kind && want.place.test(p.place)),
      `a ${want.kind} problem at ${want.place}: got ${JSON.stringify(checked.json.problems.map((p) => [p.kind, p.place]))}`);
  }
  const repaired = fsck(['--repair', ...args]);
  assert.equal(repaired.status, 0, `repair leaves it clean: ${JSON.stringify(repaired.json.remaining)} ${repaired.stderr}`);
  assert.ok(repaired.json.problems.every((p) => p.repaired), 'every problem marked repaired');
  const again = fsck(args);
  assert.equal(again.status, 0, `re-check clean: ${JSON.stringify(again.json.problems)}`);
  return repaired.json;
}

test('healthy store and its sync dir check clean (exit 0), also as segments/', async () => {
  const fx = await makeStore({ sync: true });
  try {
    const r = fsck([fx.storeDir, '--sync', fx.syncDir!]);
    assert.equal(r.status, 0, JSON.stringify(r.json.problems));
    assert.equal(r.json.clean, true);
    assert.equal(fsck([join(fx.storeDir, 'segments')]).status, 0);
  } finally {
    fx.cleanup();
  }
});

test('1. flipped byte in a published block: detected at segment:offset and inode, repaired from the sync dir', async () => {
  const fx = await makeStore({ sync: true });
  try {
    const loc = await locate(fx.storeDir, '/a', 1);
    flipByte(loc.file, loc.offset + 32 + 100);
    const fileName = loc.file.split('/').pop()!;
    const json = detectAndRepair(fx, [
      { kind: 'block-unreadable', place: new RegExp(`inode ${loc.ino} block 1 \\(${fileName}:${loc.offset}\\)`) },
      { kind: 'segment-corrupt', place: new RegExp(`${fileName}:${loc.offset}$`) },
    ], { sync: true });
    assert.ok(json.repair?.backupDir !== null && existsSync(join(json.repair!.backupDir!, 'lmdb', 'data.mdb')), 'LMDB saved before the repair');
    assert.ok(existsSync(join(json.repair!.backupDir!, 'segments', fileName)), 'the damaged segment is kept in the backup');
    assert.deepEqual(await readBack(fx.storeDir, fx.syncDir, fx.files), [], 'every file reads back, the damaged block from its archive');
  } finally {
    fx.cleanup();
  }
});

test('2. truncated segment (torn record): detected, the lost block dropped, everything else intact', async () => {
  const fx = await makeStore();
  try {
    const loc = await locate(fx.storeDir, '/d/c', 0);
    truncateSync(loc.file, loc.offset + 100);
    const fileName = loc.file.split('/').pop()!;
    detectAndRepair(fx, [
      { kind: 'segment-short', place: new RegExp(fileName) },
      { kind: 'torn-tail', place: new RegExp(`${fileName}:${loc.offset}$`) },
      { kind: 'block-unreadable', place: new RegExp(`inode ${loc.ino} block 0`) },
    ]);
    const survivors = new Map([...fx.files].filter(([p]) => p !== '/d/c'));
    assert.deepEqual(await readBack(fx.storeDir, undefined, survivors), []);
    assert.deepEqual(await readBack(fx.storeDir, undefined, new Map([['/d/c', Buffer.alloc(4096)]])), [], 'the lost block reads as zeros, the file is still there');
  } finally {
    fx.cleanup();
  }
});

test('3. garbage past the committed head (torn tail of an interrupted append): detected and cut, bytes saved', async () => {
  const fx = await makeStore();
  try {
    const segments = join(fx.storeDir, 'segments');
    const last = readdirSync(segments).sort().pop()!;
    const sizeBefore = statSync(join(segments, last)).size;
    appendFileSync(join(segments, last), pattern(5000, 7));
    const before = [join(segments, last), join(fx.storeDir, 'lmdb', 'data.mdb')].map((f) => readFileSync(f));
    assert.equal(fsck([fx.storeDir]).status, 1);
    assert.deepEqual([join(segments, last), join(fx.storeDir, 'lmdb', 'data.mdb')].map((f) => readFileSync(f)), before, 'a check changes nothing (no recovery cut, no LMDB write)');
    const json = detectAndRepair(fx, [{ kind: 'unreferenced-tail', place: new RegExp(`${last}:${sizeBefore}$`) }]);
    assert.equal(statSync(join(segments, last)).size, sizeBefore);
    assert.ok(existsSync(join(json.repair!.backupDir!, 'segments', `${last}.from-${sizeBefore}`)), 'cut bytes saved');
    assert.deepEqual(await readBack(fx.storeDir, undefined, fx.files), []);
  } finally {
    fx.cleanup();
  }
});

test('4. missing segment: detected naming the segment and the inodes; with --sync the blocks come back from the archives', async () => {
  const fx = await makeStore({ sync: true });
  try {
    const loc = await locate(fx.storeDir, '/d/b', 0);
    unlinkSync(loc.file);
    const fileName = loc.file.split('/').pop()!;
    detectAndRepair(fx, [{ kind: 'segment-missing', place: new RegExp(`^${fileName}$`) }], { sync: true });
    assert.deepEqual(await readBack(fx.storeDir, fx.syncDir, fx.files), []);
  } finally {
    fx.cleanup();
  }
});

test('5. deleted LMDB files: rebuilt from the sync dir (paths, data) and unpublished data to lost+found', async () => {
  const fx = await makeStore({ sync: true, unpublished: true });
  try {
    const unpublished = fx.files.get('/u')!;
    rmSync(join(fx.storeDir, 'lmdb'), { recursive: true });
    const json = detectAndRepair(fx, [{ kind: 'btree-unreadable', place: /lmdb$/ }], { sync: true });
    assert.ok(json.repair?.backupDir !== null);
    const published = new Map([...fx.files].filter(([p]) => p !== '/u'));
    assert.deepEqual(await readBack(fx.storeDir, fx.syncDir, published), [], 'published files back at their paths');
    const store = Store.open(fx.storeDir);
    const fs = new FileSystem(store, { writebackDelayMs: 0 });
    try {
      const lost = fs.readdir(fs.resolve('/lost+found')).filter((e) => e.name.startsWith('#'));
      assert.equal(lost.length, 1, `only the unpublished file is in lost+found: ${lost.map((e) => e.name).join(' ')}`);
      assert.ok(fs.read(lost[0]!.ino, 0, unpublished.length).equals(unpublished), 'its data recovered from the segments');
    } finally {
      await fs.close();
      await store.close();
    }
  } finally {
    fx.cleanup();
  }
});

test('6. deleted LMDB files without a sync dir: every file recovered into lost+found with its data', async () => {
  const fx = await makeStore();
  try {
    const { ino } = await locate(fx.storeDir, '/d/b', 0);
    rmSync(join(fx.storeDir, 'lmdb'), { recursive: true });
    detectAndRepair(fx, [{ kind: 'btree-unreadable', place: /lmdb$/ }]);
    assert.deepEqual(await readBack(fx.storeDir, undefined, new Map([[`/lost+found/#${ino}`, fx.files.get('/d/b')!]])), []);
  } finally {
    fx.cleanup();
  }
});

test('6b. LMDB pages overwritten (reading them would crash): detected in a child process, rebuilt from the sync dir', async () => {
  const fx = await makeStore({ sync: true });
  try {
    const data = join(fx.storeDir, 'lmdb', 'data.mdb');
    const rnd = seededRandom(6);
    for (let page = 0; page * 4096 < statSync(data).size; page++) {
      const fd = openSync(data, 'r+');
      writeSync(fd, Buffer.from(Array.from({ length: 200 }, () => rnd.int(256))), 0, 200, page * 4096 + 64);
      closeSync(fd);
    }
    detectAndRepair(fx, [{ kind: 'btree-unreadable', place: /lmdb$/ }], { sync: true });
    assert.deepEqual(await readBack(fx.storeDir, fx.syncDir, fx.files), []);
  } finally {
    fx.cleanup();
  }
});

test('7. dangling block map entry (inode that does not exist): detected by inode, dropped', async () => {
  const fx = await makeStore();
  try {
    const loc = await locate(fx.storeDir, '/a', 0);
    await withBtree(fx.storeDir, (btree) => {
      const value = btree.table('blockmap').get(blockKey(loc.ino, 0))!;
      btree.table('blockmap').putSync(blockKey(9999, 0), value);
      btree.table('blockmap').putSync(blockKey(loc.ino, 40), encodeBlockPointer({ ...decodeBlockPointer(value, 't'), offset: loc.offset + 7 }));
    });
    detectAndRepair(fx, [
      { kind: 'block-orphan', place: /^inode 9999 block 0$/ },
      { kind: 'block-beyond-size', place: new RegExp(`^inode ${loc.ino} block 40$`) },
    ]);
    assert.deepEqual(await readBack(fx.storeDir, undefined, fx.files), []);
  } finally {
    fx.cleanup();
  }
});

test('8. wrong nlink: detected on the inode, fixed', async () => {
  const fx = await makeStore();
  try {
    const { ino } = await locate(fx.storeDir, '/a', 0);
    await withBtree(fx.storeDir, (btree) => {
      const rec = decodeInode(btree.table('inode').get(inoKey(ino))!, 't');
      btree.table('inode').putSync(inoKey(ino), encodeInode({ ...rec, nlink: 5 }));
    });
    detectAndRepair(fx, [{ kind: 'nlink', place: new RegExp(`^inode ${ino}$`) }]);
    assert.deepEqual(await readBack(fx.storeDir, undefined, fx.files), []);
  } finally {
    fx.cleanup();
  }
});

test('8b. wrong block count (st_blocks): detected on the inode, set to its block map entries', async () => {
  const fx = await makeStore();
  try {
    const { ino } = await locate(fx.storeDir, '/a', 0);
    await withBtree(fx.storeDir, (btree) => {
      const rec = decodeInode(btree.table('inode').get(inoKey(ino))!, 't');
      assert.equal(rec.blockCount, 3);
      btree.table('inode').putSync(inoKey(ino), encodeInode({ ...rec, blockCount: 7 }));
    });
    const repaired = detectAndRepair(fx, [{ kind: 'block-count', place: new RegExp(`^inode ${ino}$`) }]);
    assert.ok(repaired.problems.some((p) => p.kind === 'block-count' && /block count 7, block map entries 3/.test(p.message)), JSON.stringify(repaired.problems));
    await withBtree(fx.storeDir, (btree) => assert.equal(decodeInode(btree.table('inode').get(inoKey(ino))!, 't').blockCount, 3));
    assert.deepEqual(await readBack(fx.storeDir, undefined, fx.files), []);
  } finally {
    fx.cleanup();
  }
});

test('9. orphan inode (no directory names it): detected, linked into lost+found with its data', async () => {
  const fx = await makeStore();
  try {
    const { ino } = await locate(fx.storeDir, '/d/c', 0);
    await withBtree(fx.storeDir, (btree) => {
      const dir = btree.table('dirent');
      for (const { key, value } of dir.getRange({})) if (value.readUInt32BE(4) === ino && value.readUInt32BE(0) === 0) dir.removeSync(key);
      for (const key of btree.table('link').getKeys({})) if (key.readUInt32BE(4) === ino) btree.table('link').removeSync(key);
    });
    detectAndRepair(fx, [{ kind: 'unreachable-inode', place: new RegExp(`^inode ${ino}$`) }]);
    assert.deepEqual(await readBack(fx.storeDir, undefined, new Map([[`/lost+found/#${ino}`, fx.files.get('/d/c')!]])), []);
  } finally {
    fx.cleanup();
  }
});

test('9b. detached directory (its entry gone): the whole subtree comes back under lost+found with its data', async () => {
  const fx = await makeStore();
  try {
    const { ino: b } = await locate(fx.storeDir, '/d/b', 0);
    let d = 0;
    await withBtree(fx.storeDir, (btree) => {
      const entry = btree.table('dirent').get(direntKey(rootIno, Buffer.from('d')))!;
      d = entry.readUInt32BE(4);
      btree.table('dirent').removeSync(direntKey(rootIno, Buffer.from('d')));
      btree.table('link').removeSync(linkKey(d, rootIno, Buffer.from('d')));
    });
    detectAndRepair(fx, [
      { kind: 'unreachable-inode', place: new RegExp(`^inode ${d}$`) },
      { kind: 'unreachable-inode', place: new RegExp(`^inode ${b}$`) },
      { kind: 'nlink', place: /^inode 1$/ },
    ]);
    const moved = new Map([...fx.files].map(([p, data]) => [p.replace(/^\/d\//, `/lost+found/#${d}/`), data] as const));
    assert.deepEqual(await readBack(fx.storeDir, undefined, moved), []);
  } finally {
    fx.cleanup();
  }
});

test('10. directory entry naming a missing inode, and marks below what is in use: detected, fixed', async () => {
  const fx = await makeStore();
  try {
    await withBtree(fx.storeDir, (btree) => {
      btree.table('dirent').putSync(direntKey(rootIno, Buffer.from('ghost')), Buffer.from([0, 0, 0, 0, 0, 0, 0x10, 0, 8]));
      btree.table('link').putSync(linkKey(0x1000, rootIno, Buffer.from('ghost')), Buffer.alloc(0));
      btree.table('meta').putSync(Buffer.from(metaKeys.inoNext), encodeU64(2));
    });
    detectAndRepair(fx, [
      { kind: 'dangling-dirent', place: /^\/ghost$/ },
      { kind: 'mark-below-use', place: /^inode \d+$/ },
    ]);
    assert.deepEqual(await readBack(fx.storeDir, undefined, fx.files), []);
  } finally {
    fx.cleanup();
  }
});

test('10b. log head mark below referenced records: detected per block, repaired without cutting a referenced byte', async () => {
  const fx = await makeStore();
  try {
    const loc = await locate(fx.storeDir, '/d/c', 0);
    await withBtree(fx.storeDir, (btree) => {
      btree.table('meta').putSync(Buffer.from(metaKeys.segmentHead), Buffer.from(JSON.stringify({ segment: 1, offset: 32 + 32 + 4096 })));
    });
    const json = detectAndRepair(fx, [
      { kind: 'mark-below-use', place: new RegExp(`^inode ${loc.ino} block 0$`) },
      { kind: 'unreferenced-tail', place: /00000001\.seg:4160$/ },
    ]);
    assert.ok(!JSON.stringify(json).includes('.from-'), 'nothing referenced was cut');
    assert.deepEqual(await readBack(fx.storeDir, undefined, fx.files), []);
  } finally {
    fx.cleanup();
  }
});

/** Publishes one more file as its own (last) archive and returns that archive's name. */
async function publishExtra(fx: Fixture): Promise<string> {
  const before = new Set(readdirSync(fx.syncDir!));
  const box = await openSyncBox(fx.syncDir!, { boxid: 'cd'.repeat(16) });
  writeBoxFile(box, '/extra', pattern(3 * 4096, 5));
  await box.engine.publishNow();
  await box.cleanup();
  const idx = readdirSync(fx.syncDir!).find((f) => f.endsWith('.idx') && !before.has(f));
  assert.ok(idx !== undefined, 'a new archive');
  return idx.slice(0, 32);
}

test('11. idx with a bad trailer: detected naming the idx, the archive moved to quarantine', async () => {
  const fx = await makeStore({ sync: true });
  try {
    const name = await publishExtra(fx);
    const idxPath = join(fx.syncDir!, `${name}.idx`);
    flipByte(idxPath, statSync(idxPath).size - 3);
    const json = detectAndRepair(fx, [{ kind: 'idx-bad', place: new RegExp(`${name}\\.idx$`) }], { sync: true });
    assert.ok(json.repair?.quarantineDir !== null && existsSync(join(json.repair!.quarantineDir!, `${name}.idx`)), 'the idx kept in quarantine');
    assert.deepEqual(await readBack(fx.storeDir, fx.syncDir, fx.files), []);
  } finally {
    fx.cleanup();
  }
});

test('12. zip missing for an idx: detected naming the archive, the idx moved to quarantine', async () => {
  const fx = await makeStore({ sync: true });
  try {
    const name = await publishExtra(fx);
    unlinkSync(join(fx.syncDir!, `${name}.zip`));
    detectAndRepair(fx, [{ kind: 'zip-missing', place: new RegExp(`${name}\\.idx$`) }], { sync: true });
    assert.deepEqual(await readBack(fx.storeDir, fx.syncDir, fx.files), []);
  } finally {
    fx.cleanup();
  }
});

test('13. zip entry tampered: detected naming the zip entry, moved to quarantine', async () => {
  const fx = await makeStore({ sync: true });
  try {
    const name = await publishExtra(fx);
    const zipPath = join(fx.syncDir!, `${name}.zip`);
    // The first block entry follows the 'blocks/' directory entry (30 + 7 bytes); its data starts 30 + 39 bytes later.
    flipByte(zipPath, 37 + 30 + 39 + 2);
    detectAndRepair(fx, [{ kind: 'zip-entry', place: new RegExp(`${name}\\.zip entry blocks/[0-9a-f]{32}$`) }], { sync: true });
    assert.deepEqual(await readBack(fx.storeDir, fx.syncDir, fx.files), []);
  } finally {
    fx.cleanup();
  }
});

test('15. an archive the store reads blocks from goes missing: named per archive; not repairable, so --repair exits 1 and says what is left', async () => {
  const syncDir = tempDir('zippy-fsck-sync-');
  const writer = await openSyncBox(syncDir, { boxid: 'cd'.repeat(16) });
  writeBoxFile(writer, '/shared', pattern(2 * 4096, 8));
  await writer.engine.publishNow();
  await writer.cleanup();
  const reader = await openSyncBox(syncDir, { boxid });
  await reader.engine.stop();
  await reader.t.fs.close();
  await reader.t.store.close();
  try {
    const zip = readdirSync(syncDir).find((f) => f.endsWith('.zip'))!;
    unlinkSync(join(syncDir, zip));
    const checked = fsck([reader.t.dir, '--sync', syncDir]);
    assert.equal(checked.status, 1);
    const name = zip.slice(0, 32);
    assert.ok(checked.json.problems.some((p) => p.kind === 'zip-missing' && p.place.endsWith(`${name}.idx`)));
    const gone = checked.json.problems.find((p) => p.kind === 'archive-gone');
    assert.ok(gone !== undefined && gone.place === `archive ${name}` && !gone.repairable, JSON.stringify(checked.json.problems));
    const repaired = fsck(['--repair', reader.t.dir, '--sync', syncDir]);
    assert.equal(repaired.status, 1, 'problems left');
    assert.ok(repaired.json.problems.find((p) => p.kind === 'zip-missing')!.repaired, 'the lone idx was quarantined');
    assert.deepEqual(repaired.json.remaining!.map((p) => p.kind), ['archive-gone']);
  } finally {
    rmSync(syncDir, { recursive: true, force: true });
    rmSync(reader.t.dir, { recursive: true, force: true });
  }
});

test('14. encrypted sync dir: authenticated with the key (a changed byte in a sealed zip is found), without it a note and no problem', async () => {
  const syncDir = tempDir('zippy-fsck-enc-');
  const configDir = join(configHome, 'zippy-fs');
  const machineBoxid = loadOrCreateBoxid(configDir);
  initEncryptedSyncDir(syncDir, configDir);
  const box = await openSyncBox(syncDir, { boxid: machineBoxid, configDir });
  writeBoxFile(box, '/secret', pattern(3 * 4096, 4));
  await box.engine.stop();
  await box.t.fs.close();
  await box.t.store.close();
  const noKeyHome = tempDir('zippy-fsck-nokey-');
  try {
    const clean = fsck([box.t.dir, '--sync', syncDir]);
    assert.equal(clean.status, 0, JSON.stringify(clean.json.problems));
    const noKey = fsck([box.t.dir, '--sync', syncDir], noKeyHome);
    assert.equal(noKey.status, 0, JSON.stringify(noKey.json.problems));
    assert.ok(noKey.json.notes.some((n) => /not authenticated/.test(n)), `says it could not authenticate: ${noKey.json.notes.join(' | ')}`);
    const zip = readdirSync(syncDir).find((f) => f.endsWith('.zip'))!;
    flipByte(join(syncDir, zip), 64 + 200);
    const damaged = fsck([box.t.dir, '--sync', syncDir]);
    assert.equal(damaged.status, 1);
    assert.ok(damaged.json.problems.some((p) => p.kind === 'zip-bad' && p.place.endsWith(zip)), JSON.stringify(damaged.json.problems));
  } finally {
    rmSync(syncDir, { recursive: true, force: true });
    rmSync(noKeyHome, { recursive: true, force: true });
    rmSync(box.t.dir, { recursive: true, force: true });
  }
});

test('13b. zip central directory disagreeing with the idx (a CRC-32 changed there only): detected naming the entry', async () => {
  const fx = await makeStore({ sync: true });
  try {
    const name = await publishExtra(fx);
    const zipPath = join(fx.syncDir!, `${name}.zip`);
    const bytes = readFileSync(zipPath);
    const signature = Buffer.from([0x50, 0x4b, 0x01, 0x02]);
    const firstBlockHeader = bytes.indexOf(signature, bytes.indexOf(signature) + 4); // entry 0 is blocks/
    flipByte(zipPath, firstBlockHeader + 16);
    detectAndRepair(fx, [{ kind: 'zip-directory', place: new RegExp(`${name}\\.zip entry blocks/[0-9a-f]{32}$`) }], { sync: true });
  } finally {
    fx.cleanup();
  }
});

test('usage: --help 0, no directory 2, a missing one 2, a relative --sync 2, a store in use 2', async () => {
  const r = spawnSync(process.execPath, [fsckJs, '--help'], { encoding: 'utf8' });
  assert.equal(r.status, 0);
  assert.match(r.stdout, /--repair/);
  assert.equal(spawnSync(process.execPath, [fsckJs], { encoding: 'utf8' }).status, 2);
  assert.equal(spawnSync(process.execPath, [fsckJs, '/nonexistent-dir'], { encoding: 'utf8' }).status, 2);
  const fx = await makeStore();
  try {
    assert.equal(spawnSync(process.execPath, [fsckJs, fx.storeDir, '--sync', 'relative'], { encoding: 'utf8' }).status, 2);
    mkdirSync(fx.storeDir, { recursive: true });
    const lock = join(fx.storeDir, 'LOCK');
    const fd = openSync(lock, 'w');
    writeSync(fd, `${process.ppid}\n`);
    closeSync(fd);
    const locked = spawnSync(process.execPath, [fsckJs, fx.storeDir], { encoding: 'utf8' });
    assert.equal(locked.status, 2);
    assert.match(locked.stderr, /in use by process/);
    rmSync(lock);
    const text = spawnSync(process.execPath, [fsckJs, fx.storeDir], { encoding: 'utf8' });
    assert.equal(text.status, 0);
    assert.match(text.stdout, /area\s+checked\s+problems\s+repaired\s+left/);
  } finally {
    fx.cleanup();
  }
});
