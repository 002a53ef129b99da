/**
 * Naming of segment files and the few file-system primitives the segment log needs, with
 * Node's errors turned into FsError at this one place.
 *
 * A segment file is `<dir>/NNNNNNNN.seg`: the segment number in 8 decimal digits.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { assert, fsError, isFsError, type FsError } from '../errors.js';

/** Largest segment number that fits the 8-digit file name. */
export const segmentNumberMax = 99_999_999;
const segmentFileNamePattern = /^(\d{8})\.seg$/;

/** Returns the file name of segment `segment`, e.g. 00000003.seg. */
export function segmentFileName(segment: number): string {
  assert(Number.isSafeInteger(segment) && segment >= 0 && segment <= segmentNumberMax,
    `segment number ${segment} within 0..${segmentNumberMax}`);
  return `${String(segment).padStart(8, '0')}.seg`;
}

/** Returns the segment number a file name denotes, or undefined when it is not a segment file name. */
export function parseSegmentFileName(name: string): number | undefined {
  const match = segmentFileNamePattern.exec(name);
  return match?.[1] === undefined ? undefined : Number(match[1]);
}

/** Returns the numbers of the segment files in `dir`, ascending; other files are ignored. */
export function listSegmentNumbers(dir: string): number[] {
  const numbers: number[] = [];
  for (const name of fs.readdirSync(dir)) {
    const segment = parseSegmentFileName(name);
    if (segment !== undefined) numbers.push(segment);
  }
  return numbers.sort((a, b) => a - b);
}

/** Returns the path of segment `segment` in `dir`. */
export function segmentPath(dir: string, segment: number): string {
  return path.join(dir, segmentFileName(segment));
}

/** Reads up to `length` bytes at `position` into `buf[0..]` and returns how many were read (fewer only at end of file). */
export function readFully(fd: number, buf: Buffer, length: number, position: number): number {
  let done = 0;
  while (done < length) {
    const n = fs.readSync(fd, buf, done, length - done, position + done);
    if (n === 0) break;
    done += n;
  }
  return done;
}

/**
 * Scatter-reads `length` bytes (the vectors' total) at `position` into `vectors` in order and
 * returns how many were read (fewer only at end of file). Short reads resume where they stopped.
 */
export function readvFully(fd: number, vectors: readonly Uint8Array[], length: number, position: number): number {
  let done = 0;
  while (done < length) {
    const n = fs.readvSync(fd, done === 0 ? vectors : vectorsAfter(vectors, done), position + done);
    if (n === 0) break;
    done += n;
  }
  return done;
}

/** Gather-writes the vectors (`length` bytes in total) at `position`, looping over short writes. */
export function writevFully(fd: number, vectors: readonly Uint8Array[], length: number, position: number): void {
  let done = 0;
  while (done < length) {
    const n = fs.writevSync(fd, done === 0 ? vectors : vectorsAfter(vectors, done), position + done);
    assert(n > 0, `write made progress (${done} of ${length} bytes at ${position})`);
    done += n;
  }
}

/** The part of `vectors` after their first `skipBytes` bytes (for resuming a short readv/writev). */
export function vectorsAfter(vectors: readonly Uint8Array[], skipBytes: number): Uint8Array[] {
  let skip = skipBytes;
  let first = 0;
  while (first < vectors.length && skip >= vectors[first]!.length) skip -= vectors[first++]!.length;
  const rest = vectors.slice(first);
  if (rest.length > 0 && skip > 0) rest[0] = rest[0]!.subarray(skip);
  return rest;
}

/** Makes the directory entries of `dir` durable (creations, removals). */
export function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Turns a Node error into FsError (ENOSPC stays ENOSPC, ENOENT stays ENOENT, the rest is EIO); an FsError passes through. */
export function toFsError(e: unknown, what: string, place: string): FsError {
  if (isFsError(e)) return e;
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  const message = `${what}: ${e instanceof Error ? e.message : String(e)}`;
  if (code === 'ENOSPC' || code === 'EDQUOT') return fsError('ENOSPC', message, place, e);
  if (code === 'ENOENT') return fsError('ENOENT', message, place, e);
  return fsError('EIO', message, place, e);
}
