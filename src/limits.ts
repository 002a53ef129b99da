/**
 * Every limit of zippy-fs in one place, with the relations between them asserted at load.
 * Names carry their unit last (`...Bytes`, `...Count`, `...Ms`).
 */
import { assert } from './errors.js';

/** Size of one file block; files are cut into blocks of this size. */
export const blockSizeBytes = 4096;
/** Default maximum size of one segment file. */
export const segmentSizeMaxBytesDefault = 64 * 1024 * 1024;
/** Largest segment size a store may be configured with (offsets are stored as u32). */
export const segmentSizeMaxBytesLimit = 1024 * 1024 * 1024;
/** Longest file name in bytes (as ext4). */
export const nameLengthMaxBytes = 255;
/** Longest path in bytes (as PATH_MAX). */
export const pathLengthMaxBytes = 4096;
/** Longest symlink target in bytes. */
export const symlinkLengthMaxBytes = 4095;
/** Longest extended attribute name in bytes (as XATTR_NAME_MAX). */
export const xattrNameLengthMaxBytes = 255;
/** Largest extended attribute value in bytes (as XATTR_SIZE_MAX). */
export const xattrValueSizeMaxBytes = 65536;
/** Largest file size: 2^43 bytes (8 TiB) keeps block indexes and sizes exact in a JS number. */
export const fileSizeMaxBytes = 2 ** 43;
/** Largest number of hard links to one inode. */
export const linkCountMax = 65000;
/** Deepest directory nesting walked by any tree walk (explicit stacks are bounded by it). */
export const treeDepthMax = 2048;
/** Default block cache size. */
export const cacheSizeBytesDefault = 64 * 1024 * 1024;
/** Smallest block cache size a mount accepts. */
export const cacheSizeBytesMin = 1024 * 1024;
/**
 * Chunks of 256 block places (1 MiB of file data each, about 2.6 KiB of memory) the place cache
 * keeps: 4,096 chunks describe 4 GiB of files in about 11 MiB.
 */
export const placeCacheChunkCountMax = 4096;
/** Dirty data older than this is written back by the timer. */
export const writebackDelayMsDefault = 1000;
/** LMDB map size (virtual address space reserved; the file grows as needed). */
export const lmdbMapSizeBytes = 64 * 1024 * 1024 * 1024;

assert(segmentSizeMaxBytesDefault <= segmentSizeMaxBytesLimit, 'default segment size within limit');
assert(segmentSizeMaxBytesLimit < 2 ** 32, 'segment offsets fit in u32');
assert(segmentSizeMaxBytesDefault % blockSizeBytes === 0, 'segment size is a multiple of the block size');
assert(Number.isSafeInteger(fileSizeMaxBytes / blockSizeBytes), 'block indexes are exact numbers');
assert(cacheSizeBytesDefault >= cacheSizeBytesMin, 'default cache at least the minimum');
assert(nameLengthMaxBytes < pathLengthMaxBytes, 'a name fits in a path');
/** Entries in the inode layer's path → inode cache; it is cleared when full (a new working set refills it). */
export const pathCacheEntryCountMax = 65_536;
/** Inodes the inode layer remembers as having no extended attributes; the set is cleared when full. */
export const noXattrInodeCountMax = 131_072;

/**
 * V8 flags of the zippy-fs mount process (bin/zippy-fs.js's shebang says the same; the detached
 * mount, the tests and the benches start it with these). A young generation of 4 MiB semi-spaces
 * instead of V8's 16 MiB keeps about 30 MiB less garbage resident while blocks stream through
 * the cache; measured, it does not slow writing.
 */
export const mountNodeFlags: readonly string[] = ['--max-semi-space-size=4'];
