/**
 * A stand-in for src/sync/block-worker-thread.js that fails on purpose, for
 * test/sync-block-worker.test.ts. With ZIPPY_TEST_FAULTY_FLAG=<file> set: the thread exits at
 * start (code 7) while that file exists, and is the real block worker thread otherwise. Without
 * it, the batch's level chooses: 7 exits the thread, 8 throws, 9 never answers; any other batch
 * is refused with `ok: false`.
 */
import { existsSync } from 'node:fs';
import { parentPort } from 'node:worker_threads';

// Loaded outside a worker (the test runner runs every file of dist/test), it does nothing.
const port = parentPort;
const flag = process.env['ZIPPY_TEST_FAULTY_FLAG'];
if (port === null) {
  // not a worker thread: nothing to stand in for
} else if (flag !== undefined && flag !== '') {
  if (existsSync(flag)) process.exit(7);
  await import('../src/sync/block-worker-thread.js');
} else {
  port.on('message', (request: { seq: number; level: number }) => {
    if (request.level === 7) process.exit(7);
    if (request.level === 8) throw new Error('faulty worker throws');
    if (request.level === 9) return;
    port.postMessage({ seq: request.seq, ok: false, message: 'faulty worker refuses' });
  });
}
