import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, utimesSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import * as zlib from 'node:zlib';
import yauzl from 'yauzl';
import { isFsError } from '../src/errors.js';
import { blockSizeBytes, nameLengthMaxBytes } from '../src/limits.js';
import { printableName } from '../src/sync/names.js';
import { hexOf, type BlockLocation, encodeCentralHeader, encodeEndRecords, encodeLocalHeader, type EntryRecord } from '../src/sync/zip-format.js';
import {
  type BlockPayload, BlockZipReader, PlainZip, buildBlockZip, decodeBlockEntry, listPlainZip, rejectionWarning,
  writeBlockZipFile,
} from '../src/sync/zipfile.js';

const root = mkdtempSync(join(tmpdir(), 'zippy-sync-zip-'));
after(() => rmSync(root, { recursive: true, force: true }));
let dirCounter = 0;
function freshDir(): string {
  const dir = join(root, `d${dirCounter++}`);
  mkdirSync(dir);
  return dir;
}

function run(command: string, args: string[], cwd?: string): { status: number | null; out: string } {
  const result = spawnSync(command, args, { cwd, encoding: 'utf8' });
  return { status: result.status, out: `${result.stdout}${result.stderr}` };
}

function assertInterop(path: string, entryCount: number): void {
  const unzip = run('unzip', ['-tq', path]);
  assert.equal(unzip.status, 0, `unzip -t ${path}: ${unzip.out}`);
  const python = run('python3', ['-c', [
    'import sys, zipfile',
    'z = zipfile.ZipFile(sys.argv[1])',
    'bad = z.testzip()',
    'print(len(z.infolist()))',
    'sys.exit(0 if bad is None else 3)',
  ].join('\n'), path]);
  assert.equal(python.status, 0, `python zipfile testzip ${path}: ${python.out}`);
  assert.equal(Number(python.out.trim()), entryCount, 'python sees every entry');
}

/** A block id as the content's hash would make it (any 16 non-zero bytes do here). */
function blockIdOf(data: Uint8Array): Uint8Array {
  return Uint8Array.from(createHash('sha256').update(data).digest().subarray(0, 16));
}

function mixedBlocks(count: number): BlockPayload[] {
  const blocks: BlockPayload[] = [];
  for (let i = 0; i < count; i++) {
    const data = i % 3 === 0 ? randomBytes(blockSizeBytes) : Buffer.alloc(i % 3 === 1 ? blockSizeBytes : 100, `text ${i} `);
    blocks.push({ blockId: blockIdOf(data), data });
  }
  return blocks;
}

/** The central directory as an independent reader (yauzl) sees it. */
async function centralEntries(path: string): Promise<yauzl.Entry[]> {
  const zip = await yauzl.openPromise(path, { lazyEntries: true, autoClose: false });
  const entries: yauzl.Entry[] = [];
  for await (const entry of zip.eachEntry()) entries.push(entry);
  zip.close();
  return entries;
}

async function expectCode(promise: Promise<unknown>, code: string, pattern?: RegExp): Promise<void> {
  await assert.rejects(promise, (e: unknown) => {
    assert.ok(isFsError(e), `not an FsError: ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (pattern !== undefined) assert.match(e.message, pattern);
    return true;
  });
}

// ---------------------------------------------------------------------------------------------
// Archive zips

test('archive zip: passes unzip -t and python testzip; blocks read back by table location', async () => {
  const dir = freshDir();
  const blocks = mixedBlocks(60);
  blocks.push(blocks[5]!); // a duplicate id is stored once
  const path = join(dir, 'a.zip');
  const result = await writeBlockZipFile(path, blocks, { mtime: new Date(2024, 0, 2, 3, 4, 6) });
  assert.equal(result.locations.length, 60);
  assert.equal(result.sizeBytes, readFileSync(path).length);
  assertInterop(path, 61);
  const sortedHex = result.locations.map((l) => hexOf(l.blockId));
  assert.deepEqual(sortedHex, [...sortedHex].sort());
  assert.ok(result.locations.some((l) => l.method === 0), 'random blocks are stored');
  assert.ok(result.locations.some((l) => l.method === 8), 'text blocks are deflated');
  const reader = await BlockZipReader.open(path);
  try {
    for (const block of blocks) {
      const location = result.locations.find((l) => Buffer.compare(l.blockId, block.blockId) === 0)!;
      assert.ok(Buffer.from(await reader.readBlock(location)).equals(Buffer.from(block.data)));
    }
  } finally {
    await reader.close();
  }
  // The block table agrees with the central directory as yauzl reads it.
  const central = await centralEntries(path);
  assert.equal(central[0]!.fileName, 'blocks/');
  for (const location of result.locations) {
    const entry = central.find((e) => e.fileName === `blocks/${hexOf(location.blockId)}`)!;
    assert.equal(entry.relativeOffsetOfLocalHeader, location.headerOffset);
    assert.equal(entry.compressedSize, location.storedSizeBytes);
    assert.equal(entry.uncompressedSize, location.sizeBytes);
    assert.equal(entry.crc32, location.crc32);
    assert.equal(entry.compressionMethod, location.method);
  }
});

test('archive zip: an archive without blocks is still a valid, non-empty zip', async () => {
  const path = join(freshDir(), 'empty.zip');
  const result = await writeBlockZipFile(path, []);
  assert.deepEqual(result.locations, []);
  assertInterop(path, 1);
});

test('archive zip: forced zip64 records pass both tools and still read back', async () => {
  const path = join(freshDir(), 'z64.zip');
  const blocks = mixedBlocks(10);
  const result = await writeBlockZipFile(path, blocks, { forceZip64: true });
  assertInterop(path, 11);
  const central = await centralEntries(path);
  assert.equal(central.length, 11);
  const reader = await BlockZipReader.open(path);
  for (const location of result.locations) await reader.readBlock(location);
  await reader.close();
});

test('archive zip: more than 65,535 entries uses zip64 and passes both tools', async () => {
  const path = join(freshDir(), 'many.zip');
  const count = 65_600;
  const blocks = (function* (): Generator<BlockPayload> {
    for (let i = 0; i < count; i++) {
      const blockId = new Uint8Array(16);
      new DataView(blockId.buffer).setUint32(12, i + 1);
      yield { blockId, data: Uint8Array.of(i & 0xff, (i >> 8) & 0xff) };
    }
  })();
  const result = await writeBlockZipFile(path, blocks, { compressionLevel: 0 });
  assert.equal(result.locations.length, count);
  const bytes = readFileSync(path);
  assert.ok(bytes.includes(Buffer.from([0x50, 0x4b, 0x06, 0x06])), 'zip64 end of central directory record present');
  assertInterop(path, count + 1);
  const reader = await BlockZipReader.open(path);
  for (const index of [0, 1, 65_534, 65_535, count - 1]) {
    const location = result.locations[index]!;
    const data = await reader.readBlock(location);
    const i = new DataView(location.blockId.buffer, location.blockId.byteOffset).getUint32(12) - 1;
    assert.deepEqual([...data], [i & 0xff, (i >> 8) & 0xff]);
  }
  await reader.close();
});

test('archive zip: bad input to the writer is refused', async () => {
  const ok = randomBytes(10);
  await expectCode(buildBlockZip([{ blockId: new Uint8Array(16), data: ok }]), 'BAD_INPUT', /all-zero block id/);
  await expectCode(buildBlockZip([{ blockId: blockIdOf(ok), data: new Uint8Array(blockSizeBytes + 1) }]), 'BAD_INPUT', /4097 bytes/);
  await expectCode(buildBlockZip([{ blockId: blockIdOf(ok), data: new Uint8Array(0) }]), 'BAD_INPUT');
  await expectCode(buildBlockZip([{ blockId: blockIdOf(ok), data: ok }, { blockId: blockIdOf(ok), data: randomBytes(10) }]),
    'ASSERT', /given twice with different content/);
  const existing = join(freshDir(), 'exists.zip');
  writeFileSync(existing, 'x');
  await assert.rejects(writeBlockZipFile(existing, []), /EEXIST/);
  assert.equal(readFileSync(existing, 'utf8'), 'x', 'an existing file is left alone');
});

test('archive zip: corrupt data, lying locations and bombs are BAD_ARCHIVE naming the zip and block', async () => {
  const dir = freshDir();
  const blocks = mixedBlocks(6);
  const { bytes, locations } = await buildBlockZip(blocks);
  const path = join(dir, 'c.zip');
  writeFileSync(path, bytes);
  const deflated = locations.find((l) => l.method === 8)!;
  const stored = locations.find((l) => l.method === 0)!;
  const reader = await BlockZipReader.open(path);
  const blockPattern = (l: BlockLocation): RegExp => new RegExp(`${path.replaceAll('/', '\\/')}: block ${hexOf(l.blockId)}`);
  await expectCode(reader.readBlock({ ...deflated, crc32: (deflated.crc32 + 1) >>> 0 }), 'BAD_ARCHIVE', /local header crc32/);
  await expectCode(reader.readBlock({ ...deflated, blockId: stored.blockId }), 'BAD_ARCHIVE', /entry name/);
  await expectCode(reader.readBlock({ ...stored, headerOffset: stored.headerOffset + 1 }), 'BAD_ARCHIVE', /signature/);
  await expectCode(reader.readBlock({ ...stored, sizeBytes: 1e9, storedSizeBytes: 1e9 }), 'BAD_ARCHIVE', /size 1000000000 outside/);
  await expectCode(reader.readBlock({ ...stored, headerOffset: bytes.length - 10 }), 'BAD_ARCHIVE', /past the zip/);
  await expectCode(reader.readBlock({ ...deflated, crc32: 1 }), 'BAD_ARCHIVE', blockPattern(deflated));
  await reader.close();

  // Flip a byte of each block's data: the CRC (or inflate) catches it.
  for (const location of [deflated, stored]) {
    const broken = Buffer.from(bytes);
    const dataAt = location.headerOffset + 30 + 39 + Math.floor(location.storedSizeBytes / 2);
    broken[dataAt] = broken[dataAt]! ^ 0x55;
    const brokenPath = join(dir, `broken-${location.method}.zip`);
    writeFileSync(brokenPath, broken);
    const r = await BlockZipReader.open(brokenPath);
    await expectCode(r.readBlock(location), 'BAD_ARCHIVE', /crc32 of data|inflate failed|decoded/);
    await r.close();
  }

  // A deflate bomb: 1 MiB of zeros in a few hundred bytes, claiming to be a 4 KiB block.
  const bomb = zlib.deflateRawSync(Buffer.alloc(1024 * 1024));
  assert.ok(bomb.length < 4096);
  const blockId = blockIdOf(bomb);
  const record: EntryRecord = {
    name: Buffer.from(`blocks/${hexOf(blockId)}`), method: 8, crc32: 0, storedSizeBytes: bomb.length,
    sizeBytes: blockSizeBytes, dosDate: 0, dosTime: 0, unixMode: 0o100644, headerOffset: 0,
  };
  const span = Buffer.concat([encodeLocalHeader(record), bomb]);
  const location: BlockLocation = { blockId, headerOffset: 0, storedSizeBytes: bomb.length, sizeBytes: blockSizeBytes, crc32: 0, method: 8 };
  assert.throws(() => decodeBlockEntry(span, location, 'bomb.zip'), (e) => isFsError(e, 'BAD_ARCHIVE') && /bomb\.zip: .*inflate failed/.test(e.message));
});

// ---------------------------------------------------------------------------------------------
// Plain zips made by Info-ZIP zip

function makeTree(dir: string): void {
  mkdirSync(join(dir, 'a', 'b'), { recursive: true });
  mkdirSync(join(dir, 'a', 'empty'));
  writeFileSync(join(dir, 'a', 'b', 'c.txt'), 'hello from c\n');
  writeFileSync(join(dir, 'top.sh'), '#!/bin/sh\necho top\n');
  chmodSync(join(dir, 'top.sh'), 0o755);
  writeFileSync(join(dir, 'big.txt'), 'all work and no play '.repeat(10_000));
  writeFileSync(join(dir, 'naïve.txt'), 'unicode name');
  symlinkSync('a/b/c.txt', join(dir, 'link'));
}

function setMtimes(dir: string, paths: string[], seconds: number): void {
  for (const p of paths) utimesSync(join(dir, p), seconds, seconds);
}

test('plain zip: nested and empty dirs, modes, mtimes, zip -y symlinks and unicode names are listed', async () => {
  const dir = freshDir();
  const tree = join(dir, 'tree');
  mkdirSync(tree);
  makeTree(tree);
  const mtime = 1_600_000_000;
  setMtimes(tree, ['a/b/c.txt', 'top.sh', 'big.txt', 'naïve.txt', 'a/b', 'a/empty', 'a'], mtime);
  const zipPath = join(dir, 'one.zip');
  const made = run('zip', ['-ry', '-q', zipPath, 'a', 'top.sh', 'big.txt', 'naïve.txt', 'link'], tree);
  assert.equal(made.status, 0, made.out);

  const zip = await PlainZip.open(zipPath);
  try {
    assert.deepEqual(zip.rejected, []);
    const byPath = new Map(zip.entries.map((e) => [e.path, e]));
    assert.deepEqual([...byPath.keys()].sort(), ['a', 'a/b', 'a/b/c.txt', 'a/empty', 'big.txt', 'link', 'naïve.txt', 'top.sh']);
    assert.equal(byPath.get('a/empty')!.kind, 'dir');
    assert.equal(byPath.get('a/b')!.kind, 'dir');
    assert.equal(byPath.get('a/b')!.mode, 0o755);
    assert.equal(byPath.get('top.sh')!.mode, 0o755);
    assert.equal(byPath.get('a/b/c.txt')!.mode, 0o644);
    assert.equal(byPath.get('a/b/c.txt')!.mtimeMs, mtime * 1000);
    assert.equal(byPath.get('link')!.kind, 'symlink');
    assert.equal(byPath.get('link')!.symlinkTarget, 'a/b/c.txt');
    const big = byPath.get('big.txt')!;
    assert.equal(big.method, 8);
    assert.equal((await zip.readEntry(big)).toString(), 'all work and no play '.repeat(10_000));
    assert.equal((await zip.readEntry(byPath.get('a/b/c.txt')!)).toString(), 'hello from c\n');
    assert.equal((await zip.readEntry(byPath.get('naïve.txt')!)).toString(), 'unicode name');
    await expectCode(zip.readEntry(big, 1000), 'LIMIT', /read limit 1000/);
  } finally {
    zip.close();
  }
});

test('plain zip: overlapping paths in two zips are each listed with their own mtime and content', async () => {
  const dir = freshDir();
  const older = join(dir, 'older');
  const newer = join(dir, 'newer');
  for (const [tree, text, seconds] of [[older, 'old\n', 1_500_000_000], [newer, 'new\n', 1_700_000_000]] as const) {
    mkdirSync(join(tree, 'shared', 'deep'), { recursive: true });
    writeFileSync(join(tree, 'shared', 'deep', 'f.txt'), text);
    writeFileSync(join(tree, `only-${text.trim()}.txt`), text);
    setMtimes(tree, ['shared/deep/f.txt'], seconds);
    assert.equal(run('zip', ['-rq', join(dir, `${text.trim()}.zip`), '.'], tree).status, 0);
  }
  const oldList = await listPlainZip(join(dir, 'old.zip'));
  const newList = await listPlainZip(join(dir, 'new.zip'));
  const oldF = oldList.entries.find((e) => e.path === 'shared/deep/f.txt')!;
  const newF = newList.entries.find((e) => e.path === 'shared/deep/f.txt')!;
  assert.equal(oldF.mtimeMs, 1_500_000_000_000);
  assert.equal(newF.mtimeMs, 1_700_000_000_000);
  assert.ok(oldList.entries.some((e) => e.path === 'only-old.txt'));
  assert.ok(newList.entries.some((e) => e.path === 'only-new.txt'));
  assert.ok(oldList.entries.some((e) => e.path === 'shared/deep' && e.kind === 'dir'));
  const zip = await PlainZip.open(join(dir, 'new.zip'));
  assert.equal((await zip.readEntry(zip.entries.find((e) => e.path === 'shared/deep/f.txt')!)).toString(), 'new\n');
  zip.close();
});

/** Replaces every occurrence of `from` by `to` (same length) in a zip's bytes: names live in both headers. */
function patchName(bytes: Buffer, from: string, to: string): Buffer {
  assert.equal(Buffer.byteLength(from), Buffer.byteLength(to));
  const out = Buffer.from(bytes);
  const needle = Buffer.from(from);
  let at = out.indexOf(needle);
  let count = 0;
  while (at >= 0) {
    Buffer.from(to, 'latin1').copy(out, at);
    count++;
    at = out.indexOf(needle, at + 1);
  }
  assert.equal(count, 2, `${from} appears in the local and the central header`);
  return out;
}

test('plain zip: hostile names from a real zip (../x, /abs) are rejected, good entries kept', async () => {
  const dir = freshDir();
  const tree = join(dir, 'tree');
  mkdirSync(join(tree, 'zz'), { recursive: true });
  writeFileSync(join(tree, 'zz', 'x'), 'escape');
  writeFileSync(join(tree, 'Xabs'), 'absolute');
  writeFileSync(join(tree, 'good.txt'), 'fine');
  const zipPath = join(dir, 'hostile.zip');
  assert.equal(run('zip', ['-q', '-D', zipPath, 'zz/x', 'Xabs', 'good.txt'], tree).status, 0);
  let bytes: Buffer = readFileSync(zipPath);
  bytes = patchName(bytes, 'zz/x', '../x');
  bytes = patchName(bytes, 'Xabs', '/abs');
  writeFileSync(zipPath, bytes);

  const zip = await PlainZip.open(zipPath);
  assert.deepEqual(zip.entries.map((e) => e.path), ['good.txt']);
  assert.deepEqual(zip.rejected.map((r) => [r.name, r.reason]), [['"../x"', 'dot-dot'], ['"/abs"', 'absolute']]);
  assert.match(rejectionWarning(zipPath, zip.rejected[0]!), /hostile\.zip: entry "\.\.\/x" skipped: dot-dot/);
  assert.equal((await zip.readEntry(zip.entries[0]!)).toString(), 'fine');
  zip.close();
});

interface CraftedEntry {
  readonly name: Buffer | string;
  readonly data?: Buffer;
  readonly method?: 0 | 8;
  readonly unixMode?: number;
  readonly declaredSizeBytes?: number;
  readonly crc32?: number;
  readonly methodCode?: number;
  readonly flags?: number;
}

/** Builds a zip by hand so names and headers can be anything. */
function craftZip(entries: CraftedEntry[]): Buffer {
  const parts: Buffer[] = [];
  const central: Buffer[] = [];
  let offset = 0;
  for (const entry of entries) {
    const data = entry.data ?? Buffer.alloc(0);
    const method = entry.method ?? 0;
    const stored = method === 8 ? zlib.deflateRawSync(data) : data;
    const record: EntryRecord = {
      name: Buffer.isBuffer(entry.name) ? entry.name : Buffer.from(entry.name, 'utf8'),
      method, crc32: entry.crc32 ?? zlib.crc32(data), storedSizeBytes: stored.length,
      sizeBytes: entry.declaredSizeBytes ?? data.length, dosDate: 0x5821, dosTime: 0, unixMode: entry.unixMode ?? 0o100644,
      headerOffset: offset,
    };
    const local = encodeLocalHeader(record);
    const centralHeader = encodeCentralHeader(record, false);
    if (entry.methodCode !== undefined) {
      local.writeUInt16LE(entry.methodCode, 8);
      centralHeader.writeUInt16LE(entry.methodCode, 10);
    }
    if (entry.flags !== undefined) {
      local.writeUInt16LE(entry.flags, 6);
      centralHeader.writeUInt16LE(entry.flags, 8);
    }
    parts.push(local, stored);
    central.push(centralHeader);
    offset += local.length + stored.length;
  }
  const centralBytes = Buffer.concat(central);
  return Buffer.concat([...parts, centralBytes, encodeEndRecords(entries.length, offset, centralBytes.length, false)]);
}

test('plain zip: crafted hostile entries are rejected with typed reasons, the rest still served', async () => {
  const dir = freshDir();
  const zipPath = join(dir, 'crafted.zip');
  const deflatedZeros = zlib.deflateRawSync(Buffer.alloc(100_000));
  writeFileSync(zipPath, craftZip([
    { name: 'ok.txt', data: Buffer.from('ok') },
    { name: 'nul\0name', data: Buffer.from('x') },
    { name: 'back\\..\\slash', data: Buffer.from('x') },
    { name: `long/${'L'.repeat(nameLengthMaxBytes + 1)}`, data: Buffer.from('x') },
    { name: 'ok.txt', data: Buffer.from('second') },
    { name: 'huge.bin', data: Buffer.from('x'), method: 8, declaredSizeBytes: 2 ** 31 },
    { name: 'ratio.bin', data: Buffer.alloc(10), method: 8, declaredSizeBytes: 50_000_000 },
    { name: 'secret.txt', data: Buffer.from('x'), method: 8, flags: 1 },
    { name: 'bzip2.txt', data: Buffer.from('x'), methodCode: 12 },
    { name: 'fifo', data: Buffer.alloc(0), unixMode: 0o010644 },
    { name: 'dir-with-data/', data: Buffer.from('x'), unixMode: 0o040755 },
    { name: 'badlink', data: Buffer.from('a\0b'), unixMode: 0o120777 },
    { name: Buffer.from([0x66, 0xff, 0xfe]), data: Buffer.from('cp437 name') }, // not UTF-8: read as CP437
    { name: 'zeros.bin', data: Buffer.alloc(100_000), method: 8 },
    { name: 'sub/', unixMode: 0o040755 },
  ]));
  assert.ok(deflatedZeros.length < 200);
  const zip = await PlainZip.open(zipPath);
  const reasons = Object.fromEntries(zip.rejected.map((r) => [r.name, r.reason]));
  assert.deepEqual(reasons, {
    '"nul\\u0000name"': 'nul',
    '"back\\\\..\\\\slash"': 'backslash',
    [printableName(`long/${'L'.repeat(nameLengthMaxBytes + 1)}`)]: 'component-too-long',
    '"ok.txt"': 'duplicate',
    '"huge.bin"': 'too-large',
    '"ratio.bin"': 'bad-ratio',
    '"secret.txt"': 'encrypted',
    '"bzip2.txt"': 'unsupported-method',
    '"fifo"': 'unsupported-type',
    '"dir-with-data/"': 'bad-directory',
    '"badlink"': 'bad-symlink',
  });
  assert.deepEqual(zip.entries.map((e) => e.path), ['ok.txt', 'f\u00a0■', 'zeros.bin', 'sub']);
  assert.equal((await zip.readEntry(zip.entries[0]!)).toString(), 'ok', 'the first of duplicate entries is kept');
  assert.equal((await zip.readEntry(zip.entries[2]!)).length, 100_000);
  zip.close();
});

test('plain zip: content that lies about its size or CRC fails the read, naming zip and entry', async () => {
  const dir = freshDir();
  const zipPath = join(dir, 'liar.zip');
  writeFileSync(zipPath, craftZip([
    { name: 'short.bin', data: Buffer.alloc(100_000), method: 8, declaredSizeBytes: 50_000 },
    { name: 'crc.txt', data: Buffer.from('hello'), crc32: 12345 },
  ]));
  const zip = await PlainZip.open(zipPath);
  assert.equal(zip.entries.length, 2);
  await expectCode(zip.readEntry(zip.entries[0]!), 'BAD_ARCHIVE', /liar\.zip: entry "short\.bin"/);
  await expectCode(zip.readEntry(zip.entries[1]!), 'BAD_ARCHIVE', /liar\.zip: entry "crc\.txt": crc32/);
  zip.close();
});

test('plain zip: unreadable zips and absurd entry counts are BAD_ARCHIVE naming the file', async () => {
  const dir = freshDir();
  const garbage = join(dir, 'garbage.zip');
  writeFileSync(garbage, randomBytes(1000));
  await expectCode(PlainZip.open(garbage), 'BAD_ARCHIVE', /garbage\.zip: cannot open zip/);
  const truncated = join(dir, 'truncated.zip');
  const whole = craftZip([{ name: 'a.txt', data: Buffer.from('a') }]);
  writeFileSync(truncated, whole.subarray(0, whole.length - 30));
  await expectCode(PlainZip.open(truncated), 'BAD_ARCHIVE', /truncated\.zip/);
  // One real entry, but zip64 end records claiming 300,000.
  const one = craftZip([{ name: 'a.txt', data: Buffer.from('a') }]);
  const centralStart = one.indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02]));
  const centralEnd = one.indexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
  const lying = Buffer.concat([one.subarray(0, centralEnd), encodeEndRecords(300_000, centralStart, centralEnd - centralStart, true)]);
  const countPath = join(dir, 'count.zip');
  writeFileSync(countPath, lying);
  await expectCode(PlainZip.open(countPath), 'BAD_ARCHIVE', /count\.zip: 300000 entries > the limit/);
  // yauzl's validateEntrySizes refuses a stored entry whose two sizes differ: that zip is corrupt as a whole.
  const sizes = join(dir, 'sizes.zip');
  writeFileSync(sizes, craftZip([{ name: 'ok.txt', data: Buffer.from('ok') }, { name: 'stored.bin', data: Buffer.from('x'), declaredSizeBytes: 5 }]));
  await expectCode(PlainZip.open(sizes), 'BAD_ARCHIVE', /sizes\.zip: central directory entry 1: compressed\/uncompressed size mismatch/);
});
