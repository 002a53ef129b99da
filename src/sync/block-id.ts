/**
 * Block ids: a keyed hash of a block's stored payload, HMAC-SHA256 truncated to 16 bytes. The key
 * belongs to the sync dir; unencrypted sync dirs use the fixed key below (ids are then plain
 * content addresses, which is all an unencrypted dir can hide anyway). Encrypted dirs (design
 * section 8) will derive the key from the filesystem key so ids reveal nothing.
 */
import { createHmac } from 'node:crypto';
import { blockIdBytes } from './limits.js';

/** Key of the block-id hash for unencrypted sync dirs. */
export const plainBlockIdKey = Buffer.from('zippy-fs block id v1 (unencrypted sync dir)', 'utf8');

/** Block id of a payload (1..4096 bytes, as stored: trailing bytes past the file's end are not part of it). */
export function blockIdOf(payload: Uint8Array, key: Buffer = plainBlockIdKey): Buffer {
  return createHmac('sha256', key).update(payload).digest().subarray(0, blockIdBytes);
}
