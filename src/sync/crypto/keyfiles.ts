/**
 * The files of an encrypted sync dir's `keys/` directory: names, JSON records, and their checked
 * decoders. Every file is written once, exclusively (temp + link), and never modified: a grant or
 * a revoke adds files, so the sync layer (which never overwrites) can carry them like archives.
 *
 *   keys/fs.json                          marker: this sync dir is encrypted (fsid, creator)
 *   keys/generation.<keyId>.json          one per key generation: number, members, revoked, key check
 *   keys/requests/<boxid>.pub             a machine's public key and fingerprint, asking to join
 *   keys/<boxid>.<keyId>.sealed           every generation up to <keyId>, sealed to <boxid>'s key
 *   keys/passphrase.<keyId>.<8 hex>.json  every generation up to <keyId>, wrapped under a passphrase
 *
 * No file holds key material in clear: keys appear only inside crypto_box_seal ciphertexts and
 * passphrase-wrapped AEAD ciphertexts. The key check in a generation file is a keyed hash (the
 * key is the hash key), which confirms a key without revealing it.
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { FsError } from '../../errors.js';
import { isHex128 } from '../names.js';
import { isKeyId } from './envelope.js';
import { keyDirEntryCountMax, keyGenerationCountMax, keyMemberCountMax } from './limits.js';
import { readSmallFileSync } from './machine.js';
import { sodium } from './sodium.js';

export const keysDirName = 'keys';
export const requestsDirName = 'requests';
export const markerFileName = 'fs.json';

export const formats = {
  marker: 'zippy-fs-encrypted',
  generation: 'zippy-fs-key-generation',
  request: 'zippy-fs-key-request',
  sealed: 'zippy-fs-sealed-keys',
  payload: 'zippy-fs-key-payload',
  passphrase: 'zippy-fs-passphrase',
} as const;

export function keysDir(syncDir: string): string {
  return join(syncDir, keysDirName);
}
export function markerPath(syncDir: string): string {
  return join(syncDir, keysDirName, markerFileName);
}
export function generationPath(syncDir: string, keyId: string): string {
  return join(syncDir, keysDirName, `generation.${keyId}.json`);
}
export function requestPath(syncDir: string, boxid: string): string {
  return join(syncDir, keysDirName, requestsDirName, `${boxid}.pub`);
}
export function sealedPath(syncDir: string, boxid: string, keyId: string): string {
  return join(syncDir, keysDirName, `${boxid}.${keyId}.sealed`);
}
export function passphrasePath(syncDir: string, keyId: string, suffix: string): string {
  return join(syncDir, keysDirName, `passphrase.${keyId}.${suffix}.json`);
}

export interface MarkerRecord {
  readonly format: typeof formats.marker;
  readonly version: 1;
  readonly fsid: string;
  readonly createdNs: string;
  readonly createdBy: string;
  readonly envelope: string;
}

export interface GenerationRecord {
  readonly format: typeof formats.generation;
  readonly version: 1;
  readonly fsid: string;
  readonly keyId: string;
  readonly generation: number;
  readonly createdNs: string;
  readonly createdBy: string;
  /** Boxids this generation was sealed to when it was made (later grants add sealed files). */
  readonly members: string[];
  /** Boxids this rotation revoked (empty for generation 1). */
  readonly revoked: string[];
  /** 32 hex: BLAKE2b-128 keyed with the key over context, fsid and key id. */
  readonly keyCheck: string;
}

export interface RequestRecord {
  readonly format: typeof formats.request;
  readonly version: 1;
  readonly boxid: string;
  readonly publicKey: string;
  readonly fingerprint: string;
  readonly createdNs: string;
}

export interface SealedRecord {
  readonly format: typeof formats.sealed;
  readonly version: 1;
  readonly fsid: string;
  readonly boxid: string;
  readonly keyId: string;
  readonly generation: number;
  readonly grantedBy: string;
  readonly createdNs: string;
  /** base64 of crypto_box_seal(payload JSON, recipient public key). */
  readonly sealed: string;
}

export interface PassphraseRecord {
  readonly format: typeof formats.passphrase;
  readonly version: 1;
  readonly fsid: string;
  readonly keyId: string;
  readonly generation: number;
  readonly kdf: 'argon2id13';
  readonly salt: string;
  readonly opsLimit: number;
  readonly memLimitBytes: number;
  readonly nonce: string;
  /** base64 of crypto_aead_xchacha20poly1305_ietf_encrypt(payload JSON, ad, nonce, argon2id key). */
  readonly wrapped: string;
  readonly createdNs: string;
  readonly createdBy: string;
}

/** One key generation as carried inside a sealed or wrapped payload. */
export interface PayloadKey {
  readonly keyId: string;
  readonly generation: number;
  readonly key: Buffer;
}

/** The plaintext inside a sealed file or a passphrase file. */
export interface KeyPayload {
  readonly fsid: string;
  /** The recipient boxid for sealed files; '' for passphrase files. */
  readonly boxid: string;
  readonly keys: PayloadKey[];
}

type Json = Record<string, unknown>;

function parseRecord(bytes: Buffer, format: string, path: string): Json {
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new FsError('BAD_KEY', 'key file is not JSON', path);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new FsError('BAD_KEY', 'key file is not a JSON object', path);
  const record = json as Json;
  if (record['format'] !== format || record['version'] !== 1) {
    throw new FsError('BAD_KEY', `format ${JSON.stringify(record['format'])} version ${JSON.stringify(record['version'])}, expected ${format} version 1`, path);
  }
  return record;
}

/** Field readers that throw BAD_KEY naming the file and field. */
class Fields {
  constructor(private readonly record: Json, private readonly path: string) {}

  /** The field's value, unchecked (for nested lists). */
  raw(field: string): unknown {
    return this.record[field];
  }

  private fail(field: string, what: string): never {
    throw new FsError('BAD_KEY', `field ${field}: ${what}`, this.path);
  }
  string(field: string, test: (s: string) => boolean, what: string): string {
    const value = this.record[field];
    if (typeof value !== 'string' || !test(value)) this.fail(field, `not ${what}`);
    return value;
  }
  hex128(field: string): string {
    return this.string(field, isHex128, '32 lowercase hex');
  }
  keyId(field: string): string {
    return this.string(field, isKeyId, '16 lowercase hex');
  }
  decimal(field: string): string {
    return this.string(field, (s) => /^[0-9]{1,20}$/.test(s), 'a decimal string');
  }
  base64(field: string, sizeBytes?: number): string {
    const value = this.string(field, (s) => /^[A-Za-z0-9+/]*={0,2}$/.test(s), 'base64');
    if (sizeBytes !== undefined && Buffer.from(value, 'base64').length !== sizeBytes) this.fail(field, `not ${sizeBytes} bytes`);
    return value;
  }
  integer(field: string, min: number, max: number): number {
    const value = this.record[field];
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) this.fail(field, `not an integer in ${min}..${max}`);
    return value;
  }
  boxids(field: string): string[] {
    const value = this.record[field];
    if (!Array.isArray(value) || value.length > keyMemberCountMax) this.fail(field, `not a list of at most ${keyMemberCountMax} boxids`);
    const list = value as unknown[];
    for (const item of list) if (typeof item !== 'string' || !isHex128(item)) this.fail(field, 'holds something that is not a boxid');
    return list as string[];
  }
}

/** Reads and checks a key file; undefined when it does not exist. */
function readRecord(path: string, format: string): Fields | undefined {
  const bytes = readSmallFileSync(path);
  return bytes === undefined ? undefined : new Fields(parseRecord(bytes, format, path), path);
}

export function readMarker(syncDir: string): MarkerRecord | undefined {
  const f = readRecord(markerPath(syncDir), formats.marker);
  if (f === undefined) return undefined;
  return {
    format: formats.marker, version: 1, fsid: f.hex128('fsid'), createdNs: f.decimal('createdNs'), createdBy: f.hex128('createdBy'),
    envelope: f.string('envelope', (s) => s.length < 200, 'a short string'),
  };
}

export function readGeneration(path: string): GenerationRecord {
  const f = readRecord(path, formats.generation);
  if (f === undefined) throw new FsError('BAD_KEY', 'generation file vanished', path);
  return {
    format: formats.generation, version: 1, fsid: f.hex128('fsid'), keyId: f.keyId('keyId'),
    generation: f.integer('generation', 1, keyGenerationCountMax), createdNs: f.decimal('createdNs'), createdBy: f.hex128('createdBy'),
    members: f.boxids('members'), revoked: f.boxids('revoked'), keyCheck: f.string('keyCheck', (s) => /^[0-9a-f]{32}$/.test(s), '32 hex'),
  };
}

export function readRequest(syncDir: string, boxid: string): RequestRecord | undefined {
  const f = readRecord(requestPath(syncDir, boxid), formats.request);
  if (f === undefined) return undefined;
  const record: RequestRecord = {
    format: formats.request, version: 1, boxid: f.hex128('boxid'), publicKey: f.base64('publicKey', sodium.crypto_box_PUBLICKEYBYTES),
    fingerprint: f.string('fingerprint', (s) => /^[0-9]{4}( [0-9]{4}){5}$/.test(s), '6 groups of 4 digits'), createdNs: f.decimal('createdNs'),
  };
  if (record.boxid !== boxid) throw new FsError('BAD_KEY', `request names boxid ${record.boxid}, its file name says ${boxid}`, requestPath(syncDir, boxid));
  return record;
}

export function readSealedRecord(path: string): SealedRecord {
  const f = readRecord(path, formats.sealed);
  if (f === undefined) throw new FsError('BAD_KEY', 'sealed key file vanished', path);
  return {
    format: formats.sealed, version: 1, fsid: f.hex128('fsid'), boxid: f.hex128('boxid'), keyId: f.keyId('keyId'),
    generation: f.integer('generation', 1, keyGenerationCountMax), grantedBy: f.hex128('grantedBy'), createdNs: f.decimal('createdNs'),
    sealed: f.base64('sealed'),
  };
}

export function readPassphraseRecord(path: string): PassphraseRecord {
  const f = readRecord(path, formats.passphrase);
  if (f === undefined) throw new FsError('BAD_KEY', 'passphrase file vanished', path);
  return {
    format: formats.passphrase, version: 1, fsid: f.hex128('fsid'), keyId: f.keyId('keyId'),
    generation: f.integer('generation', 1, keyGenerationCountMax), kdf: f.string('kdf', (s) => s === 'argon2id13', 'argon2id13') as 'argon2id13',
    salt: f.base64('salt', sodium.crypto_pwhash_SALTBYTES), opsLimit: f.integer('opsLimit', 1, 2 ** 32 - 1),
    memLimitBytes: f.integer('memLimitBytes', 8192, 2 ** 42), nonce: f.base64('nonce', sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES),
    wrapped: f.base64('wrapped'), createdNs: f.decimal('createdNs'), createdBy: f.hex128('createdBy'),
  };
}

/** Encodes a key payload (the plaintext that gets sealed or wrapped). The caller zeroes the result after use. */
export function encodePayload(payload: KeyPayload): Buffer {
  return Buffer.from(JSON.stringify({
    format: formats.payload, version: 1, fsid: payload.fsid, boxid: payload.boxid,
    keys: payload.keys.map((k) => ({ keyId: k.keyId, generation: k.generation, key: k.key.toString('base64') })),
  }), 'utf8');
}

/** Decodes a payload and checks it names `fsid` and `boxid` (so a sealed file cannot be moved to another fs or machine). */
export function decodePayload(bytes: Uint8Array, expect: { fsid: string; boxid: string }, path: string): KeyPayload {
  const f = new Fields(parseRecord(Buffer.from(bytes), formats.payload, path), path);
  const fsid = f.hex128('fsid');
  const boxid = f.string('boxid', (s) => s === '' || isHex128(s), 'a boxid or empty');
  if (fsid !== expect.fsid) throw new FsError('BAD_KEY', `keys are for filesystem ${fsid}, this sync dir is ${expect.fsid}`, path);
  if (boxid !== expect.boxid) throw new FsError('BAD_KEY', `keys are sealed for boxid ${boxid}, expected ${expect.boxid || '(none)'}`, path);
  const list = f.raw('keys');
  if (!Array.isArray(list) || list.length === 0 || list.length > keyGenerationCountMax) {
    throw new FsError('BAD_KEY', `field keys: not a list of 1..${keyGenerationCountMax} keys`, path);
  }
  const keys = (list as unknown[]).map((item) => {
    if (typeof item !== 'object' || item === null) throw new FsError('BAD_KEY', 'field keys: an entry is not an object', path);
    const k = new Fields(item as Json, path);
    return { keyId: k.keyId('keyId'), generation: k.integer('generation', 1, keyGenerationCountMax), key: Buffer.from(k.base64('key', 32), 'base64') };
  });
  return { fsid, boxid, keys };
}

export interface KeysListing {
  readonly generationKeyIds: string[];
  /** keyIds of sealed files by boxid. */
  readonly sealedByBoxid: Map<string, string[]>;
  readonly passphraseFiles: string[];
  readonly requestBoxids: string[];
}

/** Lists keys/ (bounded); unknown names and temp files are ignored. */
export function listKeysDir(syncDir: string): KeysListing {
  const listing: KeysListing = { generationKeyIds: [], sealedByBoxid: new Map(), passphraseFiles: [], requestBoxids: [] };
  const names = readdirBounded(keysDir(syncDir));
  for (const name of names) {
    let m: RegExpExecArray | null;
    if ((m = /^generation\.([0-9a-f]{16})\.json$/.exec(name)) !== null) listing.generationKeyIds.push(m[1]!);
    else if ((m = /^([0-9a-f]{32})\.([0-9a-f]{16})\.sealed$/.exec(name)) !== null) {
      const list = listing.sealedByBoxid.get(m[1]!) ?? [];
      list.push(m[2]!);
      listing.sealedByBoxid.set(m[1]!, list);
    } else if (/^passphrase\.[0-9a-f]{16}\.[0-9a-f]{16}\.json$/.test(name)) listing.passphraseFiles.push(join(keysDir(syncDir), name));
  }
  for (const name of readdirBounded(join(keysDir(syncDir), requestsDirName))) {
    const m = /^([0-9a-f]{32})\.pub$/.exec(name);
    if (m !== null) listing.requestBoxids.push(m[1]!);
  }
  listing.generationKeyIds.sort();
  listing.passphraseFiles.sort();
  listing.requestBoxids.sort();
  return listing;
}

function readdirBounded(dir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  if (names.length > keyDirEntryCountMax) throw new FsError('LIMIT', `${names.length} entries > the limit ${keyDirEntryCountMax}`, dir);
  return names;
}
