/**
 * Crash harness through a real mount: a seeded mixed workload (test/crash-workload.ts: creates,
 * random writes, appends, truncates, renames, unlinks, fsyncs; the mount publishes to its sync
 * dir meanwhile) runs in a child process while the mount process gets SIGKILL at a random
 * moment. After every kill: the store checks clean (in-process checker every time, the
 * `zippy-fsck` CLI every few kills and at the end), the next zippy-fs clears the stale mount,
 * every file the workload acknowledged (fsync of file and directory, journalled outside the
 * mount) and did not touch afterwards has exactly its acknowledged content, and every byte of
 * every file is one the workload wrote at that offset into a file that had that name, or zero.
 *
 * The seed is printed on failure; ZIPPY_CRASH_SEED=<n> reproduces a run, ZIPPY_SOAK=1 runs more
 * kill points (ZIPPY_CRASH_KILLS overrides the count).
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { checkStore } from '../src/inode/check.js';
import { Store } from '../src/inode/store.js';
import { type JournalRecord, writeData } from './crash-workload.js';
import { mountSkipReason, mountZippy, repoRoot, seededRandom, tempDir, type TestMount } from './fixtures.js';

const skip = mountSkipReason();
const soak = process.env['ZIPPY_SOAK'] === '1';
const seed = process.env['ZIPPY_CRASH_SEED'] !== undefined ? Number(process.env['ZIPPY_CRASH_SEED']) : 20261122; // fixed, so CI runs are reproducible; set the env variable to explore others
const killCount = Number(process.env['ZIPPY_CRASH_KILLS'] ?? (soak ? 300 : 50));
const workerPath = join(fileURLToPath(new URL('.', import.meta.url)), 'crash-workload.js');
const fsckPath = join(repoRoot(), 'dist', 'tools', 'fsck.js');

let m: TestMount;
let journalDir: string;

before(async () => {
  if (skip !== false) return;
  m = await mountZippy();
  journalDir = tempDir('zippy-crash-journal-');
});

after(async () => {
  await m?.cleanup();
  if (journalDir !== undefined) fs.rmSync(journalDir, { recursive: true, force: true });
});

function readJournal(path: string): JournalRecord[] {
  if (!fs.existsSync(path)) return [];
  const lines = fs.readFileSync(path, 'utf8').split('\n');
  // A line torn by the kill cannot happen (the worker dies, not the journal's file system), but
  // the last line may be missing its newline if the worker was killed mid-write: skip it.
  return lines.filter((line) => line.endsWith('}')).map((line) => JSON.parse(line) as JournalRecord);
}

interface Expectations {
  /** path → what its last acknowledged fsync promised, for paths untouched since. */
  acknowledged: Map<string, { size: number; sha256: string }>;
  /** path → identities that ever had that name. */
  idsOfPath: Map<string, Set<number>>;
  /** identity → every write issued (or attempted) to it, oldest first. */
  writesOfId: Map<number, { offset: number; length: number; dataSeed: number }[]>;
}

function expectations(records: JournalRecord[]): Expectations {
  const e: Expectations = { acknowledged: new Map(), idsOfPath: new Map(), writesOfId: new Map() };
  const named = (path: string, id: number): void => {
    let ids = e.idsOfPath.get(path);
    if (ids === undefined) e.idsOfPath.set(path, (ids = new Set()));
    ids.add(id);
  };
  for (const r of records) {
    switch (r.op) {
      case 'create':
        e.acknowledged.delete(r.path);
        named(r.path, r.id);
        break;
      case 'write': {
        e.acknowledged.delete(r.path);
        named(r.path, r.id);
        let writes = e.writesOfId.get(r.id);
        if (writes === undefined) e.writesOfId.set(r.id, (writes = []));
        writes.push({ offset: r.offset, length: r.length, dataSeed: r.dataSeed });
        break;
      }
      case 'truncate':
        e.acknowledged.delete(r.path);
        break;
      case 'rename':
        e.acknowledged.delete(r.from);
        e.acknowledged.delete(r.to);
        named(r.to, r.id);
        break;
      case 'unlink':
        e.acknowledged.delete(r.path);
        break;
      case 'sync':
        e.acknowledged.set(r.path, { size: r.size, sha256: r.sha256 });
        break;
    }
  }
  return e;
}

/** Problems with `path`'s bytes: each must be zero or written at that offset by an identity that had the name. */
function neverWrittenProblems(e: Expectations, path: string, content: Buffer): string[] {
  const ids = e.idsOfPath.get(path);
  if (ids === undefined) return [`${path}: a file the workload never created`];
  const explained = new Uint8Array(content.length);
  const writes = [...ids].flatMap((id) => e.writesOfId.get(id) ?? []).reverse();
  for (const w of writes) {
    const end = Math.min(content.length, w.offset + w.length);
    if (end <= w.offset) continue;
    const data = writeData(w.dataSeed, w.length);
    for (let at = w.offset; at < end; at++) if (explained[at] === 0 && content[at] === data[at - w.offset]) explained[at] = 1;
  }
  for (let at = 0; at < content.length; at++) {
    if (explained[at] === 0 && content[at] !== 0) return [`${path}: byte ${at} = ${content[at]} was never written there (size ${content.length})`];
  }
  return [];
}

/** Every problem with the mounted tree against the journal (empty when it keeps every promise). */
/** Acknowledged files everywhere; never-written bytes in the directories `cycles` names. */
function verifyMount(mountpoint: string, e: Expectations, conflictCopies: Set<string>, cycles: (name: string) => boolean): string[] {
  const problems: string[] = [];
  for (const [path, promised] of e.acknowledged) {
    let content: Buffer;
    try {
      content = fs.readFileSync(join(mountpoint, path));
    } catch (err) {
      problems.push(`${path}: acknowledged (${promised.size} bytes) but unreadable: ${(err as Error).message}`);
      continue;
    }
    const digest = createHash('sha256').update(content).digest('hex');
    if (digest !== promised.sha256) problems.push(`${path}: acknowledged ${promised.size} bytes ${promised.sha256.slice(0, 12)}, found ${content.length} bytes ${digest.slice(0, 12)}`);
  }
  for (const cycle of fs.readdirSync(mountpoint)) {
    if (!cycle.startsWith('c') || !cycles(cycle)) continue;
    for (const name of fs.readdirSync(join(mountpoint, cycle))) {
      const path = `${cycle}/${name}`;
      // A conflict copy (which the last test below forbids) holds the bytes of a version of the
      // name it was split from; its bytes are checked against that name.
      const conflict = /^(.*)\.sync-conflict-\d{8}-\d{6}-[0-9a-f]{8}$/.exec(name);
      if (conflict !== null) conflictCopies.add(path);
      const namePath = conflict === null ? path : `${cycle}/${conflict[1]}`;
      problems.push(...neverWrittenProblems(e, namePath, fs.readFileSync(join(mountpoint, path))).map((p) => `${path}: ${p}`));
    }
  }
  return problems;
}

async function checkInProcess(storeDir: string): Promise<string[]> {
  const store = Store.open(storeDir);
  try {
    return checkStore(store).problems.map((p) => `${p.code} ${p.place}: ${p.message}`);
  } finally {
    await store.close();
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolvePromise) => setTimeout(resolvePromise, ms));
}

test(`kill -9 at random moments under a mixed workload keeps every acknowledged byte (seed ${seed})`, { skip, timeout: soak ? 3_600_000 : 180_000 }, async (t) => {
  const fail = (message: string): never => assert.fail(`${message}\n(reproduce with ZIPPY_CRASH_SEED=${seed}; mount log tail:\n${m.logs().slice(-3000)})`);
  const rand = seededRandom(seed);
  const journalPath = join(journalDir, 'journal');
  const started = Date.now();
  let acknowledgedMax = 0;
  const conflictCopies = new Set<string>();
  for (let kill = 0; kill < killCount; kill++) {
    // 1. Start the workload in its own directory and kill the mount at a random moment.
    const worker = spawn(process.execPath, [workerPath, join(m.mountpoint, `c${kill}`), journalPath, String(seed * 1000 + kill), '2000'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let workerErr = '';
    worker.stderr!.on('data', (chunk: Buffer) => (workerErr += chunk.toString()));
    const workerExit = new Promise<number | null>((resolvePromise) => worker.once('exit', (code) => resolvePromise(code)));
    await sleep(60 + rand.int(soak ? 900 : 300));
    await m.kill9();
    const code = await Promise.race([workerExit, sleep(15_000).then(() => 'hung' as const)]);
    if (code === 'hung') fail(`kill ${kill}: the workload did not exit after the mount died`);
    if (code !== 0 && !/ENOTCONN|ECONNABORTED|Transport endpoint|EIO|ENOENT/.test(workerErr)) fail(`kill ${kill}: the workload failed unexpectedly:\n${workerErr}`);
    // 2. The store checks clean (the library every time, the CLI every tenth kill).
    const problems = await checkInProcess(m.storeDir);
    if (problems.length > 0) fail(`kill ${kill}: store check:\n${problems.join('\n')}`);
    if (kill % 10 === 9) {
      const fsck = spawnSync(process.execPath, [fsckPath, '--json', m.storeDir], { encoding: 'utf8', timeout: 60_000 });
      if (fsck.status !== 0) fail(`kill ${kill}: zippy-fsck exited ${fsck.status}:\n${fsck.stdout}${fsck.stderr}`);
    }
    // 3. Remount over the stale mount; every promise of the journal holds.
    await m.remount();
    const e = expectations(readJournal(journalPath));
    acknowledgedMax = Math.max(acknowledgedMax, e.acknowledged.size);
    const broken = verifyMount(m.mountpoint, e, conflictCopies, (name) => kill % 10 === 9 || name === `c${kill}`);
    if (broken.length > 0) fail(`after kill ${kill}:\n${broken.slice(0, 20).join('\n')}`);
  }
  await m.unmount();
  const fsck = spawnSync(process.execPath, [fsckPath, m.storeDir], { encoding: 'utf8', timeout: 120_000 });
  if (fsck.status !== 0) fail(`final zippy-fsck exited ${fsck.status}:\n${fsck.stdout}${fsck.stderr}`);
  const records = readJournal(journalPath);
  t.diagnostic(`seed ${seed}: ${killCount} kill points survived in ${((Date.now() - started) / 1000).toFixed(1)} s; ${records.length} journalled operations, ${records.filter((r) => r.op === 'sync').length} acknowledged fsyncs, up to ${acknowledgedMax} acknowledged files checked per kill; ${conflictCopies.size} self-conflict copies`);
  selfConflicts = [...conflictCopies];
});

let selfConflicts: string[] = [];

// A kill between writing an archive and the transaction that records it leaves an archive of our
// own; the next mount must adopt it, not import it as foreign and publish the same changes again
// on the same base (which made every file in it a `.sync-conflict-` copy of itself, seen by this
// harness and fixed in 77b394b). Conflict copies found above fail here.
test('kill -9 never makes a mount conflict with itself', { skip }, () => {
  assert.deepEqual(selfConflicts, [], `reproduce with ZIPPY_CRASH_SEED=${seed}`);
});
