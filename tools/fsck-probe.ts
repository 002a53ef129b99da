/**
 * `node dist/tools/fsck-probe.js <lmdb-dir>`: internal helper of zippy-fsck. Reads every key and
 * value of an LMDB environment (read-only) and exits 0, or 3 with the error on stderr. zippy-fsck
 * runs it as a child process before it maps LMDB itself, because a damaged page can crash the
 * reading process (SIGSEGV) instead of raising an error. It loads nothing but the B+Tree code,
 * so it starts fast.
 */
import { probeBtree } from '../src/inode/check.js';

const lmdbDir = process.argv[2];
if (lmdbDir === undefined) {
  process.stderr.write('usage: fsck-probe <lmdb-dir>\n');
  process.exitCode = 2;
} else {
  try {
    await probeBtree(lmdbDir);
    process.exitCode = 0;
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n`);
    process.exitCode = 3;
  }
}
