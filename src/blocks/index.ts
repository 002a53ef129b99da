/**
 * The block layer: an append-only log of checksummed 4 KiB block records in numbered segment
 * files, its recovery, and its cleaner. Depends only on src/alloc (plus errors and limits).
 */
export { type BlockLocation, recordSizeBytes } from './location.js';
export {
  SegmentLog,
  segmentNumberFirst,
  openFileCountMaxDefault,
  type BlockRecordInput,
  type SegmentLogOptions,
} from './segment-log.js';
export { formatOpenReport, type SegmentLogOpenEvent, type SegmentLogOpenReport } from './recovery.js';
export {
  scanSegmentFile,
  summarize,
  type ScanItem,
  type ScannedCorrupt,
  type ScannedDamage,
  type ScannedTorn,
  type ScannedRecord,
  type ScanSummary,
} from './scan.js';
export {
  copyLive,
  chooseVictims,
  liveRatioMaxDefault,
  protectedSegmentCountDefault,
  victimCountMaxDefault,
  type CleanMove,
  type CopyLiveOptions,
  type VictimPolicy,
} from './cleaner.js';
export { listSegmentNumbers, parseSegmentFileName, segmentFileName, segmentNumberMax } from './segment-files.js';
export * as blockRecord from './record.js';
export * as segmentHeader from './segment-header.js';
