/**
 * Tests of src/alloc: the bump segment-space allocator, the monotonic counter and the
 * segment usage accounting, each also checked against a trivial model with fast-check.
 */
import { strict as assertEq } from 'node:assert';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  BumpSegmentSpaceAllocator, MonotonicCounter, SegmentUsage, type SegmentRange, type SegmentSpaceOptions,
} from '../src/alloc/index.js';
import { isFsError } from '../src/errors.js';

const options: SegmentSpaceOptions = { segmentSizeMaxBytes: 1000, recordOffsetMinBytes: 32 };

function throwsCode(fn: () => unknown, code: string): void {
  assertEq.throws(fn, (e: unknown) => isFsError(e) && e.code === code);
}

describe('BumpSegmentSpaceAllocator', () => {
  it('starts at the first record offset of segment 1 and bumps', () => {
    const a = new BumpSegmentSpaceAllocator(options);
    assertEq.deepEqual(a.mark(), { segment: 1, offset: 32 });
    assertEq.deepEqual(a.allocate(100), { segment: 1, offset: 32, sizeBytes: 100 });
    assertEq.deepEqual(a.allocate(100), { segment: 1, offset: 132, sizeBytes: 100 });
    assertEq.deepEqual(a.mark(), { segment: 1, offset: 232 });
  });

  it('moves to the next segment when a record does not fit, never straddling', () => {
    const a = new BumpSegmentSpaceAllocator(options);
    a.allocate(900); // 32..932
    assertEq.equal(a.segmentFor(68), 1);
    assertEq.equal(a.segmentFor(69), 2);
    assertEq.deepEqual(a.allocate(68), { segment: 1, offset: 932, sizeBytes: 68 }); // ends exactly at 1000
    assertEq.deepEqual(a.allocate(1), { segment: 2, offset: 32, sizeBytes: 1 });
    assertEq.ok(a.isSegmentStart(32));
  });

  it('seal moves on only when the segment holds something', () => {
    const a = new BumpSegmentSpaceAllocator(options);
    a.seal();
    assertEq.deepEqual(a.mark(), { segment: 1, offset: 32 });
    a.allocate(10);
    a.seal();
    assertEq.deepEqual(a.mark(), { segment: 2, offset: 32 });
  });

  it('rejects bad sizes with ASSERT and bad marks with BAD_INPUT', () => {
    const a = new BumpSegmentSpaceAllocator(options);
    throwsCode(() => a.allocate(0), 'ASSERT');
    throwsCode(() => a.allocate(969), 'ASSERT');
    throwsCode(() => a.allocate(1.5), 'ASSERT');
    throwsCode(() => a.restore({ segment: 0, offset: 32 }), 'BAD_INPUT');
    throwsCode(() => a.restore({ segment: 1, offset: 31 }), 'BAD_INPUT');
    throwsCode(() => a.restore({ segment: 1, offset: 1001 }), 'BAD_INPUT');
    throwsCode(() => BumpSegmentSpaceAllocator.fromMark({ segment: Number.NaN, offset: 32 }, options), 'BAD_INPUT');
  });

  it('throws LIMIT past the last segment number', () => {
    const a = BumpSegmentSpaceAllocator.fromMark({ segment: 3, offset: 900 }, { ...options, segmentNumberMax: 3 });
    a.allocate(100);
    throwsCode(() => a.allocate(1), 'LIMIT');
  });

  it('matches a trivial model and resumes identically from a mark (property)', () => {
    const sizeMax = options.segmentSizeMaxBytes - options.recordOffsetMinBytes;
    const op = fc.oneof(
      fc.record({ kind: fc.constant('allocate' as const), sizeBytes: fc.integer({ min: 1, max: sizeMax }) }),
      fc.record({ kind: fc.constant('seal' as const) }),
      fc.record({ kind: fc.constant('remark' as const) }),
    );
    fc.assert(fc.property(fc.array(op, { maxLength: 200 }), (ops) => {
      let allocator = new BumpSegmentSpaceAllocator(options);
      // The model: a list of ranges, and the rule "append to the last segment if it fits".
      const ranges: SegmentRange[] = [];
      let modelSegment = 1;
      let modelOffset = 32;
      for (const o of ops) {
        if (o.kind === 'remark') {
          allocator = BumpSegmentSpaceAllocator.fromMark(JSON.parse(JSON.stringify(allocator.mark())) as { segment: number; offset: number }, options);
        } else if (o.kind === 'seal') {
          allocator.seal();
          if (modelOffset > 32) { modelSegment += 1; modelOffset = 32; }
        } else {
          const range = allocator.allocate(o.sizeBytes);
          if (modelOffset + o.sizeBytes > 1000) { modelSegment += 1; modelOffset = 32; }
          assertEq.deepEqual(range, { segment: modelSegment, offset: modelOffset, sizeBytes: o.sizeBytes });
          modelOffset += o.sizeBytes;
          ranges.push(range);
        }
        assertEq.deepEqual(allocator.mark(), { segment: modelSegment, offset: modelOffset });
      }
      // Ranges are inside their segment and disjoint, in increasing order.
      for (let i = 0; i < ranges.length; i++) {
        const r = ranges[i]!;
        assertEq.ok(r.offset >= 32 && r.offset + r.sizeBytes <= 1000);
        const prev = ranges[i - 1];
        if (prev !== undefined) {
          assertEq.ok(r.segment > prev.segment || (r.segment === prev.segment && r.offset >= prev.offset + prev.sizeBytes));
        }
      }
    }), { numRuns: 300 });
  });
});

describe('MonotonicCounter', () => {
  it('hands out increasing values from first, observes, and restores', () => {
    const c = new MonotonicCounter(2);
    assertEq.equal(c.take(), 2);
    assertEq.equal(c.take(), 3);
    c.observe(10);
    assertEq.equal(c.peek(), 11);
    c.observe(5);
    assertEq.equal(c.take(), 11);
    const restored = MonotonicCounter.fromMark(c.mark(), 2);
    assertEq.equal(restored.take(), 12);
    throwsCode(() => MonotonicCounter.fromMark({ next: 1 }, 2), 'BAD_INPUT');
    throwsCode(() => c.observe(-1), 'ASSERT');
  });

  it('throws LIMIT after the last exact integer', () => {
    const c = MonotonicCounter.fromMark({ next: Number.MAX_SAFE_INTEGER });
    assertEq.equal(c.take(), Number.MAX_SAFE_INTEGER);
    throwsCode(() => c.take(), 'LIMIT');
    const d = new MonotonicCounter(0);
    d.observe(Number.MAX_SAFE_INTEGER);
    throwsCode(() => d.peek(), 'LIMIT');
  });

  it('is strictly increasing and above everything observed (property)', () => {
    const op = fc.oneof(fc.constant<'take'>('take'), fc.nat({ max: 1_000_000 }));
    fc.assert(fc.property(fc.array(op, { maxLength: 100 }), (ops) => {
      const c = new MonotonicCounter(1);
      let last = 0;
      let observedMax = 0;
      for (const o of ops) {
        if (o === 'take') {
          const v = c.take();
          assertEq.ok(v > last && v > observedMax);
          last = v;
        } else {
          c.observe(o);
          observedMax = Math.max(observedMax, o);
        }
      }
    }));
  });
});

describe('SegmentUsage', () => {
  it('adds, releases, and never goes negative', () => {
    const u = new SegmentUsage();
    u.add(3, 100);
    u.add(3, 50);
    u.release(3, 120);
    assertEq.equal(u.liveBytes(3), 30);
    throwsCode(() => u.release(3, 31), 'ASSERT');
    assertEq.equal(u.liveBytes(3), 30);
    u.release(3, 30);
    assertEq.deepEqual(u.entries(), []);
    assertEq.deepEqual(u.drainChanges(), [{ segment: 3, liveBytes: 0 }]);
    assertEq.deepEqual(u.drainChanges(), []);
  });

  it('ranks segments below a live ratio, counting unknown segments as empty', () => {
    const u = SegmentUsage.fromEntries([{ segment: 1, liveBytes: 900 }, { segment: 2, liveBytes: 300 }, { segment: 3, liveBytes: 100 }]);
    assertEq.equal(u.liveRatio(2, 1000), 0.3);
    assertEq.deepEqual(u.segmentsBelow(0.5, 1000, [1, 2, 3, 4]), [4, 3, 2]);
    throwsCode(() => SegmentUsage.fromEntries([{ segment: 1, liveBytes: 1 }, { segment: 1, liveBytes: 2 }]), 'BAD_INPUT');
    throwsCode(() => SegmentUsage.fromEntries([{ segment: 1, liveBytes: -1 }]), 'BAD_INPUT');
  });

  it('matches a Map model through add/release/persist/restore (property)', () => {
    const op = fc.record({
      release: fc.boolean(),
      segment: fc.integer({ min: 1, max: 6 }),
      sizeBytes: fc.integer({ min: 1, max: 5000 }),
    });
    fc.assert(fc.property(fc.array(op, { maxLength: 200 }), (ops) => {
      let usage = new SegmentUsage();
      const model = new Map<number, number>();
      const persisted = new Map<number, number>();
      for (const [i, o] of ops.entries()) {
        const before = model.get(o.segment) ?? 0;
        if (!o.release) {
          usage.add(o.segment, o.sizeBytes);
          model.set(o.segment, before + o.sizeBytes);
        } else if (o.sizeBytes > before) {
          throwsCode(() => usage.release(o.segment, o.sizeBytes), 'ASSERT');
        } else {
          usage.release(o.segment, o.sizeBytes);
          if (before === o.sizeBytes) model.delete(o.segment);
          else model.set(o.segment, before - o.sizeBytes);
        }
        if (i % 7 === 0) {
          // Persist only the changes, as the inode layer does, then rebuild from what was persisted.
          for (const { segment, liveBytes } of usage.drainChanges()) {
            if (liveBytes === 0) persisted.delete(segment);
            else persisted.set(segment, liveBytes);
          }
          usage = SegmentUsage.fromEntries([...persisted].map(([segment, liveBytes]) => ({ segment, liveBytes })));
        }
        for (let s = 1; s <= 6; s++) assertEq.equal(usage.liveBytes(s), model.get(s) ?? 0);
      }
      const expected = [...model].sort((a, b) => a[0] - b[0]).map(([segment, liveBytes]) => ({ segment, liveBytes }));
      assertEq.deepEqual(usage.entries(), expected);
      assertEq.equal(usage.totalLiveBytes(), [...model.values()].reduce((a, b) => a + b, 0));
      const below = [1, 2, 3, 4, 5, 6].filter((s) => (model.get(s) ?? 0) / 10000 < 0.5)
        .sort((a, b) => (model.get(a) ?? 0) - (model.get(b) ?? 0) || a - b);
      assertEq.deepEqual(usage.segmentsBelow(0.5, 10000, [1, 2, 3, 4, 5, 6]), below);
    }), { numRuns: 300 });
  });
});
