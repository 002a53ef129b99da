/**
 * Shared pieces of the benchmarks: the figure record every workload produces, the targets the
 * issues set, temporary directories that are removed even when a workload fails, page-cache
 * dropping, deterministic data and offsets, and timing.
 *
 * Every figure is measured beside a baseline from the same run and the same tool, so the ratio
 * says what zippy-fs costs on this machine today rather than against numbers from elsewhere.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** What a figure must reach: at least `min`× the baseline, at least `min` absolute, or below `max` absolute. */
export type Target =
  | { kind: 'ratioMin'; min: number; text: string }
  | { kind: 'absMin'; min: number; text: string }
  | { kind: 'absMax'; max: number; text: string }
  | { kind: 'none'; text: string };

/** One measured figure beside its baseline. */
export interface Figure {
  /** Which benchmark file produced it: engine (issue 2), mount (issue 3), sync (issues 4 and 6), syncd (issue 5) or fsck (issue 7). */
  suite: 'engine' | 'mount' | 'sync' | 'syncd' | 'fsck';
  workload: string;
  /** Unit of both figures, e.g. "MB/s", "ops/s", "MiB". */
  unit: string;
  zippy: number;
  baseline: number;
  /** What the baseline is (e.g. "fs.writeSync, plain file"). */
  baselineName: string;
  /** True when a larger figure is better (throughput); false for memory. */
  higherIsBetter: boolean;
  target: Target;
  /** Free-form details: sizes, counts, latency percentiles. */
  note?: string;
}

/** Whether a figure meets its target; undefined when there is none. */
export function targetMet(figure: Figure): boolean | undefined {
  const t = figure.target;
  switch (t.kind) {
    case 'ratioMin':
      return figure.zippy >= t.min * figure.baseline;
    case 'absMin':
      return figure.zippy >= t.min;
    case 'absMax':
      return figure.zippy < t.max;
    case 'none':
      return undefined;
  }
}

export const MiB = 1024 * 1024;
export const KiB = 1024;

/** Bytes per second → MB/s (10^6, as dd and the targets count). */
export function mbPerSecond(bytes: number, seconds: number): number {
  return bytes / 1e6 / seconds;
}

/** Seconds elapsed while running `action` (sync or async). */
export async function timed(action: () => unknown): Promise<number> {
  const start = process.hrtime.bigint();
  await action();
  return Number(process.hrtime.bigint() - start) / 1e9;
}

/** Seconds elapsed while running synchronous `action`. */
export function timedSync(action: () => void): number {
  const start = process.hrtime.bigint();
  action();
  return Number(process.hrtime.bigint() - start) / 1e9;
}

/** Directories and cleanup actions to run at the end, in reverse order, whatever happened. */
export class Cleanup {
  private readonly actions: { name: string; run: () => void | Promise<void> }[] = [];

  /** A new temporary directory under the system temp dir (same disk as the plain baselines). */
  tempDir(prefix: string): string {
    const dir = mkdtempSync(join(tmpdir(), `zippy-bench-${prefix}-`));
    this.add(`remove ${dir}`, () => rmSync(dir, { recursive: true, force: true }));
    return dir;
  }

  add(name: string, run: () => void | Promise<void>): void {
    this.actions.push({ name, run });
  }

  /** Runs every action, newest first; failures are reported and do not stop the others. */
  async runAll(): Promise<void> {
    while (this.actions.length > 0) {
      const action = this.actions.pop()!;
      try {
        await action.run();
      } catch (e) {
        process.stderr.write(`bench: cleanup "${action.name}" failed: ${String(e)}\n`);
      }
    }
  }
}

let dropCachesAllowed: boolean | undefined;

/** Writes dirty pages and drops the page, dentry and inode caches; false when not permitted. */
export function dropCaches(): boolean {
  if (dropCachesAllowed === false) return false;
  try {
    execFileSync('sync', { stdio: 'ignore' });
    writeFileSync('/proc/sys/vm/drop_caches', '3\n');
    dropCachesAllowed = true;
  } catch {
    dropCachesAllowed = false;
  }
  return dropCachesAllowed;
}

/**
 * Drops the page cache of one file (`dd iflag=nocache count=0`: posix_fadvise DONTNEED over the
 * whole file). On a mount this drops the mount's pages of that file, not the store's own files.
 */
export function dropFileCache(path: string): void {
  execFileSync('dd', [`if=${path}`, 'iflag=nocache', 'count=0', 'status=none'], { stdio: 'ignore' });
}

/** Whether dropCaches has worked (undefined before the first call). */
export function cachesDropped(): boolean | undefined {
  return dropCachesAllowed;
}

/** A small deterministic PRNG (mulberry32) so every run uses the same offsets. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Deterministic non-zero bytes (zero blocks would be stored as holes and flatter the figures). */
export function patternBuffer(sizeBytes: number, seed: number): Buffer {
  const buf = Buffer.allocUnsafe(sizeBytes);
  const next = prng(seed);
  for (let i = 0; i + 4 <= sizeBytes; i += 4) buf.writeUInt32LE(((next() * 2 ** 32) | 1) >>> 0, i);
  return buf;
}

/**
 * Stamps every 4 KiB block of `chunk` with its position in the stream so that no two blocks of a
 * written file are equal (a store that deduplicates blocks would otherwise write almost nothing).
 */
export function stampChunk(chunk: Buffer, chunkIndex: number): void {
  for (let off = 0; off + 8 <= chunk.length; off += 4096) {
    chunk.writeUInt32LE(chunkIndex, off);
    chunk.writeUInt32LE(off, off + 4);
  }
}

/** Progress to stderr, only on a terminal (the bench is otherwise quiet). */
export function progress(message: string): void {
  if (process.stderr.isTTY) process.stderr.write(`  … ${message}\n`);
}

/** Bench sizes: full (the issues' figures) or quick (a smoke run). */
export interface Sizes {
  quick: boolean;
}
