/**
 * Tests of src/blocks: the record and segment header codecs, the segment log (append, read,
 * verification, recovery at open), and the cleaner. Every test that leaves a log it expects
 * to be clean runs checkLog() on it, which scans every segment and checks the head invariant.
 */
import { strict as assertEq } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { SegmentUsage } from '../src/alloc/index.js';
import {
  blockRecord, chooseVictims, copyLive, recordSizeBytes, segmentFileName, segmentHeader, SegmentLog,
  type BlockLocation, type SegmentLogOptions,
} from '../src/blocks/index.js';
import { isFsError, type FsError } from '../src/errors.js';
import { vectorsAfter } from '../src/blocks/segment-files.js';

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'zippy-blocks-test-'));
after(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));
let dirCount = 0;
const smallSegmentBytes = 64 * 1024;

function tempDir(): string {
  dirCount += 1;
  return path.join(tmpRoot, `segments-${dirCount}`);
}

function openLog(dir: string, options: SegmentLogOptions = {}): SegmentLog {
  return SegmentLog.open(dir, { segmentSizeMaxBytes: smallSegmentBytes, ...options }).log;
}

/** A payload whose bytes identify (ino, blockIndex), of `lengthBytes`. */
function payloadFor(ino: number, blockIndex: number, lengthBytes = 4096): Buffer {
  const buf = Buffer.alloc(lengthBytes);
  for (let i = 0; i < lengthBytes; i++) buf[i] = (ino * 31 + blockIndex * 7 + i) & 0xff;
  return buf;
}

function blocks(ino: number, count: number, firstIndex = 0, lengthBytes = 4096): { ino: number; blockIndex: number; payload: Buffer }[] {
  return Array.from({ length: count }, (_, i) => ({ ino, blockIndex: firstIndex + i, payload: payloadFor(ino, firstIndex + i, lengthBytes) }));
}

function throwsCode(fn: () => unknown, code: string, messagePart?: string): FsError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assertEq.ok(isFsError(caught), `expected FsError ${code}, got ${String(caught)}`);
  assertEq.equal(caught.code, code, caught.message);
  if (messagePart !== undefined) assertEq.ok(caught.message.includes(messagePart), `"${caught.message}" mentions "${messagePart}"`);
  return caught;
}

/** The whole-log check: every segment scans without damage, and the head segment file matches the head. */
function checkLog(log: SegmentLog): void {
  for (const segment of log.segments()) {
    for (const item of log.scan(segment)) {
      assertEq.equal(item.kind, 'record', item.kind === 'record' ? '' : item.error.message);
    }
  }
  const head = log.head();
  const file = log.segmentFile(head.segment);
  if (head.offset === segmentHeader.headerSizeBytes) assertEq.ok(!fs.existsSync(file), `${file} absent at a fresh head`);
  else assertEq.equal(fs.statSync(file).size, head.offset, `${file} size equals the head offset`);
}

function flipByte(file: string, offset: number): void {
  const fd = fs.openSync(file, 'r+');
  const b = Buffer.alloc(1);
  fs.readSync(fd, b, 0, 1, offset);
  b[0] = b[0]! ^ 0xff;
  fs.writeSync(fd, b, 0, 1, offset);
  fs.closeSync(fd);
}

describe('block record codec', () => {
  it('named offsets add up to the header size', () => {
    let offset = 0;
    for (const field of blockRecord.headerLayout) {
      assertEq.equal(field.offset, offset, `${field.name} starts where the previous field ends`);
      offset += field.sizeBytes;
    }
    assertEq.equal(offset, blockRecord.headerSizeBytes);
    assertEq.equal(blockRecord.headerSizeBytes, 32);
    assertEq.equal(blockRecord.recordSizeMaxBytes, 32 + 4096);
    assertEq.deepEqual(
      [blockRecord.magicOffset, blockRecord.versionOffset, blockRecord.kindOffset, blockRecord.reservedOffset,
        blockRecord.payloadLengthOffset, blockRecord.crcOffset, blockRecord.inoOffset, blockRecord.blockIndexOffset],
      blockRecord.headerLayout.map((f) => f.offset),
    );
  });

  it('round-trips payloads of 1..4096 bytes and u53 owners', () => {
    for (const [ino, blockIndex, length] of [[1, 0, 1], [2, 5, 100], [Number.MAX_SAFE_INTEGER, 2 ** 31, 4096], [2 ** 40 + 3, 2 ** 32 + 1, 4095]] as const) {
      const payload = payloadFor(ino % 1000, blockIndex % 1000, length);
      const buf = Buffer.alloc(blockRecord.size(length) + 10);
      assertEq.equal(blockRecord.encode(buf, 5, ino, blockIndex, payload), blockRecord.size(length));
      const decoded = blockRecord.decode(buf, 5, 'test.seg', 5);
      assertEq.equal(decoded.ino, ino);
      assertEq.equal(decoded.blockIndex, blockIndex);
      assertEq.deepEqual(decoded.payload, payload);
      assertEq.equal(decoded.sizeBytes, 32 + length);
    }
  });

  it('keeps its byte format (golden record)', () => {
    const buf = Buffer.alloc(blockRecord.size(3));
    blockRecord.encode(buf, 0, 0x0102030405, 7, Buffer.from('abc'));
    assertEq.equal(buf.toString('hex'),
      '5a424c4b' + '01' + '01' + '0000' + '03000000' + buf.subarray(12, 16).toString('hex')
      + '0504030201000000' + '0700000000000000' + '616263');
    assertEq.equal(buf.readUInt32LE(12), 0xf06f5bcf, 'crc32 (checked with Python zlib) of the header with a zero crc field, then the payload');
  });

  it('rejects every kind of damage with CORRUPT naming the place', () => {
    const good = Buffer.alloc(blockRecord.size(100));
    blockRecord.encode(good, 0, 9, 9, payloadFor(9, 9, 100));
    const cases: [string, (b: Buffer) => Buffer][] = [
      ['bad record magic', (b) => { b[0] = 0; return b; }],
      ['format version', (b) => { b[4] = 2; return b; }],
      ['record kind', (b) => { b[5] = 9; return b; }],
      ['reserved', (b) => { b[6] = 1; return b; }],
      ['payload length 0', (b) => { b.writeUInt32LE(0, 8); return b; }],
      ['payload length 4097', (b) => { b.writeUInt32LE(4097, 8); return b; }],
      ['truncated record:', (b) => b.subarray(0, b.length - 1)],
      ['truncated record header', (b) => b.subarray(0, 31)],
      ['checksum mismatch', (b) => { b[40] = b[40]! ^ 1; return b; }],
      ['checksum mismatch', (b) => { b[16] = b[16]! ^ 1; return b; }],
    ];
    for (const [message, damage] of cases) {
      const error = throwsCode(() => blockRecord.decode(damage(Buffer.from(good)), 0, 'x/00000007.seg', 4128), 'CORRUPT', message);
      assertEq.ok(error.message.includes('x/00000007.seg offset 4128'), error.message);
    }
  });
});

describe('gather/scatter resume', () => {
  it('vectorsAfter skips whole vectors and cuts into the first one left, for every byte count', () => {
    const vectors = [Buffer.from('abc'), Buffer.alloc(0), Buffer.from('de'), Buffer.from('fghi')];
    const all = Buffer.concat(vectors).toString();
    for (let skip = 0; skip <= all.length; skip++) {
      const rest = vectorsAfter(vectors, skip);
      assertEq.equal(Buffer.concat(rest).toString(), all.slice(skip), `after ${skip} bytes`);
      if (rest.length > 0) assertEq.ok(rest[0]!.length > 0 || skip === 0, `no empty head after ${skip} bytes`);
    }
    // The caller's vectors are left as they were.
    assertEq.deepEqual(vectors.map((v) => v.toString()), ['abc', '', 'de', 'fghi']);
  });
});

describe('segment header codec', () => {
  it('named offsets add up to the header size, and it round-trips', () => {
    let offset = 0;
    for (const field of segmentHeader.headerLayout) {
      assertEq.equal(field.offset, offset, field.name);
      offset += field.sizeBytes;
    }
    assertEq.equal(offset, segmentHeader.headerSizeBytes);
    assertEq.equal(segmentHeader.size(), 32);
    const buf = Buffer.alloc(32);
    segmentHeader.encode(buf, 0, { segment: 12345678, segmentSizeMaxBytes: 65536 });
    assertEq.equal(buf.subarray(0, 4).toString('latin1'), 'ZSEG');
    assertEq.deepEqual(segmentHeader.decode(buf, 0, 'f'), { segment: 12345678, segmentSizeMaxBytes: 65536 });
    for (let i = 0; i < 32; i++) {
      const damaged = Buffer.from(buf);
      damaged[i] = damaged[i]! ^ 0x10;
      throwsCode(() => segmentHeader.decode(damaged, 0, 'f'), 'CORRUPT');
    }
  });
});

describe('SegmentLog', () => {
  it('appends and reads back, rolling over to new segments that never exceed the maximum', () => {
    const dir = tempDir();
    const log = openLog(dir);
    const records = [...blocks(7, 50), ...blocks(8, 30, 0, 1000)];
    const locations = log.append(records.slice(0, 37));
    locations.push(...log.append(records.slice(37)));
    log.sync();
    assertEq.equal(locations[0]!.segment, 1);
    assertEq.equal(locations[0]!.offset, 32);
    assertEq.ok(log.segments().length >= 4, `several segments: ${log.segments().join(',')}`);
    for (const [i, loc] of locations.entries()) {
      const r = records[i]!;
      assertEq.ok(loc.offset + recordSizeBytes(loc) <= smallSegmentBytes, 'a record never crosses the segment end');
      assertEq.deepEqual(log.read(loc, r.ino, r.blockIndex), r.payload);
    }
    for (const segment of log.segments()) assertEq.ok(fs.statSync(path.join(dir, segmentFileName(segment))).size <= smallSegmentBytes);
    const scanned = log.segments().flatMap((s) => [...log.scan(s)]);
    assertEq.deepEqual(scanned.map((item) => (item.kind === 'record' ? item.loc : item.kind)), locations);
    checkLog(log);
    log.close();
  });

  it('a flipped payload byte makes that read CORRUPT while the others still read', () => {
    const dir = tempDir();
    const log = openLog(dir);
    const records = blocks(3, 5);
    const locations = log.append(records);
    log.sync();
    const victim = locations[2]!;
    flipByte(path.join(dir, segmentFileName(victim.segment)), victim.offset + 32 + 1000);
    const error = throwsCode(() => log.read(victim, 3, 2), 'CORRUPT', 'checksum mismatch');
    assertEq.ok(error.message.includes(`${segmentFileName(victim.segment)} offset ${victim.offset}`), error.message);
    for (const i of [0, 1, 3, 4]) assertEq.deepEqual(log.read(locations[i]!, 3, i), records[i]!.payload);
    // The scan reports the damaged record as a corrupt region and keeps going.
    const items = [...log.scan(1)];
    assertEq.deepEqual(items.map((item) => item.kind), ['record', 'record', 'corrupt', 'record', 'record']);
    log.close();
  });

  it('reads runs of whole blocks and of mixed sizes with one scatter read; a flipped byte, a wrong owner or a cut file in either is CORRUPT', () => {
    const dir = tempDir();
    const log = openLog(dir, { segmentSizeMaxBytes: 1024 * 1024 });
    const whole = blocks(5, 8);
    const mixed = [...blocks(6, 3), ...blocks(6, 2, 3, 1000), ...blocks(6, 3, 5)];
    const wholeLocs = log.append(whole);
    const mixedLocs = log.append(mixed);
    const tail = [...blocks(7, 1, 0, 1000), ...blocks(7, 2, 1)];
    const tailLocs = log.append(tail);
    log.sync();
    const readBack = (locs: BlockLocation[], records: typeof whole): Buffer[] => {
      const targets = locs.map(() => Buffer.alloc(4096, 0xee));
      log.readRunInto(locs, records.map((r) => r.ino), records.map((r) => r.blockIndex), targets);
      return targets.map((t, i) => t.subarray(0, locs[i]!.lengthBytes));
    };
    assertEq.deepEqual(readBack(wholeLocs, whole), whole.map((r) => r.payload));
    assertEq.deepEqual(readBack(mixedLocs, mixed), mixed.map((r) => r.payload));
    assertEq.deepEqual(log.readRun(wholeLocs.slice(2, 5), [5, 5, 5], [2, 3, 4]), whole.slice(2, 5).map((r) => r.payload));
    throwsCode(() => readBack(wholeLocs, [...whole.slice(0, 7), { ...whole[7]!, blockIndex: 99 }]), 'CORRUPT', 'expected ino 5 block 99');
    const file = path.join(dir, segmentFileName(1));
    flipByte(file, wholeLocs[6]!.offset + 32 + 17);
    throwsCode(() => readBack(wholeLocs, whole), 'CORRUPT', 'checksum mismatch');
    flipByte(file, mixedLocs[4]!.offset + 32 + 999);
    throwsCode(() => readBack(mixedLocs, mixed), 'CORRUPT', 'checksum mismatch');
    fs.truncateSync(file, tailLocs[2]!.offset + 100);
    throwsCode(() => readBack(tailLocs, tail), 'CORRUPT', 'short read');
    throwsCode(() => readBack(tailLocs.slice(1), tail.slice(1)), 'CORRUPT', 'short read');
    assertEq.deepEqual(readBack(tailLocs.slice(0, 2), tail.slice(0, 2)), tail.slice(0, 2).map((r) => r.payload));
    log.close();
  });

  it('a wrong owner, a wrong length or a bad location is CORRUPT, never wrong bytes', () => {
    const log = openLog(tempDir());
    const [loc] = log.append(blocks(4, 2, 9)) as [BlockLocation];
    throwsCode(() => log.read(loc, 5, 9), 'CORRUPT', 'belongs to ino 4 block 9');
    throwsCode(() => log.read(loc, 4, 8), 'CORRUPT', 'expected ino 4 block 8');
    throwsCode(() => log.read({ ...loc, lengthBytes: 4095 }, 4, 9), 'CORRUPT');
    throwsCode(() => log.read({ ...loc, offset: loc.offset + 1 }, 4, 9), 'CORRUPT', 'bad record magic');
    throwsCode(() => log.read({ ...loc, offset: 100_000 }, 4, 9), 'CORRUPT', 'short read');
    throwsCode(() => log.read({ ...loc, segment: 99 }, 4, 9), 'CORRUPT', 'does not exist');
    throwsCode(() => log.read({ segment: 0, offset: 0, lengthBytes: 0 }, 4, 9), 'CORRUPT', 'invalid');
    checkLog(log);
    log.close();
    throwsCode(() => log.read(loc, 4, 9), 'EBADF');
  });

  it('rejects an invalid record before writing anything', () => {
    const log = openLog(tempDir());
    log.append(blocks(1, 2));
    const head = log.head();
    throwsCode(() => log.append([...blocks(1, 2, 2), { ino: 1, blockIndex: 4, payload: Buffer.alloc(0) }]), 'ASSERT');
    throwsCode(() => log.append([{ ino: -1, blockIndex: 0, payload: Buffer.alloc(1) }]), 'ASSERT');
    throwsCode(() => log.append([{ ino: 1, blockIndex: 0, payload: Buffer.alloc(4097) }]), 'ASSERT');
    assertEq.deepEqual(log.head(), head);
    assertEq.deepEqual(log.append([]), []);
    checkLog(log);
    log.close();
  });

  it('a failed append leaves nothing behind and the log writes on afterwards', () => {
    const dir = tempDir();
    const log = openLog(dir);
    const kept = log.append(blocks(1, 10));
    const head = log.head();
    // A stray file where the next segment must be created makes the append fail mid-way,
    // after it has already written into the current segment.
    const stray = path.join(dir, segmentFileName(2));
    fs.writeFileSync(stray, 'stray');
    throwsCode(() => log.append(blocks(1, 10, 10)), 'EIO', 'append failed');
    assertEq.deepEqual(log.head(), head);
    assertEq.equal(fs.statSync(path.join(dir, segmentFileName(1))).size, head.offset);
    assertEq.equal(fs.readFileSync(stray, 'utf8'), 'stray');
    fs.rmSync(stray);
    const again = log.append(blocks(1, 10, 10));
    assertEq.equal(again[0]!.offset, head.offset);
    for (const [i, loc] of [...kept, ...again].entries()) assertEq.deepEqual(log.read(loc, 1, i), payloadFor(1, i));
    log.sync();
    checkLog(log);
    log.close();
  });

  it('keeps a bounded number of descriptors and still reads every segment', () => {
    const log = openLog(tempDir(), { openFileCountMax: 2 });
    const records = blocks(6, 100);
    const locations = log.append(records);
    log.sync();
    assertEq.ok(log.segments().length > 4);
    for (let round = 0; round < 2; round++) {
      for (const [i, loc] of locations.entries()) assertEq.deepEqual(log.read(loc, 6, i), records[i]!.payload);
    }
    checkLog(log);
    log.close();
  });

  it('an empty directory opens with nothing to recover', () => {
    const dir = tempDir();
    const { log, report } = SegmentLog.open(dir, { segmentSizeMaxBytes: smallSegmentBytes });
    assertEq.deepEqual(report.head, { segment: 1, offset: 32 });
    assertEq.deepEqual(report.events, []);
    assertEq.equal(report.dataLoss, false);
    assertEq.ok(report.messages.some((m) => m.includes('nothing to recover')));
    log.close();
    throwsCode(() => SegmentLog.open(dir, { segmentSizeMaxBytes: 1000 }), 'EINVAL');
    throwsCode(() => SegmentLog.open(dir, { head: { segment: 0, offset: 32 } }), 'BAD_INPUT');
  });
});

describe('SegmentLog recovery at open', () => {
  it('without a head, a segment cut mid-record loses only the torn record', () => {
    const dir = tempDir();
    const log = openLog(dir);
    const records = blocks(2, 20);
    const locations = log.append(records);
    log.sync();
    log.close();
    const last = locations.at(-1)!;
    const file = path.join(dir, segmentFileName(last.segment));
    fs.truncateSync(file, last.offset + 32 + 2000); // cut in the middle of the last record's payload
    const { log: reopened, report } = SegmentLog.open(dir, { segmentSizeMaxBytes: smallSegmentBytes });
    assertEq.deepEqual(report.head, { segment: last.segment, offset: last.offset });
    assertEq.deepEqual(report.events.map((e) => e.kind), ['truncated']);
    const event = report.events[0]!;
    assertEq.ok(event.kind === 'truncated' && event.tornBytes === 2032 && event.unreferencedRecordCount === 0);
    assertEq.ok(report.messages.some((m) => m.includes(file) && m.includes('2032 torn bytes')), report.messages.join('\n'));
    assertEq.equal(fs.statSync(file).size, last.offset);
    for (const [i, loc] of locations.slice(0, -1).entries()) assertEq.deepEqual(reopened.read(loc, 2, i), records[i]!.payload);
    throwsCode(() => reopened.read(last, 2, 19), 'CORRUPT');
    const [again] = reopened.append(blocks(2, 1, 19)) as [BlockLocation];
    assertEq.deepEqual(again, last);
    assertEq.deepEqual(reopened.read(again, 2, 19), records[19]!.payload);
    checkLog(reopened);
    reopened.close();
  });

  it('without a head, garbage appended after the last record is cut', () => {
    const dir = tempDir();
    const log = openLog(dir);
    log.append(blocks(2, 3));
    const head = log.head();
    log.sync();
    log.close();
    fs.appendFileSync(path.join(dir, segmentFileName(head.segment)), Buffer.alloc(5000, 0));
    const { log: reopened, report } = SegmentLog.open(dir, { segmentSizeMaxBytes: smallSegmentBytes });
    assertEq.deepEqual(report.head, head);
    assertEq.equal(report.tornBytes, 5000);
    checkLog(reopened);
    reopened.close();
  });

  it('without a head, damage followed by valid records is kept and the segment sealed', () => {
    const dir = tempDir();
    const log = openLog(dir);
    const locations = log.append(blocks(2, 5));
    log.sync();
    log.close();
    flipByte(path.join(dir, segmentFileName(1)), locations[1]!.offset + 40);
    const { log: reopened, report } = SegmentLog.open(dir, { segmentSizeMaxBytes: smallSegmentBytes });
    assertEq.deepEqual(report.events.map((e) => e.kind), ['damage-kept', 'sealed']);
    assertEq.deepEqual(report.head, { segment: 2, offset: 32 });
    assertEq.deepEqual(reopened.read(locations[4]!, 2, 4), payloadFor(2, 4));
    const [fresh] = reopened.append(blocks(9, 1)) as [BlockLocation];
    assertEq.equal(fresh.segment, 2);
    reopened.close();
  });

  it('without a head, a newest segment with a torn header is removed', () => {
    const dir = tempDir();
    const log = openLog(dir);
    log.append(blocks(2, 3));
    const head = log.head();
    log.sync();
    log.close();
    fs.writeFileSync(path.join(dir, segmentFileName(2)), Buffer.from('ZSEG\x01'));
    const { log: reopened, report } = SegmentLog.open(dir, { segmentSizeMaxBytes: smallSegmentBytes });
    assertEq.deepEqual(report.events.map((e) => e.kind), ['removed']);
    assertEq.deepEqual(reopened.segments(), [1]);
    assertEq.deepEqual(reopened.head(), { segment: 2, offset: 32 });
    reopened.append(blocks(3, 1));
    assertEq.notDeepEqual(reopened.head(), head);
    checkLog(reopened);
    reopened.close();
  });

  it('with a head, unreferenced records past it are cut and later segments removed', () => {
    const dir = tempDir();
    const log = openLog(dir);
    const committed = log.append(blocks(5, 10));
    log.sync();
    const head = log.head(); // what the metadata commits
    const unreferenced = log.append(blocks(5, 25, 10)); // written, never committed
    log.sync();
    log.close();
    assertEq.ok(unreferenced.at(-1)!.segment > head.segment);
    fs.appendFileSync(path.join(dir, segmentFileName(unreferenced.at(-1)!.segment)), Buffer.alloc(77, 0xab));
    const { log: reopened, report } = SegmentLog.open(dir, { segmentSizeMaxBytes: smallSegmentBytes, head });
    assertEq.deepEqual(report.head, head);
    assertEq.deepEqual(reopened.segments(), [1]);
    assertEq.equal(report.unreferencedRecordCount, 25);
    assertEq.equal(report.tornBytes, 77);
    assertEq.equal(report.dataLoss, false);
    const removedCount = unreferenced.at(-1)!.segment - head.segment;
    assertEq.deepEqual(report.events.map((e) => e.kind), [...Array<string>(removedCount).fill('removed'), 'truncated']);
    for (const [i, loc] of committed.entries()) assertEq.deepEqual(reopened.read(loc, 5, i), payloadFor(5, i));
    throwsCode(() => reopened.read(unreferenced[0]!, 5, 10), 'CORRUPT');
    checkLog(reopened);
    reopened.close();
  });

  it('with a head at a segment start, that segment is removed entirely', () => {
    const dir = tempDir();
    const log = openLog(dir);
    log.append(blocks(5, 3));
    log.sync();
    log.close();
    const { log: reopened, report } = SegmentLog.open(dir, { segmentSizeMaxBytes: smallSegmentBytes, head: { segment: 1, offset: 32 } });
    assertEq.deepEqual(report.events.map((e) => e.kind), ['removed']);
    assertEq.deepEqual(reopened.segments(), []);
    checkLog(reopened);
    reopened.close();
  });

  it('with a head beyond the end of the file, reports data loss and writes on in a new segment', () => {
    const dir = tempDir();
    const log = openLog(dir);
    const locations = log.append(blocks(5, 8));
    log.sync();
    const head = log.head();
    log.close();
    const file = path.join(dir, segmentFileName(head.segment));
    fs.truncateSync(file, locations[5]!.offset); // the tail was lost in a power failure
    const { log: reopened, report } = SegmentLog.open(dir, { segmentSizeMaxBytes: smallSegmentBytes, head });
    assertEq.equal(report.dataLoss, true);
    assertEq.ok(report.messages.some((m) => m.includes('DATA LOSS') && m.includes(file)), report.messages.join('\n'));
    assertEq.deepEqual(report.head, { segment: head.segment + 1, offset: 32 });
    assertEq.deepEqual(reopened.read(locations[4]!, 5, 4), payloadFor(5, 4));
    throwsCode(() => reopened.read(locations[6]!, 5, 6), 'CORRUPT');
    const [fresh] = reopened.append(blocks(5, 1, 6)) as [BlockLocation];
    assertEq.equal(fresh.segment, head.segment + 1);
    checkLog(reopened);
    reopened.close();
  });

  it('reopening at the same head is a no-op', () => {
    const dir = tempDir();
    const log = openLog(dir);
    log.append(blocks(5, 30));
    log.sync();
    const head = log.head();
    log.close();
    const { log: reopened, report } = SegmentLog.open(dir, { segmentSizeMaxBytes: smallSegmentBytes, head });
    assertEq.deepEqual(report.events, []);
    assertEq.deepEqual(reopened.head(), head);
    checkLog(reopened);
    reopened.close();
  });
});

describe('cleaner', () => {
  it('copies live records to the head, after which the old segment can be removed', () => {
    const dir = tempDir();
    const log = openLog(dir);
    const usage = new SegmentUsage();
    const records = blocks(11, 60);
    const locations = log.append(records);
    const live = new Map<string, BlockLocation>();
    for (const [i, loc] of locations.entries()) {
      if (loc.segment === 1 && i % 3 !== 0) continue; // most of segment 1 was overwritten
      live.set(`11/${i}`, loc);
      usage.add(loc.segment, recordSizeBytes(loc));
    }
    log.sync();
    const victims = chooseVictims(log, usage, { protectedSegmentCount: 1 });
    assertEq.deepEqual(victims, [1]);
    const moves = copyLive(log, 1, (loc, ino, blockIndex) => live.get(`${ino}/${blockIndex}`)?.offset === loc.offset
      && live.get(`${ino}/${blockIndex}`)?.segment === loc.segment, { batchRecordCountMax: 2 });
    assertEq.equal(moves.length, locations.filter((l, i) => l.segment === 1 && i % 3 === 0).length);
    log.sync();
    // What the inode layer commits: the remapping and the usage move.
    for (const move of moves) {
      live.set(`${move.ino}/${move.blockIndex}`, move.to);
      usage.release(move.from.segment, recordSizeBytes(move.from));
      usage.add(move.to.segment, recordSizeBytes(move.to));
    }
    assertEq.equal(usage.liveBytes(1), 0);
    log.removeSegment(1);
    assertEq.ok(!log.segments().includes(1));
    for (const [key, loc] of live) {
      const [ino, blockIndex] = key.split('/').map(Number) as [number, number];
      assertEq.deepEqual(log.read(loc, ino, blockIndex), records[blockIndex]!.payload);
    }
    throwsCode(() => log.read(locations[0]!, 11, 0), 'CORRUPT', 'does not exist');
    throwsCode(() => log.removeSegment(log.head().segment), 'ASSERT');
    throwsCode(() => log.removeSegment(1), 'ENOENT');
    checkLog(log);
    const head = log.head();
    log.close();
    const { log: reopened, report } = SegmentLog.open(dir, { segmentSizeMaxBytes: smallSegmentBytes, head });
    assertEq.deepEqual(report.events, []);
    for (const [key, loc] of live) {
      const [ino, blockIndex] = key.split('/').map(Number) as [number, number];
      assertEq.deepEqual(reopened.read(loc, ino, blockIndex), records[blockIndex]!.payload);
    }
    reopened.close();
  });

  it('refuses to clean a segment with damage in the middle', () => {
    const dir = tempDir();
    const log = openLog(dir);
    const locations = log.append(blocks(1, 30));
    log.sync();
    flipByte(path.join(dir, segmentFileName(1)), locations[2]!.offset + 100);
    throwsCode(() => copyLive(log, 1, () => true), 'CORRUPT', 'cannot clean');
    log.close();
  });

  it('chooses victims below the live ratio outside the protection window, emptiest first', () => {
    const usage = SegmentUsage.fromEntries([
      { segment: 1, liveBytes: 40 }, { segment: 2, liveBytes: 10 }, { segment: 3, liveBytes: 90 },
      { segment: 6, liveBytes: 0 }, { segment: 8, liveBytes: 1 }, { segment: 9, liveBytes: 1 },
    ]);
    const log = { segments: () => [1, 2, 3, 5, 6, 8, 9, 10], head: () => ({ segment: 10, offset: 50 }), segmentSizeMaxBytes: 100 };
    assertEq.deepEqual(chooseVictims(log, usage), [5, 2, 1]); // 6..10 protected (head 10 and the 4 before it)
    assertEq.deepEqual(chooseVictims(log, usage, { protectedSegmentCount: 0 }), [5, 6, 8, 9, 2, 1]);
    assertEq.deepEqual(chooseVictims(log, usage, { protectedSegmentCount: 0, victimCountMax: 2, liveRatioMax: 0.05 }), [5, 6]);
  });
});
