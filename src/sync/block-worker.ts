/**
 * The publisher's block worker: one worker thread (block-worker-thread.ts) that does the CPU-heavy
 * per-block work of publishing — block ids (HMAC-SHA256) and zip entry data (CRC-32, deflate) —
 * so the JS thread, which also serves FUSE, only reads blocks and writes archives, and answers
 * FUSE requests between batches.
 *
 * Lifecycle:
 * 1. The thread starts with the first batch (most mounts never publish a large file).
 * 2. Each batch (at most blockBatchCountMax blocks and blockBatchSizeMaxBytes) is packed into one
 *    buffer that is transferred, not copied; the reply transfers it back with the results.
 * 3. While batches wait the thread keeps the process alive (ref); when idle it does not (unref),
 *    so a finished mount, export or test exits without closing it.
 * 4. An error, an exit, an undecodable message or blockWorkerSilenceMsMax without a reply while
 *    batches wait rejects every waiting batch with FsError EIO naming the cause, and terminates
 *    the thread; the next batch starts a new one. A publish that fails so keeps its outbox.
 * 5. close() terminates the thread (SyncEngine.stop/abandon).
 *
 * Invariant: every batch promise settles — with the results, or with an error.
 */
import { Worker } from 'node:worker_threads';
import { FsError } from '../errors.js';
import { blockSizeBytes } from '../limits.js';
import type { PreparedBlock } from './block-prep.js';
import { blockBatchCountMax, blockBatchSizeMaxBytes, blockIdBytes, blockWorkerBlockCountMin, blockWorkerSilenceMsMax } from './limits.js';
import { type BlockPayload, type BlockZipResult, writeBlockZip, writePreparedBlockZip, type ZipSink } from './zipfile.js';
import { zipMethodDeflate, zipMethodStore, type ZipMethod } from './zip-format.js';

/** A batch as sent to the thread (block-worker-thread.ts). */
export interface BatchRequest {
  readonly seq: number;
  /** The block-id key, sent with the first batch that needs it and whenever it changes. */
  readonly idKey?: Uint8Array;
  readonly hashIds: boolean;
  /** zlib level 0..9 for zip entry data; -1: ids only. */
  readonly level: number;
  /** The payloads back to back. */
  readonly data: ArrayBuffer;
  readonly lengths: Uint32Array;
}

/** The thread's answer: the payload buffer back, and the results asked for. */
export type BatchReply =
  | {
    readonly seq: number; readonly ok: true; readonly data: ArrayBuffer; readonly ids?: ArrayBuffer;
    readonly crc32s?: Uint32Array; readonly methods?: Uint8Array; readonly deflatedLengths?: Uint32Array; readonly deflated?: ArrayBuffer;
  }
  | { readonly seq: number; readonly ok: false; readonly message: string };

export interface BlockWorkerOptions {
  /** The thread's script (tests substitute one that fails); default block-worker-thread.js beside this file. */
  readonly scriptUrl?: URL;
  /** Default blockWorkerSilenceMsMax. */
  readonly silenceMsMax?: number;
}

interface Waiting {
  readonly resolve: (reply: BatchReply & { ok: true }) => void;
  readonly reject: (e: FsError) => void;
}

export class BlockWorker {
  private worker: Worker | undefined;
  private readonly waiting = new Map<number, Waiting>();
  private seq = 0;
  /** The key the current thread holds (undefined after a restart). */
  private sentKey: Buffer | undefined;
  private watchdog: NodeJS.Timeout | undefined;
  private readonly scriptUrl: URL;
  private readonly silenceMsMax: number;

  constructor(options: BlockWorkerOptions = {}) {
    this.scriptUrl = options.scriptUrl ?? new URL('./block-worker-thread.js', import.meta.url);
    this.silenceMsMax = options.silenceMsMax ?? blockWorkerSilenceMsMax;
  }

  /** The block id (blockIdOf with `key`) of each payload, in order. */
  async blockIds(payloads: readonly Uint8Array[], key: Buffer): Promise<Buffer[]> {
    const reply = await this.run(payloads, key, -1);
    const ids = reply.ids;
    if (ids === undefined || ids.byteLength !== payloads.length * blockIdBytes) {
      throw new FsError('ASSERT', `block worker returned ${ids?.byteLength ?? 'no'} id bytes for ${payloads.length} blocks`);
    }
    return payloads.map((_, i) => Buffer.from(ids, i * blockIdBytes, blockIdBytes));
  }

  /**
   * Zip entry data of each block (CRC-32; deflated at `level` when that is smaller, else stored),
   * in order. The zip writer checks each result again (writePreparedBlockZip).
   */
  async prepare(blocks: readonly { blockId: Uint8Array; data: Uint8Array }[], level: number): Promise<PreparedBlock[]> {
    if (!Number.isInteger(level) || level < 0 || level > 9) throw new FsError('BAD_INPUT', `compression level ${level} not in 0..9`);
    const reply = await this.run(blocks.map((b) => b.data), undefined, level);
    const { crc32s, methods, deflatedLengths, deflated } = reply;
    if (crc32s?.length !== blocks.length || methods?.length !== blocks.length || deflatedLengths?.length !== blocks.length || deflated === undefined) {
      throw new FsError('ASSERT', `block worker returned incomplete entry data for ${blocks.length} blocks`);
    }
    const out: PreparedBlock[] = [];
    let inAt = 0;
    let outAt = 0;
    for (const [i, block] of blocks.entries()) {
      const sizeBytes = block.data.length;
      const method = methods[i] as ZipMethod;
      if (method !== zipMethodStore && method !== zipMethodDeflate) throw new FsError('ASSERT', `block worker returned method ${method}`);
      const storedBytes = method === zipMethodDeflate ? deflatedLengths[i]! : sizeBytes;
      const stored = method === zipMethodDeflate ? Buffer.from(deflated, outAt, storedBytes) : Buffer.from(reply.data, inAt, sizeBytes);
      if (method === zipMethodDeflate) outAt += storedBytes;
      inAt += sizeBytes;
      out.push({ blockId: Uint8Array.from(block.blockId), crc32: crc32s[i]!, sizeBytes, method, stored });
    }
    return out;
  }

  /** Terminates the thread; batches still waiting fail. */
  async close(): Promise<void> {
    const worker = this.worker;
    this.fail(worker, 'the block worker was closed');
    if (worker !== undefined) await worker.terminate();
  }

  private async run(payloads: readonly Uint8Array[], key: Buffer | undefined, level: number): Promise<BatchReply & { ok: true }> {
    if (payloads.length > blockBatchCountMax) throw new FsError('LIMIT', `a batch of ${payloads.length} blocks, at most ${blockBatchCountMax}`);
    let totalBytes = 0;
    for (const p of payloads) {
      if (p.length < 1 || p.length > blockSizeBytes) throw new FsError('BAD_INPUT', `a block payload of ${p.length} bytes, expected 1..${blockSizeBytes}`);
      totalBytes += p.length;
    }
    if (totalBytes > blockBatchSizeMaxBytes) throw new FsError('LIMIT', `a batch of ${totalBytes} bytes, at most ${blockBatchSizeMaxBytes}`);
    const data = new Uint8Array(totalBytes);
    let at = 0;
    for (const p of payloads) {
      data.set(p, at);
      at += p.length;
    }
    const lengths = Uint32Array.from(payloads, (p) => p.length);
    const worker = this.started();
    const seq = ++this.seq;
    const sendKey = key !== undefined && (this.sentKey === undefined || !this.sentKey.equals(key));
    const request: BatchRequest = { seq, hashIds: key !== undefined, level, data: data.buffer, lengths, ...(sendKey ? { idKey: Uint8Array.from(key) } : {}) };
    if (sendKey) this.sentKey = Buffer.from(key);
    const reply = new Promise<BatchReply & { ok: true }>((resolve, reject) => this.waiting.set(seq, { resolve, reject }));
    if (this.waiting.size === 1) {
      worker.ref();
      this.armWatchdog(worker);
    }
    worker.postMessage(request, [data.buffer, lengths.buffer]);
    return reply;
  }

  /** The running thread, started if there is none. */
  private started(): Worker {
    if (this.worker !== undefined) return this.worker;
    const worker = new Worker(this.scriptUrl);
    worker.unref();
    worker.on('message', (reply: BatchReply) => this.answered(worker, reply));
    worker.on('error', (e: Error) => this.fail(worker, `the block worker failed: ${e.message}`));
    worker.on('messageerror', (e: Error) => this.fail(worker, `the block worker sent an undecodable message: ${e.message}`));
    worker.on('exit', (code: number) => this.fail(worker, `the block worker exited (code ${code})`));
    this.worker = worker;
    this.sentKey = undefined;
    return worker;
  }

  private answered(worker: Worker, reply: BatchReply): void {
    const waiting = this.waiting.get(reply.seq);
    if (worker !== this.worker || waiting === undefined) return;
    this.waiting.delete(reply.seq);
    if (this.waiting.size === 0) {
      worker.unref();
      this.disarmWatchdog();
    } else {
      this.armWatchdog(worker);
    }
    if (reply.ok) waiting.resolve(reply);
    else waiting.reject(new FsError('EIO', `the block worker refused a batch: ${reply.message}`));
  }

  /** Rejects every waiting batch and drops `worker` (when it is the current one); the next batch starts a new thread. */
  private fail(worker: Worker | undefined, message: string): void {
    if (worker === undefined || worker !== this.worker) return;
    this.worker = undefined;
    this.sentKey = undefined;
    this.disarmWatchdog();
    const waiting = [...this.waiting.values()];
    this.waiting.clear();
    for (const w of waiting) w.reject(new FsError('EIO', message));
    void worker.terminate().catch(() => undefined);
  }

  private armWatchdog(worker: Worker): void {
    this.disarmWatchdog();
    this.watchdog = setTimeout(() => this.fail(worker, `the block worker did not answer for ${this.silenceMsMax} ms`), this.silenceMsMax);
    this.watchdog.unref();
  }

  private disarmWatchdog(): void {
    if (this.watchdog !== undefined) clearTimeout(this.watchdog);
    this.watchdog = undefined;
  }
}

/**
 * Runs `work` on each batch with one batch in flight ahead of the one being consumed (the JS
 * thread reads and sends batch k+1 while the worker handles batch k), yielding results in order.
 */
export async function* pipelined<B, R>(batches: Iterable<B>, work: (batch: B) => Promise<R>): AsyncGenerator<R> {
  const inFlight: Promise<R>[] = [];
  for (const batch of batches) {
    const result = work(batch);
    // Awaited below in order; a batch left in flight when the consumer stops must not become an
    // unhandled rejection.
    result.catch(() => undefined);
    inFlight.push(result);
    if (inFlight.length >= 2) yield await inFlight.shift()!;
  }
  while (inFlight.length > 0) yield await inFlight.shift()!;
}

/**
 * The writer of an archive zip of `blocks` into a sink (a publish's or a repack's). With `prepare`
 * (the block worker's) and at least blockWorkerBlockCountMin blocks, the blocks are read a batch at
 * a time (`read`, on the JS thread) one batch ahead of the worker, which computes their entry data
 * (CRC-32, deflate); otherwise everything runs on the JS thread. The entries are the same either
 * way (block-prep.ts).
 */
export function blockZipProducer<T>(blocks: readonly T[], read: (batch: readonly T[]) => BlockPayload[],
  prepare: ((payloads: BlockPayload[], level: number) => Promise<PreparedBlock[]>) | undefined,
  level: number): (sink: ZipSink) => Promise<BlockZipResult> {
  const options = { compressionLevel: level };
  // Whole blocks: a batch of blockBatchCountMax is within blockBatchSizeMaxBytes (limits.ts asserts it).
  const batches = function* (): Generator<readonly T[]> {
    for (let at = 0; at < blocks.length; at += blockBatchCountMax) yield blocks.slice(at, at + blockBatchCountMax);
  };
  if (prepare === undefined || blocks.length < blockWorkerBlockCountMin) {
    const payloads = function* (): Generator<BlockPayload> {
      for (const batch of batches()) yield* read(batch);
    };
    return (sink) => writeBlockZip(payloads(), sink, options);
  }
  const prepared = async function* (): AsyncGenerator<PreparedBlock> {
    for await (const batch of pipelined(batches(), (list) => prepare(read(list), level))) yield* batch;
  };
  return (sink) => writePreparedBlockZip(prepared(), sink, options);
}
