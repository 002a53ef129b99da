/**
 * Key material never appears in what zippy-fs prints: every zippy-key subcommand, with and
 * without --json, on success and on failure, and the logs of mounts run with `-o debug` (every
 * FUSE request logged) on a member, a second member and a machine without a key. Searched for:
 * every machine's X25519 secret key, every filesystem key generation, the block-id key, the
 * plaintext of every sealed key file (the key payload), and the passphrase — each as raw bytes,
 * hex, base64 and base64url (with and without padding) and as a prefix of those.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { loadKeyring } from '../src/sync/crypto/index.js';
import { sodium } from '../src/sync/crypto/sodium.js';
import { mountSkipReason, repoRoot, type TestMachine, TestMachines } from './fixtures.js';

const skip = mountSkipReason();
const passphrase = 'leaky sieve 7 tangerines';

const world = new TestMachines();
after(() => world.cleanup());
const scratch = (prefix: string): string => world.scratch(prefix);
const machine = (name: string): TestMachine => world.machine(name);

/** Raw stdout and stderr of every command run, searched at the end. */
const outputs: { what: string; bytes: Buffer }[] = [];

function zippyKey(m: TestMachine, args: string[], env: Record<string, string> = {}): { status: number | null; stdout: string } {
  const r = spawnSync(process.execPath, [join(repoRoot(), 'bin', 'zippy-key.js'), ...args], { env: { ...m.env, ...env }, timeout: 60_000 });
  outputs.push({ what: `${m.name}: zippy-key ${args.join(' ')} (stdout)`, bytes: r.stdout }, { what: `${m.name}: zippy-key ${args.join(' ')} (stderr)`, bytes: r.stderr });
  return { status: r.status, stdout: r.stdout.toString('utf8') };
}

/** Runs a subcommand as text and as --json; returns both exit codes. */
function bothWays(m: TestMachine, args: string[], env: Record<string, string> = {}): [number | null, number | null] {
  return [zippyKey(m, args, env).status, zippyKey(m, [...args, '--json'], env).status];
}

/** Every text form of a secret a program might print. */
function forms(secret: Buffer): string[] {
  const b64 = secret.toString('base64');
  const hex = secret.toString('hex');
  return [hex, hex.toUpperCase(), b64, b64.replace(/=+$/, ''), secret.toString('base64url'), hex.slice(0, 16), b64.slice(0, 12)];
}

describe('no key material in outputs or logs', { skip }, () => {
  test('zippy-key (every subcommand, text and --json) and -o debug mount logs', async () => {
    const [a, b, c, d, e] = [machine('a'), machine('b'), machine('c'), machine('d'), machine('e')];
    const syncDir = scratch('zippy-leak-sync-');
    const passphraseFile = join(scratch('zippy-leak-pass-'), 'passphrase');
    writeFileSync(passphraseFile, `${passphrase}\n`);

    assert.deepEqual(bothWays(a, ['--help']), [0, 0]);
    assert.deepEqual(bothWays(a, ['init', syncDir]), [0, 1], 'init, then init again fails');
    const syncDir2 = scratch('zippy-leak-sync2-');
    assert.equal(zippyKey(a, ['init', syncDir2, '--json']).status, 0, 'init --json');
    assert.deepEqual(bothWays(c, ['show', syncDir]), [0, 0]);
    assert.deepEqual(bothWays(b, ['request', syncDir]), [0, 0]);
    const boxidB = readFileSync(join(b.configDir, 'boxid'), 'utf8').trim();
    assert.deepEqual(bothWays(a, ['grant', boxidB, syncDir]), [1, 1], 'no --yes, no TTY');
    assert.deepEqual(bothWays(a, ['grant', boxidB, syncDir, '--yes']), [0, 0]);
    assert.deepEqual(bothWays(a, ['show', syncDir]), [0, 0]);
    assert.deepEqual(bothWays(b, ['show', syncDir]), [0, 0]);
    assert.deepEqual(bothWays(a, ['passphrase', syncDir, '--passphrase-file', passphraseFile]), [0, 0]);
    assert.deepEqual(bothWays(a, ['passphrase', syncDir], { ZIPPY_PASSPHRASE: passphrase }), [0, 0]);
    assert.deepEqual(bothWays(d, ['passphrase', syncDir], { ZIPPY_PASSPHRASE: `${passphrase} (wrong)` }), [1, 1]);
    assert.equal(zippyKey(d, ['passphrase', syncDir, '--json'], { ZIPPY_PASSPHRASE: passphrase }).status, 0, 'd joins (--json)');
    assert.equal(zippyKey(e, ['passphrase', syncDir], { ZIPPY_PASSPHRASE: passphrase }).status, 0, 'e joins (text)');
    assert.deepEqual(bothWays(d, ['show', syncDir]), [0, 0]);

    // Mounts with -o debug: A writes, B reads, C (no key) tries.
    const mountA = await world.mount(a, { syncDir, options: ['debug', 'publish_delay_ms=50'] });
    writeFileSync(join(mountA.mountpoint, 'note.txt'), 'some content');
    const deadline = Date.now() + 15_000;
    while (!readdirSync(syncDir).some((n) => n.endsWith('.idx'))) {
      assert.ok(Date.now() < deadline, 'A published');
      await new Promise((r) => setTimeout(r, 50));
    }
    const mountB = await world.mount(b, { syncDir, options: ['debug'] });
    for (;;) {
      try {
        if (readFileSync(join(mountB.mountpoint, 'note.txt'), 'utf8') === 'some content') break;
      } catch {
        // not imported yet
      }
      assert.ok(Date.now() < deadline, 'B reads');
      await new Promise((r) => setTimeout(r, 50));
    }
    const mountC = await world.mount(c, { syncDir, options: ['debug'] });
    writeFileSync(join(mountC.mountpoint, 'c.txt'), 'c');
    await mountC.unmount();

    // Revoke B (a new generation), and a failing revoke (already revoked).
    assert.deepEqual(bothWays(a, ['revoke', boxidB, syncDir]), [0, 1]);
    const boxidE = readFileSync(join(e.configDir, 'boxid'), 'utf8').trim();
    assert.equal(zippyKey(a, ['revoke', boxidE, syncDir, '--json']).status, 0, 'revoke --json');
    assert.deepEqual(bothWays(a, ['revoke', 'not-a-boxid', syncDir]), [2, 2]);
    assert.deepEqual(bothWays(b, ['show', syncDir]), [0, 0]);
    writeFileSync(join(mountA.mountpoint, 'later.txt'), 'after the revoke');
    await mountB.unmount();
    await mountA.unmount();
    for (const m of [mountA, mountB, mountC]) outputs.push({ what: `mount log ${m.mountpoint}`, bytes: Buffer.from(m.logs(), 'utf8') });
    assert.ok(mountA.logs().length > 1000, 'the debug log has content');

    // Collect the secrets.
    const secrets: { what: string; bytes: Buffer }[] = [];
    const boxKeys = new Map<string, { publicKey: Buffer; secretKey: Buffer }>();
    for (const m of [a, b, d, e]) { // c never asked: it has no key pair
      const boxKey = JSON.parse(readFileSync(join(m.configDir, 'box-key.json'), 'utf8')) as { boxid: string; publicKey: string; secretKey: string };
      const secretKey = Buffer.from(boxKey.secretKey, 'base64');
      boxKeys.set(boxKey.boxid, { publicKey: Buffer.from(boxKey.publicKey, 'base64'), secretKey });
      secrets.push({ what: `${m.name}'s secret key`, bytes: secretKey });
    }
    const keyring = loadKeyring(syncDir, a.configDir);
    assert.ok(keyring.encrypted);
    assert.equal(keyring.keys.size, 3, 'three generations');
    for (const [keyId, key] of keyring.keys) secrets.push({ what: `filesystem key ${keyId}`, bytes: key });
    secrets.push({ what: 'block-id key', bytes: keyring.blockIdKey });
    const keyring2 = loadKeyring(syncDir2, a.configDir);
    assert.ok(keyring2.encrypted);
    for (const [keyId, key] of keyring2.keys) secrets.push({ what: `filesystem key ${keyId} of the second sync dir`, bytes: key });
    const keysDir = join(syncDir, 'keys');
    let payloadCount = 0;
    for (const name of readdirSync(keysDir).filter((n) => n.endsWith('.sealed'))) {
      const record = JSON.parse(readFileSync(join(keysDir, name), 'utf8')) as { boxid: string; sealed: string };
      const recipient = boxKeys.get(record.boxid)!;
      const payload = Buffer.from(sodium.crypto_box_seal_open(Buffer.from(record.sealed, 'base64'), recipient.publicKey, recipient.secretKey));
      secrets.push({ what: `sealed key plaintext ${name}`, bytes: payload });
      payloadCount++;
    }
    assert.ok(payloadCount >= 4);
    secrets.push({ what: 'passphrase', bytes: Buffer.from(passphrase, 'utf8') });

    // Search. The payload format name is searched too: no plaintext payload, in any form.
    assert.ok(outputs.length > 40);
    const leaksIn = (list: { what: string; bytes: Buffer }[]): string[] => {
      const leaks: string[] = [];
      for (const o of list) {
        const text = o.bytes.toString('latin1');
        for (const secret of secrets) {
          if (o.bytes.includes(secret.bytes)) leaks.push(`${secret.what} (raw) in ${o.what}`);
          for (const form of forms(secret.bytes)) if (text.includes(form)) leaks.push(`${secret.what} (${form.slice(0, 6)}…) in ${o.what}`);
        }
        if (text.includes('zippy-fs-key-payload')) leaks.push(`a key payload in ${o.what}`);
      }
      return leaks;
    };
    assert.deepEqual(leaksIn(outputs), []);
    // Control: the search finds a key that is there.
    const planted = Buffer.from(`key: ${[...keyring.keys.values()][0]!.toString('base64url')}\n`);
    assert.ok(leaksIn([{ what: 'planted', bytes: planted }]).length >= 1);
  });
});
