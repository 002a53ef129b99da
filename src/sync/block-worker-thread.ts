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
import { parentPort } from 'node:worker_threads';
import { blockIdOf } from './block-id.js';
import { compressBlock, crc32Of } from './block-prep.js';
import type { BatchReply, BatchRequest } from './block-worker.js';
import { blockIdBytes } from './limits.js';
import { zipMethodDeflate } from './zip-format.js';

/** The block-id key last sent (the main side sends it only when it changes). */
let idKey: Buffer | undefined;

function handle(request: BatchRequest): { reply: BatchReply; transfer: ArrayBuffer[] } {
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
