/**
 * Codec of one block record in a segment file: a 32-byte header followed by the payload.
 *
 * Layout (all integers little-endian; docs/FORMAT.md "Segment files" has the same table):
 *
 *   offset size type  field
 *    0      4   u32   magic "ZBLK" (bytes 5a 42 4c 4b)
 *    4      1   u8    format version (1)
 *    5      1   u8    kind (1 = data block)
 *    6      2   u16   reserved, zero
 *    8      4   u32   payload length in bytes, 1..4096
 *   12      4   u32   CRC-32 (zlib) of the header with this field zeroed, then the payload
 *   16      8   u64   owner inode number (< 2^53)
 *   24      8   u64   owner block index (< 2^53)
 *   32      n   bytes payload, no padding
 *
 * A payload shorter than a block means the rest of the block reads as zeros; the codec only
 * stores what it is given. decode() checks magic, version, kind, reserved bits, length and
 * checksum before it trusts any field, and never reads outside the buffer it is given.
 */
import { crc32, recordChecksums } from '../crc32.js';
import { assert, corrupt } from '../errors.js';
import { blockSizeBytes } from '../limits.js';

/** Magic number as read with readUInt32LE: the bytes "ZBLK". */
export const recordMagic = 0x4b4c425a;
/** The magic as bytes, for searching a damaged segment for the next record. */
export const recordMagicBytes: Buffer = Buffer.from('ZBLK', 'latin1');
/** The only record format version this code writes and reads. */
export const recordFormatVersion = 1;
/** Kind of a record that holds the payload of one file block. */
export const recordKindData = 1;

export const magicOffset = 0;
export const magicSizeBytes = 4;
export const versionOffset = 4;
export const versionSizeBytes = 1;
export const kindOffset = 5;
export const kindSizeBytes = 1;
export const reservedOffset = 6;
export const reservedSizeBytes = 2;
export const payloadLengthOffset = 8;
export const payloadLengthSizeBytes = 4;
export const crcOffset = 12;
export const crcSizeBytes = 4;
export const inoOffset = 16;
export const inoSizeBytes = 8;
export const blockIndexOffset = 24;
export const blockIndexSizeBytes = 8;
/** Size of the record header; the payload starts here. */
export const headerSizeBytes = 32;

/** The header fields in order, for tests and for the format documentation. */
export const headerLayout: readonly { readonly name: string; readonly offset: number; readonly sizeBytes: number }[] = [
  { name: 'magic', offset: magicOffset, sizeBytes: magicSizeBytes },
  { name: 'version', offset: versionOffset, sizeBytes: versionSizeBytes },
  { name: 'kind', offset: kindOffset, sizeBytes: kindSizeBytes },
  { name: 'reserved', offset: reservedOffset, sizeBytes: reservedSizeBytes },
  { name: 'payloadLength', offset: payloadLengthOffset, sizeBytes: payloadLengthSizeBytes },
  { name: 'crc32', offset: crcOffset, sizeBytes: crcSizeBytes },
  { name: 'ino', offset: inoOffset, sizeBytes: inoSizeBytes },
  { name: 'blockIndex', offset: blockIndexOffset, sizeBytes: blockIndexSizeBytes },
];

/** Smallest payload a record holds (an all-zero block is not stored at all by the layer above). */
export const payloadLengthMinBytes = 1;
/** Largest payload a record holds: one block. */
export const payloadLengthMaxBytes = blockSizeBytes;
/** Largest record on disk. */
export const recordSizeMaxBytes = headerSizeBytes + payloadLengthMaxBytes;

/** One checksum, for the single-record path that uses recordChecksums. */
const oneChecksum = new Uint32Array(1);
const u32Span = 2 ** 32;
/** Largest high half of a u64 that keeps the value below 2^53. */
const u53HighMax = 2 ** 21 - 1;

/** A decoded record; `payload` is a view into the buffer given to decode(). */
export interface DecodedRecord {
  readonly kind: number;
  readonly ino: number;
  readonly blockIndex: number;
  readonly payload: Buffer;
  readonly sizeBytes: number;
}

/** Returns the on-disk size of a record with a payload of `payloadLengthBytes`. */
export function size(payloadLengthBytes: number): number {
  return headerSizeBytes + payloadLengthBytes;
}

/** Writes a data record for (ino, blockIndex, payload) at `target[at]` and returns its size; the caller sized `target` with size(). */
export function encode(target: Buffer, at: number, ino: number, blockIndex: number, payload: Uint8Array): number {
  const sizeBytes = headerSizeBytes + payload.length;
  if (!(at >= 0 && at + sizeBytes <= target.length)) assert(false, `record of ${sizeBytes} bytes at ${at} fits in a buffer of ${target.length}`);
  encodeHeader(target, at, ino, blockIndex, payload);
  target.set(payload, at + headerSizeBytes);
  return sizeBytes;
}

/**
 * Writes the header of a data record for (ino, blockIndex, payload) at `target[at]`, checksum
 * included; the payload follows it on disk but need not follow it in memory (gather writes).
 */
export function encodeHeader(target: Buffer, at: number, ino: number, blockIndex: number, payload: Uint8Array): void {
  encodeHeaderUnsealed(target, at, ino, blockIndex, payload);
  // The crc field is zero at this point: the checksum is the header's CRC continued over the payload.
  target.writeUInt32LE(crc32(payload, crc32(target.subarray(at, at + headerSizeBytes))), at + crcOffset);
}

/**
 * Like encodeHeader, but leaves the crc field zero: sealHeaders() fills it, for a whole batch of
 * headers with one native call. A header must not reach the disk unsealed.
 */
export function encodeHeaderUnsealed(target: Buffer, at: number, ino: number, blockIndex: number, payload: Uint8Array): void {
  const length = payload.length;
  // One cheap test on the hot path; the precise assertion messages are built only on failure.
  if (!(length >= payloadLengthMinBytes && length <= payloadLengthMaxBytes && Number.isSafeInteger(ino) && ino >= 0
    && Number.isSafeInteger(blockIndex) && blockIndex >= 0 && at >= 0 && at + headerSizeBytes <= target.length)) {
    assertEncodeInput(target, at, ino, blockIndex, length);
  }
  target.writeUInt32LE(recordMagic, at + magicOffset);
  target.writeUInt8(recordFormatVersion, at + versionOffset);
  target.writeUInt8(recordKindData, at + kindOffset);
  target.writeUInt16LE(0, at + reservedOffset);
  target.writeUInt32LE(length, at + payloadLengthOffset);
  target.writeUInt32LE(0, at + crcOffset);
  writeU53(target, at + inoOffset, ino);
  writeU53(target, at + blockIndexOffset, blockIndex);
}

/**
 * Writes the checksums of `count` records whose headers lie back to back from `headers[at]`
 * (written by encodeHeaderUnsealed or encodeHeader) and whose payloads are
 * payloads[payloadFirst + i * payloadStep], with one native call. `scratch` holds at least
 * `count` values.
 */
export function sealHeaders(headers: Buffer, at: number, count: number, payloads: readonly Uint8Array[], payloadFirst: number,
  payloadStep: number, scratch: Uint32Array): void {
  recordChecksums(headers, at, headerSizeBytes, payloads, payloadFirst, payloadStep, count, scratch);
  for (let i = 0; i < count; i++) headers.writeUInt32LE(scratch[i]!, at + i * headerSizeBytes + crcOffset);
}

/**
 * Computes into `out[0..count)`, with one native call, the checksums that `count` records whose
 * headers lie back to back from `headers[at]` and whose payloads are
 * payloads[payloadFirst + i * payloadStep] should store; tryVerifySplit takes them. The
 * headers are only read.
 */
export function computeChecksums(headers: Buffer, at: number, count: number, payloads: readonly Uint8Array[], payloadFirst: number,
  payloadStep: number, out: Uint32Array): void {
  recordChecksums(headers, at, headerSizeBytes, payloads, payloadFirst, payloadStep, count, out);
}

/**
 * Decodes and verifies the record at `buf[at]`; throws CORRUPT naming `file` and `fileOffset`
 * when anything is wrong. Never returns fields of a record whose checksum failed.
 */
export function decode(buf: Buffer, at: number, file: string, fileOffset: number): DecodedRecord {
  const result = tryDecode(buf, at);
  if (typeof result === 'string') throw corrupt(result, recordPlace(file, fileOffset));
  return result;
}

/** Like decode(), but returns the reason as a string instead of throwing (for scans that expect damage). */
export function tryDecode(buf: Buffer, at: number): DecodedRecord | string {
  const available = buf.length - at;
  const header = tryDecodeHeader(buf, at);
  if (typeof header === 'string') return header;
  const sizeBytes = headerSizeBytes + header.payloadLengthBytes;
  if (available < sizeBytes) return `truncated record: ${available} of ${sizeBytes} bytes`;
  const computed = checksum(buf, at, sizeBytes);
  if (header.crc32 !== computed) return checksumMismatch(header.crc32, computed);
  return { kind: header.kind, ino: header.ino, blockIndex: header.blockIndex, payload: buf.subarray(at + headerSizeBytes, at + sizeBytes), sizeBytes };
}

/**
 * Verifies a record read by a scatter read: its header at `header[at]` (in a scratch buffer the
 * caller owns: without `computed`, the crc field is zeroed by this check) and its payload,
 * exactly the length the header gives, in `payload`. `computed`, when given, is the checksum
 * computeChecksums() computed for this header and payload. Returns the owner, or the reason
 * the record is bad.
 */
export function tryVerifySplit(header: Buffer, at: number, payload: Uint8Array, computed?: number): { ino: number; blockIndex: number } | string {
  const fields = tryDecodeHeader(header, at);
  if (typeof fields === 'string') return fields;
  if (fields.payloadLengthBytes !== payload.length) return `record holds ${fields.payloadLengthBytes} payload bytes, location says ${payload.length}`;
  if (computed === undefined) {
    header.writeUInt32LE(0, at + crcOffset);
    computed = crc32(payload, crc32(header.subarray(at, at + headerSizeBytes)));
  }
  if (fields.crc32 !== computed) return checksumMismatch(fields.crc32, computed);
  return { ino: fields.ino, blockIndex: fields.blockIndex };
}

interface HeaderFields {
  readonly kind: number;
  readonly payloadLengthBytes: number;
  readonly crc32: number;
  readonly ino: number;
  readonly blockIndex: number;
}

/** The header fields at `buf[at]` after every check that needs no payload, or the reason they are bad. */
function tryDecodeHeader(buf: Buffer, at: number): HeaderFields | string {
  const available = buf.length - at;
  if (at < 0 || available < headerSizeBytes) return `truncated record header: ${Math.max(0, available)} of ${headerSizeBytes} bytes`;
  const magic = buf.readUInt32LE(at + magicOffset);
  if (magic !== recordMagic) return `bad record magic 0x${hex32(magic)}, expected 0x${hex32(recordMagic)}`;
  const version = buf.readUInt8(at + versionOffset);
  if (version !== recordFormatVersion) return `unsupported record format version ${version}, expected ${recordFormatVersion}`;
  const kind = buf.readUInt8(at + kindOffset);
  if (kind !== recordKindData) return `unknown record kind ${kind}`;
  const reserved = buf.readUInt16LE(at + reservedOffset);
  if (reserved !== 0) return `reserved field is 0x${reserved.toString(16)}, expected 0`;
  const length = buf.readUInt32LE(at + payloadLengthOffset);
  if (length < payloadLengthMinBytes || length > payloadLengthMaxBytes) {
    return `payload length ${length} outside ${payloadLengthMinBytes}..${payloadLengthMaxBytes}`;
  }
  const inoHigh = buf.readUInt32LE(at + inoOffset + 4);
  const blockIndexHigh = buf.readUInt32LE(at + blockIndexOffset + 4);
  if (inoHigh > u53HighMax) return `ino high word 0x${hex32(inoHigh)} exceeds 2^53`;
  if (blockIndexHigh > u53HighMax) return `block index high word 0x${hex32(blockIndexHigh)} exceeds 2^53`;
  return {
    kind,
    payloadLengthBytes: length,
    crc32: buf.readUInt32LE(at + crcOffset),
    ino: inoHigh * u32Span + buf.readUInt32LE(at + inoOffset),
    blockIndex: blockIndexHigh * u32Span + buf.readUInt32LE(at + blockIndexOffset),
  };
}

function checksumMismatch(stored: number, computed: number): string {
  return `checksum mismatch: stored 0x${hex32(stored)}, computed 0x${hex32(computed)}`;
}

/** The place string errors use for a record: the segment file and the record's offset in it. */
export function recordPlace(file: string, fileOffset: number): string {
  return `${file} offset ${fileOffset}`;
}

/** CRC-32 of the header with the crc field taken as zero, followed by the payload. */
function checksum(buf: Buffer, at: number, sizeBytes: number): number {
  recordChecksums(buf, at, headerSizeBytes, [buf.subarray(at + headerSizeBytes, at + sizeBytes)], 0, 1, 1, oneChecksum);
  return oneChecksum[0]!;
}

function assertEncodeInput(target: Buffer, at: number, ino: number, blockIndex: number, length: number): void {
  assert(length >= payloadLengthMinBytes && length <= payloadLengthMaxBytes,
    `payload length ${length} within ${payloadLengthMinBytes}..${payloadLengthMaxBytes}`);
  assert(Number.isSafeInteger(ino) && ino >= 0, `ino ${ino} is a u53`);
  assert(Number.isSafeInteger(blockIndex) && blockIndex >= 0, `block index ${blockIndex} is a u53`);
  assert(at >= 0 && at + headerSizeBytes <= target.length, `record header at ${at} fits in a buffer of ${target.length}`);
}

function writeU53(target: Buffer, at: number, value: number): void {
  target.writeUInt32LE(value % u32Span, at);
  target.writeUInt32LE(Math.floor(value / u32Span), at + 4);
}

function hex32(n: number): string {
  return n.toString(16).padStart(8, '0');
}
