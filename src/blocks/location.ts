/**
 * Where a block record lives: the unit the block map of the inode layer stores.
 */
import * as blockRecord from './record.js';

/** A record in the segment log: segment number, byte offset of the record header, payload length. */
export interface BlockLocation {
  readonly segment: number;
  readonly offset: number;
  /** Payload length in bytes (1..4096), not the record size. */
  readonly lengthBytes: number;
}

/** Returns the bytes the record at `loc` occupies on disk (header plus payload), the unit of SegmentUsage. */
export function recordSizeBytes(loc: BlockLocation): number {
  return blockRecord.size(loc.lengthBytes);
}
