/**
 * Limits and defaults of the sync daemon (zippy-sync), in one place. Relations between them are
 * asserted at load.
 */
import { assert } from '../../errors.js';
import { gcIntervalMsDefault } from '../limits.js';

/** Default time between two periodic runs. */
export const intervalMsDefault = 5 * 60 * 1000;
/** Shortest accepted --interval (a run lists the server; seconds apart is already plenty). */
export const intervalMsMin = 1000;
/** Longest accepted --interval (setTimeout holds at most 2^31 − 1 ms). */
export const intervalMsMax = 24 * 60 * 60 * 1000;
/**
 * A `.tmp-*` file or directory older than this is a leftover of an interrupted writer or transfer
 * and is removed. Writers touch their temp files continually (a write updates mtime), and a
 * finished temp file is renamed within milliseconds, so only dead writers leave old ones.
 */
export const staleTempAgeMs = 15 * 60 * 1000;
/** Files named in one transfer batch (one rsync or rclone process); more are split. */
export const transferBatchFileCountMax = 20_000;
/** Entries accepted from one listing of the server (a bigger listing is refused, not truncated). */
export const listingEntryCountMax = 4_000_000;
/** Bytes of output kept from one child process (listings of 4M entries fit). */
export const childOutputSizeMaxBytes = 512 * 1024 * 1024;
/** Errors, and warnings, kept in one run report (more are dropped: the first ones say what is wrong). */
export const runErrorCountMax = 100;
/**
 * Another box's rm-log chunk is applied to this sync dir (its archives deleted here) only once it
 * has been here this long (by ctime: when it was linked in, which a download cannot back-date).
 * By then every mount of this sync dir has run GC at least once (gcIntervalMsDefault) and rescued
 * what unpublished local edits still read from the dying archives (src/sync/gc.ts, "rescue").
 */
export const rmLogSettleMsDefault = 2 * 60 * 1000;
/** Grace before a second SIGTERM/SIGINT forces the exit. */
export const stopGraceMs = 10_000;

assert(intervalMsMin <= intervalMsDefault && intervalMsDefault <= intervalMsMax, 'interval default outside its bounds');
assert(intervalMsMax < 2 ** 31, 'interval max must fit setTimeout');
assert(staleTempAgeMs >= 60_000, 'temp files younger than a minute may belong to a live writer');
assert(rmLogSettleMsDefault >= 2 * gcIntervalMsDefault, 'rm-log chunks must settle for two GC intervals before local deletion');
