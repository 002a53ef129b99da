/**
 * The native CRC-32 (src/crc32.ts, native/crc/) against node's zlib.crc32, which defines the
 * values on disk: every length 0..1024, random lengths up to 1 MiB, misaligned views,
 * continuation values, every implementation this CPU runs (forced one by one), and the batch
 * record checksum against the record codec's definition. No timings are asserted.
 */
import { strict as assertEq } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as zlib from 'node:zlib';
import fc from 'fast-check';
import { blockRecord } from '../src/blocks/index.js';
import {
  crc32, crc32Implementations, crc32Selected, crc32With, recordChecksums, recordChecksumsWith, type Crc32Implementation,
} from '../src/crc32.js';

const seed = 0x5eed_c3c2;
/** Deterministic bytes (xorshift32), so a failure names a length that reproduces. */
function bytes(length: number, salt: number): Buffer {
  const out = Buffer.allocUnsafe(length);
  let x = (salt * 2654435761 + 1) >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

const implementations = crc32Implementations();
const mib = 1024 * 1024;
const big = bytes(mib + 64, 1);

/** The record checksum as record.ts defines it, with zlib: header with the crc field zeroed, then the payload. */
function recordChecksumByZlib(header: Uint8Array, payload: Uint8Array): number {
  const h = Buffer.from(header.subarray(0, blockRecord.headerSizeBytes));
  h.writeUInt32LE(0, blockRecord.crcOffset);
  return zlib.crc32(payload, zlib.crc32(h));
}

describe('native crc32', () => {
  it('runs the table implementation and the best one the CPU offers', () => {
    assertEq.ok(implementations.includes('table'), `implementations ${implementations.join(', ')}`);
    assertEq.ok(implementations.includes(crc32Selected()), `selected ${crc32Selected()}`);
    // This project's machines (x86-64 with PCLMULQDQ) must take a folding path, not the tables.
    if (process.arch === 'x64') assertEq.notEqual(crc32Selected(), 'table');
  });

  it('equals zlib.crc32 for the standard check value and the empty input', () => {
    const check = Buffer.from('123456789', 'latin1');
    assertEq.equal(crc32(check), 0xcbf43926);
    assertEq.equal(crc32(Buffer.alloc(0)), 0);
    assertEq.equal(crc32(Buffer.alloc(0), 0x12345678), 0x12345678);
    for (const impl of implementations) assertEq.equal(crc32With(impl, check), 0xcbf43926, impl);
  });

  for (const impl of ['auto', ...implementations] as const) {
    const run = (data: Uint8Array, value?: number): number => (impl === 'auto' ? crc32(data, value) : crc32With(impl, data, value));
    describe(`implementation ${impl}`, () => {
      it('equals zlib.crc32 for every length 0..1024, from every alignment 0..7, with and without a start value', () => {
        for (let length = 0; length <= 1024; length++) {
          for (let offset = 0; offset < 8; offset++) {
            const data = big.subarray(offset + length, offset + 2 * length);
            assertEq.equal(run(data), zlib.crc32(data), `length ${length} offset ${offset}`);
          }
          const value = (length * 0x9e3779b9) >>> 0;
          const data = big.subarray(length, 2 * length);
          assertEq.equal(run(data, value), zlib.crc32(data, value), `length ${length} value ${value}`);
        }
      });

      it('equals zlib.crc32 for random lengths up to 1 MiB at random offsets 0..63 and random start values', () => {
        fc.assert(fc.property(fc.integer({ min: 0, max: mib }), fc.integer({ min: 0, max: 63 }), fc.integer({ min: 0, max: 0xffffffff }),
          (length, offset, value) => {
            const data = big.subarray(offset, offset + length);
            assertEq.equal(run(data, value), zlib.crc32(data, value));
            assertEq.equal(run(data), zlib.crc32(data));
          }), { seed, numRuns: 60 });
      });

      it('continues: crc32(b, crc32(a)) === crc32(a || b)', () => {
        fc.assert(fc.property(fc.integer({ min: 0, max: 70_000 }), fc.integer({ min: 0, max: 70_000 }), fc.integer({ min: 0, max: 63 }),
          (split, rest, offset) => {
            const whole = big.subarray(offset, offset + split + rest);
            const a = whole.subarray(0, split);
            const b = whole.subarray(split);
            assertEq.equal(run(b, run(a)), zlib.crc32(whole));
          }), { seed, numRuns: 60 });
      });
    });
  }

  it('takes any TypedArray or DataView by its bytes, as zlib.crc32 does', () => {
    const data = bytes(1000, 7);
    const u32 = new Uint32Array(data.buffer, data.byteOffset, 250);
    const view = new DataView(data.buffer, data.byteOffset + 3, 900);
    assertEq.equal(crc32(u32), zlib.crc32(data));
    assertEq.equal(crc32(view), zlib.crc32(data.subarray(3, 903)));
  });

  it('rejects a start value outside 0..2^32-1 and a non-buffer, like zlib.crc32', () => {
    const data = Buffer.from('x');
    for (const value of [-1, 2 ** 32, 1.5, Number.NaN]) {
      assertEq.throws(() => crc32(data, value), RangeError, `value ${value}`);
      assertEq.throws(() => zlib.crc32(data, value), RangeError, `zlib value ${value}`);
    }
    assertEq.throws(() => crc32("x" as unknown as Uint8Array), TypeError);
    assertEq.throws(() => crc32With('bogus' as Crc32Implementation, data));
  });
});

describe('recordChecksums', () => {
  /** Records with random headers (their stored crc field often nonzero) and payloads of 0..4096 bytes. */
  const batch = fc.array(fc.record({
    header: fc.uint8Array({ minLength: blockRecord.headerSizeBytes, maxLength: blockRecord.headerSizeBytes }),
    payloadLength: fc.integer({ min: 0, max: 4096 }),
    payloadOffset: fc.integer({ min: 0, max: 63 }),
  }), { minLength: 0, maxLength: 40 });

  for (const impl of ['auto', ...implementations] as const) {
    it(`equals the codec's definition for random batches (${impl})`, () => {
      fc.assert(fc.property(batch, fc.integer({ min: 0, max: 5 }), fc.integer({ min: 0, max: 3 }), (records, headerAt, gap) => {
        // Headers with a stride larger than a header, payloads interleaved with other views as in a gather list.
        const stride = blockRecord.headerSizeBytes + gap;
        const headers = Buffer.alloc(headerAt + records.length * stride);
        const vectors: Uint8Array[] = [Buffer.alloc(3)];
        records.forEach((r, i) => {
          headers.set(r.header, headerAt + i * stride);
          vectors.push(headers.subarray(headerAt + i * stride), big.subarray(r.payloadOffset, r.payloadOffset + r.payloadLength));
        });
        const before = Buffer.from(headers);
        const out = new Uint32Array(records.length + 1).fill(0xdeadbeef);
        if (impl === 'auto') recordChecksums(headers, headerAt, stride, vectors, 2, 2, records.length, out);
        else recordChecksumsWith(impl, headers, headerAt, stride, vectors, 2, 2, records.length, out);
        records.forEach((r, i) => {
          assertEq.equal(out[i], recordChecksumByZlib(r.header, vectors[2 + 2 * i]!), `record ${i}`);
        });
        assertEq.equal(out[records.length], 0xdeadbeef, 'nothing written past count');
        assertEq.deepEqual(headers, before, 'headers only read');
      }), { seed, numRuns: 80 });
    });
  }

  it('equals what encode() stores and what decode() accepts, and the seal of a batch', () => {
    const payloads = [bytes(4096, 3), bytes(1, 4), bytes(777, 5)];
    const sealed = Buffer.alloc(payloads.length * blockRecord.headerSizeBytes);
    payloads.forEach((p, i) => blockRecord.encodeHeaderUnsealed(sealed, i * blockRecord.headerSizeBytes, 10 + i, i, p));
    blockRecord.sealHeaders(sealed, 0, payloads.length, payloads, 0, 1, new Uint32Array(payloads.length));
    payloads.forEach((p, i) => {
      const whole = Buffer.alloc(blockRecord.size(p.length));
      blockRecord.encode(whole, 0, 10 + i, i, p);
      assertEq.deepEqual(sealed.subarray(i * blockRecord.headerSizeBytes, (i + 1) * blockRecord.headerSizeBytes), whole.subarray(0, blockRecord.headerSizeBytes));
      assertEq.equal(whole.readUInt32LE(blockRecord.crcOffset), recordChecksumByZlib(whole, p));
      assertEq.equal(blockRecord.decode(whole, 0, 'x.seg', 0).ino, 10 + i);
    });
  });

  it('rejects arguments that point outside the buffers', () => {
    const headers = Buffer.alloc(64);
    const payloads = [Buffer.alloc(10), Buffer.alloc(10)];
    const out = new Uint32Array(2);
    assertEq.throws(() => recordChecksums(headers, 1, 32, payloads, 0, 1, 2, out), RangeError);
    assertEq.throws(() => recordChecksums(headers, 0, 32, payloads, 1, 1, 2, out), RangeError);
    assertEq.throws(() => recordChecksums(headers, 0, 32, payloads, 0, 1, 3, new Uint32Array(3)), RangeError);
    assertEq.throws(() => recordChecksums(headers, 0, 32, payloads, 0, 1, 2, new Uint32Array(1)), RangeError);
    assertEq.throws(() => recordChecksums(headers, 0, 32, [Buffer.alloc(1), 'x' as unknown as Uint8Array], 0, 1, 2, out), TypeError);
    recordChecksums(headers, 0, 32, payloads, 0, 1, 0, out);
  });
});

describe('addon loading', () => {
  const compiled = fileURLToPath(new URL('../src/crc32.js', import.meta.url));
  it('names the missing file and the command that builds it', { skip: !fs.existsSync(compiled) && 'runs from the compiled tree only' }, () => {
    // A copy of the module in a tree that has native/crc but no build of it.
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'zippy-crc-missing-'));
    try {
      fs.writeFileSync(path.join(root, 'package.json'), '{"type":"module"}');
      fs.mkdirSync(path.join(root, 'native', 'crc'), { recursive: true });
      fs.writeFileSync(path.join(root, 'native', 'crc', 'binding.gyp'), '{}');
      fs.mkdirSync(path.join(root, 'src'));
      for (const name of ['crc32.js', 'errors.js', 'native-path.js']) fs.copyFileSync(path.join(path.dirname(compiled), name), path.join(root, 'src', name));
      const script = `import { crc32 } from ${JSON.stringify(path.join(root, 'src', 'crc32.js'))}; crc32(Buffer.from('x'));`;
      const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
      assertEq.notEqual(r.status, 0);
      assertEq.match(r.stderr, /ENOENT: .*native\/crc\/build\/Release\/crc32\.node: CRC-32 addon not built: run `npm run build:native`/);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});
