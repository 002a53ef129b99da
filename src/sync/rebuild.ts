/**
 * Rebuild from the sync dir (the sync half of `zippy-fsck --repair` when LMDB is lost): a fresh
 * store imports every whole archive exactly as a first mount would — the published versions
 * give paths, types, modes, owners, times, xattrs and block lists (blocks stay in the archives,
 * read lazily) — and then tells the caller which local records the sync dir already holds, so
 * only data that was never published goes to lost+found.
 *
 * Nothing is written to the sync dir: the store's outbox is empty after an import (imports do not
 * enter it), so stopping the engine publishes nothing.
 */
import { blockSizeBytes } from '../limits.js';
import type { FileSystem } from '../inode/fs.js';
import { blockIdOf, plainBlockIdKey } from './block-id.js';
import { loadKeyring } from './crypto/index.js';
import { SyncEngine } from './engine.js';

export interface SyncImport {
  /** Archives imported. */
  readonly archiveCount: number;
  /** True when a block with this payload is in some archive (its id under the dir's block-id key). */
  hasPayload(payload: Buffer): boolean;
}

/** Imports every whole archive of `syncDir` into `fs` (a fresh store) and stops. Throws BAD_KEY when the dir is encrypted and no key is held. */
export async function importSyncDir(fs: FileSystem, syncDir: string, options: { boxid: string; configDir: string; log: (message: string) => void }): Promise<SyncImport> {
  const keyring = loadKeyring(syncDir, options.configDir);
  const key = keyring.encrypted ? keyring.blockIdKey : plainBlockIdKey;
  const engine = await SyncEngine.start(fs, { syncDir, boxid: options.boxid, configDir: options.configDir, watch: false, log: options.log, publishDelayMs: 3_600_000 });
  await engine.stop();
  const archiveCount = engine.state.archiveNames().size;
  const padded = Buffer.alloc(blockSizeBytes);
  return {
    archiveCount,
    hasPayload(payload) {
      if (engine.state.hasBlock(blockIdOf(payload, key))) return true;
      if (payload.length === blockSizeBytes) return false;
      padded.fill(0);
      payload.copy(padded);
      return engine.state.hasBlock(blockIdOf(padded, key));
    },
  };
}
