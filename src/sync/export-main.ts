/**
 * `zippy-export`: exports and history over a sync dir, read directly (no mount needed).
 *
 *   zippy-export [--zip] -o out.zip [--path sub] [--at time] [--json] <abs-sync-dir>   a standard zip
 *   zippy-export --zip [--path sub] [--at time] [--json] <abs-sync-dir>                a checkpoint in the sync dir
 *   zippy-export --versions <path> [--json] <abs-sync-dir>                             a file's versions
 *   zippy-export --cat <path> [--at time | --version id] <abs-sync-dir>                 one version's bytes to stdout
 *
 * The tree comes from a sync view (view.ts): the real engine merging the archives into a temporary
 * store, so it is exactly what a mount shows, conflict copies included. Exit codes: 0 ok, 1 done
 * with problems (each named on stderr: an unreadable archive left out, an entry a zip cannot hold),
 * 2 could not run (usage, no such sync dir or path, no key for an encrypted sync dir).
 */
import { randomBytes } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { type FileHandle, open, rename, unlink } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { FsError, isFsError } from '../errors.js';
import { fsyncDirectory } from './archive-store.js';
import { loadBoxid } from './boxid.js';
import { type Keyring, defaultConfigDir, loadKeyring } from './crypto/index.js';
import { exportTreeZip, readVersionBlocks, readViewFile, syncPathOf, type TreeZipReport, writeCheckpoint } from './export.js';
import { isoOfNs, listVersions, parseTimeNs, parseVersionId, type VersionEntry } from './history.js';
import { openSyncView, type SyncView } from './view.js';
import type { ZipSink } from './zipfile.js';

export const exportExit = { ok: 0, problems: 1, failed: 2 } as const;

const help = `Usage:
  zippy-export [--zip] -o <out.zip|-> [--path <sub>] [--at <time>] [--json] <abs-sync-dir>
  zippy-export --zip [--path <sub>] [--at <time>] [--json] <abs-sync-dir>
  zippy-export --versions <path> [--json] <abs-sync-dir>
  zippy-export --cat <path> [--at <time> | --version <id>] <abs-sync-dir>

Reads the sync dir directly (no mount needed) and merges its archives exactly as a mount does.

  -o, --output FILE  write a standard zip (deflate, zip64, Unix modes, mtimes, symlinks, empty
                     directories) to FILE (temp name, fsync, rename); '-' writes it to stdout
  --zip              without -o: publish a checkpoint into the sync dir, every visible version
                     with all its blocks, so a new machine can start from it alone (with -o the
                     flag may be left out)
  --path SUB         only this subtree (zip entries are relative to it; a file gives one entry)
  --at TIME          the tree as it was at TIME: archives published at or before it. TIME is unix
                     seconds (1764000000, 1764000000.25) or ISO 8601 (2026-11-22T23:10:00Z,
                     2026-11-22T23:10:00+01:00; 2026-11-22 = midnight UTC; a time without a
                     zone is local time)
  --versions PATH    list every version of PATH the archives hold: publish time, machine, size,
                     deleted or not, and its id (for --version)
  --cat PATH         write PATH's bytes to stdout: as it is now, at --at TIME, or the version --version ID
  --version ID       a version id from --versions (<counter>:<32 hex>)
  --level N          deflate level 0..9 (default 6)
  --json             print the result as JSON on stdout
  -h, --help         this text

Progress goes to stderr on a TTY. Exit codes: 0 ok, 1 done with problems (each named on stderr),
2 could not run.`;

class UsageError extends Error {}

interface Args {
  syncDir: string;
  output: string | undefined;
  subPath: string;
  asOfNs: bigint | undefined;
  versions: string | undefined;
  cat: string | undefined;
  version: string | undefined;
  level: number;
  json: boolean;
}

function parse(argv: string[]): Args | 'help' {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv, allowPositionals: true, strict: true,
      options: {
        zip: { type: 'boolean' }, output: { type: 'string', short: 'o' }, path: { type: 'string' }, at: { type: 'string' },
        versions: { type: 'string' }, cat: { type: 'string' }, version: { type: 'string' }, level: { type: 'string' },
        json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (e) {
    throw new UsageError(e instanceof Error ? e.message : String(e));
  }
  const v = parsed.values;
  if (v.help === true) return 'help';
  if (parsed.positionals.length !== 1) throw new UsageError(`expected one <abs-sync-dir>, got ${parsed.positionals.length} argument(s)`);
  const syncDir = parsed.positionals[0]!;
  if (!isAbsolute(syncDir)) throw new UsageError(`the sync dir must be an absolute path: ${syncDir}`);
  if (!existsSync(syncDir) || !statSync(syncDir).isDirectory()) throw new UsageError(`the sync dir does not exist or is not a directory: ${syncDir}`);
  const modes = [v.versions !== undefined, v.cat !== undefined, v.zip === true || v.output !== undefined].filter(Boolean).length;
  if (modes > 1) throw new UsageError('choose one of --zip/-o, --versions, --cat');
  // Publishing a checkpoint writes into the sync dir: only when asked for by name.
  if (modes === 0) throw new UsageError('nothing to do: --zip publishes a checkpoint, -o FILE writes a zip, --versions lists, --cat reads');
  if (v.version !== undefined && v.cat === undefined) throw new UsageError('--version goes with --cat');
  if (v.version !== undefined && v.at !== undefined) throw new UsageError('--version and --at exclude each other');
  if (v.versions !== undefined && (v.at !== undefined || v.path !== undefined)) throw new UsageError('--versions takes neither --at nor --path');
  const level = v.level === undefined ? 6 : Number(v.level);
  if (!Number.isInteger(level) || level < 0 || level > 9) throw new UsageError(`--level must be 0..9, got ${String(v.level)}`);
  let asOfNs: bigint | undefined;
  try {
    asOfNs = v.at === undefined ? undefined : parseTimeNs(v.at);
  } catch (e) {
    throw new UsageError(e instanceof Error ? e.message : String(e));
  }
  return {
    syncDir: resolve(syncDir), output: v.output, subPath: syncPathOf(v.path ?? ''), asOfNs,
    versions: v.versions === undefined ? undefined : syncPathOf(v.versions), cat: v.cat === undefined ? undefined : syncPathOf(v.cat),
    version: v.version, level, json: v.json === true,
  };
}

/** The keyring of an encrypted sync dir, undefined for a plain one; BAD_KEY when this machine has no key. */
function keyringOf(syncDir: string): Keyring | undefined {
  const result = loadKeyring(syncDir, defaultConfigDir());
  return result.encrypted ? result : undefined;
}

function progressLine(enabled: boolean, what: string): (done: number, bytes: number) => void {
  let last = 0;
  return (done, bytes) => {
    const now = Date.now();
    if (!enabled || now - last < 200) return;
    last = now;
    process.stderr.write(`\rzippy-export: ${done} ${what}, ${(bytes / 1048576).toFixed(1)} MiB`);
  };
}

/** A sink into a file handle, batched into writes of about 1 MiB. */
function fileSink(handle: FileHandle): { sink: ZipSink; flush: () => Promise<void> } {
  let batch: Buffer[] = [];
  let batchBytes = 0;
  const flush = async (): Promise<void> => {
    if (batchBytes === 0) return;
    const bytes = Buffer.concat(batch, batchBytes);
    batch = [];
    batchBytes = 0;
    for (let done = 0; done < bytes.length;) done += (await handle.write(bytes, done, bytes.length - done)).bytesWritten;
  };
  return {
    sink: async (chunk) => {
      batch.push(chunk);
      batchBytes += chunk.length;
      if (batchBytes >= 1024 * 1024) await flush();
    },
    flush,
  };
}

function stdoutSink(): ZipSink {
  return (chunk) => new Promise((resolvePromise, reject) => {
    process.stdout.write(chunk, (e) => (e === undefined || e === null ? resolvePromise() : reject(e)));
  });
}

/** `-o FILE`: the zip under a temporary name in the same directory, fsynced, renamed into place. */
async function exportToFile(view: SyncView, args: Args, target: string, tty: boolean): Promise<TreeZipReport> {
  const temp = join(dirname(target), `.${basename(target)}.tmp-${randomBytes(8).toString('hex')}`);
  const handle = await open(temp, 'wx', 0o644);
  try {
    const { sink, flush } = fileSink(handle);
    const report = await exportTreeZip(view, args.subPath, sink, { compressionLevel: args.level, progress: progressLine(tty, 'entries') });
    await flush();
    await handle.sync();
    await handle.close();
    await rename(temp, target);
    await fsyncDirectory(dirname(target));
    return report;
  } catch (e) {
    await handle.close().catch(() => undefined);
    await unlink(temp).catch(() => undefined);
    throw e;
  }
}

async function runExport(args: Args, tty: boolean, problems: string[]): Promise<Record<string, unknown>> {
  const keyring = keyringOf(args.syncDir);
  const boxid = args.output === undefined ? loadBoxid() : randomBytes(16).toString('hex');
  const view = await openSyncView({ syncDir: args.syncDir, boxid, ...(args.asOfNs === undefined ? {} : { asOfNs: args.asOfNs }) });
  try {
    problems.push(...view.warnings);
    const asOf = args.asOfNs === undefined ? {} : { at: isoOfNs(args.asOfNs), atNs: args.asOfNs.toString() };
    if (args.output !== undefined) {
      const target = args.output === '-' ? '-' : resolve(args.output);
      const report = target === '-'
        ? await exportTreeZip(view, args.subPath, stdoutSink(), { compressionLevel: args.level })
        : await exportToFile(view, args, target, tty);
      problems.push(...report.skipped);
      return { mode: 'zip', output: target, entries: report.entryCount, zipSizeBytes: report.sizeBytes, fileBytes: report.fileBytes, ...asOf };
    }
    if (view.engine.port.lookup(args.subPath) === undefined) throw new FsError('ENOENT', 'not in the tree (at that time)', args.subPath);
    const report = await writeCheckpoint(view, {
      syncDir: args.syncDir, boxid, keyring, subPath: args.subPath, compressionLevel: args.level, progress: progressLine(tty, 'versions'),
    });
    problems.push(...report.skipped);
    return {
      mode: 'checkpoint', archives: report.archives.map((a) => ({ name: a.name, zipSizeBytes: a.zipSizeBytes, idxSizeBytes: a.idxSizeBytes })),
      versions: report.versionCount, blocks: report.blockCount, ...asOf,
    };
  } finally {
    if (tty) process.stderr.write('\n');
    await view.close();
  }
}

function versionJson(v: VersionEntry): Record<string, unknown> {
  return {
    published: isoOfNs(v.publishedNs), publishedNs: v.publishedNs.toString(), mtime: isoOfNs(v.mtimeNs), mtimeNs: v.mtimeNs.toString(),
    machine: v.machine, version: v.version, base: v.base, type: v.type, sizeBytes: v.sizeBytes, deleted: v.deleted, archive: v.archive,
  };
}

function versionsText(path: string, versions: readonly VersionEntry[]): string {
  if (versions.length === 0) return `no versions of ${path}`;
  const lines = [`versions of ${path} (time = publish time, UTC):`, 'published                 machine   size        state    version'];
  for (const v of versions) {
    const state = v.deleted ? 'deleted' : v.type;
    lines.push(`${isoOfNs(v.publishedNs)}  ${v.machine.slice(0, 8)}  ${String(v.sizeBytes).padStart(10)}  ${state.padEnd(7)}  ${v.version}`);
  }
  return lines.join('\n');
}

async function runCat(args: Args, path: string): Promise<void> {
  const keyring = keyringOf(args.syncDir);
  const sink = stdoutSink();
  const stamp = args.version === undefined ? undefined : parseVersionId(args.version);
  if (args.version !== undefined && stamp === undefined) throw new UsageError(`--version must be <counter>:<32 hex>, got ${args.version}`);
  const view = await openSyncView({
    syncDir: args.syncDir, boxid: randomBytes(16).toString('hex'), ...(args.asOfNs === undefined ? {} : { asOfNs: args.asOfNs }),
  });
  try {
    if (stamp === undefined) {
      const file = readViewFile(view, path);
      for (let offset = 0; offset < file.sizeBytes; offset += 1024 * 1024) await sink(file.read(offset, Math.min(1024 * 1024, file.sizeBytes - offset)));
      return;
    }
    const { versions } = await listVersions(args.syncDir, path, keyring);
    const entry = versions.find((v) => v.stamp.counter === stamp.counter && v.stamp.boxid === stamp.boxid);
    if (entry === undefined) throw new FsError('ENOENT', `no version ${args.version} of this path`, path);
    if (entry.deleted) throw new FsError('ENOENT', `version ${args.version} is a deletion`, path);
    if (entry.type !== 'file') throw new FsError('EISDIR', `version ${args.version} is a ${entry.type}`, path);
    for (const block of readVersionBlocks(view, keyring?.keys, stamp, entry.sizeBytes, args.syncDir)) await sink(block);
  } finally {
    await view.close();
  }
}

/** Entry point: returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  let args: Args | 'help';
  try {
    args = parse(argv);
  } catch (e) {
    process.stderr.write(`zippy-export: ${e instanceof Error ? e.message : String(e)}\nTry 'zippy-export --help'.\n`);
    return exportExit.failed;
  }
  if (args === 'help') {
    process.stdout.write(`${help}\n`);
    return exportExit.ok;
  }
  const tty = process.stderr.isTTY === true && !args.json;
  const problems: string[] = [];
  try {
    let result: Record<string, unknown>;
    let text: string;
    if (args.versions !== undefined) {
      const listing = await listVersions(args.syncDir, args.versions, keyringOf(args.syncDir));
      problems.push(...listing.problems);
      result = { mode: 'versions', path: args.versions, versions: listing.versions.map(versionJson) };
      text = versionsText(args.versions, listing.versions);
    } else if (args.cat !== undefined) {
      await runCat(args, args.cat);
      return exportExit.ok;
    } else {
      result = await runExport(args, tty, problems);
      text = result['mode'] === 'zip'
        ? `exported ${String(result['entries'])} entries to ${String(result['output'])} (${String(result['zipSizeBytes'])} bytes)`
        : `published a checkpoint: ${(result['archives'] as { name: string }[]).map((a) => a.name).join(', ') || 'nothing to publish'} (${String(result['versions'])} versions, ${String(result['blocks'])} blocks)`;
    }
    for (const p of problems) process.stderr.write(`zippy-export: warning: ${p}\n`);
    const toStdout = !(result['mode'] === 'zip' && result['output'] === '-');
    if (toStdout) process.stdout.write(args.json ? `${JSON.stringify({ ok: problems.length === 0, ...result, problems }, null, 2)}\n` : `${text}\n`);
    return problems.length === 0 ? exportExit.ok : exportExit.problems;
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`zippy-export: ${e.message}\nTry 'zippy-export --help'.\n`);
      return exportExit.failed;
    }
    const message = isFsError(e) ? e.message : (e instanceof Error ? e.stack ?? e.message : String(e));
    process.stderr.write(`zippy-export: ${message}\n`);
    if (args.json) process.stdout.write(`${JSON.stringify({ ok: false, error: { code: isFsError(e) ? e.code : 'ERROR', message } }, null, 2)}\n`);
    return exportExit.failed;
  }
}

process.exitCode = await main(process.argv.slice(2));
