/**
 * zippy-sync's command line: the pid file (a second daemon refuses, a stale file is replaced, the
 * file goes away on SIGTERM), `now` (an error without a daemon; with one, it starts a run), status
 * (text and --json), usage errors and a missing rsync/rclone named clearly (exit 2). Real processes,
 * a local rsync remote, fake archives.
 */
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { tempDir } from './fixtures.js';
import {
  exitOf, makeMachine, newName, runSyncCli, startDaemon, syncMainPath, waitFor, writeFakeArchive, type Machine,
} from './sync-daemon-fixtures.js';

const root = tempDir('zippy-syncd-cli-');
after(() => rmSync(root, { recursive: true, force: true }));

function pidPath(m: Machine): string {
  return join(m.cacheDir, 'sync.pid');
}

function statusOf(m: Machine): { pid: number; state: string; totals: { runs: number; archivesUp: number }; lastRun: { ok: boolean; up: { archives: number } } | null; running: boolean } {
  const r = runSyncCli(m, ['status', '--json']);
  return JSON.parse(r.stdout) as ReturnType<typeof statusOf>;
}

test('usage errors exit 2 with a message; --help exits 0', () => {
  const m = makeMachine('usage', root);
  const help = runSyncCli(m, ['--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /zippy-sync now/);
  const relative = runSyncCli(m, ['--once', '--remote', '/tmp', 'relative/dir']);
  assert.equal(relative.code, 2);
  assert.match(relative.stderr, /absolute/);
  const noRemote = runSyncCli(m, ['--once', m.syncDir]);
  assert.equal(noRemote.code, 2);
  assert.match(noRemote.stderr, /no remote/);
  const badInterval = runSyncCli(m, ['--interval', 'soon', '--remote', '/tmp', m.syncDir]);
  assert.equal(badInterval.code, 2);
  assert.match(badInterval.stderr, /interval/);
  const badRemote = runSyncCli(m, ['--once', '--remote', 'host::module', m.syncDir]);
  assert.equal(badRemote.code, 2);
  assert.match(badRemote.stderr, /not supported/);
});

test('a missing rsync, ssh or rclone is named, exit 2, before anything runs', () => {
  const m = makeMachine('nobinaries', root);
  const emptyBin = join(root, 'empty-bin');
  mkdirSync(emptyBin, { recursive: true });
  const env = { ...m.env, PATH: emptyBin };
  const rsync = runSyncCli(m, ['--once', '--remote', join(root, 'srv-x'), m.syncDir], env);
  assert.equal(rsync.code, 2, rsync.stderr);
  assert.match(rsync.stderr, /rsync is needed for this remote but was not found on PATH/);
  const ssh = runSyncCli(m, ['--once', '--remote', 'u@h:x', '--ssh', '/nonexistent/ssh -p 1', m.syncDir], { ...m.env });
  assert.equal(ssh.code, 2, ssh.stderr);
  assert.match(ssh.stderr, /\/nonexistent\/ssh is needed/);
  const rclone = runSyncCli(m, ['--once', '--remote', 'rclone:x:/y', m.syncDir], env);
  assert.equal(rclone.code, 2, rclone.stderr);
  assert.match(rclone.stderr, /rclone is needed/);
  assert.equal(existsSync(pidPath(m)), false, 'no pid file was written');
});

test('now without a daemon is an error; status without any run says so', () => {
  const m = makeMachine('nodaemon', root);
  const now = runSyncCli(m, ['now']);
  assert.equal(now.code, 1);
  assert.match(now.stderr, /no zippy-sync is running/);
  mkdirSync(m.cacheDir, { recursive: true });
  writeFileSync(pidPath(m), `${process.pid}\n`); // a live process, but not a zippy-sync
  const stale = runSyncCli(m, ['now']);
  assert.equal(stale.code, 1);
  assert.match(stale.stderr, /is not a running zippy-sync/);
  const status = runSyncCli(m, ['status']);
  assert.equal(status.code, 1);
  assert.match(status.stdout, /no status yet/);
});

test('daemon: stale pid replaced, a second daemon refuses, now starts a run, SIGTERM removes the pid file', async () => {
  const m = makeMachine('daemon', root);
  const server = join(root, 'srv-daemon');
  mkdirSync(m.cacheDir, { recursive: true });
  writeFileSync(pidPath(m), `${process.pid}\n`); // live, but this test runner: stale for zippy-sync
  const daemon = startDaemon(m, ['--interval', '1h', '--remote', server, m.syncDir]);
  try {
    await waitFor('the first run', () => existsSync(join(m.cacheDir, 'sync-status.json')) && statusOf(m).totals.runs === 1);
    assert.equal(readFileSync(pidPath(m), 'utf8'), `${daemon.child.pid}\n`);
    assert.match(daemon.output(), /replaced a stale pid file/);

    const second = runSyncCli(m, ['--once', '--remote', server, m.syncDir]);
    assert.equal(second.code, 3);
    assert.match(second.stderr, new RegExp(`another zippy-sync is running \\(pid ${daemon.child.pid}`));

    const name = newName();
    writeFakeArchive(m.syncDir, name);
    const askedMs = Date.now();
    const now = runSyncCli(m, ['now']);
    assert.equal(now.code, 0, now.stderr);
    await waitFor('the run started by now', () => statusOf(m).totals.runs === 2);
    const latencyMs = Date.now() - askedMs;
    process.stdout.write(`# zippy-sync now -> run finished after ${latencyMs} ms (includes the run and the status polling)\n`);
    assert.equal(existsSync(join(server, `${name}.idx`)), true);
    const status = statusOf(m);
    assert.equal(status.running, true);
    assert.equal(status.pid, daemon.child.pid);
    assert.equal(status.lastRun?.ok, true);
    assert.equal(status.lastRun?.up.archives, 1);
    assert.equal(status.totals.archivesUp, 1);
    const text = runSyncCli(m, ['status']);
    assert.equal(text.code, 0);
    assert.match(text.stdout, /running \(pid \d+\), idle/);
    assert.match(text.stdout, /up: +1 archives/);

    daemon.child.kill('SIGTERM');
    const exit = await exitOf(daemon.child);
    assert.equal(exit.code, 0, daemon.output());
    assert.equal(existsSync(pidPath(m)), false, 'pid file removed');
    assert.equal(statusOf(m).state, 'stopped');
    assert.equal(statusOf(m).running, false);
  } finally {
    if (daemon.child.exitCode === null) daemon.child.kill('SIGKILL');
  }
});

test('SIGUSR1 during a run is coalesced into one more run', async () => {
  const m = makeMachine('coalesce', root);
  const server = join(root, 'srv-coalesce');
  for (let i = 0; i < 200; i++) writeFakeArchive(m.syncDir, newName(), Buffer.alloc(64 * 1024, i));
  const daemon = startDaemon(m, ['--interval', '1h', '--remote', server, m.syncDir]);
  try {
    await waitFor('the pid file', () => existsSync(pidPath(m)) && readFileSync(pidPath(m), 'utf8') === `${daemon.child.pid}\n`);
    for (let i = 0; i < 5; i++) daemon.child.kill('SIGUSR1');
    await waitFor('two runs', () => existsSync(join(m.cacheDir, 'sync-status.json')) && statusOf(m).totals.runs >= 2 && statusOf(m).state === 'idle');
    const runs = statusOf(m).totals.runs;
    assert.ok(runs <= 3, `5 signals made ${runs} runs (at most the first run, one coalesced run, and one if the signals straddled the first run's start)`);
    daemon.child.kill('SIGTERM');
    assert.equal((await exitOf(daemon.child)).code, 0, daemon.output());
  } finally {
    if (daemon.child.exitCode === null) daemon.child.kill('SIGKILL');
  }
});

test('progress on a TTY (stderr), none otherwise', () => {
  const m = makeMachine('tty', root);
  const server = join(root, 'srv-tty');
  for (let i = 0; i < 3; i++) writeFakeArchive(m.syncDir, newName());
  const quiet = runSyncCli(m, ['--once', '--remote', server, m.syncDir]);
  assert.equal(quiet.code, 0);
  assert.doesNotMatch(quiet.stderr, /files .* MiB/);
  for (let i = 0; i < 3; i++) writeFakeArchive(m.syncDir, newName());
  const command = [process.execPath, syncMainPath(), '--once', '--remote', server, m.syncDir].map((w) => `'${w}'`).join(' ');
  const r = spawnSync('script', ['-qec', command, '/dev/null'], { env: m.env, encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /zippy-sync up {3}6\/6 files/);
});
