/**
 * Synchronous reads of blocks that live in archive zips (lazy fetch): the inode layer's read path
 * is synchronous, so a block is one positional readSync of `30 + 39 + storedSize` bytes at the
 * entry's offset from the `blockid` index, inflated with inflateRawSync and CRC-checked by
 * decodeBlockEntry. Zip descriptors stay open until `close`.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { FsError } from '../errors.js';
import { SealedReaderSync } from './crypto/envelope.js';
import type { BlockPointer } from '../inode/sync-port.js';
import { archivePaths } from './archive-store.js';
import type { StoredBlock, SyncState } from './state.js';
import { blockEntrySpanBytes } from './zip-format.js';
import { decodeBlockEntry } from './zipfile.js';

export class ArchiveBlockReader {
  private readonly zipFds = new Map<number, { fd: number; path: string }>();
  private readonly sealed = new Map<number, SealedReaderSync>();

  /** `keys` gives the key generations of an encrypted sync dir (its zips are sealed), undefined for a plain one. */
  /**
   * `keys` gives the key generations of an encrypted sync dir (its zips are sealed), undefined for a
   * plain one; `alternatives` the other archives known to carry a block (GC's index), tried when the
   * one the `blockid` table names cannot be read — e.g. another mount's GC deleted it a moment ago
   * and this mount has not processed that yet.
   */
  constructor(private readonly syncDir: string, private readonly state: SyncState,
    private readonly keys: () => ReadonlyMap<string, Uint8Array> | undefined = () => undefined,
    private readonly alternatives: (blockId: Uint8Array) => StoredBlock[] = () => []) {}


  /** One block's bytes (exactly the pointer's length); EIO or BAD_ARCHIVE when it cannot be read intact. */
  readBlock(ptr: BlockPointer, ino: number, blockIndex: number): Buffer {
    const stored = this.state.block(ptr.blockId);
    if (stored === undefined) {
      throw new FsError('EIO', `block ${ptr.blockId.toString('hex')} is in no known archive`, `inode ${ino} block ${blockIndex}`);
    }
    try {
      return this.readStored(stored);
    } catch (e) {
      for (const other of this.alternatives(ptr.blockId)) {
        if (other.archive === stored.archive) continue;
        try {
          return this.readStored(other);
        } catch {
          // try the next one; the first error is the one reported
        }
      }
      throw e;
    }
  }

  /** One block from the archive and location given (repacking reads the copy it is about to retire). */
  readStored(stored: StoredBlock): Buffer {
    const keys = this.keys();
    if (keys !== undefined) return this.sealedReader(stored.archive, keys).readBlock(stored.location);
    const zip = this.zipFd(stored.archive);
    const span = Buffer.alloc(blockEntrySpanBytes(stored.location.storedSizeBytes));
    let done = 0;
    while (done < span.length) {
      const n = readSync(zip.fd, span, done, span.length - done, stored.location.headerOffset + done);
      if (n === 0) throw new FsError('BAD_ARCHIVE', `short read at ${stored.location.headerOffset + done}`, zip.path);
      done += n;
    }
    return decodeBlockEntry(span, stored.location, zip.path);
  }

  private zipFd(archive: number): { fd: number; path: string } {
    let entry = this.zipFds.get(archive);
    if (entry !== undefined) return entry;
    const rec = this.state.archive(archive);
    if (rec === undefined) throw new FsError('CORRUPT', `archive number ${archive} is not in the catalog`);
    const path = archivePaths(this.syncDir, rec.name).zipPath;
    try {
      entry = { fd: openSync(path, 'r'), path };
    } catch (e) {
      throw new FsError('EIO', `cannot open archive zip: ${String(e)}`, path);
    }
    this.zipFds.set(archive, entry);
    return entry;
  }

  private sealedReader(archive: number, keys: ReadonlyMap<string, Uint8Array>): SealedReaderSync {
    let reader = this.sealed.get(archive);
    if (reader !== undefined) return reader;
    const rec = this.state.archive(archive);
    if (rec === undefined) throw new FsError('CORRUPT', `archive number ${archive} is not in the catalog`);
    reader = SealedReaderSync.open(archivePaths(this.syncDir, rec.name).zipPath, { keys, archiveName: rec.name, kind: 'zip', syncDir: this.syncDir });
    this.sealed.set(archive, reader);
    return reader;
  }

  /** Closes what is open of archive `archive` (it is leaving the sync dir; GC). */
  forget(archive: number): void {
    this.sealed.get(archive)?.close();
    this.sealed.delete(archive);
    const zip = this.zipFds.get(archive);
    if (zip !== undefined) closeSync(zip.fd);
    this.zipFds.delete(archive);
  }

  close(): void {
    for (const reader of this.sealed.values()) reader.close();
    this.sealed.clear();
    for (const { fd } of this.zipFds.values()) closeSync(fd);
    this.zipFds.clear();
  }
}
