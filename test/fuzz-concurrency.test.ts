/**
 * Concurrency under load: 8 processes (test/fuzz-concurrency-worker.ts) write and read through
 * one mount while a second mount of the same sync dir writes files of its own, so both publish
 * and import throughout. No worker may see an error or a torn shared file; at the end every file
 * has the content its writer last gave it, through the mount that wrote it and, once sync has
 * converged, through the other mount; both stores check clean after unmount.
 *
 * CI runs 8 s of load; ZIPPY_SOAK=1 runs 60 s (ZIPPY_LOAD_SECONDS overrides).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { WorkerReport } from './fuzz-concurrency-worker.js';
import { mountSkipReason, mountZippy, seededRandom, type TestMount } from './fixtures.js';

const skip = mountSkipReason();
const soak = process.env['ZIPPY_SOAK'] === '1';
const loadSeconds = Number(process.env['ZIPPY_LOAD_SECONDS'] ?? (soak ? 60 : 8));
const seed = process.env['ZIPPY_CRASH_SEED'] !== undefined ? Number(process.env['ZIPPY_CRASH_SEED']) : 20261122; // fixed, so CI runs are reproducible; set the env variable to explore others
const workerCount = 8;
const workerPath = join(fileURLToPath(new URL('.', import.meta.url)), 'fuzz-concurrency-worker.js');

const mounts: TestMount[] = [];
after(async () => {
  for (const m of mounts) await m.cleanup();
});

function sha(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

function runWorker(dir: string, worker: number): Promise<WorkerReport> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [workerPath, dir, String(worker), String(loadSeconds * 1000), String(seed * 100 + worker)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout!.on('data', (chunk: Buffer) => (out += chunk.toString()));
    child.stderr!.on('data', (chunk: Buffer) => (err += chunk.toString()));
    child.once('exit', (code) => {
      if (code !== 0) reject(new Error(`worker ${worker} exited ${code}:\n${err}`));
      else resolvePromise(JSON.parse(out) as WorkerReport);
    });
  });
}

/** Paths whose content under `root` differs from `digests` (or cannot be read). */
function mismatches(root: string, digests: Map<string, string>): string[] {
  const out: string[] = [];
  for (const [rel, digest] of digests) {
    try {
      const found = sha(fs.readFileSync(join(root, rel)));
      if (found !== digest) out.push(`${rel}: ${found.slice(0, 12)} != ${digest.slice(0, 12)}`);
    } catch (e) {
      out.push(`${rel}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  }
  return out;
}

test(`8 processes on one mount, a second mount of the same sync dir, ${loadSeconds} s (seed ${seed})`, { skip, timeout: (loadSeconds + 120) * 1000 }, async (t) => {
  const a = await mountZippy();
  mounts.push(a);
  const b = await mountZippy({ syncDir: a.syncDir });
  mounts.push(b);
  fs.mkdirSync(join(a.mountpoint, 'load'));
  fs.mkdirSync(join(b.mountpoint, 'peer'));
  const started = Date.now();
  const workers = Array.from({ length: workerCount }, (_, w) => runWorker(join(a.mountpoint, 'load'), w));
  // The second mount writes its own files meanwhile (it publishes while it imports the load).
  const rand = seededRandom(seed);
  const peerDigests = new Map<string, string>();
  let peerBytes = 0;
  while (Date.now() - started < loadSeconds * 1000) {
    const rel = `peer/p${rand.int(6)}`;
    const data = Buffer.alloc(1 + rand.int(64 * 1024), rand.int(256));
    for (let at = 0; at < data.length; at += 509) data[at] = rand.int(256);
    fs.writeFileSync(join(b.mountpoint, rel), data);
    peerDigests.set(rel, sha(data));
    peerBytes += data.length;
    await new Promise((resolvePromise) => setTimeout(resolvePromise, 150));
  }
  const reports = await Promise.all(workers);
  const errors = reports.flatMap((r) => r.errors.map((e) => `worker ${r.worker}: ${e}`));
  const logLines = (m: TestMount): string => m.logs().split('\n').filter((l) => /EIO|error|fail|ASSERT|CORRUPT/i.test(l)).slice(-30).join('\n');
  assert.deepEqual(errors, [], `seed ${seed}; mount logs:\n${logLines(a)}\n--- second mount:\n${logLines(b)}`);
  const loadDigests = new Map<string, string>();
  for (const r of reports) for (const [rel, digest] of Object.entries(r.digests)) loadDigests.set(`load/${rel}`, digest);
  // 1. Through the mount that wrote them.
  assert.deepEqual(mismatches(a.mountpoint, loadDigests), [], 'the load through its own mount');
  assert.deepEqual(mismatches(b.mountpoint, peerDigests), [], 'the peer files through their own mount');
  // 2. Through the other mount, once sync has converged.
  const convergeStarted = Date.now();
  let left: string[] = [];
  for (let attempt = 0; attempt < 120; attempt++) {
    left = [...mismatches(b.mountpoint, loadDigests), ...mismatches(a.mountpoint, peerDigests)];
    if (left.length === 0) break;
    await new Promise((resolvePromise) => setTimeout(resolvePromise, 500));
  }
  assert.deepEqual(left.slice(0, 20), [], `after ${((Date.now() - convergeStarted) / 1000).toFixed(1)} s of waiting for sync`);
  const convergedSeconds = (Date.now() - convergeStarted) / 1000;
  await b.unmount();
  await a.unmount();
  const sum = (f: (r: WorkerReport) => number): number => reports.reduce((s, r) => s + f(r), 0);
  t.diagnostic(`seed ${seed}: ${loadSeconds} s, ${workerCount} workers: ${sum((r) => r.ops)} operations, ${(sum((r) => r.bytesWritten) / 1e6).toFixed(1)} MB written, ${(sum((r) => r.bytesRead) / 1e6).toFixed(1)} MB read, ${sum((r) => r.crossReads)} cross-reads; peer wrote ${(peerBytes / 1e6).toFixed(1)} MB; converged ${convergedSeconds.toFixed(1)} s after the load; ${loadDigests.size + peerDigests.size} files verified on both mounts`);
});
