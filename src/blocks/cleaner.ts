/**
 * The segment cleaner: copy the live records of mostly-dead segments to the head of the log
 * so the old segment files can be deleted, and the policy that picks those segments.
 *
 * Lifecycle of one cleaning pass (the inode layer drives it; this file does steps 1-2):
 *   1. chooseVictims() picks segments whose live ratio is below the threshold, outside the
 *      protection window (the head segment and the most recent segments before it, which
 *      hold young data that is likely to die soon anyway — NILFS2's protection period);
 *   2. copyLive() re-appends the records the caller says are live and returns the moves;
 *   3. the caller syncs the log, then commits the moves in one LMDB transaction, each move
 *      only if the block map still points at `from` (a write since step 2 wins), moving the
 *      live-byte accounting from the old segment to the new one;
 *   4. the caller calls removeSegment() on the victim.
 * A crash between 2 and 3 leaves the copies unreferenced beyond the committed head: the next
 * open cuts them. A crash between 3 and 4 leaves a segment with no live bytes: a later pass
 * removes it.
 */
import type { SegmentUsageAccounting } from '../alloc/index.js';
import { assert, corrupt } from '../errors.js';
import type { BlockLocation } from './location.js';
import type { BlockRecordInput, SegmentLog } from './segment-log.js';

/** One record moved by the cleaner. */
export interface CleanMove {
  readonly from: BlockLocation;
  readonly to: BlockLocation;
  readonly ino: number;
  readonly blockIndex: number;
}

/** Options of copyLive. */
export interface CopyLiveOptions {
  /** Records appended per append() call; default 256. */
  readonly batchRecordCountMax?: number;
}

/** Tuning of chooseVictims. */
export interface VictimPolicy {
  /** Segments with a live ratio below this are candidates; default 0.5. */
  readonly liveRatioMax?: number;
  /** Segments just before the head segment that are never cleaned; default 4 (the head is always protected). */
  readonly protectedSegmentCount?: number;
  /** Most segments returned; default 8. */
  readonly victimCountMax?: number;
}

export const liveRatioMaxDefault = 0.5;
export const protectedSegmentCountDefault = 4;
export const victimCountMaxDefault = 8;
const copyBatchRecordCountDefault = 256;

/**
 * Re-appends at the head every record of `segment` for which `isLive` returns true and returns
 * the moves, in file order. Does not sync and does not remove the segment. Throws CORRUPT when
 * the segment holds damage that valid records follow (it must go to fsck, not be deleted); a
 * torn tail is tolerated, since committed metadata never references bytes past what was synced.
 */
export function copyLive(
  log: SegmentLog,
  segment: number,
  isLive: (loc: BlockLocation, ino: number, blockIndex: number) => boolean,
  options: CopyLiveOptions = {},
): CleanMove[] {
  const batchRecordCountMax = options.batchRecordCountMax ?? copyBatchRecordCountDefault;
  assert(Number.isSafeInteger(batchRecordCountMax) && batchRecordCountMax > 0, `batch of ${batchRecordCountMax} records is positive`);
  assert(segment !== log.head().segment, `segment ${segment} is not the head segment`);
  const moves: CleanMove[] = [];
  let pendingFrom: BlockLocation[] = [];
  let pending: BlockRecordInput[] = [];
  const flush = (): void => {
    const to = log.append(pending);
    to.forEach((loc, i) => {
      const from = pendingFrom[i];
      const record = pending[i];
      assert(from !== undefined && record !== undefined, `move ${i} has a source`);
      moves.push({ from, to: loc, ino: record.ino, blockIndex: record.blockIndex });
    });
    pending = [];
    pendingFrom = [];
  };
  for (const item of log.scan(segment)) {
    if (item.kind === 'corrupt') {
      throw corrupt(`cannot clean: ${item.lengthBytes} damaged bytes at offset ${item.offset}: ${item.error.message}`, log.segmentFile(segment));
    }
    if (item.kind === 'torn' || !isLive(item.loc, item.ino, item.blockIndex)) continue;
    pending.push({ ino: item.ino, blockIndex: item.blockIndex, payload: item.payload });
    pendingFrom.push(item.loc);
    if (pending.length >= batchRecordCountMax) flush();
  }
  if (pending.length > 0) flush();
  return moves;
}

/**
 * Returns the segments worth cleaning, lowest live ratio first: among the log's segments,
 * those below `liveRatioMax` live, excluding the head segment and the `protectedSegmentCount`
 * segment numbers just before it. A segment with no usage entry has no live bytes.
 */
export function chooseVictims(
  log: Pick<SegmentLog, 'segments' | 'head' | 'segmentSizeMaxBytes'>,
  usage: Pick<SegmentUsageAccounting, 'segmentsBelow'>,
  policy: VictimPolicy = {},
): number[] {
  const liveRatioMax = policy.liveRatioMax ?? liveRatioMaxDefault;
  const protectedSegmentCount = policy.protectedSegmentCount ?? protectedSegmentCountDefault;
  const victimCountMax = policy.victimCountMax ?? victimCountMaxDefault;
  assert(Number.isSafeInteger(protectedSegmentCount) && protectedSegmentCount >= 0, `protected segment count ${protectedSegmentCount} is not negative`);
  assert(Number.isSafeInteger(victimCountMax) && victimCountMax >= 0, `victim count ${victimCountMax} is not negative`);
  const protectedFrom = log.head().segment - protectedSegmentCount;
  const candidates = log.segments().filter((segment) => segment < protectedFrom);
  return usage.segmentsBelow(liveRatioMax, log.segmentSizeMaxBytes, candidates).slice(0, victimCountMax);
}
