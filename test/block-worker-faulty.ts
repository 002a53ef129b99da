/**
 * A stand-in for src/sync/block-worker-thread.js that fails on purpose, chosen by the batch's
 * level, for test/sync-block-worker.test.ts: 7 exits the thread, 8 throws, 9 never answers; any
 * other batch is refused with `ok: false`.
 */
import { parentPort } from 'node:worker_threads';

const port = parentPort;
if (port === null) throw new Error('runs only as a worker thread');
port.on('message', (request: { seq: number; level: number }) => {
  if (request.level === 7) process.exit(7);
  if (request.level === 8) throw new Error('faulty worker throws');
  if (request.level === 9) return;
  port.postMessage({ seq: request.seq, ok: false, message: 'faulty worker refuses' });
});
