/**
 * `zippy-key`: a thin CLI over src/sync/crypto (keyring.ts) for the keys of an encrypted sync dir.
 *
 * Never prints key material: filesystem keys and secret keys stay inside the library, and the
 * outputs are built from boxids, key ids, fingerprints and statuses only (a test checks stdout and
 * stderr of every command against the keys). Exit codes: 0 ok, 1 failure, 2 usage.
 */
import { readFileSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { FsError } from '../errors.js';
import {
  defaultConfigDir, grantAccess, initEncryptedSyncDir, joinWithPassphrase, keyStatus, loadKeyring, requestAccess,
  requestFingerprint, revokeAccess, setPassphrase, type KeyStatus,
} from './crypto/index.js';

export const keyExit = { ok: 0, failed: 1, usage: 2 } as const;

const help = `Usage: zippy-key <command> [options]

Manages the keys of an encrypted zippy-fs sync dir. This machine's key pair and boxid live in
\${XDG_CONFIG_HOME:-~/.config}/zippy-fs/.

Commands:
  init <abs-sync-dir>       make a new, empty sync dir encrypted; this machine becomes its first member
                            (the first mount with zippy-fs -o encrypt does the same)
  request <sync>            publish this machine's public key; prints the fingerprint to compare
  show <sync>               this machine's boxid, fingerprint and status (member / pending / no key / revoked)
  grant <boxid> <sync>      let a requesting machine in, after comparing its fingerprint (--yes or a TTY prompt)
  passphrase <sync>         a member sets a passphrase; a machine without keys joins with it
  revoke <boxid> <sync>     rotate to a new key that <boxid> never receives (old archives stay readable)

Options:
  --json                    print the result as JSON on stdout
  --yes                     grant without the interactive confirmation
  --passphrase-file <path>  read the passphrase from the file's first line (else env ZIPPY_PASSPHRASE, else the TTY)
  -h, --help                this text

Exit codes: 0 ok, 1 failure, 2 usage.`;

class UsageError extends Error {}

interface Options {
  json: boolean;
  yes: boolean;
  passphraseFile: string | undefined;
}

type Output = { text: string; json: Record<string, unknown> };

function syncDirArg(arg: string | undefined, mustBeAbsolute: boolean): string {
  if (arg === undefined || arg === '') throw new UsageError('missing <sync> directory');
  if (mustBeAbsolute && !isAbsolute(arg)) throw new UsageError(`init needs an absolute path, got ${arg}`);
  return resolve(arg);
}

function boxidArg(arg: string | undefined): string {
  if (arg === undefined || !/^[0-9a-f]{32}$/.test(arg)) throw new UsageError(`<boxid> must be 32 lowercase hex digits, got ${String(arg)}`);
  return arg;
}

/** Reads a line from the TTY; with `hidden` the typed characters are not echoed. */
async function promptTty(question: string, hidden: boolean): Promise<string> {
  const stdin = process.stdin;
  process.stderr.write(question);
  return new Promise((resolvePromise, reject) => {
    let answer = '';
    const wasRaw = stdin.isRaw;
    stdin.setRawMode(true);
    stdin.resume();
    stdin.setEncoding('utf8');
    const finish = (error?: Error): void => {
      stdin.setRawMode(wasRaw);
      stdin.pause();
      stdin.removeListener('data', onData);
      process.stderr.write('\n');
      if (error !== undefined) reject(error);
      else resolvePromise(answer);
    };
    const onData = (data: string): void => {
      for (const ch of data) {
        if (ch === '\r' || ch === '\n') return finish();
        if (ch === '\u0003') return finish(new Error('interrupted'));
        if (ch === '\u007f' || ch === '\b') answer = answer.slice(0, -1);
        else {
          answer += ch;
          if (!hidden) process.stderr.write(ch);
        }
      }
    };
    stdin.on('data', onData);
  });
}

async function readPassphrase(options: Options, confirm: boolean): Promise<string> {
  if (options.passphraseFile !== undefined) {
    const line = readFileSync(options.passphraseFile, 'utf8').split(/\r?\n/)[0] ?? '';
    return line;
  }
  const fromEnv = process.env['ZIPPY_PASSPHRASE'];
  if (fromEnv !== undefined && fromEnv !== '') return fromEnv;
  if (process.stdin.isTTY !== true) {
    throw new FsError('BAD_INPUT', 'no passphrase: give --passphrase-file, set ZIPPY_PASSPHRASE, or run on a terminal');
  }
  const first = await promptTty('Passphrase: ', true);
  if (confirm && (await promptTty('Passphrase again: ', true)) !== first) throw new FsError('BAD_INPUT', 'the passphrases differ');
  return first;
}

function statusText(s: KeyStatus): string {
  const lines = [
    `sync dir:      ${s.syncDir}`,
    `encrypted:     ${s.encrypted ? 'yes' : 'no'}`,
    `boxid:         ${s.boxid ?? '(none yet)'}`,
    `fingerprint:   ${s.fingerprint ?? '(no key pair yet: zippy-key request creates one)'}`,
    `status:        ${s.status}`,
  ];
  if (s.encrypted) {
    lines.push(`filesystem:    ${s.filesystemFingerprint ?? '?'} (equal on every member)`);
    lines.push(`generations:   ${s.generationCount}${s.currentKeyId === undefined ? '' : `, this machine seals with ${s.currentKeyId}`}`);
    lines.push(`members:       ${s.members.length === 0 ? '(none)' : s.members.join(', ')}`);
    if (s.revoked.length > 0) lines.push(`revoked:       ${s.revoked.join(', ')}`);
    lines.push(`passphrase:    ${s.passphraseSet ? 'set' : 'not set'}`);
    for (const r of s.pendingRequests) lines.push(`request:       ${r.boxid}  fingerprint ${r.fingerprint}`);
    if (s.problem !== undefined) lines.push(`note:          ${s.problem}`);
  }
  return lines.join('\n');
}

async function confirmGrant(boxid: string, fingerprint: string, options: Options): Promise<void> {
  process.stderr.write(`Machine ${boxid} shows fingerprint:\n\n    ${fingerprint}\n\n`);
  if (options.yes) return;
  if (process.stdin.isTTY !== true) throw new FsError('EPERM', 'not granted: compare the fingerprint, then run again with --yes (no terminal to ask)');
  const answer = await promptTty('Does the other machine show exactly this fingerprint? Type yes to grant: ', false);
  if (answer.trim().toLowerCase() !== 'yes') throw new FsError('EPERM', 'not granted: the fingerprint was not confirmed');
}

async function run(command: string, args: string[], options: Options, configDir: string): Promise<Output> {
  const expectArgs = (count: number): void => {
    if (args.length !== count) throw new UsageError(`${command} takes ${count} argument${count === 1 ? '' : 's'}, got ${args.length}`);
  };
  switch (command) {
    case 'init': {
      expectArgs(1);
      const syncDir = syncDirArg(args[0], true);
      const r = initEncryptedSyncDir(syncDir, configDir);
      return {
        text: `${syncDir} is now encrypted (filesystem ${r.fsid}, key ${r.keyId}).\nThis machine (${r.boxid}) is its first member; fingerprint ${r.fingerprint}`,
        json: { syncDir, fsid: r.fsid, keyId: r.keyId, boxid: r.boxid, fingerprint: r.fingerprint, status: 'member' },
      };
    }
    case 'request': {
      expectArgs(1);
      const syncDir = syncDirArg(args[0], false);
      const r = requestAccess(syncDir, configDir);
      return {
        text: `Request published for this machine (boxid ${r.boxid}).\nFingerprint: ${r.fingerprint}\n`
          + `On a member, run: zippy-key grant ${r.boxid} ${syncDir}\nand check that it shows the same fingerprint.`,
        json: { syncDir, boxid: r.boxid, fingerprint: r.fingerprint, status: 'pending' },
      };
    }
    case 'show': {
      expectArgs(1);
      const s = keyStatus(syncDirArg(args[0], false), configDir);
      return { text: statusText(s), json: { ...s } };
    }
    case 'grant': {
      expectArgs(2);
      const boxid = boxidArg(args[0]);
      const syncDir = syncDirArg(args[1], false);
      const fingerprint = requestFingerprint(syncDir, boxid);
      await confirmGrant(boxid, fingerprint, options);
      const added = grantAccess(syncDir, configDir, boxid, fingerprint);
      return {
        text: added ? `Granted: ${boxid} can now read ${syncDir}.` : `${boxid} already held these keys.`,
        json: { syncDir, boxid, fingerprint, granted: true, alreadyGranted: !added },
      };
    }
    case 'passphrase': {
      expectArgs(1);
      const syncDir = syncDirArg(args[0], false);
      let member = false;
      try {
        const keyring = loadKeyring(syncDir, configDir);
        member = keyring.encrypted && keyring.upToDate;
      } catch (e) {
        if (!(e instanceof FsError) || e.code !== 'BAD_KEY') throw e;
      }
      const passphrase = await readPassphrase(options, member);
      if (member) {
        const r = setPassphrase(syncDir, configDir, passphrase);
        return {
          text: `Passphrase set: it opens every key generation up to ${r.keyId}. Give it only to people whose machines may join.`,
          json: { syncDir, action: 'set', keyId: r.keyId },
        };
      }
      const r = joinWithPassphrase(syncDir, configDir, passphrase);
      return {
        text: `Joined with the passphrase: this machine (${r.boxid}) now holds keys up to ${r.keyId}. Fingerprint ${r.fingerprint}`,
        json: { syncDir, action: 'joined', boxid: r.boxid, keyId: r.keyId, fingerprint: r.fingerprint, status: 'member' },
      };
    }
    case 'revoke': {
      expectArgs(2);
      const boxid = boxidArg(args[0]);
      const syncDir = syncDirArg(args[1], false);
      const r = revokeAccess(syncDir, configDir, boxid);
      const note = r.passphraseStale ? `\nNote: the passphrase still opens generations before ${r.keyId} only; run zippy-key passphrase ${syncDir} to set a new one.` : '';
      return {
        text: `Revoked ${boxid}: new archives use key ${r.keyId} (generation ${r.generation}), sealed to ${r.members.length} member(s).${note}`,
        json: { syncDir, revoked: boxid, keyId: r.keyId, generation: r.generation, members: r.members, passphraseStale: r.passphraseStale },
      };
    }
    default:
      throw new UsageError(`unknown command ${JSON.stringify(command)}`);
  }
}

/** Runs the CLI with `argv` (without node and the script); returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv, allowPositionals: true, strict: true,
      options: {
        json: { type: 'boolean', default: false }, yes: { type: 'boolean', default: false },
        'passphrase-file': { type: 'string' }, help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (e) {
    process.stderr.write(`zippy-key: ${e instanceof Error ? e.message : String(e)}\n\n${help}\n`);
    return keyExit.usage;
  }
  const { values, positionals } = parsed;
  if (values.help === true) {
    process.stdout.write(`${help}\n`);
    return keyExit.ok;
  }
  const [command, ...args] = positionals;
  const options: Options = { json: values.json === true, yes: values.yes === true, passphraseFile: values['passphrase-file'] };
  if (command === undefined) {
    process.stderr.write(`zippy-key: missing command\n\n${help}\n`);
    return keyExit.usage;
  }
  try {
    const out = await run(command, args, options, defaultConfigDir());
    process.stdout.write(options.json ? `${JSON.stringify({ ok: true, command, ...out.json }, null, 2)}\n` : `${out.text}\n`);
    return keyExit.ok;
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`zippy-key: ${e.message}\n\n${help}\n`);
      return keyExit.usage;
    }
    const code = e instanceof FsError ? e.code : 'ERROR';
    const message = e instanceof Error ? e.message : String(e);
    if (options.json) process.stdout.write(`${JSON.stringify({ ok: false, command, error: { code, message } }, null, 2)}\n`);
    process.stderr.write(`zippy-key: ${message}\n`);
    return keyExit.failed;
  }
}

process.exitCode = await main(process.argv.slice(2));
