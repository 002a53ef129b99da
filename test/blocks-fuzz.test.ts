/**
 * Fuzz tests of the block decoders: random and mutated bytes must produce a typed FsError
 * (CORRUPT) or a record that verifies, never another exception and never a hang. The scanner
 * must cover every byte of an arbitrary file exactly once with records and damage items.
 */
import { strict as assertEq } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import fc from 'fast-check';
import { blockRecord, scanSegmentFile, segmentHeader } from '../src/blocks/index.js';
import { isFsError } from '../src/errors.js';

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'zippy-blocks-fuzz-'));
after(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));

/** Decodes and returns 'ok' or the error code; any non-FsError fails the test. */
function decodeOutcome(buf: Buffer, at: number): string {
  try {
    const r = blockRecord.decode(buf, at, 'fuzz.seg', at);
    // A record that decodes must re-encode to the same bytes.
    const again = Buffer.alloc(r.sizeBytes);
    blockRecord.encode(again, 0, r.ino, r.blockIndex, r.payload);
    assertEq.deepEqual(again, buf.subarray(at, at + r.sizeBytes));
    return 'ok';
  } catch (e) {
    assertEq.ok(isFsError(e), `decode threw a non-FsError: ${String(e)}`);
    return e.code;
  }
}

const validRecord = fc.record({
  ino: fc.maxSafeNat(),
  blockIndex: fc.maxSafeNat(),
  payload: fc.uint8Array({ minLength: 1, maxLength: 4096 }),
}).map(({ ino, blockIndex, payload }) => {
  const buf = Buffer.alloc(blockRecord.size(payload.length));
  blockRecord.encode(buf, 0, ino, blockIndex, payload);
  return buf;
});

describe('record decode fuzz', () => {
  it('random bytes give CORRUPT, never another exception', { timeout: 60_000 }, () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 4200 }), fc.nat({ max: 64 }), (bytes, at) => {
      const outcome = decodeOutcome(Buffer.from(bytes), at);
      assertEq.ok(outcome === 'CORRUPT' || outcome === 'ok', outcome);
    }), { numRuns: 2000 });
  });

  it('random bytes behind a valid magic and version give CORRUPT', { timeout: 60_000 }, () => {
    fc.assert(fc.property(fc.uint8Array({ minLength: 32, maxLength: 4200 }), (bytes) => {
      const buf = Buffer.from(bytes);
      buf.writeUInt32LE(blockRecord.recordMagic, 0);
      buf[4] = blockRecord.recordFormatVersion;
      buf[5] = blockRecord.recordKindData;
      buf.writeUInt16LE(0, 6);
      assertEq.equal(decodeOutcome(buf, 0), 'CORRUPT');
    }), { numRuns: 2000 });
  });

  it('any single-byte change to a valid record is detected', { timeout: 60_000 }, () => {
    fc.assert(fc.property(validRecord, fc.nat(), fc.integer({ min: 1, max: 255 }), (record, position, xor) => {
      assertEq.equal(decodeOutcome(record, 0), 'ok');
      const damaged = Buffer.from(record);
      const i = position % damaged.length;
      damaged[i] = damaged[i]! ^ xor;
      assertEq.equal(decodeOutcome(damaged, 0), 'CORRUPT');
      assertEq.equal(decodeOutcome(record.subarray(0, position % record.length), 0), 'CORRUPT');
    }), { numRuns: 1000 });
  });

  it('segment header decode gives CORRUPT or a header, never another exception', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 40 }), (bytes) => {
      try {
        segmentHeader.decode(Buffer.from(bytes), 0, 'fuzz.seg');
      } catch (e) {
        assertEq.ok(isFsError(e, 'CORRUPT'), String(e));
      }
    }), { numRuns: 2000 });
  });
});

describe('segment scan fuzz', () => {
  it('covers every byte of a damaged file exactly once and terminates', { timeout: 120_000 }, () => {
    // A file made of a header, valid records, and chunks of garbage, then a few flipped bytes.
    const piece = fc.oneof(validRecord, fc.uint8Array({ minLength: 1, maxLength: 300 }).map((b) => Buffer.from(b)));
    let run = 0;
    fc.assert(fc.property(fc.array(piece, { maxLength: 12 }), fc.array(fc.nat(), { maxLength: 4 }), fc.boolean(), (pieces, flips, badHeader) => {
      run += 1;
      const header = Buffer.alloc(32);
      segmentHeader.encode(header, 0, { segment: 7, segmentSizeMaxBytes: 1 << 20 });
      const file = Buffer.concat([header, ...pieces]);
      for (const f of flips) {
        const i = f % file.length;
        file[i] = file[i]! ^ 0x5a;
      }
      if (badHeader) file[3] = 0;
      const name = path.join(tmpRoot, `scan-${run}.seg`);
      fs.writeFileSync(name, file);
      let covered = 32;
      let headerItems = 0;
      for (const item of scanSegmentFile(name, 7)) {
        if (item.kind !== 'record' && item.offset === 0) {
          headerItems += 1;
          continue;
        }
        const offset = item.kind === 'record' ? item.loc.offset : item.offset;
        const lengthBytes = item.kind === 'record' ? blockRecord.size(item.loc.lengthBytes) : item.lengthBytes;
        assertEq.equal(offset, covered, 'items are contiguous');
        assertEq.ok(lengthBytes > 0);
        if (item.kind === 'record') assertEq.equal(decodeOutcome(file, offset), 'ok');
        else assertEq.ok(isFsError(item.error, 'CORRUPT'));
        covered += lengthBytes;
      }
      assertEq.equal(covered, file.length, 'the scan covers the whole file');
      assertEq.ok(headerItems <= 1);
      fs.rmSync(name);
    }), { numRuns: 300 });
  });
});
