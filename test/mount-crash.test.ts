/**
 * kill -9 of the mount process: the stale mount it leaves ("Transport endpoint is not
 * connected") is cleaned up by the next zippy-fs on that mountpoint, every byte that was
 * fsynced before the kill is there afterwards, and the store checks clean.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { isMounted, mountSkipReason, mountZippy, seededRandom, type TestMount } from './fixtures.js';

const skip = mountSkipReason();

let m: TestMount;

before(async () => {
  if (skip === false) m = await mountZippy();
});

after(async () => {
  await m?.cleanup();
});

test('kill -9: the next zippy-fs clears the stale mount and every fsynced byte is there', { skip, timeout: 180_000 }, async () => {
  const rand = seededRandom(99);
  const p = m.mountpoint;
  const expected = new Map<string, string>();
  fs.mkdirSync(join(p, 'data'));
  for (let round = 0; round < 3; round++) {
    // Files written and fsynced (data and the directory entry) before the kill.
    for (let i = 0; i < 40; i++) {
      const name = join('data', `r${round}-f${i}`);
      const data = Buffer.alloc(rand.int(300_000) + 1, rand.int(256));
      for (let j = 0; j < data.length; j += 997) data[j] = rand.int(256);
      const fd = fs.openSync(join(p, name), 'w');
      fs.writeSync(fd, data);
      fs.fsyncSync(fd);
      fs.closeSync(fd);
      expected.set(name, createHash('sha256').update(data).digest('hex'));
    }
    // An overwrite in the middle of an existing file, fsynced.
    const victim = join('data', `r0-f${round}`);
    const before = fs.readFileSync(join(p, victim));
    const fd = fs.openSync(join(p, victim), 'r+');
    const patch = Buffer.alloc(5000, 0xab);
    const at = Math.min(before.length, 1234);
    fs.writeSync(fd, patch, 0, patch.length, at);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    const after = Buffer.concat([before.subarray(0, at), patch, before.subarray(at + patch.length)]);
    expected.set(victim, createHash('sha256').update(after).digest('hex'));
    const dirFd = fs.openSync(join(p, 'data'), 'r');
    fs.fsyncSync(dirFd);
    fs.closeSync(dirFd);
    // Unsynced writes in flight at the kill: may or may not survive, must not corrupt.
    fs.writeFileSync(join(p, 'data', `unsynced-${round}`), Buffer.alloc(100_000, 1));

    const oldPid = m.pid;
    await m.kill9();
    assert.ok(isMounted(p), 'the killed mount is left in the mount table (stale)');
    assert.equal((() => {
      try {
        fs.readdirSync(p);
        return 'ok';
      } catch (e) {
        return (e as NodeJS.ErrnoException).code;
      }
    })(), 'ENOTCONN');
    await m.remount();
    assert.notEqual(m.pid, oldPid);
    assert.match(m.logs(), /Transport endpoint is not connected|stale/i);
    for (const [name, digest] of expected) {
      assert.equal(createHash('sha256').update(fs.readFileSync(join(p, name))).digest('hex'), digest, `${name} after kill -9 #${round + 1}`);
    }
  }
  await m.unmount();
});
