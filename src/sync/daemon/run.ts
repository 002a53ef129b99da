/**
 * One run of zippy-sync, in numbered steps (docs/ARCHITECTURE.md "Sync daemon"):
 *
 * 1. Scan the sync dir; remove temp entries older than staleTempAgeMs.
 * 2. List the server (top level first, then rmlog/ and keys/); remove this box's stale temp dirs
 *    there (others' after a day).
 * 3. Download rm-log chunks and key files the sync dir lacks (key files first, keys/fs.json last),
 *    so the next steps know every retirement the server knows.
 * 4. Read every rm-log (with the keyring in an encrypted sync dir).
 * 5. Upload: archives the server lacks that no rm-log names (zip phase, then idx phase: an idx only
 *    once its zip is in place), then rm-log chunks and key files the server lacks.
 * 6. Delete on the server the archives this box's rm-log names, each only once every archive that
 *    superseded it is whole on the server (idx files first, then zips).
 * 7. Download archives the sync dir lacks, except those an rm-log names whose superseding archives
 *    are all available (no point fetching them); zip phase, then idx phase.
 * 8. Delete from the sync dir the archives other boxes' rm-logs name, each only once every
 *    superseding archive is whole in the sync dir (idx first, then zip), and only by chunks that
 *    have been in the sync dir for rmLogSettleMs (the mounts' GC rescues blocks first).
 * A superseding archive counts as present when it is, or when it is itself retired and its own
 * successors count as present (deletableArchives: the chain a repack of repacks leaves).
 *
 * Nothing else is ever deleted, and nothing is ever overwritten: a name present on the other side
 * with a different size is reported as an error and left alone. Every step is idempotent, so a run
 * that dies anywhere is completed by the next one.
 */
import { randomBytes } from 'node:crypto';
import { lstat, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { isFsError } from '../../errors.js';
import { loadKeyring } from '../crypto/index.js';
import { deadArchives, deletableArchives, readRmLogs, type RmLogChunk, type RmLogOpenKeys } from '../rmlog.js';
import { archiveFile, type ArchivePart, type Inventory, isWhole, keyCommitOrder } from './inventory.js';
import { rmLogSettleMsDefault, runErrorCountMax, staleTempAgeMs } from './limits.js';
import { commitStaged, deleteLocalArchives, removeStaleLocalTemps, scanLocal } from './local.js';
import type { Progress } from './progress.js';
import { type CommitOutcome, isOwnTempName, type Remote, type TransferHooks, type TransferItem } from './remote.js';

/** Foreign temp dirs on the server (of another box whose daemon died) are removed after this. */
const foreignTempAgeMs = 24 * 60 * 60 * 1000;

export interface Moved {
  /** Archives whose idx reached the other side (an archive counts once it is whole there). */
  archives: number;
  /** Files of any kind placed on the other side. */
  files: number;
  /** Bytes of those files. */
  bytes: number;
  /** rm-log chunks among them. */
  chunks: number;
  /** Key files among them. */
  keyFiles: number;
}

export interface RunReport {
  startedAt: string;
  finishedAt: string;
  durationMs: number;
  /** True when the run finished without an error. */
  ok: boolean;
  /** True when SIGINT/SIGTERM stopped it. */
  aborted: boolean;
  remote: string;
  up: Moved;
  down: Moved;
  /** Archives deleted on the server (step 6). */
  deletedRemote: number;
  /** Archives deleted from the sync dir (step 8). */
  deletedLocal: number;
  /** Retired archives kept because a superseding archive is not there yet (steps 6 and 8). */
  waitingForSuperseding: number;
  /** Retired archives not uploaded or downloaded (steps 5 and 7). */
  skippedRetired: number;
  /** Temp entries removed (local and server). */
  tempsRemoved: number;
  /** rsync's own count of bytes on the wire (sent + received), when the remote is rsync. */
  wireBytes: number | undefined;
  errors: string[];
  warnings: string[];
}

export interface RunContext {
  readonly syncDir: string;
  readonly remote: Remote;
  /** This machine's boxid: its rm-log is the one whose archives it deletes on the server. */
  readonly boxid: string;
  /** zippy-fs config dir (keys of an encrypted sync dir). */
  readonly configDir: string;
  readonly signal: AbortSignal;
  readonly progress?: Progress;
  readonly nowMs?: () => number;
  /** How long another box's rm-log chunk waits in the sync dir before its deletions apply here (default rmLogSettleMsDefault). */
  readonly rmLogSettleMs?: number;
}

type Retired = ReturnType<typeof deadArchives>;

function emptyMoved(): Moved {
  return { archives: 0, files: 0, bytes: 0, chunks: 0, keyFiles: 0 };
}

function newTempName(boxid: string): string {
  return `.tmp-${boxid}-${randomBytes(8).toString('hex')}`;
}

class Run {
  readonly report: RunReport;
  local!: Inventory;
  remoteInv!: Inventory;
  /** False when the server dir does not exist yet (the first upload creates it). */
  rootExists = true;
  private readonly staging: string;
  private readonly hooks: TransferHooks;
  private readonly now: () => number;

  constructor(private readonly ctx: RunContext) {
    this.now = ctx.nowMs ?? Date.now;
    this.report = {
      startedAt: new Date(this.now()).toISOString(), finishedAt: '', durationMs: 0, ok: false, aborted: false, remote: ctx.remote.description,
      up: emptyMoved(), down: emptyMoved(), deletedRemote: 0, deletedLocal: 0, waitingForSuperseding: 0, skippedRetired: 0, tempsRemoved: 0,
      wireBytes: undefined, errors: [], warnings: [],
    };
    this.staging = join(ctx.syncDir, newTempName(ctx.boxid));
    this.hooks = { signal: ctx.signal, onFileDone: (path) => ctx.progress?.fileDone(path) };
  }

  error(message: string): void {
    if (this.report.errors.length < runErrorCountMax) this.report.errors.push(message);
  }

  warn(message: string): void {
    if (this.report.warnings.length < runErrorCountMax) this.report.warnings.push(message);
  }

  /** Steps 1–2. */
  async survey(): Promise<void> {
    const scanned = await scanLocal(this.ctx.syncDir);
    this.local = scanned.inventory;
    this.report.tempsRemoved += (await removeStaleLocalTemps(this.ctx.syncDir, scanned.temps, this.now())).length;
    const listing = await this.ctx.remote.list(this.hooks);
    this.remoteInv = listing.inventory;
    this.rootExists = listing.exists;
    for (const t of listing.temps) {
      const ageMs = this.now() - t.mtimeMs;
      if (ageMs < (isOwnTempName(t.name, this.ctx.boxid) ? staleTempAgeMs : foreignTempAgeMs)) continue;
      await this.ctx.remote.removeTemp(t.name, this.hooks);
      this.report.tempsRemoved++;
    }
  }

  /** Files the other side lacks; a file present on both sides with different sizes is an error (never replaced). */
  private missingFiles(from: Inventory, to: Inventory, where: string): string[] {
    const out: string[] = [];
    for (const [path, sizeBytes] of from.files) {
      const there = to.files.get(path);
      if (there === undefined) out.push(path);
      else if (there !== sizeBytes) this.error(`${path}: ${sizeBytes} bytes here, ${there} bytes ${where}; not replaced`);
    }
    return out;
  }

  /** Records placed and existing files in `into` (sizes from `sizes`) and counts the placed ones. */
  private account(outcome: CommitOutcome, sizes: Inventory, moved: Moved, into: Inventory): void {
    for (const path of [...outcome.placed, ...outcome.existed]) {
      const sizeBytes = this.sizeOf(sizes, path);
      const m = /^([0-9a-f]{32})\.(zip|idx)$/.exec(path);
      if (m === null) {
        into.files.set(path, sizeBytes);
        continue;
      }
      const a = into.archives.get(m[1]!) ?? {};
      a[m[2] as ArchivePart] = sizeBytes;
      into.archives.set(m[1]!, a);
    }
    for (const path of outcome.placed) {
      moved.files++;
      moved.bytes += this.sizeOf(sizes, path);
      if (path.endsWith('.idx') && !path.includes('/')) moved.archives++;
      else if (path.startsWith('rmlog/')) moved.chunks++;
      else if (path.startsWith('keys/')) moved.keyFiles++;
    }
  }

  private sizeOf(inv: Inventory, path: string): number {
    const m = /^([0-9a-f]{32})\.(zip|idx)$/.exec(path);
    return (m === null ? inv.files.get(path) : inv.archives.get(m[1]!)?.[m[2] as ArchivePart]) ?? 0;
  }

  private async download(phases: TransferItem[][]): Promise<void> {
    const paths = phases.flat().map((i) => i.path);
    if (paths.length === 0) return;
    this.ctx.progress?.begin('down', paths.length, paths.reduce((s, p) => s + this.sizeOf(this.remoteInv, p), 0), (p) => this.sizeOf(this.remoteInv, p));
    await this.ctx.remote.download(paths, this.staging, this.hooks);
    const outcome = await commitStaged(this.ctx.syncDir, this.staging, phases);
    this.ctx.progress?.end();
    for (const p of outcome.skipped) this.warn(`${p}: not downloaded (gone from the server, or its zip is missing)`);
    this.account(outcome, this.remoteInv, this.report.down, this.local);
  }

  /** Step 3. */
  async downloadSmallFiles(): Promise<void> {
    const paths = this.missingFiles(this.remoteInv, this.local, 'locally');
    const keys = keyCommitOrder(paths.filter((p) => p.startsWith('keys/')));
    const chunks = paths.filter((p) => p.startsWith('rmlog/'));
    await this.download([keys.filter((p) => p !== 'keys/fs.json').map((path) => ({ path })), keys.filter((p) => p === 'keys/fs.json').map((path) => ({ path })), chunks.map((path) => ({ path }))]);
  }

  /**
   * Step 4: every retired archive (`all`), and those named by chunks that have settled in the sync
   * dir (`settled`, for step 8); none when the rm-logs cannot be opened here.
   */
  async readRetired(): Promise<{ all: Retired; settled: Retired }> {
    let keys: RmLogOpenKeys | undefined;
    try {
      const keyring = loadKeyring(this.ctx.syncDir, this.ctx.configDir);
      keys = keyring.encrypted ? keyring.keys : undefined;
    } catch (e) {
      if (!isFsError(e, 'BAD_KEY')) throw e;
      this.warn(`rm-logs not read, nothing retired is deleted or skipped: ${e.message}`);
      return { all: new Map(), settled: new Map() };
    }
    const { chunks, problems } = await readRmLogs(this.ctx.syncDir, keys);
    for (const p of problems) this.warn(`${p.place}: ${p.message}`);
    const settleMs = this.ctx.rmLogSettleMs ?? rmLogSettleMsDefault;
    const settled: RmLogChunk[] = [];
    for (const chunk of chunks) {
      const st = await lstat(join(this.ctx.syncDir, chunk.relativePath)).catch(() => undefined);
      if (st !== undefined && this.now() - st.ctimeMs >= settleMs) settled.push(chunk);
    }
    return { all: deadArchives(chunks), settled: deadArchives(settled) };
  }

  /** Step 5. */
  async upload(dead: Retired): Promise<void> {
    const zips: TransferItem[] = [];
    const idxs: TransferItem[] = [];
    for (const [name, a] of this.local.archives) {
      if (a.zip === undefined || a.idx === undefined) continue; // being written, or being retired
      const r = this.remoteInv.archives.get(name);
      if (r?.zip !== undefined && r.idx !== undefined && r.zip === a.zip && r.idx === a.idx) continue;
      if (dead.has(name)) {
        this.report.skippedRetired++;
        continue;
      }
      if ((r?.zip !== undefined && r.zip !== a.zip) || (r?.idx !== undefined && r.idx !== a.idx)) {
        this.error(`archive ${name}: the server holds files of other sizes under its name (zip ${r.zip ?? '-'}/${a.zip}, idx ${r.idx ?? '-'}/${a.idx} bytes there/here); not replaced, not uploaded`);
        continue;
      }
      if (r?.zip === undefined) zips.push({ path: archiveFile(name, 'zip') });
      idxs.push({ path: archiveFile(name, 'idx'), after: archiveFile(name, 'zip') });
    }
    const small = this.missingFiles(this.local, this.remoteInv, 'on the server');
    const keys = keyCommitOrder(small.filter((p) => p.startsWith('keys/')));
    const phases = [zips, idxs, small.filter((p) => p.startsWith('rmlog/')).map((path) => ({ path })),
      keys.filter((p) => p !== 'keys/fs.json').map((path) => ({ path })), keys.filter((p) => p === 'keys/fs.json').map((path) => ({ path }))];
    const paths = phases.flat().map((i) => i.path);
    if (paths.length === 0) return;
    this.ctx.progress?.begin('up', paths.length, paths.reduce((s, p) => s + this.sizeOf(this.local, p), 0), (p) => this.sizeOf(this.local, p));
    const outcome = await this.ctx.remote.upload(this.ctx.syncDir, newTempName(this.ctx.boxid), phases, !this.rootExists, this.hooks);
    this.ctx.progress?.end();
    for (const p of outcome.skipped) this.warn(`${p}: not uploaded (gone locally, or its zip is not on the server)`);
    this.account(outcome, this.local, this.report.up, this.remoteInv);
  }

  /** Step 6. */
  async deleteOnServer(dead: Retired): Promise<void> {
    const whole = new Set([...this.remoteInv.archives.keys()].filter((n) => isWhole(this.remoteInv, n)));
    const deletable = new Set(deletableArchives(dead, whole));
    const names: string[] = [];
    for (const [name, d] of dead) {
      if (!d.boxids.has(this.ctx.boxid) || !this.remoteInv.archives.has(name)) continue;
      if (deletable.has(name)) names.push(name);
      else this.report.waitingForSuperseding++;
    }
    if (names.length === 0) return;
    const present = (part: ArchivePart): string[] => names.filter((n) => this.remoteInv.archives.get(n)![part] !== undefined).map((n) => archiveFile(n, part));
    await this.ctx.remote.delete([...present('idx'), ...present('zip')], this.hooks);
    for (const n of names) this.remoteInv.archives.delete(n);
    this.report.deletedRemote += names.length;
  }

  /** Step 7. */
  async downloadArchives(dead: Retired): Promise<void> {
    const zips: TransferItem[] = [];
    const idxs: TransferItem[] = [];
    const available = (s: string): boolean => isWhole(this.remoteInv, s) || isWhole(this.local, s);
    for (const [name, r] of this.remoteInv.archives) {
      if (r.zip === undefined || r.idx === undefined) continue; // being uploaded or deleted
      const l = this.local.archives.get(name);
      if (l?.zip !== undefined && l.idx !== undefined) continue;
      const d = dead.get(name);
      if (d !== undefined && [...d.supersededBy].every(available)) {
        this.report.skippedRetired++;
        continue;
      }
      if ((l?.zip !== undefined && l.zip !== r.zip) || (l?.idx !== undefined && l.idx !== r.idx)) {
        this.error(`archive ${name}: the sync dir holds files of other sizes under its name than the server; not replaced, not downloaded`);
        continue;
      }
      if (l?.zip === undefined) zips.push({ path: archiveFile(name, 'zip') });
      idxs.push({ path: archiveFile(name, 'idx'), after: archiveFile(name, 'zip') });
    }
    await this.download([zips, idxs]);
  }

  /** Step 8 (with the retirements of settled chunks only). */
  async deleteLocally(dead: Retired): Promise<void> {
    const whole = new Set([...this.local.archives.keys()].filter((n) => isWhole(this.local, n)));
    const deletable = new Set(deletableArchives(dead, whole));
    const names: string[] = [];
    for (const [name, d] of dead) {
      if (![...d.boxids].some((b) => b !== this.ctx.boxid) || !this.local.archives.has(name)) continue;
      if (deletable.has(name)) names.push(name);
      else this.report.waitingForSuperseding++;
    }
    await deleteLocalArchives(this.ctx.syncDir, names);
    for (const n of names) this.local.archives.delete(n);
    this.report.deletedLocal += names.length;
  }

  async cleanup(): Promise<void> {
    await rm(this.staging, { recursive: true, force: true });
  }
}

/** Runs the steps above once; never throws for a failed step (the report says what failed). */
export async function runOnce(ctx: RunContext): Promise<RunReport> {
  const run = new Run(ctx);
  const startMs = (ctx.nowMs ?? Date.now)();
  const wireBefore = ctx.remote.wire === undefined ? 0 : ctx.remote.wire.sentBytes + ctx.remote.wire.receivedBytes;
  try {
    await run.survey();
    await run.downloadSmallFiles();
    const retired = await run.readRetired();
    await run.upload(retired.all);
    await run.deleteOnServer(retired.all);
    await run.downloadArchives(retired.all);
    await run.deleteLocally(retired.settled);
  } catch (e) {
    ctx.progress?.end();
    if (ctx.signal.aborted) run.report.aborted = true;
    else run.error(e instanceof Error ? e.message : String(e));
  } finally {
    await run.cleanup().catch((e: unknown) => run.error(`removing the staging dir: ${String(e)}`));
  }
  const r = run.report;
  const endMs = (ctx.nowMs ?? Date.now)();
  r.finishedAt = new Date(endMs).toISOString();
  r.durationMs = endMs - startMs;
  r.ok = !r.aborted && r.errors.length === 0;
  if (ctx.remote.wire !== undefined) r.wireBytes = ctx.remote.wire.sentBytes + ctx.remote.wire.receivedBytes - wireBefore;
  return r;
}
