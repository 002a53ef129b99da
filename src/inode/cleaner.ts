/**
 * The segment cleaner of the store (the policy and commit half; the copying half is
 * src/blocks/cleaner.ts). Segments whose live ratio fell below a threshold have their live
 * records copied to the head of the log; one transaction repoints the block maps that still
 * point at the old copies; the log and LMDB are synced; only then, and only if nothing points
 * into it any more, is the old segment file deleted. Recent segments are protected (a window
 * like NILFS2's protection period) so freshly written data is not moved twice.
 *
 * Runs synchronously between file system operations, so a write that lands between copy and
 * commit simply wins: the commit moves only pointers that still name the old location.
 */
import { chooseVictims, copyLive, type VictimPolicy } from '../blocks/index.js';
import { blockKey } from '../btree/keys.js';
import { blockPointerKind, decodeBlockPointer, encodeBlockPointer } from '../btree/records.js';
import type { Store } from './store.js';

export interface CleanReport {
  segmentsCleaned: number[];
  blocksMoved: number;
  bytesMoved: number;
}

/** Cleans up to policy.victimCountMax segments; resolves when the cleaned files are deleted. */
export async function cleanSegments(store: Store, policy: VictimPolicy = {}): Promise<CleanReport> {
  const report: CleanReport = { segmentsCleaned: [], blocksMoved: 0, bytesMoved: 0 };
  const victims = chooseVictims(store.log, store.usageAccounting(), policy);
  if (victims.length === 0) return report;
  const blockmap = store.btree.table('blockmap');
  const pointsAt = (ino: number, blockIndex: number, segment: number, offset: number): Buffer | undefined => {
    const value = blockmap.get(blockKey(ino, blockIndex));
    if (value === undefined) return undefined;
    const ptr = decodeBlockPointer(value, `block ${ino}:${blockIndex}`);
    return ptr.kind === blockPointerKind.segment && ptr.segment === segment && ptr.offset === offset ? value : undefined;
  };
  for (const segment of victims) {
    const moves = copyLive(store.log, segment, (loc, ino, blockIndex) => pointsAt(ino, blockIndex, loc.segment, loc.offset) !== undefined);
    store.transaction(() => {
      for (const move of moves) {
        const value = pointsAt(move.ino, move.blockIndex, move.from.segment, move.from.offset);
        if (value === undefined) continue; // rewritten meanwhile: the copy is garbage for a later pass
        const ptr = decodeBlockPointer(value, `block ${move.ino}:${move.blockIndex}`);
        store.places.forget(move.ino, move.blockIndex);
        blockmap.putSync(blockKey(move.ino, move.blockIndex), encodeBlockPointer({ ...ptr, segment: move.to.segment, offset: move.to.offset }));
        store.usageRelease(move.from.segment, move.from.lengthBytes);
        store.usageAdd(move.to.segment, move.to.lengthBytes);
        report.blocksMoved++;
        report.bytesMoved += move.to.lengthBytes;
      }
    });
    report.segmentsCleaned.push(segment);
  }
  // The new copies and the repointed maps must be durable before the old copies go.
  store.log.sync();
  await store.btree.sync();
  for (const segment of report.segmentsCleaned) {
    if (store.liveBytes(segment) === 0) store.log.removeSegment(segment);
  }
  report.segmentsCleaned = report.segmentsCleaned.filter((segment) => store.liveBytes(segment) === 0);
  return report;
}
