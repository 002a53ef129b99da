/**
 * CRC-32 of zip and zlib (reflected polynomial 0xEDB88320, initial value and final xor
 * 0xFFFFFFFF), from zippy-fs's native addon (native/crc/): the same values as node's
 * zlib.crc32, bit for bit, several times faster (carry-less multiplication folding with
 * AVX-512/VPCLMULQDQ or PCLMULQDQ, chosen at load time from the CPU; slicing-by-8 tables
 * elsewhere). Shared by src/blocks and src/sync; imports nothing from the layers above.
 *
 * Decision (docs/ARCHITECTURE.md, "Native CRC-32"): every block record is checksummed on
 * each append and each read, and zlib.crc32 ran at about 4 GB/s plus about 0.3 us per call.
 *
 * The addon is loaded on first use (worker threads load it too: it is context-aware); when
 * it is missing the call throws ENOENT naming the path and the command that builds it.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fsError } from './errors.js';
import { nativeAddonPath } from './native-path.js';

/** The implementations the addon has; which ones run depends on the CPU (see crc32Implementations). */
export type Crc32Implementation = 'table' | 'pclmul' | 'vpclmulqdq';

/** Ids the addon gives the implementations (0 asks for the best one the CPU runs). */
const implementationIds: Readonly<Record<Crc32Implementation, number>> = { table: 1, pclmul: 2, vpclmulqdq: 3 };

interface CrcBinding {
  crc32(data: ArrayBufferView, value: number, impl?: number): number;
  recordChecksums(headers: Uint8Array, headerAt: number, headerStride: number, payloads: readonly Uint8Array[],
    payloadFirst: number, payloadStep: number, count: number, out: Uint32Array, impl?: number): void;
  implementations(): { name: Crc32Implementation; id: number }[];
  selected(): Crc32Implementation;
}

let loaded: CrcBinding | undefined;

/** Path of the compiled CRC-32 addon. */
export function crcAddonPath(): string {
  return nativeAddonPath('crc', 'crc32.node');
}

function load(): CrcBinding {
  if (loaded !== undefined) return loaded;
  const path = crcAddonPath();
  if (!existsSync(path)) throw fsError('ENOENT', 'CRC-32 addon not built: run `npm run build:native`', path);
  loaded = createRequire(import.meta.url)(path) as CrcBinding;
  return loaded;
}

/** zlib.crc32(data, value): the CRC-32 of `data`, continuing from the CRC-32 `value` of the bytes before it. */
export function crc32(data: ArrayBufferView, value = 0): number {
  return (loaded ?? load()).crc32(data, value);
}

/**
 * The block record checksums of a batch of records (src/blocks/record.ts): for i in
 * 0..count-1, out[i] = crc32(payload_i, crc32(header_i with its crc field, bytes 12..15,
 * taken as zero)), where header_i is the 32 bytes at headers[headerAt + i * headerStride] and
 * payload_i is payloads[payloadFirst + i * payloadStep]. The headers are only read. One native
 * call for the whole batch: the per-call cost is paid once.
 */
export function recordChecksums(headers: Uint8Array, headerAt: number, headerStride: number, payloads: readonly Uint8Array[],
  payloadFirst: number, payloadStep: number, count: number, out: Uint32Array): void {
  (loaded ?? load()).recordChecksums(headers, headerAt, headerStride, payloads, payloadFirst, payloadStep, count, out);
}

/** The implementations this CPU runs (tests and benches force each one). */
export function crc32Implementations(): Crc32Implementation[] {
  return load().implementations().map((i) => i.name);
}

/** The implementation crc32() and recordChecksums() use on this CPU. */
export function crc32Selected(): Crc32Implementation {
  return load().selected();
}

/** crc32() computed by the named implementation; throws when the CPU does not run it. For tests and benches. */
export function crc32With(impl: Crc32Implementation, data: ArrayBufferView, value = 0): number {
  return load().crc32(data, value, implementationId(impl));
}

/** recordChecksums() computed by the named implementation. For tests and benches. */
export function recordChecksumsWith(impl: Crc32Implementation, headers: Uint8Array, headerAt: number, headerStride: number,
  payloads: readonly Uint8Array[], payloadFirst: number, payloadStep: number, count: number, out: Uint32Array): void {
  load().recordChecksums(headers, headerAt, headerStride, payloads, payloadFirst, payloadStep, count, out, implementationId(impl));
}

function implementationId(impl: Crc32Implementation): number {
  const id = implementationIds[impl] as number | undefined;
  if (id === undefined) throw fsError('EINVAL', `unknown CRC-32 implementation "${String(impl)}"`, crcAddonPath());
  return id;
}
