/**
 * The rules of one zippy-sync run, with a local rsync remote and fake archives (the daemon never
 * opens archives): everything travels both ways (archives, rm-log chunks, key files) and a second
 * run moves nothing; nothing is ever overwritten on either side; leftover temp files are removed
 * and an upload killed mid-transfer leaves nothing under a real name and heals; a retired archive
 * is deleted on the server only once its successors are there, and locally only once they are
 * local; a crafted rm-log chunk naming successors nobody has deletes nothing.
 */
import { strict as assert } from 'node:assert';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { appendRmLog } from '../src/sync/rmlog.js';
import { tempDir } from './fixtures.js';
import {
  exitOf, makeMachine, newName, runSyncCli, startDaemon, sleep, syncOnce, writeFakeArchive, type Machine,
} from './sync-daemon-fixtures.js';

const root = tempDir('zippy-syncd-rules-');
after(() => rmSync(root, { recursive: true, force: true }));

let serial = 0;
function setup(): { a: Machine; b: Machine; server: string } {
  serial++;
  const server = join(root, `server${serial}`);
  return { a: makeMachine(`a${serial}`, root), b: makeMachine(`b${serial}`, root), server };
}

function has(dir: string, name: string): boolean {
  return existsSync(join(dir, `${name}.zip`)) && existsSync(join(dir, `${name}.idx`));
}

function archiveNames(dir: string): string[] {
  return readdirSync(dir).filter((n) => /^[0-9a-f]{32}\.(zip|idx)$/.test(n)).sort();
}

test('archives, rm-log chunks and key files travel both ways; a second run moves nothing', async () => {
  const { a, b, server } = setup();
  const fromA = [newName(), newName()];
  for (const n of fromA) writeFakeArchive(a.syncDir, n);
  writeFileSync(join(a.syncDir, 'plain.zip'), 'a plain zip stays local');
  await appendRmLog(a.syncDir, a.boxid, [{ archive: newName(), retiredAtMs: 1, supersededBy: [] }]);
  mkdirSync(join(a.syncDir, 'keys', 'requests'), { recursive: true });
  writeFileSync(join(a.syncDir, 'keys', 'requests', `${a.boxid}.pub`), '{"request":1}');
  const up = syncOnce(a, server);
  assert.equal(up.up.archives, 2);
  assert.equal(up.up.chunks, 1);
  assert.equal(up.up.keyFiles, 1);
  assert.deepEqual(archiveNames(server), archiveNames(a.syncDir));
  assert.equal(existsSync(join(server, 'plain.zip')), false, 'only archives, chunks and keys travel');
  assert.deepEqual(readdirSync(server).filter((n) => n.startsWith('.')), [], 'no temp dir left on the server');

  const fromB = newName();
  writeFakeArchive(b.syncDir, fromB);
  const down = syncOnce(b, server);
  assert.equal(down.down.archives, 2);
  assert.equal(down.down.chunks, 1);
  assert.equal(down.down.keyFiles, 1);
  assert.equal(down.up.archives, 1);
  for (const n of fromA) assert.equal(readFileSync(join(b.syncDir, `${n}.zip`), 'utf8'), `zip of ${n}`);
  assert.equal(readdirSync(join(b.syncDir, 'rmlog', a.boxid)).length, 1);
  assert.deepEqual(readdirSync(b.syncDir).filter((n) => n.startsWith('.')), [], 'no staging dir left locally');

  syncOnce(a, server);
  assert.equal(has(a.syncDir, fromB), true);
  for (const m of [a, b]) {
    const again = syncOnce(m, server);
    assert.equal(again.up.files + again.down.files + again.deletedLocal + again.deletedRemote, 0, `${m.name}: an idle run moves nothing`);
  }
});

test('nothing is overwritten: different files under an archive name stay, on the server and locally', () => {
  const { a, b, server } = setup();
  mkdirSync(server, { recursive: true });
  const sizeClash = newName();
  writeFakeArchive(a.syncDir, sizeClash);
  writeFileSync(join(server, `${sizeClash}.zip`), 'planted, another size');
  const sameSize = newName();
  writeFakeArchive(a.syncDir, sameSize);
  writeFileSync(join(server, `${sameSize}.zip`), `zip of ${sameSize}`.replace(/z/, 'Z')); // same size, other bytes
  const r = runSyncCli(a, ['--once', '--json', '--remote', server, a.syncDir]);
  assert.equal(r.code, 1, 'a clash fails the run');
  const report = JSON.parse(r.stdout) as { errors: string[]; up: { archives: number } };
  assert.match(report.errors.join('\n'), new RegExp(`archive ${sizeClash}: the server holds files of other sizes`));
  assert.equal(readFileSync(join(server, `${sizeClash}.zip`), 'utf8'), 'planted, another size');
  assert.equal(existsSync(join(server, `${sizeClash}.idx`)), false, 'no idx next to a zip that is not ours');
  assert.equal(readFileSync(join(server, `${sameSize}.zip`), 'utf8'), `Zip of ${sameSize}`, 'a same-size file is not replaced either');

  const clash = newName();
  writeFakeArchive(server, clash);
  writeFileSync(join(b.syncDir, `${clash}.zip`), 'local file of another size');
  const rb = runSyncCli(b, ['--once', '--json', '--remote', server, b.syncDir]);
  assert.equal(rb.code, 1);
  assert.match(rb.stdout, new RegExp(`archive ${clash}: the sync dir holds files of other sizes`));
  assert.equal(readFileSync(join(b.syncDir, `${clash}.zip`), 'utf8'), 'local file of another size');
  assert.equal(existsSync(join(b.syncDir, `${clash}.idx`)), false);
});

test('stale temp files are removed (server and local), young ones and other files are kept', () => {
  const { a, server } = setup();
  const name = newName();
  writeFakeArchive(a.syncDir, name, randomBytes(10_000));
  const oldS = Date.now() / 1000 - 3600;
  const ownStale = join(server, `.tmp-${a.boxid}-${randomBytes(8).toString('hex')}`);
  mkdirSync(ownStale, { recursive: true });
  writeFileSync(join(ownStale, `${name}.zip`), 'trunc'); // a partial upload of a killed run
  utimesSync(ownStale, oldS, oldS);
  const foreignYoung = join(server, `.tmp-${newName()}-${randomBytes(8).toString('hex')}`);
  mkdirSync(foreignYoung);
  writeFileSync(join(a.syncDir, '.tmp-0123.zip'), 'left by a killed writer');
  utimesSync(join(a.syncDir, '.tmp-0123.zip'), oldS, oldS);
  writeFileSync(join(a.syncDir, '.tmp-4567.zip'), 'a writer at work');
  const report = syncOnce(a, server);
  assert.equal(report.tempsRemoved, 2);
  assert.equal(existsSync(ownStale), false);
  assert.equal(existsSync(foreignYoung), true, 'a young temp dir of another box may be an upload in progress');
  assert.equal(existsSync(join(a.syncDir, '.tmp-0123.zip')), false);
  assert.equal(existsSync(join(a.syncDir, '.tmp-4567.zip')), true);
  assert.deepEqual(readFileSync(join(server, `${name}.zip`)), readFileSync(join(a.syncDir, `${name}.zip`)));
});

/** Pids of every descendant of `pid` (from /proc). */
function descendants(pid: number): number[] {
  const parentOf = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      parentOf.set(Number(entry), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      // gone
    }
  }
  const out: number[] = [];
  const stack = [pid];
  while (stack.length > 0) {
    const p = stack.pop()!;
    for (const [child, parent] of parentOf) if (parent === p) {
      out.push(child);
      stack.push(child);
    }
  }
  return out;
}

test('an upload killed mid-transfer leaves nothing under a real name, and the next run heals', async () => {
  const { a, b, server } = setup();
  const big = newName();
  writeFakeArchive(a.syncDir, big, randomBytes(96 * 1024 * 1024), randomBytes(1000));
  const daemon = startDaemon(a, ['--once', '--remote', server, a.syncDir]);
  let killedMidTransfer = false;
  const deadline = Date.now() + 30_000;
  while (daemon.child.exitCode === null && Date.now() < deadline) {
    const temp = existsSync(server) ? readdirSync(server).find((n) => n.startsWith('.tmp-')) : undefined;
    if (temp !== undefined && readdirSync(join(server, temp)).length > 0) {
      for (const pid of descendants(daemon.child.pid!)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      daemon.child.kill('SIGKILL');
      killedMidTransfer = true;
      break;
    }
    await sleep(1);
  }
  await exitOf(daemon.child);
  process.stdout.write(`# killed mid-transfer: ${killedMidTransfer}\n`);
  const zipPath = join(server, `${big}.zip`);
  if (existsSync(zipPath)) assert.equal(statSync(zipPath).size, 96 * 1024 * 1024, 'a zip under its real name is whole');
  if (killedMidTransfer) assert.equal(existsSync(join(server, `${big}.idx`)), false, 'no idx after a killed upload');
  // A reader on the server side (machine b) never gets a partial archive either.
  syncOnce(b, server);
  assert.equal(has(b.syncDir, big) && statSync(join(b.syncDir, `${big}.zip`)).size !== 96 * 1024 * 1024, false);
  const heal = syncOnce(a, server);
  assert.equal(heal.ok, true);
  assert.deepEqual(readFileSync(zipPath), readFileSync(join(a.syncDir, `${big}.zip`)));
  assert.equal(statSync(join(server, `${big}.idx`)).size, 1000);
  syncOnce(b, server);
  assert.deepEqual(readFileSync(join(b.syncDir, `${big}.zip`)), readFileSync(zipPath));
});

test('a retired archive is deleted on the server only once its successors are there, locally only once they are local', async () => {
  const { a, b, server } = setup();
  const old = newName();
  const successor = newName();
  writeFakeArchive(a.syncDir, old);
  syncOnce(a, server);
  syncOnce(b, server);
  assert.equal(has(b.syncDir, old), true);

  // a's GC retires `old` in favour of `successor`, which is not written yet.
  await appendRmLog(a.syncDir, a.boxid, [{ archive: old, retiredAtMs: Date.now(), supersededBy: [successor] }]);
  const waiting = syncOnce(a, server);
  assert.equal(waiting.deletedRemote, 0);
  assert.equal(waiting.waitingForSuperseding, 1);
  assert.equal(has(server, old), true, 'kept on the server while its successor is missing there');
  const bWaiting = syncOnce(b, server);
  assert.equal(bWaiting.down.chunks, 1);
  assert.equal(bWaiting.deletedLocal, 0);
  assert.equal(has(b.syncDir, old), true, 'kept locally while its successor is missing locally');

  // The successor appears and a's GC removes `old` locally.
  writeFakeArchive(a.syncDir, successor);
  rmSync(join(a.syncDir, `${old}.idx`));
  rmSync(join(a.syncDir, `${old}.zip`));
  const done = syncOnce(a, server);
  assert.equal(done.up.archives, 1);
  assert.equal(done.deletedRemote, 1);
  assert.equal(existsSync(join(server, `${old}.zip`)) || existsSync(join(server, `${old}.idx`)), false);
  assert.equal(has(server, successor), true);
  const bFresh = syncOnce(b, server);
  assert.equal(bFresh.down.archives, 1);
  assert.equal(bFresh.deletedLocal, 0, 'a chunk younger than --rmlog-settle (default 2 min) deletes nothing here yet');
  const bDone = syncOnce(b, server, ['--rmlog-settle', '0']);
  assert.equal(bDone.deletedLocal, 1);
  assert.equal(existsSync(join(b.syncDir, `${old}.zip`)) || existsSync(join(b.syncDir, `${old}.idx`)), false);
  assert.equal(has(b.syncDir, successor), true);
  assert.equal(syncOnce(a, server).down.archives, 0, 'a does not fetch back what it retired');
});

test('a crafted rm-log chunk naming successors nobody has deletes nothing, anywhere', async () => {
  const { a, b, server } = setup();
  const victim = newName();
  writeFakeArchive(a.syncDir, victim);
  syncOnce(a, server);
  syncOnce(b, server);
  const stranger = newName();
  const serverCopy = join(root, `crafted-${serial}`);
  mkdirSync(serverCopy);
  await appendRmLog(serverCopy, stranger, [{ archive: victim, retiredAtMs: 1, supersededBy: [newName(), newName()] }]);
  await appendRmLog(a.syncDir, stranger, [{ archive: victim, retiredAtMs: 1, supersededBy: [newName()] }]);
  // one chunk planted on the server, one in a's sync dir (as if it had arrived from elsewhere)
  mkdirSync(join(server, 'rmlog', stranger), { recursive: true });
  for (const f of readdirSync(join(serverCopy, 'rmlog', stranger))) writeFileSync(join(server, 'rmlog', stranger, f), readFileSync(join(serverCopy, 'rmlog', stranger, f)));
  for (const m of [a, b, a, b]) {
    const r = syncOnce(m, server);
    assert.equal(r.deletedLocal + r.deletedRemote, 0, `${m.name} deleted nothing`);
    assert.equal(has(m.syncDir, victim), true);
  }
  assert.equal(has(server, victim), true);
  // A third machine still downloads it: its successors are nowhere, so it is still needed.
  const c = makeMachine(`c${serial}`, root);
  const rc = syncOnce(c, server);
  assert.equal(has(c.syncDir, victim), true);
  assert.equal(rc.skippedRetired, 0);
});

test('the commit step itself never replaces: a name taken between listing and commit is left alone', async () => {
  const { RsyncRemote } = await import('../src/sync/daemon/remote-rsync.js');
  const { commitStaged } = await import('../src/sync/daemon/local.js');
  const { a, server } = setup();
  mkdirSync(server, { recursive: true });
  const name = newName();
  writeFakeArchive(a.syncDir, name);
  writeFileSync(join(server, `${name}.zip`), 'raced in');
  const remote = new RsyncRemote({ kind: 'rsync', host: undefined, path: server, text: server }, 'ssh');
  const outcome = await remote.upload(a.syncDir, `.tmp-${a.boxid}-${'0'.repeat(16)}`,
    [[{ path: `${name}.zip` }], [{ path: `${name}.idx`, after: `${name}.zip` }]], false, { signal: new AbortController().signal });
  assert.deepEqual(outcome.existed, [`${name}.zip`]);
  assert.deepEqual(outcome.placed, [`${name}.idx`]);
  assert.equal(readFileSync(join(server, `${name}.zip`), 'utf8'), 'raced in');
  assert.deepEqual(readdirSync(server).filter((n) => n.startsWith('.')), []);

  const staging = join(a.base, 'staging');
  mkdirSync(staging);
  writeFileSync(join(staging, `${name}.zip`), 'downloaded');
  writeFileSync(join(a.syncDir, `${name}.zip`), 'local wins');
  const local = await commitStaged(a.syncDir, staging, [[{ path: `${name}.zip` }]]);
  assert.deepEqual(local.existed, [`${name}.zip`]);
  assert.equal(readFileSync(join(a.syncDir, `${name}.zip`), 'utf8'), 'local wins');
});

test('encrypted sync dir: key files travel (fs.json last), sealed rm-log chunks are opened with the keyring', async () => {
  const { initEncryptedSyncDir, loadKeyring } = await import('../src/sync/crypto/index.js');
  const { a, b, server } = setup();
  const configA = join(a.base, 'config', 'zippy-fs');
  initEncryptedSyncDir(a.syncDir, configA);
  const keyring = loadKeyring(a.syncDir, configA);
  assert.ok(keyring.encrypted);
  const old = newName();
  const successor = newName();
  writeFakeArchive(a.syncDir, old);
  const first = syncOnce(a, server);
  assert.ok(first.up.keyFiles >= 3, 'marker, generation record, request and sealed key travel');
  assert.equal(existsSync(join(server, 'keys', 'fs.json')), true);
  // b has no key: it gets the key files and archives, cannot read rm-logs, deletes nothing.
  const bFirst = syncOnce(b, server);
  assert.equal(existsSync(join(b.syncDir, 'keys', 'fs.json')), true);
  assert.equal(has(b.syncDir, old), true);
  await appendRmLog(a.syncDir, a.boxid, [{ archive: old, retiredAtMs: Date.now(), supersededBy: [successor] }],
    { key: keyring.keys.get(keyring.currentKeyId)!, keyId: keyring.currentKeyId });
  writeFakeArchive(a.syncDir, successor);
  rmSync(join(a.syncDir, `${old}.idx`));
  rmSync(join(a.syncDir, `${old}.zip`));
  const retire = syncOnce(a, server);
  assert.deepEqual(retire.warnings, [], 'the sealed chunk opened');
  assert.equal(retire.deletedRemote, 1);
  const bRetire = syncOnce(b, server, ['--rmlog-settle', '0']);
  assert.equal(bRetire.deletedLocal, 0, 'without a key b cannot read the chunk, so it deletes nothing');
  assert.match(bRetire.warnings.join('\n'), /rm-logs not read/);
  assert.equal(has(b.syncDir, old), true);
  assert.equal(bFirst.ok && bRetire.ok, true);
});

test('SIGTERM during a transfer: exit 0, pid file removed, status says aborted, nothing partial under a real name', async () => {
  const { a, server } = setup();
  const big = newName();
  writeFakeArchive(a.syncDir, big, randomBytes(96 * 1024 * 1024), randomBytes(1000));
  const daemon = startDaemon(a, ['--interval', '1h', '--remote', server, a.syncDir]);
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    const temp = existsSync(server) ? readdirSync(server).find((n) => n.startsWith('.tmp-')) : undefined;
    if (temp !== undefined) break;
    await sleep(1);
  }
  daemon.child.kill('SIGTERM');
  const exit = await exitOf(daemon.child);
  assert.equal(exit.code, 0, daemon.output());
  assert.equal(existsSync(join(a.cacheDir, 'sync.pid')), false);
  const status = JSON.parse(readFileSync(join(a.cacheDir, 'sync-status.json'), 'utf8')) as { state: string; lastRun: { aborted: boolean; ok: boolean } | null };
  assert.equal(status.state, 'stopped');
  const zipPath = join(server, `${big}.zip`);
  if (existsSync(zipPath)) assert.equal(statSync(zipPath).size, 96 * 1024 * 1024);
  process.stdout.write(`# SIGTERM: run aborted=${status.lastRun?.aborted}, whole zip on the server=${existsSync(zipPath)}\n`);
  assert.equal(syncOnce(a, server).ok, true);
  assert.deepEqual(readFileSync(zipPath), readFileSync(join(a.syncDir, `${big}.zip`)));
});
