/**
 * `zippy-sync`: the sync daemon's CLI (design section 6, docs/ARCHITECTURE.md "Sync daemon").
 *
 *   zippy-sync [--remote R] [--interval 5m] [--rmlog-settle 2m] [--once] [--json] [--ssh CMD] <abs-sync-dir>
 *   zippy-sync now
 *   zippy-sync status [--json]
 *
 * Lifecycle of the daemon:
 * 1. Parse flags; read ${XDG_CONFIG_HOME:-~/.config}/zippy-fs/sync.json for what flags leave out.
 * 2. Check the programs the remote needs (exit 2 naming the missing one).
 * 3. Install the signal handlers, then claim the pid file (exit 3 if a live zippy-sync holds it).
 * 4. Run at once, then every interval; SIGUSR1 starts a run at once, or, during a run, one more
 *    run right after it (any number of signals during a run coalesce into that one).
 * 5. SIGINT/SIGTERM abort the transfer in progress (its children get SIGTERM; only temp names are
 *    left, which the next run removes), write the status, remove the pid file, exit 0. A second
 *    signal, or stopGraceMs without the run ending, exits at once.
 *
 * Exit codes: 0 ok; 1 a run failed (--once), no daemon to signal (now), last run failed or no
 * status (status); 2 usage, or a program the remote needs is missing; 3 another zippy-sync runs.
 */
import { mkdirSync, readFileSync, statSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { parseArgs } from 'node:util';
import { FsError, isFsError } from '../../errors.js';
import { loadBoxid } from '../boxid.js';
import { defaultConfigDir } from '../crypto/index.js';
import { intervalMsDefault, intervalMsMax, intervalMsMin, rmLogSettleMsDefault, stopGraceMs } from './limits.js';
import { claimPidFile, daemonCacheDir, isLiveZippySync, pidFileName, readPidFile, releasePidFile } from './pidfile.js';
import { createProgress } from './progress.js';
import { parseRemoteSpec, type Remote } from './remote.js';
import { RcloneRemote } from './remote-rclone.js';
import { RsyncRemote } from './remote-rsync.js';
import { type RunReport, runOnce } from './run.js';
import { addRun, emptyTotals, readStatus, type SyncStatus, writeStatus } from './status.js';
import { missingToolMessage } from './tools.js';

export const syncExit = { ok: 0, failed: 1, usage: 2, busy: 3 } as const;

const help = `Usage:
  zippy-sync [--remote R] [--interval 5m] [--rmlog-settle 2m] [--once] [--json] [--ssh CMD] <abs-sync-dir>
  zippy-sync now
  zippy-sync status [--json]

Keeps the sync dir in step with a server: uploads new archives, downloads other machines'
archives, and deletes what rm-logs retire (never anything else; never overwrites).

Remotes (--remote, or "remote" in \${XDG_CONFIG_HOME:-~/.config}/zippy-fs/sync.json):
  /abs/path                 rsync to a local directory
  user@host:path            rsync over ssh (the path is relative to the login's home unless absolute)
  rclone:<name>:<path>      any rclone remote

Options:
  --remote R         the server (see above)
  --interval T       time between runs: 90s, 5m, 1h (default 5m); SIGUSR1 or "zippy-sync now" runs at once
  --rmlog-settle T   another machine's rm-log chunk deletes archives here only after it has been in
                     the sync dir this long (default 2m: the mounts' GC rescues blocks first; 0 = at once)
  --once             one run, then exit (exit 1 if it failed)
  --json             print each run's report (daemon, --once) or the status as JSON on stdout
  --ssh CMD          ssh command for user@host remotes (default: env ZIPPY_SSH, "ssh" in sync.json, else ssh)
  -h, --help         this text

Files: pid \${XDG_CACHE_HOME:-~/.cache}/zippy-fs/sync.pid, status .../zippy-fs/sync-status.json.
Exit codes: 0 ok, 1 failed, 2 usage or missing program, 3 another zippy-sync is running.`;

class UsageError extends Error {}

interface DaemonOptions {
  syncDir: string;
  remote: Remote;
  intervalMs: number;
  rmLogSettleMs: number;
  once: boolean;
  json: boolean;
}

/** `90s`, `5m`, `1h`, `500ms`, or a number of seconds. */
export function parseInterval(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (m === null) throw new UsageError(`bad --interval ${JSON.stringify(text)}: use e.g. 30s, 5m, 1h`);
  const unitMs = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? 's') as 'ms' | 's' | 'm' | 'h'];
  const ms = Math.round(Number(m[1]) * unitMs);
  if (ms < intervalMsMin || ms > intervalMsMax) throw new UsageError(`--interval must be between ${intervalMsMin / 1000} s and ${intervalMsMax / 3_600_000} h`);
  return ms;
}

interface SyncConfig {
  remote?: string;
  interval?: string;
  ssh?: string;
}

/** `${XDG_CONFIG_HOME:-~/.config}/zippy-fs/sync.json`, or {} when absent. */
function readConfig(): SyncConfig {
  const path = join(defaultConfigDir(), 'sync.json');
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw e;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new UsageError(`${path} is not valid JSON`);
  }
  const config: SyncConfig = {};
  for (const key of ['remote', 'interval', 'ssh'] as const) {
    const value = (parsed as Record<string, unknown>)[key];
    if (value === undefined) continue;
    if (typeof value !== 'string') throw new UsageError(`${path}: "${key}" must be a string`);
    config[key] = value;
  }
  return config;
}

function makeRemote(text: string, sshCommand: string): Remote {
  let spec;
  try {
    spec = parseRemoteSpec(text);
  } catch (e) {
    throw new UsageError(e instanceof Error ? e.message.replace(/^BAD_INPUT: /, '') : String(e));
  }
  return spec.kind === 'rclone' ? new RcloneRemote(spec) : new RsyncRemote(spec, sshCommand);
}

/** --rmlog-settle: like --interval, but 0 allowed. */
function parseSettle(text: string): number {
  return /^0+(?:ms|s|m|h)?$/.test(text.trim()) ? 0 : parseInterval(text);
}

function daemonOptions(values: { remote?: string | undefined; interval?: string | undefined; once?: boolean | undefined; json?: boolean | undefined; ssh?: string | undefined;
  'rmlog-settle'?: string | undefined },
  positionals: string[]): DaemonOptions {
  if (positionals.length !== 1) throw new UsageError('expected exactly one <abs-sync-dir>');
  const syncDir = positionals[0]!;
  if (!isAbsolute(syncDir)) throw new UsageError(`the sync dir must be an absolute path, got ${syncDir}`);
  let isDir = false;
  try {
    isDir = statSync(syncDir).isDirectory();
  } catch {
    // reported below
  }
  if (!isDir) throw new UsageError(`the sync dir ${syncDir} does not exist or is not a directory`);
  const config = readConfig();
  const remoteText = values.remote ?? config.remote;
  if (remoteText === undefined) throw new UsageError('no remote: give --remote or set "remote" in sync.json');
  const envSsh = process.env['ZIPPY_SSH'];
  const sshCommand = values.ssh ?? (envSsh !== undefined && envSsh !== '' ? envSsh : undefined) ?? config.ssh ?? 'ssh';
  const interval = values.interval ?? config.interval;
  return {
    syncDir: syncDir.replace(/(.)\/+$/, '$1'), remote: makeRemote(remoteText, sshCommand),
    intervalMs: interval === undefined ? intervalMsDefault : parseInterval(interval), once: values.once === true, json: values.json === true,
    rmLogSettleMs: values['rmlog-settle'] === undefined ? rmLogSettleMsDefault : parseSettle(values['rmlog-settle']),
  };
}

function mib(bytes: number): string {
  return `${(bytes / (1024 * 1024)).toFixed(2)} MiB`;
}

/** One line about a run, for stderr (daemon) or stdout (--once). */
export function summaryLine(r: RunReport): string {
  const parts = [
    `up ${r.up.archives} archives (${mib(r.up.bytes)})`, `down ${r.down.archives} archives (${mib(r.down.bytes)})`,
    `deleted ${r.deletedRemote} on the server, ${r.deletedLocal} here`,
  ];
  if (r.waitingForSuperseding > 0) parts.push(`${r.waitingForSuperseding} retired archives waiting for their successors`);
  const state = r.aborted ? 'aborted' : r.ok ? 'ok' : `FAILED: ${r.errors[0] ?? ''}${r.errors.length > 1 ? ` (+${r.errors.length - 1} more)` : ''}`;
  return `zippy-sync: ${parts.join(', ')} in ${(r.durationMs / 1000).toFixed(1)} s: ${state}`;
}

async function runDaemon(o: DaemonOptions): Promise<number> {
  const missing = missingToolMessage(o.remote.programs);
  if (missing !== undefined) {
    process.stderr.write(`zippy-sync: ${missing}\n`);
    return syncExit.usage;
  }
  const cacheDir = daemonCacheDir();
  mkdirSync(cacheDir, { recursive: true });
  const pidPath = join(cacheDir, pidFileName);
  const configDir = defaultConfigDir();
  const boxid = loadBoxid(join(configDir, 'boxid'));
  const controller = new AbortController();
  let running = false;
  let pending = false;
  let stopping = false;
  let timer: NodeJS.Timeout | undefined;
  let finish: (code: number) => void = () => undefined;
  const done = new Promise<number>((resolvePromise) => {
    finish = resolvePromise;
  });
  const status: SyncStatus = {
    format: 'zippy-sync-status', version: 1, pid: process.pid, syncDir: o.syncDir, remote: o.remote.description, boxid,
    state: 'idle', updatedAt: new Date().toISOString(), nextRunAt: null, lastRun: null, lastError: null, totals: emptyTotals(),
  };
  const saveStatus = (): void => {
    status.updatedAt = new Date().toISOString();
    try {
      writeStatus(cacheDir, status);
    } catch (e) {
      process.stderr.write(`zippy-sync: cannot write the status file: ${String(e)}\n`);
    }
  };
  let lastExit: number = syncExit.ok;
  const stop = (): void => {
    stopping = true; // a SIGUSR1 arriving while the process winds down starts nothing
    if (timer !== undefined) clearTimeout(timer);
    status.state = 'stopped';
    status.nextRunAt = null;
    saveStatus();
    releasePidFile(pidPath);
    finish(o.once ? lastExit : syncExit.ok);
  };
  const cycle = async (): Promise<void> => {
    running = true;
    do {
      pending = false;
      status.state = 'running';
      saveStatus();
      const progress = createProgress();
      const report = await runOnce({
        syncDir: o.syncDir, remote: o.remote, boxid, configDir, signal: controller.signal, rmLogSettleMs: o.rmLogSettleMs, ...(progress === undefined ? {} : { progress }),
      });
      addRun(status.totals, report);
      status.lastRun = report;
      if (!report.ok && !report.aborted) status.lastError = { at: report.finishedAt, message: report.errors[0] ?? 'failed' };
      lastExit = report.ok ? syncExit.ok : syncExit.failed;
      if (o.json) process.stdout.write(`${JSON.stringify(report)}\n`);
      else if (o.once) process.stdout.write(`${summaryLine(report)}\n`);
      else if (!report.ok || report.up.files + report.down.files + report.deletedLocal + report.deletedRemote > 0) process.stderr.write(`${summaryLine(report)}\n`);
    } while (pending && !stopping && !o.once);
    running = false;
    if (stopping || o.once) {
      stop();
      return;
    }
    status.state = 'idle';
    status.nextRunAt = new Date(Date.now() + o.intervalMs).toISOString();
    saveStatus();
    timer = setTimeout(trigger, o.intervalMs);
  };
  const trigger = (): void => {
    if (stopping) return;
    if (running) {
      pending = true;
      return;
    }
    if (timer !== undefined) clearTimeout(timer);
    void cycle();
  };
  const onStopSignal = (signal: NodeJS.Signals): void => {
    if (stopping) {
      releasePidFile(pidPath);
      process.exit(128 + (signal === 'SIGINT' ? 2 : 15));
    }
    stopping = true;
    controller.abort(new FsError('EIO', `stopped by ${signal}`));
    if (!running) stop();
    setTimeout(() => {
      process.stderr.write(`zippy-sync: the run did not end within ${stopGraceMs} ms of ${signal}; exiting\n`);
      releasePidFile(pidPath);
      process.exit(syncExit.failed);
    }, stopGraceMs).unref();
  };
  // Handlers before the pid file: a mount may signal as soon as the file names us (SIGUSR1 would kill).
  process.on('SIGUSR1', trigger);
  process.on('SIGINT', onStopSignal);
  process.on('SIGTERM', onStopSignal);
  const claim = claimPidFile(pidPath);
  if (!claim.ok) {
    process.stderr.write(`zippy-sync: another zippy-sync is running (pid ${claim.pid}, pid file ${pidPath}); use "zippy-sync now" to make it run, or stop it first\n`);
    return syncExit.busy;
  }
  if (claim.replacedStalePid !== undefined) process.stderr.write(`zippy-sync: replaced a stale pid file (pid ${claim.replacedStalePid} is not a running zippy-sync)\n`);
  if (!o.once) process.stderr.write(`zippy-sync: syncing ${o.syncDir} with ${o.remote.description} every ${o.intervalMs / 1000} s (pid ${process.pid})\n`);
  trigger();
  return done;
}

function signalDaemon(): number {
  const pidPath = join(daemonCacheDir(), pidFileName);
  const pid = readPidFile(pidPath);
  if (pid === undefined || !isLiveZippySync(pid)) {
    process.stderr.write(`zippy-sync now: no zippy-sync is running (${pid === undefined ? `no pid file at ${pidPath}` : `pid ${pid} in ${pidPath} is not a running zippy-sync`})\n`);
    return syncExit.failed;
  }
  process.kill(pid, 'SIGUSR1');
  process.stdout.write(`zippy-sync now: asked zippy-sync (pid ${pid}) to run\n`);
  return syncExit.ok;
}

function statusText(s: SyncStatus, running: boolean): string {
  const lines = [`zippy-sync: ${running ? `running (pid ${s.pid}), ${s.state}${s.nextRunAt === null ? '' : `, next run at ${s.nextRunAt}`}` : 'not running'}`,
    `sync dir:  ${s.syncDir}`, `remote:    ${s.remote}`];
  const r = s.lastRun;
  if (r === null) lines.push('last run:  none yet');
  else {
    lines.push(`last run:  ${r.startedAt} (${(r.durationMs / 1000).toFixed(1)} s): ${r.aborted ? 'aborted' : r.ok ? 'ok' : 'FAILED'}`);
    lines.push(`  up:      ${r.up.archives} archives, ${mib(r.up.bytes)} (${r.up.files} files: ${r.up.chunks} rm-log chunks, ${r.up.keyFiles} key files)`);
    lines.push(`  down:    ${r.down.archives} archives, ${mib(r.down.bytes)} (${r.down.files} files: ${r.down.chunks} rm-log chunks, ${r.down.keyFiles} key files)`);
    lines.push(`  deleted: ${r.deletedRemote} archives on the server, ${r.deletedLocal} here; ${r.waitingForSuperseding} retired archives wait for their successors`);
    for (const e of r.errors) lines.push(`  error:   ${e}`);
    for (const w of r.warnings.slice(0, 10)) lines.push(`  warning: ${w}`);
  }
  if (s.lastError !== null) lines.push(`last error: ${s.lastError.at}: ${s.lastError.message}`);
  const t = s.totals;
  lines.push(`since start: ${t.runs} runs (${t.failedRuns} failed), up ${t.archivesUp} archives ${mib(t.bytesUp)}, down ${t.archivesDown} archives ${mib(t.bytesDown)}, deleted ${t.deletedRemote} on the server and ${t.deletedLocal} here`);
  return `${lines.join('\n')}\n`;
}

function showStatus(json: boolean): number {
  const cacheDir = daemonCacheDir();
  const status = readStatus(cacheDir);
  const pid = readPidFile(join(cacheDir, pidFileName));
  const running = pid !== undefined && status !== undefined && pid === status.pid && isLiveZippySync(pid);
  if (status === undefined) {
    if (json) process.stdout.write(`${JSON.stringify({ running: false, status: null })}\n`);
    else process.stdout.write(`zippy-sync: no status yet (${join(cacheDir, 'sync-status.json')} does not exist)\n`);
    return syncExit.failed;
  }
  if (json) process.stdout.write(`${JSON.stringify({ running, ...status }, null, 2)}\n`);
  else process.stdout.write(statusText(status, running));
  return status.lastRun === null || status.lastRun.ok || status.lastRun.aborted ? syncExit.ok : syncExit.failed;
}

export async function main(argv: string[]): Promise<number> {
  try {
    const { values, positionals } = parseArgs({
      args: argv, allowPositionals: true, strict: true,
      options: {
        remote: { type: 'string' }, interval: { type: 'string' }, 'rmlog-settle': { type: 'string' }, once: { type: 'boolean' }, json: { type: 'boolean' },
        ssh: { type: 'string' }, help: { type: 'boolean', short: 'h' },
      },
    });
    if (values.help === true) {
      process.stdout.write(`${help}\n`);
      return syncExit.ok;
    }
    if (positionals[0] === 'now') {
      if (positionals.length !== 1) throw new UsageError('"now" takes no arguments');
      return signalDaemon();
    }
    if (positionals[0] === 'status') {
      if (positionals.length !== 1) throw new UsageError('"status" takes no arguments');
      return showStatus(values.json === true);
    }
    return await runDaemon(daemonOptions(values, positionals));
  } catch (e) {
    if (e instanceof UsageError || (e as NodeJS.ErrnoException).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION'
      || (e as NodeJS.ErrnoException).code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' || (e as NodeJS.ErrnoException).code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') {
      process.stderr.write(`zippy-sync: ${(e as Error).message}\n(zippy-sync --help for usage)\n`);
      return syncExit.usage;
    }
    process.stderr.write(`zippy-sync: ${isFsError(e) ? e.message : String((e as Error)?.stack ?? e)}\n`);
    return syncExit.failed;
  }
}

process.exitCode = await main(process.argv.slice(2));
