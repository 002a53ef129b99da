/**
 * The sealed-file envelope: round trips, conformance with libsodium's XChaCha20-Poly1305,
 * rejection of every single-byte change, truncation, extension, chunk moves, renames and swaps,
 * BAD_KEY for missing and wrong keys, random access to blocks of a sealed archive zip, and a
 * throughput measurement against a plain copy.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, test } from 'node:test';
import { isFsError } from '../src/errors.js';
import {
  SealedReader, SealedReaderSync, decodeEnvelopeHeader, envelopeHeaderLayout, isSealed, openSealed, plainSizeOfSealed, readSealedFile, sealFile,
  sealedSizeBytes, writeSealedFile, type SealOptions,
} from '../src/sync/crypto/index.js';
import { envelopeChunkSizeBytes, envelopeHeaderSizeBytes, envelopeTagBytes } from '../src/sync/crypto/limits.js';
import { sodium } from '../src/sync/crypto/sodium.js';
import { type BlockPayload, BlockZipReader, buildBlockZip, writeBlockZip, writeBlockZipFile } from '../src/sync/zipfile.js';

const root = mkdtempSync(join(tmpdir(), 'zippy-crypto-env-'));
after(() => rmSync(root, { recursive: true, force: true }));
let dirCounter = 0;
function freshDir(): string {
  const dir = join(root, `d${dirCounter++}`);
  mkdirSync(dir);
  return dir;
}

const C = envelopeChunkSizeBytes;
const key = Buffer.alloc(32, 7);
const keyId = '0123456789abcdef';
const archiveName = 'a'.repeat(32);
const seal: SealOptions = { key, keyId, archiveName, kind: 'zip' };
const keys = new Map([[keyId, key]]);
const open = { keys, archiveName, kind: 'zip' as const };

/** A small seeded PRNG (mulberry32) so failures reproduce. */
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

function rejects(fn: () => unknown, codes: string[], what: string): void {
  try {
    fn();
  } catch (e) {
    assert.ok(isFsError(e), `${what}: not an FsError: ${String(e)}`);
    assert.ok(codes.includes(e.code), `${what}: code ${e.code} not in ${codes.join(',')}: ${e.message}`);
    return;
  }
  assert.fail(`${what}: accepted`);
}

test('header layout fields add up to the header size', () => {
  let offset = 0;
  for (const [name, field] of Object.entries(envelopeHeaderLayout)) {
    assert.equal(field.offset, offset, name);
    offset += field.size;
  }
  assert.equal(offset, envelopeHeaderSizeBytes);
});

test('golden file: a sealed idx written by format version 1 still opens (test/fixtures/crypto-envelope-v1.sealed)', () => {
  const fixture = readFileSync(join(fileURLToPath(new URL('.', import.meta.url)), import.meta.url.endsWith('.js') ? '../../test' : '.', 'fixtures', 'crypto-envelope-v1.sealed'));
  const random = prng(2026);
  const plain = Buffer.alloc(40000);
  for (let i = 0; i < plain.length; i++) plain[i] = Math.floor(random() * 256);
  const options = { keys: new Map([['fedcba9876543210', Buffer.alloc(32, 0x5a)]]), archiveName: '0123456789abcdef0123456789abcdef', kind: 'idx' as const };
  const header = decodeEnvelopeHeader(fixture, options, 'golden');
  assert.equal(header.keyId, 'fedcba9876543210');
  assert.equal(fixture.length, sealedSizeBytes(plain.length));
  assert.ok(openSealed(fixture, options).equals(plain));
});

test('round trip at chunk-boundary sizes, whole and in random pieces', () => {
  const random = prng(1);
  for (const size of [0, 1, 4095, C - 1, C, C + 1, 2 * C, 3 * C + 5, 1_000_003]) {
    const plain = randomBytes(size);
    const sealed = sealFile(plain, seal);
    assert.equal(sealed.length, sealedSizeBytes(size), `sealed size for ${size}`);
    assert.equal(plainSizeOfSealed(sealed.length, 'x'), size);
    assert.ok(isSealed(sealed));
    assert.ok(openSealed(sealed, open).equals(plain), `round trip ${size}`);
    const pieces: Buffer[] = [];
    for (let at = 0; at < size;) {
      const length = Math.min(size - at, Math.floor(random() * 3 * C));
      pieces.push(plain.subarray(at, at + length));
      at += length;
    }
    const sealedPieces = sealFile(pieces, seal);
    assert.equal(sealedPieces.length, sealed.length);
    assert.ok(openSealed(sealedPieces, open).equals(plain), `round trip in pieces ${size}`);
    assert.ok(!sealedPieces.equals(sealed), 'every sealing uses a fresh nonce prefix');
  }
});

test('every chunk is libsodium crypto_aead_xchacha20poly1305_ietf with nonce prefix || u64le(index)', () => {
  const plain = randomBytes(2 * C + 100);
  const sealed = sealFile(plain, seal);
  const header = sealed.subarray(0, envelopeHeaderSizeBytes);
  const prefix = header.subarray(envelopeHeaderLayout.noncePrefix.offset, envelopeHeaderLayout.noncePrefix.offset + 16);
  const chunkCount = 3;
  for (let i = 0; i < chunkCount; i++) {
    const start = envelopeHeaderSizeBytes + i * (C + envelopeTagBytes);
    const chunk = sealed.subarray(start, Math.min(start + C + envelopeTagBytes, sealed.length));
    const nonce = Buffer.alloc(24);
    prefix.copy(nonce, 0);
    nonce.writeBigUInt64LE(BigInt(i), 16);
    const ad = Buffer.concat([header, Buffer.from([i === chunkCount - 1 ? 1 : 0])]);
    const opened = Buffer.from(sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(null, chunk, ad, nonce, key));
    assert.ok(opened.equals(plain.subarray(i * C, i * C + opened.length)), `chunk ${i}`);
  }
});

test('changing any single byte is rejected (seeded, 600 positions, plus every header byte)', () => {
  const plain = randomBytes(3 * C + 1234);
  const sealed = sealFile(plain, seal);
  const random = prng(42);
  const positions = Array.from({ length: envelopeHeaderSizeBytes }, (_, i) => i);
  for (let n = 0; n < 600; n++) positions.push(Math.floor(random() * sealed.length));
  for (const position of positions) {
    const changed = Buffer.from(sealed);
    changed[position] = changed[position]! ^ (1 + Math.floor(random() * 255));
    rejects(() => openSealed(changed, open), ['BAD_ARCHIVE', 'BAD_KEY'], `byte ${position}`);
  }
});

test('truncation, extension, dropped, swapped and foreign chunks are rejected', () => {
  const plain = randomBytes(4 * C);
  const sealed = sealFile(plain, seal);
  const sealedChunk = C + envelopeTagBytes;
  for (let chunks = 0; chunks < 4; chunks++) {
    rejects(() => openSealed(sealed.subarray(0, envelopeHeaderSizeBytes + chunks * sealedChunk), open), ['BAD_ARCHIVE'], `cut after ${chunks} chunks`);
  }
  const random = prng(7);
  for (let n = 0; n < 50; n++) {
    const length = Math.floor(random() * sealed.length);
    rejects(() => openSealed(sealed.subarray(0, length), open), ['BAD_ARCHIVE'], `cut at ${length}`);
  }
  rejects(() => openSealed(Buffer.concat([sealed, Buffer.alloc(1)]), open), ['BAD_ARCHIVE'], 'one byte appended');
  rejects(() => openSealed(Buffer.concat([sealed, sealed.subarray(envelopeHeaderSizeBytes, envelopeHeaderSizeBytes + sealedChunk)]), open),
    ['BAD_ARCHIVE'], 'a chunk appended');
  const body = (i: number): Buffer => sealed.subarray(envelopeHeaderSizeBytes + i * sealedChunk, envelopeHeaderSizeBytes + (i + 1) * sealedChunk);
  const header = sealed.subarray(0, envelopeHeaderSizeBytes);
  rejects(() => openSealed(Buffer.concat([header, body(0), body(2), body(1), body(3)]), open), ['BAD_ARCHIVE'], 'chunks swapped');
  rejects(() => openSealed(Buffer.concat([header, body(0), body(1), body(3)]), open), ['BAD_ARCHIVE'], 'a middle chunk dropped');
  const other = sealFile(plain, seal);
  rejects(() => openSealed(Buffer.concat([header, other.subarray(envelopeHeaderSizeBytes)]), open), ['BAD_ARCHIVE'], 'another file\'s chunks under this header');
});

test('a file renamed to another archive, or a zip read as an idx, is rejected', () => {
  const sealed = sealFile(randomBytes(1000), seal);
  rejects(() => openSealed(sealed, { ...open, archiveName: 'b'.repeat(32) }), ['BAD_ARCHIVE'], 'renamed');
  rejects(() => openSealed(sealed, { ...open, kind: 'idx' }), ['BAD_ARCHIVE'], 'zip read as idx');
  // Rewriting the header's name to match the new name breaks every chunk's additional data.
  const renamed = Buffer.from(sealed);
  Buffer.from('b'.repeat(32), 'hex').copy(renamed, envelopeHeaderLayout.archiveName.offset);
  rejects(() => openSealed(renamed, { ...open, archiveName: 'b'.repeat(32) }), ['BAD_ARCHIVE'], 'renamed with header rewritten');
  rejects(() => openSealed(randomBytes(500), open), ['BAD_ARCHIVE'], 'not sealed');
  assert.throws(() => decodeEnvelopeHeader(sealed, { archiveName, kind: 'idx' }, 'x'), /sealed as an zip, read as an idx/);
});

test('no key for the key id is BAD_KEY with the enrollment hint; a wrong key is BAD_KEY', () => {
  const sealed = sealFile(randomBytes(1000), seal);
  assert.throws(() => openSealed(sealed, { ...open, keys: new Map(), syncDir: '/s', place: '/s/x.zip' }), (e: unknown) => {
    assert.ok(isFsError(e, 'BAD_KEY'));
    assert.match(e.message, /\/s\/x\.zip/);
    assert.match(e.message, /run zippy-key request \/s and ask a member to grant/);
    return true;
  });
  assert.throws(() => openSealed(sealed, { ...open, keys: new Map([[keyId, Buffer.alloc(32, 8)]]) }), (e: unknown) => isFsError(e, 'BAD_KEY') && /not the key that sealed/.test(e.message));
});

async function blocksOf(count: number, seed: number): Promise<BlockPayload[]> {
  const random = prng(seed);
  return Array.from({ length: count }, (_, i) => {
    const data = Buffer.alloc(1 + Math.floor(random() * 4096));
    // Half compressible, half random, so both zip methods appear.
    if (i % 2 === 0) data.fill(i & 0xff);
    else for (let j = 0; j < data.length; j++) data[j] = Math.floor(random() * 256);
    const blockId = Buffer.alloc(16);
    blockId.writeUInt32BE(i + 1, 12);
    return { blockId, data };
  });
}

test('sealed archive zip: streamed write, random-access block reads, truncation fails at open', async () => {
  const dir = freshDir();
  const path = join(dir, `${archiveName}.zip`);
  const blocks = await blocksOf(300, 3);
  const written = await writeSealedFile(path, seal, (sink) => writeBlockZip(blocks, sink));
  const plainZip = await buildBlockZip(blocks, {});
  assert.equal(written.plainSizeBytes, written.result.sizeBytes);
  assert.equal(readFileSync(path).length, sealedSizeBytes(written.plainSizeBytes));
  const reader = await SealedReader.open(path, { ...open, plainSizeBytes: written.plainSizeBytes });
  try {
    const byId = new Map(blocks.map((b) => [Buffer.from(b.blockId).toString('hex'), b.data]));
    const random = prng(9);
    const order = [...written.result.locations].sort(() => random() - 0.5);
    for (const location of order) {
      const data = await reader.readBlock(location);
      assert.ok(data.equals(Buffer.from(byId.get(Buffer.from(location.blockId).toString('hex'))!)));
    }
    assert.equal(plainZip.locations.length, written.result.locations.length);
    const whole = await reader.readAt(0, reader.plainSizeBytes);
    assert.ok(whole.equals(openSealed(readFileSync(path), open)));
  } finally {
    await reader.close();
  }
  await assert.rejects(SealedReader.open(path, { ...open, plainSizeBytes: written.plainSizeBytes + 1 }), (e: unknown) => isFsError(e, 'BAD_ARCHIVE'));
  const sealed = readFileSync(path);
  const cutPath = join(dir, 'cut.zip');
  writeFileSync(cutPath, sealed);
  truncateSync(cutPath, envelopeHeaderSizeBytes + (C + envelopeTagBytes));
  await assert.rejects(SealedReader.open(cutPath, open), (e: unknown) => isFsError(e, 'BAD_ARCHIVE') && /chunk 0 of 1/.test(e.message));
  const flippedPath = join(dir, 'flipped.zip');
  const flipped = Buffer.from(sealed);
  flipped[envelopeHeaderSizeBytes + 100] = flipped[envelopeHeaderSizeBytes + 100]! ^ 1;
  writeFileSync(flippedPath, flipped);
  const flippedReader = await SealedReader.open(flippedPath, open);
  try {
    await assert.rejects(flippedReader.readAt(0, 10), (e: unknown) => isFsError(e, 'BAD_ARCHIVE') && /flipped\.zip/.test(e.message));
  } finally {
    await flippedReader.close();
  }
  await assert.rejects(readSealedFile(flippedPath, open, 1 << 30), (e: unknown) => isFsError(e, 'BAD_ARCHIVE'));
  assert.ok((await readSealedFile(path, open, 1 << 30)).equals(openSealed(sealed, open)));
  assert.equal(plainZip.bytes.length, written.plainSizeBytes, 'the sealed zip carries exactly the plain zip\'s bytes');
  await assert.rejects(readSealedFile(path, open, 1000), (e: unknown) => isFsError(e, 'BAD_ARCHIVE') && /limit/.test(e.message));
});

test('throughput: seal and open against a plain copy (reported)', (t) => {
  const sizeBytes = 64 * 1024 * 1024;
  const plain = randomBytes(sizeBytes);
  const mbps = (ms: number): number => Math.round((sizeBytes / (1024 * 1024)) / (ms / 1000));
  const time = (fn: () => unknown): number => {
    let best = Infinity;
    for (let i = 0; i < 3; i++) {
      const start = performance.now();
      fn();
      best = Math.min(best, performance.now() - start);
    }
    return best;
  };
  let sealed: Buffer = Buffer.alloc(0);
  const copyMs = time(() => Buffer.from(plain));
  const sealMs = time(() => {
    sealed = sealFile(plain, seal);
  });
  const openMs = time(() => openSealed(sealed, open));
  const report = `64 MiB: copy ${mbps(copyMs)} MB/s, seal ${mbps(sealMs)} MB/s, open ${mbps(openMs)} MB/s`;
  t.diagnostic(report);
  console.log(`# ${report}`);
  assert.ok(mbps(sealMs) > 50 && mbps(openMs) > 50, report);
});

test('throughput: archive zip write and block reads, sealed beside plain (reported)', async (t) => {
  const dir = freshDir();
  const blocks = await blocksOf(8192, 11); // ~16 MiB of 4 KiB-ish blocks, half compressible
  const plainBytes = blocks.reduce((sum, b) => sum + b.data.length, 0);
  const mbps = (ms: number): number => Math.round((plainBytes / (1024 * 1024)) / (ms / 1000));
  let start = performance.now();
  const plain = await writeBlockZipFile(join(dir, 'plain.zip'), blocks, { compressionLevel: 6 });
  const plainWriteMs = performance.now() - start;
  start = performance.now();
  await writeSealedFile(join(dir, `${archiveName}.zip`), seal, (sink) => writeBlockZip(blocks, sink, { compressionLevel: 6 }));
  const sealedWriteMs = performance.now() - start;
  const plainReader = await BlockZipReader.open(join(dir, 'plain.zip'));
  start = performance.now();
  for (const location of plain.locations) await plainReader.readBlock(location);
  const plainReadMs = performance.now() - start;
  const random = prng(5);
  const shuffled = [...plain.locations].sort(() => random() - 0.5);
  start = performance.now();
  for (const location of shuffled) await plainReader.readBlock(location);
  const plainRandomMs = performance.now() - start;
  await plainReader.close();
  const sealedReader = await SealedReader.open(join(dir, `${archiveName}.zip`), open);
  start = performance.now();
  for (const location of plain.locations) await sealedReader.readBlock(location);
  const sealedSequentialMs = performance.now() - start;
  start = performance.now();
  for (const location of shuffled) await sealedReader.readBlock(location);
  const sealedRandomMs = performance.now() - start;
  await sealedReader.close();
  const report = `archive of ${blocks.length} blocks: write plain ${mbps(plainWriteMs)} MB/s, sealed ${mbps(sealedWriteMs)} MB/s `
    + `(${(plainWriteMs / sealedWriteMs).toFixed(2)}x); block reads in zip order plain ${mbps(plainReadMs)} MB/s, sealed ${mbps(sealedSequentialMs)} MB/s `
    + `(${(plainReadMs / sealedSequentialMs).toFixed(2)}x); in random order plain ${mbps(plainRandomMs)} MB/s, sealed ${mbps(sealedRandomMs)} MB/s `
    + `(${(plainRandomMs / sealedRandomMs).toFixed(2)}x)`;
  t.diagnostic(report);
  console.log(`# ${report}`);
});

test('SealedReaderSync: sequential reads with read-ahead, two readers interleaved, a changed chunk inside a read-ahead window', async () => {
  const dir = freshDir();
  const plain = randomBytes(40 * C + 123);
  const paths = ['one', 'two'].map((n) => join(dir, `${n}.zip`));
  for (const path of paths) writeFileSync(path, sealFile(plain, seal));
  const readers = paths.map((path) => SealedReaderSync.open(path, open));
  try {
    for (const reader of readers) reader.verifyAll();
    // Both readers read the whole file sequentially in 4 KiB steps, interleaved (they share the read-ahead slot).
    const outs = readers.map(() => Buffer.alloc(plain.length));
    for (let offset = 0; offset < plain.length; offset += 4096) {
      for (const [i, reader] of readers.entries()) reader.readAt(offset, Math.min(4096, plain.length - offset)).copy(outs[i]!, offset);
    }
    for (const out of outs) assert.ok(out.equals(plain));
    // Backwards and random reads (no read-ahead) agree too.
    for (let chunk = 40; chunk >= 0; chunk -= 3) assert.ok(readers[0]!.readAt(chunk * C, Math.min(C, plain.length - chunk * C)).equals(plain.subarray(chunk * C, chunk * C + C)));
  } finally {
    for (const reader of readers) reader.close();
  }
  // A byte changed in chunk 21: verifyAll fails on it, and so does a sequential read reaching it through a read-ahead window.
  const changed = readFileSync(paths[0]!);
  const position = envelopeHeaderSizeBytes + 21 * (C + envelopeTagBytes) + 77;
  changed[position] = changed[position]! ^ 0x40;
  writeFileSync(paths[0]!, changed);
  const reader = SealedReaderSync.open(paths[0]!, open);
  try {
    assert.throws(() => reader.verifyAll(), (e: unknown) => isFsError(e, 'BAD_ARCHIVE') && /chunk 21 of 41/.test(e.message));
    assert.ok(reader.readAt(15 * C, C).equals(plain.subarray(15 * C, 16 * C)));
    assert.ok(reader.readAt(16 * C, C).equals(plain.subarray(16 * C, 17 * C)), 'sequential: read ahead from chunk 16');
    for (let chunk = 17; chunk < 21; chunk++) assert.ok(reader.readAt(chunk * C, C).equals(plain.subarray(chunk * C, chunk * C + C)));
    assert.throws(() => reader.readAt(21 * C, 10), (e: unknown) => isFsError(e, 'BAD_ARCHIVE') && /chunk 21 of 41/.test(e.message));
  } finally {
    reader.close();
  }
});
