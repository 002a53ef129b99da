/**
 * The rsync remote: a local directory, or `user@host:path` over ssh.
 *
 * Copies go through rsync (`--files-from`, `--ignore-existing`, never `--delete`, never
 * `--partial` or `--inplace`, so rsync itself only ever writes its own dot-named temp files);
 * everything else — committing uploads out of the temp dir, deleting, removing temp dirs — is a
 * short POSIX sh script, run by `sh -s` locally or `ssh <host> sh -s` remotely, with the script
 * on stdin (no command-line length limit). A commit is `ln temp real` (link(2) fails rather than
 * replace, atomically), falling back to `mv -n` where the server's file system has no hard links.
 * Listing is one `rsync -r --list-only` filtered to the top level, rmlog/ and keys/; rsync reads the
 * top level before it descends, and that order matters: an archive deleted from the server had its
 * rm-log chunk there before, so a listing that misses the archive sees the chunk.
 */
import { FsError } from '../../errors.js';
import { addToInventory, emptyInventory } from './inventory.js';
import {
  type CommitOutcome, type Remote, type RemoteListing, type RemoteSpec, type RemoteTemp, type TransferHooks, type TransferItem, type WireBytes,
} from './remote.js';
import { tempNamePrefix } from '../names.js';
import { listingEntryCountMax, transferBatchFileCountMax } from './limits.js';
import { type ChildResult, runChild, shellQuote, splitCommand, stderrTail } from './tools.js';

const listLinePattern = /^([-dlpscb][-rwxsStT]{9})\s+([\d,]+)\s+(\d{4})\/(\d{2})\/(\d{2}) (\d{2}):(\d{2}):(\d{2}) (.+)$/;

interface ListedEntry {
  readonly path: string;
  readonly isDir: boolean;
  readonly sizeBytes: number;
  readonly mtimeMs: number;
}

/** Parses `rsync --list-only` output (sizes with or without digit grouping, local times). */
export function parseRsyncListing(text: string): ListedEntry[] {
  const entries: ListedEntry[] = [];
  for (const line of text.split('\n')) {
    const m = listLinePattern.exec(line);
    if (m === null) continue;
    if (entries.length >= listingEntryCountMax) throw new FsError('LIMIT', `server listing has more than ${listingEntryCountMax} entries`);
    const [, perms, size, y, mo, d, h, mi, s, name] = m;
    const isLink = perms!.startsWith('l');
    const path = isLink ? name!.replace(/ -> .*$/, '') : name!;
    if (path === '.' || isLink) continue;
    entries.push({
      path, isDir: perms!.startsWith('d'), sizeBytes: Number(size!.replace(/,/g, '')),
      mtimeMs: new Date(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s)).getTime(),
    });
  }
  return entries;
}

/** Sums `Total bytes sent/received` of an rsync `--stats` output into `wire`. */
function addWireBytes(wire: WireBytes, stdout: string): void {
  const sent = /Total bytes sent: ([\d,]+)/.exec(stdout);
  const received = /Total bytes received: ([\d,]+)/.exec(stdout);
  if (sent !== null) wire.sentBytes += Number(sent[1]!.replace(/,/g, ''));
  if (received !== null) wire.receivedBytes += Number(received[1]!.replace(/,/g, ''));
}

function batches<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

function checkSafePath(path: string): void {
  if (!/^[A-Za-z0-9._/-]+$/.test(path) || path.split('/').some((p) => p === '' || p === '.' || p === '..')) {
    throw new FsError('ASSERT', `refusing to pass an unexpected path to the server: ${JSON.stringify(path)}`);
  }
}

/**
 * sh functions that commit files of the temp dir `$T` in batches of one directory: `a path after`
 * adds a file whose prerequisite `after` (if any) is in place, else prints `S path` (skipped); `r dir`
 * hard-links the batch into `dir` with one `ln` (which fails per file on an existing name and goes
 * on with the others), then prints for each file P (placed: the real name is now our file),
 * E (existed: left alone) or F (failed), trying `mv -n` where hard links are not supported. Paths
 * are checked to hold no shell-special characters, so the unquoted lists split only on spaces.
 */
const commitFunctions = `L=; N=
a() { if [ -f "$T/$1" ] && { [ -z "$2" ] || [ -f "$2" ]; }; then L="$L $T/$1"; N="$N $1"; else echo "S $1"; fi; }
r() {
  if [ -z "$N" ]; then return; fi
  [ "$1" = . ] || mkdir -p -- "$1"
  ln -- $L "$1/" 2>/dev/null
  for f in $N; do
    if [ "$T/$f" -ef "$f" ]; then echo "P $f"
    elif [ -e "$f" ]; then echo "E $f"
    elif mv -n -- "$T/$f" "$f" 2>/dev/null && [ ! -e "$T/$f" ]; then echo "P $f"
    else echo "F $f"; fi
  done
  L=; N=
}`;

/** Lines of the commit script for `phases`: per phase, per directory, batches of at most 500 files. */
function commitLines(phases: readonly (readonly TransferItem[])[]): string[] {
  const lines: string[] = [];
  for (const phase of phases) {
    const byDir = new Map<string, TransferItem[]>();
    for (const item of phase) {
      checkSafePath(item.path);
      if (item.after !== undefined) checkSafePath(item.after);
      const dir = item.path.includes('/') ? item.path.slice(0, item.path.lastIndexOf('/')) : '.';
      byDir.set(dir, [...(byDir.get(dir) ?? []), item]);
    }
    for (const [dir, items] of byDir) {
      for (const batch of batches(items, 500)) {
        for (const item of batch) lines.push(`a ${item.path} ${item.after ?? ''}`);
        lines.push(`r ${dir}`);
      }
    }
  }
  return lines;
}

export class RsyncRemote implements Remote {
  readonly kind = 'rsync';
  readonly description: string;
  readonly programs: readonly string[];
  readonly wire: WireBytes = { sentBytes: 0, receivedBytes: 0 };
  private readonly host: string | undefined;
  private readonly path: string;
  private readonly sshArgv: string[];
  private readonly sshCommand: string;

  constructor(spec: Extract<RemoteSpec, { kind: 'rsync' }>, sshCommand: string) {
    this.description = spec.text;
    this.host = spec.host;
    this.path = spec.path;
    this.sshCommand = sshCommand;
    this.sshArgv = splitCommand(sshCommand);
    if (this.host !== undefined && this.sshArgv.length === 0) throw new FsError('BAD_INPUT', 'the ssh command is empty');
    this.programs = this.host === undefined ? ['rsync', 'sh'] : ['rsync', this.sshArgv[0]!];
  }

  /** rsync's name for `rel` below the server dir (a trailing `/` for directories). */
  private url(rel: string): string {
    const base = this.path === '' ? '' : `${this.path}/`;
    return this.host === undefined ? `${base}${rel}` : `${this.host}:${base}${rel}`;
  }

  private rsyncArgv(): string[] {
    return ['rsync', '--no-h', ...(this.host === undefined ? [] : ['-e', this.sshCommand])];
  }

  /** Runs a POSIX sh script in the server dir's machine (stdin, so it may be long). */
  private async shell(script: string, hooks: TransferHooks): Promise<ChildResult> {
    const argv = this.host === undefined ? ['sh', '-s'] : [...this.sshArgv, this.host, 'sh -s'];
    const result = await runChild(argv, { input: script, signal: hooks.signal });
    if (result.code === 255 && this.host !== undefined) throw new FsError('EIO', `ssh to ${this.host} failed: ${stderrTail(result)}`, this.description);
    return result;
  }

  private cdLine(): string {
    return `cd -- ${shellQuote(this.path === '' ? '.' : this.path)} || exit 3`;
  }

  private async rsyncList(args: string[], hooks: TransferHooks): Promise<{ entries: ListedEntry[]; exists: boolean }> {
    const result = await runChild([...this.rsyncArgv(), '--list-only', ...args, this.url('')], { signal: hooks.signal });
    if (result.code === 0) return { entries: parseRsyncListing(result.stdout), exists: true };
    if (result.code === 23 && /No such file or directory/.test(result.stderr)) return { entries: [], exists: false };
    throw new FsError('EIO', `listing the server failed: ${stderrTail(result)}`, this.description);
  }

  async list(hooks: TransferHooks): Promise<RemoteListing> {
    const inventory = emptyInventory();
    const temps: RemoteTemp[] = [];
    // One recursive listing (one connection): rsync reads the top directory completely before it
    // descends into rmlog/ and keys/, which keeps the order the run relies on.
    const listed = await this.rsyncList(['-r', '--include=/*.zip', '--include=/*.idx', `--include=/${tempNamePrefix}*`, `--exclude=/${tempNamePrefix}*/**`,
      '--include=/rmlog/***', '--include=/keys/***', '--exclude=*'], hooks);
    for (const e of listed.entries) {
      if (e.path.startsWith(tempNamePrefix)) {
        if (!e.path.includes('/')) temps.push({ name: e.path, mtimeMs: e.mtimeMs });
      } else if (!e.isDir) addToInventory(inventory, e.path, e.sizeBytes);
    }
    return { inventory, temps, exists: listed.exists };
  }

  private async copy(fromUrl: string, toUrl: string, paths: readonly string[], hooks: TransferHooks): Promise<void> {
    for (const batch of batches(paths, transferBatchFileCountMax)) {
      batch.forEach(checkSafePath);
      const wanted = new Set(batch);
      const argv = [...this.rsyncArgv(), '--files-from=-', '--ignore-existing', '--stats', '--out-format=%n', fromUrl, toUrl];
      const result = await runChild(argv, {
        input: `${batch.join('\n')}\n`, signal: hooks.signal,
        onStdoutLine: (line) => {
          if (wanted.has(line)) hooks.onFileDone?.(line);
        },
      });
      addWireBytes(this.wire, result.stdout);
      // 24: some source files vanished (an archive retired locally while we copied): the commit skips them.
      if (result.code !== 0 && result.code !== 24) throw new FsError('EIO', `rsync failed: ${stderrTail(result)}`, this.description);
    }
  }

  async upload(localDir: string, tempName: string, phases: readonly (readonly TransferItem[])[], createRoot: boolean, hooks: TransferHooks): Promise<CommitOutcome> {
    if (!tempName.startsWith(tempNamePrefix)) throw new FsError('ASSERT', `upload temp dir ${tempName} is not a temp name`);
    const outcome: CommitOutcome = { placed: [], existed: [], skipped: [] };
    const items = phases.flat();
    if (items.length === 0) return outcome;
    if (createRoot) {
      const made = await this.shell(`mkdir -p -- ${shellQuote(this.path === '' ? '.' : this.path)}`, hooks);
      if (made.code !== 0) throw new FsError('EIO', `cannot create the server dir: ${stderrTail(made)}`, this.description);
    }
    await this.copy(`${localDir}/`, this.url(`${tempName}/`), items.map((i) => i.path), hooks);
    checkSafePath(tempName);
    const lines = [this.cdLine(), `T=${tempName}`, commitFunctions, ...commitLines(phases)];
    lines.push('rm -rf -- "$T"');
    const result = await this.shell(`${lines.join('\n')}\n`, hooks);
    for (const line of result.stdout.split('\n')) {
      const m = /^([PESF]) (.+)$/.exec(line);
      if (m === null) continue;
      if (m[1] === 'P') outcome.placed.push(m[2]!);
      else if (m[1] === 'E') outcome.existed.push(m[2]!);
      else outcome.skipped.push(m[2]!);
    }
    if (result.code !== 0) throw new FsError('EIO', `committing the upload on the server failed: ${stderrTail(result)}`, this.description);
    return outcome;
  }

  async download(paths: readonly string[], stagingDir: string, hooks: TransferHooks): Promise<void> {
    if (paths.length === 0) return;
    await this.copy(this.url(''), `${stagingDir}/`, paths, hooks);
  }

  async delete(paths: readonly string[], hooks: TransferHooks): Promise<void> {
    if (paths.length === 0) return;
    paths.forEach(checkSafePath);
    // One rm per batch keeps the order (callers list every idx before any zip) at a fork per 500 files.
    const lines = [this.cdLine(), ...batches(paths, 500).map((b) => `rm -f -- ${b.map(shellQuote).join(' ')} || exit 4`)];
    const result = await this.shell(`${lines.join('\n')}\n`, hooks);
    if (result.code !== 0) throw new FsError('EIO', `deleting on the server failed: ${stderrTail(result)}`, this.description);
  }

  async removeTemp(name: string, hooks: TransferHooks): Promise<void> {
    if (!name.startsWith(tempNamePrefix) || name.includes('/')) throw new FsError('ASSERT', `not a temp name: ${name}`);
    checkSafePath(name);
    const result = await this.shell(`${this.cdLine()}\nrm -rf -- ${shellQuote(name)}\n`, hooks);
    if (result.code !== 0) throw new FsError('EIO', `removing ${name} on the server failed: ${stderrTail(result)}`, this.description);
  }
}
