/**
 * The machine's side of a run: what its sync dir holds (an inventory), moving downloaded files
 * from the staging dir into place, deleting retired archives, and removing stale temp files.
 *
 * Downloads land in a staging dir `.tmp-<boxid>-<16 hex>/` inside the sync dir (same file system,
 * ignored by every reader: a dot-name and a directory). Each file is made durable there (an fsync
 * each, or for a large batch one syncfs of the file system, far cheaper than thousands of fsyncs),
 * then hard-linked
 * to its real name — link(2) fails rather than replace, so nothing in the sync dir is ever
 * overwritten — phase by phase with a directory fsync between phases, so every zip is durable
 * before an idx names it (docs/FORMAT.md "Write protocol"). The mount's importer (inotify) sees
 * whole files only.
 */
import { spawnSync } from 'node:child_process';
import { link, lstat, mkdir, open, readdir, rm, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fsyncDirectory, pathExists } from '../archive-store.js';
import { isHex128, tempNamePrefix } from '../names.js';
import { rmLogDirName } from '../rmlog.js';
import { addToInventory, emptyInventory, type Inventory } from './inventory.js';
import { staleTempAgeMs } from './limits.js';
import type { CommitOutcome, TransferItem } from './remote.js';

export interface LocalTemp {
  /** Relative to the sync dir. */
  readonly path: string;
  readonly mtimeMs: number;
}

async function entriesOf(dir: string): Promise<import('node:fs').Dirent[]> {
  try {
    return await readdir(dir, { withFileTypes: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}

/** The directories of a sync dir whose files the daemon moves (besides the top level). */
async function subdirectories(syncDir: string): Promise<string[]> {
  const dirs = ['keys', 'keys/requests'];
  for (const e of await entriesOf(join(syncDir, rmLogDirName))) if (e.isDirectory() && isHex128(e.name)) dirs.push(`${rmLogDirName}/${e.name}`);
  return dirs;
}

/** Lists what the sync dir holds: archives, rm-log chunks and key files with sizes, and temp entries. */
export async function scanLocal(syncDir: string): Promise<{ inventory: Inventory; temps: LocalTemp[] }> {
  const inventory = emptyInventory();
  const temps: LocalTemp[] = [];
  for (const dir of ['', ...(await subdirectories(syncDir))]) {
    for (const e of await entriesOf(join(syncDir, dir))) {
      const path = dir === '' ? e.name : `${dir}/${e.name}`;
      if (!e.isFile() && !(e.isDirectory() && e.name.startsWith(tempNamePrefix))) continue;
      let st;
      try {
        st = await lstat(join(syncDir, path));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // removed while we looked
        throw err;
      }
      if (e.name.startsWith(tempNamePrefix)) temps.push({ path, mtimeMs: st.mtimeMs });
      else addToInventory(inventory, path, st.size);
    }
  }
  return { inventory, temps };
}

/** Removes temp entries older than staleTempAgeMs (leftovers of killed writers and transfers); returns them. */
export async function removeStaleLocalTemps(syncDir: string, temps: readonly LocalTemp[], nowMs: number): Promise<string[]> {
  const removed: string[] = [];
  for (const t of temps) {
    if (nowMs - t.mtimeMs < staleTempAgeMs) continue;
    await rm(join(syncDir, t.path), { recursive: true, force: true });
    removed.push(t.path);
  }
  return removed;
}

async function fsyncFile(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Above this many downloaded files one syncfs(2) of the staging dir's file system replaces an fsync per file. */
const syncfsFileCountMin = 16;

/** syncfs(2) through `sync -f` (coreutils): true when it ran and succeeded. */
function syncFileSystem(dir: string): boolean {
  const result = spawnSync('sync', ['-f', dir], { stdio: 'ignore', timeout: 600_000 });
  return result.error === undefined && result.status === 0;
}


/**
 * Moves downloaded files from `stagingDir` into the sync dir, phase by phase: each file fsynced,
 * linked to its real name unless that name exists (then left alone), an item with `after` only
 * when that file is in place; every touched directory fsynced at the end of each phase.
 */
export async function commitStaged(syncDir: string, stagingDir: string, phases: readonly (readonly TransferItem[])[]): Promise<CommitOutcome> {
  const outcome: CommitOutcome = { placed: [], existed: [], skipped: [] };
  const syncedAll = phases.flat().length > syncfsFileCountMin && syncFileSystem(stagingDir);
  for (const phase of phases) {
    const touched = new Set<string>();
    for (const item of phase) {
      const staged = join(stagingDir, item.path);
      const target = join(syncDir, item.path);
      if (!(await pathExists(staged)) || (item.after !== undefined && !(await pathExists(join(syncDir, item.after))))) {
        outcome.skipped.push(item.path);
        continue;
      }
      if (!syncedAll) await fsyncFile(staged);
      await mkdir(dirname(target), { recursive: true });
      try {
        await link(staged, target);
        outcome.placed.push(item.path);
        touched.add(dirname(target));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        outcome.existed.push(item.path);
      }
    }
    for (const dir of touched) await fsyncDirectory(dir);
  }
  return outcome;
}

/**
 * Deletes archives from the sync dir: every idx first (then a directory fsync), then every zip,
 * so a crash in between leaves zips without idx (never read), not an idx without its zip.
 */
export async function deleteLocalArchives(syncDir: string, names: readonly string[]): Promise<void> {
  if (names.length === 0) return;
  for (const part of ['idx', 'zip']) {
    for (const name of names) {
      try {
        await unlink(join(syncDir, `${name}.${part}`));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      }
    }
    await fsyncDirectory(syncDir);
  }
}
