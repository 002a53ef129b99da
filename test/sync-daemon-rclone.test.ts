/**
 * The rclone remote: two machines with real zippy-fs mounts converge through a local-type rclone
 * remote (configured through RCLONE_CONFIG_* environment variables), conflict copies included; a
 * file planted under an archive's name on the server is never replaced; a stale temp dir of this
 * box is removed and a young one of another box kept.
 */
import { strict as assert } from 'node:assert';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { mountSkipReason, tempDir } from './fixtures.js';
import { makeMachine, newName, runSyncCli, syncOnce, writeFakeArchive, type Machine } from './sync-daemon-fixtures.js';
import { concurrentEdit, type MountedMachine, mountMachine, randomOps, snapshot, syncUntilEqual } from './sync-daemon-machines.js';

const root = tempDir('zippy-syncd-rclone-');
const machines: MountedMachine[] = [];
const rcloneEnv = { RCLONE_CONFIG_ZIPPYLOCAL_TYPE: 'local', RCLONE_CONFIG: join(root, 'no-rclone.conf') };

after(async () => {
  await Promise.all(machines.map((m) => m.mount.cleanup()));
  rmSync(root, { recursive: true, force: true });
});

function withRclone<T extends Machine>(m: T): T {
  return { ...m, env: { ...m.env, ...rcloneEnv } };
}

function archives(dir: string): string[] {
  return readdirSync(dir).filter((n) => /^[0-9a-f]{32}\.(zip|idx)$/.test(n)).sort();
}

test('two machines converge through a local rclone remote', { skip: mountSkipReason() }, async () => {
  const server = join(root, 'server');
  const remote = `rclone:zippylocal:${server}`;
  for (const [i, name] of ['left', 'right'].entries()) machines.push(withRclone(await mountMachine(name, root, `${String(i + 5).repeat(8)}${'0'.repeat(24)}`)));
  const syncAll = (): void => {
    for (const m of machines) {
      const report = syncOnce(m, remote);
      assert.equal(report.ok, true, report.errors.join('\n'));
    }
  };
  for (let round = 0; round < 2; round++) {
    for (const [i, m] of machines.entries()) randomOps(m, 7000 + 100 * round + i, 10);
    concurrentEdit(machines, round);
    await new Promise((r) => setTimeout(r, 600));
    syncAll();
  }
  const left = await syncUntilEqual(machines, syncAll);
  assert.deepEqual(left, [], `trees differ after the sync rounds:\n${left.join('\n')}`);
  assert.ok([...snapshot(machines[0]!).keys()].some((p) => p.includes('.sync-conflict-')), 'the concurrent edits left a conflict copy');
  for (const m of machines) assert.deepEqual(archives(m.syncDir), archives(server));
  assert.deepEqual(readdirSync(server).filter((n) => n.startsWith('.')), [], 'no temp dir left on the server');
  const idle = syncOnce(machines[0]!, remote);
  assert.equal(idle.up.files + idle.down.files, 0);
});

test('rclone: a planted file is never replaced; stale own temp dirs go, young foreign ones stay', () => {
  const m = withRclone(makeMachine('planter', root));
  const server = join(root, 'server-planted');
  mkdirSync(server);
  const remote = `rclone:zippylocal:${server}`;
  const clash = newName();
  writeFakeArchive(m.syncDir, clash);
  writeFileSync(join(server, `${clash}.zip`), `zip of ${clash}`.replace(/z/, 'Z')); // same size, other bytes
  const ok = newName();
  writeFakeArchive(m.syncDir, ok, randomBytes(5000));
  const ownStale = join(server, `.tmp-${m.boxid}-${randomBytes(8).toString('hex')}`);
  mkdirSync(ownStale);
  writeFileSync(join(ownStale, `${ok}.zip`), 'partial');
  const old = Date.now() / 1000 - 3600;
  utimesSync(ownStale, old, old);
  const foreignYoung = join(server, `.tmp-${newName()}-${randomBytes(8).toString('hex')}`);
  mkdirSync(foreignYoung);
  const report = syncOnce(m, remote);
  assert.equal(readFileSync(join(server, `${clash}.zip`), 'utf8'), `Zip of ${clash}`, 'not replaced');
  assert.deepEqual(readFileSync(join(server, `${ok}.zip`)), readFileSync(join(m.syncDir, `${ok}.zip`)));
  assert.equal(existsSync(ownStale), false);
  assert.equal(existsSync(foreignYoung), true);
  assert.equal(report.tempsRemoved, 1);
  const other = withRclone(makeMachine('fetcher', root));
  writeFileSync(join(other.syncDir, `${ok}.zip`), 'x'); // a local file of another size under the name
  const r = runSyncCli(other, ['--once', '--json', '--remote', remote, other.syncDir]);
  assert.equal(r.code, 1);
  assert.equal(readFileSync(join(other.syncDir, `${ok}.zip`), 'utf8'), 'x', 'not replaced locally either');
});
