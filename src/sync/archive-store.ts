/**
 * The sync directory's file protocol: how an archive (`<name>.zip` + `<name>.idx`) comes into
 * existence, and how a reader tells finished archives from everything else in the directory.
 *
 * Write protocol (writeArchive), in order:
 *   1. Write the zip under a temporary name `.tmp-<32 hex>.zip`, fsync it.
 *   2. Rename it to `<name>.zip`; fsync the directory (the zip is durable before any idx names it).
 *   3. Encode the idx (checked), decode it back (the paired check), write it under
 *      `.tmp-<32 hex>.idx`, fsync it.
 *   4. Rename it to `<name>.idx` (the commit point); fsync the directory.
 * A failure before step 4 removes what this call created (temp files, and the zip, which no idx
 * names yet). Nothing is ever modified in place or overwritten: a target that exists is EEXIST.
 *
 * Reader rules (scanSyncDir): an archive is complete when `<name>.idx` decodes (magic, version,
 * limits, CRC64 trailer), its header names `<name>`, and `<name>.zip` exists with exactly the size
 * the idx records. Anything else with an archive name is incomplete (reported, to retry later: a
 * writer or a transfer may still be at work). Names starting with '.' (our temp files, rsync's) are
 * ignored, as are directories (rmlog/, keys/), symlinks, and files that are neither `.zip` nor `.idx`.
 * Other `*.zip` files are plain zips, mounted read-only by the caller.
 *
 * Removal (not done here) must go the other way: idx first, then zip, so no reader ever sees an
 * idx whose zip is gone for good.
 */
import { type Dirent } from 'node:fs';
import { type FileHandle, lstat, open, readdir, rename, stat, unlink } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { FsError, isFsError } from '../errors.js';
import { type Idx, type IdxHeader, decodeIdx, encodeIdx, idxHeaderSizeBytes, idxTrailerSizeBytes } from './idx.js';
import { idxSizeMaxBytes, scanConcurrencyMax, syncDirEntryCountMax } from './limits.js';
import { isArchiveName, isTempName, newTempName } from './names.js';

export const zipSuffix = '.zip';
export const idxSuffix = '.idx';

/** Paths of an archive's two files. */
export function archivePaths(syncDir: string, name: string): { zipPath: string; idxPath: string } {
  return { zipPath: join(syncDir, name + zipSuffix), idxPath: join(syncDir, name + idxSuffix) };
}

/** Where the zip comes from: bytes in memory, or a callback that writes the file at `tempPath`. */
export type ZipSource =
  | { readonly zipBytes: Uint8Array }
  | { readonly writeZip: (tempPath: string) => Promise<void> };

export type WriteArchiveInput = ZipSource & {
  /** The archive name (32 hex, see newArchiveName); the idx header must carry the same. */
  readonly name: string;
  /**
   * The idx to commit, or a function that makes it once the zip is durable (given the zip's size,
   * which the idx header must record). A function lets a callback-written zip's block table reach
   * the idx.
   */
  readonly idx: Idx | ((zipSizeBytes: number) => Idx);
  /** Encrypted sync dirs: turns the checked idx bytes into the bytes written (sealed). */
  readonly sealIdx?: (idxBytes: Uint8Array) => Uint8Array;
};

export interface WrittenArchive {
  readonly name: string;
  readonly zipPath: string;
  readonly idxPath: string;
  readonly zipSizeBytes: number;
  readonly idxSizeBytes: number;
}

async function fsyncPath(path: string, flags: string): Promise<void> {
  const handle = await open(path, flags);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Makes a directory's entries (renames, creations) durable. */
export async function fsyncDirectory(dir: string): Promise<void> {
  await fsyncPath(dir, 'r');
}

async function writeAll(handle: FileHandle, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.length) {
    const { bytesWritten } = await handle.write(bytes, done, bytes.length - done);
    done += bytesWritten;
  }
}

/** Creates `path` (which must not exist), writes `bytes`, fsyncs and closes it. */
async function writeNewFileDurably(path: string, bytes: Uint8Array): Promise<void> {
  const handle = await open(path, 'wx');
  try {
    await writeAll(handle, bytes);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** True when `path` exists (lstat: a dangling symlink exists); other errors than ENOENT throw. */
export async function pathExists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
}

async function mustNotExist(path: string): Promise<void> {
  try {
    await lstat(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  throw new FsError('EEXIST', 'refusing to overwrite an archive file', path);
}

/** Step 1-2: the zip under a temp name, durable, then renamed into place; returns its size. */
async function placeZip(syncDir: string, zipPath: string, source: ZipSource, created: string[]): Promise<number> {
  const tempPath = join(syncDir, newTempName('zip'));
  created.push(tempPath);
  if ('zipBytes' in source) {
    await writeNewFileDurably(tempPath, source.zipBytes);
  } else {
    await source.writeZip(tempPath);
    // The callback may or may not have fsynced; fsync through our own descriptor either way.
    await fsyncPath(tempPath, 'r+');
  }
  const sizeBytes = (await stat(tempPath)).size;
  await rename(tempPath, zipPath);
  created[created.indexOf(tempPath)] = zipPath;
  await fsyncDirectory(syncDir);
  return sizeBytes;
}

/** Step 3: the idx bytes, checked both ways before anything is written. */
function encodeCommittedIdx(name: string, idx: Idx, zipSizeBytes: number): Uint8Array {
  const place = `idx ${name}`;
  if (idx.header.archiveName !== name) {
    throw new FsError('ASSERT', `idx header names archive ${idx.header.archiveName}, writing ${name}`, place);
  }
  if (idx.header.zipSizeBytes !== zipSizeBytes) {
    throw new FsError('ASSERT', `idx header records a zip of ${idx.header.zipSizeBytes} bytes, the zip has ${zipSizeBytes}`, place);
  }
  const bytes = encodeIdx(idx);
  decodeIdx(bytes, `${place} (just encoded)`);
  return bytes;
}

/**
 * Writes one archive into `syncDir` by the protocol above and returns its paths and sizes. Throws
 * EEXIST if either target exists, BAD_INPUT if the idx does not check, ASSERT if the idx does not
 * describe this archive; on any failure before the commit point nothing of this call remains.
 */
export async function writeArchive(syncDir: string, input: WriteArchiveInput): Promise<WrittenArchive> {
  const { name } = input;
  if (!isArchiveName(name)) throw new FsError('BAD_INPUT', `archive name ${JSON.stringify(name)} is not 32 lowercase hex`, syncDir);
  const { zipPath, idxPath } = archivePaths(syncDir, name);
  await mustNotExist(zipPath);
  await mustNotExist(idxPath);
  const created: string[] = [];
  try {
    const zipSizeBytes = await placeZip(syncDir, zipPath, input, created);
    const idx = typeof input.idx === 'function' ? input.idx(zipSizeBytes) : input.idx;
    const plainIdxBytes = encodeCommittedIdx(name, idx, zipSizeBytes);
    const idxBytes = input.sealIdx === undefined ? plainIdxBytes : input.sealIdx(plainIdxBytes);
    const tempIdxPath = join(syncDir, newTempName('idx'));
    created.push(tempIdxPath);
    await writeNewFileDurably(tempIdxPath, idxBytes);
    await mustNotExist(idxPath);
    await rename(tempIdxPath, idxPath);
    created.length = 0; // committed: from here on the archive is others' to read, never ours to remove
    await fsyncDirectory(syncDir);
    return { name, zipPath, idxPath, zipSizeBytes, idxSizeBytes: idxBytes.length };
  } catch (e) {
    for (const path of created) await unlink(path).catch(() => undefined);
    throw e;
  }
}

/**
 * Reads and decodes one idx file. FsError BAD_ARCHIVE (naming the file) when it is unreadable,
 * too large or too small (checked before reading), fails to decode, or when its header names a
 * different archive than its file name.
 */
export async function readIdx(idxPath: string, readBytes?: IdxBytesReader): Promise<Idx> {
  let bytes: Uint8Array;
  if (readBytes !== undefined) {
    bytes = await readBytes(idxPath, basename(idxPath, idxSuffix));
  } else try {
    const handle = await open(idxPath, 'r');
    try {
      const sizeBytes = (await handle.stat()).size;
      const minBytes = idxHeaderSizeBytes + idxTrailerSizeBytes;
      if (sizeBytes > idxSizeMaxBytes) throw new FsError('BAD_ARCHIVE', `${sizeBytes} bytes > the limit ${idxSizeMaxBytes}`, idxPath);
      if (sizeBytes < minBytes) throw new FsError('BAD_ARCHIVE', `${sizeBytes} bytes, shorter than the minimum ${minBytes}`, idxPath);
      bytes = Buffer.alloc(sizeBytes);
      let done = 0;
      while (done < sizeBytes) {
        const { bytesRead } = await handle.read(bytes, done, sizeBytes - done, done);
        if (bytesRead === 0) throw new FsError('BAD_ARCHIVE', `file shrank while read: ${done} of ${sizeBytes} bytes`, idxPath);
        done += bytesRead;
      }
    } finally {
      await handle.close();
    }
  } catch (e) {
    if (isFsError(e)) throw e;
    throw new FsError('BAD_ARCHIVE', `cannot read idx: ${e instanceof Error ? e.message : String(e)}`, idxPath, { cause: e });
  }
  const idx = decodeIdx(bytes, idxPath);
  const fileName = basename(idxPath, idxSuffix);
  if (isArchiveName(fileName) && idx.header.archiveName !== fileName) {
    throw new FsError('BAD_ARCHIVE', `header names archive ${idx.header.archiveName}, the file is ${fileName}${idxSuffix}`, idxPath);
  }
  return idx;
}

// ---------------------------------------------------------------------------------------------
// Scanning

/**
 * Reads an idx file's (plaintext) bytes: encrypted sync dirs open the sealed idx here. Throws
 * FsError (BAD_KEY, BAD_ARCHIVE) naming the file; the scan reports the archive as incomplete.
 */
export type IdxBytesReader = (idxPath: string, name: string) => Promise<Uint8Array>;

export interface CompleteArchive {
  readonly name: string;
  readonly zipPath: string;
  readonly idxPath: string;
  readonly zipSizeBytes: number;
  readonly idxSizeBytes: number;
  /** Undefined when the archive was trusted without reading (ScanOptions.knownComplete). */
  readonly header: IdxHeader | undefined;
  /** The decoded idx, when ScanOptions.keepIdx was set and the idx was read. */
  readonly idx: Idx | undefined;
}

export type IncompleteReason =
  | 'zip-missing'        // the idx is there, its zip is not (yet)
  | 'bad-idx'            // the idx failed to read or decode (truncated, bad CRC, over a limit, ...)
  | 'zip-size-mismatch'; // the zip's size differs from the one the idx records

export interface IncompleteArchive {
  readonly name: string;
  readonly idxPath: string;
  readonly reason: IncompleteReason;
  /** A one-line explanation naming the file, for the warning. */
  readonly message: string;
}

export interface PlainZipFile {
  /** File name inside the sync dir. */
  readonly fileName: string;
  readonly path: string;
  readonly sizeBytes: number;
  readonly mtimeMs: number;
}

export interface SyncDirScan {
  /** Sorted by name. */
  readonly complete: CompleteArchive[];
  /** Sorted by name. */
  readonly incomplete: IncompleteArchive[];
  /** `<name>.zip` files with an archive name and no idx: a writer between steps 2 and 4, or a transfer. */
  readonly pendingZips: string[];
  /** Sorted by file name. */
  readonly plainZips: PlainZipFile[];
  /** Our temporary files (`.tmp-*`), which a crash may leave behind; never read. */
  readonly tempFiles: string[];
}

export interface ScanOptions {
  /**
   * Archive names the caller has already imported (e.g. from its catalog): their idx is not read
   * again, only the presence of both files is checked.
   */
  readonly knownComplete?: ReadonlySet<string>;
  /** Return each decoded idx in CompleteArchive.idx (memory grows with the archives). */
  readonly keepIdx?: boolean;
  /**
   * Leave `knownComplete` archives whose zip is listed out of the result entirely, without a stat
   * (the importer's remount path: 10,000 known archives cost one readdir).
   */
  readonly skipKnown?: boolean;
  /** How to read idx bytes (encrypted sync dirs); default: the file as it is. */
  readonly readIdxBytes?: IdxBytesReader;
}

interface Listing {
  readonly idxNames: string[];
  readonly archiveZips: Set<string>;
  readonly plainZips: string[];
  readonly tempFiles: string[];
}

/** True for a regular file; symlinks and everything else are not archives (we never write them). */
async function isRegularFile(dir: string, entry: Dirent): Promise<boolean> {
  if (entry.isFile()) return true;
  const known = entry.isDirectory() || entry.isSymbolicLink() || entry.isFIFO() || entry.isSocket()
    || entry.isBlockDevice() || entry.isCharacterDevice();
  if (known) return false;
  // Some file systems report DT_UNKNOWN; ask.
  try {
    return (await lstat(join(dir, entry.name))).isFile();
  } catch {
    return false;
  }
}

async function listSyncDir(syncDir: string): Promise<Listing> {
  const entries = await readdir(syncDir, { withFileTypes: true });
  if (entries.length > syncDirEntryCountMax) {
    throw new FsError('LIMIT', `${entries.length} directory entries > the limit ${syncDirEntryCountMax}`, syncDir);
  }
  const listing: Listing = { idxNames: [], archiveZips: new Set(), plainZips: [], tempFiles: [] };
  for (const entry of entries) {
    const fileName = entry.name;
    if (fileName.startsWith('.')) {
      if (isTempName(fileName)) listing.tempFiles.push(fileName);
      continue;
    }
    if (!(await isRegularFile(syncDir, entry))) continue;
    const lower = fileName.toLowerCase();
    const stem = fileName.slice(0, -4);
    if (fileName.endsWith(idxSuffix) && isArchiveName(stem)) {
      listing.idxNames.push(stem);
    } else if (fileName.endsWith(zipSuffix) && isArchiveName(stem)) {
      listing.archiveZips.add(stem);
    } else if (lower.endsWith(zipSuffix)) {
      listing.plainZips.push(fileName);
    }
  }
  return listing;
}

/** Stats that tolerate a file vanishing between readdir and stat (GC, a rename in flight). */
async function statOrUndefined(path: string): Promise<{ size: number; mtimeMs: number } | undefined> {
  try {
    const s = await stat(path);
    return { size: s.size, mtimeMs: s.mtimeMs };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

async function classifyArchive(syncDir: string, name: string, zipListed: boolean,
  options: ScanOptions): Promise<CompleteArchive | IncompleteArchive> {
  const { zipPath, idxPath } = archivePaths(syncDir, name);
  const zip = zipListed ? await statOrUndefined(zipPath) : undefined;
  if (zip === undefined) {
    return { name, idxPath, reason: 'zip-missing', message: `${idxPath}: its zip ${name}${zipSuffix} is missing` };
  }
  if (options.knownComplete?.has(name) === true) {
    const idxStat = await statOrUndefined(idxPath);
    return { name, zipPath, idxPath, zipSizeBytes: zip.size, idxSizeBytes: idxStat?.size ?? 0, header: undefined, idx: undefined };
  }
  let idx: Idx;
  try {
    idx = await readIdx(idxPath, options.readIdxBytes);
  } catch (e) {
    if (!isFsError(e)) throw e;
    return { name, idxPath, reason: 'bad-idx', message: e.message };
  }
  if (idx.header.zipSizeBytes !== zip.size) {
    return {
      name, idxPath, reason: 'zip-size-mismatch',
      message: `${idxPath}: records a zip of ${idx.header.zipSizeBytes} bytes, ${name}${zipSuffix} has ${zip.size}`,
    };
  }
  const idxStat = await statOrUndefined(idxPath);
  return {
    name, zipPath, idxPath, zipSizeBytes: zip.size, idxSizeBytes: idxStat?.size ?? 0,
    header: idx.header, idx: options.keepIdx === true ? idx : undefined,
  };
}

/** Runs `task` over `items` with at most `limit` at once, keeping the results in order. */
async function mapBounded<T, R>(items: readonly T[], limit: number, task: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const index = next++;
      results[index] = await task(items[index]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/**
 * Lists the sync dir by the reader rules above. Never modifies anything. Throws only when the
 * directory itself cannot be read (or has more than `syncDirEntryCountMax` entries); every problem
 * with one archive is reported in `incomplete` instead.
 */
export async function scanSyncDir(syncDir: string, options: ScanOptions = {}): Promise<SyncDirScan> {
  const listing = await listSyncDir(syncDir);
  const skip = options.skipKnown === true ? options.knownComplete : undefined;
  const idxNames = listing.idxNames.filter((name) => skip === undefined || !skip.has(name) || !listing.archiveZips.has(name)).sort();
  const classified = await mapBounded(idxNames, scanConcurrencyMax,
    (name) => classifyArchive(syncDir, name, listing.archiveZips.has(name), options));
  const complete: CompleteArchive[] = [];
  const incomplete: IncompleteArchive[] = [];
  for (const result of classified) {
    if ('reason' in result) incomplete.push(result);
    else complete.push(result);
  }
  const withIdx = new Set(listing.idxNames);
  const pendingZips = [...listing.archiveZips].filter((name) => !withIdx.has(name)).sort();
  const plainZips: PlainZipFile[] = [];
  for (const fileName of listing.plainZips.sort()) {
    const path = join(syncDir, fileName);
    const s = await statOrUndefined(path);
    if (s !== undefined) plainZips.push({ fileName, path, sizeBytes: s.size, mtimeMs: s.mtimeMs });
  }
  return { complete, incomplete, pendingZips, plainZips, tempFiles: listing.tempFiles.sort() };
}
