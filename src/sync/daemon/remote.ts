/**
 * The server side of zippy-sync: a small interface every remote implements (list, upload,
 * download, delete, removeTemp), how a remote is named on the command line, and the rules every
 * implementation keeps:
 *
 * 1. Nothing on the server is ever replaced. An upload goes to a fresh temporary directory
 *    `.tmp-<boxid>-<16 hex>/` at the top of the server dir, under the files' real names; only
 *    then is each file moved to its real place, one by one, with an operation that does not
 *    replace (a hard link on an rsync server, `--ignore-existing` moves on rclone). A transfer
 *    killed half-way therefore leaves at most a partial file inside a temp dir, never under an
 *    archive's name, and the next run removes the temp dir.
 * 2. Files become visible in the order given: every zip before any idx, and an idx only when its
 *    zip is in place (`after`), then rm-log chunks, then key files (keys/fs.json last).
 * 3. Deletion happens only through `delete`, which the run calls with idx files before zips.
 */
import { isAbsolute } from 'node:path';
import { FsError } from '../../errors.js';
import type { Inventory } from './inventory.js';

/** One file to upload: a path relative to the sync dir; `after` must be at its real name first. */
export interface TransferItem {
  readonly path: string;
  readonly after?: string;
}

/** What became of the uploaded files. */
export interface CommitOutcome {
  /** Moved into place by this upload. */
  readonly placed: string[];
  /** Already present under the real name: left alone (never replaced). */
  readonly existed: string[];
  /** Not transferred (vanished locally) or waiting for a prerequisite that is absent. */
  readonly skipped: string[];
}

export interface RemoteTemp {
  readonly name: string;
  readonly mtimeMs: number;
}

export interface RemoteListing {
  readonly inventory: Inventory;
  /** Temporary directories and files at the top of the server dir. */
  readonly temps: RemoteTemp[];
  /** False when the server dir does not exist yet (an upload creates it). */
  readonly exists: boolean;
}

export interface TransferHooks {
  readonly signal: AbortSignal;
  /** Called once for each file as it finishes transferring (progress). */
  readonly onFileDone?: (path: string) => void;
}

/** Bytes an rsync remote reported on the wire (`--stats`), summed over its transfers. */
export interface WireBytes {
  sentBytes: number;
  receivedBytes: number;
}

export interface Remote {
  readonly kind: 'rsync' | 'rclone';
  /** The remote as the user named it, for messages and the status file. */
  readonly description: string;
  /** Programs this remote needs on PATH (checked before the first run). */
  readonly programs: readonly string[];
  /** Bytes on the wire so far, when the transport reports them. */
  readonly wire: WireBytes | undefined;
  /** Lists the top level (archives, temp dirs) first, then rmlog/ and keys/. */
  list(hooks: TransferHooks): Promise<RemoteListing>;
  /**
   * Uploads `phases` (paths relative to `localDir`) through the temp dir `tempName`; commits phase
   * by phase, in order, never replacing; removes the temp dir. `createRoot` makes the server dir first.
   */
  upload(localDir: string, tempName: string, phases: readonly (readonly TransferItem[])[], createRoot: boolean, hooks: TransferHooks): Promise<CommitOutcome>;
  /** Copies `paths` from the server into the local directory `stagingDir` (created). */
  download(paths: readonly string[], stagingDir: string, hooks: TransferHooks): Promise<void>;
  /** Deletes `paths` on the server in the given order (missing files are not an error). */
  delete(paths: readonly string[], hooks: TransferHooks): Promise<void>;
  /** Removes a temp dir (or file) at the top of the server dir; `name` starts with `.tmp-`. */
  removeTemp(name: string, hooks: TransferHooks): Promise<void>;
}

export type RemoteSpec =
  | { readonly kind: 'rsync'; readonly host: string | undefined; readonly path: string; readonly text: string }
  | { readonly kind: 'rclone'; readonly target: string; readonly text: string };

/**
 * Parses a remote as given to --remote or in sync.json:
 * `/abs/path` or `rsync:/abs/path` (rsync to a local directory), `user@host:path` or
 * `rsync:user@host:path` (rsync over ssh; a relative path is below the login's home),
 * `rclone:<name>:<path>` (any rclone remote). FsError BAD_INPUT otherwise.
 */
export function parseRemoteSpec(text: string): RemoteSpec {
  const bad = (why: string): never => {
    throw new FsError('BAD_INPUT', `bad remote ${JSON.stringify(text)}: ${why}`);
  };
  if (text.startsWith('rclone:')) {
    const target = text.slice('rclone:'.length);
    if (!/^[^:/\s][^:]*:/.test(target)) bad('expected rclone:<remote-name>:<path>');
    return { kind: 'rclone', target: target.replace(/\/+$/, ''), text };
  }
  const body = text.startsWith('rsync:') ? text.slice('rsync:'.length) : text;
  if (body === '') bad('empty');
  if (body.includes('::') || body.startsWith('rsync://')) bad('rsync daemon (host::module) remotes are not supported; use user@host:path over ssh');
  if (isAbsolute(body)) return { kind: 'rsync', host: undefined, path: body.replace(/(.)\/+$/, '$1'), text };
  const m = /^([^/:\s]+):(.*)$/.exec(body);
  if (m === null) return bad('expected an absolute local path, user@host:path, or rclone:<remote>:<path>');
  return { kind: 'rsync', host: m[1]!, path: m[2]!.replace(/(.)\/+$/, '$1'), text };
}

/** Name of a temp dir of this box on the server or in the sync dir: `.tmp-<boxid>-<16 hex>`. */
export function isOwnTempName(name: string, boxid: string): boolean {
  return new RegExp(`^\\.tmp-${boxid}-[0-9a-f]{16}$`).test(name);
}
