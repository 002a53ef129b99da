/**
 * The body of the publisher's block worker thread (started by block-worker.ts): for each batch of
 * block payloads it receives, it computes the block ids (keyed hash, when asked) and the zip entry
 * data (CRC-32, deflate kept only when smaller, when asked), and sends the results back with the
 * payload buffer itself, all transferred rather than copied.
 *
 * Invariants: batches are answered in the order received, one reply per request; a request this
 * code cannot handle is answered with `ok: false` and a message (never left unanswered); anything
 * else that goes wrong ends the thread, which the main side turns into an error for the batches
 * it waits for.
 */
import { existsSync, readlinkSync, writeFileSync } from 'node:fs';
import { setPriority } from 'node:os';
import { join } from 'node:path';
import { parentPort } from 'node:worker_threads';
import { blockIdOf } from './block-id.js';
import { compressBlock, crc32Of } from './block-prep.js';
import type { BatchReply, BatchRequest } from './block-worker.js';
import { blockIdBytes } from './limits.js';
import { zipMethodDeflate } from './zip-format.js';

/**
 * Nice value of this thread. Publishing is background work: when the cores are busy, the thread
 * serving FUSE (and whatever the user runs) goes first, and the publish takes longer instead.
 */
const workerNice = 10;

/**
 * Lowers this thread's priority (Linux: setpriority on the thread id, which affects only this
 * thread). Best effort: where it is refused or not Linux, the thread runs at normal priority.
 */
function lowerPriority(): void {
  try {
    const threadId = Number.parseInt(readlinkSync('/proc/thread-self').split('/').pop() ?? '', 10);
    if (Number.isSafeInteger(threadId) && threadId > 0) setPriority(threadId, workerNice);
  } catch {
    // Not Linux, or not allowed: normal priority.
  }
}

/** The block-id key last sent (the main side sends it only when it changes). */
let idKey: Buffer | undefined;

/**
 * Test hook (ZIPPY_TEST_BLOCK_WORKER_GATE=<dir>, read at thread start like the engine's crash
 * hooks): before a batch of ids or of zip entries, waits while `<dir>/hold-ids` or
 * `<dir>/hold-entries` exists, after creating `<dir>/held-ids` or `<dir>/held-entries`. Tests
 * use it to hold a publish half-way and check that the mount answers meanwhile.
 */
const gateDir = process.env['ZIPPY_TEST_BLOCK_WORKER_GATE'];
const gatePause = new Int32Array(new SharedArrayBuffer(4));

function waitAtGate(kind: 'ids' | 'entries'): void {
  if (gateDir === undefined || gateDir === '') return;
  const hold = join(gateDir, `hold-${kind}`);
  if (!existsSync(hold)) return;
  writeFileSync(join(gateDir, `held-${kind}`), '');
  while (existsSync(hold)) Atomics.wait(gatePause, 0, 0, 20);
}

function handle(request: BatchRequest): { reply: BatchReply; transfer: ArrayBuffer[] } {
  waitAtGate(request.level >= 0 ? 'entries' : 'ids');
  if (request.idKey !== undefined) idKey = Buffer.from(request.idKey);
  const count = request.lengths.length;
  const ids = request.hashIds ? new Uint8Array(count * blockIdBytes) : undefined;
  if (ids !== undefined && idKey === undefined) throw new Error('block ids asked for before a key was sent');
  const prepare = request.level >= 0;
  const crc32s = prepare ? new Uint32Array(count) : undefined;
  const methods = prepare ? new Uint8Array(count) : undefined;
  const deflatedLengths = prepare ? new Uint32Array(count) : undefined;
  // Deflated forms are smaller than their blocks, so all of them fit in the payloads' size.
  const deflated = prepare ? new Uint8Array(request.data.byteLength) : undefined;
  let inAt = 0;
  let outAt = 0;
  for (let i = 0; i < count; i++) {
    const length = request.lengths[i]!;
    const payload = Buffer.from(request.data, inAt, length);
    inAt += length;
    if (ids !== undefined) ids.set(blockIdOf(payload, idKey), i * blockIdBytes);
    if (!prepare) continue;
    crc32s![i] = crc32Of(payload);
    const { method, stored } = compressBlock(payload, request.level);
    methods![i] = method;
    if (method === zipMethodDeflate) {
      deflated!.set(stored, outAt);
      deflatedLengths![i] = stored.length;
      outAt += stored.length;
    }
  }
  if (inAt !== request.data.byteLength) throw new Error(`lengths add up to ${inAt} bytes, the batch holds ${request.data.byteLength}`);
  const reply: BatchReply = {
    seq: request.seq, ok: true, data: request.data,
    ...(ids === undefined ? {} : { ids: ids.buffer }),
    ...(prepare ? { crc32s: crc32s!, methods: methods!, deflatedLengths: deflatedLengths!, deflated: deflated!.buffer } : {}),
  };
  const transfer = [request.data, ...(ids === undefined ? [] : [ids.buffer]), ...(prepare ? [deflated!.buffer, crc32s!.buffer, methods!.buffer, deflatedLengths!.buffer] : [])];
  return { reply, transfer };
}

const port = parentPort;
if (port === null) throw new Error('block-worker-thread.js runs only as a worker thread');
lowerPriority();
port.on('message', (request: BatchRequest) => {
  let answer: { reply: BatchReply; transfer: ArrayBuffer[] };
  try {
    answer = handle(request);
  } catch (e) {
    port.postMessage({ seq: request.seq, ok: false, message: e instanceof Error ? e.message : String(e) } satisfies BatchReply);
    return;
  }
  port.postMessage(answer.reply, answer.transfer);
});
