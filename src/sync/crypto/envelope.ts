/**
 * The sealed-file envelope: how an archive's zip or idx is stored in an encrypted sync dir.
 *
 * Layout: a 64-byte header, then the plaintext in chunks of `envelopeChunkSizeBytes` (16 KiB; the
 * last chunk may be shorter, and is empty only when the whole plaintext is), each chunk encrypted
 * with XChaCha20-Poly1305 (IETF) and followed by its 16-byte tag. Chunk i uses the 24-byte nonce
 * `noncePrefix (16 random bytes from the header) || u64le(i)` and the additional data
 * `header (all 64 bytes) || u8 final` where final is 1 for the last chunk and 0 otherwise.
 *
 * What that guarantees, each by one mechanism:
 * - Confidentiality and integrity of every chunk: the AEAD.
 * - Order: the chunk index is in the nonce, so a moved or repeated chunk fails its tag.
 * - Truncation and extension: the final flag is in the additional data, and the number of chunks
 *   follows from the file size; cutting whole chunks off leaves a last chunk sealed with final = 0.
 * - Binding to one archive: the header (magic, version, kind, key id, archive name, nonce prefix)
 *   is the additional data of every chunk, so renaming a file, swapping a zip for an idx, or
 *   splicing chunks from another file (another nonce prefix) fails authentication.
 *
 * Decision: a STREAM construction over crypto_aead_xchacha20poly1305_ietf rather than libsodium's
 * crypto_secretstream. Secretstream ratchets its state from chunk to chunk, so reading one block
 * in the middle of a 1 GB archive would need every chunk before it decrypted. The importer reads
 * single blocks of zips lazily, so the envelope must allow reading any chunk alone; nonce = prefix
 * || index with the final flag in the additional data gives the same guarantees as secretstream
 * (the construction of Hoang, Reyhanitabar, Rogaway and Vizár, which secretstream also follows)
 * and random access. The alternative of sealing each block inside a visible zip would show block
 * counts and per-block compressed sizes to the server; decrypting whole zips into a local cache
 * would cost a full download and a plaintext copy before the first read.
 *
 * Speed: XChaCha20-Poly1305 is HChaCha20 (to derive a per-file subkey from the key and the first
 * 16 nonce bytes) followed by IETF ChaCha20-Poly1305 under the remaining 8 nonce bytes. The
 * subkey comes from libsodium once per file; the chunks go through Node's native (OpenSSL)
 * chacha20-poly1305, about five times the speed of libsodium's WebAssembly build. The result is
 * byte for byte libsodium's crypto_aead_xchacha20poly1305_ietf_encrypt (a test checks it).
 *
 * A header field `keyCheck` (a keyed hash of the nonce prefix under the key) lets a reader tell
 * "this key is wrong" (BAD_KEY) from "these bytes were changed" (BAD_ARCHIVE) before decrypting.
 *
 * Invariants: openSealed returns nothing until every chunk authenticated (an archive is rejected
 * whole, never half-applied); SealedReader authenticates the last chunk when it opens (so a
 * truncated file fails at open) and every chunk it returns bytes from.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { closeSync, openSync, readSync, fstatSync } from 'node:fs';
import { type FileHandle, open, unlink } from 'node:fs/promises';
import { FsError } from '../../errors.js';
import { isArchiveName } from '../names.js';
import { type BlockLocation, decodeBlockEntry } from '../zipfile.js';
import { blockEntrySpanBytes, checkBlockLocation } from '../zip-format.js';
import {
  envelopeChunkSizeBytes, envelopeHeaderSizeBytes, envelopePlainSizeMaxBytes, envelopeTagBytes, fsKeyBytes, keyIdBytes,
} from './limits.js';
import { sodium } from './sodium.js';

/** What a sealed file holds: an archive's zip or its idx. */
export type SealedKind = 'zip' | 'idx' | 'rm';
export const sealedKindCodes: Readonly<Record<SealedKind, number>> = { zip: 1, idx: 2, rm: 3 };

export const envelopeMagic = Buffer.from('ZIPPYENC', 'ascii');
export const envelopeFormatVersion = 1;

/** Field offsets and sizes of the envelope header; FORMAT.md has the same table. */
export const envelopeHeaderLayout = {
  magic: { offset: 0, size: 8 },
  formatVersion: { offset: 8, size: 2 },
  kind: { offset: 10, size: 1 },
  flags: { offset: 11, size: 1 },
  chunkSizeBytes: { offset: 12, size: 4 },
  keyId: { offset: 16, size: 8 },
  archiveName: { offset: 24, size: 16 },
  noncePrefix: { offset: 40, size: 16 },
  keyCheck: { offset: 56, size: 8 },
} as const;

const keyCheckContext = Buffer.from('zippy-fs envelope key check v1\0', 'ascii');

export interface EnvelopeHeader {
  readonly kind: SealedKind;
  /** 16 lowercase hex digits. */
  readonly keyId: string;
  /** 32 lowercase hex digits. */
  readonly archiveName: string;
  readonly noncePrefix: Buffer;
  readonly keyCheck: Buffer;
  /** The 64 header bytes as read or written (the additional data of every chunk). */
  readonly bytes: Buffer;
}

export interface SealOptions {
  /** The filesystem key of generation `keyId` (32 bytes). */
  readonly key: Uint8Array;
  /** 16 lowercase hex digits. */
  readonly keyId: string;
  /** The archive name (32 lowercase hex); bound into every chunk. */
  readonly archiveName: string;
  readonly kind: SealedKind;
}

export interface OpenOptions {
  /** Every key generation this machine holds, by key id (Keyring.keys). */
  readonly keys: ReadonlyMap<string, Uint8Array>;
  /** The archive name the file is expected to carry (from its file name). */
  readonly archiveName: string;
  readonly kind: SealedKind;
  /** Named in errors; default `<archiveName>.<kind>`. */
  readonly place?: string;
  /** Named in the BAD_KEY hint ("run zippy-key request <syncDir> ..."); default `<sync>`. */
  readonly syncDir?: string;
}

const keyIdPattern = /^[0-9a-f]{16}$/;

/** True when `s` is a key id: 16 lowercase hex digits. */
export function isKeyId(s: string): boolean {
  return keyIdPattern.test(s);
}

/** Number of chunks of a plaintext of `plainSizeBytes`: at least one (an empty file has one empty chunk). */
export function envelopeChunkCount(plainSizeBytes: number): number {
  return Math.max(1, Math.ceil(plainSizeBytes / envelopeChunkSizeBytes));
}

/** Exact size of the sealed file of a plaintext of `plainSizeBytes`. */
export function sealedSizeBytes(plainSizeBytes: number): number {
  return envelopeHeaderSizeBytes + plainSizeBytes + envelopeTagBytes * envelopeChunkCount(plainSizeBytes);
}

/**
 * The plaintext size a sealed file of `sizeBytes` carries; FsError BAD_ARCHIVE at `place` when no
 * plaintext seals to exactly that size (a cut inside a chunk) or it is over the limit.
 */
export function plainSizeOfSealed(sizeBytes: number, place: string): number {
  const bodyBytes = sizeBytes - envelopeHeaderSizeBytes;
  if (bodyBytes < envelopeTagBytes) {
    throw new FsError('BAD_ARCHIVE', `sealed file of ${sizeBytes} bytes is shorter than header and one tag (${envelopeHeaderSizeBytes + envelopeTagBytes})`, place);
  }
  const chunkCount = Math.ceil(bodyBytes / (envelopeChunkSizeBytes + envelopeTagBytes));
  const plainSizeBytes = bodyBytes - envelopeTagBytes * chunkCount;
  if (plainSizeBytes > envelopePlainSizeMaxBytes) {
    throw new FsError('BAD_ARCHIVE', `sealed file of ${sizeBytes} bytes > the limit ${envelopePlainSizeMaxBytes} (plaintext)`, place);
  }
  if (sealedSizeBytes(plainSizeBytes) !== sizeBytes) {
    throw new FsError('BAD_ARCHIVE', `sealed file of ${sizeBytes} bytes is not a whole number of chunks (truncated?)`, place);
  }
  return plainSizeBytes;
}

/** True when `bytes` starts with the envelope magic (a sealed file, as opposed to a plain zip or idx). */
export function isSealed(bytes: Uint8Array): boolean {
  return bytes.length >= envelopeMagic.length && envelopeMagic.equals(Buffer.from(bytes.buffer, bytes.byteOffset, envelopeMagic.length));
}

function keyCheckOf(key: Uint8Array, noncePrefix: Uint8Array): Buffer {
  const input = Buffer.concat([keyCheckContext, noncePrefix]);
  return Buffer.from(sodium.crypto_generichash(envelopeHeaderLayout.keyCheck.size, input, key));
}

function checkKey(key: Uint8Array, what: string): void {
  if (key.length !== fsKeyBytes) throw new FsError('ASSERT', `${what}: key of ${key.length} bytes, expected ${fsKeyBytes}`);
}

/** Encodes a fresh header (random nonce prefix) for `options`. */
function encodeHeader(options: SealOptions): EnvelopeHeader {
  const L = envelopeHeaderLayout;
  if (!isArchiveName(options.archiveName)) throw new FsError('ASSERT', `archive name ${JSON.stringify(options.archiveName)} is not 32 lowercase hex`);
  if (!isKeyId(options.keyId)) throw new FsError('ASSERT', `key id ${JSON.stringify(options.keyId)} is not 16 lowercase hex`);
  checkKey(options.key, `sealing ${options.archiveName}.${options.kind}`);
  const bytes = Buffer.alloc(envelopeHeaderSizeBytes);
  envelopeMagic.copy(bytes, L.magic.offset);
  bytes.writeUInt16LE(envelopeFormatVersion, L.formatVersion.offset);
  bytes.writeUInt8(sealedKindCodes[options.kind], L.kind.offset);
  bytes.writeUInt8(0, L.flags.offset);
  bytes.writeUInt32LE(envelopeChunkSizeBytes, L.chunkSizeBytes.offset);
  Buffer.from(options.keyId, 'hex').copy(bytes, L.keyId.offset);
  Buffer.from(options.archiveName, 'hex').copy(bytes, L.archiveName.offset);
  const noncePrefix = randomBytes(L.noncePrefix.size);
  noncePrefix.copy(bytes, L.noncePrefix.offset);
  const keyCheck = keyCheckOf(options.key, noncePrefix);
  keyCheck.copy(bytes, L.keyCheck.offset);
  return { kind: options.kind, keyId: options.keyId, archiveName: options.archiveName, noncePrefix, keyCheck, bytes };
}

/**
 * Decodes and checks a header against what the caller expects (kind and archive name). FsError
 * BAD_ARCHIVE at `place` for a wrong magic, version, kind, flags, chunk size or archive name.
 */
export function decodeEnvelopeHeader(bytes: Uint8Array, expect: { archiveName: string; kind: SealedKind }, place: string): EnvelopeHeader {
  const L = envelopeHeaderLayout;
  const fail = (message: string): never => {
    throw new FsError('BAD_ARCHIVE', message, place);
  };
  if (bytes.length < envelopeHeaderSizeBytes) fail(`${bytes.length} bytes, shorter than the envelope header (${envelopeHeaderSizeBytes})`);
  const header = Buffer.from(bytes.buffer, bytes.byteOffset, envelopeHeaderSizeBytes);
  if (!isSealed(header)) fail('not a sealed file (no ZIPPYENC magic): an encrypted sync dir holds only sealed archives');
  const version = header.readUInt16LE(L.formatVersion.offset);
  if (version !== envelopeFormatVersion) fail(`envelope format version ${version}, this build reads ${envelopeFormatVersion}`);
  const kindCode = header.readUInt8(L.kind.offset);
  const kind = (Object.keys(sealedKindCodes) as SealedKind[]).find((k) => sealedKindCodes[k] === kindCode) ?? fail(`unknown kind code ${kindCode}`);
  if (kind !== expect.kind) fail(`sealed as an ${kind}, read as an ${expect.kind} (swapped files?)`);
  const flags = header.readUInt8(L.flags.offset);
  if (flags !== 0) fail(`unknown flags 0x${flags.toString(16)}`);
  const chunkSizeBytes = header.readUInt32LE(L.chunkSizeBytes.offset);
  if (chunkSizeBytes !== envelopeChunkSizeBytes) fail(`chunk size ${chunkSizeBytes}, expected ${envelopeChunkSizeBytes}`);
  const archiveName = header.toString('hex', L.archiveName.offset, L.archiveName.offset + L.archiveName.size);
  if (archiveName !== expect.archiveName) fail(`sealed for archive ${archiveName}, found as ${expect.archiveName} (renamed or swapped)`);
  const field = (f: { offset: number; size: number }): Buffer => Buffer.from(header.subarray(f.offset, f.offset + f.size));
  return {
    kind, archiveName, keyId: field(L.keyId).toString('hex'), noncePrefix: field(L.noncePrefix), keyCheck: field(L.keyCheck),
    bytes: Buffer.from(header),
  };
}

/** The key for a header, checked: BAD_KEY when this machine lacks that generation or the key does not match. */
function keyForHeader(header: EnvelopeHeader, options: OpenOptions, place: string): Uint8Array {
  const key = options.keys.get(header.keyId);
  if (key === undefined) {
    const sync = options.syncDir ?? '<sync>';
    throw new FsError('BAD_KEY', `sealed with key ${header.keyId}, which this machine does not hold: `
      + `run zippy-key request ${sync} and ask a member to grant (zippy-key grant <boxid> ${sync})`, place);
  }
  checkKey(key, place);
  if (!keyCheckOf(key, header.noncePrefix).equals(header.keyCheck)) {
    throw new FsError('BAD_KEY', `the key this machine holds as ${header.keyId} is not the key that sealed this file (wrong key, or a changed header)`, place);
  }
  return key;
}

/** The per-chunk cipher state of one file: HChaCha20 subkey and the header as additional data. */
class ChunkCipher {
  private readonly subkey: Buffer;
  private readonly additionalData: Buffer;

  constructor(key: Uint8Array, private readonly header: EnvelopeHeader) {
    this.subkey = Buffer.from(sodium.crypto_core_hchacha20(header.noncePrefix, key, null));
    this.additionalData = Buffer.alloc(envelopeHeaderSizeBytes + 1);
    header.bytes.copy(this.additionalData, 0);
  }

  private iv(chunkIndex: number, isFinal: boolean): Buffer {
    const iv = Buffer.alloc(12);
    iv.writeBigUInt64LE(BigInt(chunkIndex), 4);
    this.additionalData[envelopeHeaderSizeBytes] = isFinal ? 1 : 0;
    return iv;
  }

  /** Appends the ciphertext and the tag of chunk `chunkIndex` to `out` (two parts, saving a copy). */
  seal(plain: Uint8Array, chunkIndex: number, isFinal: boolean, out: Buffer[]): void {
    const cipher = createCipheriv('chacha20-poly1305', this.subkey, this.iv(chunkIndex, isFinal), { authTagLength: envelopeTagBytes });
    cipher.setAAD(this.additionalData, { plaintextLength: plain.length });
    const body = cipher.update(plain);
    cipher.final();
    out.push(body, cipher.getAuthTag());
  }

  /** Plaintext of chunk `chunkIndex`, or undefined when its tag does not verify. */
  open(sealed: Uint8Array, chunkIndex: number, isFinal: boolean): Buffer | undefined {
    if (sealed.length < envelopeTagBytes) return undefined;
    const bodyLength = sealed.length - envelopeTagBytes;
    const decipher = createDecipheriv('chacha20-poly1305', this.subkey, this.iv(chunkIndex, isFinal), { authTagLength: envelopeTagBytes });
    decipher.setAAD(this.additionalData, { plaintextLength: bodyLength });
    decipher.setAuthTag(sealed.subarray(bodyLength));
    const plain = decipher.update(sealed.subarray(0, bodyLength));
    try {
      decipher.final();
    } catch {
      return undefined;
    }
    return plain;
  }

  get keyId(): string {
    return this.header.keyId;
  }
}

/**
 * Seals a stream of plaintext incrementally: `update` returns the sealed bytes ready so far (the
 * header first), `final` the rest. Holds at most one chunk of plaintext.
 */
export class Sealer {
  readonly header: EnvelopeHeader;
  private readonly cipher: ChunkCipher;
  /** Plaintext not yet sealed: at most one chunk, sealed once more data (or final) comes. */
  private readonly pending = Buffer.allocUnsafe(envelopeChunkSizeBytes);
  private pendingBytes = 0;
  private chunkIndex = 0;
  private headerEmitted = false;
  private finished = false;
  /** Plaintext bytes taken so far. */
  plainSizeBytes = 0;
  /** Sealed bytes returned so far. */
  sealedSizeBytes = 0;

  constructor(options: SealOptions) {
    this.header = encodeHeader(options);
    this.cipher = new ChunkCipher(options.key, this.header);
  }

  /** Takes more plaintext; returns sealed bytes to write next (possibly empty). */
  update(plain: Uint8Array): Buffer {
    return concatParts(this.updateParts(plain));
  }

  /** Seals the last chunk; returns the remaining sealed bytes. */
  final(): Buffer {
    return concatParts(this.finalParts());
  }

  /** As update, as a list of buffers (saves a copy when the caller gathers them anyway). */
  updateParts(plain: Uint8Array): Buffer[] {
    if (this.finished) throw new FsError('ASSERT', 'Sealer.update after final');
    this.plainSizeBytes += plain.length;
    if (this.plainSizeBytes > envelopePlainSizeMaxBytes) throw new FsError('LIMIT', `sealed plaintext over ${envelopePlainSizeMaxBytes} bytes`);
    const out = this.takeHeader();
    const input = Buffer.from(plain.buffer, plain.byteOffset, plain.byteLength);
    let offset = 0;
    while (offset < input.length) {
      // A full chunk is sealed only once more data follows it: the last chunk must carry final = 1.
      if (this.pendingBytes === envelopeChunkSizeBytes) {
        this.cipher.seal(this.pending, this.chunkIndex++, false, out);
        this.pendingBytes = 0;
      }
      if (this.pendingBytes === 0 && input.length - offset > envelopeChunkSizeBytes) {
        this.cipher.seal(input.subarray(offset, offset + envelopeChunkSizeBytes), this.chunkIndex++, false, out);
        offset += envelopeChunkSizeBytes;
        continue;
      }
      const copied = input.copy(this.pending, this.pendingBytes, offset, Math.min(input.length, offset + envelopeChunkSizeBytes - this.pendingBytes));
      this.pendingBytes += copied;
      offset += copied;
    }
    return this.count(out);
  }

  /** As final, as a list of buffers. */
  finalParts(): Buffer[] {
    if (this.finished) throw new FsError('ASSERT', 'Sealer.final called twice');
    this.finished = true;
    const out = this.takeHeader();
    this.cipher.seal(this.pending.subarray(0, this.pendingBytes), this.chunkIndex++, true, out);
    this.pendingBytes = 0;
    const parts = this.count(out);
    if (this.sealedSizeBytes !== sealedSizeBytes(this.plainSizeBytes)) {
      throw new FsError('ASSERT', `sealed ${this.sealedSizeBytes} bytes for ${this.plainSizeBytes}, expected ${sealedSizeBytes(this.plainSizeBytes)}`);
    }
    return parts;
  }

  private takeHeader(): Buffer[] {
    if (this.headerEmitted) return [];
    this.headerEmitted = true;
    return [this.header.bytes];
  }

  private count(parts: Buffer[]): Buffer[] {
    for (const part of parts) this.sealedSizeBytes += part.length;
    return parts;
  }
}

function concatParts(parts: Buffer[]): Buffer {
  return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
}

/** Seals a whole plaintext (one buffer or a sequence of chunks) into a sealed file's bytes. */
export function sealFile(plain: Uint8Array | Iterable<Uint8Array>, options: SealOptions): Buffer {
  const sealer = new Sealer(options);
  const out: Buffer[] = [];
  const parts = plain instanceof Uint8Array ? [plain] : plain;
  for (const part of parts) out.push(...sealer.updateParts(part));
  out.push(...sealer.finalParts());
  return Buffer.concat(out);
}

function authenticationFailure(chunkIndex: number, chunkCount: number, place: string): FsError {
  return new FsError('BAD_ARCHIVE', `chunk ${chunkIndex} of ${chunkCount} failed authentication: `
    + 'the file was changed, truncated, or belongs to another archive; rejected whole', place);
}

/**
 * Opens a sealed file held in memory and returns its plaintext, only after every chunk
 * authenticated. FsError BAD_KEY (no key of that generation, with the enrollment hint; or a wrong
 * key) or BAD_ARCHIVE (not sealed, wrong archive name or kind, truncated, changed), naming the file.
 */
export function openSealed(bytes: Uint8Array, options: OpenOptions): Buffer {
  const place = options.place ?? `${options.archiveName}.${options.kind}`;
  const header = decodeEnvelopeHeader(bytes, options, place);
  const key = keyForHeader(header, options, place);
  const plainSizeBytes = plainSizeOfSealed(bytes.length, place);
  const chunkCount = envelopeChunkCount(plainSizeBytes);
  const cipher = new ChunkCipher(key, header);
  const plain = Buffer.allocUnsafe(plainSizeBytes); // every byte is overwritten below, or the buffer is dropped
  const sealedChunkBytes = envelopeChunkSizeBytes + envelopeTagBytes;
  for (let chunkIndex = 0; chunkIndex < chunkCount; chunkIndex++) {
    const start = envelopeHeaderSizeBytes + chunkIndex * sealedChunkBytes;
    const end = Math.min(start + sealedChunkBytes, bytes.length);
    const chunk = cipher.open(bytes.subarray(start, end), chunkIndex, chunkIndex === chunkCount - 1);
    if (chunk === undefined) throw authenticationFailure(chunkIndex, chunkCount, place);
    chunk.copy(plain, chunkIndex * envelopeChunkSizeBytes);
  }
  return plain;
}

async function readExactly(handle: FileHandle, offset: number, length: number, place: string): Promise<Buffer> {
  const buffer = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await handle.read(buffer, done, length - done, offset + done);
    if (bytesRead === 0) throw new FsError('BAD_ARCHIVE', `short read at offset ${offset + done}: file ends before ${offset + length}`, place);
    done += bytesRead;
  }
  return buffer;
}

/**
 * Reads a sealed file from disk and opens it (for idx files, read whole). Checks the size against
 * `plainSizeMaxBytes` (as plaintext) before reading. Errors as openSealed; the place is the path.
 */
export async function readSealedFile(path: string, options: OpenOptions, plainSizeMaxBytes: number): Promise<Buffer> {
  let bytes: Buffer;
  try {
    const handle = await open(path, 'r');
    try {
      const sizeBytes = (await handle.stat()).size;
      if (sizeBytes > sealedSizeBytes(plainSizeMaxBytes)) {
        throw new FsError('BAD_ARCHIVE', `${sizeBytes} bytes > the limit ${sealedSizeBytes(plainSizeMaxBytes)} for a sealed ${options.kind}`, path);
      }
      // The header first: a file this machine holds no key for (a mount without a grant rescans
      // every archive every few seconds) costs one small read, not the whole file.
      keyForHeader(decodeEnvelopeHeader(await readExactly(handle, 0, Math.min(sizeBytes, envelopeHeaderSizeBytes), path), options, path), options, path);
      bytes = await readExactly(handle, 0, sizeBytes, path);
    } finally {
      await handle.close();
    }
  } catch (e) {
    if (e instanceof FsError) throw e;
    throw new FsError('BAD_ARCHIVE', `cannot read sealed file: ${e instanceof Error ? e.message : String(e)}`, path, { cause: e });
  }
  return openSealed(bytes, { ...options, place: options.place ?? path });
}

/** writeSealedFile gathers sealed bytes into writes of at least this size. */
const writeBatchBytes = 256 * 1024;
/** SealedReaderSync reads this many sealed chunks at once when verifying a whole file or reading on sequentially. */
const readAheadChunkCount = 16;

/**
 * Sealed bytes read ahead by a SealedReaderSync whose reads are sequential. One slot for the
 * process, not one per reader: the engine keeps a reader open per archive, so per-reader buffers
 * would grow with the archive count; a stream of sequential reads is what benefits.
 */
let readAhead: { reader: SealedReaderSync; firstChunk: number; chunkCount: number; bytes: Buffer } | undefined;

/** Receives plaintext in order (the shape of zipfile's ZipSink). */
export type PlainSink = (chunk: Buffer) => Promise<void> | void;

/**
 * Creates `path` (which must not exist), lets `produce` write plaintext into the sink, seals it on
 * the way, fsyncs and closes the file. On failure the file is removed. Returns what `produce`
 * returned and both sizes. Use as writeArchive's `writeZip` callback.
 */
export async function writeSealedFile<T>(path: string, options: SealOptions,
  produce: (sink: PlainSink) => Promise<T>): Promise<{ result: T; plainSizeBytes: number; sealedSizeBytes: number }> {
  const handle = await open(path, 'wx');
  const sealer = new Sealer(options);
  try {
    const writeAll = async (bytes: Buffer): Promise<void> => {
      let done = 0;
      while (done < bytes.length) done += (await handle.write(bytes, done, bytes.length - done)).bytesWritten;
    };
    // Sealed parts are gathered into writes of about writeBatchBytes (one system call and one
    // thread-pool round trip each, instead of one per 16 KiB chunk).
    let batch: Buffer[] = [];
    let batchBytes = 0;
    const flush = async (): Promise<void> => {
      if (batchBytes === 0) return;
      const bytes = batch.length === 1 ? batch[0]! : Buffer.concat(batch, batchBytes);
      batch = [];
      batchBytes = 0;
      await writeAll(bytes);
    };
    const take = (parts: Buffer[]): void => {
      for (const part of parts) {
        batch.push(part);
        batchBytes += part.length;
      }
    };
    const result = await produce(async (chunk) => {
      take(sealer.updateParts(chunk));
      if (batchBytes >= writeBatchBytes) await flush();
    });
    take(sealer.finalParts());
    await flush();
    await handle.sync();
    await handle.close();
    return { result, plainSizeBytes: sealer.plainSizeBytes, sealedSizeBytes: sealer.sealedSizeBytes };
  } catch (e) {
    await handle.close().catch(() => undefined);
    await unlink(path).catch(() => undefined);
    throw e;
  }
}

export interface SealedReaderOptions extends OpenOptions {
  /** When known (the idx records it), the plaintext size the file must carry. */
  readonly plainSizeBytes?: number;
}

/**
 * Random access into a sealed file on disk: reads and authenticates only the chunks a range
 * covers (a 4 KiB block costs one or two 16 KiB chunks), keeping the last four chunks decrypted
 * for sequential reads. The last chunk is authenticated at open, so truncation fails there.
 */
export class SealedReader {
  private readonly cache = new Map<number, Buffer>();
  private static readonly cachedChunkCountMax = 4;

  private constructor(readonly path: string, private readonly handle: FileHandle, private readonly cipher: ChunkCipher,
    readonly header: EnvelopeHeader, readonly plainSizeBytes: number, readonly sealedSizeBytes: number) {}

  /** Opens and checks `path` (header, key, size, last chunk); the caller closes it. */
  static async open(path: string, options: SealedReaderOptions): Promise<SealedReader> {
    const place = options.place ?? path;
    let handle: FileHandle;
    try {
      handle = await open(path, 'r');
    } catch (e) {
      throw new FsError('BAD_ARCHIVE', `cannot open sealed file: ${e instanceof Error ? e.message : String(e)}`, place, { cause: e });
    }
    try {
      const sizeBytes = (await handle.stat()).size;
      const headerBytes = await readExactly(handle, 0, Math.min(sizeBytes, envelopeHeaderSizeBytes), place);
      const header = decodeEnvelopeHeader(headerBytes, options, place);
      const key = keyForHeader(header, options, place);
      const plainSizeBytes = plainSizeOfSealed(sizeBytes, place);
      if (options.plainSizeBytes !== undefined && options.plainSizeBytes !== plainSizeBytes) {
        throw new FsError('BAD_ARCHIVE', `carries ${plainSizeBytes} bytes, its idx records ${options.plainSizeBytes}`, place);
      }
      const reader = new SealedReader(place, handle, new ChunkCipher(key, header), header, plainSizeBytes, sizeBytes);
      await reader.chunk(envelopeChunkCount(plainSizeBytes) - 1);
      return reader;
    } catch (e) {
      await handle.close().catch(() => undefined);
      throw e;
    }
  }

  /** `length` plaintext bytes from `offset`, authenticated. FsError BAD_ARCHIVE past the end or on a bad chunk. */
  async readAt(offset: number, length: number): Promise<Buffer> {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.plainSizeBytes) {
      throw new FsError('BAD_ARCHIVE', `read of ${length} bytes at ${offset} outside the ${this.plainSizeBytes} plaintext bytes`, this.path);
    }
    const out = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const position = offset + done;
      const chunkIndex = Math.floor(position / envelopeChunkSizeBytes);
      const chunk = await this.chunk(chunkIndex);
      const from = position - chunkIndex * envelopeChunkSizeBytes;
      done += chunk.copy(out, done, from, Math.min(chunk.length, from + length - done));
    }
    return out;
  }

  /**
   * Reads one block of a sealed archive zip by its idx block-table location: the same checks as
   * BlockZipReader.readBlock (location against the plaintext size, local header, name, CRC-32).
   */
  async readBlock(location: BlockLocation): Promise<Buffer> {
    checkBlockLocation(location, this.plainSizeBytes, 'BAD_ARCHIVE', this.path);
    const span = await this.readAt(location.headerOffset, blockEntrySpanBytes(location.storedSizeBytes));
    return decodeBlockEntry(span, location, this.path);
  }

  private async chunk(chunkIndex: number): Promise<Buffer> {
    const cached = this.cache.get(chunkIndex);
    if (cached !== undefined) return cached;
    const chunkCount = envelopeChunkCount(this.plainSizeBytes);
    const sealedChunkBytes = envelopeChunkSizeBytes + envelopeTagBytes;
    const start = envelopeHeaderSizeBytes + chunkIndex * sealedChunkBytes;
    const length = Math.min(sealedChunkBytes, this.sealedSizeBytes - start);
    const sealed = await readExactly(this.handle, start, length, this.path);
    const plain = this.cipher.open(sealed, chunkIndex, chunkIndex === chunkCount - 1);
    if (plain === undefined) throw authenticationFailure(chunkIndex, chunkCount, this.path);
    if (this.cache.size >= SealedReader.cachedChunkCountMax) {
      const oldest = this.cache.keys().next();
      if (oldest.done !== true) this.cache.delete(oldest.value);
    }
    this.cache.set(chunkIndex, plain);
    return plain;
  }

  /** The key id that sealed this file. */
  get keyId(): string {
    return this.cipher.keyId;
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}

/**
 * SealedReader with synchronous reads, for the inode layer's synchronous lazy block reads: the same
 * checks (header, key, size, last chunk at open; every chunk a read covers), one chunk cached.
 */
export class SealedReaderSync {
  private cached: { index: number; plain: Buffer } | undefined;

  private constructor(readonly path: string, private readonly fd: number, private readonly cipher: ChunkCipher,
    readonly plainSizeBytes: number, private readonly sealedSizeBytes: number) {}

  static open(path: string, options: SealedReaderOptions): SealedReaderSync {
    const place = options.place ?? path;
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (e) {
      throw new FsError('BAD_ARCHIVE', `cannot open sealed file: ${e instanceof Error ? e.message : String(e)}`, place, { cause: e });
    }
    try {
      const sizeBytes = fstatSync(fd).size;
      const headerBytes = readExactlySync(fd, 0, Math.min(sizeBytes, envelopeHeaderSizeBytes), place);
      const header = decodeEnvelopeHeader(headerBytes, options, place);
      const key = keyForHeader(header, options, place);
      const plainSizeBytes = plainSizeOfSealed(sizeBytes, place);
      if (options.plainSizeBytes !== undefined && options.plainSizeBytes !== plainSizeBytes) {
        throw new FsError('BAD_ARCHIVE', `carries ${plainSizeBytes} bytes, its idx records ${options.plainSizeBytes}`, place);
      }
      const reader = new SealedReaderSync(place, fd, new ChunkCipher(key, header), plainSizeBytes, sizeBytes);
      reader.chunk(envelopeChunkCount(plainSizeBytes) - 1);
      return reader;
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  /** `length` plaintext bytes from `offset`, authenticated. */
  readAt(offset: number, length: number): Buffer {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.plainSizeBytes) {
      throw new FsError('BAD_ARCHIVE', `read of ${length} bytes at ${offset} outside the ${this.plainSizeBytes} plaintext bytes`, this.path);
    }
    const out = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const position = offset + done;
      const chunkIndex = Math.floor(position / envelopeChunkSizeBytes);
      const chunk = this.chunk(chunkIndex);
      const from = position - chunkIndex * envelopeChunkSizeBytes;
      done += chunk.copy(out, done, from, Math.min(chunk.length, from + length - done));
    }
    return out;
  }

  /** One block of a sealed archive zip by its idx block-table location (as SealedReader.readBlock). */
  readBlock(location: BlockLocation): Buffer {
    checkBlockLocation(location, this.plainSizeBytes, 'BAD_ARCHIVE', this.path);
    return decodeBlockEntry(this.readAt(location.headerOffset, blockEntrySpanBytes(location.storedSizeBytes)), location, this.path);
  }

  /** Authenticates every chunk (an import checks a whole archive before applying any of it). */
  verifyAll(): void {
    const chunkCount = envelopeChunkCount(this.plainSizeBytes);
    for (let first = 0; first < chunkCount; first += readAheadChunkCount) {
      const count = Math.min(readAheadChunkCount, chunkCount - first);
      const bytes = this.readSealedChunks(first, count);
      for (let i = 0; i < count; i++) this.openChunk(first + i, this.sealedChunkIn(bytes, i));
    }
  }

  private chunk(chunkIndex: number): Buffer {
    if (this.cached?.index === chunkIndex) return this.cached.plain;
    let sealed: Buffer;
    const ahead = readAhead;
    if (ahead !== undefined && ahead.reader === this && chunkIndex >= ahead.firstChunk && chunkIndex < ahead.firstChunk + ahead.chunkCount) {
      sealed = this.sealedChunkIn(ahead.bytes, chunkIndex - ahead.firstChunk);
    } else if (this.cached !== undefined && chunkIndex === this.cached.index + 1) {
      // Sequential: read the next chunks in one go.
      const count = Math.min(readAheadChunkCount, envelopeChunkCount(this.plainSizeBytes) - chunkIndex);
      const bytes = this.readSealedChunks(chunkIndex, count);
      readAhead = { reader: this, firstChunk: chunkIndex, chunkCount: count, bytes };
      sealed = this.sealedChunkIn(bytes, 0);
    } else {
      sealed = this.readSealedChunks(chunkIndex, 1);
    }
    const plain = this.openChunk(chunkIndex, sealed);
    this.cached = { index: chunkIndex, plain };
    return plain;
  }

  /** The sealed bytes of `count` chunks from `firstChunk` (the last one may be short). */
  private readSealedChunks(firstChunk: number, count: number): Buffer {
    const sealedChunkBytes = envelopeChunkSizeBytes + envelopeTagBytes;
    const start = envelopeHeaderSizeBytes + firstChunk * sealedChunkBytes;
    return readExactlySync(this.fd, start, Math.min(count * sealedChunkBytes, this.sealedSizeBytes - start), this.path);
  }

  /** Chunk `i` of bytes read by readSealedChunks. */
  private sealedChunkIn(bytes: Buffer, i: number): Buffer {
    const sealedChunkBytes = envelopeChunkSizeBytes + envelopeTagBytes;
    return bytes.subarray(i * sealedChunkBytes, Math.min(bytes.length, (i + 1) * sealedChunkBytes));
  }

  private openChunk(chunkIndex: number, sealed: Buffer): Buffer {
    const chunkCount = envelopeChunkCount(this.plainSizeBytes);
    const plain = this.cipher.open(sealed, chunkIndex, chunkIndex === chunkCount - 1);
    if (plain === undefined) throw authenticationFailure(chunkIndex, chunkCount, this.path);
    return plain;
  }

  close(): void {
    if (readAhead?.reader === this) readAhead = undefined;
    closeSync(this.fd);
  }
}

function readExactlySync(fd: number, offset: number, length: number, place: string): Buffer {
  const buffer = Buffer.allocUnsafe(length); // every byte is read below, or the function throws
  let done = 0;
  while (done < length) {
    const n = readSync(fd, buffer, done, length - done, offset + done);
    if (n === 0) throw new FsError('BAD_ARCHIVE', `short read at offset ${offset + done}: file ends before ${offset + length}`, place);
    done += n;
  }
  return buffer;
}

/** Offsets in the layout table add up to the header size (checked at load, like the other codecs). */
function checkLayout(): void {
  let offset = 0;
  for (const field of Object.values(envelopeHeaderLayout)) {
    if (field.offset !== offset) throw new FsError('ASSERT', `envelope header field at ${field.offset}, expected ${offset}`);
    offset += field.size;
  }
  if (offset !== envelopeHeaderSizeBytes) throw new FsError('ASSERT', `envelope header fields sum to ${offset}, expected ${envelopeHeaderSizeBytes}`);
  if (envelopeHeaderLayout.keyId.size !== keyIdBytes) throw new FsError('ASSERT', 'key id field size');
}
checkLayout();
