/**
 * rm-logs: how a machine tells every other machine (and the sync daemon) that archives are dead.
 * Format and rules: docs/FORMAT.md "rm-logs".
 *
 * The sync dir must never see a file modified in place, and the daemon never overwrites a file on
 * either side; yet an rm-log must grow. Both hold because `rmlog/<boxid>/` is a directory of
 * immutable chunks: appending is adding a new chunk `rmlog/<boxid>/<32 hex>.rm`, written under a
 * temporary name, fsynced and renamed (so a reader sees a chunk whole or not at all), and chunks
 * travel like archives (copied if absent, never replaced). The log of a box is the union of its
 * chunks; order does not matter (an entry names an archive, and an archive dies once).
 *
 * An entry names the dead archive, when it was retired, and the archives that superseded it: the
 * daemon deletes a dead archive on the server only once all of those are there, and a machine
 * deletes it locally only once all of those are local, so no step leaves a sync dir without an
 * archive its visible tree needs. In an encrypted sync dir each chunk is sealed with the
 * filesystem key and bound to its chunk name, so the server cannot forge or swap entries.
 */
import { mkdir, open, readdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { FsError, assert, isFsError } from '../errors.js';
import { fsyncDirectory, pathExists } from './archive-store.js';
import { crc64 } from './crc64.js';
import { openSealed, sealFile } from './crypto/index.js';
import { isArchiveName, isHex128, newArchiveName, newTempName } from './names.js';

export const rmLogDirName = 'rmlog';
export const rmChunkSuffix = '.rm';
const headerWord = 'zippy-rmlog';
export const rmLogFormatVersion = 1;
/** Entries in one chunk; a larger retirement is split into several chunks. */
export const rmChunkEntryCountMax = 65_536;
/** Superseding archives named by one entry. */
export const rmEntrySupersededByCountMax = 4096;
/** A chunk file larger than this is rejected unread (a full chunk of max entries is far below it). */
export const rmChunkSizeMaxBytes = 64 * 1024 * 1024;

export interface RmLogEntry {
  /** The dead archive (32 hex). */
  readonly archive: string;
  /** When the filesystem retired it (unix ms). */
  readonly retiredAtMs: number;
  /** Archives that must be present before `archive` may be deleted there (may be empty). */
  readonly supersededBy: readonly string[];
}

export interface RmLogChunk {
  readonly boxid: string;
  /** The chunk's name (32 hex, without the .rm suffix). */
  readonly chunk: string;
  /** Path relative to the sync dir: `rmlog/<boxid>/<chunk>.rm`. */
  readonly relativePath: string;
  readonly entries: readonly RmLogEntry[];
}

export interface RmLogProblem {
  readonly place: string;
  readonly message: string;
}

/** Sealing options for an encrypted sync dir (the keyring's current generation). */
export interface RmLogSealKey {
  readonly key: Uint8Array;
  readonly keyId: string;
}

/** Every key generation this machine holds (Keyring.keys), to open sealed chunks. */
export type RmLogOpenKeys = ReadonlyMap<string, Uint8Array>;

/** `<sync>/rmlog/<boxid>`. */
export function rmLogDir(syncDir: string, boxid: string): string {
  assert(isHex128(boxid), `not a boxid: ${JSON.stringify(boxid)}`);
  return join(syncDir, rmLogDirName, boxid);
}

/** True when `name` is a finished chunk file name (`<32 hex>.rm`). */
export function isRmChunkName(name: string): boolean {
  return name.endsWith(rmChunkSuffix) && isArchiveName(name.slice(0, -rmChunkSuffix.length));
}

function checkEntry(entry: RmLogEntry): void {
  assert(isArchiveName(entry.archive), `rm-log entry names no archive: ${JSON.stringify(entry.archive)}`);
  assert(Number.isSafeInteger(entry.retiredAtMs) && entry.retiredAtMs >= 0, `bad retiredAtMs ${entry.retiredAtMs}`);
  assert(entry.supersededBy.length <= rmEntrySupersededByCountMax, `${entry.supersededBy.length} superseding archives > ${rmEntrySupersededByCountMax}`);
  for (const s of entry.supersededBy) assert(isArchiveName(s) && s !== entry.archive, `bad superseding archive ${JSON.stringify(s)}`);
}

/** The plaintext of one chunk (docs/FORMAT.md "rm-logs"). */
export function encodeRmChunk(boxid: string, entries: readonly RmLogEntry[]): Buffer {
  assert(isHex128(boxid), `not a boxid: ${JSON.stringify(boxid)}`);
  assert(entries.length > 0 && entries.length <= rmChunkEntryCountMax, `${entries.length} entries in one chunk (1..${rmChunkEntryCountMax})`);
  const lines = [`${headerWord} ${rmLogFormatVersion} ${boxid}`];
  for (const entry of entries) {
    checkEntry(entry);
    lines.push(`${entry.archive} ${entry.retiredAtMs} ${entry.supersededBy.length === 0 ? '-' : entry.supersededBy.join(',')}`);
  }
  const body = Buffer.from(`${lines.join('\n')}\n`, 'utf8');
  const trailer = Buffer.from(`crc64 ${crc64(body).toString(16).padStart(16, '0')}\n`, 'ascii');
  return Buffer.concat([body, trailer]);
}

/** Decodes and checks a chunk's plaintext; FsError BAD_ARCHIVE naming `place` on any defect. */
export function decodeRmChunk(bytes: Uint8Array, expectBoxid: string, place: string): RmLogEntry[] {
  const fail = (message: string): never => {
    throw new FsError('BAD_ARCHIVE', `rm-log chunk: ${message}`, place);
  };
  const text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (text.length === 0 || text[text.length - 1] !== 0x0a) fail('does not end with a newline (truncated?)');
  const trailerStart = text.lastIndexOf(0x0a, text.length - 2) + 1;
  const trailer = /^crc64 ([0-9a-f]{16})\n$/.exec(text.subarray(trailerStart).toString('ascii'));
  if (trailer === null) fail('no crc64 trailer line (truncated?)');
  const body = text.subarray(0, trailerStart);
  const actual = crc64(body).toString(16).padStart(16, '0');
  if (actual !== trailer![1]) fail(`crc64 ${actual} does not match the trailer ${trailer![1]}`);
  const lines = body.toString('utf8').split('\n');
  lines.pop(); // the body ends with a newline
  const header = (lines.shift() ?? '').split(' ');
  if (header[0] !== headerWord) fail(`first line is not "${headerWord} <version> <boxid>"`);
  if (header[1] !== String(rmLogFormatVersion)) fail(`format version ${header[1]}, this build reads ${rmLogFormatVersion}`);
  if (header[2] !== expectBoxid) fail(`written for box ${header[2]}, found under rmlog/${expectBoxid}`);
  if (lines.length === 0 || lines.length > rmChunkEntryCountMax) fail(`${lines.length} entries (1..${rmChunkEntryCountMax})`);
  return lines.map((line, i) => {
    const m = /^([0-9a-f]{32}) (\d{1,15}) (-|[0-9a-f]{32}(?:,[0-9a-f]{32})*)$/.exec(line);
    if (m === null) return fail(`entry ${i + 1} is malformed: ${JSON.stringify(line.slice(0, 120))}`);
    const supersededBy = m[3] === '-' ? [] : m[3]!.split(',');
    if (supersededBy.length > rmEntrySupersededByCountMax) fail(`entry ${i + 1} names ${supersededBy.length} superseding archives`);
    if (supersededBy.includes(m[1]!)) fail(`entry ${i + 1}: archive ${m[1]} supersedes itself`);
    return { archive: m[1]!, retiredAtMs: Number(m[2]), supersededBy };
  });
}


/**
 * Appends `entries` to this box's rm-log: one new chunk per rmChunkEntryCountMax entries, each
 * written under a temporary name, fsynced, renamed into place (never over an existing file), and
 * the directory fsynced. Sealed with `seal` in an encrypted sync dir. Returns the chunk paths.
 */
export async function appendRmLog(syncDir: string, boxid: string, entries: readonly RmLogEntry[],
  seal?: RmLogSealKey): Promise<string[]> {
  const dir = rmLogDir(syncDir, boxid);
  await mkdir(dir, { recursive: true });
  const written: string[] = [];
  for (let start = 0; start < entries.length; start += rmChunkEntryCountMax) {
    const chunk = newArchiveName();
    const plain = encodeRmChunk(boxid, entries.slice(start, start + rmChunkEntryCountMax));
    const bytes = seal === undefined ? plain : sealFile(plain, { key: seal.key, keyId: seal.keyId, archiveName: chunk, kind: 'rm' });
    const finalPath = join(dir, `${chunk}${rmChunkSuffix}`);
    const tempPath = join(dir, newTempName('rm'));
    const handle = await open(tempPath, 'wx');
    try {
      await handle.writeFile(bytes);
      await handle.sync();
    } finally {
      await handle.close();
    }
    if (await pathExists(finalPath)) {
      await rm(tempPath, { force: true });
      throw new FsError('EEXIST', 'refusing to overwrite an rm-log chunk', finalPath);
    }
    await rename(tempPath, finalPath);
    written.push(finalPath);
  }
  await fsyncDirectory(dir);
  await fsyncDirectory(join(syncDir, rmLogDirName));
  return written;
}

async function listDir(path: string): Promise<string[]> {
  try {
    return await readdir(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}

async function readChunk(syncDir: string, boxid: string, name: string, keys: RmLogOpenKeys | undefined): Promise<RmLogChunk> {
  const relativePath = join(rmLogDirName, boxid, name);
  const path = join(syncDir, relativePath);
  const chunk = name.slice(0, -rmChunkSuffix.length);
  const handle = await open(path, 'r');
  let bytes: Buffer;
  try {
    const sizeBytes = (await handle.stat()).size;
    if (sizeBytes > rmChunkSizeMaxBytes) throw new FsError('BAD_ARCHIVE', `rm-log chunk of ${sizeBytes} bytes > the limit ${rmChunkSizeMaxBytes}`, path);
    bytes = await handle.readFile();
  } finally {
    await handle.close();
  }
  const plain = keys === undefined ? bytes : openSealed(bytes, { keys, archiveName: chunk, kind: 'rm', place: path, syncDir });
  return { boxid, chunk, relativePath, entries: decodeRmChunk(plain, boxid, path) };
}

/**
 * Reads every finished chunk of every box's rm-log (temporary files are ignored). `keys` must be
 * given in an encrypted sync dir. A chunk that cannot be read, opened or decoded is reported in
 * `problems` (naming the file) and skipped: it may still be arriving, or be damaged; its entries
 * only ever allow deletions, so skipping one is always safe.
 */
export async function readRmLogs(syncDir: string, keys?: RmLogOpenKeys): Promise<{ chunks: RmLogChunk[]; problems: RmLogProblem[] }> {
  const chunks: RmLogChunk[] = [];
  const problems: RmLogProblem[] = [];
  for (const boxid of (await listDir(join(syncDir, rmLogDirName))).sort()) {
    if (!isHex128(boxid)) continue;
    for (const name of (await listDir(rmLogDir(syncDir, boxid))).sort()) {
      if (!isRmChunkName(name)) continue;
      try {
        chunks.push(await readChunk(syncDir, boxid, name, keys));
      } catch (e) {
        if (!isFsError(e) && (e as NodeJS.ErrnoException).code === undefined) throw e;
        problems.push({ place: join(syncDir, rmLogDirName, boxid, name), message: e instanceof Error ? e.message : String(e) });
      }
    }
  }
  return { chunks, problems };
}

/** Every dead archive named by any chunk, with the union of what supersedes it. */
export function deadArchives(chunks: readonly RmLogChunk[]): Map<string, { retiredAtMs: number; supersededBy: Set<string>; boxids: Set<string> }> {
  const dead = new Map<string, { retiredAtMs: number; supersededBy: Set<string>; boxids: Set<string> }>();
  for (const chunk of chunks) {
    for (const entry of chunk.entries) {
      let d = dead.get(entry.archive);
      if (d === undefined) {
        d = { retiredAtMs: entry.retiredAtMs, supersededBy: new Set(), boxids: new Set() };
        dead.set(entry.archive, d);
      }
      d.retiredAtMs = Math.min(d.retiredAtMs, entry.retiredAtMs);
      for (const s of entry.supersededBy) d.supersededBy.add(s);
      d.boxids.add(chunk.boxid);
    }
  }
  return dead;
}

/**
 * The dead archives a sync dir may delete now (the rule of docs/FORMAT.md "rm-logs", for the
 * daemon and tests): present, named by an rm-log, and every superseding archive satisfied — present,
 * or itself dead with its own superseding archives satisfied (a chain of retirements: what the
 * first one held moved on to the last, which is here).
 */
export function deletableArchives(dead: ReturnType<typeof deadArchives>, present: ReadonlySet<string>): string[] {
  const memo = new Map<string, boolean>();
  const satisfied = (name: string, depth: number): boolean => {
    if (present.has(name) && !dead.has(name)) return true;
    const d = dead.get(name);
    if (d === undefined || depth > 64) return false;
    const known = memo.get(name);
    if (known !== undefined) return known;
    memo.set(name, false); // a cycle proves nothing
    const ok = [...d.supersededBy].every((s) => satisfied(s, depth + 1));
    memo.set(name, ok);
    return ok;
  };
  return [...dead.keys()].filter((name) => present.has(name) && satisfied(name, 0)).sort();
}
