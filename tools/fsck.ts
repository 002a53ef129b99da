/**
 * `zippy-fsck [--repair] [--json] <store-dir | segments-dir> [--sync <abs-sync-dir>]`: a thin
 * CLI over the checker and repair libraries — src/inode/check.ts (store, read-only),
 * src/inode/repair.ts (store repair and rebuild), src/sync/check.ts (archives) and
 * src/sync/rebuild.ts (a lost B+Tree refilled from the sync dir).
 *
 * Lifecycle: 1. refuse a store a live process holds (mounted); 2. check everything read-only;
 * 3. with --repair and problems: save, repair (or rebuild when LMDB is lost), quarantine broken
 * archives, then check again; 4. print (a summary table, or --json) and exit 0 clean, 1 problems
 * (after --repair: problems left), 2 could not run.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { isFsError } from '../src/errors.js';
import { checkSegments, type SegmentCheck } from '../src/blocks/check.js';
import { listSegmentNumbers, segmentFileName } from '../src/blocks/index.js';
import { Btree } from '../src/btree/db.js';
import { archivePointers, checkStoreDir, isStoreDir, liveLockPid, type Problem, type StoreDirReport } from '../src/inode/check.js';
import { prepareRebuild, recoverOrphanRecords, repairStore, type RepairAction } from '../src/inode/repair.js';
import { Store } from '../src/inode/store.js';
import type { SyncCheckReport, SyncProblem } from '../src/sync/check.js';

// The sync layer (and libsodium with it) is loaded only when --sync is given: a store check starts faster.
const syncCheck = (): Promise<typeof import('../src/sync/check.js')> => import('../src/sync/check.js');

export const fsckExit = { clean: 0, problems: 1, failed: 2 } as const;

const help = `Usage: zippy-fsck [--repair] [--json] <store-dir | segments-dir> [--sync <abs-sync-dir>]

Checks a zippy-fs local store that is not mounted, without changing anything: segments
(record checksums, torn tails, bytes past the committed head), the B+Tree (entries, link
index, link counts, reachability, block pointers, segment usage) and allocator marks.
With --sync also the archives of the sync dir (idx trailers and CRC64, each zip's central
directory against its idx, every block entry, encrypted archives authenticated when this
machine holds the key) and that every visible version's blocks are in some archive.

  --repair          fix what can be fixed, after saving what changes into
                    <store>/fsck-backup-<time>/ (see README); then check again
  --sync DIR        also check the sync dir DIR (absolute); with --repair, rebuild a lost
                    B+Tree from it and move broken archives to DIR/.fsck-quarantine-<time>/
  --json            print the report as JSON on stdout
  -h, --help        this text

Exit codes: 0 clean (after --repair: clean now), 1 problems found (left), 2 could not run.`;

/** Codes that --repair does not fix. */
const unrepairable = new Set<string>(['too-deep', 'block-missing', 'version-base', 'archive-gone']);

interface ReportedProblem {
  kind: string;
  area: 'segments' | 'btree' | 'sync';
  place: string;
  message: string;
  repairable: boolean;
  repaired: boolean;
}

interface Outcome {
  target: string;
  kind: 'store' | 'segments';
  syncDir: string | null;
  clean: boolean;
  problems: ReportedProblem[];
  /** After --repair: what the re-check still finds. */
  remaining: ReportedProblem[] | null;
  counts: Record<string, number>;
  notes: string[];
  repair: { backupDir: string | null; quarantineDir: string | null; actions: RepairAction[]; lostBlocks: number } | null;
}

/** A progress line on stderr, only on a terminal, at most ten updates a second. */
class Progress {
  private last = 0;
  constructor(private readonly enabled: boolean) {}

  show(text: string, fraction?: number): void {
    if (!this.enabled) return;
    const now = Date.now();
    if (now - this.last < 100) return;
    this.last = now;
    const width = 30;
    const bar = fraction === undefined ? '' : `[${'#'.repeat(Math.round(Math.min(1, fraction) * width)).padEnd(width, '.')}] ${Math.floor(Math.min(1, fraction) * 100)}% `;
    process.stderr.write(`\rzippy-fsck: ${bar}${text}\x1b[K`);
  }

  done(): void {
    if (this.enabled) process.stderr.write('\r\x1b[K');
  }
}

const segmentCodes = new Set(['segment-corrupt', 'segment-header', 'torn-tail', 'unreferenced-tail', 'segment-beyond-head', 'segment-short', 'segment-missing']);

function fromStore(p: Problem): ReportedProblem {
  return { kind: p.code, area: segmentCodes.has(p.code) ? 'segments' : 'btree', place: p.place, message: p.message, repairable: !unrepairable.has(p.code), repaired: false };
}

function fromSync(p: SyncProblem, quarantinable: ReadonlySet<string>): ReportedProblem {
  return { kind: p.code, area: 'sync', place: p.place, message: p.message, repairable: quarantinable.has(p.code), repaired: false };
}

interface Checked {
  store: StoreDirReport | undefined;
  segments: SegmentCheck | undefined;
  sync: SyncCheckReport | undefined;
  problems: ReportedProblem[];
}

/** Bytes of the segment files in `dir` (the progress bar's total). */
function segmentBytes(dir: string): number {
  if (!existsSync(dir)) return 0;
  return listSegmentNumbers(dir).reduce((sum, segment) => sum + statSync(join(dir, segmentFileName(segment))).size, 0);
}

/** Walks `lmdbDir` in a child process; returns why it cannot be read, or undefined when it can. */
function probeInChild(lmdbDir: string): string | undefined {
  const r = spawnSync(process.execPath, [fileURLToPath(new URL('./fsck-probe.js', import.meta.url)), lmdbDir], { encoding: 'utf8' });
  if (r.status === 0) return undefined;
  const why = r.signal !== null ? `reading it crashed a process (${r.signal})` : (r.stderr.trim().split('\n').pop() ?? `exit ${r.status}`);
  return `the LMDB environment is damaged: ${why}`;
}

async function checkAll(target: { storeDir: string | undefined; segmentsDir: string }, syncDir: string | undefined, progress: Progress): Promise<Checked> {
  let store: StoreDirReport | undefined;
  let segments: SegmentCheck | undefined;
  const problems: ReportedProblem[] = [];
  const mib = (n: number): string => `${(n / 1048576).toFixed(0)} MiB`;
  const totalBytes = segmentBytes(target.segmentsDir);
  if (target.storeDir !== undefined) {
    store = await checkStoreDir(target.storeDir, {
      probe: probeInChild,
      progressBytes: (n) => progress.show(`segments: ${mib(n)} of ${mib(totalBytes)} verified`, n / Math.max(1, totalBytes)),
      progressBlocks: (n, total) => progress.show(`B+Tree: ${n} of ${total} block pointers checked`, n / Math.max(1, total)),
    });
    segments = store.segments;
    problems.push(...store.problems.map(fromStore));
  } else {
    segments = checkSegments(target.segmentsDir, { progress: (n) => progress.show(`segments: ${mib(n)} of ${mib(totalBytes)} verified`, n / Math.max(1, totalBytes)) });
    problems.push(...segments.findings.map((f) => fromStore({ code: f.code, place: `${f.file}:${f.offset}`, message: f.message })));
  }
  let sync: SyncCheckReport | undefined;
  if (syncDir !== undefined) {
    const { checkArchiveReferences, checkSyncDir, quarantinableCodes } = await syncCheck();
    const { defaultConfigDir } = await import('../src/sync/crypto/index.js');
    sync = await checkSyncDir(syncDir, { configDir: defaultConfigDir(), progress: (n, of) => progress.show(`sync: archive ${n} of ${of}`, n / Math.max(1, of)) });
    if (target.storeDir !== undefined && store?.btreeError === undefined && sync.authenticated) {
      const btree = Btree.open(join(target.storeDir, 'lmdb'), { readOnly: true });
      try {
        checkArchiveReferences(archivePointers(btree), (name) => btree.table(name), sync);
      } finally {
        await btree.close();
      }
    }
    problems.push(...sync.problems.map((p) => fromSync(p, quarantinableCodes)));
  }
  progress.done();
  return { store, segments, sync, problems };
}

async function repair(storeDir: string, checked: Checked, syncDir: string | undefined, log: (m: string) => void): Promise<NonNullable<Outcome['repair']>> {
  const result: NonNullable<Outcome['repair']> = { backupDir: null, quarantineDir: null, actions: [], lostBlocks: 0 };
  const storeProblems = checked.problems.filter((p) => p.area !== 'sync');
  if (syncDir !== undefined && checked.sync !== undefined) {
    const { quarantinableCodes, quarantineArchives } = await syncCheck();
    const names = new Set(checked.sync.problems.filter((p) => quarantinableCodes.has(p.code) && p.archive !== undefined).map((p) => p.archive!));
    if (names.size > 0) {
      const q = quarantineArchives(syncDir, names);
      result.quarantineDir = q.dir;
      for (const file of q.moved) result.actions.push({ place: join(syncDir, file), message: `broken archive file moved to ${q.dir}` });
    }
  }
  if (storeProblems.length === 0 || checked.store === undefined) return result;
  if (checked.store.btreeError !== undefined || storeProblems.some((p) => p.kind === 'btree-unreadable')) {
    const backupDir = await prepareRebuild(storeDir, checked.store.segments, result.actions);
    result.backupDir = backupDir;
    const store = Store.open(storeDir);
    try {
      let claimed: Parameters<typeof recoverOrphanRecords>[4] = () => false;
      if (syncDir !== undefined) {
        const { FileSystem } = await import('../src/inode/fs.js');
        const { importSyncDir } = await import('../src/sync/rebuild.js');
        const { boxidPath, loadBoxid } = await import('../src/sync/boxid.js');
        const { defaultConfigDir } = await import('../src/sync/crypto/index.js');
        const fs = new FileSystem(store, { writebackDelayMs: 0 });
        try {
          const imported = await importSyncDir(fs, syncDir, { boxid: loadBoxid(boxidPath()), configDir: defaultConfigDir(), log });
          result.actions.push({ place: syncDir, message: `tree rebuilt from ${imported.archiveCount} archive(s) of the sync dir` });
          claimed = (ino, blocks) => [...blocks].every(([blockIndex, loc]) => imported.hasPayload(store.log.read(loc, ino, blockIndex)));
        } catch (e) {
          if (!isFsError(e, 'BAD_KEY')) throw e;
          result.actions.push({ place: syncDir, message: `cannot open the encrypted sync dir (${e.message}); rebuilt from the segments only` });
        } finally {
          await fs.close();
        }
      }
      await recoverOrphanRecords(store, checked.store.segments, backupDir, result.actions, claimed);
    } finally {
      await store.close();
    }
    return result;
  }
  const repaired = await repairStore(storeDir, checked.store.segments, checked.store.head);
  result.backupDir = repaired.backupDir;
  result.actions.push(...repaired.actions);
  result.lostBlocks = repaired.lostBlocks;
  return result;
}

function counts(checked: Checked): Record<string, number> {
  const c: Record<string, number> = {};
  if (checked.segments !== undefined) {
    c['segmentFiles'] = checked.segments.segments.length;
    c['records'] = checked.segments.recordCount;
    c['recordBytes'] = checked.segments.recordBytes;
  }
  if (checked.store !== undefined) {
    c['inodes'] = checked.store.inodeCount;
    c['directories'] = checked.store.directoryCount;
    c['blocks'] = checked.store.blockCount;
    c['blockBytes'] = checked.store.blockBytes;
    c['deadRecords'] = checked.store.deadRecordCount;
  }
  if (checked.sync !== undefined) {
    c['archives'] = checked.sync.archiveCount;
    c['archiveBlocks'] = checked.sync.blockCount;
    c['versions'] = checked.sync.versionCount;
    c['visibleVersions'] = checked.sync.visibleCount;
  }
  return c;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  const line = (r: string[]): string => r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  ');
  return [line(rows[0]!), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.slice(1).map(line)].join('\n');
}

function printText(outcome: Outcome): void {
  const out = (s: string): boolean => process.stdout.write(`${s}\n`);
  for (const p of outcome.problems) out(`${p.repaired ? 'REPAIRED' : 'PROBLEM'} ${p.kind} at ${p.place}: ${p.message}`);
  for (const p of outcome.remaining ?? []) if (!outcome.problems.some((q) => q.kind === p.kind && q.place === p.place)) out(`PROBLEM ${p.kind} at ${p.place}: ${p.message}`);
  for (const a of outcome.repair?.actions ?? []) out(`repair: ${a.place}: ${a.message}`);
  for (const n of outcome.notes) out(`note: ${n}`);
  const c = outcome.counts;
  const areas: [string, string, number | undefined][] = [
    ['segments', `${c['segmentFiles'] ?? 0} files, ${c['records'] ?? 0} records (${c['deadRecords'] ?? 0} dead), ${((c['recordBytes'] ?? 0) / 1048576).toFixed(1)} MiB`, undefined],
    ['B+Tree', outcome.kind === 'store' ? `${c['inodes'] ?? 0} inodes, ${c['directories'] ?? 0} dirs, ${c['blocks'] ?? 0} block pointers` : 'not checked (bare segments dir)', undefined],
  ];
  if (outcome.syncDir !== null) areas.push(['sync', `${c['archives'] ?? 0} archives, ${c['archiveBlocks'] ?? 0} blocks, ${c['visibleVersions'] ?? 0} visible versions`, undefined]);
  const rows = [['area', 'checked', 'problems', 'repaired', 'left']];
  const areaKey: Record<string, ReportedProblem['area']> = { segments: 'segments', 'B+Tree': 'btree', sync: 'sync' };
  for (const [name, what] of areas) {
    const found = outcome.problems.filter((p) => p.area === areaKey[name]);
    const left = (outcome.remaining ?? outcome.problems).filter((p) => p.area === areaKey[name]);
    rows.push([name, what, String(found.length), String(found.filter((p) => p.repaired).length), String(left.length)]);
  }
  out('');
  out(table(rows));
  if (outcome.repair?.backupDir !== null && outcome.repair !== null) out(`backup of everything changed: ${outcome.repair.backupDir}`);
  if (outcome.repair?.quarantineDir !== null && outcome.repair !== null) out(`broken archives moved to: ${outcome.repair.quarantineDir}`);
  if ((outcome.repair?.lostBlocks ?? 0) > 0) out(`${outcome.repair!.lostBlocks} block(s) had no good copy anywhere and now read as zeros (listed above)`);
  out(outcome.clean ? `${outcome.target}: clean` : `${outcome.target}: ${(outcome.remaining ?? outcome.problems).length} problem(s)`);
}

function locate(target: string): { storeDir: string | undefined; segmentsDir: string; kind: 'store' | 'segments' } {
  if (basename(target) === 'segments' && isStoreDir(dirname(target)) && existsSync(join(dirname(target), 'lmdb'))) {
    return { storeDir: dirname(target), segmentsDir: target, kind: 'store' };
  }
  if (isStoreDir(target)) return { storeDir: target, segmentsDir: join(target, 'segments'), kind: 'store' };
  return { storeDir: undefined, segmentsDir: target, kind: 'segments' };
}

/** Entry point: returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, options: { json: { type: 'boolean' }, repair: { type: 'boolean' }, sync: { type: 'string' }, help: { type: 'boolean', short: 'h' } } });
  } catch (e) {
    process.stderr.write(`zippy-fsck: ${(e as Error).message}\nTry 'zippy-fsck --help'.\n`);
    return fsckExit.failed;
  }
  if (parsed.values.help === true) {
    process.stdout.write(`${help}\n`);
    return fsckExit.clean;
  }
  if (parsed.positionals.length !== 1) {
    process.stderr.write(`zippy-fsck: expected one directory\nTry 'zippy-fsck --help'.\n`);
    return fsckExit.failed;
  }
  const target = resolve(parsed.positionals[0]!);
  if (!existsSync(target) || !statSync(target).isDirectory()) {
    process.stderr.write(`zippy-fsck: not a directory: ${target}\n`);
    return fsckExit.failed;
  }
  const syncDir = parsed.values.sync;
  if (syncDir !== undefined && (!isAbsolute(syncDir) || !existsSync(syncDir) || !statSync(syncDir).isDirectory())) {
    process.stderr.write(`zippy-fsck: --sync needs an existing absolute directory: ${syncDir}\n`);
    return fsckExit.failed;
  }
  const where = locate(target);
  const json = parsed.values.json === true;
  const doRepair = parsed.values.repair === true;
  if (doRepair && where.storeDir === undefined) {
    process.stderr.write(`zippy-fsck: ${target} is a bare segments directory (no store around it): --repair needs the store\n`);
    return fsckExit.failed;
  }
  if (where.storeDir !== undefined) {
    const pid = liveLockPid(where.storeDir);
    if (pid !== undefined) {
      process.stderr.write(`zippy-fsck: the store ${where.storeDir} is in use by process ${pid} (unmount it first)\n`);
      return fsckExit.failed;
    }
  }
  const progress = new Progress(process.stderr.isTTY === true && !json);
  const warnings: string[] = [];
  try {
    const first = await checkAll(where, syncDir, progress);
    const outcome: Outcome = {
      target, kind: where.kind, syncDir: syncDir ?? null, clean: first.problems.length === 0, problems: first.problems, remaining: null,
      counts: counts(first), notes: first.sync?.notes ?? [], repair: null,
    };
    if (doRepair && first.problems.some((p) => p.repairable)) {
      outcome.repair = await repair(where.storeDir!, first, syncDir, (m) => warnings.push(m));
      const again = await checkAll(where, syncDir, progress);
      outcome.remaining = again.problems;
      outcome.counts = counts(again);
      outcome.clean = again.problems.length === 0;
      for (const p of outcome.problems) p.repaired = !again.problems.some((q) => q.kind === p.kind && q.place === p.place);
      outcome.notes.push(...warnings.map((w) => `while rebuilding: ${w}`));
    }
    if (json) process.stdout.write(`${JSON.stringify(outcome, null, 2)}\n`);
    else printText(outcome);
    return outcome.clean ? fsckExit.clean : fsckExit.problems;
  } catch (e) {
    progress.done();
    const hint = isFsError(e, 'LOCKED') ? ' (unmount it first)' : '';
    process.stderr.write(`zippy-fsck: cannot check ${target}: ${(e as Error).message}${hint}\n`);
    return fsckExit.failed;
  }
}

process.exitCode = await main(process.argv.slice(2));
