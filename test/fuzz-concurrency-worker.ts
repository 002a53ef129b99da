/**
 * One process of the concurrency load (test/fuzz-concurrency.test.ts; not a test file itself).
 * Worker `w` owns `shared/w<w>-<j>` (replaced whole through a temporary name and rename, so
 * other workers always read a complete version) and `private/w<w>-<j>` (written in place at
 * random offsets, read back and compared with the worker's own model). Every shared file is
 * self-verifying: 32 bytes of sha256 of the body, then the body. Readers check other workers'
 * shared files against that digest.
 *
 * Usage: node fuzz-concurrency-worker.js <dir> <worker> <duration-ms> <seed>
 * Prints one JSON line: counts, the final digest of each file it owns, and any error.
 */
import { createHash } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface WorkerReport {
  worker: number;
  ops: number;
  bytesWritten: number;
  bytesRead: number;
  crossReads: number;
  errors: string[];
  /** relative path → sha256 of the whole file as the worker left it. */
  digests: Record<string, string>;
}

const sha = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

function run(dir: string, worker: number, durationMs: number, seed: number): WorkerReport {
  const next = mulberry32(seed);
  const int = (below: number): number => Math.floor(next() * below);
  const report: WorkerReport = { worker, ops: 0, bytesWritten: 0, bytesRead: 0, crossReads: 0, errors: [], digests: {} };
  const fileCount = 4;
  const body = (length: number): Buffer => {
    const data = Buffer.alloc(length);
    for (let at = 0; at + 4 <= length; at += 4) data.writeUInt32LE(int(0x100000000), at);
    return data;
  };
  const privateModel = new Map<string, Buffer>();
  mkdirSync(join(dir, 'shared'), { recursive: true });
  mkdirSync(join(dir, 'private'), { recursive: true });
  const deadline = Date.now() + durationMs;
  while (Date.now() < deadline && report.errors.length < 5) {
    const j = int(fileCount);
    const roll = next();
    try {
      if (roll < 0.3) {
        const rel = `shared/w${worker}-${j}`;
        const data = body(int(256 * 1024));
        const whole = Buffer.concat([createHash('sha256').update(data).digest(), data]);
        const tmp = join(dir, 'shared', `.tmp-w${worker}`);
        writeFileSync(tmp, whole);
        if (int(4) === 0) {
          const fd = openSync(tmp, 'r');
          fsyncSync(fd);
          closeSync(fd);
        }
        renameSync(tmp, join(dir, rel));
        report.digests[rel] = sha(whole);
        report.bytesWritten += whole.length;
      } else if (roll < 0.55) {
        const rel = `private/w${worker}-${j}`;
        const model = privateModel.get(rel) ?? Buffer.alloc(0);
        const offset = int(model.length + 8192);
        const data = body(1 + int(32 * 1024));
        const fd = openSync(join(dir, rel), model.length === 0 && !privateModel.has(rel) ? 'w+' : 'r+');
        try {
          writeSync(fd, data, 0, data.length, offset);
        } finally {
          closeSync(fd);
        }
        const grown = Buffer.concat([model, Buffer.alloc(Math.max(0, offset + data.length - model.length))]);
        data.copy(grown, offset);
        privateModel.set(rel, grown);
        report.digests[rel] = sha(grown);
        report.bytesWritten += data.length;
      } else if (roll < 0.75) {
        const rel = `private/w${worker}-${j}`;
        const model = privateModel.get(rel);
        if (model === undefined) continue;
        const found = readFileSync(join(dir, rel));
        report.bytesRead += found.length;
        if (!found.equals(model)) report.errors.push(`${rel}: read back ${found.length} bytes ${sha(found).slice(0, 12)}, wrote ${model.length} bytes ${sha(model).slice(0, 12)}`);
      } else {
        const names = readdirSync(join(dir, 'shared')).filter((n) => !n.startsWith('.'));
        if (names.length === 0) continue;
        const name = names[int(names.length)]!;
        let found: Buffer;
        try {
          found = readFileSync(join(dir, 'shared', name));
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue; // replaced between readdir and open
          throw e;
        }
        report.bytesRead += found.length;
        report.crossReads++;
        if (found.length < 32 || !createHash('sha256').update(found.subarray(32)).digest().equals(found.subarray(0, 32))) {
          report.errors.push(`shared/${name}: ${found.length} bytes fail their own digest (a torn or mixed version)`);
        }
      }
      report.ops++;
    } catch (e) {
      report.errors.push(`op ${report.ops}: ${(e as Error).message}`);
    }
  }
  return report;
}

const [dir, workerText, durationText, seedText] = process.argv.slice(2);
const isMain = process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;
if (isMain && dir !== undefined && workerText !== undefined && durationText !== undefined && seedText !== undefined) {
  process.stdout.write(`${JSON.stringify(run(dir, Number(workerText), Number(durationText), Number(seedText)))}\n`);
}
