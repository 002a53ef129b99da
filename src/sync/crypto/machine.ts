/**
 * This machine's identity for encryption: its boxid and its X25519 key pair, both in the config
 * directory `${XDG_CONFIG_HOME:-~/.config}/zippy-fs/`, and the fingerprint people compare.
 *
 * Files (the directory is created mode 0700):
 * - `boxid`: 32 lowercase hex digits and a newline (shared with the sync layer's boxid.ts: same
 *   path, same format; created exclusively on first use so concurrent starters agree).
 * - `box-key.json` (mode 0600): `{"format":"zippy-fs-box-key","version":1,"boxid":"<32 hex>",
 *   "publicKey":"<base64>","secretKey":"<base64>","createdNs":"<decimal>"}`. Created exclusively
 *   (temp file + link) on first need; never rewritten. A key file made for another boxid is an
 *   error, not silently replaced: the sync dir's grants are sealed to the old public key.
 *
 * The fingerprint binds the boxid and the public key: BLAKE2b-256 of a context string, the boxid's
 * 16 bytes and the public key, whose first 16 bytes read as a big-endian integer modulo 10^24 give
 * 24 decimal digits, shown as 6 groups of 4. About 80 bits: a forged key with the same
 * fingerprint is out of reach, and people can read it aloud.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, closeSync, fsyncSync, linkSync, mkdirSync, openSync, readFileSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { FsError } from '../../errors.js';
import { isHex128 } from '../names.js';
import { keyFileSizeMaxBytes } from './limits.js';
import { sodium } from './sodium.js';

/** The zippy-fs config directory for the given environment. */
export function defaultConfigDir(env: NodeJS.ProcessEnv = process.env): string {
  const xdg = env['XDG_CONFIG_HOME'];
  return join(xdg !== undefined && xdg !== '' ? xdg : join(homedir(), '.config'), 'zippy-fs');
}

export const boxidFileName = 'boxid';
export const boxKeyFileName = 'box-key.json';
const boxKeyFormat = 'zippy-fs-box-key';
const fingerprintContext = Buffer.from('zippy-fs fingerprint v1\0', 'ascii');

/** This machine's key pair. `secretKey` never leaves this process except into box-key.json. */
export interface BoxKey {
  readonly boxid: string;
  readonly publicKey: Buffer;
  readonly secretKey: Buffer;
}

/**
 * Writes a new file exclusively and durably: a temp file in the same directory, fsynced, then
 * linked to `path` (link fails with EEXIST instead of replacing). Returns false when `path`
 * already existed (the caller re-reads it).
 */
export function writeNewFileSync(path: string, bytes: Uint8Array, mode: number): boolean {
  const temp = join(dirname(path), `.tmp-${randomBytes(16).toString('hex')}`);
  const fd = openSync(temp, 'wx', mode);
  try {
    let done = 0;
    while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    chmodSync(temp, mode); // the umask may have narrowed or, with 0600, kept it; make it exact
    linkSync(temp, path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw e;
  } finally {
    unlinkSync(temp);
    fsyncDirectorySync(dirname(path));
  }
}

/** Makes a directory's entries durable. */
export function fsyncDirectorySync(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function ensureConfigDir(configDir: string): void {
  mkdirSync(configDir, { recursive: true, mode: 0o700 });
}

/** Reads a small file, refusing anything over keyFileSizeMaxBytes; undefined when absent. */
export function readSmallFileSync(path: string): Buffer | undefined {
  let sizeBytes: number;
  try {
    sizeBytes = statSync(path).size;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  if (sizeBytes > keyFileSizeMaxBytes) throw new FsError('BAD_INPUT', `${sizeBytes} bytes > the limit ${keyFileSizeMaxBytes} for a key file`, path);
  return readFileSync(path);
}

function checkedBoxid(text: string, path: string): string {
  const id = text.trim();
  if (!isHex128(id)) throw new FsError('BAD_INPUT', 'boxid file does not hold 32 lowercase hex digits', path);
  return id;
}

/** This machine's boxid, read from `<configDir>/boxid`, created (32 hex + newline) on first use. */
export function loadOrCreateBoxid(configDir: string): string {
  const path = join(configDir, boxidFileName);
  const existing = readSmallFileSync(path);
  if (existing !== undefined) return checkedBoxid(existing.toString('utf8'), path);
  ensureConfigDir(configDir);
  writeNewFileSync(path, Buffer.from(`${randomBytes(16).toString('hex')}\n`, 'ascii'), 0o644);
  return checkedBoxid(readFileSync(path, 'utf8'), path);
}

/** The boxid if the file exists, else undefined (never creates). */
export function readBoxid(configDir: string): string | undefined {
  const path = join(configDir, boxidFileName);
  const existing = readSmallFileSync(path);
  return existing === undefined ? undefined : checkedBoxid(existing.toString('utf8'), path);
}

function decodeBoxKey(bytes: Buffer, path: string): BoxKey {
  const fail = (what: string): never => {
    throw new FsError('BAD_KEY', `box key file: ${what}`, path);
  };
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString('utf8'));
  } catch {
    return fail('not JSON');
  }
  if (typeof json !== 'object' || json === null) return fail('not a JSON object');
  const record = json as Record<string, unknown>;
  if (record['format'] !== boxKeyFormat || record['version'] !== 1) fail(`format ${String(record['format'])} version ${String(record['version'])}`);
  const boxid = record['boxid'];
  if (typeof boxid !== 'string' || !isHex128(boxid)) return fail('boxid is not 32 lowercase hex');
  const decode = (field: string, sizeBytes: number): Buffer => {
    const value = record[field];
    const bytesOut = typeof value === 'string' ? Buffer.from(value, 'base64') : Buffer.alloc(0);
    if (bytesOut.length !== sizeBytes) fail(`${field} is not ${sizeBytes} bytes of base64`);
    return bytesOut;
  };
  const publicKey = decode('publicKey', sodium.crypto_box_PUBLICKEYBYTES);
  const secretKey = decode('secretKey', sodium.crypto_box_SECRETKEYBYTES);
  if (!Buffer.from(sodium.crypto_scalarmult_base(secretKey)).equals(publicKey)) fail('public key does not belong to the secret key');
  return { boxid, publicKey, secretKey };
}

/** Reads this machine's box key if it exists; checks it belongs to `boxid`. */
export function readBoxKey(configDir: string, boxid: string): BoxKey | undefined {
  const path = join(configDir, boxKeyFileName);
  const bytes = readSmallFileSync(path);
  if (bytes === undefined) return undefined;
  const key = decodeBoxKey(bytes, path);
  if (key.boxid !== boxid) {
    throw new FsError('BAD_KEY', `box key was made for boxid ${key.boxid}, this machine's boxid is ${boxid}`, path);
  }
  return key;
}

/** This machine's box key, created (mode 0600) on first use. */
export function loadOrCreateBoxKey(configDir: string, boxid: string): BoxKey {
  const existing = readBoxKey(configDir, boxid);
  if (existing !== undefined) return existing;
  ensureConfigDir(configDir);
  const pair = sodium.crypto_box_keypair();
  const record = {
    format: boxKeyFormat, version: 1, boxid,
    publicKey: Buffer.from(pair.publicKey).toString('base64'),
    secretKey: Buffer.from(pair.privateKey).toString('base64'),
    createdNs: (BigInt(Date.now()) * 1_000_000n).toString(),
  };
  const bytes = Buffer.from(`${JSON.stringify(record, null, 2)}\n`, 'utf8');
  writeNewFileSync(join(configDir, boxKeyFileName), bytes, 0o600);
  bytes.fill(0);
  sodium.memzero(pair.privateKey);
  const key = readBoxKey(configDir, boxid);
  if (key === undefined) throw new FsError('ASSERT', 'box key vanished right after it was written', configDir);
  return key;
}

/** The 24-digit fingerprint of (boxid, publicKey), as 6 groups of 4 digits separated by spaces. */
export function fingerprintOf(boxid: string, publicKey: Uint8Array): string {
  const digest = sodium.crypto_generichash(32, Buffer.concat([fingerprintContext, Buffer.from(boxid, 'hex'), publicKey]), null);
  const value = BigInt(`0x${Buffer.from(digest.subarray(0, 16)).toString('hex')}`) % 10n ** 24n;
  const digits = value.toString().padStart(24, '0');
  return (digits.match(/.{4}/g) ?? []).join(' ');
}
