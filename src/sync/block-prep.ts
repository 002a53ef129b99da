/**
 * The per-block work of writing an archive zip that needs no I/O: CRC-32 and the deflate-or-store
 * decision. Shared by the synchronous zip writer (zipfile.ts: repacks, tests) and the publisher's
 * block worker thread (block-worker-thread.ts), so both produce the same entries.
 *
 * Invariant: a block is stored deflated only when the deflated form is smaller than the block;
 * otherwise the stored bytes are the block itself.
 *
 * Decision (docs/ARCHITECTURE.md, "Incompressible blocks"): a whole block whose byte histogram is
 * nearly flat (order-0 entropy at least incompressibleEntropyBitsMin bits per byte: random,
 * encrypted or already compressed data) is stored without trying deflate, which costs about
 * 50 us per block and gains nothing on such data. Deflate could still shrink such a block when it
 * repeats strings within its 4 KiB; measured: on .gz files 40 of 13,422 skipped blocks would have
 * shrunk, by 3.8 KB in 56 MB (0.007 %); on PNG/JPEG 22 of 292, by 361 bytes; on random data none.
 */
import * as zlib from 'node:zlib';
import { crc32 } from '../crc32.js';
import { blockSizeBytes } from '../limits.js';
import { zipMethodDeflate, zipMethodStore, type ZipMethod } from './zip-format.js';

/** A block ready for the zip writer: its id, CRC-32 and size of the plain bytes, and what the entry stores. */
export interface PreparedBlock {
  readonly blockId: Uint8Array;
  readonly crc32: number;
  readonly sizeBytes: number;
  readonly method: ZipMethod;
  readonly stored: Buffer;
}

/**
 * Order-0 entropy, in bits per byte, from which a whole block is taken for incompressible. Random
 * 4 KiB blocks measure about 7.955 (a finite sample of a flat distribution); text and binaries
 * measure far lower.
 */
export const incompressibleEntropyBitsMin = 7.93;

/** c * log2(c) for every byte count a block can have. */
const countLog2 = new Float64Array(blockSizeBytes + 1).map((_, c) => (c === 0 ? 0 : c * Math.log2(c)));
const histogram = new Uint32Array(256);

/** Order-0 entropy of a whole block's bytes, in bits per byte (about 5 us per block). */
export function byteEntropyBits(block: Uint8Array): number {
  histogram.fill(0);
  for (let i = 0; i < block.length; i++) histogram[block[i]!]!++;
  let sum = 0;
  for (let i = 0; i < 256; i++) sum += countLog2[histogram[i]!]!;
  return Math.log2(block.length) - sum / block.length;
}

/**
 * Deflates `data` at `level` (0: never) and keeps the deflated form only when it is smaller; a
 * whole block that looks incompressible (see incompressibleEntropyBitsMin) is stored untried.
 */
export function compressBlock(data: Buffer, level: number): { method: ZipMethod; stored: Buffer } {
  if (level === 0) return { method: zipMethodStore, stored: data };
  if (data.length === blockSizeBytes && byteEntropyBits(data) >= incompressibleEntropyBitsMin) return { method: zipMethodStore, stored: data };
  const deflated = zlib.deflateRawSync(data, { level });
  return deflated.length < data.length ? { method: zipMethodDeflate, stored: deflated } : { method: zipMethodStore, stored: data };
}

/** CRC-32 (the zip's) of `data`. */
export function crc32Of(data: Uint8Array): number {
  return crc32(data);
}
