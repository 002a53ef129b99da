/**
 * Zip files of the sync directory: archive zips this layer writes (block payloads), and plain zips
 * that anyone drops in (read-only, listed and read through yauzl).
 *
 * Archive zip layout: a directory entry `blocks/` first (so even an archive with no blocks is a
 * non-empty zip that `unzip -t` accepts), then one entry per distinct block named
 * `blocks/<32 hex of the block id>`, in the order given, then the central directory. Each block is
 * deflated (level 6 by default here; the publisher passes its own level) and stored deflated only
 * when that is smaller than the block; otherwise it is stored as is (block-prep.ts). The
 * publisher prepares blocks on its worker thread and hands them in through writePreparedBlockZip. Local headers carry CRC-32 and both sizes (no data descriptors)
 * and no extra field; zip64 records appear only where counts or offsets need them.
 *
 * Decision: the archive zip writer is hand-written (records in zip-format.ts) rather than yazl.
 * yazl 3.3 rescans its whole entry list from the first entry on every step, so writing n entries
 * costs O(n^2): 16,000 blocks took 17 s and a full archive (262,144 blocks) would take many
 * minutes. The writer needs only four record types, and it knows every offset as it writes, so the
 * block table comes for free. Interop is tested with `unzip -t`, Python's zipfile and yauzl.
 *
 * Invariants:
 * - Every block entry the writer emits ends exactly at `headerOffset + blockEntrySpanBytes(stored)`
 *   and its location passes `checkBlockLocation` before it is written (paired with the reader).
 * - Reading one block is one positional read of its local header, name and data, checked against
 *   the idx's block table (signature, flags, method, sizes, name, CRC-32 of the decoded bytes), with
 *   inflation bounded by the block size: a lying header cannot make the reader allocate more.
 * - Plain zips: entry count, declared sizes and compression ratios are bounded before any data is
 *   read; each entry name passes `checkZipEntryName`; an entry that fails is listed as rejected with
 *   a typed reason, never silently dropped and never fatal to the rest of the zip.
 * - Every error is an FsError whose place is the zip's path and whose message names the entry.
 */
import { type FileHandle, open, unlink } from 'node:fs/promises';
import { type Readable, Transform, type TransformCallback } from 'node:stream';
import * as zlib from 'node:zlib';
import yauzl from 'yauzl';
import { crc32 } from '../crc32.js';
import { FsError } from '../errors.js';
import { blockSizeBytes, symlinkLengthMaxBytes } from '../limits.js';
import {
  archiveBlockCountMax, blockIdBytes, plainZipDeflateRatioMax, plainZipEntryCountMax,
  plainZipEntrySizeMaxBytes, plainZipReadMaxBytesDefault,
} from './limits.js';
import { type PathRejection, checkZipEntryName, printableName } from './names.js';
import { compressBlock, crc32Of, type PreparedBlock } from './block-prep.js';
import {
  type BlockLocation, type ZipMethod, blockEntryName, blockEntryNameLengthBytes, blockEntryPrefix,
  blockEntrySpanBytes, checkBlockLocation, dosDateTime, encodeCentralHeader, encodeEndRecords,
  encodeLocalHeader, type EntryRecord, forbiddenFlagBits, hexOf, localHeaderFixedSizeBytes, localHeaderLayout,
  localHeaderSignature, zipMethodDeflate, zipMethodStore,
} from './zip-format.js';

export type { BlockLocation } from './zip-format.js';
export type { PreparedBlock } from './block-prep.js';

// ---------------------------------------------------------------------------------------------
// Writing archive zips

/** One block to put into an archive zip. */
export interface BlockPayload {
  /** 16 bytes, not all zero. */
  readonly blockId: Uint8Array;
  /** 1..blockSizeBytes bytes; copied, so the caller may reuse the buffer. */
  readonly data: Uint8Array;
}

export interface BlockZipOptions {
  /** Timestamp of every entry (default: now). Fixing it makes the output reproducible. */
  readonly mtime?: Date;
  /** zlib level 0..9; 0 stores blocks, anything else deflates them. Default 6. */
  readonly compressionLevel?: number;
  /** Write zip64 records even when not needed (tests use this to exercise zip64 readers). */
  readonly forceZip64?: boolean;
}

export interface BlockZipResult {
  /** One location per distinct block, sorted by block id: the idx block table. */
  readonly locations: BlockLocation[];
  /** Total bytes written. */
  readonly sizeBytes: number;
}

/** Receives the zip's bytes in order; awaited before the next chunk is produced. */
export type ZipSink = (chunk: Buffer) => Promise<void> | void;

const compressionLevelDefault = 6;
const fileEntryMode = 0o100644;
const dirEntryMode = 0o040755;
/** Central directory records concatenated per sink call. */
const centralBatchCount = 1024;

function checkPayload(blockId: Uint8Array, sizeBytes: number): void {
  if (blockId.length !== blockIdBytes) {
    throw new FsError('BAD_INPUT', `block id of ${blockId.length} bytes, expected ${blockIdBytes}`);
  }
  if (blockId.every((byte) => byte === 0)) throw new FsError('BAD_INPUT', 'the all-zero block id is a hole and carries no data');
  if (sizeBytes < 1 || sizeBytes > blockSizeBytes) {
    throw new FsError('BAD_INPUT', `block ${hexOf(blockId)}: ${sizeBytes} bytes outside 1..${blockSizeBytes}`);
  }
}

/**
 * Checks what a preparer (this file's, or the block worker's across a thread boundary) says about
 * a block before it becomes an entry: sizes, method and the deflate-only-when-smaller rule.
 */
function checkPrepared(block: PreparedBlock): void {
  checkPayload(block.blockId, block.sizeBytes);
  const hex = hexOf(block.blockId);
  if (block.method === zipMethodStore && block.stored.length !== block.sizeBytes) {
    throw new FsError('ASSERT', `block ${hex}: stored as is with ${block.stored.length} bytes, its size is ${block.sizeBytes}`);
  }
  if (block.method === zipMethodDeflate && (block.stored.length < 1 || block.stored.length >= block.sizeBytes)) {
    throw new FsError('ASSERT', `block ${hex}: deflated to ${block.stored.length} bytes, not smaller than its ${block.sizeBytes}`);
  }
  if (block.method !== zipMethodStore && block.method !== zipMethodDeflate) throw new FsError('ASSERT', `block ${hex}: method ${String(block.method)}`);
  if (!Number.isInteger(block.crc32) || block.crc32 < 0 || block.crc32 > 0xffffffff) throw new FsError('ASSERT', `block ${hex}: crc32 ${block.crc32}`);
}

/** Prepares payloads one at a time on this thread (CRC-32, deflate kept only when smaller). */
async function* prepareOnThread(blocks: Iterable<BlockPayload> | AsyncIterable<BlockPayload>, level: number): AsyncGenerator<PreparedBlock> {
  for await (const block of blocks) {
    checkPayload(block.blockId, block.data.length);
    // No copy of the data: the writer consumes it before the next block is asked for.
    const data = Buffer.from(block.data.buffer, block.data.byteOffset, block.data.byteLength);
    yield { blockId: Uint8Array.from(block.blockId), crc32: crc32Of(data), sizeBytes: data.length, ...compressBlock(data, level) };
  }
}

/** Streams the records of one archive zip to a sink, tracking offsets; see writeBlockZip. */
class ArchiveZipWriter {
  private offset = 0;
  private centralBatch: Buffer[] = [];
  private readonly centralChunks: Buffer[] = [];
  private centralCount = 0;
  /** Locations in write order, with the id's hex (which sorts like the id's bytes, and faster). */
  readonly locations: { hex: string; location: BlockLocation }[] = [];

  constructor(private readonly sink: ZipSink, private readonly dos: { dosDate: number; dosTime: number },
    private readonly forceZip64: boolean) {}

  private async emit(bytes: Buffer): Promise<void> {
    await this.sink(bytes);
    this.offset += bytes.length;
  }

  private addCentral(entry: EntryRecord): void {
    this.centralBatch.push(encodeCentralHeader(entry, this.forceZip64));
    this.centralCount++;
    if (this.centralBatch.length >= centralBatchCount) {
      this.centralChunks.push(Buffer.concat(this.centralBatch));
      this.centralBatch = [];
    }
  }

  async writeDirectory(): Promise<void> {
    const entry: EntryRecord = {
      name: Buffer.from(blockEntryPrefix, 'ascii'), method: zipMethodStore, crc32: 0, storedSizeBytes: 0,
      sizeBytes: 0, ...this.dos, unixMode: dirEntryMode, headerOffset: this.offset,
    };
    await this.emit(encodeLocalHeader(entry));
    this.addCentral(entry);
  }

  async writeBlock(block: PreparedBlock, hex: string): Promise<void> {
    const entry: EntryRecord = {
      name: Buffer.from(blockEntryPrefix + hex, 'ascii'), method: block.method, crc32: block.crc32,
      storedSizeBytes: block.stored.length, sizeBytes: block.sizeBytes, ...this.dos, unixMode: fileEntryMode,
      headerOffset: this.offset,
    };
    const location: BlockLocation = {
      blockId: block.blockId, headerOffset: entry.headerOffset, storedSizeBytes: entry.storedSizeBytes,
      sizeBytes: entry.sizeBytes, crc32: entry.crc32, method: entry.method,
    };
    // Paired with the reader's check: what the idx will say about this entry must hold now.
    checkBlockLocation(location, undefined, 'ASSERT', 'zip writer');
    await this.emit(Buffer.concat([encodeLocalHeader(entry), block.stored]));
    if (this.offset !== entry.headerOffset + blockEntrySpanBytes(entry.storedSizeBytes)) {
      throw new FsError('ASSERT', `zip writer: block entry ends at ${this.offset}, expected ${entry.headerOffset + blockEntrySpanBytes(entry.storedSizeBytes)}`);
    }
    this.addCentral(entry);
    this.locations.push({ hex, location });
  }

  /** Writes the central directory and end records; returns the zip's total size. */
  async finish(): Promise<number> {
    if (this.centralBatch.length > 0) this.centralChunks.push(Buffer.concat(this.centralBatch));
    this.centralBatch = [];
    const centralOffset = this.offset;
    for (const chunk of this.centralChunks) await this.emit(chunk);
    const centralSizeBytes = this.offset - centralOffset;
    await this.emit(encodeEndRecords(this.centralCount, centralOffset, centralSizeBytes, this.forceZip64));
    return this.offset;
  }
}

/**
 * Writes an archive zip of `blocks` to `sink` and returns each distinct block's location. A block
 * id given twice is stored once (its size and CRC-32 must match: FsError ASSERT otherwise). At most
 * `archiveBlockCountMax` distinct blocks (FsError LIMIT). Memory holds one block at a time plus
 * the central directory (about 85 bytes per block). Blocks are deflated on this thread.
 */
export async function writeBlockZip(blocks: Iterable<BlockPayload> | AsyncIterable<BlockPayload>,
  sink: ZipSink, options: BlockZipOptions = {}): Promise<BlockZipResult> {
  const level = options.compressionLevel ?? compressionLevelDefault;
  if (!Number.isInteger(level) || level < 0 || level > 9) throw new FsError('BAD_INPUT', `compression level ${level} not in 0..9`);
  return writePreparedBlockZip(prepareOnThread(blocks, level), sink, options);
}

/**
 * writeBlockZip for blocks whose CRC-32 and stored form were computed elsewhere (the publisher's
 * block worker); each is checked before it becomes an entry. `options.compressionLevel` is unused.
 */
export async function writePreparedBlockZip(blocks: Iterable<PreparedBlock> | AsyncIterable<PreparedBlock>,
  sink: ZipSink, options: BlockZipOptions = {}): Promise<BlockZipResult> {
  const writer = new ArchiveZipWriter(sink, dosDateTime(options.mtime ?? new Date()), options.forceZip64 === true);
  await writer.writeDirectory();
  const seen = new Map<string, { crc32: number; sizeBytes: number }>();
  for await (const block of blocks) {
    checkPrepared(block);
    const hex = hexOf(block.blockId);
    const prior = seen.get(hex);
    if (prior !== undefined) {
      if (prior.crc32 !== block.crc32 || prior.sizeBytes !== block.sizeBytes) {
        throw new FsError('ASSERT', `block ${hex} given twice with different content`);
      }
      continue;
    }
    if (seen.size >= archiveBlockCountMax) throw new FsError('LIMIT', `more than ${archiveBlockCountMax} blocks in one archive`);
    seen.set(hex, { crc32: block.crc32, sizeBytes: block.sizeBytes });
    await writer.writeBlock(block, hex);
  }
  const sizeBytes = await writer.finish();
  const locations = writer.locations.sort((a, b) => (a.hex < b.hex ? -1 : a.hex > b.hex ? 1 : 0)).map((x) => x.location);
  return { locations, sizeBytes };
}

/** Writes an archive zip into a new file at `path` (fails if it exists), fsyncs and closes it. */
export async function writeBlockZipFile(path: string, blocks: Iterable<BlockPayload> | AsyncIterable<BlockPayload>,
  options: BlockZipOptions = {}): Promise<BlockZipResult> {
  return writeSinkFile(path, (sink) => writeBlockZip(blocks, sink, options));
}

/**
 * Creates `path` (which must not exist), lets `produce` write into the sink (gathered into writes
 * of about 256 KiB), fsyncs and closes the file; on failure removes it. The plain counterpart of
 * crypto's writeSealedFile.
 */
export async function writeSinkFile<T>(path: string, produce: (sink: ZipSink) => Promise<T>): Promise<T> {
  const handle = await open(path, 'wx');
  try {
    // Coalesce the writer's per-entry chunks into fewer system calls.
    const batchBytesMax = 256 * 1024;
    let batch: Buffer[] = [];
    let batchBytes = 0;
    const flush = async (): Promise<void> => {
      if (batchBytes === 0) return;
      await writeAll(handle, Buffer.concat(batch, batchBytes));
      batch = [];
      batchBytes = 0;
    };
    const result = await produce(async (chunk) => {
      batch.push(chunk);
      batchBytes += chunk.length;
      if (batchBytes >= batchBytesMax) await flush();
    });
    await flush();
    await handle.sync();
    await handle.close();
    return result;
  } catch (e) {
    await handle.close().catch(() => undefined);
    await unlink(path).catch(() => undefined);
    throw e;
  }
}

async function writeAll(handle: FileHandle, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.length) {
    const { bytesWritten } = await handle.write(bytes, done, bytes.length - done);
    done += bytesWritten;
  }
}

/** Builds an archive zip in memory; for small archives and tests. */
export async function buildBlockZip(blocks: Iterable<BlockPayload> | AsyncIterable<BlockPayload>,
  options: BlockZipOptions = {}): Promise<BlockZipResult & { readonly bytes: Buffer }> {
  const chunks: Buffer[] = [];
  const result = await writeBlockZip(blocks, (chunk) => {
    chunks.push(chunk);
  }, options);
  const bytes = Buffer.concat(chunks);
  if (bytes.length !== result.sizeBytes) throw new FsError('ASSERT', `built ${bytes.length} bytes, scanner saw ${result.sizeBytes}`);
  return { ...result, bytes };
}

// ---------------------------------------------------------------------------------------------
// Reading blocks by location

/**
 * Checks and decodes one block entry. `span` holds the bytes from the entry's local header to the
 * end of its data. Returns the block's bytes; throws FsError BAD_ARCHIVE at `place` otherwise.
 */
export function decodeBlockEntry(span: Uint8Array, location: BlockLocation, place: string): Buffer {
  const what = `block ${hexOf(location.blockId)} at offset ${location.headerOffset}`;
  const fail = (message: string): never => {
    throw new FsError('BAD_ARCHIVE', `${what}: ${message}`, place);
  };
  const bytes = Buffer.from(span.buffer, span.byteOffset, span.byteLength);
  if (bytes.length < localHeaderFixedSizeBytes) fail(`only ${bytes.length} bytes available for the local header`);
  const L = localHeaderLayout;
  const signature = bytes.readUInt32LE(L.signature.offset);
  if (signature !== localHeaderSignature) fail(`local header signature 0x${signature.toString(16)}`);
  const flags = bytes.readUInt16LE(L.flags.offset);
  if ((flags & forbiddenFlagBits) !== 0) fail(`flags 0x${flags.toString(16)} (encrypted or data descriptor)`);
  const checks: [string, number, number][] = [
    ['method', bytes.readUInt16LE(L.method.offset), location.method],
    ['crc32', bytes.readUInt32LE(L.crc32.offset), location.crc32],
    ['stored size', bytes.readUInt32LE(L.storedSizeBytes.offset), location.storedSizeBytes],
    ['size', bytes.readUInt32LE(L.sizeBytes.offset), location.sizeBytes],
    ['name length', bytes.readUInt16LE(L.nameLengthBytes.offset), blockEntryNameLengthBytes],
  ];
  for (const [field, actual, expected] of checks) {
    if (actual !== expected) fail(`local header ${field} ${actual}, block table says ${expected}`);
  }
  const extraLength = bytes.readUInt16LE(L.extraLengthBytes.offset);
  const nameStart = localHeaderFixedSizeBytes;
  const dataStart = nameStart + blockEntryNameLengthBytes + extraLength;
  if (bytes.length !== dataStart + location.storedSizeBytes) {
    fail(`span of ${bytes.length} bytes, header and data need ${dataStart + location.storedSizeBytes}`);
  }
  const name = bytes.toString('latin1', nameStart, nameStart + blockEntryNameLengthBytes);
  if (name !== blockEntryName(location.blockId)) fail(`entry name ${printableName(name)} does not match`);
  const data = bytes.subarray(dataStart);
  let block: Buffer = data;
  if (location.method === zipMethodDeflate) {
    try {
      block = zlib.inflateRawSync(data, { maxOutputLength: blockSizeBytes });
    } catch (e) {
      fail(`inflate failed: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
  if (block.length !== location.sizeBytes) fail(`decoded ${block.length} bytes, expected ${location.sizeBytes}`);
  const crc = crc32(block);
  if (crc !== location.crc32) fail(`crc32 of data 0x${crc.toString(16)}, expected 0x${location.crc32.toString(16)}`);
  return Buffer.from(block);
}

/** Reads blocks out of one archive zip by their block-table locations. */
export class BlockZipReader {
  private constructor(readonly path: string, private readonly handle: FileHandle, readonly sizeBytes: number) {}

  /** Opens `path` for reading; the caller closes it. */
  static async open(path: string): Promise<BlockZipReader> {
    let handle: FileHandle;
    try {
      handle = await open(path, 'r');
    } catch (e) {
      throw new FsError('BAD_ARCHIVE', `cannot open zip: ${e instanceof Error ? e.message : String(e)}`, path, { cause: e });
    }
    try {
      const stat = await handle.stat();
      return new BlockZipReader(path, handle, stat.size);
    } catch (e) {
      await handle.close().catch(() => undefined);
      throw e;
    }
  }

  /**
   * Reads one block: one positional read (two if a foreign writer put an extra field in the local
   * header). Returns exactly `location.sizeBytes` bytes whose CRC-32 matched.
   */
  async readBlock(location: BlockLocation): Promise<Buffer> {
    checkBlockLocation(location, this.sizeBytes, 'BAD_ARCHIVE', this.path);
    let span = await this.readAt(location.headerOffset, blockEntrySpanBytes(location.storedSizeBytes));
    const isLocalHeader = span.readUInt32LE(localHeaderLayout.signature.offset) === localHeaderSignature;
    const extraLength = span.readUInt16LE(localHeaderLayout.extraLengthBytes.offset);
    // The extra length is only meaningful under a real local header; otherwise decodeBlockEntry reports the signature.
    if (isLocalHeader && extraLength !== 0) {
      const length = blockEntrySpanBytes(location.storedSizeBytes) + extraLength;
      if (location.headerOffset + length > this.sizeBytes) {
        throw new FsError('BAD_ARCHIVE', `block ${hexOf(location.blockId)}: extra field runs past the end of the zip`, this.path);
      }
      span = await this.readAt(location.headerOffset, length);
    }
    return decodeBlockEntry(span, location, this.path);
  }

  private async readAt(offset: number, length: number): Promise<Buffer> {
    const buffer = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.handle.read(buffer, done, length - done, offset + done);
      if (bytesRead === 0) {
        throw new FsError('BAD_ARCHIVE', `short read at offset ${offset + done}: zip ends before ${offset + length}`, this.path);
      }
      done += bytesRead;
    }
    return buffer;
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Plain zips

export type PlainEntryKind = 'file' | 'dir' | 'symlink';

/** An accepted entry of a plain zip. */
export interface PlainZipEntry {
  /** Position in the zip's central directory. */
  readonly index: number;
  /** Normalized path: no trailing '/', checked by `checkZipEntryName`. */
  readonly path: string;
  readonly kind: PlainEntryKind;
  /** Permission bits (0..0o7777): from the Unix mode in the external attributes, else 0o644 / 0o755 / 0o777. */
  readonly mode: number;
  /** Modification time: the Info-ZIP UT extra field (UTC seconds) if present, else the DOS time read as local time. */
  readonly mtimeMs: number;
  readonly sizeBytes: number;
  readonly storedSizeBytes: number;
  readonly method: ZipMethod;
  readonly crc32: number;
  /** The symlink's target (its content in the zip); '' for other kinds. */
  readonly symlinkTarget: string;
}

/** Why a plain-zip entry was skipped. */
export type PlainEntryRejection = PathRejection
  | 'bad-encoding'       // name flagged UTF-8 but is not
  | 'duplicate'          // same path as an earlier entry of this zip (the earlier one is kept)
  | 'too-large'          // declared size over plainZipEntrySizeMaxBytes
  | 'bad-ratio'          // declared size impossible for deflate (a zip bomb or corrupt header)
  | 'unsupported-method' // compression other than store or deflate
  | 'encrypted'
  | 'unsupported-type'   // fifo, device or socket in the Unix mode
  | 'bad-directory'      // directory entry with content
  | 'bad-symlink';       // symlink target empty, too long, not UTF-8, containing NUL, or unreadable

export interface RejectedPlainEntry {
  readonly index: number;
  /** The entry name as decoded, escaped for printing. */
  readonly name: string;
  readonly reason: PlainEntryRejection;
  readonly detail: string;
}

/** A one-line warning for a rejected entry, naming the zip and the entry. */
export function rejectionWarning(zipPath: string, rejected: RejectedPlainEntry): string {
  return `${zipPath}: entry ${rejected.name} skipped: ${rejected.reason} (${rejected.detail})`;
}

const utf8Fatal = new TextDecoder('utf-8', { fatal: true });
const utf8FlagBit = 0x800;
const unicodePathExtraId = 0x7075;
const unixMadeBy = 3;
const msdosDirectoryAttribute = 0x10;

/** yauzl entry fields, with the raw (undecoded) name that `decodeStrings: false` yields. */
type RawEntry = yauzl.Entry & { readonly fileNameRaw: Buffer };

/**
 * Decodes an entry name: UTF-8 when flagged (strictly), else the Info-ZIP Unicode path extra field
 * when present, else ASCII, else UTF-8 if it decodes (Info-ZIP on Linux stores UTF-8 unflagged),
 * else CP437 as the zip specification says.
 */
function decodeEntryName(entry: RawEntry): string | undefined {
  const raw = entry.fileNameRaw;
  if ((entry.generalPurposeBitFlag & utf8FlagBit) !== 0) {
    try {
      return utf8Fatal.decode(raw);
    } catch {
      return undefined;
    }
  }
  if (entry.extraFields.some((field) => field.id === unicodePathExtraId)) {
    return yauzl.getFileNameLowLevel(entry.generalPurposeBitFlag, raw, entry.extraFields, true);
  }
  if (raw.every((byte) => byte < 0x80)) return raw.toString('latin1');
  try {
    return utf8Fatal.decode(raw);
  } catch {
    return yauzl.getFileNameLowLevel(entry.generalPurposeBitFlag, raw, [], true);
  }
}

type Classified =
  | { readonly ok: true; readonly entry: Omit<PlainZipEntry, 'symlinkTarget'> }
  | { readonly ok: false; readonly reason: PlainEntryRejection; readonly detail: string };

function entryKind(entry: RawEntry, nameIsDirectory: boolean): { kind: PlainEntryKind; mode: number } | string {
  const madeByUnix = entry.versionMadeBy >> 8 === unixMadeBy;
  const unixMode = madeByUnix ? entry.externalFileAttributes >>> 16 : 0;
  const format = unixMode & 0o170000;
  const permissions = unixMode & 0o7777;
  const isDosDirectory = !madeByUnix && (entry.externalFileAttributes & msdosDirectoryAttribute) !== 0;
  if (nameIsDirectory || format === 0o040000 || isDosDirectory) return { kind: 'dir', mode: unixMode === 0 ? 0o755 : permissions };
  if (format === 0o120000) return { kind: 'symlink', mode: 0o777 };
  if (format === 0o100000 || format === 0) return { kind: 'file', mode: unixMode === 0 ? 0o644 : permissions };
  return `unix mode 0o${unixMode.toString(8)} is not a file, directory or symlink`;
}

/** Decides whether one central-directory entry is usable, from its metadata alone. */
function classifyEntry(entry: RawEntry, index: number): Classified & { readonly name: string } {
  const decoded = decodeEntryName(entry);
  const name = decoded ?? entry.fileNameRaw.toString('latin1');
  const rejected = (reason: PlainEntryRejection, detail: string): Classified & { readonly name: string } =>
    ({ ok: false, reason, detail, name });
  if (decoded === undefined) return rejected('bad-encoding', 'name flagged UTF-8 is not valid UTF-8');
  const checked = checkZipEntryName(decoded);
  if (!checked.ok) return rejected(checked.reason, checked.detail);
  if (entry.isEncrypted()) return rejected('encrypted', 'entry is encrypted');
  if (entry.compressionMethod !== zipMethodStore && entry.compressionMethod !== zipMethodDeflate) {
    return rejected('unsupported-method', `compression method ${entry.compressionMethod}`);
  }
  const kind = entryKind(entry, checked.isDirectory);
  if (typeof kind === 'string') return rejected('unsupported-type', kind);
  const sizeBytes = entry.uncompressedSize;
  const storedSizeBytes = entry.compressedSize;
  if (kind.kind === 'dir' && sizeBytes !== 0) return rejected('bad-directory', `directory entry with ${sizeBytes} bytes`);
  if (sizeBytes > plainZipEntrySizeMaxBytes) return rejected('too-large', `declared size ${sizeBytes} > ${plainZipEntrySizeMaxBytes}`);
  if (entry.compressionMethod === zipMethodDeflate && sizeBytes > storedSizeBytes * plainZipDeflateRatioMax + 64) {
    return rejected('bad-ratio', `declared size ${sizeBytes} from ${storedSizeBytes} deflated bytes exceeds ${plainZipDeflateRatioMax}:1`);
  }
  if (kind.kind === 'symlink' && (sizeBytes < 1 || sizeBytes > symlinkLengthMaxBytes)) {
    return rejected('bad-symlink', `target of ${sizeBytes} bytes outside 1..${symlinkLengthMaxBytes}`);
  }
  return {
    ok: true, name,
    entry: {
      index, path: checked.path, kind: kind.kind, mode: kind.mode, mtimeMs: entry.getLastModDate().getTime(),
      sizeBytes, storedSizeBytes, method: entry.compressionMethod as ZipMethod, crc32: entry.crc32,
    },
  };
}

/** Verifies the CRC-32 of an entry's bytes as they stream past; errors at the end on mismatch. */
class CrcCheck extends Transform {
  private crc = 0;
  constructor(private readonly expected: number, private readonly onMismatch: (actual: number) => Error) {
    super();
  }
  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.crc = crc32(chunk, this.crc);
    callback(null, chunk);
  }
  override _flush(callback: TransformCallback): void {
    callback(this.crc === this.expected ? null : this.onMismatch(this.crc));
  }
}

/**
 * A plain zip open for reading: its accepted entries, the rejected ones with reasons, and reads of
 * entry content. Holds a file descriptor until `close`.
 */
export class PlainZip {
  private constructor(
    readonly path: string,
    readonly entries: readonly PlainZipEntry[],
    readonly rejected: readonly RejectedPlainEntry[],
    private readonly zip: yauzl.ZipFile,
    private readonly rawEntries: ReadonlyMap<number, yauzl.Entry>,
  ) {}

  /**
   * Opens and lists a plain zip. FsError BAD_ARCHIVE (naming the zip) when the zip as a whole is
   * unreadable or has more than `plainZipEntryCountMax` entries; bad entries are only rejected.
   */
  static async open(path: string): Promise<PlainZip> {
    let zip: yauzl.ZipFile;
    try {
      zip = await yauzl.openPromise(path, {
        lazyEntries: true, autoClose: false, decodeStrings: false, validateEntrySizes: true, strictFileNames: true,
      });
    } catch (e) {
      throw wrapZipError(path, 'cannot open zip', e);
    }
    try {
      if (zip.entryCount > plainZipEntryCountMax) {
        throw new FsError('BAD_ARCHIVE', `${zip.entryCount} entries > the limit ${plainZipEntryCountMax}`, path);
      }
      const raw = await readCentralDirectory(zip, path);
      const listed = await PlainZip.classifyAll(zip, path, raw);
      return new PlainZip(path, listed.entries, listed.rejected, zip, listed.rawEntries);
    } catch (e) {
      zip.close();
      throw e;
    }
  }

  private static async classifyAll(zip: yauzl.ZipFile, path: string, raw: RawEntry[]): Promise<{
    entries: PlainZipEntry[]; rejected: RejectedPlainEntry[]; rawEntries: Map<number, yauzl.Entry>;
  }> {
    const entries: PlainZipEntry[] = [];
    const rejected: RejectedPlainEntry[] = [];
    const rawEntries = new Map<number, yauzl.Entry>();
    const paths = new Set<string>();
    for (const [index, rawEntry] of raw.entries()) {
      const result = classifyEntry(rawEntry, index);
      const name = printableName(result.name);
      if (!result.ok) {
        rejected.push({ index, name, reason: result.reason, detail: result.detail });
        continue;
      }
      if (paths.has(result.entry.path)) {
        rejected.push({ index, name, reason: 'duplicate', detail: `path ${printableName(result.entry.path)} already listed` });
        continue;
      }
      let symlinkTarget = '';
      if (result.entry.kind === 'symlink') {
        const target = await readSymlinkTarget(zip, path, rawEntry, name);
        if (typeof target !== 'string') {
          rejected.push({ index, name, reason: 'bad-symlink', detail: target.detail });
          continue;
        }
        symlinkTarget = target;
      }
      paths.add(result.entry.path);
      rawEntries.set(index, rawEntry);
      entries.push({ ...result.entry, symlinkTarget });
    }
    return { entries, rejected, rawEntries };
  }

  /**
   * Opens a stream of an entry's content, checked against the declared size (by yauzl) and CRC-32
   * (here); a mismatch surfaces as an FsError BAD_ARCHIVE stream error naming the zip and entry.
   */
  async openEntryStream(entry: PlainZipEntry): Promise<Readable> {
    const raw = this.rawEntries.get(entry.index);
    if (raw === undefined) throw new FsError('BAD_INPUT', `entry ${entry.index} is not an accepted entry`, this.path);
    return openCheckedStream(this.zip, this.path, raw, printableName(entry.path));
  }

  /** Reads an entry's whole content; FsError LIMIT when it is larger than `maxBytes`. */
  async readEntry(entry: PlainZipEntry, maxBytes: number = plainZipReadMaxBytesDefault): Promise<Buffer> {
    if (entry.sizeBytes > maxBytes) {
      throw new FsError('LIMIT', `entry ${printableName(entry.path)}: ${entry.sizeBytes} bytes > read limit ${maxBytes}`, this.path);
    }
    const stream = await this.openEntryStream(entry);
    return collect(stream, this.path, printableName(entry.path));
  }

  close(): void {
    this.zip.close();
  }
}

/** Opens, lists and closes a plain zip. */
export async function listPlainZip(path: string): Promise<{ entries: readonly PlainZipEntry[]; rejected: readonly RejectedPlainEntry[] }> {
  const zip = await PlainZip.open(path);
  zip.close();
  return { entries: zip.entries, rejected: zip.rejected };
}

function wrapZipError(path: string, what: string, e: unknown): FsError {
  if (e instanceof FsError) return e;
  return new FsError('BAD_ARCHIVE', `${what}: ${e instanceof Error ? e.message : String(e)}`, path, { cause: e });
}

function readCentralDirectory(zip: yauzl.ZipFile, path: string): Promise<RawEntry[]> {
  return new Promise((resolve, reject) => {
    const entries: RawEntry[] = [];
    zip.on('entry', (entry: RawEntry) => {
      entries.push(entry);
      zip.readEntry();
    });
    zip.on('end', () => resolve(entries));
    zip.on('error', (e: unknown) => reject(wrapZipError(path, `central directory entry ${entries.length}`, e)));
    zip.readEntry();
  });
}

async function openCheckedStream(zip: yauzl.ZipFile, path: string, raw: yauzl.Entry, name: string): Promise<Readable> {
  let source: Readable;
  try {
    source = await zip.openReadStreamPromise(raw);
  } catch (e) {
    throw wrapZipError(path, `entry ${name}`, e);
  }
  const checked = new CrcCheck(raw.crc32, (actual) =>
    new FsError('BAD_ARCHIVE', `entry ${name}: crc32 0x${actual.toString(16)}, header says 0x${raw.crc32.toString(16)}`, path));
  source.on('error', (e: unknown) => checked.destroy(wrapZipError(path, `entry ${name}`, e)));
  return source.pipe(checked);
}

async function collect(stream: Readable, path: string, name: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  try {
    for await (const chunk of stream) chunks.push(chunk as Buffer);
  } catch (e) {
    throw wrapZipError(path, `entry ${name}`, e);
  }
  return Buffer.concat(chunks);
}

async function readSymlinkTarget(zip: yauzl.ZipFile, path: string, raw: RawEntry, name: string): Promise<string | { detail: string }> {
  let bytes: Buffer;
  try {
    bytes = await collect(await openCheckedStream(zip, path, raw, name), path, name);
  } catch (e) {
    return { detail: e instanceof Error ? e.message : String(e) };
  }
  if (bytes.includes(0)) return { detail: 'target contains NUL' };
  try {
    return utf8Fatal.decode(bytes);
  } catch {
    return { detail: 'target is not valid UTF-8' };
  }
}
