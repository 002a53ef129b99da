/**
 * Three machines on one host, one server: three sync dirs with real zippy-fs mounts (each its own
 * HOME/XDG dirs, so its own boxid), and one server directory reached through a real sshd on
 * 127.0.0.1 (own port, keys generated for the test) with rsync. Seeded random writes, overwrites,
 * renames, deletes and concurrent edits of one file on all three, `zippy-sync --once` rounds in
 * between; afterwards all three mounts show identical trees (checksums), conflict copies included,
 * and every sync dir holds exactly the server's archives.
 */
import { strict as assert } from 'node:assert';
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { mountSkipReason, tempDir } from './fixtures.js';
import { type Sshd, sshdSkipReason, startSshd, syncOnce } from './sync-daemon-fixtures.js';
import { concurrentEdit, type MountedMachine, mountMachine, randomOps, snapshot, syncUntilEqual } from './sync-daemon-machines.js';

const skip = mountSkipReason() || sshdSkipReason();
const root = tempDir('zippy-syncd-ssh-');
const machines: MountedMachine[] = [];
let sshd: Sshd | undefined;

before(async () => {
  if (skip !== false) return;
  sshd = await startSshd();
});

after(async () => {
  await Promise.all(machines.map((m) => m.mount.cleanup()));
  await sshd?.stop();
  rmSync(root, { recursive: true, force: true });
});

function archives(dir: string): string[] {
  return readdirSync(dir).filter((n) => /^[0-9a-f]{32}\.(zip|idx)$/.test(n)).sort();
}

test('three machines converge through rsync over a real sshd, conflict copies included', { skip }, async () => {
  const t0 = Date.now();
  const server = join(root, 'server');
  mkdirSync(server);
  for (const [i, name] of ['alpha', 'beta', 'gamma'].entries()) machines.push(await mountMachine(name, root, `${String(i + 1).repeat(8)}${'0'.repeat(24)}`));
  const remote = sshd!.remoteFor(server);
  // alpha passes the ssh command with --ssh, the others through ZIPPY_SSH.
  const syncAll = (): void => {
    for (const m of machines) {
      const report = m.name === 'alpha' ? syncOnce(m, remote, ['--ssh', sshd!.sshCommand]) : syncOnce({ ...m, env: { ...m.env, ZIPPY_SSH: sshd!.sshCommand } }, remote);
      assert.equal(report.ok, true, report.errors.join('\n'));
    }
  };
  process.stdout.write(`# mounted ${Date.now() - t0} ms\n`);
  for (let round = 0; round < 3; round++) {
    for (const [i, m] of machines.entries()) randomOps(m, 1000 * round + i, 12);
    concurrentEdit(machines, round);
    await new Promise((r) => setTimeout(r, 600)); // let the mounts publish (bounded by publish_delay_ms)
    syncAll();
    process.stdout.write(`# round ${round} ${Date.now() - t0} ms\n`);
  }
  const left = await syncUntilEqual(machines, syncAll);
  process.stdout.write(`# converged ${Date.now() - t0} ms\n`);
  assert.deepEqual(left, [], `trees differ after the sync rounds:\n${left.join('\n')}`);
  const tree = snapshot(machines[0]!);
  const conflicts = [...tree.keys()].filter((p) => p.includes('.sync-conflict-'));
  assert.ok(conflicts.length >= 2, `concurrent edits of shared.txt left conflict copies: ${[...tree.keys()].join(', ')}`);
  for (const m of machines) assert.deepEqual(archives(m.syncDir), archives(server), `${m.name}'s sync dir holds the server's archives`);
  assert.deepEqual(readdirSync(server).filter((n) => n.startsWith('.')), [], 'no temp dir left on the server');
  process.stdout.write(`# ${tree.size} entries, ${conflicts.length} conflict copies, ${archives(server).length / 2} archives on the server\n`);
});
