/**
 * Key distribution end to end through the `zippy-key` CLI with separate machine config dirs (one
 * XDG_CONFIG_HOME each): init, request, matching fingerprints, grant, loading the keyring, a
 * never-granted machine told why, revoke, passphrase mode; and that no key material ever appears
 * in the CLI's output (text or --json) or in clear in the sync dir.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { isFsError } from '../src/errors.js';
import { isEncrypted, loadKeyring, openSealed, sealFile, type Keyring } from '../src/sync/crypto/index.js';

const root = mkdtempSync(join(tmpdir(), 'zippy-crypto-keys-'));
after(() => rmSync(root, { recursive: true, force: true }));
const here = fileURLToPath(new URL('.', import.meta.url));
// Run from source under tsx (node --import tsx --test test/...) or from dist after a build (npm test).
const compiled = import.meta.url.endsWith('.js');
const cliPath = join(here, '..', 'src', 'sync', compiled ? 'key-main.js' : 'key-main.ts');
const cliPrefix = compiled ? [] : ['--import', 'tsx'];
const repo = join(here, compiled ? '../..' : '..');

interface Machine {
  readonly name: string;
  readonly xdg: string;
  readonly configDir: string;
}

function machine(name: string): Machine {
  const xdg = join(root, `home-${name}`, '.config');
  return { name, xdg, configDir: join(xdg, 'zippy-fs') };
}

/** Everything every CLI call printed, to search for key material at the end. */
const transcript: string[] = [];

function cli(m: Machine, args: string[], env: Record<string, string> = {}): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, [...cliPrefix, cliPath, ...args], {
    cwd: repo, encoding: 'utf8', env: { ...process.env, XDG_CONFIG_HOME: m.xdg, ZIPPY_PASSPHRASE: '', ...env },
  });
  transcript.push(result.stdout, result.stderr);
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

function cliJson(m: Machine, args: string[], env: Record<string, string> = {}): Record<string, unknown> {
  const r = cli(m, [...args, '--json'], env);
  assert.equal(r.status, 0, `${m.name} ${args.join(' ')}: ${r.stderr}`);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

function keyringOf(syncDir: string, m: Machine): Keyring {
  const result = loadKeyring(syncDir, m.configDir);
  assert.ok(result.encrypted);
  return result;
}

function boxidOf(m: Machine): string {
  return readFileSync(join(m.configDir, 'boxid'), 'utf8').trim();
}

/** Every encoding of a secret that could leak into text. */
function encodings(secret: Buffer): string[] {
  return [secret.toString('hex'), secret.toString('base64'), secret.toString('base64url'), secret.toString('base64').slice(0, 20)];
}

function filesUnder(dir: string): string[] {
  const out: string[] = [];
  const stack = [dir];
  while (stack.length > 0) {
    const current = stack.pop()!;
    for (const entry of readdirSync(current, { withFileTypes: true })) {
      const path = join(current, entry.name);
      if (entry.isDirectory()) stack.push(path);
      else out.push(path);
    }
  }
  return out;
}

const seenKeys: Buffer[] = [];
function remember(keyring: Keyring): void {
  for (const key of keyring.keys.values()) seenKeys.push(key);
  seenKeys.push(keyring.blockIdKey);
}

test('enrollment, a stranger, revoke, passphrase; no key material in outputs or in clear', async () => {
  const syncDir = join(root, 'sync');
  mkdirSync(syncDir);
  const a = machine('a');
  const b = machine('b');
  const c = machine('c');
  const d = machine('d');

  // Usage errors exit 2.
  assert.equal(cli(a, []).status, 2);
  assert.equal(cli(a, ['frobnicate', syncDir]).status, 2);
  assert.equal(cli(a, ['init', 'relative/dir']).status, 2);
  assert.equal(cli(a, ['grant', 'not-a-boxid', syncDir]).status, 2);
  assert.equal(cli(a, ['--bogus']).status, 2);
  const helpRun = cli(a, ['--help']);
  assert.equal(helpRun.status, 0);
  assert.match(helpRun.stdout, /zippy-key <command>/);

  // A plain dir is plain.
  assert.equal(isEncrypted(syncDir), false);
  assert.deepEqual(loadKeyring(syncDir, a.configDir), { encrypted: false });

  // init on A.
  const init = cliJson(a, ['init', syncDir]);
  assert.equal(init['status'], 'member');
  assert.equal(isEncrypted(syncDir), true);
  assert.equal(cli(a, ['init', syncDir]).status, 1, 'init twice fails');
  assert.equal(statSync(join(a.configDir, 'box-key.json')).mode & 0o777, 0o600);
  const keyringA1 = keyringOf(syncDir, a);
  remember(keyringA1);
  assert.equal(keyringA1.currentKeyId, init['keyId']);
  const archive1 = sealFile(Buffer.from('archive one, generation 1'), { key: keyringA1.keys.get(keyringA1.currentKeyId)!, keyId: keyringA1.currentKeyId, archiveName: '1'.repeat(32), kind: 'idx' });

  // request on B: fingerprints match between B's output, A's grant output, and show.
  const showB0 = cliJson(b, ['show', syncDir]);
  assert.equal(showB0['status'], 'no key');
  const request = cliJson(b, ['request', syncDir]);
  const fingerprint = request['fingerprint'] as string;
  assert.match(fingerprint, /^\d{4}( \d{4}){5}$/);
  assert.equal(cliJson(b, ['show', syncDir])['status'], 'pending');
  const boxidB = boxidOf(b);
  assert.equal(request['boxid'], boxidB);
  const showA = cliJson(a, ['show', syncDir]);
  assert.deepEqual(showA['pendingRequests'], [{ boxid: boxidB, fingerprint }]);
  const refused = cli(a, ['grant', boxidB, syncDir]);
  assert.equal(refused.status, 1, 'no --yes and no TTY: not granted');
  assert.match(refused.stderr, new RegExp(fingerprint));
  const grant = cliJson(a, ['grant', boxidB, syncDir, '--yes']);
  assert.equal(grant['fingerprint'], fingerprint);
  const grantText = cli(a, ['grant', boxidB, syncDir, '--yes']);
  assert.equal(grantText.status, 0);
  assert.match(grantText.stdout, /already/);

  // B loads the keyring: same keys, same block-id key, reads A's archive.
  const keyringB1 = keyringOf(syncDir, b);
  assert.equal(keyringB1.currentKeyId, keyringA1.currentKeyId);
  assert.ok(keyringB1.blockIdKey.equals(keyringA1.blockIdKey));
  assert.equal(openSealed(archive1, { keys: keyringB1.keys, archiveName: '1'.repeat(32), kind: 'idx' }).toString(), 'archive one, generation 1');
  const showB = cliJson(b, ['show', syncDir]);
  assert.equal(showB['status'], 'member');
  assert.equal(showB['filesystemFingerprint'], showA['filesystemFingerprint']);

  // C, never granted: BAD_KEY saying what to do, from the library and from show.
  assert.throws(() => loadKeyring(syncDir, c.configDir), (e: unknown) => isFsError(e, 'BAD_KEY') && e.message.includes(`run zippy-key request ${syncDir} and ask a member to grant`));
  assert.throws(() => openSealed(archive1, { keys: new Map(), archiveName: '1'.repeat(32), kind: 'idx', syncDir }),
    (e: unknown) => isFsError(e, 'BAD_KEY') && e.message.includes(`run zippy-key request ${syncDir}`));
  const showC = cli(c, ['show', syncDir]);
  assert.equal(showC.status, 0);
  assert.match(showC.stdout, /status: +no key/);
  assert.match(showC.stdout, /run zippy-key request/);

  // revoke B (by A): a new generation B never gets; old archives stay readable to both.
  assert.equal(cli(a, ['revoke', boxidOf(a), syncDir]).status, 1, 'a machine cannot revoke itself');
  const revoke = cliJson(a, ['revoke', boxidB, syncDir]);
  assert.deepEqual(revoke['members'], [boxidOf(a)]);
  const keyringA2 = keyringOf(syncDir, a);
  remember(keyringA2);
  assert.equal(keyringA2.currentKeyId, revoke['keyId']);
  assert.equal(keyringA2.currentGeneration, 2);
  assert.ok(keyringA2.blockIdKey.equals(keyringA1.blockIdKey), 'block ids stay stable across rotation');
  const archive2 = sealFile(Buffer.from('archive two, generation 2'), { key: keyringA2.keys.get(keyringA2.currentKeyId)!, keyId: keyringA2.currentKeyId, archiveName: '2'.repeat(32), kind: 'zip' });
  const keyringB2 = keyringOf(syncDir, b);
  assert.equal(keyringB2.revoked, true);
  assert.equal(keyringB2.upToDate, false);
  assert.throws(() => openSealed(archive2, { keys: keyringB2.keys, archiveName: '2'.repeat(32), kind: 'zip' }), (e: unknown) => isFsError(e, 'BAD_KEY'));
  assert.equal(openSealed(archive1, { keys: keyringB2.keys, archiveName: '1'.repeat(32), kind: 'idx' }).toString(), 'archive one, generation 1');
  assert.equal(openSealed(archive1, { keys: keyringA2.keys, archiveName: '1'.repeat(32), kind: 'idx' }).toString(), 'archive one, generation 1');
  assert.equal(openSealed(archive2, { keys: keyringA2.keys, archiveName: '2'.repeat(32), kind: 'zip' }).toString(), 'archive two, generation 2');
  assert.equal(cliJson(b, ['show', syncDir])['status'], 'revoked');
  assert.equal(cli(b, ['revoke', boxidOf(a), syncDir]).status, 1, 'a revoked machine cannot rotate');
  assert.equal(cli(a, ['grant', boxidB, syncDir, '--yes']).status, 1, 'a revoked machine cannot be granted again');

  // Passphrase mode: A sets one (from a file), D joins with it (from the environment).
  const passphraseFile = join(root, 'passphrase.txt');
  writeFileSync(passphraseFile, 'correct horse battery staple\n');
  const set = cliJson(a, ['passphrase', syncDir, '--passphrase-file', passphraseFile]);
  assert.equal(set['action'], 'set');
  const wrong = cli(d, ['passphrase', syncDir], { ZIPPY_PASSPHRASE: 'wrong horse' });
  assert.equal(wrong.status, 1);
  assert.match(wrong.stderr, /wrong passphrase/);
  assert.equal(cli(d, ['passphrase', syncDir]).status, 1, 'no passphrase source and no TTY');
  const joined = cliJson(d, ['passphrase', syncDir], { ZIPPY_PASSPHRASE: 'correct horse battery staple' });
  assert.equal(joined['action'], 'joined');
  const keyringD = keyringOf(syncDir, d);
  assert.equal(keyringD.currentKeyId, keyringA2.currentKeyId);
  assert.equal(openSealed(archive2, { keys: keyringD.keys, archiveName: '2'.repeat(32), kind: 'zip' }).toString(), 'archive two, generation 2');
  // The library path: a passphrase opens the keys without a grant.
  const viaPassphrase = loadKeyring(syncDir, c.configDir, { passphrase: 'correct horse battery staple' });
  assert.ok(viaPassphrase.encrypted && viaPassphrase.currentKeyId === keyringA2.currentKeyId);
  // A later rotation leaves the passphrase behind, and says so.
  const revokeD = cliJson(a, ['revoke', boxidOf(d), syncDir]);
  assert.equal(revokeD['passphraseStale'], true);
  remember(keyringOf(syncDir, a));

  // The marker gone while generations remain: refuse to treat the dir as plain.
  renameSync(join(syncDir, 'keys', 'fs.json'), join(root, 'fs.json.moved'));
  assert.throws(() => loadKeyring(syncDir, a.configDir), (e: unknown) => isFsError(e, 'BAD_KEY') && /marker/.test(e.message));
  renameSync(join(root, 'fs.json.moved'), join(syncDir, 'keys', 'fs.json'));

  // No key material in any output, nor in clear in any file of the sync dir.
  const secrets: Buffer[] = [...seenKeys];
  for (const m of [a, b, c, d]) {
    const path = join(m.configDir, 'box-key.json');
    try {
      secrets.push(Buffer.from((JSON.parse(readFileSync(path, 'utf8')) as { secretKey: string }).secretKey, 'base64'));
    } catch {
      // c only ran show, which creates nothing: it has no key pair.
    }
  }
  assert.ok(secrets.length >= 3 + 3);
  const output = transcript.join('\n');
  const syncFiles = filesUnder(syncDir).map((path) => ({ path, text: readFileSync(path, 'latin1'), bytes: readFileSync(path) }));
  for (const secret of secrets) {
    for (const encoded of encodings(secret)) {
      assert.ok(!output.includes(encoded), 'key material in CLI output');
      for (const file of syncFiles) assert.ok(!file.text.includes(encoded), `key material in clear in ${file.path}`);
    }
    for (const file of syncFiles) assert.equal(file.bytes.indexOf(secret), -1, `raw key bytes in ${file.path}`);
  }
});

test('init refuses a sync dir that already holds plain archives', () => {
  const syncDir = join(root, 'plain-with-archives');
  mkdirSync(syncDir);
  writeFileSync(join(syncDir, `${'c'.repeat(32)}.idx`), 'x');
  const r = cli(machine('e'), ['init', syncDir]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /encrypted or not from its creation/);
  assert.equal(isEncrypted(syncDir), false);
});
