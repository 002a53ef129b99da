/**
 * `zippy-fsck [--json] <store-dir | segments-dir>`: a thin CLI over the checker library
 * (src/inode/check.ts) and the segment scanner (src/blocks/scan.ts).
 *
 * A store directory (it holds lmdb/ and segments/) gets the full check: every inode, directory
 * entry, link count, block pointer (each record read and verified) and allocator mark. A
 * `segments/` directory inside a store is checked as that store; a bare segments directory
 * gets every record's checksum verified. Opening a store recovers a torn log tail exactly as a
 * mount would (and says so). Exit codes: 0 clean, 1 problems found, 2 could not run.
 */
import { existsSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { isFsError } from '../src/errors.js';
import { listSegmentNumbers, scanSegmentFile, segmentFileName } from '../src/blocks/index.js';
import { checkStore, type Problem } from '../src/inode/check.js';
import { Store } from '../src/inode/store.js';

export const fsckExit = { clean: 0, problems: 1, failed: 2 } as const;

const help = `Usage: zippy-fsck [--json] <store-dir | segments-dir>

Checks a zippy-fs local store: segments (record checksums, torn tails), the B+Tree
(entries, link counts, reachability, block pointers) and allocator marks.
A store must not be mounted while it is checked.

  --json      print the result as JSON on stdout
  -h, --help  this text

Exit codes: 0 clean, 1 problems found, 2 could not run.`;

interface Result {
  target: string;
  kind: 'store' | 'segments';
  problems: Problem[];
  counts: Record<string, number>;
  recovery: string[];
}

function progress(enabled: boolean): (done: number) => void {
  return (done) => {
    if (enabled) process.stderr.write(`\rzippy-fsck: ${done} blocks verified`);
  };
}

function checkStoreDir(dir: string, tty: boolean): Result {
  const store = Store.open(dir);
  try {
    const report = checkStore(store, { progress: progress(tty) });
    if (tty) process.stderr.write('\n');
    return {
      target: dir,
      kind: 'store',
      problems: report.problems,
      counts: { inodes: report.inodeCount, directories: report.directoryCount, blocks: report.blockCount, blockBytes: report.blockBytes },
      recovery: [...store.openReport.messages],
    };
  } finally {
    void store.close();
  }
}

function checkSegmentsDir(dir: string): Result {
  const problems: Problem[] = [];
  let records = 0;
  let bytes = 0;
  const segments = listSegmentNumbers(dir);
  for (const segment of segments) {
    const file = join(dir, segmentFileName(segment));
    for (const item of scanSegmentFile(file, segment)) {
      if (item.kind === 'record') {
        records++;
        bytes += item.loc.lengthBytes;
      } else {
        problems.push({ code: 'record', place: `${file} offset ${item.offset}`, message: `${item.kind}: ${item.lengthBytes} bytes: ${item.error.message}` });
      }
    }
  }
  return { target: dir, kind: 'segments', problems, counts: { segments: segments.length, records, payloadBytes: bytes }, recovery: [] };
}

function printText(result: Result): void {
  for (const line of result.recovery) process.stdout.write(`recovery: ${line}\n`);
  for (const [name, value] of Object.entries(result.counts)) process.stdout.write(`${name.padEnd(12)} ${value}\n`);
  for (const p of result.problems) process.stdout.write(`PROBLEM ${p.code} at ${p.place}: ${p.message}\n`);
  process.stdout.write(result.problems.length === 0 ? `${result.target}: clean\n` : `${result.target}: ${result.problems.length} problem(s)\n`);
}

/** Entry point: returns the exit code. */
export function main(argv: string[]): number {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, options: { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } });
  } catch (e) {
    process.stderr.write(`zippy-fsck: ${(e as Error).message}\nTry 'zippy-fsck --help'.\n`);
    return fsckExit.failed;
  }
  if (parsed.values.help === true) {
    process.stdout.write(`${help}\n`);
    return fsckExit.clean;
  }
  if (parsed.positionals.length !== 1) {
    process.stderr.write(`zippy-fsck: expected one directory\nTry 'zippy-fsck --help'.\n`);
    return fsckExit.failed;
  }
  const target = resolve(parsed.positionals[0]!);
  if (!existsSync(target) || !statSync(target).isDirectory()) {
    process.stderr.write(`zippy-fsck: not a directory: ${target}\n`);
    return fsckExit.failed;
  }
  const storeDir = existsSync(join(target, 'lmdb')) ? target : basename(target) === 'segments' && existsSync(join(dirname(target), 'lmdb')) ? dirname(target) : undefined;
  let result: Result;
  try {
    result = storeDir !== undefined ? checkStoreDir(storeDir, process.stderr.isTTY === true && parsed.values.json !== true) : checkSegmentsDir(target);
  } catch (e) {
    const hint = isFsError(e, 'LOCKED') ? ' (unmount it first)' : '';
    process.stderr.write(`zippy-fsck: cannot check ${target}: ${(e as Error).message}${hint}\n`);
    return fsckExit.failed;
  }
  if (parsed.values.json === true) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  else printText(result);
  return result.problems.length === 0 ? fsckExit.clean : fsckExit.problems;
}

process.exitCode = main(process.argv.slice(2));
