/**
 * Seeded fuzzing of the decoders not already fuzzed elsewhere: LMDB records (inode, dirent,
 * block pointer, u64), the archive zip's block entry, the plain-zip listing, the sealed
 * envelope (header and whole file) and the key files (generation, sealed keys, passphrase,
 * payload). Input is random bytes and mutations of valid encodings (bit flips, overwrites with
 * extreme integers, truncations, insertions). Every call must return or throw a typed FsError,
 * never another exception and never hang (async calls are raced against a timeout; each test
 * has one). Already fuzzed elsewhere, not repeated here: segment record, segment header and the
 * segment scanner (blocks-fuzz.test.ts), idx (sync-idx.test.ts).
 *
 * ZIPPY_FUZZ_SEED reproduces; ZIPPY_SOAK=1 runs 30 times as many cases.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { isFsError } from '../src/errors.js';
import { decodeBlockPlace, decodeBlockPointer, decodeDirent, decodeInode, decodeU64, encodeBlockPointer, encodeDirent, encodeInode, encodeU64 } from '../src/btree/records.js';
import { decodeEnvelopeHeader, openSealed, sealFile } from '../src/sync/crypto/envelope.js';
import { decodePayload, encodePayload, formats, readGeneration, readPassphraseRecord, readSealedRecord } from '../src/sync/crypto/keyfiles.js';
import { buildBlockZip, decodeBlockEntry, listPlainZip, type BlockLocation } from '../src/sync/zipfile.js';
import { seededRandom } from './fixtures.js';

const soak = process.env['ZIPPY_SOAK'] === '1';
const seed = process.env['ZIPPY_FUZZ_SEED'] !== undefined ? Number(process.env['ZIPPY_FUZZ_SEED']) : 20261122; // fixed, so CI runs are reproducible; set the env variable to explore others
const scale = soak ? 30 : 1;
const root = mkdtempSync(join(tmpdir(), 'zippy-fuzz-'));
after(() => rmSync(root, { recursive: true, force: true }));

type Rand = ReturnType<typeof seededRandom>;

function randomBytes(rand: Rand, lengthMax: number): Buffer {
  const data = Buffer.alloc(rand.int(lengthMax + 1));
  for (let at = 0; at < data.length; at++) data[at] = rand.int(256);
  return data;
}

const extremes = [0, 1, 0x7f, 0x80, 0xff, 0x7fff, 0xffff, 0x7fffffff, 0x80000000, 0xffffffff];

/** One to four mutations of `valid`: flips, extreme u32/u16 overwrites, truncation, insertion. */
function mutate(rand: Rand, valid: Buffer): Buffer {
  let out = Buffer.from(valid);
  for (let n = 1 + rand.int(4); n > 0; n--) {
    const kind = rand.int(5);
    if (out.length === 0) return randomBytes(rand, 64);
    const at = rand.int(out.length);
    if (kind === 0) out[at] = out[at]! ^ (1 << rand.int(8));
    else if (kind === 1 && at + 4 <= out.length) out.writeUInt32LE(rand.pick(extremes) >>> 0, at);
    else if (kind === 2 && at + 2 <= out.length) out.writeUInt16LE(rand.pick(extremes) & 0xffff, at);
    else if (kind === 3) out = out.subarray(0, at);
    else out = Buffer.concat([out.subarray(0, at), randomBytes(rand, 16), out.subarray(at)]);
  }
  return out;
}

/** Runs `fn`; returns 'ok' or the FsError code; fails the test on any other exception. */
function outcome(what: string, fn: () => unknown): string {
  try {
    fn();
    return 'ok';
  } catch (e) {
    if (isFsError(e)) return e.code;
    assert.fail(`${what}: threw a non-FsError (seed ${seed}): ${(e as Error)?.stack ?? String(e)}`);
  }
}

/** As outcome, for promises, with a bound on the time each may take. */
async function outcomeAsync(what: string, fn: () => Promise<unknown>, timeoutMs = 5000): Promise<string> {
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<'hang'>((resolvePromise) => (timer = setTimeout(() => resolvePromise('hang'), timeoutMs)));
  try {
    const result = await Promise.race([fn().then(() => 'ok'), hang]);
    if (result === 'hang') assert.fail(`${what}: did not finish within ${timeoutMs} ms (seed ${seed})`);
    return result;
  } catch (e) {
    if (isFsError(e)) return e.code;
    throw e instanceof assert.AssertionError ? e : new assert.AssertionError({ message: `${what}: threw a non-FsError (seed ${seed}): ${(e as Error)?.stack ?? String(e)}` });
  } finally {
    clearTimeout(timer);
  }
}

function tally(counts: Map<string, number>, key: string): void {
  counts.set(key, (counts.get(key) ?? 0) + 1);
}

test(`fuzz: LMDB records (inode, dirent, block pointer, u64) (seed ${seed})`, { timeout: 60_000 * scale }, (t) => {
  const rand = seededRandom(seed);
  const counts = new Map<string, number>();
  const validInode = encodeInode({ mode: 0o100644, uid: 1000, gid: 1000, nlink: 1, rdev: 0, size: 12345, atimeNs: 1n, mtimeNs: 2n, ctimeNs: 3n, generation: 4, blockCount: 5, target: Buffer.from('some/target') });
  const validDirent = encodeDirent({ ino: 77, type: 8 });
  const validPointer = encodeBlockPointer({ kind: 1, lengthBytes: 4096, segment: 3, offset: 4096, blockId: Buffer.alloc(16, 9) });
  const decoders: [string, Buffer, (b: Buffer) => unknown][] = [
    ['inode', validInode, (b) => decodeInode(b, 'fuzz inode')],
    ['dirent', validDirent, (b) => decodeDirent(b, 'fuzz dirent')],
    ['pointer', validPointer, (b) => decodeBlockPointer(b, 'fuzz pointer')],
    ['u64', encodeU64(123456789), (b) => decodeU64(b, 'fuzz u64')],
  ];
  for (let i = 0; i < 3000 * scale; i++) {
    for (const [name, valid, decode] of decoders) {
      const input = rand.next() < 0.3 ? randomBytes(rand, valid.length * 2) : mutate(rand, valid);
      tally(counts, `${name}:${outcome(`${name} decode of ${input.toString('hex')}`, () => decode(input))}`);
    }
  }
  t.diagnostic(`seed ${seed}: ${[...counts].map(([k, v]) => `${k}=${v}`).join(' ')}`);
});

test(`fuzz: the read path's block place decoder agrees with the block pointer decoder (seed ${seed})`, () => {
  const rand = seededRandom(seed + 7);
  const valid = encodeBlockPointer({ kind: 0, lengthBytes: 4096, segment: 3, offset: 4128, blockId: Buffer.alloc(16, 9) });
  const verdict = (fn: () => { kind: number; lengthBytes: number; segment: number; offset: number }): string => {
    try {
      const p = fn();
      return `ok ${p.kind} ${p.lengthBytes} ${p.segment} ${p.offset}`;
    } catch (e) {
      assert.ok(isFsError(e, 'CORRUPT'), `only CORRUPT escapes: ${String(e)}`);
      return `corrupt ${e.message}`;
    }
  };
  for (let i = 0; i < 3000 * scale; i++) {
    const input = rand.next() < 0.3 ? randomBytes(rand, valid.length * 2) : mutate(rand, valid);
    assert.equal(verdict(() => decodeBlockPlace(input, 5, 7)), verdict(() => decodeBlockPointer(input, 'block 5:7')), input.toString('hex'));
  }
});

test(`fuzz: archive zip block entries (seed ${seed})`, { timeout: 60_000 * scale }, async (t) => {
  const rand = seededRandom(seed + 1);
  const counts = new Map<string, number>();
  const blocks = Array.from({ length: 6 }, (_, i) => ({ blockId: Buffer.alloc(16, i + 1), data: i % 2 === 0 ? Buffer.alloc(4096, i) : randomBytes(rand, 4096) }));
  const zip = await buildBlockZip(blocks.filter((b) => b.data.length > 0));
  const spanOf = (loc: BlockLocation): Buffer => zip.bytes.subarray(loc.headerOffset, loc.headerOffset + 30 + 39 + loc.storedSizeBytes + 64);
  for (let i = 0; i < 1500 * scale; i++) {
    const loc = rand.pick(zip.locations);
    const lying: BlockLocation = rand.next() < 0.3
      ? { ...loc, storedSizeBytes: rand.pick([0, 1, loc.storedSizeBytes + 1, 4096, 5000]), sizeBytes: rand.pick([1, 4095, 4096, loc.sizeBytes]), crc32: rand.next() < 0.5 ? loc.crc32 : rand.int(0x100000000) }
      : loc;
    const span = rand.next() < 0.2 ? randomBytes(rand, 4200) : mutate(rand, spanOf(loc));
    tally(counts, outcome('decodeBlockEntry', () => decodeBlockEntry(span, lying, 'fuzz.zip')));
  }
  t.diagnostic(`seed ${seed}: ${[...counts].map(([k, v]) => `${k}=${v}`).join(' ')}`);
});

test(`fuzz: plain zip listing (seed ${seed})`, { timeout: 120_000 * scale }, async (t) => {
  const rand = seededRandom(seed + 2);
  const counts = new Map<string, number>();
  const blocks = Array.from({ length: 4 }, (_, i) => ({ blockId: Buffer.alloc(16, i + 1), data: randomBytes(rand, 3000) }));
  const valid = (await buildBlockZip(blocks.filter((b) => b.data.length > 0))).bytes;
  const path = join(root, 'plain.zip');
  for (let i = 0; i < 300 * scale; i++) {
    // Mutations aimed at the end records (where a lister starts) as often as anywhere else.
    let input = mutate(rand, valid);
    if (rand.next() < 0.5) {
      const tailAt = Math.max(0, input.length - 120);
      input = Buffer.concat([input.subarray(0, tailAt), mutate(rand, input.subarray(tailAt))]);
    }
    writeFileSync(path, input);
    tally(counts, await outcomeAsync('listPlainZip', () => listPlainZip(path)));
  }
  t.diagnostic(`seed ${seed}: ${[...counts].map(([k, v]) => `${k}=${v}`).join(' ')}`);
});

test(`fuzz: sealed envelope (seed ${seed})`, { timeout: 60_000 * scale }, (t) => {
  const rand = seededRandom(seed + 3);
  const counts = new Map<string, number>();
  const key = Buffer.alloc(32, 7);
  const keyId = '0123456789abcdef';
  const archiveName = 'a'.repeat(32);
  const sealed = sealFile(randomBytes(rand, 40_000), { key, keyId, archiveName, kind: 'idx' });
  const open = { keys: new Map([[keyId, key]]), archiveName, kind: 'idx' as const };
  for (let i = 0; i < 600 * scale; i++) {
    const input = rand.next() < 0.2 ? randomBytes(rand, 200) : mutate(rand, sealed);
    tally(counts, `header:${outcome('decodeEnvelopeHeader', () => decodeEnvelopeHeader(input, open, 'fuzz.idx'))}`);
    const result = outcome('openSealed', () => openSealed(input, open));
    // Authenticated encryption: a changed file must never open.
    if (!input.equals(sealed)) assert.notEqual(result, 'ok', `a mutated sealed file opened (seed ${seed})`);
    tally(counts, `open:${result}`);
  }
  t.diagnostic(`seed ${seed}: ${[...counts].map(([k, v]) => `${k}=${v}`).join(' ')}`);
});

test(`fuzz: key files (seed ${seed})`, { timeout: 60_000 * scale }, (t) => {
  const rand = seededRandom(seed + 4);
  const counts = new Map<string, number>();
  const hex = (n: number): string => 'ab'.repeat(n / 2);
  const samples: [string, (path: string) => unknown, Record<string, unknown>][] = [
    ['generation', readGeneration, { format: formats.generation, version: 1, fsid: hex(32), keyId: hex(16), generation: 1, createdNs: '1', createdBy: hex(32), members: [hex(32)], revoked: [], keyCheck: hex(32) }],
    ['sealed', readSealedRecord, { format: formats.sealed, version: 1, fsid: hex(32), boxid: hex(32), keyId: hex(16), generation: 1, grantedBy: hex(32), createdNs: '1', sealed: 'AAAA' }],
    ['passphrase', readPassphraseRecord, { format: formats.passphrase, version: 1, fsid: hex(32), keyId: hex(16), generation: 1, kdf: 'argon2id13', salt: Buffer.alloc(16).toString('base64'), opsLimit: 2, memLimitBytes: 8192, nonce: Buffer.alloc(24).toString('base64'), wrapped: 'AAAA', createdNs: '1', createdBy: hex(32) }],
  ];
  const oddValues: unknown[] = [null, -1, 1e300, 2 ** 53, '', 'x'.repeat(300), [], {}, [1, 2], true, '0', 'zz', hex(32)];
  const path = join(root, 'key.json');
  for (let i = 0; i < 800 * scale; i++) {
    for (const [name, read, valid] of samples) {
      let bytes: Buffer;
      if (rand.next() < 0.5) {
        const record: Record<string, unknown> = { ...valid };
        const field = rand.pick(Object.keys(record));
        if (rand.next() < 0.2) delete record[field];
        else record[field] = rand.pick(oddValues);
        bytes = Buffer.from(JSON.stringify(record));
      } else {
        bytes = mutate(rand, Buffer.from(JSON.stringify(valid)));
      }
      writeFileSync(path, bytes);
      tally(counts, `${name}:${outcome(`${name} key file ${bytes.toString('utf8').slice(0, 200)}`, () => read(path))}`);
    }
    const payload = encodePayload({ fsid: hex(32), boxid: hex(32), keys: [{ keyId: hex(16), generation: 1, key: Buffer.alloc(32, 1) }] });
    const input = rand.next() < 0.2 ? randomBytes(rand, 300) : mutate(rand, payload);
    tally(counts, `payload:${outcome('decodePayload', () => decodePayload(input, { fsid: hex(32), boxid: hex(32) }, 'fuzz payload'))}`);
  }
  t.diagnostic(`seed ${seed}: ${[...counts].map(([k, v]) => `${k}=${v}`).join(' ')}`);
});
