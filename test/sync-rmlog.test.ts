/** rm-log chunks: round trip, sealing, and every defect reported naming the file, never thrown. */
import { strict as assert } from 'node:assert';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { appendRmLog, deadArchives, decodeRmChunk, encodeRmChunk, readRmLogs, rmLogDir } from '../src/sync/rmlog.js';
import { newArchiveName } from '../src/sync/names.js';
import { isFsError } from '../src/errors.js';

const boxA = 'a'.repeat(32);
const boxB = 'b'.repeat(32);

function tempSync(): string {
  return mkdtempSync(join(tmpdir(), 'zippy-rmlog-'));
}

test('encode/decode round trip; the trailer catches any changed byte', () => {
  const entries = [
    { archive: newArchiveName(), retiredAtMs: 1_700_000_000_000, supersededBy: [newArchiveName(), newArchiveName()] },
    { archive: newArchiveName(), retiredAtMs: 0, supersededBy: [] },
  ];
  const bytes = encodeRmChunk(boxA, entries);
  assert.deepEqual(decodeRmChunk(bytes, boxA, 'x'), entries);
  assert.throws(() => decodeRmChunk(bytes, boxB, 'x'), /written for box/);
  for (let i = 0; i < bytes.length; i += 7) {
    const bad = Buffer.from(bytes);
    bad[i] = bad[i]! ^ 0x01;
    assert.throws(() => decodeRmChunk(bad, boxA, 'chunk-file'), (e: unknown) => isFsError(e, 'BAD_ARCHIVE') && /chunk-file/.test(String((e as Error).message + (e as { place?: string }).place)));
  }
  assert.throws(() => decodeRmChunk(bytes.subarray(0, bytes.length - 5), boxA, 'x'), /truncated|crc64/);
});

test('appends are new immutable chunks; readRmLogs reports damaged chunks and skips them', async () => {
  const sync = tempSync();
  try {
    const dead1 = newArchiveName();
    const dead2 = newArchiveName();
    const by = newArchiveName();
    await appendRmLog(sync, boxA, [{ archive: dead1, retiredAtMs: 5, supersededBy: [by] }]);
    await appendRmLog(sync, boxA, [{ archive: dead2, retiredAtMs: 6, supersededBy: [] }]);
    await appendRmLog(sync, boxB, [{ archive: dead1, retiredAtMs: 4, supersededBy: [] }]);
    assert.equal(readdirSync(rmLogDir(sync, boxA)).length, 2);
    writeFileSync(join(rmLogDir(sync, boxA), '.tmp-half.rm'), 'zippy-rmlog 1');
    const { chunks, problems } = await readRmLogs(sync);
    assert.equal(chunks.length, 3);
    assert.deepEqual(problems, []);
    const dead = deadArchives(chunks);
    assert.equal(dead.size, 2);
    assert.equal(dead.get(dead1)!.retiredAtMs, 4);
    assert.deepEqual([...dead.get(dead1)!.supersededBy], [by]);
    assert.deepEqual([...dead.get(dead1)!.boxids].sort(), [boxA, boxB]);

    const victim = join(rmLogDir(sync, boxB), readdirSync(rmLogDir(sync, boxB))[0]!);
    writeFileSync(victim, readFileSync(victim).subarray(0, 40));
    const after = await readRmLogs(sync);
    assert.equal(after.chunks.length, 2);
    assert.equal(after.problems.length, 1);
    assert.equal(after.problems[0]!.place, victim);
  } finally {
    rmSync(sync, { recursive: true, force: true });
  }
});

test('sealed chunks open only with the key, and only under their own name', async () => {
  const sync = tempSync();
  try {
    const key = Buffer.alloc(32, 7);
    const keyId = '0123456789abcdef';
    const dead = newArchiveName();
    const [path] = await appendRmLog(sync, boxA, [{ archive: dead, retiredAtMs: 1, supersededBy: [] }], { key, keyId });
    assert.ok(!readFileSync(path!).includes(Buffer.from(dead)), 'sealed chunk shows the archive name');
    const keys = new Map([[keyId, key]]);
    assert.equal((await readRmLogs(sync, keys)).chunks[0]!.entries[0]!.archive, dead);
    const wrong = await readRmLogs(sync, new Map([[keyId, Buffer.alloc(32, 8)]]));
    assert.equal(wrong.chunks.length, 0);
    assert.equal(wrong.problems.length, 1);
    // The same bytes under another chunk name are rejected (names are bound into the envelope).
    writeFileSync(join(rmLogDir(sync, boxA), `${newArchiveName()}.rm`), readFileSync(path!));
    const swapped = await readRmLogs(sync, keys);
    assert.equal(swapped.chunks.length, 1);
    assert.equal(swapped.problems.length, 1);
  } finally {
    rmSync(sync, { recursive: true, force: true });
  }
});
