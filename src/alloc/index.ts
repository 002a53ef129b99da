/**
 * The allocation layer: bump allocators and space accounting, all in memory. Nothing here
 * touches the disk or LMDB; callers persist marks and entries with the metadata that uses them.
 */
export {
  BumpSegmentSpaceAllocator,
  type SegmentRange,
  type SegmentSpaceAllocator,
  type SegmentSpaceMark,
  type SegmentSpaceOptions,
} from './segment-space.js';
export { MonotonicCounter, type CounterAllocator, type CounterMark } from './counter.js';
export { SegmentUsage, type SegmentUsageAccounting, type SegmentUsageEntry } from './segment-usage.js';
