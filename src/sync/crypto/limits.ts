/**
 * Limits and fixed sizes of the encryption layer (envelopes and key files), with their relations
 * asserted at load. The sync layer's own limits are in ../limits.ts.
 */
import { assert } from '../../errors.js';
import { archiveBlockCountMax, blockStoredSizeMaxBytes, idxSizeMaxBytes } from '../limits.js';

/**
 * Plaintext bytes per envelope chunk (the last chunk may be shorter). 16 KiB rather than 64 KiB:
 * a lazy read of one 4 KiB block decrypts one or two chunks, so smaller chunks read random blocks
 * about twice as fast, while whole-file sealing loses about a quarter of its speed (measured:
 * roughly 400-550 MB/s either way, far above deflate's speed) and the tags cost 0.1%.
 */
export const envelopeChunkSizeBytes = 16 * 1024;
/** Poly1305 tag bytes after each chunk's ciphertext. */
export const envelopeTagBytes = 16;
/** Bytes of the envelope header. */
export const envelopeHeaderSizeBytes = 64;
/** Bytes of a key id (written as 16 lowercase hex digits). */
export const keyIdBytes = 8;
/** Bytes of a filesystem key (XChaCha20-Poly1305 key). */
export const fsKeyBytes = 32;
/** Bytes of the derived block-id key. */
export const blockIdKeyBytes = 32;
/**
 * Largest plaintext an envelope may carry: an archive zip of the most blocks at their largest
 * stored size plus generous room for zip headers (200 bytes per entry) and the central directory.
 */
export const envelopePlainSizeMaxBytes = archiveBlockCountMax * (blockStoredSizeMaxBytes + 200) + 1024 * 1024;
/** Largest key file (JSON in keys/) a reader accepts. */
export const keyFileSizeMaxBytes = 1024 * 1024;
/** Most key generations a keyring may have (each revoke adds one). */
export const keyGenerationCountMax = 4096;
/** Most files in keys/ (sealed files, requests, generations, passphrase files) a reader lists. */
export const keyDirEntryCountMax = 262_144;
/** Most members (boxids) one generation may name. */
export const keyMemberCountMax = 4096;

/** Argon2id limits written into new passphrase files (libsodium's "interactive" ops, 64 MiB). */
export const passphraseOpsLimitDefault = 3;
export const passphraseMemLimitDefaultBytes = 64 * 1024 * 1024;
/** Largest Argon2id limits a reader accepts from a passphrase file (a hostile file must not make us allocate 64 GiB). */
export const passphraseOpsLimitMax = 16;
export const passphraseMemLimitMaxBytes = 1024 * 1024 * 1024;
/** Longest passphrase accepted, in UTF-8 bytes. */
export const passphraseLengthMaxBytes = 1024;

assert(envelopeChunkSizeBytes % 4096 === 0, 'envelope chunks are whole 4 KiB pages');
assert(envelopePlainSizeMaxBytes < Number.MAX_SAFE_INTEGER / 2, 'envelope offsets are exact');
assert(idxSizeMaxBytes <= envelopePlainSizeMaxBytes, 'a largest idx fits an envelope');
assert(envelopePlainSizeMaxBytes / envelopeChunkSizeBytes < 2 ** 32, 'chunk indexes fit in u32');
assert(keyIdBytes === 8 && fsKeyBytes === 32, 'key ids and keys have their documented sizes');
assert(passphraseOpsLimitDefault <= passphraseOpsLimitMax, 'default ops limit within the maximum');
assert(passphraseMemLimitDefaultBytes <= passphraseMemLimitMaxBytes, 'default memory limit within the maximum');
