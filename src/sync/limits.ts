/**
 * Limits of the sync directory's archive layer (idx files, archive zips, plain zips), with their
 * relations to each other and to the filesystem-wide limits in ../limits.ts asserted at load.
 * Every decoder in src/sync checks its input against these before allocating or trusting it.
 */
import { assert } from '../errors.js';
import { blockSizeBytes, fileSizeMaxBytes, pathLengthMaxBytes, symlinkLengthMaxBytes,
  xattrNameLengthMaxBytes, xattrValueSizeMaxBytes } from '../limits.js';

/** Bytes of randomness in an archive name (written as twice as many lowercase hex digits). */
export const archiveNameBytes = 16;
/** Bytes of a block id (a keyed hash of the block's content; all zero means a hole). */
export const blockIdBytes = 16;
/** Bytes of a boxid (a machine's random identity, written as 32 hex in its config file). */
export const boxidBytes = 16;

/** Largest idx file a reader accepts; it is read into memory whole before its CRC is checked. */
export const idxSizeMaxBytes = 64 * 1024 * 1024;
/** Most file versions in one idx. */
export const idxVersionCountMax = 262_144;
/** Most blocks one archive carries (entries in its block table and in its zip, directory aside). */
export const archiveBlockCountMax = 262_144;
/** Most explicit block ids in one version's block runs (4 GiB of file data). */
export const versionBlockIdCountMax = 1_048_576;
/** Most block runs in one version. */
export const versionBlockRunCountMax = 65_536;
/** Most extended attributes on one version. */
export const versionXattrCountMax = 128;
/** Most bytes of extended attribute names and values together on one version. */
export const versionXattrSizeMaxBytes = 1024 * 1024;

/**
 * Largest stored (compressed) size of one block in an archive zip. Deflate never expands 4 KiB by
 * more than a few bytes (5 bytes per stored deflate block of at most 64 KiB); 64 bytes of slack.
 */
export const blockStoredSizeMaxBytes = blockSizeBytes + 64;

/** Most entries in a plain zip dropped into the sync dir (its central directory is read whole). */
export const plainZipEntryCountMax = 262_144;
/** Largest declared uncompressed size of one plain-zip entry. */
export const plainZipEntrySizeMaxBytes = 1024 * 1024 * 1024;
/**
 * Largest ratio of declared uncompressed to compressed size for a deflated entry. Deflate cannot
 * exceed about 1032:1, so a larger declared ratio is a lie (a zip bomb or a corrupt header).
 */
export const plainZipDeflateRatioMax = 1032;
/** Default most bytes `PlainZip.readEntry` returns in one buffer; larger entries are streamed. */
export const plainZipReadMaxBytesDefault = 64 * 1024 * 1024;

/** Most directory entries `scanSyncDir` accepts in the sync dir. */
export const syncDirEntryCountMax = 1_048_576;
/** idx files `scanSyncDir` reads concurrently. */
export const scanConcurrencyMax = 16;

/**
 * Most blocks in one batch the publisher hands its block worker (block-worker.ts), and most bytes:
 * the JS thread serves FUSE requests between batches, so a batch bounds how long it is away.
 */
export const blockBatchCountMax = 256;
/**
 * Below this many blocks the per-block work of a publish or a repack (ids, deflate) stays on the
 * JS thread: it takes well under a millisecond, so a round trip to the block worker would only add to it.
 */
export const blockWorkerBlockCountMin = 8;
export const blockBatchSizeMaxBytes = 1024 * 1024;
/**
 * Longest the block worker may stay silent while batches wait for it before it is taken for hung,
 * terminated, and the publish fails (the outbox stays; the next publish starts a new worker). A
 * batch takes milliseconds; this bounds a hang, not a slow machine.
 */
export const blockWorkerSilenceMsMax = 60_000;

assert(archiveNameBytes === 16 && boxidBytes === 16 && blockIdBytes === 16, 'ids are 128-bit');
assert(idxSizeMaxBytes < 2 ** 32, 'idx sizes and section sizes fit in u32');
assert(archiveBlockCountMax * 40 < idxSizeMaxBytes, 'a full block table fits in an idx');
assert(idxVersionCountMax * 96 < idxSizeMaxBytes, 'a full list of minimal versions fits in an idx');
assert(versionBlockIdCountMax * blockIdBytes < idxSizeMaxBytes, 'a full explicit block list fits in an idx');
assert(versionBlockIdCountMax <= fileSizeMaxBytes / blockSizeBytes, 'explicit ids never exceed a file');
assert(fileSizeMaxBytes / blockSizeBytes < 2 ** 32, 'block indexes fit in u32');
assert(versionXattrCountMax < 2 ** 16, 'xattr count fits in u16');
assert(xattrNameLengthMaxBytes < 2 ** 16, 'xattr name length fits in u16');
assert(xattrValueSizeMaxBytes <= versionXattrSizeMaxBytes, 'one largest xattr value fits a version');
assert(pathLengthMaxBytes < 2 ** 16, 'path length fits in u16');
assert(symlinkLengthMaxBytes < 2 ** 16, 'symlink length fits in u16');
assert(blockStoredSizeMaxBytes < 2 ** 32, 'stored block sizes fit in u32');
assert(archiveBlockCountMax * (blockStoredSizeMaxBytes + 200) < Number.MAX_SAFE_INTEGER, 'zip offsets are exact');
assert(plainZipEntrySizeMaxBytes <= fileSizeMaxBytes, 'a plain zip entry fits in a file');
assert(plainZipReadMaxBytesDefault <= plainZipEntrySizeMaxBytes, 'default read bound within the entry limit');
assert(blockBatchCountMax * blockSizeBytes <= blockBatchSizeMaxBytes, 'a batch of whole blocks fits its byte bound');
assert(blockBatchCountMax * blockStoredSizeMaxBytes < 2 ** 31, 'a batch of stored blocks fits one buffer');

// ---------------------------------------------------------------------------------------------
// Garbage collection and repacking (src/sync/gc.ts, src/sync/repack.ts; docs/ARCHITECTURE.md "GC")

/** Default history period (`-o keep_history=`): versions younger than this stay, and the tree as of its start. */
export const keepHistoryMsDefault = 7 * 24 * 3600 * 1000;
/** Longest accepted history period (about 100 years; `keep_history` is parsed against it). */
export const keepHistoryMsMax = 100 * 365 * 24 * 3600 * 1000;
/** Default least time between two automatic GC runs after publishes and imports. */
export const gcIntervalMsDefault = 30_000;
/** A mount's automatic GC run waits until no request came for this long (SyncOptions.gcYield)... */
export const gcQuietMsDefault = 1_000;
/** ...but not longer than this after it fell due, so a mount that is never idle still collects. */
export const gcDeferMaxMsDefault = 5 * 60_000;
/** GC planning gives the event loop (FUSE requests) a turn after this much work. */
export const gcSliceMsDefault = 4;
/** A retired archive stays this long after its rm-log entry: other mounts of the dir import its successors first. */
export const retireGraceMsDefault = 10_000;
/** An own archive whose zip is smaller than this is "small": a repack candidate. */
export const repackSmallArchiveBytes = 1024 * 1024;
/** An own archive whose needed block bytes are below this share of its zip is "mostly dead": a candidate. */
export const repackLiveRatioMin = 0.5;
/** A repack runs when at least this many candidates exist ... */
export const repackArchiveCountMin = 16;
/** ... or when the candidates' dead bytes add up to at least this. */
export const repackDeadBytesMin = 64 * 1024 * 1024;
/** Most archives merged by one repack (the rest wait for the next GC run). */
export const repackInputArchiveCountMax = 1024;
/** Most stored block bytes one repack writes (the new archive stays well below the archive limits). */
export const repackOutputSizeMaxBytes = 256 * 1024 * 1024;
/** Most blocks one repack (or rescue) writes; the rest waits for the next GC run. */
export const repackOutputBlockCountMax = 200_000;
/** Most version records one repack writes. */
export const repackOutputVersionCountMax = 100_000;
/** Most bytes of version records in one repack's idx (copies rewritten as ids grow them). */
export const repackIdxVersionBytesMax = 32 * 1024 * 1024;

assert(repackLiveRatioMin > 0 && repackLiveRatioMin < 1, 'live ratio is a share');
assert(repackArchiveCountMin >= 2, 'merging fewer than two archives gains nothing');
assert(repackOutputBlockCountMax < archiveBlockCountMax && repackOutputVersionCountMax < idxVersionCountMax, 'a full repack fits in one archive');
assert(repackIdxVersionBytesMax + repackOutputBlockCountMax * 40 < idxSizeMaxBytes, 'a full repack idx stays below the idx limit');
assert(keepHistoryMsDefault <= keepHistoryMsMax && gcIntervalMsDefault > 0, 'GC defaults in range');

/** Most versions in one archive of a checkpoint (zippy-export): a larger checkpoint is several archives. */
export const checkpointVersionCountMax = 100_000;
/** Most new blocks in one archive of a checkpoint (about 800 MiB of data). */
export const checkpointBlockCountMax = 200_000;
/** Approximate idx bytes (version records with their ids runs) after which a checkpoint starts another archive. */
export const checkpointIdxSizeSoftMaxBytes = 32 * 1024 * 1024;

assert(checkpointVersionCountMax <= idxVersionCountMax, 'a checkpoint archive holds its versions');
assert(checkpointBlockCountMax <= archiveBlockCountMax, 'a checkpoint archive holds its blocks');
assert(checkpointIdxSizeSoftMaxBytes + versionBlockIdCountMax * blockIdBytes + versionXattrSizeMaxBytes + archiveBlockCountMax * 40 + 2 * 65_536 < idxSizeMaxBytes,
  'a checkpoint archive at the soft limit plus one largest version and a full block table fits in an idx');
