/**
 * Enrollment end to end through real mounts and the real CLIs, three machines (one HOME and
 * XDG_CONFIG_HOME / XDG_CACHE_HOME each, so each has its own boxid and key pair):
 * A creates the sync dir encrypted on first mount (`-o encrypt`) and writes; B requests, both
 * print the same fingerprint, B mounts (with `-o encrypt`: a no-op on an encrypted dir), A grants,
 * and B's running mount reads A's files; C, never granted, mounts an empty tree, says why in its log, and keeps its
 * own change in its outbox at unmount; after A revokes B, archives A writes later are unreadable
 * to B (its log names them) while B still reads the earlier ones. Also: `-o encrypt` on a plain
 * sync dir with archives is refused with exit 2, and `--help` lists it.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { mountMainPath, mountSkipReason, repoRoot, type TestMachine, TestMachines, type TestMount } from './fixtures.js';
import { seededRandom } from './random.js';

const skip = mountSkipReason();

const world = new TestMachines();
after(() => world.cleanup());
const scratch = (prefix: string): string => world.scratch(prefix);
const machine = (name: string): TestMachine => world.machine(name);

function zippyKey(m: TestMachine, args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [join(repoRoot(), 'bin', 'zippy-key.js'), ...args], { env: m.env, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function zippyFs(m: TestMachine, args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [mountMainPath(), ...args], { env: m.env, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function mount(m: TestMachine, syncDir: string, options: string[] = []): Promise<TestMount> {
  return world.mount(m, { syncDir, options: ['publish_delay_ms=100', ...options] });
}

/** Polls `probe` until it returns a value other than undefined (never sleeps a fixed time). */
async function waitFor<T>(what: string, probe: () => T | undefined, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let value: T | undefined;
    try {
      value = probe();
    } catch {
      value = undefined;
    }
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function readIf(path: string, expected: Buffer): true | undefined {
  return existsSync(path) && readFileSync(path).equals(expected) ? true : undefined;
}

function idxNames(syncDir: string): string[] {
  return readdirSync(syncDir).filter((n) => /^[0-9a-f]{32}\.idx$/.test(n)).map((n) => n.slice(0, 32)).sort();
}

function randomBytesSeeded(n: number, seed: number): Buffer {
  const random = seededRandom(seed);
  return Buffer.from(Array.from({ length: n }, () => random.int(256)));
}

describe('encrypted sync dirs through real mounts', { skip }, () => {
  test('--help lists -o encrypt', () => {
    const r = zippyFs(machine('help'), ['--help']);
    assert.equal(r.status, 0);
    assert.match(r.stdout, /\bencrypt\b/);
  });

  test('-o encrypt on a plain sync dir with archives is refused (exit 2) and leaves it plain', async () => {
    const m = machine('plain');
    const syncDir = scratch('zippy-plain-sync-');
    const plain = await mount(m, syncDir);
    writeFileSync(join(plain.mountpoint, 'f.txt'), 'plain');
    await plain.unmount();
    assert.ok(idxNames(syncDir).length > 0);
    const mnt = join(scratch('zippy-plain-mnt-'), 'mnt');
    mkdirSync(mnt);
    const r = zippyFs(m, ['-f', '-o', 'encrypt', mnt, syncDir]);
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /plain sync dir/);
    assert.match(r.stderr, /for life/);
    assert.equal(existsSync(join(syncDir, 'keys', 'fs.json')), false);
  });

  test('enroll B (matching fingerprints, grant), a never-granted C, revoke B', async () => {
    const [a, b, c] = [machine('a'), machine('b'), machine('c')];
    const syncDir = scratch('zippy-enc-sync-');

    // A: first mount with -o encrypt makes the new sync dir encrypted; A writes.
    const mountA = await mount(a, syncDir, ['encrypt']);
    assert.ok(existsSync(join(syncDir, 'keys', 'fs.json')), 'keys/fs.json marks the dir encrypted');
    assert.match(mountA.logs(), /is now an encrypted sync dir/);
    const marker = readFileSync(join(syncDir, 'keys', 'fs.json'));
    const hello = Buffer.from('hello from A\n');
    const big = randomBytesSeeded(300_000, 11);
    mkdirSync(join(mountA.mountpoint, 'docs'));
    writeFileSync(join(mountA.mountpoint, 'docs', 'hello.txt'), hello);
    writeFileSync(join(mountA.mountpoint, 'big.bin'), big);
    await waitFor('A publishes', () => (idxNames(syncDir).length > 0 ? true : undefined));

    // B asks; both sides print the same fingerprint; A grants.
    const request = zippyKey(b, ['request', syncDir]);
    assert.equal(request.status, 0, request.stderr);
    const printedByB = /Fingerprint: (\d{4}(?: \d{4}){5})/.exec(request.stdout)?.[1];
    const boxidB = /boxid ([0-9a-f]{32})/.exec(request.stdout)?.[1];
    assert.ok(printedByB !== undefined && boxidB !== undefined, request.stdout);
    // B mounts before the grant (-o encrypt is a no-op on an encrypted dir): nothing to read yet.
    const mountB = await mount(b, syncDir, ['encrypt']);
    assert.ok(readFileSync(join(syncDir, 'keys', 'fs.json')).equals(marker), 'the marker is untouched');
    assert.doesNotMatch(mountB.logs(), /is now an encrypted sync dir/);
    assert.deepEqual(readdirSync(mountB.mountpoint), []);
    const grant = zippyKey(a, ['grant', boxidB, syncDir, '--yes']);
    assert.equal(grant.status, 0, grant.stderr);
    const printedByA = /shows fingerprint:\s+(\d{4}(?: \d{4}){5})/.exec(grant.stderr)?.[1];
    assert.equal(printedByA, printedByB, 'A and B print the same fingerprint');
    assert.match(grant.stdout, /Granted/);

    // The grant takes effect in B's running mount (keys are reloaded at every rescan): B reads A's files.
    await waitFor('B reads hello.txt', () => readIf(join(mountB.mountpoint, 'docs', 'hello.txt'), hello));
    await waitFor('B reads big.bin', () => readIf(join(mountB.mountpoint, 'big.bin'), big));

    // C, never granted: its mount serves an empty tree and its log says why and what to do.
    const mountC = await mount(c, syncDir);
    assert.deepEqual(readdirSync(mountC.mountpoint), []);
    await waitFor('C says why', () => (mountC.logs().includes(`run zippy-key request ${syncDir} and ask a member to grant`) ? true : undefined));
    assert.match(mountC.logs(), /BAD_KEY/);
    // C still serves its own files; at unmount they stay in its outbox, and it says so.
    writeFileSync(join(mountC.mountpoint, 'mine.txt'), 'C only');
    assert.equal(readFileSync(join(mountC.mountpoint, 'mine.txt'), 'utf8'), 'C only');
    const archivesBeforeC = idxNames(syncDir);
    await mountC.unmount();
    assert.match(mountC.logs(), /could not be published to .* at unmount/);
    assert.match(mountC.logs(), /stay in the outbox of the local store/);
    assert.match(mountC.logs(), /NOT published/);
    assert.deepEqual(idxNames(syncDir), archivesBeforeC, 'C published nothing');

    // A writes a file B imports (B reads its content only after the revoke).
    const early = randomBytesSeeded(50_000, 12);
    writeFileSync(join(mountA.mountpoint, 'early.bin'), early);
    await waitFor('B sees early.bin', () => (readdirSync(mountB.mountpoint).includes('early.bin') ? true : undefined));

    // A revokes B, then writes: B cannot read what A writes from now on, and says which archive.
    const revoke = zippyKey(a, ['revoke', boxidB, syncDir]);
    assert.equal(revoke.status, 0, revoke.stderr);
    const before = new Set(idxNames(syncDir));
    writeFileSync(join(mountA.mountpoint, 'after.txt'), 'after the revoke');
    const fresh = await waitFor('A publishes after the revoke', () => {
      const names = idxNames(syncDir).filter((n) => !before.has(n));
      return names.length > 0 ? names : undefined;
    });
    await waitFor('B names the unreadable archive', () => (fresh.some((n) => mountB.logs().includes(n) && /BAD_KEY/.test(mountB.logs())) ? true : undefined));
    assert.equal(existsSync(join(mountB.mountpoint, 'after.txt')), false);
    assert.ok(readFileSync(join(mountB.mountpoint, 'early.bin')).equals(early), 'B still reads archives from before the revoke');
    assert.ok(readFileSync(join(mountB.mountpoint, 'docs', 'hello.txt')).equals(hello));

    await mountB.unmount();
    await mountA.unmount();
    if (process.env['ZIPPY_SHOW_LOGS'] === '1') process.stdout.write(`# A\n${mountA.logs()}# B\n${mountB.logs()}# C\n${mountC.logs()}`);
  });
});
