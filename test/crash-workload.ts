/**
 * The crash harness's workload (run as a child process by test/crash-mount.test.ts, never by the
 * test runner: its name does not match `*.test.*`). It writes through a real mount with
 * synchronous fs calls and keeps a journal OUTSIDE the mount: every operation is journalled
 * (appended and fsynced) before it is issued, and every acknowledged fsync is journalled after
 * it returned, before the next operation starts. The journal is therefore the ground truth of
 * what was attempted (intents) and what was acknowledged (`sync` records).
 *
 * Usage: node crash-workload.js <dir-in-mount> <journal-file> <seed> <op-count-max>
 * The process exits 0 when it ran out of operations, and with an error when the mount died
 * under it (expected: the harness kills the mount at a random moment).
 */
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, unlinkSync, writeSync, ftruncateSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { seededRandom } from './random.js';


/** One journal line. `id` is the identity of a file (a creation), which moves with renames. */
export type JournalRecord =
  | { op: 'create'; path: string; id: number }
  | { op: 'write'; path: string; id: number; offset: number; length: number; dataSeed: number }
  | { op: 'truncate'; path: string; id: number; size: number }
  | { op: 'rename'; from: string; to: string; id: number }
  | { op: 'unlink'; path: string; id: number }
  | { op: 'sync'; path: string; id: number; size: number; sha256: string };

/** The bytes of a journalled write: a pure function of its seed, so the journal stays small. */
export function writeData(dataSeed: number, length: number): Buffer {
  const rand = seededRandom(dataSeed);
  const data = Buffer.alloc(length);
  let at = 0;
  for (; at + 4 <= length; at += 4) data.writeUInt32LE(Math.floor(rand.next() * 0x100000000), at);
  for (; at < length; at++) data[at] = rand.int(256);
  return data;
}

export const fileSizeMaxBytes = 64 * 1024;

function runWorkload(root: string, journalPath: string, seed: number, opCountMax: number): void {
  const rand = seededRandom(seed);
  const journalFd = openSync(journalPath, 'a');
  // Journal paths are relative to the mountpoint (the parent of `root`), so they survive remounts.
  const base = dirname(root);
  const rel = (key: string, value: unknown): unknown => (key === 'path' || key === 'from' || key === 'to') && typeof value === 'string' ? value.slice(base.length + 1) : value;
  const journal = (record: JournalRecord): void => {
    writeSync(journalFd, `${JSON.stringify(record, rel)}\n`);
    fsyncSync(journalFd);
  };
  const fsyncPath = (path: string, flags: string): void => {
    const fd = openSync(path, flags);
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  };
  // The cycle's directory must itself be durable before anything below it can be.
  mkdirSync(root);
  fsyncPath(root, 'r');
  fsyncPath(dirname(root), 'r');

  /** The workload's own model: path → identity and current content. */
  const files = new Map<string, { id: number; content: Buffer }>();
  let nextId = seed * 1000;
  const names = Array.from({ length: 10 }, (_, i) => join(root, `f${i}`));
  const write = (path: string, file: { id: number; content: Buffer }, offset: number, length: number): void => {
    const dataSeed = rand.int(0x7fffffff);
    journal({ op: 'write', path, id: file.id, offset, length, dataSeed });
    const data = writeData(dataSeed, length);
    const fd = openSync(path, 'r+');
    try {
      writeSync(fd, data, 0, length, offset);
    } finally {
      closeSync(fd);
    }
    if (file.content.length < offset + length) file.content = Buffer.concat([file.content, Buffer.alloc(offset + length - file.content.length)]);
    data.copy(file.content, offset);
  };

  for (let opIndex = 0; opIndex < opCountMax; opIndex++) {
    const path = rand.pick(names);
    const file = files.get(path);
    const roll = rand.next();
    if (file === undefined) {
      const id = nextId++;
      journal({ op: 'create', path, id });
      closeSync(openSync(path, 'wx'));
      const created = { id, content: Buffer.alloc(0) };
      files.set(path, created);
      write(path, created, 0, 1 + rand.int(16 * 1024));
    } else if (roll < 0.3) {
      const offset = rand.int(Math.max(1, file.content.length + 8192));
      const length = Math.min(1 + rand.int(rand.next() < 0.7 ? 4096 : 20 * 1024), fileSizeMaxBytes - offset);
      if (length > 0) write(path, file, offset, length);
    } else if (roll < 0.45) {
      const length = Math.min(1 + rand.int(8_000), fileSizeMaxBytes - file.content.length);
      if (length > 0) write(path, file, file.content.length, length);
    } else if (roll < 0.5) {
      const size = rand.int(file.content.length + 1);
      journal({ op: 'truncate', path, id: file.id, size });
      const fd = openSync(path, 'r+');
      try {
        ftruncateSync(fd, size);
      } finally {
        closeSync(fd);
      }
      file.content = Buffer.from(file.content.subarray(0, size));
    } else if (roll < 0.6) {
      const to = rand.pick(names);
      if (to === path) continue;
      journal({ op: 'rename', from: path, to, id: file.id });
      renameSync(path, to);
      files.delete(path);
      files.set(to, file);
    } else if (roll < 0.65) {
      journal({ op: 'unlink', path, id: file.id });
      unlinkSync(path);
      files.delete(path);
    } else {
      // fsync of the file, then of its directory (the name): only then is it acknowledged.
      fsyncPath(path, 'r+');
      fsyncPath(root, 'r');
      journal({ op: 'sync', path, id: file.id, size: file.content.length, sha256: createHash('sha256').update(file.content).digest('hex') });
    }
  }
  closeSync(journalFd);
}

const [root, journalPath, seedText, opCountText] = process.argv.slice(2);
const isMain = process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;
if (isMain && root !== undefined && journalPath !== undefined && seedText !== undefined && opCountText !== undefined) {
  runWorkload(root, journalPath, Number(seedText), Number(opCountText));
}
