import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { appendFileSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, truncateSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { isFsError } from '../src/errors.js';
import { blockSizeBytes } from '../src/limits.js';
import { archivePaths, readIdx, scanSyncDir, writeArchive } from '../src/sync/archive-store.js';
import { type FileVersion, type Idx, blockRunsFromIds } from '../src/sync/idx.js';
import { newArchiveName, newTempName } from '../src/sync/names.js';
import { type BlockLocation, type BlockPayload, BlockZipReader, buildBlockZip, writeBlockZipFile } from '../src/sync/zipfile.js';

const root = mkdtempSync(join(tmpdir(), 'zippy-sync-store-'));
after(() => rmSync(root, { recursive: true, force: true }));
let dirCounter = 0;
function freshSyncDir(): string {
  const dir = join(root, `sync${dirCounter++}`);
  mkdirSync(dir);
  return dir;
}

const boxid = 'a1'.repeat(16);

function blocksOf(content: Buffer): BlockPayload[] {
  const blocks: BlockPayload[] = [];
  for (let at = 0; at < content.length; at += blockSizeBytes) {
    const data = content.subarray(at, at + blockSizeBytes);
    blocks.push({ blockId: Uint8Array.from(createHash('sha256').update(data).digest().subarray(0, 16)), data });
  }
  return blocks;
}

function fileVersion(path: string, content: Buffer, blocks: BlockPayload[], counter: number): FileVersion {
  const flat = new Uint8Array(blocks.length * 16);
  blocks.forEach((b, i) => flat.set(b.blockId, i * 16));
  return {
    path, type: 'file', mode: 0o644, uid: 1000, gid: 1000, rdev: 0, mtimeNs: 1_700_000_000_000_000_000n,
    sizeBytes: content.length, symlinkTarget: '', xattrs: [], deleted: false,
    stamp: { counter, boxid }, base: null, blockRuns: blockRunsFromIds(flat),
  };
}

function makeIdx(name: string, versions: FileVersion[], blocks: BlockLocation[], zipSizeBytes: number): Idx {
  return {
    header: { archiveName: name, writerBoxid: boxid, createdNs: 1_700_000_000_000_000_000n, encrypted: false, zipSizeBytes },
    versions, blocks,
  };
}

/** Writes one archive of one file from bytes in memory. */
async function writeOneFileArchive(syncDir: string, path: string, content: Buffer, counter = 1): Promise<string> {
  const name = newArchiveName();
  const blocks = blocksOf(content);
  const zip = await buildBlockZip(blocks);
  await writeArchive(syncDir, {
    name, zipBytes: zip.bytes, idx: makeIdx(name, [fileVersion(path, content, blocks, counter)], zip.locations, zip.sizeBytes),
  });
  return name;
}

test('store: an archive written from bytes is complete, its idx reads back, its blocks read by table', async () => {
  const syncDir = freshSyncDir();
  const content = randomBytes(3 * blockSizeBytes + 17);
  const name = await writeOneFileArchive(syncDir, 'docs/a.bin', content);
  assert.deepEqual(readdirSync(syncDir).sort(), [`${name}.idx`, `${name}.zip`]);
  const scan = await scanSyncDir(syncDir, { keepIdx: true });
  assert.equal(scan.complete.length, 1);
  assert.deepEqual(scan.incomplete, []);
  const archive = scan.complete[0]!;
  assert.equal(archive.name, name);
  assert.equal(archive.header?.writerBoxid, boxid);
  const idx = await readIdx(archive.idxPath);
  assert.deepEqual(archive.idx, idx);
  assert.equal(idx.versions[0]!.path, 'docs/a.bin');
  const reader = await BlockZipReader.open(archive.zipPath);
  const parts: Buffer[] = [];
  for (const block of blocksOf(content)) {
    const location = idx.blocks.find((l) => Buffer.compare(l.blockId, block.blockId) === 0)!;
    parts.push(await reader.readBlock(location));
  }
  await reader.close();
  assert.ok(Buffer.concat(parts).equals(content));
  const unzip = spawnSync('unzip', ['-tq', archive.zipPath], { encoding: 'utf8' });
  assert.equal(unzip.status, 0, unzip.stdout + unzip.stderr);
});

test('store: an archive written through a zip callback gets its block table through the idx function', async () => {
  const syncDir = freshSyncDir();
  const content = Buffer.alloc(5 * blockSizeBytes, 'abcd');
  const blocks = blocksOf(content);
  const name = newArchiveName();
  let locations: BlockLocation[] = [];
  const written = await writeArchive(syncDir, {
    name,
    writeZip: async (tempPath) => {
      assert.match(tempPath, /\/\.tmp-[0-9a-f]{32}\.zip$/);
      locations = (await writeBlockZipFile(tempPath, blocks)).locations;
    },
    idx: (zipSizeBytes) => makeIdx(name, [fileVersion('same-blocks.txt', content, blocks, 1)], locations, zipSizeBytes),
  });
  assert.equal(locations.length, 1, 'five identical blocks are stored once');
  assert.equal(written.zipSizeBytes, readFileSync(written.zipPath).length);
  assert.equal(written.idxSizeBytes, readFileSync(written.idxPath).length);
  const scan = await scanSyncDir(syncDir);
  assert.deepEqual(scan.complete.map((a) => a.name), [name]);
});

test('store: an idx whose zip is missing is reported incomplete, then complete once the zip arrives', async () => {
  const syncDir = freshSyncDir();
  const name = await writeOneFileArchive(syncDir, 'x', randomBytes(100));
  const { zipPath } = archivePaths(syncDir, name);
  const aside = join(root, `${name}.zip.aside`);
  copyFileSync(zipPath, aside);
  unlinkSync(zipPath);
  const scan = await scanSyncDir(syncDir);
  assert.deepEqual(scan.complete, []);
  assert.equal(scan.incomplete.length, 1);
  assert.equal(scan.incomplete[0]!.reason, 'zip-missing');
  assert.match(scan.incomplete[0]!.message, new RegExp(`${name}\\.idx: its zip ${name}\\.zip is missing`));
  copyFileSync(aside, zipPath);
  assert.deepEqual((await scanSyncDir(syncDir)).complete.map((a) => a.name), [name]);
});

test('store: a truncated idx, a corrupt trailer, a wrong-name idx and a resized zip are incomplete', async () => {
  const syncDir = freshSyncDir();
  const truncated = await writeOneFileArchive(syncDir, 'a', randomBytes(5000), 1);
  const flipped = await writeOneFileArchive(syncDir, 'b', randomBytes(5000), 2);
  const resized = await writeOneFileArchive(syncDir, 'c', randomBytes(5000), 3);
  const good = await writeOneFileArchive(syncDir, 'd', randomBytes(5000), 4);
  const renamed = newArchiveName();
  truncateSync(archivePaths(syncDir, truncated).idxPath, 150);
  const flippedPath = archivePaths(syncDir, flipped).idxPath;
  const bytes = readFileSync(flippedPath);
  bytes[bytes.length - 1] = bytes[bytes.length - 1]! ^ 0xff;
  writeFileSync(flippedPath, bytes);
  appendFileSync(archivePaths(syncDir, resized).zipPath, 'junk');
  copyFileSync(archivePaths(syncDir, good).idxPath, archivePaths(syncDir, renamed).idxPath);
  copyFileSync(archivePaths(syncDir, good).zipPath, archivePaths(syncDir, renamed).zipPath);

  const scan = await scanSyncDir(syncDir);
  assert.deepEqual(scan.complete.map((a) => a.name), [good]);
  const reasons = Object.fromEntries(scan.incomplete.map((i) => [i.name, i.reason]));
  assert.deepEqual(reasons, { [truncated]: 'bad-idx', [flipped]: 'bad-idx', [resized]: 'zip-size-mismatch', [renamed]: 'bad-idx' });
  const messages = Object.fromEntries(scan.incomplete.map((i) => [i.name, i.message]));
  assert.match(messages[truncated]!, /header says \d+ bytes, file has 150/);
  assert.match(messages[flipped]!, /trailer CRC64/);
  assert.match(messages[resized]!, /records a zip of \d+ bytes/);
  assert.match(messages[renamed]!, new RegExp(`header names archive ${good}, the file is ${renamed}\\.idx`));
  await assert.rejects(readIdx(archivePaths(syncDir, truncated).idxPath), (e) => isFsError(e, 'BAD_ARCHIVE'));
});

test('store: temp files, a half-written zip, plain zips and other files are classified, never read as archives', async () => {
  const syncDir = freshSyncDir();
  const good = await writeOneFileArchive(syncDir, 'f', randomBytes(10));
  const temp = newTempName('zip');
  writeFileSync(join(syncDir, temp), randomBytes(777)); // a writer killed mid-zip
  writeFileSync(join(syncDir, newTempName('idx')), randomBytes(10));
  writeFileSync(join(syncDir, `.${good}.idx.Xy12Ab`), 'rsync partial');
  const pending = newArchiveName();
  writeFileSync(join(syncDir, `${pending}.zip`), randomBytes(100)); // zip placed, idx not yet
  writeFileSync(join(syncDir, 'Holiday Photos.ZIP'), 'not inspected by the scan');
  writeFileSync(join(syncDir, 'notes.txt'), 'ignored');
  mkdirSync(join(syncDir, 'rmlog'));
  mkdirSync(join(syncDir, 'keys'));
  symlinkSync(archivePaths(syncDir, good).idxPath, join(syncDir, `${newArchiveName()}.idx`));

  const scan = await scanSyncDir(syncDir);
  assert.deepEqual(scan.complete.map((a) => a.name), [good]);
  assert.deepEqual(scan.incomplete, []);
  assert.deepEqual(scan.pendingZips, [pending]);
  assert.deepEqual(scan.plainZips.map((z) => z.fileName), ['Holiday Photos.ZIP']);
  assert.equal(scan.tempFiles.length, 2);
  assert.ok(scan.tempFiles.includes(temp));
});

test('store: knownComplete archives are not re-read', async () => {
  const syncDir = freshSyncDir();
  const name = await writeOneFileArchive(syncDir, 'k', randomBytes(10));
  truncateSync(archivePaths(syncDir, name).idxPath, 10);
  assert.equal((await scanSyncDir(syncDir)).incomplete[0]?.reason, 'bad-idx');
  const trusted = await scanSyncDir(syncDir, { knownComplete: new Set([name]) });
  assert.equal(trusted.complete[0]?.name, name);
  assert.equal(trusted.complete[0]?.header, undefined);
});

test('store: never overwrites; a failure before the commit point leaves nothing behind', async () => {
  const syncDir = freshSyncDir();
  const name = await writeOneFileArchive(syncDir, 'first', randomBytes(10));
  const before = readFileSync(archivePaths(syncDir, name).idxPath);
  const zip = await buildBlockZip([]);
  await assert.rejects(writeArchive(syncDir, { name, zipBytes: zip.bytes, idx: makeIdx(name, [], [], zip.sizeBytes) }),
    (e) => isFsError(e, 'EEXIST'));
  assert.ok(readFileSync(archivePaths(syncDir, name).idxPath).equals(before));
  const listing = readdirSync(syncDir).sort();

  // The zip callback fails mid-way.
  await assert.rejects(writeArchive(syncDir, {
    name: newArchiveName(),
    writeZip: async (tempPath) => {
      writeFileSync(tempPath, 'half a zip');
      throw new Error('disk full');
    },
    idx: makeIdx(newArchiveName(), [], [], 0),
  }), /disk full/);
  assert.deepEqual(readdirSync(syncDir).sort(), listing);

  // The idx does not check: the already placed zip is removed again.
  const other = newArchiveName();
  const badVersion: FileVersion = { ...fileVersion('ok', Buffer.alloc(0), [], 1), path: '../escape' };
  await assert.rejects(writeArchive(syncDir, { name: other, zipBytes: zip.bytes, idx: makeIdx(other, [badVersion], [], zip.sizeBytes) }),
    (e) => isFsError(e, 'BAD_INPUT') && /\.\.\/escape/.test(e.message));
  assert.deepEqual(readdirSync(syncDir).sort(), listing);

  // The idx describes a different archive or zip size.
  await assert.rejects(writeArchive(syncDir, { name: other, zipBytes: zip.bytes, idx: makeIdx(newArchiveName(), [], [], zip.sizeBytes) }),
    (e) => isFsError(e, 'ASSERT'));
  await assert.rejects(writeArchive(syncDir, { name: other, zipBytes: zip.bytes, idx: makeIdx(other, [], [], zip.sizeBytes + 1) }),
    /records a zip of/);
  assert.deepEqual(readdirSync(syncDir).sort(), listing);
  await assert.rejects(writeArchive(syncDir, { name: 'not-a-name', zipBytes: zip.bytes, idx: makeIdx(other, [], [], 0) }),
    (e) => isFsError(e, 'BAD_INPUT'));
});

test('store: a rename-only archive (no blocks) is small', async () => {
  const syncDir = freshSyncDir();
  const name = newArchiveName();
  const zip = await buildBlockZip([]);
  const moved: FileVersion = {
    ...fileVersion('new/place.bin', Buffer.alloc(0), [], 2), sizeBytes: 256 * 1024 * 1024,
    blockRuns: [{ kind: 'copy', blockIndex: 0, blockCount: 65536, source: { counter: 1, boxid }, sourceBlockIndex: 0 }],
  };
  const tombstone: FileVersion = { ...fileVersion('old/place.bin', Buffer.alloc(0), [], 3), deleted: true };
  const written = await writeArchive(syncDir, { name, zipBytes: zip.bytes, idx: makeIdx(name, [moved, tombstone], [], zip.sizeBytes) });
  assert.ok(written.zipSizeBytes + written.idxSizeBytes < 1024, `${written.zipSizeBytes} + ${written.idxSizeBytes} bytes`);
});
