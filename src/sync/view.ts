/**
 * A read-only view of a sync dir: the tree a mount would show (optionally as of a time), built
 * without FUSE by the real sync engine into a throw-away store. Exports (`zippy-export`) and
 * history listings read it; `zippy-fs -o at=` mounts the same kind of engine.
 *
 * Why the engine and not a re-implementation: which version shows, implied directories, conflict
 * copies and their names are decided by merge.ts and reconcile.ts over the engine's LMDB state.
 * Running them as they are is the only way to be sure an export equals what a mount shows.
 *
 * Lifecycle:
 * 1. a fresh store in a temporary directory (under `tempParent`, default the OS temp dir);
 * 2. the engine starts with `readOnly` (never publishes, never writes to the sync dir), no watching,
 *    and `asOfNs` when given: it imports every archive (lazy block pointers, so the store holds
 *    metadata only) and reconciles the tree;
 * 3. `close()` stops the engine, closes the store and removes its directory.
 * Every warning the engine logs (an unreadable archive, one waiting for a missing archive, a path
 * that could not be applied) is kept in `warnings`: a caller reports them and exits 1.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileSystem } from '../inode/fs.js';
import { Store } from '../inode/store.js';
import { SyncEngine } from './engine.js';

export interface SyncViewOptions {
  readonly syncDir: string;
  /** Only archives published at or before this time (ns since the epoch). */
  readonly asOfNs?: bigint;
  /** The machine's boxid (names the writer of a checkpoint); any 32 hex for a pure reader. */
  readonly boxid: string;
  /** The zippy-fs config directory (this machine's key pair, for encrypted sync dirs). */
  readonly configDir?: string;
  /** Where the temporary store goes (default the OS temp dir). */
  readonly tempParent?: string;
  /** Block cache size of the temporary file system. */
  readonly cacheSizeBytes?: number;
}

export interface SyncView {
  readonly fs: FileSystem;
  readonly engine: SyncEngine;
  /** Every message the engine logged while building the view: each is a problem to report. */
  readonly warnings: readonly string[];
  close(): Promise<void>;
}

/** Builds the view (steps 1-2 above). The caller must `close()` it. */
export async function openSyncView(options: SyncViewOptions): Promise<SyncView> {
  const dir = mkdtempSync(join(options.tempParent ?? tmpdir(), 'zippy-view-'));
  const warnings: string[] = [];
  let store: Store | undefined;
  let fs: FileSystem | undefined;
  try {
    store = Store.open(dir);
    fs = new FileSystem(store, { writebackDelayMs: 0, ...(options.cacheSizeBytes === undefined ? {} : { cacheSizeBytes: options.cacheSizeBytes }) });
    const engine = await SyncEngine.start(fs, {
      syncDir: options.syncDir, boxid: options.boxid, watch: false, readOnly: true,
      log: (m) => warnings.push(m),
      ...(options.asOfNs === undefined ? {} : { asOfNs: options.asOfNs }),
      ...(options.configDir === undefined ? {} : { configDir: options.configDir }),
    });
    const openedStore = store;
    const openedFs = fs;
    return {
      fs: openedFs, engine, warnings,
      async close() {
        try {
          await engine.stop();
          await openedFs.close();
          await openedStore.close();
        } finally {
          rmSync(dir, { recursive: true, force: true });
        }
      },
    };
  } catch (e) {
    await fs?.close().catch(() => undefined);
    await store?.close().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}
