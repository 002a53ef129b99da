/**
 * The standard zip of a tree (`zippy-export --zip -o out.zip`): one entry per directory (so empty
 * directories survive), file and symlink, with Unix modes, UTF-8 names, MS-DOS local time plus the
 * Info-ZIP extended timestamp (UTC seconds, which Info-ZIP unzip restores), deflate (node:zlib) or
 * stored, and zip64 wherever a size or an offset needs it. The record encoders are the tree-entry
 * part of zip-format.ts; the archive zip of the sync dir (zipfile.ts) is a different, fixed shape.
 *
 * Files up to `wholeFileMaxBytes` are read whole, deflated in one call and stored when deflate does
 * not help (sizes known before the header is written). Larger files are deflated as a stream and
 * carry a data descriptor, so memory stays bounded and the output never needs a seek (it can go
 * to stdout). Symlinks are stored with their target as content (as `zip -y` does).
 */
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import { crc32 } from '../crc32.js';
import { FsError } from '../errors.js';
import {
  type TreeEntryRecord, type ZipMethod, dosDateTime, encodeDataDescriptor, encodeEndRecords, encodeTreeCentralHeader,
  encodeTreeLocalHeader, zipMethodDeflate, zipMethodStore,
} from './zip-format.js';
import type { ZipSink } from './zipfile.js';

/** Files up to this size are compressed in one call; larger ones stream with a data descriptor. */
export const wholeFileMaxBytes = 1024 * 1024;
/** Bytes read from the tree per call while streaming a large file. */
const streamChunkBytes = 1024 * 1024;
/** Above this size a file's local header carries zip64 sizes (deflate may grow data by ~0.03 %). */
const zip64LocalThresholdBytes = 0xf000_0000;
const u32Max = 0xffff_ffff;
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;

/** Reads `length` bytes of a file at `offset` (the tree's own read call). */
export type ReadAt = (offset: number, length: number) => Buffer;

export interface TreeZipOptions {
  /** zlib level 0..9 (default 6). */
  readonly compressionLevel?: number;
}

function mtimeFields(mtimeNs: bigint): { dosDate: number; dosTime: number; mtimeSeconds: number | undefined } {
  const seconds = mtimeNs >= 0n ? mtimeNs / 1_000_000_000n : -((-mtimeNs + 999_999_999n) / 1_000_000_000n);
  const { dosDate, dosTime } = dosDateTime(new Date(Number(seconds) * 1000));
  return { dosDate, dosTime, mtimeSeconds: seconds >= 0n && seconds <= BigInt(u32Max) ? Number(seconds) : undefined };
}

/** Writes a zip of a tree entry by entry to `sink`; call `finish` once at the end. */
export class TreeZipWriter {
  private offset = 0;
  private readonly central: Buffer[] = [];
  private readonly level: number;
  private readonly names = new Set<string>();

  constructor(private readonly sink: ZipSink, options: TreeZipOptions = {}) {
    this.level = options.compressionLevel ?? 6;
    if (!Number.isInteger(this.level) || this.level < 0 || this.level > 9) throw new FsError('BAD_INPUT', `compression level ${this.level} not in 0..9`);
  }

  /** Bytes written so far. */
  get sizeBytes(): number {
    return this.offset;
  }

  get entryCount(): number {
    return this.central.length;
  }

  private async emit(chunk: Buffer): Promise<void> {
    if (chunk.length === 0) return;
    await this.sink(chunk);
    this.offset += chunk.length;
  }

  private entryName(path: string, dir: boolean): Buffer {
    if (path === '' || path.startsWith('/') || path.endsWith('/')) throw new FsError('ASSERT', `zip entry path ${JSON.stringify(path)}`);
    const name = dir ? `${path}/` : path;
    if (this.names.has(name)) throw new FsError('ASSERT', `zip entry ${JSON.stringify(name)} written twice`);
    this.names.add(name);
    return Buffer.from(name, 'utf8');
  }

  /** A directory entry `path/` (stored, empty). */
  async addDirectory(path: string, mode: number, mtimeNs: bigint): Promise<void> {
    await this.addKnown(this.entryName(path, true), S_IFDIR | (mode & 0o7777), mtimeNs, Buffer.alloc(0), false);
  }

  /** A symlink entry: the target is the (stored) content. */
  async addSymlink(path: string, target: string, mode: number, mtimeNs: bigint): Promise<void> {
    await this.addKnown(this.entryName(path, false), S_IFLNK | (mode & 0o7777), mtimeNs, Buffer.from(target, 'utf8'), false);
  }

  /** A regular file of `sizeBytes`, read through `read`. */
  async addFile(path: string, mode: number, mtimeNs: bigint, sizeBytes: number, read: ReadAt): Promise<void> {
    const name = this.entryName(path, false);
    const unixMode = S_IFREG | (mode & 0o7777);
    if (sizeBytes <= wholeFileMaxBytes) {
      await this.addKnown(name, unixMode, mtimeNs, read(0, sizeBytes), true);
      return;
    }
    await this.addStreamed(name, unixMode, mtimeNs, sizeBytes, read);
  }

  private async addKnown(name: Buffer, unixMode: number, mtimeNs: bigint, data: Buffer, compress: boolean): Promise<void> {
    let method: ZipMethod = zipMethodStore;
    let stored = data;
    if (compress && data.length > 0 && this.level > 0) {
      const deflated = zlib.deflateRawSync(data, { level: this.level });
      if (deflated.length < data.length) {
        method = zipMethodDeflate;
        stored = deflated;
      }
    }
    const entry: TreeEntryRecord = {
      name, method, crc32: crc32(data), storedSizeBytes: stored.length, sizeBytes: data.length, unixMode,
      headerOffset: this.offset, dataDescriptor: false, zip64Local: false, ...mtimeFields(mtimeNs),
    };
    await this.emit(encodeTreeLocalHeader(entry));
    await this.emit(stored);
    this.central.push(encodeTreeCentralHeader(entry));
  }

  private async addStreamed(name: Buffer, unixMode: number, mtimeNs: bigint, sizeBytes: number, read: ReadAt): Promise<void> {
    const headerOffset = this.offset;
    const zip64Local = sizeBytes >= zip64LocalThresholdBytes;
    const draft: TreeEntryRecord = {
      name, method: zipMethodDeflate, crc32: 0, storedSizeBytes: 0, sizeBytes, unixMode, headerOffset,
      dataDescriptor: true, zip64Local, ...mtimeFields(mtimeNs),
    };
    await this.emit(encodeTreeLocalHeader(draft));
    let crc = 0;
    let readBytes = 0;
    const chunks = function* (): Generator<Buffer> {
      for (let offset = 0; offset < sizeBytes; offset += streamChunkBytes) {
        const chunk = read(offset, Math.min(streamChunkBytes, sizeBytes - offset));
        crc = crc32(chunk, crc);
        readBytes += chunk.length;
        yield chunk;
      }
    };
    const dataStart = this.offset;
    const out = new Writable({
      write: (chunk: Buffer, _encoding, done) => {
        this.emit(chunk).then(() => done(), done);
      },
    });
    await pipeline(Readable.from(chunks()), zlib.createDeflateRaw({ level: this.level }), out);
    if (readBytes !== sizeBytes) throw new FsError('ASSERT', `read ${readBytes} bytes of a ${sizeBytes}-byte file`, name.toString('utf8'));
    const entry: TreeEntryRecord = { ...draft, crc32: crc, storedSizeBytes: this.offset - dataStart };
    if (!zip64Local && entry.storedSizeBytes >= u32Max) throw new FsError('ASSERT', `deflated size ${entry.storedSizeBytes} needs zip64`, name.toString('utf8'));
    await this.emit(encodeDataDescriptor(entry));
    this.central.push(encodeTreeCentralHeader(entry));
  }

  /** Writes the central directory and the end records; returns the zip's size in bytes. */
  async finish(): Promise<number> {
    const centralOffset = this.offset;
    for (const header of this.central) await this.emit(header);
    await this.emit(encodeEndRecords(this.central.length, centralOffset, this.offset - centralOffset, false));
    return this.offset;
  }
}
