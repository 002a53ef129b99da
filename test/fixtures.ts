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
