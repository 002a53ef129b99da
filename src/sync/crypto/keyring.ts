/**
 * Key management of an encrypted sync dir: creating it (init), asking to join (request), letting a
 * machine in (grant), the passphrase alternative, rotating a machine out (revoke), and loading
 * the keys this machine holds (loadKeyring) for the sync layer.
 *
 * Lifecycles, in order (each step adds files; nothing is modified or removed):
 * - init: 1. refuse if the dir is already marked or holds archives; 2. make generation 1's key;
 *   3. publish this machine's request; 4. seal the key to this machine; 5. write the generation
 *   record; 6. write keys/fs.json, the marker (commit point: from here the dir is encrypted).
 * - grant: 1. this machine must hold the newest generation; 2. read the requester's public key and
 *   recompute its fingerprint (the caller shows it and gets a confirmation); 3. seal every
 *   generation to it as `keys/<boxid>.<keyId>.sealed`.
 * - revoke: 1. this machine must hold the newest generation; 2. members = every boxid with a sealed
 *   file, less every boxid any generation revoked, less the target; 3. make a new key; 4. seal all
 *   generations (old and new) to each remaining member; 5. write the generation record naming the
 *   target as revoked. The revoked machine keeps what it had (old generations), never the new one.
 *
 * Trust: grants use crypto_box_seal, which is anonymous. The fingerprint comparison proves to the
 * granter that the request came from the machine in front of the person; `zippy-key show` prints a
 * filesystem fingerprint (a hash of generation 1's key check) that members compare to confirm they
 * got the real key. A machine revoked earlier that colludes with the server could still seal a key
 * of its own making to members (no signatures yet); members only adopt keys in sealed files
 * addressed to them, and the generation record's key check must match.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { FsError } from '../../errors.js';
import { isHex128 } from '../names.js';
import { fsKeyBytes, blockIdKeyBytes, passphraseLengthMaxBytes, passphraseMemLimitDefaultBytes,
  passphraseMemLimitMaxBytes, passphraseOpsLimitDefault, passphraseOpsLimitMax } from './limits.js';
import {
  type GenerationRecord, type KeyPayload, type KeysListing, type PassphraseRecord, type PayloadKey, decodePayload, encodePayload,
  formats, generationPath, keysDir, listKeysDir, markerPath, passphrasePath, readGeneration, readMarker, readPassphraseRecord,
  readRequest, readSealedRecord, requestPath, requestsDirName, sealedPath,
} from './keyfiles.js';
import { type BoxKey, fingerprintOf, loadOrCreateBoxid, loadOrCreateBoxKey, readBoxid, readBoxKey, writeNewFileSync } from './machine.js';
import { sodium } from './sodium.js';

/** What the sync layer needs from the keys of an encrypted sync dir. */
export interface Keyring {
  readonly encrypted: true;
  readonly fsid: string;
  readonly boxid: string;
  /** The newest generation this machine holds: seal new archives with it. */
  readonly currentKeyId: string;
  readonly currentGeneration: number;
  /** Every generation this machine holds, by key id: open archives with these. */
  readonly keys: ReadonlyMap<string, Buffer>;
  /** The generation number of every key id in `keys`. */
  readonly generations: ReadonlyMap<string, number>;
  /** Key of the block-id hash (derived from generation 1; stable across rotations). */
  readonly blockIdKey: Buffer;
  /** False when keys/ records a newer generation this machine was not (yet) given. */
  readonly upToDate: boolean;
  /** True when a newer generation revoked this machine. */
  readonly revoked: boolean;
}

export type KeyringResult = { readonly encrypted: false } | Keyring;

const keyCheckContext = Buffer.from('zippy-fs key check v1\0', 'ascii');
const passphraseContext = Buffer.from('zippy-fs passphrase v1\0', 'ascii');
/** crypto_kdf context (8 bytes) and subkey id of the block-id key. */
const blockIdKdfContext = 'zpblkid1';
const blockIdKdfSubkeyId = 1;

function nowNs(): string {
  return (BigInt(Date.now()) * 1_000_000n).toString();
}

function enrollHint(syncDir: string): string {
  return `run zippy-key request ${syncDir} and ask a member to grant (zippy-key grant <boxid> ${syncDir})`;
}

/** Hex key check of a generation: a keyed hash that confirms a key without revealing it. */
export function keyCheckOf(key: Uint8Array, fsid: string, keyId: string): string {
  const input = Buffer.concat([keyCheckContext, Buffer.from(fsid, 'hex'), Buffer.from(keyId, 'hex')]);
  return Buffer.from(sodium.crypto_generichash(16, input, key)).toString('hex');
}

/** The block-id key derived from generation 1's key. */
export function blockIdKeyOf(firstKey: Uint8Array): Buffer {
  return Buffer.from(sodium.crypto_kdf_derive_from_key(blockIdKeyBytes, blockIdKdfSubkeyId, blockIdKdfContext, firstKey));
}

/** A short fingerprint of the filesystem (generation 1's key check), equal on every member. */
export function filesystemFingerprint(generationOne: GenerationRecord): string {
  const digest = sodium.crypto_generichash(16, Buffer.from(`zippy-fs filesystem fingerprint v1\0${generationOne.fsid}${generationOne.keyCheck}`), null);
  const digits = (BigInt(`0x${Buffer.from(digest).toString('hex')}`) % 10n ** 16n).toString().padStart(16, '0');
  return (digits.match(/.{4}/g) ?? []).join(' ');
}

/** True when `syncDir` is marked encrypted (keys/fs.json exists). */
export function isEncrypted(syncDir: string): boolean {
  return existsSync(markerPath(syncDir));
}

function writeJson(path: string, record: object, mode = 0o644): boolean {
  return writeNewFileSync(path, Buffer.from(`${JSON.stringify(record, null, 2)}\n`, 'utf8'), mode);
}

function requireMarker(syncDir: string): { fsid: string } {
  const marker = readMarker(syncDir);
  if (marker === undefined) throw new FsError('BAD_INPUT', `not an encrypted sync dir (no keys/fs.json): run zippy-key init ${syncDir} first`, syncDir);
  return marker;
}

/** Reads every generation record (checked: fsid, key id matches the name). */
function readGenerations(syncDir: string, listing: KeysListing, fsid: string): GenerationRecord[] {
  return listing.generationKeyIds.map((keyId) => {
    const path = generationPath(syncDir, keyId);
    const record = readGeneration(path);
    if (record.keyId !== keyId) throw new FsError('BAD_KEY', `record names key ${record.keyId}, its file name says ${keyId}`, path);
    if (record.fsid !== fsid) throw new FsError('BAD_KEY', `record is for filesystem ${record.fsid}, this sync dir is ${fsid}`, path);
    return record;
  }).sort((a, b) => a.generation - b.generation || (a.keyId < b.keyId ? -1 : 1));
}

/** Opens every sealed file addressed to this machine and returns the union of keys, by key id. */
function openSealedFiles(syncDir: string, listing: KeysListing, fsid: string, boxKey: BoxKey): Map<string, PayloadKey> {
  const keys = new Map<string, PayloadKey>();
  for (const keyId of listing.sealedByBoxid.get(boxKey.boxid) ?? []) {
    const path = sealedPath(syncDir, boxKey.boxid, keyId);
    const record = readSealedRecord(path);
    if (record.boxid !== boxKey.boxid || record.keyId !== keyId || record.fsid !== fsid) {
      throw new FsError('BAD_KEY', 'sealed key file names another machine, key or filesystem than its name says', path);
    }
    let plain: Uint8Array;
    try {
      plain = sodium.crypto_box_seal_open(Buffer.from(record.sealed, 'base64'), boxKey.publicKey, boxKey.secretKey);
    } catch {
      throw new FsError('BAD_KEY', 'cannot open: not sealed to this machine\'s current key pair (was box-key.json replaced?)', path);
    }
    const payload = decodePayload(plain, { fsid, boxid: boxKey.boxid }, path);
    sodium.memzero(plain);
    for (const k of payload.keys) keys.set(k.keyId, k);
  }
  return keys;
}

/** Checks held keys against the generation records (a key whose record exists must match its key check). */
function checkKeysAgainstRecords(keys: Map<string, PayloadKey>, generations: GenerationRecord[], fsid: string, syncDir: string): void {
  for (const record of generations) {
    const held = keys.get(record.keyId);
    if (held === undefined) continue;
    if (held.generation !== record.generation || keyCheckOf(held.key, fsid, record.keyId) !== record.keyCheck) {
      throw new FsError('BAD_KEY', `the key this machine holds as ${record.keyId} does not match its generation record (injected or corrupt)`, generationPath(syncDir, record.keyId));
    }
  }
}

function newestOf<T extends { generation: number; keyId: string }>(items: Iterable<T>): T | undefined {
  let best: T | undefined;
  for (const item of items) {
    if (best === undefined || item.generation > best.generation || (item.generation === best.generation && item.keyId > best.keyId)) best = item;
  }
  return best;
}

function buildKeyring(syncDir: string, fsid: string, boxid: string, held: Map<string, PayloadKey>, generations: GenerationRecord[]): Keyring {
  const current = newestOf(held.values());
  if (current === undefined) throw new FsError('BAD_KEY', `this machine (boxid ${boxid}) holds no key for this sync dir: ${enrollHint(syncDir)}`, syncDir);
  const first = [...held.values()].filter((k) => k.generation === 1);
  if (first.length !== 1) throw new FsError('BAD_KEY', `this machine holds ${first.length} keys of generation 1, expected exactly one`, syncDir);
  const newestRecord = newestOf(generations);
  const upToDate = newestRecord === undefined || newestRecord.generation <= current.generation;
  const revoked = generations.some((g) => g.generation > current.generation && g.revoked.includes(boxid));
  const keys = new Map<string, Buffer>();
  const generationOf = new Map<string, number>();
  for (const k of held.values()) {
    keys.set(k.keyId, k.key);
    generationOf.set(k.keyId, k.generation);
  }
  return {
    encrypted: true, fsid, boxid, currentKeyId: current.keyId, currentGeneration: current.generation, keys, generations: generationOf,
    blockIdKey: blockIdKeyOf(first[0]!.key), upToDate, revoked,
  };
}

export interface LoadKeyringOptions {
  /** Try passphrase files when this machine has no sealed keys. */
  readonly passphrase?: string;
}

/**
 * The keys this machine holds for `syncDir`, or `{encrypted: false}` for a plain sync dir.
 * `configDir` is the zippy-fs config directory (defaultConfigDir()). FsError BAD_KEY when the dir
 * is encrypted and this machine holds no key ("run zippy-key request <sync> and ask a member to
 * grant"), when a key file is damaged, or when keys/fs.json is missing but key generations exist.
 */
export function loadKeyring(syncDir: string, configDir: string, options: LoadKeyringOptions = {}): KeyringResult {
  const marker = readMarker(syncDir);
  const listing = listKeysDir(syncDir);
  if (marker === undefined) {
    if (listing.generationKeyIds.length > 0) {
      throw new FsError('BAD_KEY', 'keys/ holds key generations but keys/fs.json (the encryption marker) is missing: refusing to treat the dir as plain', syncDir);
    }
    return { encrypted: false };
  }
  const generations = readGenerations(syncDir, listing, marker.fsid);
  const boxid = readBoxid(configDir);
  const boxKey = boxid === undefined ? undefined : readBoxKey(configDir, boxid);
  const held = boxKey === undefined ? new Map<string, PayloadKey>() : openSealedFiles(syncDir, listing, marker.fsid, boxKey);
  if (held.size === 0 && options.passphrase !== undefined) {
    for (const k of unwrapWithPassphrase(syncDir, listing, marker.fsid, options.passphrase)) held.set(k.keyId, k);
  }
  if (held.size === 0) {
    throw new FsError('BAD_KEY', `this machine (boxid ${boxid ?? 'not yet created'}) holds no key for this sync dir: ${enrollHint(syncDir)}`, syncDir);
  }
  checkKeysAgainstRecords(held, generations, marker.fsid, syncDir);
  return buildKeyring(syncDir, marker.fsid, boxid ?? '', held, generations);
}

/** Like loadKeyring, but a plain sync dir is an error (for commands that need keys). */
function requireKeyring(syncDir: string, configDir: string): Keyring {
  const result = loadKeyring(syncDir, configDir);
  if (!result.encrypted) throw new FsError('BAD_INPUT', `not an encrypted sync dir (no keys/fs.json): run zippy-key init ${syncDir} first`, syncDir);
  return result;
}

function payloadKeys(keyring: Keyring): PayloadKey[] {
  return [...keyring.keys].map(([keyId, key]) => {
    const generation = keyring.generations.get(keyId);
    if (generation === undefined) throw new FsError('ASSERT', `keyring lacks the generation of key ${keyId}`, keyring.fsid);
    return { keyId, generation, key };
  }).sort((a, b) => a.generation - b.generation);
}

/** Seals `keys` to `recipient` as keys/<boxid>.<newest keyId>.sealed. Returns false if that file existed. */
function sealTo(syncDir: string, fsid: string, recipient: { boxid: string; publicKey: Buffer }, keys: PayloadKey[], grantedBy: string): boolean {
  const newest = newestOf(keys);
  if (newest === undefined) throw new FsError('ASSERT', 'sealing an empty key list');
  const payload: KeyPayload = { fsid, boxid: recipient.boxid, keys };
  const plain = encodePayload(payload);
  const sealed = Buffer.from(sodium.crypto_box_seal(plain, recipient.publicKey)).toString('base64');
  plain.fill(0);
  return writeJson(sealedPath(syncDir, recipient.boxid, newest.keyId), {
    format: formats.sealed, version: 1, fsid, boxid: recipient.boxid, keyId: newest.keyId, generation: newest.generation,
    grantedBy, createdNs: nowNs(), sealed,
  });
}

/** Publishes this machine's request (public key + fingerprint). Idempotent for the same key; a different key under the same boxid is an error. */
function publishRequest(syncDir: string, boxKey: BoxKey): string {
  const fingerprint = fingerprintOf(boxKey.boxid, boxKey.publicKey);
  mkdirSync(join(keysDir(syncDir), requestsDirName), { recursive: true });
  const existing = readRequest(syncDir, boxKey.boxid);
  if (existing === undefined) {
    writeJson(requestPath(syncDir, boxKey.boxid), {
      format: formats.request, version: 1, boxid: boxKey.boxid, publicKey: boxKey.publicKey.toString('base64'), fingerprint, createdNs: nowNs(),
    });
  }
  const published = readRequest(syncDir, boxKey.boxid);
  if (published === undefined || published.publicKey !== boxKey.publicKey.toString('base64')) {
    throw new FsError('BAD_KEY', `a request for boxid ${boxKey.boxid} with a different public key is already published; `
      + 'this machine\'s key pair changed since: a new boxid is needed to enroll again', requestPath(syncDir, boxKey.boxid));
  }
  return fingerprint;
}

function newKeyId(): string {
  return randomBytes(8).toString('hex');
}

function writeGenerationRecord(syncDir: string, record: Omit<GenerationRecord, 'format' | 'version' | 'createdNs'>): void {
  const written = writeJson(generationPath(syncDir, record.keyId), { format: formats.generation, version: 1, ...record, createdNs: nowNs() });
  if (!written) throw new FsError('EEXIST', 'generation record exists', generationPath(syncDir, record.keyId));
}

export interface InitResult {
  readonly fsid: string;
  readonly keyId: string;
  readonly boxid: string;
  readonly fingerprint: string;
}

/**
 * What makes `syncDir` a plain sync dir already: archive files (`<32 hex>.zip|.idx`), plain zips
 * (any other `*.zip`, mounted as a union) and an `rmlog/` directory. Other files do not count.
 */
export function plainContentOf(syncDir: string): string[] {
  return readdirSync(syncDir).filter((n) => /\.(idx|zip)$/i.test(n) || n === 'rmlog').sort();
}

/** Marks `syncDir` encrypted with a fresh filesystem key sealed to this machine (lifecycle above). */
export function initEncryptedSyncDir(syncDir: string, configDir: string): InitResult {
  if (isEncrypted(syncDir)) throw new FsError('EEXIST', 'already an encrypted sync dir (keys/fs.json exists)', syncDir);
  const plain = plainContentOf(syncDir);
  if (plain.length > 0) {
    throw new FsError('BAD_INPUT', `holds ${plain.length} plain archive file(s) (${plain.slice(0, 3).join(', ')}${plain.length > 3 ? ', ...' : ''}): `
      + 'a sync dir is encrypted or not from its creation', syncDir);
  }
  const boxid = loadOrCreateBoxid(configDir);
  const boxKey = loadOrCreateBoxKey(configDir, boxid);
  const fsid = randomBytes(16).toString('hex');
  const keyId = newKeyId();
  const key = randomBytes(fsKeyBytes);
  mkdirSync(join(keysDir(syncDir), requestsDirName), { recursive: true });
  const fingerprint = publishRequest(syncDir, boxKey);
  sealTo(syncDir, fsid, boxKey, [{ keyId, generation: 1, key }], boxid);
  writeGenerationRecord(syncDir, { fsid, keyId, generation: 1, createdBy: boxid, members: [boxid], revoked: [], keyCheck: keyCheckOf(key, fsid, keyId) });
  key.fill(0);
  const marked = writeJson(markerPath(syncDir), {
    format: formats.marker, version: 1, fsid, createdNs: nowNs(), createdBy: boxid,
    envelope: 'ZIPPYENC v1: XChaCha20-Poly1305, 16 KiB chunks',
  });
  if (!marked) throw new FsError('EEXIST', 'another init marked this sync dir at the same time', syncDir);
  return { fsid, keyId, boxid, fingerprint };
}

/**
 * `zippy-fs -o encrypt`: makes a new or empty sync dir encrypted (as `init`), and is a no-op on one
 * that is encrypted already (whether or not this machine holds a key). FsError BAD_INPUT on a
 * plain sync dir with content: a sync dir stays plain or encrypted for life. Returns what it did.
 */
export function ensureEncryptedSyncDir(syncDir: string, configDir: string): { initialised: InitResult | undefined } {
  if (isEncrypted(syncDir)) return { initialised: undefined };
  try {
    return { initialised: initEncryptedSyncDir(syncDir, configDir) };
  } catch (e) {
    // Another process (a second mount with -o encrypt, or zippy-key init) marked it first.
    if (e instanceof FsError && e.code === 'EEXIST' && isEncrypted(syncDir)) return { initialised: undefined };
    throw e;
  }
}

/** Publishes this machine's public key into keys/requests/ and returns its boxid and fingerprint. */
export function requestAccess(syncDir: string, configDir: string): { boxid: string; fingerprint: string } {
  requireMarker(syncDir);
  const boxid = loadOrCreateBoxid(configDir);
  const boxKey = loadOrCreateBoxKey(configDir, boxid);
  return { boxid, fingerprint: publishRequest(syncDir, boxKey) };
}

/** The requester's published fingerprint, recomputed from its public key (never trusted from the file). */
export function requestFingerprint(syncDir: string, boxid: string): string {
  if (!isHex128(boxid)) throw new FsError('BAD_INPUT', `boxid ${JSON.stringify(boxid)} is not 32 lowercase hex`);
  const request = readRequest(syncDir, boxid);
  if (request === undefined) throw new FsError('ENOENT', `no request from ${boxid}: on that machine run zippy-key request ${syncDir}`, requestPath(syncDir, boxid));
  const fingerprint = fingerprintOf(boxid, Buffer.from(request.publicKey, 'base64'));
  if (fingerprint !== request.fingerprint) throw new FsError('BAD_KEY', 'the fingerprint written in the request does not match its public key', requestPath(syncDir, boxid));
  return fingerprint;
}

function revokedBoxids(generations: GenerationRecord[]): Set<string> {
  return new Set(generations.flatMap((g) => g.revoked));
}

/** Newest-generation member check shared by grant and revoke. */
function requireCurrentMember(syncDir: string, configDir: string): { keyring: Keyring; generations: GenerationRecord[]; listing: KeysListing } {
  const keyring = requireKeyring(syncDir, configDir);
  if (!keyring.upToDate) throw new FsError('BAD_KEY', 'this machine does not hold the newest key generation (revoked, or its grant has not arrived yet)', syncDir);
  const listing = listKeysDir(syncDir);
  return { keyring, generations: readGenerations(syncDir, listing, keyring.fsid), listing };
}

/**
 * Seals every generation this machine holds to `boxid` (whose request must exist and whose
 * fingerprint the caller has confirmed: pass it as `confirmedFingerprint`). Returns false when
 * this grant already existed.
 */
export function grantAccess(syncDir: string, configDir: string, boxid: string, confirmedFingerprint: string): boolean {
  const { keyring, generations } = requireCurrentMember(syncDir, configDir);
  const fingerprint = requestFingerprint(syncDir, boxid);
  if (fingerprint !== confirmedFingerprint) throw new FsError('BAD_KEY', 'the request changed after its fingerprint was confirmed', requestPath(syncDir, boxid));
  if (revokedBoxids(generations).has(boxid)) throw new FsError('EPERM', `boxid ${boxid} was revoked; a revoked machine cannot be granted again`, syncDir);
  const request = readRequest(syncDir, boxid)!;
  return sealTo(syncDir, keyring.fsid, { boxid, publicKey: Buffer.from(request.publicKey, 'base64') }, payloadKeys(keyring), keyring.boxid);
}

export interface RevokeResult {
  readonly keyId: string;
  readonly generation: number;
  readonly members: string[];
  /** True when passphrase files exist: they do not wrap the new generation. */
  readonly passphraseStale: boolean;
}

/** Rotates the key: a new generation sealed to every remaining member, never to `boxid`. */
export function revokeAccess(syncDir: string, configDir: string, boxid: string): RevokeResult {
  if (!isHex128(boxid)) throw new FsError('BAD_INPUT', `boxid ${JSON.stringify(boxid)} is not 32 lowercase hex`);
  const { keyring, generations, listing } = requireCurrentMember(syncDir, configDir);
  if (boxid === keyring.boxid) throw new FsError('BAD_INPUT', 'a machine cannot revoke itself; revoke it from another member', syncDir);
  const revoked = revokedBoxids(generations);
  if (!listing.sealedByBoxid.has(boxid) || revoked.has(boxid)) throw new FsError('ENOENT', `boxid ${boxid} is not a member`, syncDir);
  const members = [...listing.sealedByBoxid.keys()].filter((b) => b !== boxid && !revoked.has(b)).sort();
  const recipients = members.map((member) => {
    const request = readRequest(syncDir, member);
    if (request === undefined) throw new FsError('ENOENT', `member ${member} has no published public key`, requestPath(syncDir, member));
    return { boxid: member, publicKey: Buffer.from(request.publicKey, 'base64') };
  });
  const keyId = newKeyId();
  const generation = Math.max(...generations.map((g) => g.generation), keyring.currentGeneration) + 1;
  const key = randomBytes(fsKeyBytes);
  const keys = [...payloadKeys(keyring), { keyId, generation, key }];
  for (const recipient of recipients) sealTo(syncDir, keyring.fsid, recipient, keys, keyring.boxid);
  writeGenerationRecord(syncDir, { fsid: keyring.fsid, keyId, generation, createdBy: keyring.boxid, members, revoked: [boxid], keyCheck: keyCheckOf(key, keyring.fsid, keyId) });
  key.fill(0);
  return { keyId, generation, members, passphraseStale: listing.passphraseFiles.length > 0 };
}

// ---------------------------------------------------------------------------------------------
// Passphrase mode

export interface PassphraseLimits {
  readonly opsLimit: number;
  readonly memLimitBytes: number;
}

function passphraseBytes(passphrase: string): Buffer {
  const bytes = Buffer.from(passphrase.normalize('NFC'), 'utf8');
  if (bytes.length === 0) throw new FsError('BAD_INPUT', 'empty passphrase');
  if (bytes.length > passphraseLengthMaxBytes) throw new FsError('BAD_INPUT', `passphrase of ${bytes.length} bytes > ${passphraseLengthMaxBytes}`);
  return bytes;
}

function passphraseAd(fsid: string, keyId: string): Buffer {
  return Buffer.concat([passphraseContext, Buffer.from(fsid, 'hex'), Buffer.from(keyId, 'hex')]);
}

/** Wraps every generation this machine holds under `passphrase` (Argon2id) in a new passphrase file. */
export function setPassphrase(syncDir: string, configDir: string, passphrase: string,
  limits: PassphraseLimits = { opsLimit: passphraseOpsLimitDefault, memLimitBytes: passphraseMemLimitDefaultBytes }): { keyId: string; path: string } {
  const { keyring } = requireCurrentMember(syncDir, configDir);
  const salt = randomBytes(sodium.crypto_pwhash_SALTBYTES);
  const secret = passphraseBytes(passphrase);
  const wrapKey = sodium.crypto_pwhash(32, secret, salt, limits.opsLimit, limits.memLimitBytes, sodium.crypto_pwhash_ALG_ARGON2ID13);
  secret.fill(0);
  const nonce = randomBytes(sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
  const plain = encodePayload({ fsid: keyring.fsid, boxid: '', keys: payloadKeys(keyring) });
  const wrapped = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plain, passphraseAd(keyring.fsid, keyring.currentKeyId), null, nonce, wrapKey);
  plain.fill(0);
  sodium.memzero(wrapKey);
  const path = passphrasePath(syncDir, keyring.currentKeyId, randomBytes(8).toString('hex'));
  const record: PassphraseRecord = {
    format: formats.passphrase, version: 1, fsid: keyring.fsid, keyId: keyring.currentKeyId, generation: keyring.currentGeneration,
    kdf: 'argon2id13', salt: salt.toString('base64'), opsLimit: limits.opsLimit, memLimitBytes: limits.memLimitBytes,
    nonce: nonce.toString('base64'), wrapped: Buffer.from(wrapped).toString('base64'), createdNs: nowNs(), createdBy: keyring.boxid,
  };
  writeJson(path, record);
  return { keyId: keyring.currentKeyId, path };
}

/** Keys from the newest passphrase file `passphrase` opens; BAD_KEY when none does. */
function unwrapWithPassphrase(syncDir: string, listing: KeysListing, fsid: string, passphrase: string): PayloadKey[] {
  if (listing.passphraseFiles.length === 0) throw new FsError('BAD_KEY', `no passphrase is set for this sync dir: ${enrollHint(syncDir)}`, syncDir);
  const records = listing.passphraseFiles.map((path) => ({ path, record: readPassphraseRecord(path) }))
    .sort((a, b) => b.record.generation - a.record.generation);
  const secret = passphraseBytes(passphrase);
  try {
    for (const { path, record } of records) {
      if (record.fsid !== fsid) throw new FsError('BAD_KEY', `passphrase file is for filesystem ${record.fsid}, this sync dir is ${fsid}`, path);
      if (record.opsLimit > passphraseOpsLimitMax || record.memLimitBytes > passphraseMemLimitMaxBytes) {
        throw new FsError('BAD_KEY', `Argon2id limits ${record.opsLimit}/${record.memLimitBytes} over the maximum ${passphraseOpsLimitMax}/${passphraseMemLimitMaxBytes}`, path);
      }
      const wrapKey = sodium.crypto_pwhash(32, secret, Buffer.from(record.salt, 'base64'), record.opsLimit, record.memLimitBytes, sodium.crypto_pwhash_ALG_ARGON2ID13);
      let plain: Uint8Array | undefined;
      try {
        plain = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(null, Buffer.from(record.wrapped, 'base64'), passphraseAd(fsid, record.keyId),
          Buffer.from(record.nonce, 'base64'), wrapKey);
      } catch {
        plain = undefined;
      } finally {
        sodium.memzero(wrapKey);
      }
      if (plain === undefined) continue;
      const payload = decodePayload(plain, { fsid, boxid: '' }, path);
      sodium.memzero(plain);
      if (!payload.keys.some((k) => k.keyId === record.keyId)) throw new FsError('BAD_KEY', `passphrase file does not carry its own key ${record.keyId}`, path);
      return payload.keys;
    }
  } finally {
    secret.fill(0);
  }
  throw new FsError('BAD_KEY', 'wrong passphrase: it opens none of the passphrase files', syncDir);
}

/**
 * Joins with a passphrase: unwraps the keys and seals them to this machine (publishing its
 * request too), so later loads need no passphrase. Returns the newest key id obtained.
 */
export function joinWithPassphrase(syncDir: string, configDir: string, passphrase: string): { boxid: string; keyId: string; fingerprint: string } {
  const { fsid } = requireMarker(syncDir);
  const listing = listKeysDir(syncDir);
  const keys = unwrapWithPassphrase(syncDir, listing, fsid, passphrase);
  const generations = readGenerations(syncDir, listing, fsid);
  const held = new Map(keys.map((k) => [k.keyId, k]));
  checkKeysAgainstRecords(held, generations, fsid, syncDir);
  const boxid = loadOrCreateBoxid(configDir);
  const boxKey = loadOrCreateBoxKey(configDir, boxid);
  const fingerprint = publishRequest(syncDir, boxKey);
  if (revokedBoxids(generations).has(boxid)) throw new FsError('EPERM', `boxid ${boxid} was revoked; a revoked machine cannot rejoin`, syncDir);
  sealTo(syncDir, fsid, boxKey, keys, boxid);
  return { boxid, keyId: newestOf(keys)!.keyId, fingerprint };
}

// ---------------------------------------------------------------------------------------------
// Status

export type MemberStatus = 'member' | 'pending' | 'no key' | 'revoked' | 'behind';

export interface KeyStatus {
  readonly syncDir: string;
  readonly encrypted: boolean;
  readonly boxid: string | undefined;
  readonly fingerprint: string | undefined;
  readonly status: MemberStatus | 'plain';
  /** Shown to compare between members: equal on every machine holding the real key. */
  readonly filesystemFingerprint: string | undefined;
  readonly fsid: string | undefined;
  readonly currentKeyId: string | undefined;
  readonly generationCount: number;
  readonly members: string[];
  readonly pendingRequests: { boxid: string; fingerprint: string }[];
  readonly revoked: string[];
  readonly passphraseSet: boolean;
  /** Why the keys could not be loaded, when status is not member. */
  readonly problem: string | undefined;
}

/** Everything `zippy-key show` prints; never any key material. Creates nothing. */
export function keyStatus(syncDir: string, configDir: string): KeyStatus {
  const marker = readMarker(syncDir);
  const boxid = readBoxid(configDir);
  const boxKey = boxid === undefined ? undefined : readBoxKey(configDir, boxid);
  const fingerprint = boxKey === undefined ? undefined : fingerprintOf(boxKey.boxid, boxKey.publicKey);
  const base = { syncDir, boxid, fingerprint };
  if (marker === undefined) {
    return { ...base, encrypted: false, status: 'plain', filesystemFingerprint: undefined, fsid: undefined, currentKeyId: undefined,
      generationCount: 0, members: [], pendingRequests: [], revoked: [], passphraseSet: false, problem: undefined };
  }
  const listing = listKeysDir(syncDir);
  const generations = readGenerations(syncDir, listing, marker.fsid);
  const revoked = revokedBoxids(generations);
  const members = [...listing.sealedByBoxid.keys()].filter((b) => !revoked.has(b)).sort();
  const pendingRequests = listing.requestBoxids.filter((b) => !listing.sealedByBoxid.has(b) && !revoked.has(b))
    .map((b) => {
      try {
        return { boxid: b, fingerprint: requestFingerprint(syncDir, b) };
      } catch (e) {
        if (e instanceof FsError && e.code === 'BAD_KEY') return { boxid: b, fingerprint: `invalid request: ${e.message}` };
        throw e;
      }
    });
  const first = generations.find((g) => g.generation === 1);
  let status: MemberStatus;
  let currentKeyId: string | undefined;
  let problem: string | undefined;
  try {
    const keyring = requireKeyring(syncDir, configDir);
    currentKeyId = keyring.currentKeyId;
    status = keyring.revoked ? 'revoked' : keyring.upToDate ? 'member' : 'behind';
  } catch (e) {
    if (!(e instanceof FsError) || e.code !== 'BAD_KEY') throw e;
    problem = e.message;
    status = boxid !== undefined && revoked.has(boxid) ? 'revoked' : boxid !== undefined && listing.requestBoxids.includes(boxid) ? 'pending' : 'no key';
  }
  return {
    ...base, encrypted: true, status, filesystemFingerprint: first === undefined ? undefined : filesystemFingerprint(first), fsid: marker.fsid,
    currentKeyId, generationCount: generations.length, members, pendingRequests, revoked: [...revoked].sort(),
    passphraseSet: listing.passphraseFiles.length > 0, problem,
  };
}
