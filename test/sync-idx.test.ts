import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { isFsError } from '../src/errors.js';
import { blockSizeBytes } from '../src/limits.js';
import { crc64 } from '../src/sync/crc64.js';
import {
  type BlockLocation, type BlockRun, type FileType, type FileVersion, type Idx, type Stamp,
  blockRunHeaderLayout, blockRunHeaderSizeBytes, blockRunsFromIds, blockTableEntryLayout, blockTableEntrySizeBytes,
  compareStamps, copyRunBodyLayout, copyRunBodySizeBytes, decodeIdx, encodeIdx, idxHeaderLayout, idxHeaderSizeBytes,
  idxSizeBytes, idxTrailerLayout, idxTrailerSizeBytes, resolveBlockList, versionRecordFixedSizeBytes,
  versionRecordLayout, xattrHeaderLayout, xattrHeaderSizeBytes,
} from '../src/sync/idx.js';
import { idxSizeMaxBytes } from '../src/sync/limits.js';
import { checkIdxPath } from '../src/sync/names.js';
import {
  centralHeaderFixedSizeBytes, centralHeaderLayout, endRecordLayout, endRecordSizeBytes, localHeaderFixedSizeBytes,
  localHeaderLayout, zip64EndRecordLayout, zip64EndRecordSizeBytes, zip64LocatorLayout, zip64LocatorSizeBytes,
} from '../src/sync/zip-format.js';

/** test/fixtures, whether this file runs from test/ (tsx) or dist/test/ (compiled). */
function fixturesDir(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  for (const candidate of [join(here, 'fixtures'), join(here, '..', '..', 'test', 'fixtures')]) {
    if (existsSync(candidate)) return candidate;
  }
  throw new Error(`test/fixtures not found from ${here}`);
}

function expectBadArchive(f: () => unknown, what: string): void {
  try {
    f();
  } catch (e) {
    assert.ok(isFsError(e, 'BAD_ARCHIVE'), `${what}: expected BAD_ARCHIVE, got ${String(e)}`);
    return;
  }
  assert.fail(`${what}: decoded without error`);
}

// ---------------------------------------------------------------------------------------------
// A fixed idx exercising every field, for the golden file and the fuzzers.

const boxA = 'fedcba98765432100123456789abcdef';
const boxB = '00112233445566778899aabbccddeeff';

function id(n: number): Uint8Array {
  const bytes = new Uint8Array(16);
  bytes[15] = n;
  bytes[0] = 0xb0;
  return bytes;
}

function goldenIdx(): Idx {
  const base: Omit<FileVersion, 'path' | 'type' | 'stamp'> = {
    mode: 0o644, uid: 1000, gid: 1000, rdev: 0, mtimeNs: 1_700_000_000_123_456_789n, sizeBytes: 0,
    symlinkTarget: '', xattrs: [], deleted: false, base: null, blockRuns: [],
  };
  const ids = new Uint8Array(3 * 16);
  ids.set(id(1), 0);
  ids.set(id(2), 32); // slot 1 stays a hole inside the run
  const versions: FileVersion[] = [
    { ...base, path: '', type: 'dir', mode: 0o755, stamp: { counter: 1, boxid: boxA } },
    {
      ...base, path: 'docs/réport.txt', type: 'file', sizeBytes: 5 * blockSizeBytes + 100, stamp: { counter: 7, boxid: boxA },
      base: { counter: 5, boxid: boxB },
      xattrs: [{ name: 'user.colour', value: Uint8Array.from([1, 2, 3]) }, { name: 'user.a', value: new Uint8Array(0) }],
      blockRuns: [
        { kind: 'ids', blockIndex: 0, ids },
        { kind: 'copy', blockIndex: 4, blockCount: 2, source: { counter: 5, boxid: boxB }, sourceBlockIndex: 4 },
      ],
    },
    { ...base, path: 'docs', type: 'dir', mode: 0o2775, stamp: { counter: 2, boxid: boxA } },
    { ...base, path: 'docs/link', type: 'symlink', mode: 0o777, symlinkTarget: '../etc/hosts', sizeBytes: 12, stamp: { counter: 3, boxid: boxA } },
    { ...base, path: 'old.txt', type: 'file', deleted: true, mtimeNs: -1_000_000_001n, stamp: { counter: 9, boxid: boxB }, base: { counter: 4, boxid: boxA } },
    { ...base, path: 'pipe', type: 'fifo', uid: 0xffffffff, stamp: { counter: 2 ** 53 - 1, boxid: boxB } },
    { ...base, path: 'dev/null', type: 'chardev', rdev: (1 << 8) | 3, stamp: { counter: 10, boxid: boxA } },
  ];
  const blocks: BlockLocation[] = [
    { blockId: id(1), headerOffset: 37, storedSizeBytes: 20, sizeBytes: 4096, crc32: 0xdeadbeef, method: 8 },
    { blockId: id(2), headerOffset: 126, storedSizeBytes: 4096, sizeBytes: 4096, crc32: 0x01020304, method: 0 },
    { blockId: id(3), headerOffset: 4291, storedSizeBytes: 50, sizeBytes: 100, crc32: 0xffffffff, method: 8 },
  ];
  return {
    header: {
      archiveName: '0123456789abcdef0123456789abcdef', writerBoxid: boxA, createdNs: 1_700_000_001_000_000_000n,
      encrypted: false, zipSizeBytes: 100_000,
    },
    versions, blocks,
  };
}

/** The idx as decoding returns it: xattrs sorted by UTF-8 name. */
function normalized(idx: Idx): Idx {
  return {
    ...idx,
    versions: idx.versions.map((v) => ({
      ...v,
      xattrs: v.xattrs.map((x) => ({ name: x.name, value: x.value }))
        .sort((a, b) => Buffer.compare(Buffer.from(a.name), Buffer.from(b.name))),
    })),
  };
}

// ---------------------------------------------------------------------------------------------

test('idx: named offsets of every record add up to its size', () => {
  const layouts: [string, Record<string, { offset: number; sizeBytes: number }>, number][] = [
    ['idx header', idxHeaderLayout, idxHeaderSizeBytes],
    ['version record', versionRecordLayout, versionRecordFixedSizeBytes],
    ['xattr header', xattrHeaderLayout, xattrHeaderSizeBytes],
    ['block run header', blockRunHeaderLayout, blockRunHeaderSizeBytes],
    ['copy run body', copyRunBodyLayout, copyRunBodySizeBytes],
    ['block table entry', blockTableEntryLayout, blockTableEntrySizeBytes],
    ['idx trailer', idxTrailerLayout, idxTrailerSizeBytes],
    ['zip local header', localHeaderLayout, localHeaderFixedSizeBytes],
    ['zip central header', centralHeaderLayout, centralHeaderFixedSizeBytes],
    ['zip end record', endRecordLayout, endRecordSizeBytes],
    ['zip64 end record', zip64EndRecordLayout, zip64EndRecordSizeBytes],
    ['zip64 locator', zip64LocatorLayout, zip64LocatorSizeBytes],
  ];
  for (const [name, layout, sizeBytes] of layouts) {
    let expectedOffset = 0;
    for (const [field, { offset, sizeBytes: fieldSize }] of Object.entries(layout)) {
      assert.equal(offset, expectedOffset, `${name}.${field} offset`);
      assert.ok(fieldSize > 0, `${name}.${field} size`);
      expectedOffset += fieldSize;
    }
    assert.equal(expectedOffset, sizeBytes, `${name} size`);
  }
});

test('idx: the encoder writes the header fields at their named offsets', () => {
  const idx = goldenIdx();
  const bytes = Buffer.from(encodeIdx(idx));
  const H = idxHeaderLayout;
  assert.equal(bytes.toString('ascii', 0, 8), 'ZIPPYIDX');
  assert.equal(bytes.readUInt16LE(H.formatVersion.offset), 1);
  assert.equal(bytes.readUInt32LE(H.idxSizeBytes.offset), bytes.length);
  assert.equal(bytes.readUInt32LE(H.versionCount.offset), idx.versions.length);
  assert.equal(bytes.readUInt32LE(H.blockCount.offset), idx.blocks.length);
  assert.equal(bytes.toString('hex', H.archiveName.offset, H.archiveName.offset + 16), idx.header.archiveName);
  const versionsSize = bytes.readUInt32LE(H.versionsSizeBytes.offset);
  assert.equal(idxHeaderSizeBytes + versionsSize + idx.blocks.length * blockTableEntrySizeBytes + idxTrailerSizeBytes, bytes.length);
  const firstRecordSize = bytes.readUInt32LE(idxHeaderSizeBytes + versionRecordLayout.recordSizeBytes.offset);
  assert.equal(firstRecordSize, versionRecordFixedSizeBytes); // the root: empty path, nothing variable
  const trailer = bytes.length - idxTrailerSizeBytes;
  assert.equal(bytes.toString('ascii', trailer, trailer + 8), 'ZIPPYEND');
  assert.equal(bytes.readBigUInt64LE(trailer + idxTrailerLayout.crc64.offset), crc64(bytes.subarray(0, bytes.length - 8)));
  assert.equal(idxSizeBytes(idx), bytes.length);
});

test('idx: golden file v1 still decodes to the same idx, and encoding is unchanged', () => {
  const path = join(fixturesDir(), 'sync-idx-v1.idx');
  const encoded = encodeIdx(goldenIdx());
  if (process.env['ZIPPY_UPDATE_GOLDEN'] === '1') writeFileSync(path, encoded);
  const golden = readFileSync(path);
  assert.deepEqual(decodeIdx(golden, path), normalized(goldenIdx()));
  assert.ok(Buffer.from(encoded).equals(golden), 'encodeIdx output differs from the golden file: the format changed');
});

// ---------------------------------------------------------------------------------------------
// Property: random valid idx files round-trip exactly.

const hex128Arb = fc.uint8Array({ minLength: 16, maxLength: 16 }).map((b) => Buffer.from(b).toString('hex'));
// fc.record builds null-prototype objects; the decoder returns plain ones, so copy into plain objects.
const stampArb: fc.Arbitrary<Stamp> = fc.record({ counter: fc.maxSafeNat(), boxid: hex128Arb })
  .map((s) => ({ counter: s.counter, boxid: s.boxid }));
const u32Arb = fc.integer({ min: 0, max: 0xffffffff });
const textArb = (minLength: number, maxLength: number): fc.Arbitrary<string> =>
  fc.string({ unit: 'binary', minLength, maxLength })
    .filter((s) => Buffer.from(s, 'utf8').toString('utf8') === s && !s.includes('\0'));
const pathArb = fc.array(textArb(1, 10), { minLength: 1, maxLength: 4 })
  .map((parts) => parts.join('/'))
  .filter((p) => checkIdxPath(p).ok);
const fileTypes: FileType[] = ['file', 'dir', 'symlink', 'fifo', 'socket', 'chardev', 'blockdev'];
const runSpecArb = fc.record({
  gap: fc.integer({ min: 0, max: 3 }),
  count: fc.integer({ min: 1, max: 5 }),
  copy: fc.boolean(),
  ids: fc.uint8Array({ minLength: 5 * 16, maxLength: 5 * 16 }),
  source: stampArb,
  sourceBlockIndex: fc.integer({ min: 0, max: 1000 }),
});

type RunSpec = typeof runSpecArb extends fc.Arbitrary<infer T> ? T : never;

function layRuns(specs: RunSpec[], slotCount: number, own: Stamp): BlockRun[] {
  const runs: BlockRun[] = [];
  let next = 0;
  for (const spec of specs) {
    const blockIndex = next + spec.gap;
    const count = Math.min(spec.count, slotCount - blockIndex);
    if (count <= 0) break;
    if (spec.copy && compareStamps(spec.source, own) !== 0) {
      runs.push({ kind: 'copy', blockIndex, blockCount: count, source: spec.source, sourceBlockIndex: spec.sourceBlockIndex });
    } else {
      runs.push({ kind: 'ids', blockIndex, ids: spec.ids.slice(0, count * 16) });
    }
    next = blockIndex + count;
  }
  return runs;
}

const versionArb: fc.Arbitrary<FileVersion> = fc.record({
  path: pathArb,
  type: fc.constantFrom(...fileTypes),
  mode: fc.integer({ min: 0, max: 0o7777 }),
  uid: u32Arb,
  gid: u32Arb,
  rdev: u32Arb,
  mtimeNs: fc.bigInt(-(2n ** 63n), 2n ** 63n - 1n),
  fileSizeBytes: fc.integer({ min: 0, max: 40 * blockSizeBytes }),
  target: textArb(1, 40),
  xattrs: fc.uniqueArray(fc.record({ name: textArb(1, 12), value: fc.uint8Array({ maxLength: 24 }) }),
    { selector: (x) => x.name, maxLength: 4 }),
  deleted: fc.boolean(),
  stamp: stampArb,
  base: fc.option(stampArb, { nil: null }),
  runs: fc.array(runSpecArb, { maxLength: 6 }),
}).map((r): FileVersion => {
  const isDevice = r.type === 'chardev' || r.type === 'blockdev';
  const symlinkTarget = r.type === 'symlink' ? r.target : '';
  const sizeBytes = r.type === 'file' ? r.fileSizeBytes : Buffer.byteLength(symlinkTarget, 'utf8');
  return {
    path: r.path, type: r.type, mode: r.mode, uid: r.uid, gid: r.gid, rdev: isDevice ? r.rdev : 0, mtimeNs: r.mtimeNs,
    sizeBytes, symlinkTarget, xattrs: r.xattrs, deleted: r.deleted, stamp: r.stamp,
    base: r.base !== null && compareStamps(r.base, r.stamp) === 0 ? null : r.base,
    blockRuns: r.type === 'file' ? layRuns(r.runs, Math.ceil(sizeBytes / blockSizeBytes), r.stamp) : [],
  };
});

const locationArb: fc.Arbitrary<BlockLocation> = fc.record({
  blockId: fc.uint8Array({ minLength: 16, maxLength: 16 }).filter((b) => b.some((x) => x !== 0)),
  headerOffset: fc.integer({ min: 0, max: 1_000_000_000 }),
  sizeBytes: fc.integer({ min: 1, max: blockSizeBytes }),
  deflatedSizeBytes: fc.integer({ min: 1, max: blockSizeBytes + 64 }),
  crc32: u32Arb,
  deflated: fc.boolean(),
}).map((r) => ({
  blockId: r.blockId, headerOffset: r.headerOffset, sizeBytes: r.sizeBytes, crc32: r.crc32,
  method: r.deflated ? 8 as const : 0 as const,
  storedSizeBytes: r.deflated ? r.deflatedSizeBytes : r.sizeBytes,
}));

const idxArb: fc.Arbitrary<Idx> = fc.record({
  archiveName: hex128Arb,
  writerBoxid: hex128Arb,
  createdNs: fc.bigInt(0n, 2n ** 64n - 1n),
  encrypted: fc.boolean(),
  versions: fc.uniqueArray(versionArb, { selector: (v) => `${v.stamp.counter}:${v.stamp.boxid}`, maxLength: 8 }),
  blocks: fc.uniqueArray(locationArb, { selector: (l) => Buffer.from(l.blockId).toString('hex'), maxLength: 8 }),
}).map((r) => ({
  header: { archiveName: r.archiveName, writerBoxid: r.writerBoxid, createdNs: r.createdNs, encrypted: r.encrypted, zipSizeBytes: 2_000_000_000 },
  versions: r.versions,
  blocks: [...r.blocks].sort((a, b) => Buffer.compare(a.blockId, b.blockId)),
}));

test('idx: property: random idx files round-trip and size() is exact', () => {
  fc.assert(fc.property(idxArb, (idx) => {
    const bytes = encodeIdx(idx);
    assert.equal(bytes.length, idxSizeBytes(idx));
    const decoded = decodeIdx(bytes, 'property');
    assert.deepEqual(decoded, normalized(idx));
    assert.ok(Buffer.from(encodeIdx(decoded)).equals(bytes), 're-encoding a decoded idx is byte-identical');
  }), { numRuns: 300, seed: 4242 });
});

// ---------------------------------------------------------------------------------------------
// Hostile input: truncations and mutations give BAD_ARCHIVE and never another exception.

/** mulberry32: a small seeded PRNG so failures reproduce. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Rewrites the header's size field and the trailer CRC so a mutation reaches the structural checks. */
function refresh(bytes: Uint8Array): Uint8Array {
  const out = Buffer.from(bytes);
  if (out.length >= idxHeaderSizeBytes + idxTrailerSizeBytes) {
    out.writeUInt32LE(out.length, idxHeaderLayout.idxSizeBytes.offset);
    out.writeBigUInt64LE(crc64(out.subarray(0, out.length - 8)), out.length - 8);
  }
  return out;
}

test('idx: every truncation is BAD_ARCHIVE', () => {
  const bytes = encodeIdx(goldenIdx());
  for (let length = 0; length < bytes.length; length++) {
    expectBadArchive(() => decodeIdx(bytes.subarray(0, length), 'truncated'), `truncated to ${length}`);
    expectBadArchive(() => decodeIdx(refresh(bytes.subarray(0, length)), 'truncated'), `truncated to ${length}, CRC fixed`);
  }
});

test('idx: seeded fuzz: mutated idx is BAD_ARCHIVE, or decodes canonically when the CRC is fixed', () => {
  const random = prng(20240601);
  const original = encodeIdx(goldenIdx());
  const pick = (n: number): number => Math.floor(random() * n);
  let decodedCount = 0;
  for (let round = 0; round < 4000; round++) {
    let bytes = Uint8Array.from(original);
    const flips = 1 + pick(4);
    for (let i = 0; i < flips; i++) {
      const at = pick(bytes.length - 8);
      bytes[at] = pick(4) === 0 ? bytes[at]! ^ (1 << pick(8)) : pick(256);
    }
    if (pick(4) === 0) {
      const at = pick(bytes.length);
      const insert = pick(2) === 0;
      bytes = insert
        ? Uint8Array.from([...bytes.subarray(0, at), pick(256), ...bytes.subarray(at)])
        : Uint8Array.from([...bytes.subarray(0, at), ...bytes.subarray(at + 1)]);
    }
    if (!Buffer.from(bytes).equals(original)) expectBadArchive(() => decodeIdx(bytes, 'fuzz'), `round ${round} raw`);
    const fixed = refresh(bytes);
    try {
      const idx = decodeIdx(fixed, 'fuzz');
      decodedCount++;
      assert.ok(Buffer.from(encodeIdx(idx)).equals(Buffer.from(fixed)), `round ${round}: accepted input is not canonical`);
    } catch (e) {
      assert.ok(isFsError(e, 'BAD_ARCHIVE'), `round ${round}: ${String(e)}`);
    }
  }
  assert.ok(decodedCount > 0 && decodedCount < 4000, `both outcomes reached (${decodedCount} decoded)`);
});

test('idx: oversize and undersize inputs are refused before parsing', () => {
  expectBadArchive(() => decodeIdx(new Uint8Array(idxSizeMaxBytes + 1), 'huge'), 'huge');
  expectBadArchive(() => decodeIdx(new Uint8Array(0), 'empty'), 'empty');
  const bytes = Buffer.from(encodeIdx(goldenIdx()));
  bytes.writeUInt16LE(2, idxHeaderLayout.formatVersion.offset);
  assert.throws(() => decodeIdx(refresh(bytes), 'v2.idx'), /format version 2, this reader knows 1/);
  const counts = Buffer.from(encodeIdx(goldenIdx()));
  counts.writeUInt32LE(0xffffffff, idxHeaderLayout.versionCount.offset);
  assert.throws(() => decodeIdx(refresh(counts), 'counts.idx'), /counts\.idx: .*4294967295 versions > the limit/);
});

test('idx: messages name the file and the numbers', () => {
  const bytes = encodeIdx(goldenIdx());
  assert.throws(() => decodeIdx(bytes.subarray(0, 100), '/sync/x.idx'), /BAD_ARCHIVE: \/sync\/x\.idx: header says \d+ bytes, file has 100/);
  const flipped = Uint8Array.from(bytes);
  flipped[200] = flipped[200]! ^ 1;
  assert.throws(() => decodeIdx(flipped, '/sync/y.idx'), /\/sync\/y\.idx: trailer CRC64 0x[0-9a-f]+ != computed 0x[0-9a-f]+/);
});

// ---------------------------------------------------------------------------------------------
// The encoder refuses what the decoder would refuse.

test('idx: the encoder rejects invalid versions with BAD_INPUT', () => {
  const good = goldenIdx();
  const file = good.versions[1]!;
  const bad: [string, Partial<FileVersion>][] = [
    ['absolute path', { path: '/etc/passwd' }],
    ['dot-dot', { path: 'a/../b' }],
    ['mode', { mode: 0o10000 }],
    ['run past end', { sizeBytes: blockSizeBytes }],
    ['overlapping runs', { blockRuns: [{ kind: 'ids', blockIndex: 0, ids: new Uint8Array(32) }, { kind: 'ids', blockIndex: 1, ids: new Uint8Array(16) }] }],
    ['copy from itself', { blockRuns: [{ kind: 'copy', blockIndex: 0, blockCount: 1, source: file.stamp, sourceBlockIndex: 0 }] }],
    ['duplicate xattr', { xattrs: [{ name: 'user.x', value: new Uint8Array(1) }, { name: 'user.x', value: new Uint8Array(2) }] }],
    ['symlink target on file', { symlinkTarget: 'x' }],
    ['fractional size', { sizeBytes: 1.5 }],
    ['base equals stamp', { base: file.stamp }],
  ];
  for (const [what, change] of bad) {
    const idx: Idx = { ...good, versions: [{ ...file, ...change }] };
    assert.throws(() => encodeIdx(idx), (e) => isFsError(e, 'BAD_INPUT'), what);
  }
  const duplicateStamps: Idx = { ...good, versions: [file, { ...file, path: 'other' }] };
  assert.throws(() => encodeIdx(duplicateStamps), /stamp .* appears twice/);
  const unsorted: Idx = { ...good, blocks: [...good.blocks].reverse() };
  assert.throws(() => encodeIdx(unsorted), /must be sorted and unique/);
  const pastZip: Idx = { ...good, header: { ...good.header, zipSizeBytes: 100 } };
  assert.throws(() => encodeIdx(pastZip), /past the zip's 100 bytes/);
});

// ---------------------------------------------------------------------------------------------
// Block lists.

test('idx: block runs from a flat list skip holes, and resolve back through copies', () => {
  const flat = new Uint8Array(6 * 16);
  flat.set(id(1), 0);
  flat.set(id(2), 16);
  flat.set(id(3), 4 * 16);
  const runs = blockRunsFromIds(flat);
  assert.deepEqual(runs.map((r) => [r.blockIndex, r.ids.length / 16]), [[0, 2], [4, 1]]);
  const stampOld: Stamp = { counter: 1, boxid: boxA };
  const old: FileVersion = {
    path: 'f', type: 'file', mode: 0o644, uid: 0, gid: 0, rdev: 0, mtimeNs: 0n, sizeBytes: 6 * blockSizeBytes,
    symlinkTarget: '', xattrs: [], deleted: false, stamp: stampOld, base: null, blockRuns: runs,
  };
  assert.deepEqual(resolveBlockList(old, () => undefined, 't'), flat);
  // A 4 KiB edit of slot 1: copy slots 0 and 2..5, list only slot 1.
  const edited: FileVersion = {
    ...old, stamp: { counter: 2, boxid: boxA }, base: stampOld,
    blockRuns: [
      { kind: 'copy', blockIndex: 0, blockCount: 1, source: stampOld, sourceBlockIndex: 0 },
      { kind: 'ids', blockIndex: 1, ids: id(9) },
      { kind: 'copy', blockIndex: 2, blockCount: 4, source: stampOld, sourceBlockIndex: 2 },
    ],
  };
  const expected = Uint8Array.from(flat);
  expected.set(id(9), 16);
  const lookup = (s: Stamp): Uint8Array | undefined => (compareStamps(s, stampOld) === 0 ? flat : undefined);
  assert.deepEqual(resolveBlockList(edited, lookup, 't'), expected);
  assert.throws(() => resolveBlockList(edited, () => undefined, 'a.idx'), /a\.idx: .* copies blocks from unknown version 1:/);
  const idx: Idx = { ...goldenIdx(), versions: [old, edited] };
  assert.deepEqual(decodeIdx(encodeIdx(idx), 'edit'), idx);
  // The edit costs one fixed record plus three small runs, whatever the file's size.
  assert.equal(encodeIdx({ ...idx, versions: [edited], blocks: [] }).length, 80 + 96 + 1 + 40 + 28 + 40 + 16);
});
