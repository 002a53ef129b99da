/**
 * The sync-dir checker (the archive half of `zippy-fsck --sync`). Read-only. Checked:
 * - every `<name>.idx` decodes (magic, trailer, CRC64, limits; opened and authenticated first
 *   in an encrypted dir) and has its `<name>.zip` of exactly the recorded size;
 * - every zip's central directory lists exactly the idx's block table (names, local header
 *   offsets, CRC-32, both sizes, method), and every block entry decodes to its CRC-32;
 *   in an encrypted dir every chunk of the sealed zip is authenticated;
 * - every visible version (every live head of every path) has each block of its block list
 *   (copy runs resolved) in some whole archive.
 * Without a key for an encrypted dir nothing can be opened: the report says so (a note, not a
 * problem) and only the envelope headers and sizes are checked.
 */
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, renameSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { FsError, isFsError } from '../errors.js';
import { scanSyncDir, zipSuffix, type CompleteArchive } from './archive-store.js';
import { readSealedFile, loadKeyring, plainSizeOfSealed, decodeEnvelopeHeader } from './crypto/index.js';
import { envelopePlainSizeMaxBytes } from './crypto/limits.js';
import { idxSizeMaxBytes } from './limits.js';
import { resolveBlockList, type FileVersion, type Idx, type Stamp } from './idx.js';
import { isArchiveName } from './names.js';
import type { SyncPort } from '../inode/sync-port.js';
import { stampKey, SyncState } from './state.js';
import {
  blockEntryName, blockEntrySpanBytes, centralHeaderFixedSizeBytes, centralHeaderLayout, centralHeaderSignature, endRecordLayout,
  endRecordSignature, endRecordSizeBytes, hexOf, zip64EndRecordLayout, zip64LocatorLayout, zip64LocatorSignature, zip64LocatorSizeBytes,
  type BlockLocation,
} from './zip-format.js';
import { decodeBlockEntry } from './zipfile.js';

export type SyncProblemCode =
  | 'archive-gone' | 'idx-bad' | 'zip-missing' | 'zip-size' | 'zip-bad' | 'zip-directory' | 'zip-entry' | 'block-missing' | 'version-base' | 'sealed-bad';

export interface SyncProblem {
  code: SyncProblemCode;
  /** An archive file, an entry of it, or a path of the tree. */
  place: string;
  message: string;
  /** The archive (32 hex) the problem belongs to, when it belongs to one. */
  archive?: string;
}

export interface SyncCheckReport {
  problems: SyncProblem[];
  /** Facts worth saying that are not damage: no key, pending zips, temporary files. */
  notes: string[];
  encrypted: boolean;
  /** False when the dir is encrypted and this machine holds no key: archives were not opened. */
  authenticated: boolean;
  archiveCount: number;
  blockCount: number;
  versionCount: number;
  visibleCount: number;
  /** Names of the archives whose idx and zip passed every check. */
  wholeArchives: string[];
}

export interface SyncCheckOptions {
  /** zippy-fs config dir holding this machine's keys (defaultConfigDir()). */
  configDir: string;
  /** Called after each archive with the count done. */
  progress?: (archivesDone: number, archiveCount: number) => void;
}

/** Checks every archive of `syncDir` and the visible tree's block lists. Never modifies anything. */
export async function checkSyncDir(syncDir: string, options: SyncCheckOptions): Promise<SyncCheckReport> {
  const report: SyncCheckReport = { problems: [], notes: [], encrypted: false, authenticated: true, archiveCount: 0, blockCount: 0, versionCount: 0, visibleCount: 0, wholeArchives: [] };
  let keys: ReadonlyMap<string, Uint8Array> | undefined;
  try {
    const keyring = loadKeyring(syncDir, options.configDir);
    if (keyring.encrypted) {
      report.encrypted = true;
      keys = keyring.keys;
    }
  } catch (e) {
    if (!isFsError(e, 'BAD_KEY')) throw e;
    report.encrypted = true;
    report.authenticated = false;
    report.notes.push(`encrypted sync dir and this machine holds no usable key: archives were not authenticated or opened, only their envelopes checked (${e.message})`);
    checkEnvelopesOnly(syncDir, report);
    return report;
  }
  const readIdxBytes = keys === undefined ? undefined : (idxPath: string, name: string) => readSealedFile(idxPath, { keys, archiveName: name, kind: 'idx', syncDir }, idxSizeMaxBytes);
  const scan = await scanSyncDir(syncDir, { keepIdx: true, ...(readIdxBytes === undefined ? {} : { readIdxBytes }) });
  for (const bad of scan.incomplete) {
    const code = bad.reason === 'bad-idx' ? 'idx-bad' : bad.reason === 'zip-missing' ? 'zip-missing' : 'zip-size';
    report.problems.push({ code, place: bad.idxPath, message: bad.message, archive: bad.name });
  }
  if (scan.pendingZips.length > 0) report.notes.push(`${scan.pendingZips.length} zip(s) without an idx (a writer or a transfer at work, or a crash): ${scan.pendingZips.slice(0, 5).map((n) => `${n}${zipSuffix}`).join(', ')}`);
  if (scan.tempFiles.length > 0) report.notes.push(`${scan.tempFiles.length} temporary file(s) left by an interrupted write: ${scan.tempFiles.slice(0, 5).join(', ')}`);
  if (scan.plainZips.length > 0) report.notes.push(`${scan.plainZips.length} plain zip(s), not checked beyond their listing`);
  const available = new Set<string>();
  const idxs: Idx[] = [];
  let done = 0;
  for (const archive of scan.complete) {
    const idx = archive.idx!;
    idxs.push(idx);
    report.archiveCount++;
    const before = report.problems.length;
    await checkArchiveZip(archive, idx, keys, syncDir, report);
    // Blocks of an archive whose zip is damaged are not counted as available.
    if (report.problems.length === before) {
      for (const b of idx.blocks) available.add(hexOf(b.blockId));
      report.wholeArchives.push(archive.name);
    }
    report.blockCount += idx.blocks.length;
    options.progress?.(++done, scan.complete.length);
  }
  checkVisibleVersions(idxs, available, report);
  return report;
}

/** Without keys: each archive file must carry an envelope naming it, of a size some plaintext seals to. */
function checkEnvelopesOnly(syncDir: string, report: SyncCheckReport): void {
  for (const file of readdirSync(syncDir)) {
    const m = /^([0-9a-f]{32})\.(zip|idx)$/.exec(file);
    if (m === null || !isArchiveName(m[1]!)) continue;
    const path = join(syncDir, file);
    try {
      plainSizeOfSealed(statSync(path).size, path);
      const head = Buffer.alloc(64);
      const fd = openSync(path, 'r');
      try {
        readSync(fd, head, 0, head.length, 0);
      } finally {
        closeSync(fd);
      }
      decodeEnvelopeHeader(head, { archiveName: m[1]!, kind: m[2] as 'zip' | 'idx' }, path);
    } catch (e) {
      if (!isFsError(e)) throw e;
      report.problems.push({ code: 'sealed-bad', place: path, message: e.message, archive: m[1]! });
    }
  }
}

/** The zip's bytes (authenticated and opened when sealed), its central directory against the idx, every block entry. */
async function checkArchiveZip(archive: CompleteArchive, idx: Idx, keys: ReadonlyMap<string, Uint8Array> | undefined, syncDir: string, report: SyncCheckReport): Promise<void> {
  const zipFile = `${archive.name}${zipSuffix}`;
  let zip: Buffer;
  try {
    zip = keys === undefined
      ? readFileSync(archive.zipPath)
      : await readSealedFile(archive.zipPath, { keys, archiveName: archive.name, kind: 'zip', syncDir }, envelopePlainSizeMaxBytes);
  } catch (e) {
    const message = isFsError(e) ? e.message : String(e);
    report.problems.push({ code: 'zip-bad', place: archive.zipPath, message, archive: archive.name });
    return;
  }
  let directory: Map<string, CentralEntry>;
  try {
    directory = readCentralDirectory(zip, archive.zipPath);
  } catch (e) {
    report.problems.push({ code: 'zip-directory', place: archive.zipPath, message: (e as Error).message, archive: archive.name });
    return;
  }
  const expected = new Set<string>();
  for (const block of idx.blocks) {
    const name = blockEntryName(block.blockId);
    expected.add(name);
    const place = `${zipFile} entry ${name}`;
    const entry = directory.get(name);
    if (entry === undefined) {
      report.problems.push({ code: 'zip-directory', place, message: 'listed in the idx block table, missing from the zip central directory', archive: archive.name });
      continue;
    }
    const mismatch = compareEntry(entry, block);
    if (mismatch !== undefined) report.problems.push({ code: 'zip-directory', place, message: `central directory ${mismatch}`, archive: archive.name });
    const span = zip.subarray(block.headerOffset, block.headerOffset + blockEntrySpanBytes(block.storedSizeBytes));
    try {
      decodeBlockEntry(span, block, archive.zipPath);
    } catch (e) {
      if (!isFsError(e)) throw e;
      report.problems.push({ code: 'zip-entry', place, message: e.message, archive: archive.name });
    }
  }
  for (const name of directory.keys()) {
    if (name !== 'blocks/' && !expected.has(name)) report.problems.push({ code: 'zip-directory', place: `${zipFile} entry ${name}`, message: 'in the zip, not in the idx block table', archive: archive.name });
  }
}

interface CentralEntry {
  method: number;
  crc32: number;
  storedSizeBytes: number;
  sizeBytes: number;
  headerOffset: number;
}

function compareEntry(entry: CentralEntry, block: BlockLocation): string | undefined {
  const pairs: [string, number, number][] = [
    ['local header offset', entry.headerOffset, block.headerOffset], ['crc32', entry.crc32, block.crc32],
    ['stored size', entry.storedSizeBytes, block.storedSizeBytes], ['size', entry.sizeBytes, block.sizeBytes], ['method', entry.method, block.method],
  ];
  for (const [what, actual, want] of pairs) if (actual !== want) return `${what} ${actual}, the idx says ${want}`;
  return undefined;
}

/** Parses the end record(s) and central directory of a zip held in memory. Throws on anything malformed. */
export function readCentralDirectory(zip: Buffer, place: string): Map<string, CentralEntry> {
  const fail = (message: string): never => {
    throw new FsError('BAD_ARCHIVE', message, place);
  };
  let end = -1;
  for (let at = zip.length - endRecordSizeBytes; at >= Math.max(0, zip.length - endRecordSizeBytes - 65535); at--) {
    if (zip.readUInt32LE(at) === endRecordSignature) {
      end = at;
      break;
    }
  }
  if (end < 0) fail('no end of central directory record');
  const E = endRecordLayout;
  let count = zip.readUInt16LE(end + E.entryCount.offset);
  let cdSize = zip.readUInt32LE(end + E.centralDirectorySizeBytes.offset);
  let cdOffset = zip.readUInt32LE(end + E.centralDirectoryOffset.offset);
  const locatorAt = end - zip64LocatorSizeBytes;
  if (locatorAt >= 0 && zip.readUInt32LE(locatorAt) === zip64LocatorSignature) {
    const z64 = Number(zip.readBigUInt64LE(locatorAt + zip64LocatorLayout.endRecordOffset.offset));
    if (z64 + 56 > zip.length) fail(`zip64 end record at ${z64} lies past the end`);
    const Z = zip64EndRecordLayout;
    count = Number(zip.readBigUInt64LE(z64 + Z.entryCount.offset));
    cdSize = Number(zip.readBigUInt64LE(z64 + Z.centralDirectorySizeBytes.offset));
    cdOffset = Number(zip.readBigUInt64LE(z64 + Z.centralDirectoryOffset.offset));
  }
  if (cdOffset + cdSize > zip.length) fail(`central directory [${cdOffset}, +${cdSize}) lies past the end of the ${zip.length}-byte zip`);
  const entries = new Map<string, CentralEntry>();
  const C = centralHeaderLayout;
  let at = cdOffset;
  for (let i = 0; i < count; i++) {
    if (at + centralHeaderFixedSizeBytes > cdOffset + cdSize || zip.readUInt32LE(at) !== centralHeaderSignature) fail(`central directory entry ${i} at ${at} has no signature`);
    const nameLength = zip.readUInt16LE(at + C.nameLengthBytes.offset);
    const extraLength = zip.readUInt16LE(at + C.extraLengthBytes.offset);
    const commentLength = zip.readUInt16LE(at + C.commentLengthBytes.offset);
    const name = zip.toString('latin1', at + centralHeaderFixedSizeBytes, at + centralHeaderFixedSizeBytes + nameLength);
    let headerOffset = zip.readUInt32LE(at + C.headerOffset.offset);
    if (headerOffset === 0xffffffff) {
      const extra = zip.subarray(at + centralHeaderFixedSizeBytes + nameLength, at + centralHeaderFixedSizeBytes + nameLength + extraLength);
      for (let x = 0; x + 4 <= extra.length;) {
        const id = extra.readUInt16LE(x);
        const size = extra.readUInt16LE(x + 2);
        if (id === 1 && size >= 8) headerOffset = Number(extra.readBigUInt64LE(x + 4));
        x += 4 + size;
      }
    }
    entries.set(name, {
      method: zip.readUInt16LE(at + C.method.offset), crc32: zip.readUInt32LE(at + C.crc32.offset),
      storedSizeBytes: zip.readUInt32LE(at + C.storedSizeBytes.offset), sizeBytes: zip.readUInt32LE(at + C.sizeBytes.offset), headerOffset,
    });
    at += centralHeaderFixedSizeBytes + nameLength + extraLength + commentLength;
  }
  return entries;
}

/** Every live head's blocks (copy runs resolved through the versions of all whole archives) must be available. */
function checkVisibleVersions(idxs: readonly Idx[], available: ReadonlySet<string>, report: SyncCheckReport): void {
  const byStamp = new Map<string, FileVersion>();
  const basedOn = new Map<string, Set<string>>();
  for (const idx of idxs) {
    for (const v of idx.versions) {
      byStamp.set(stampKeyHex(v.stamp), v);
      report.versionCount++;
      if (v.base !== null) {
        let set = basedOn.get(v.path);
        if (set === undefined) basedOn.set(v.path, (set = new Set()));
        set.add(stampKeyHex(v.base));
      }
    }
  }
  const flat = new Map<string, Uint8Array | null>();
  const flatOf = (stamp: Stamp, depth: number): Uint8Array | undefined => {
    const key = stampKeyHex(stamp);
    const memo = flat.get(key);
    if (memo !== undefined) return memo ?? undefined;
    const v = byStamp.get(key);
    if (v === undefined || v.type !== 'file' || depth > 1000) return undefined;
    flat.set(key, null); // a cycle reads as unknown
    try {
      const list = resolveBlockList(v, (s) => flatOf(s, depth + 1), v.path);
      flat.set(key, list);
      return list;
    } catch {
      return undefined;
    }
  };
  for (const v of byStamp.values()) {
    if (v.deleted || basedOn.get(v.path)?.has(stampKeyHex(v.stamp)) === true) continue;
    report.visibleCount++;
    if (v.type !== 'file') continue;
    const list = flatOf(v.stamp, 0);
    if (list === undefined) {
      report.problems.push({ code: 'version-base', place: v.path === '' ? '/' : `/${v.path}`, message: `version ${stampKeyHex(v.stamp)} copies blocks from a version no whole archive holds` });
      continue;
    }
    const missing: number[] = [];
    for (let slot = 0; slot * 16 < list.length; slot++) {
      const id = list.subarray(slot * 16, slot * 16 + 16);
      if (id.every((b) => b === 0)) continue;
      if (!available.has(hexOf(id))) missing.push(slot);
    }
    if (missing.length > 0) {
      const first = hexOf(list.subarray(missing[0]! * 16, missing[0]! * 16 + 16));
      report.problems.push({ code: 'block-missing', place: `/${v.path}`, message: `${missing.length} block(s) of the visible version are in no whole archive (block ${missing[0]}, id ${first}${missing.length > 1 ? ', …' : ''})` });
    }
  }
}

function stampKeyHex(stamp: Stamp): string {
  return stampKey(stamp).toString('hex');
}

/**
 * The store side of the sync dir: every block the store reads from an archive (block pointers of
 * kind archive, resolved through the store's `blockid` and `catalog` tables) must lie in an
 * archive that is whole in the sync dir. One problem per archive that is not, naming the inodes.
 * `syncTable` reads the store's sync tables (read-only is enough).
 */
export function checkArchiveReferences(pointers: Iterable<{ ino: number; blockIndex: number; blockId: Buffer }>,
  syncTable: SyncPort['syncTable'], report: SyncCheckReport): void {
  // SyncState reads its tables only through syncTable; a read-only view of the store is enough.
  const state = new SyncState({ syncTable } as unknown as SyncPort);
  const whole = new Set(report.wholeArchives);
  const gone = new Map<string, { count: number; inos: Set<number> }>();
  for (const p of pointers) {
    const stored = state.block(p.blockId);
    const name = stored === undefined ? undefined : state.archive(stored.archive)?.name;
    if (name !== undefined && whole.has(name)) continue;
    const key = name ?? '(unknown archive)';
    const entry = gone.get(key) ?? { count: 0, inos: new Set<number>() };
    entry.count++;
    entry.inos.add(p.ino);
    gone.set(key, entry);
  }
  for (const [name, entry] of gone) {
    const inos = [...entry.inos].slice(0, 10).join(', ');
    report.problems.push({
      code: 'archive-gone', place: `archive ${name}`, ...(isArchiveName(name) ? { archive: name } : {}),
      message: `${entry.count} block(s) of inodes ${inos}${entry.inos.size > 10 ? ', …' : ''} are read from this archive, which is not whole in the sync dir (missing, damaged or quarantined): those reads fail until it is restored`,
    });
  }
}

/** Codes of sync-dir problems that moving the archive aside repairs (the archive is unusable as it is). */
export const quarantinableCodes: ReadonlySet<SyncProblemCode> = new Set(['idx-bad', 'zip-missing', 'zip-size', 'zip-bad', 'zip-directory', 'zip-entry', 'sealed-bad']);

/**
 * Moves the files of each named archive (idx first, then zip, whichever exist) into
 * `<syncDir>/.fsck-quarantine-<UTC time>/`, which every reader skips (its name starts with a dot).
 * Nothing is deleted; moving them back undoes it. Returns the quarantine directory.
 */
export function quarantineArchives(syncDir: string, names: Iterable<string>, now = new Date()): { dir: string; moved: string[] } {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  const dir = join(syncDir, `.fsck-quarantine-${stamp}`);
  mkdirSync(dir, { recursive: true });
  const moved: string[] = [];
  for (const name of names) {
    for (const file of [`${name}.idx`, `${name}${zipSuffix}`]) {
      const from = join(syncDir, file);
      if (!existsSync(from)) continue;
      renameSync(from, join(dir, file));
      moved.push(file);
    }
  }
  return { dir, moved };
}
