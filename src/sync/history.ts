/**
 * History: which versions of a path the sync dir holds, and what "as of a time" means.
 *
 * Time of a version = the publish time of the archive that carries it: the idx header's
 * `createdNs`, set by the publisher when it writes the idx (the commit point). `zippy-fs -o at=T`
 * and `zippy-export --at T` import only archives with `createdNs <= T` (engine `asOfNs`), so they
 * show exactly what a mount that had seen those archives showed. The mtime is not used: it is
 * whatever the writer set (`touch -d`, `tar x`, `cp -p` give old mtimes to new versions). The
 * clock is the publishing machine's; machines with skewed clocks order their archives by it.
 * A version carried by several archives (a checkpoint repeats versions) counts from the earliest.
 */
import { FsError } from '../errors.js';
import { scanSyncDir } from './archive-store.js';
import { type Keyring, readSealedFile } from './crypto/index.js';
import type { FileType, Stamp } from './idx.js';
import { idxSizeMaxBytes } from './limits.js';

/** One version of one path, as `zippy-export --versions` lists it. */
export interface VersionEntry {
  readonly path: string;
  /** Publish time (ns since the epoch) of the earliest archive carrying this version. */
  readonly publishedNs: bigint;
  readonly mtimeNs: bigint;
  /** The machine that published it (idx header writer), 32 hex. */
  readonly machine: string;
  /** `<counter>:<replica id>`: names this version for `--version`. */
  readonly version: string;
  readonly stamp: Stamp;
  readonly base: string | null;
  readonly type: FileType;
  readonly sizeBytes: number;
  readonly deleted: boolean;
  readonly archive: string;
}

export function versionId(stamp: Stamp): string {
  return `${stamp.counter}:${stamp.boxid}`;
}

/** Parses a `--version` / listing id back into a stamp; undefined when it is not one. */
export function parseVersionId(text: string): Stamp | undefined {
  const match = /^(\d{1,16}):([0-9a-f]{32})$/.exec(text);
  if (match === null) return undefined;
  const counter = Number(match[1]);
  return Number.isSafeInteger(counter) && counter > 0 ? { counter, boxid: match[2]! } : undefined;
}

/**
 * Parses a time given by a user: unix seconds (`1764000000`, `1764000000.5`), or ISO 8601
 * (`2026-11-22T23:10:00Z`, `2026-11-22T23:10:00.123+01:00`, `2026-11-22` = midnight UTC).
 * Returns ns since the epoch; FsError BAD_INPUT otherwise.
 */
export function parseTimeNs(text: string): bigint {
  const trimmed = text.trim();
  const unix = /^(\d{1,12})(?:\.(\d{1,9}))?$/.exec(trimmed);
  if (unix !== null) {
    const frac = (unix[2] ?? '').padEnd(9, '0');
    return BigInt(unix[1]!) * 1_000_000_000n + BigInt(frac);
  }
  if (/^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?)?$/.test(trimmed)) {
    // Date keeps milliseconds; digits beyond them are kept by hand.
    const sub = /\.(\d{1,9})/.exec(trimmed)?.[1] ?? '';
    const ms = Date.parse(trimmed.length === 10 ? `${trimmed}T00:00:00Z` : trimmed.replace(' ', 'T'));
    if (Number.isFinite(ms)) {
      const extraNs = sub.length > 3 ? BigInt(sub.padEnd(9, '0').slice(3)) : 0n;
      return BigInt(ms) * 1_000_000n + extraNs;
    }
  }
  throw new FsError('BAD_INPUT', `not a time: ${JSON.stringify(text)} (use unix seconds or ISO 8601 such as 2026-11-22T23:10:00Z)`);
}

/** ns since the epoch as ISO 8601 UTC with milliseconds. */
export function isoOfNs(ns: bigint): string {
  return new Date(Number(ns / 1_000_000n)).toISOString();
}

export interface ListVersionsResult {
  readonly versions: VersionEntry[];
  /** One message per archive that could not be read (named); the listing leaves it out. */
  readonly problems: string[];
}

/**
 * Every version of `path` in the sync dir's complete archives, oldest publish first (ties by
 * stamp). Reads every idx (sealed ones with `keyring`); never writes.
 */
export async function listVersions(syncDir: string, path: string, keyring: Keyring | undefined): Promise<ListVersionsResult> {
  const keys = keyring?.keys;
  const readIdxBytes = keys === undefined ? undefined
    : (idxPath: string, name: string): Promise<Uint8Array> => readSealedFile(idxPath, { keys, archiveName: name, kind: 'idx', syncDir }, idxSizeMaxBytes);
  const scan = await scanSyncDir(syncDir, { keepIdx: true, ...(readIdxBytes === undefined ? {} : { readIdxBytes }) });
  const problems = scan.incomplete.map((a) => `skipped archive: ${a.message}`);
  const byStamp = new Map<string, VersionEntry>();
  for (const archive of scan.complete) {
    const idx = archive.idx;
    if (idx === undefined) continue;
    if (idx.header.encrypted !== (keys !== undefined)) {
      problems.push(`skipped archive ${archive.idxPath}: ${idx.header.encrypted ? 'sealed in a plain sync dir' : 'not sealed in an encrypted sync dir'}`);
      continue;
    }
    for (const v of idx.versions) {
      if (v.path !== path) continue;
      const id = versionId(v.stamp);
      const prior = byStamp.get(id);
      if (prior !== undefined && prior.publishedNs <= idx.header.createdNs) continue;
      byStamp.set(id, {
        path, publishedNs: idx.header.createdNs, mtimeNs: v.mtimeNs, machine: idx.header.writerBoxid, version: id, stamp: v.stamp,
        base: v.base === null ? null : versionId(v.base), type: v.type, sizeBytes: v.sizeBytes, deleted: v.deleted, archive: archive.name,
      });
    }
  }
  const versions = [...byStamp.values()].sort((a, b) => (a.publishedNs < b.publishedNs ? -1 : a.publishedNs > b.publishedNs ? 1 : a.stamp.counter - b.stamp.counter));
  return { versions, problems };
}
