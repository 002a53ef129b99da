/**
 * The zippy-fs command line: --help, usage errors and their exit codes, a mountpoint that is
 * already mounted, and the detached (no -f) mode that prints where its log is.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { isMounted, mountMainPath, mountSkipReason, mountZippy, tempDir, type TestMount } from './fixtures.js';

const skip = mountSkipReason();

function zippyFs(args: string[], timeoutMs = 30_000): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, [mountMainPath(), ...args], { encoding: 'utf8', timeout: timeoutMs });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

describe('zippy-fs command line', { skip }, () => {
  const dirs: string[] = [];
  const mounts: TestMount[] = [];
  const scratch = (): string => {
    const dir = tempDir('zippy-cli-');
    dirs.push(dir);
    return dir;
  };

  after(async () => {
    for (const m of mounts) await m.cleanup();
    for (const dir of dirs) {
      const mnt = join(dir, 'mnt');
      if (isMounted(mnt)) spawnSync('fusermount', ['-u', '-z', mnt]);
      if (!isMounted(mnt)) fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('--help lists the options and exits 0', () => {
    const r = zippyFs(['--help']);
    assert.equal(r.status, 0);
    for (const word of ['-f', 'store=', 'cache_size=', 'allow_other', 'uid=', 'gid=', 'debug']) assert.ok(r.stdout.includes(word), `--help mentions ${word}`);
  });

  test('a relative sync dir is a usage error (exit 2) that says so', () => {
    const dir = scratch();
    fs.mkdirSync(join(dir, 'mnt'));
    const r = zippyFs(['-f', join(dir, 'mnt'), 'relative/sync']);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /absolute/);
  });

  test('a missing sync dir is a usage error (exit 2) that names it', () => {
    const dir = scratch();
    fs.mkdirSync(join(dir, 'mnt'));
    const r = zippyFs(['-f', join(dir, 'mnt'), join(dir, 'nope')]);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /does not exist/);
    assert.ok(r.stderr.includes(join(dir, 'nope')));
  });

  test('options of libfuse\'s high-level API and bad timeouts are usage errors (exit 2) that say why, before mounting', () => {
    const dir = scratch();
    fs.mkdirSync(join(dir, 'mnt'));
    fs.mkdirSync(join(dir, 'sync'));
    for (const option of ['use_ino', 'hard_remove', 'attr_timeout=-1']) {
      const r = zippyFs(['-f', '-o', option, join(dir, 'mnt'), join(dir, 'sync')]);
      assert.equal(r.status, 2, `${option}: ${r.stderr}`);
      assert.match(r.stderr, option.includes('timeout') ? /seconds/ : /high-level API/);
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    }
  });

  test('wrong argument count is a usage error (exit 2)', () => {
    assert.equal(zippyFs(['-f']).status, 2);
  });

  test('an already mounted mountpoint is refused with a clear message (exit 3)', async () => {
    const m = await mountZippy();
    mounts.push(m);
    const other = scratch();
    const r = zippyFs(['-f', '-o', `store=${join(other, 'store')}`, m.mountpoint, m.syncDir]);
    assert.equal(r.status, 3, r.stderr);
    assert.match(r.stderr, /already mounted/);
    assert.match(r.stderr, /fusermount -u/);
    fs.writeFileSync(join(m.mountpoint, 'still-works'), 'yes');
    assert.equal(fs.readFileSync(join(m.mountpoint, 'still-works'), 'utf8'), 'yes');
    await m.unmount();
  });

  test('-s (single-threaded) with -o uid=,gid=,cache_size= mounts and reports the given owner', async () => {
    const m = await mountZippy({ flags: ['-s'], options: ['uid=1234', 'gid=5678', 'cache_size=8M'] });
    mounts.push(m);
    fs.writeFileSync(join(m.mountpoint, 'owned'), 'x');
    const st = fs.statSync(join(m.mountpoint, 'owned'));
    assert.deepEqual([st.uid, st.gid], [1234, 5678]);
    await m.unmount();
    const dir = scratch();
    fs.mkdirSync(join(dir, 'mnt'));
    const bad = zippyFs(['-f', '-o', 'cache_size=lots', join(dir, 'mnt'), dir]);
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /bad size/);
  });

  test('without -f it detaches, prints where the log is, and the mount works', async () => {
    const dir = scratch();
    const mnt = join(dir, 'mnt');
    const sync = join(dir, 'sync');
    const store = join(dir, 'store');
    fs.mkdirSync(mnt);
    fs.mkdirSync(sync);
    const r = zippyFs(['-o', `store=${store}`, mnt, sync]);
    try {
      assert.equal(r.status, 0, r.stderr);
      const logPath = /log: ([^)\s]+)/.exec(r.stdout)?.[1];
      assert.ok(logPath !== undefined, `no log path in: ${r.stdout}`);
      assert.ok(isMounted(mnt), 'mounted after the command returned');
      fs.writeFileSync(join(mnt, 'hello'), 'detached');
      assert.equal(fs.readFileSync(join(mnt, 'hello'), 'utf8'), 'detached');
      assert.match(fs.readFileSync(logPath, 'utf8'), /mounted/);
      const pid = Number(fs.readFileSync(join(store, 'LOCK'), 'utf8').trim());
      assert.ok(pid > 0);
      process.kill(pid, 'SIGTERM');
      const deadline = Date.now() + 20_000;
      const alive = (): boolean => {
        try {
          process.kill(pid, 0);
          return true;
        } catch {
          return false;
        }
      };
      while (alive() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
      assert.ok(!alive(), 'SIGTERM ends the detached process');
      assert.ok(!isMounted(mnt), 'SIGTERM unmounts the detached mount');
      assert.match(fs.readFileSync(logPath, 'utf8'), /unmounted cleanly/);
    } finally {
      if (isMounted(mnt)) spawnSync('fusermount', ['-u', '-z', mnt]);
    }
  });
});
