/**
 * Pieces shared by the zippy-sync tests: a "machine" (its own HOME, XDG_CONFIG_HOME and
 * XDG_CACHE_HOME, hence its own boxid, pid file and status), running the real CLI, a real sshd on
 * 127.0.0.1 with keys generated for the test, and fake archives (the daemon never reads archive
 * contents, so any bytes under archive names exercise its rules).
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { repoRoot, tempDir } from './fixtures.js';

export interface Machine {
  readonly name: string;
  readonly base: string;
  readonly syncDir: string;
  readonly env: NodeJS.ProcessEnv;
  readonly boxid: string;
  readonly cacheDir: string;
}

/** A machine with its own config and cache dirs and a fixed boxid. */
export function makeMachine(name: string, root: string, boxid = randomBytes(16).toString('hex')): Machine {
  const base = join(root, name);
  const syncDir = join(base, 'sync');
  mkdirSync(syncDir, { recursive: true });
  mkdirSync(join(base, 'config', 'zippy-fs'), { recursive: true });
  writeFileSync(join(base, 'config', 'zippy-fs', 'boxid'), `${boxid}\n`);
  const env = { ...process.env, HOME: join(base, 'home'), XDG_CONFIG_HOME: join(base, 'config'), XDG_CACHE_HOME: join(base, 'cache') };
  mkdirSync(env.HOME, { recursive: true });
  return { name, base, syncDir, env, boxid, cacheDir: join(base, 'cache', 'zippy-fs') };
}

export function syncMainPath(): string {
  return join(repoRoot(), 'bin', 'zippy-sync.js');
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `zippy-sync args` to completion as `machine`. */
export function runSyncCli(machine: Machine | undefined, args: string[], env?: NodeJS.ProcessEnv): CliResult {
  const r = spawnSync(process.execPath, [syncMainPath(), ...args], { env: env ?? machine?.env ?? process.env, encoding: 'utf8', timeout: 180_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** One `zippy-sync --once --json` run; throws with the output unless it succeeded. Returns the report. */
export function syncOnce(machine: Machine, remote: string, extra: string[] = []): RunReportJson {
  const r = runSyncCli(machine, ['--once', '--json', '--remote', remote, ...extra, machine.syncDir]);
  if (r.code !== 0) throw new Error(`zippy-sync --once on ${machine.name} exited ${r.code}:\n${r.stdout}${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as RunReportJson;
}

export interface RunReportJson {
  ok: boolean;
  up: { archives: number; files: number; bytes: number; chunks: number; keyFiles: number };
  down: { archives: number; files: number; bytes: number; chunks: number; keyFiles: number };
  deletedRemote: number;
  deletedLocal: number;
  waitingForSuperseding: number;
  skippedRetired: number;
  tempsRemoved: number;
  wireBytes?: number;
  errors: string[];
  warnings: string[];
}

/** Starts `zippy-sync` as a daemon for `machine`; output is collected. */
export function startDaemon(machine: Machine, args: string[]): { child: ChildProcess; output: () => string } {
  const child = spawn(process.execPath, [syncMainPath(), ...args], { env: machine.env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  return { child, output: () => out };
}

export function exitOf(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  return new Promise((resolvePromise) => child.once('exit', (code, signal) => resolvePromise({ code, signal })));
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolvePromise) => setTimeout(resolvePromise, ms));
}

/** Polls `condition` every 20 ms until true; throws after `timeoutMs` with `what`. */
export async function waitFor(what: string, condition: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** Writes a fake archive (any bytes: the daemon never opens archives). */
export function writeFakeArchive(dir: string, name: string, zip: string | Buffer = `zip of ${name}`, idx: string | Buffer = `idx of ${name}`): void {
  writeFileSync(join(dir, `${name}.zip`), zip);
  writeFileSync(join(dir, `${name}.idx`), idx);
}

export function newName(): string {
  return randomBytes(16).toString('hex');
}

async function freePort(): Promise<number> {
  return new Promise((resolvePromise, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolvePromise(typeof address === 'object' && address !== null ? address.port : 0));
    });
  });
}

export interface Sshd {
  readonly port: number;
  /** The ssh command for --ssh / ZIPPY_SSH: key, port, no host key checks. */
  readonly sshCommand: string;
  /** `root@127.0.0.1:<dir>` */
  remoteFor(dir: string): string;
  stop(): Promise<void>;
}

/** Why the sshd tests cannot run here, or false. */
export function sshdSkipReason(): string | false {
  if (process.getuid?.() !== 0) return 'needs root (sshd with root login)';
  if (!existsSync('/usr/sbin/sshd')) return 'needs /usr/sbin/sshd (apt-get install openssh-server)';
  if (spawnSync('ssh-keygen', ['-?'], { stdio: 'ignore' }).error !== undefined) return 'needs ssh-keygen';
  return false;
}

/**
 * A real sshd on 127.0.0.1 at a free port: host key and client key generated in a temp dir, root
 * login by that key only, StrictModes off (the temp dir is not root's home).
 */
export async function startSshd(): Promise<Sshd> {
  const dir = tempDir('zippy-sshd-');
  chmodSync(dir, 0o700);
  mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
  spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'host_key')], { stdio: 'ignore' });
  spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'client_key')], { stdio: 'ignore' });
  writeFileSync(join(dir, 'authorized_keys'), readFileSync(join(dir, 'client_key.pub')));
  const port = await freePort();
  const config = [
    `Port ${port}`, 'ListenAddress 127.0.0.1', `HostKey ${join(dir, 'host_key')}`, 'PermitRootLogin prohibit-password',
    'PubkeyAuthentication yes', 'PasswordAuthentication no', 'KbdInteractiveAuthentication no', 'UsePAM no', 'StrictModes no',
    `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`, `PidFile ${join(dir, 'sshd.pid')}`, 'LogLevel ERROR', 'MaxStartups 100:30:200', 'MaxSessions 100',
  ].join('\n');
  writeFileSync(join(dir, 'sshd_config'), `${config}\n`);
  const child = spawn('/usr/sbin/sshd', ['-D', '-e', '-f', join(dir, 'sshd_config')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  const baseCommand = `ssh -i ${join(dir, 'client_key')} -p ${port} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes`;
  // One multiplexed connection for all of a run's rsync and sh calls (what README recommends too).
  const sshCommand = `${baseCommand} -o ControlMaster=auto -o ControlPath=${join(dir, 'cm-%C')} -o ControlPersist=60`;
  const deadline = Date.now() + 15_000;
  for (;;) {
    const probe = spawnSync('ssh', [...baseCommand.split(' ').slice(1), 'root@127.0.0.1', 'true'], { encoding: 'utf8', timeout: 10_000 });
    if (probe.status === 0) break;
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`sshd did not accept the test key on port ${port}: ${probe.stderr}\n${log}`);
    }
    await sleep(100);
  }
  return {
    port, sshCommand,
    remoteFor: (d) => `root@127.0.0.1:${d}`,
    async stop() {
      spawnSync('ssh', [...sshCommand.split(' ').slice(1), '-O', 'exit', 'root@127.0.0.1'], { stdio: 'ignore', timeout: 10_000 });
      child.kill('SIGTERM');
      await exitOf(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
