/**
 * The rclone remote: any rclone remote (`rclone:<name>:<path>`; S3, SFTP, WebDAV, local…).
 *
 * Uploads: `rclone copy --ignore-existing --files-from -` into the temp dir `.tmp-<boxid>-<16 hex>/`
 * of the server dir, then one server-side `rclone moveto --ignore-existing` per file into its real
 * name (an existing file is left alone), phase by phase, then `rclone purge` of the temp dir.
 * rclone before 1.63 writes local and SFTP uploads in place, so without the temp dir a killed
 * upload would leave a partial file under an archive's name; `rclone move` of a whole batch is not
 * possible because the temp dir lies inside the destination (rclone refuses overlapping remotes).
 * Where the backend's moves are not atomic renames (object stores copy then delete), a reader
 * still never sees a partial object: an object store only shows a PUT or copy once it is whole.
 * Downloads: `rclone copy --files-from -` into a local staging dir. Deletes: `rclone deletefile`
 * per file. Listing: `rclone lsf`, the top level first, then rmlog/ and keys/.
 */
import { FsError } from '../../errors.js';
import { tempNamePrefix } from '../names.js';
import { addToInventory, emptyInventory } from './inventory.js';
import { listingEntryCountMax, transferBatchFileCountMax } from './limits.js';
import {
  type CommitOutcome, type Remote, type RemoteListing, type RemoteSpec, type RemoteTemp, type TransferHooks, type TransferItem,
} from './remote.js';
import { type ChildResult, runChild, stderrTail } from './tools.js';

/** Server-side moves run at once (each is one short rclone process). */
const moveConcurrency = 4;

interface LsfEntry {
  readonly path: string;
  readonly isDir: boolean;
  readonly sizeBytes: number;
  readonly mtimeMs: number;
}

/** Parses `rclone lsf --format tsp --separator '|'` output. */
export function parseLsf(text: string): LsfEntry[] {
  const entries: LsfEntry[] = [];
  for (const line of text.split('\n')) {
    const m = /^(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})\|(-?\d+)\|(.+)$/.exec(line);
    if (m === null) continue;
    if (entries.length >= listingEntryCountMax) throw new FsError('LIMIT', `server listing has more than ${listingEntryCountMax} entries`);
    const isDir = m[8]!.endsWith('/');
    entries.push({
      path: isDir ? m[8]!.slice(0, -1) : m[8]!, isDir, sizeBytes: Number(m[7]),
      mtimeMs: new Date(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6])).getTime(),
    });
  }
  return entries;
}

export class RcloneRemote implements Remote {
  readonly kind = 'rclone';
  readonly description: string;
  readonly programs: readonly string[] = ['rclone'];
  readonly wire = undefined;
  private readonly target: string;

  constructor(spec: Extract<RemoteSpec, { kind: 'rclone' }>) {
    this.description = spec.text;
    this.target = spec.target;
  }

  private at(rel: string): string {
    if (rel === '') return this.target;
    return this.target.endsWith(':') ? `${this.target}${rel}` : `${this.target}/${rel}`;
  }

  private async rclone(args: string[], hooks: TransferHooks, input?: string): Promise<ChildResult> {
    return runChild(['rclone', ...args], {
      signal: hooks.signal, ...(input === undefined ? {} : { input }),
      onStderrLine: (line) => {
        const m = /INFO\s*:\s*(.+?): Copied/.exec(line);
        if (m !== null) hooks.onFileDone?.(m[1]!);
      },
    });
  }

  private async lsf(args: string[], hooks: TransferHooks): Promise<{ entries: LsfEntry[]; exists: boolean }> {
    const result = await this.rclone(['lsf', '--format', 'tsp', '--separator', '|', ...args], hooks);
    if (result.code === 0) return { entries: parseLsf(result.stdout), exists: true };
    if (result.code === 3 && /directory not found/.test(result.stderr)) return { entries: [], exists: false };
    throw new FsError('EIO', `listing the server failed: ${stderrTail(result)}`, this.description);
  }

  async list(hooks: TransferHooks): Promise<RemoteListing> {
    const inventory = emptyInventory();
    const temps: RemoteTemp[] = [];
    const top = await this.lsf(['--max-depth', '1', this.at('')], hooks);
    for (const e of top.entries) {
      if (e.path.startsWith(tempNamePrefix)) temps.push({ name: e.path, mtimeMs: e.mtimeMs });
      else if (!e.isDir) addToInventory(inventory, e.path, e.sizeBytes);
    }
    if (top.exists) {
      const tree = await this.lsf(['-R', '--files-only', '--include', '/rmlog/**', '--include', '/keys/**', this.at('')], hooks);
      for (const e of tree.entries) addToInventory(inventory, e.path, e.sizeBytes);
    }
    return { inventory, temps, exists: top.exists };
  }

  private async copy(from: string, to: string, paths: readonly string[], hooks: TransferHooks): Promise<void> {
    for (let i = 0; i < paths.length; i += transferBatchFileCountMax) {
      const batch = paths.slice(i, i + transferBatchFileCountMax);
      const result = await this.rclone(['copy', '--ignore-existing', '--no-traverse', '-v', '--files-from', '-', from, to], hooks, `${batch.join('\n')}\n`);
      if (result.code !== 0) throw new FsError('EIO', `rclone copy failed: ${stderrTail(result)}`, this.description);
    }
  }

  /** Moves one file of the temp dir into place; true when moved, false when the name was taken. */
  private async moveIntoPlace(tempName: string, path: string, hooks: TransferHooks): Promise<boolean> {
    const result = await this.rclone(['moveto', '--ignore-existing', '-v', this.at(`${tempName}/${path}`), this.at(path)], hooks);
    if (result.code !== 0) throw new FsError('EIO', `rclone moveto ${path} failed: ${stderrTail(result)}`, this.description);
    return /: Moved|: Copied/.test(result.stderr);
  }

  async upload(localDir: string, tempName: string, phases: readonly (readonly TransferItem[])[], _createRoot: boolean, hooks: TransferHooks): Promise<CommitOutcome> {
    if (!tempName.startsWith(tempNamePrefix)) throw new FsError('ASSERT', `upload temp dir ${tempName} is not a temp name`);
    const outcome: CommitOutcome = { placed: [], existed: [], skipped: [] };
    const items = phases.flat();
    if (items.length === 0) return outcome;
    await this.copy(localDir, this.at(tempName), items.map((i) => i.path), hooks);
    const arrived = new Set((await this.lsf(['-R', '--files-only', this.at(tempName)], hooks)).entries.map((e) => e.path));
    const inPlace = new Set<string>();
    const uploaded = new Set(items.map((i) => i.path));
    for (const phase of phases) {
      const ready = phase.filter((item) => arrived.has(item.path)
        && (item.after === undefined || inPlace.has(item.after) || !uploaded.has(item.after)));
      for (const item of phase) if (!ready.includes(item)) outcome.skipped.push(item.path);
      for (let i = 0; i < ready.length; i += moveConcurrency) {
        const group = ready.slice(i, i + moveConcurrency);
        const moved = await Promise.all(group.map((item) => this.moveIntoPlace(tempName, item.path, hooks)));
        group.forEach((item, k) => {
          (moved[k] === true ? outcome.placed : outcome.existed).push(item.path);
          inPlace.add(item.path);
        });
      }
    }
    await this.removeTemp(tempName, hooks);
    return outcome;
  }

  async download(paths: readonly string[], stagingDir: string, hooks: TransferHooks): Promise<void> {
    if (paths.length === 0) return;
    await this.copy(this.at(''), stagingDir, paths, hooks);
  }

  async delete(paths: readonly string[], hooks: TransferHooks): Promise<void> {
    for (const path of paths) {
      const result = await this.rclone(['deletefile', this.at(path)], hooks);
      if (result.code !== 0 && !/not found/.test(result.stderr)) {
        throw new FsError('EIO', `rclone deletefile ${path} failed: ${stderrTail(result)}`, this.description);
      }
    }
  }

  async removeTemp(name: string, hooks: TransferHooks): Promise<void> {
    if (!name.startsWith(tempNamePrefix) || name.includes('/')) throw new FsError('ASSERT', `not a temp name: ${name}`);
    const result = await this.rclone(['purge', this.at(name)], hooks);
    if (result.code !== 0 && !/not found/.test(result.stderr)) {
      // A temp file rather than a dir (never written by this daemon, but removable the same way).
      const file = await this.rclone(['deletefile', this.at(name)], hooks);
      if (file.code !== 0) throw new FsError('EIO', `removing ${name} on the server failed: ${stderrTail(result)}`, this.description);
    }
  }
}
