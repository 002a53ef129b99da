import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { Crc64, crc64, crc64Reference } from '../src/sync/crc64.js';

test('crc64: ECMA-182 check value of "123456789"', () => {
  assert.equal(crc64(Buffer.from('123456789', 'ascii')), 0x6c40df5f0b497347n);
  assert.equal(crc64Reference(Buffer.from('123456789', 'ascii')), 0x6c40df5f0b497347n);
});

test('crc64: empty input is 0 (init 0, xorout 0)', () => {
  assert.equal(crc64(new Uint8Array(0)), 0n);
});

test('crc64: sliced fast path matches the bitwise reference at every length and split', () => {
  for (let length = 0; length < 80; length++) {
    const bytes = randomBytes(length);
    const expected = crc64Reference(bytes);
    assert.equal(crc64(bytes), expected, `length ${length}`);
    for (const split of [0, 1, 3, 7, 8, 9, length]) {
      if (split > length) continue;
      const incremental = new Crc64().update(bytes.subarray(0, split)).update(bytes.subarray(split)).digest();
      assert.equal(incremental, expected, `length ${length} split ${split}`);
    }
  }
});

test('crc64: works on a Uint8Array view at an unaligned offset', () => {
  const backing = randomBytes(1000);
  const view = new Uint8Array(backing.buffer, backing.byteOffset + 3, 500);
  assert.equal(crc64(view), crc64Reference(Buffer.from(view)));
});
