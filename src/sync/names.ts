/**
 * Names in the sync directory and inside zips.
 *
 * Archive names (and boxids) are 128 random bits written as 32 lowercase hex digits. Temporary files
 * start with `.tmp-` so every reader can skip them by name alone.
 *
 * Paths in idx files and entry names from plain zips are checked by one rule set: a path is a
 * sequence of components joined by '/', with no empty, '.' or '..' component, no NUL, no backslash,
 * no leading '/' or drive letter, each component at most `nameLengthMaxBytes` and the whole at most
 * `pathLengthMaxBytes` in UTF-8. Backslashes are refused outright rather than read as separators:
 * a zip made on Windows may use them as separators, and on Linux they would otherwise name a
 * different file than the one the zip's author meant (or smuggle a `..\` past the check).
 */
import { randomBytes } from 'node:crypto';
import { assert } from '../errors.js';
import { nameLengthMaxBytes, pathLengthMaxBytes } from '../limits.js';
import { archiveNameBytes } from './limits.js';

const hex128Pattern = /^[0-9a-f]{32}$/;
/** Prefix of every temporary file this layer writes into the sync dir. */
export const tempNamePrefix = '.tmp-';

/** A fresh archive name: 16 bytes from the system CSPRNG as 32 lowercase hex digits. */
export function newArchiveName(): string {
  return randomBytes(archiveNameBytes).toString('hex');
}

/** True when `name` is exactly 32 lowercase hex digits (an archive name or a boxid). */
export function isArchiveName(name: string): boolean {
  return hex128Pattern.test(name);
}

/** True when `s` is 32 lowercase hex digits; boxids share the archive-name format. */
export function isHex128(s: string): boolean {
  return hex128Pattern.test(s);
}

/** The 16 bytes of a 32-hex-digit name; asserts the format. */
export function hex128ToBytes(s: string): Uint8Array {
  assert(isHex128(s), `not 32 lowercase hex digits: ${JSON.stringify(s)}`);
  return Uint8Array.from(Buffer.from(s, 'hex'));
}

/** 16 bytes as 32 lowercase hex digits; asserts the length. */
export function hex128FromBytes(bytes: Uint8Array): string {
  assert(bytes.length === 16, `expected 16 bytes, got ${bytes.length}`);
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

/** A fresh temporary file name with the given extension, e.g. `.tmp-<32 hex>.zip`. */
export function newTempName(extension: 'zip' | 'idx' | 'rm'): string {
  return `${tempNamePrefix}${randomBytes(16).toString('hex')}.${extension}`;
}

/** True when `name` is a temporary file name (written by this layer; never a finished archive). */
export function isTempName(name: string): boolean {
  return name.startsWith(tempNamePrefix);
}

/** Why a path or zip entry name was refused. Stable strings: they appear in warnings. */
export type PathRejection =
  | 'empty'              // the name is empty (or only '/')
  | 'nul'                // contains a NUL byte
  | 'backslash'          // contains '\'
  | 'absolute'           // starts with '/'
  | 'drive-letter'       // starts with 'C:' and the like
  | 'dot-dot'            // has a '..' component
  | 'dot'                // has a '.' component
  | 'empty-component'    // has '//' (or a trailing '/' where none is allowed)
  | 'component-too-long' // a component is over nameLengthMaxBytes in UTF-8
  | 'path-too-long';     // the whole is over pathLengthMaxBytes in UTF-8

/** The outcome of a name check: the normalized path, or the typed reason with a readable detail. */
export type PathCheck =
  | { readonly ok: true; readonly path: string; readonly isDirectory: boolean }
  | { readonly ok: false; readonly reason: PathRejection; readonly detail: string };

function reject(reason: PathRejection, detail: string): PathCheck {
  return { ok: false, reason, detail };
}

/** A printable rendering of a hostile name for warnings (control characters escaped, bounded length). */
export function printableName(name: string): string {
  const shown = name.length > 200 ? `${name.slice(0, 200)}...` : name;
  return JSON.stringify(shown);
}

/**
 * Checks a relative path with no trailing '/'. Returns undefined when acceptable, else the reason.
 * Does the cheap whole-string checks first so a hostile 64 KiB name costs one scan.
 */
function pathProblem(path: string): PathCheck | undefined {
  const sizeBytes = Buffer.byteLength(path, 'utf8');
  if (sizeBytes > pathLengthMaxBytes) {
    return reject('path-too-long', `${sizeBytes} bytes > ${pathLengthMaxBytes}`);
  }
  if (path.includes('\0')) return reject('nul', 'contains a NUL byte');
  if (path.includes('\\')) return reject('backslash', 'contains a backslash');
  if (path.startsWith('/')) return reject('absolute', 'starts with /');
  if (/^[A-Za-z]:/.test(path)) return reject('drive-letter', 'starts with a drive letter');
  for (const component of path.split('/')) {
    if (component === '') return reject('empty-component', 'has an empty component');
    if (component === '..') return reject('dot-dot', 'has a .. component');
    if (component === '.') return reject('dot', 'has a . component');
    const componentBytes = Buffer.byteLength(component, 'utf8');
    if (componentBytes > nameLengthMaxBytes) {
      return reject('component-too-long', `a component of ${componentBytes} bytes > ${nameLengthMaxBytes}`);
    }
  }
  return undefined;
}

/**
 * Checks an entry name from a plain zip. A single trailing '/' marks a directory and is removed
 * from the returned path; everything else must pass the path rules above.
 */
export function checkZipEntryName(name: string): PathCheck {
  if (name === '' || name === '/') return reject('empty', 'empty name');
  const isDirectory = name.endsWith('/');
  const path = isDirectory ? name.slice(0, -1) : name;
  const problem = pathProblem(path);
  if (problem !== undefined) return problem;
  return { ok: true, path, isDirectory };
}

/**
 * Checks a path as stored in an idx version: relative, no trailing '/'. The empty path names the
 * root directory and is accepted here (with isDirectory true; the idx codec allows it for
 * directories only); for any other path isDirectory is false, as paths do not say.
 */
export function checkIdxPath(path: string): PathCheck {
  if (path === '') return { ok: true, path, isDirectory: true };
  const problem = pathProblem(path);
  if (problem !== undefined) return problem;
  return { ok: true, path, isDirectory: false };
}
