/**
 * Codec of the 32-byte header at the start of every segment file.
 *
 * Layout (all integers little-endian; docs/FORMAT.md "Segment files" has the same table):
 *
 *   offset size type  field
 *    0      4   u32   magic "ZSEG" (bytes 5a 53 45 47)
 *    4      1   u8    format version (1)
 *    5      3   -     reserved, zero
 *    8      4   u32   segment number (equals the number in the file name)
 *   12      4   u32   maximum segment size in bytes the file was written with
 *   16     12   -     reserved, zero
 *   28      4   u32   CRC-32 (zlib) of bytes 0..27
 *
 * The header is written in the same write as the first records of the segment, so a torn
 * creation leaves a file whose header does not verify; recovery treats that as torn.
 */
import { crc32 } from '../crc32.js';
import { assert, corrupt } from '../errors.js';
import { segmentSizeMaxBytesLimit } from '../limits.js';

/** Magic number as read with readUInt32LE: the bytes "ZSEG". */
export const segmentMagic = 0x4745535a;
/** The only segment format version this code writes and reads. */
export const segmentFormatVersion = 1;

export const magicOffset = 0;
export const magicSizeBytes = 4;
export const versionOffset = 4;
export const versionSizeBytes = 1;
export const reserved1Offset = 5;
export const reserved1SizeBytes = 3;
export const segmentNumberOffset = 8;
export const segmentNumberSizeBytes = 4;
export const segmentSizeMaxOffset = 12;
export const segmentSizeMaxSizeBytes = 4;
export const reserved2Offset = 16;
export const reserved2SizeBytes = 12;
export const crcOffset = 28;
export const crcSizeBytes = 4;
/** Size of the segment header; the first record starts here. */
export const headerSizeBytes = 32;

/** The header fields in order, for tests and for the format documentation. */
export const headerLayout: readonly { readonly name: string; readonly offset: number; readonly sizeBytes: number }[] = [
  { name: 'magic', offset: magicOffset, sizeBytes: magicSizeBytes },
  { name: 'version', offset: versionOffset, sizeBytes: versionSizeBytes },
  { name: 'reserved1', offset: reserved1Offset, sizeBytes: reserved1SizeBytes },
  { name: 'segmentNumber', offset: segmentNumberOffset, sizeBytes: segmentNumberSizeBytes },
  { name: 'segmentSizeMax', offset: segmentSizeMaxOffset, sizeBytes: segmentSizeMaxSizeBytes },
  { name: 'reserved2', offset: reserved2Offset, sizeBytes: reserved2SizeBytes },
  { name: 'crc32', offset: crcOffset, sizeBytes: crcSizeBytes },
];

/** The fields of a segment header. */
export interface SegmentHeader {
  readonly segment: number;
  readonly segmentSizeMaxBytes: number;
}

/** Returns the on-disk size of a segment header (fixed). */
export function size(): number {
  return headerSizeBytes;
}

/** Writes the header of `segment` at `target[at]` and returns its size. */
export function encode(target: Buffer, at: number, header: SegmentHeader): number {
  assert(Number.isSafeInteger(header.segment) && header.segment >= 0 && header.segment < 2 ** 32,
    `segment number ${header.segment} is a u32`);
  assert(Number.isSafeInteger(header.segmentSizeMaxBytes) && header.segmentSizeMaxBytes > headerSizeBytes
    && header.segmentSizeMaxBytes <= segmentSizeMaxBytesLimit, `segment size ${header.segmentSizeMaxBytes} within limits`);
  assert(at >= 0 && at + headerSizeBytes <= target.length, `segment header at ${at} fits in a buffer of ${target.length}`);
  target.fill(0, at, at + headerSizeBytes);
  target.writeUInt32LE(segmentMagic, at + magicOffset);
  target.writeUInt8(segmentFormatVersion, at + versionOffset);
  target.writeUInt32LE(header.segment, at + segmentNumberOffset);
  target.writeUInt32LE(header.segmentSizeMaxBytes, at + segmentSizeMaxOffset);
  target.writeUInt32LE(crc32(target.subarray(at, at + crcOffset)), at + crcOffset);
  return headerSizeBytes;
}

/** Decodes and verifies the header at `buf[at]`; throws CORRUPT naming `file` when it does not verify. */
export function decode(buf: Buffer, at: number, file: string): SegmentHeader {
  const result = tryDecode(buf, at);
  if (typeof result === 'string') throw corrupt(result, `${file} offset ${at}`);
  return result;
}

/** Like decode(), but returns the reason as a string instead of throwing. */
export function tryDecode(buf: Buffer, at: number): SegmentHeader | string {
  const available = buf.length - at;
  if (at < 0 || available < headerSizeBytes) return `truncated segment header: ${Math.max(0, available)} of ${headerSizeBytes} bytes`;
  const magic = buf.readUInt32LE(at + magicOffset);
  if (magic !== segmentMagic) return `bad segment magic 0x${magic.toString(16).padStart(8, '0')}`;
  const version = buf.readUInt8(at + versionOffset);
  if (version !== segmentFormatVersion) return `unsupported segment format version ${version}, expected ${segmentFormatVersion}`;
  const stored = buf.readUInt32LE(at + crcOffset);
  const computed = crc32(buf.subarray(at, at + crcOffset));
  if (stored !== computed) {
    return `segment header checksum mismatch: stored 0x${stored.toString(16)}, computed 0x${computed.toString(16)}`;
  }
  if (!isZero(buf, at + reserved1Offset, reserved1SizeBytes) || !isZero(buf, at + reserved2Offset, reserved2SizeBytes)) {
    return 'segment header reserved bytes are not zero';
  }
  const segmentSizeMaxBytes = buf.readUInt32LE(at + segmentSizeMaxOffset);
  if (segmentSizeMaxBytes <= headerSizeBytes || segmentSizeMaxBytes > segmentSizeMaxBytesLimit) {
    return `segment size ${segmentSizeMaxBytes} outside ${headerSizeBytes + 1}..${segmentSizeMaxBytesLimit}`;
  }
  return { segment: buf.readUInt32LE(at + segmentNumberOffset), segmentSizeMaxBytes };
}

function isZero(buf: Buffer, at: number, sizeBytes: number): boolean {
  for (let i = at; i < at + sizeBytes; i++) if (buf[i] !== 0) return false;
  return true;
}
