/**
 * The daemon's pid file, `${XDG_CACHE_HOME:-~/.cache}/zippy-fs/sync.pid` (decimal pid and a
 * newline). The mount reads it to send SIGUSR1 after each publish; `zippy-sync now` reads it to do
 * the same. Rules:
 *
 * - A pid file naming a live zippy-sync process (checked through /proc/<pid>/cmdline, not only
 *   kill(pid, 0): after a reboot the pid may belong to anything) makes a second daemon refuse.
 * - A pid file naming anything else is stale and is replaced.
 * - It is created exclusively (O_EXCL), so two daemons starting at once cannot both win; a stale
 *   file is unlinked first and creation retried, then the content is read back to confirm.
 * - The daemon removes it on exit, only while it still names the daemon.
 */
import { readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { basename, join } from 'node:path';

export const pidFileName = 'sync.pid';
export const statusFileName = 'sync-status.json';

/** `${XDG_CACHE_HOME:-~/.cache}/zippy-fs`. */
export function daemonCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const xdg = env['XDG_CACHE_HOME'];
  return join(xdg !== undefined && xdg !== '' ? xdg : join(homedir(), '.cache'), 'zippy-fs');
}

/** The pid in the file, or undefined when there is no file or it holds no pid. */
export function readPidFile(path: string): number | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  const pid = Number(text.trim());
  return Number.isSafeInteger(pid) && pid > 1 ? pid : undefined;
}

/** True when `argv` (a /proc cmdline) is a zippy-sync process: the bin script or the compiled main. */
export function isZippySyncCommand(argv: readonly string[]): boolean {
  return argv.slice(0, 3).some((arg) => /^zippy-sync(\.js)?$/.test(basename(arg)) || /\/sync\/daemon\/main\.js$/.test(arg));
}

/** True when `pid` is a live zippy-sync process (its /proc cmdline says so). */
export function isLiveZippySync(pid: number): boolean {
  let cmdline: string;
  try {
    cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return false; // no such process (or not ours to see)
  }
  return isZippySyncCommand(cmdline.split('\0').filter((a) => a !== ''));
}

export type PidFileClaim = { readonly ok: true; readonly replacedStalePid: number | undefined } | { readonly ok: false; readonly pid: number };

/** Claims the pid file for `ownPid`, or reports the live zippy-sync that holds it. */
export function claimPidFile(path: string, ownPid: number = process.pid): PidFileClaim {
  let replacedStalePid: number | undefined;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      writeFileSync(path, `${ownPid}\n`, { flag: 'wx', mode: 0o644 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const holder = readPidFile(path);
      if (holder !== undefined && holder !== ownPid && isLiveZippySync(holder)) return { ok: false, pid: holder };
      replacedStalePid = holder;
      try {
        unlinkSync(path);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
      continue;
    }
    const written = readPidFile(path);
    if (written === ownPid) return { ok: true, replacedStalePid };
    if (written !== undefined && isLiveZippySync(written)) return { ok: false, pid: written };
  }
  const holder = readPidFile(path);
  return holder !== undefined && holder !== ownPid ? { ok: false, pid: holder } : { ok: true, replacedStalePid };
}

/** Removes the pid file if it still names `ownPid`. */
export function releasePidFile(path: string, ownPid: number = process.pid): void {
  if (readPidFile(path) !== ownPid) return;
  try {
    unlinkSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
}
