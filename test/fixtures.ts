/**
 * The one fixture builder of the test suite: temporary directories, stores, file systems and
 * (later) mounts and peers. Everything it makes is torn down by `cleanup`, and every store it
 * opened is checked with the store checker before it goes: a test that leaves a store
 * inconsistent fails even when its own assertions passed.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkStore } from '../src/inode/check.js';
import { FileSystem, type FileSystemOptions } from '../src/inode/fs.js';
import { Store, type StoreOptions } from '../src/inode/store.js';
import { randomBytes } from 'node:crypto';
import { SyncEngine } from '../src/sync/engine.js';

/** A fresh temporary directory, removed by cleanup(). */
export function tempDir(prefix = 'zippy-test-'): string {
  return mkdtempSync(join(process.env['ZIPPY_TEST_TMP'] ?? tmpdir(), prefix));
}

export interface TestFs {
  dir: string;
  store: Store;
  fs: FileSystem;
  /** Closes cleanly and opens again (a clean remount). */
  reopen(): Promise<void>;
  /** Drops all process state without writing anything back (kill -9), then opens again. */
  crashAndReopen(): Promise<void>;
  /** Runs the checker and throws with every problem listed when the store is inconsistent. */
  check(): void;
  /** Checks, closes and removes the directory. */
  cleanup(): Promise<void>;
}

export interface TestFsOptions {
  store?: StoreOptions;
  fs?: FileSystemOptions;
}

/** A store and file system in a fresh temporary directory; the write-back timer is off by default. */
export function openTestFs(options: TestFsOptions = {}): TestFs {
  const dir = tempDir();
  const fsOptions: FileSystemOptions = { writebackDelayMs: 0, ...options.fs };
  const open = (): { store: Store; fs: FileSystem } => {
    const store = Store.open(dir, options.store);
    return { store, fs: new FileSystem(store, fsOptions) };
  };
  const state = open();
  const t: TestFs = {
    dir,
    store: state.store,
    fs: state.fs,
    async reopen() {
      await t.fs.close();
      await t.store.close();
      Object.assign(t, open());
    },
    async crashAndReopen() {
      await t.store.abandon();
      Object.assign(t, open());
    },
    check() {
      const report = checkStore(t.store);
      if (report.problems.length > 0) {
        throw new Error(`store check failed:\n${report.problems.map((p) => `  ${p.code} ${p.place}: ${p.message}`).join('\n')}`);
      }
    },
    async cleanup() {
      try {
        await t.fs.close();
        t.check();
      } finally {
        await t.store.close();
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
  return t;
}

// ------------------------------------------------------------------------------------------
// Sync boxes: in-process peers (store + file system + sync engine, no FUSE) sharing a sync dir.
// ------------------------------------------------------------------------------------------

export interface SyncBox {
  readonly t: TestFs;
  readonly engine: SyncEngine;
  readonly boxid: string;
  /** The box's file system (changes when the fixture reopens it). */
  readonly fs: FileSystem;
  /** Stops sync (publishing what is left), checks and removes the store. */
  cleanup(): Promise<void>;
  /** Drops the engine and the store without publishing or syncing (kill -9), then reopens both. */
  crashAndReopen(): Promise<void>;
}

/** An in-process peer on `syncDir`: its own store and boxid; no watching unless asked. */
export async function openSyncBox(syncDir: string, options: { boxid?: string; publishDelayMs?: number; watch?: boolean; log?: (m: string) => void } = {}): Promise<SyncBox> {
  const t = openTestFs();
  const boxid = options.boxid ?? randomBytes(16).toString('hex');
  const syncOptions = {
    syncDir, boxid, publishDelayMs: options.publishDelayMs ?? 60_000, watch: options.watch ?? false,
    log: options.log ?? ((): void => undefined),
  };
  let engine = await SyncEngine.start(t.fs, syncOptions);
  const box: SyncBox = {
    t, boxid,
    get engine() {
      return engine;
    },
    get fs() {
      return t.fs;
    },
    async cleanup() {
      await engine.stop();
      await t.cleanup();
    },
    async crashAndReopen() {
      await engine.abandon();
      await t.crashAndReopen();
      engine = await SyncEngine.start(t.fs, syncOptions);
    },
  };
  return box;
}
