/**
 * The daemon's status file, `${XDG_CACHE_HOME:-~/.cache}/zippy-fs/sync-status.json`
 * (docs/FORMAT.md "zippy-sync status file"): written after every run (and when a run starts or the
 * daemon stops) as a temp file in the same directory, fsynced and renamed over the old one, so
 * `zippy-sync status` always reads a whole file.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { FsError } from '../../errors.js';
import type { RunReport } from './run.js';

export const statusFormat = 'zippy-sync-status';
export const statusFormatVersion = 1;

export interface StatusTotals {
  runs: number;
  failedRuns: number;
  archivesUp: number;
  bytesUp: number;
  archivesDown: number;
  bytesDown: number;
  deletedRemote: number;
  deletedLocal: number;
}

export interface SyncStatus {
  format: typeof statusFormat;
  version: typeof statusFormatVersion;
  pid: number;
  syncDir: string;
  remote: string;
  boxid: string;
  /** running: a run is in progress; idle: waiting for the next; stopped: the daemon exited. */
  state: 'running' | 'idle' | 'stopped';
  updatedAt: string;
  /** When the next periodic run is due (idle daemons), else null. */
  nextRunAt: string | null;
  lastRun: RunReport | null;
  /** The last run that failed: when, and its first error. */
  lastError: { at: string; message: string } | null;
  /** Since the daemon started. */
  totals: StatusTotals;
}

export function emptyTotals(): StatusTotals {
  return { runs: 0, failedRuns: 0, archivesUp: 0, bytesUp: 0, archivesDown: 0, bytesDown: 0, deletedRemote: 0, deletedLocal: 0 };
}

/** Adds one run to the totals. */
export function addRun(totals: StatusTotals, r: RunReport): void {
  totals.runs++;
  if (!r.ok) totals.failedRuns++;
  totals.archivesUp += r.up.archives;
  totals.bytesUp += r.up.bytes;
  totals.archivesDown += r.down.archives;
  totals.bytesDown += r.down.bytes;
  totals.deletedRemote += r.deletedRemote;
  totals.deletedLocal += r.deletedLocal;
}

export function statusPath(cacheDir: string): string {
  return join(cacheDir, 'sync-status.json');
}

/** Writes the status atomically (temp file, fsync, rename). */
export function writeStatus(cacheDir: string, status: SyncStatus): void {
  const path = statusPath(cacheDir);
  const temp = join(cacheDir, `.tmp-${randomBytes(8).toString('hex')}-sync-status.json`);
  const fd = openSync(temp, 'wx', 0o644);
  try {
    writeSync(fd, `${JSON.stringify(status, null, 2)}\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    renameSync(temp, path);
  } catch (e) {
    unlinkSync(temp);
    throw e;
  }
}

/** The status file, or undefined when no daemon ever wrote one; FsError BAD_INPUT when unreadable. */
export function readStatus(cacheDir: string): SyncStatus | undefined {
  let text: string;
  try {
    text = readFileSync(statusPath(cacheDir), 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new FsError('BAD_INPUT', 'status file is not JSON', statusPath(cacheDir));
  }
  const s = parsed as Partial<SyncStatus>;
  if (s.format !== statusFormat || s.version !== statusFormatVersion) {
    throw new FsError('BAD_INPUT', `not a ${statusFormat} version ${statusFormatVersion} file`, statusPath(cacheDir));
  }
  return s as SyncStatus;
}
