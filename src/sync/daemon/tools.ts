/**
 * External programs of the sync daemon: finding them on PATH (a missing rsync, rclone or ssh gets
 * one clear message before anything runs), splitting an ssh command line, and running a child
 * process with bounded output, optional stdin, line callbacks and cancellation (SIGTERM on abort,
 * so an interrupted transfer stops at once and leaves only temp names behind).
 */
import { spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { FsError } from '../../errors.js';
import { childOutputSizeMaxBytes } from './limits.js';

/** The absolute path of `program` (a name looked up on PATH, or a path), or undefined if absent. */
export function findExecutable(program: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const executable = (path: string): boolean => {
    try {
      accessSync(path, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  };
  if (program.includes('/')) return executable(program) ? program : undefined;
  for (const dir of (env['PATH'] ?? '').split(delimiter)) {
    if (dir === '') continue;
    const candidate = join(dir, program);
    if (executable(candidate)) return candidate;
  }
  return undefined;
}

/** Why a remote cannot run here: the first missing program, with how to get it. */
export function missingToolMessage(programs: readonly string[], env: NodeJS.ProcessEnv = process.env): string | undefined {
  for (const program of programs) {
    if (findExecutable(program, env) !== undefined) continue;
    const hint = program === 'rclone' ? 'apt-get install rclone, or see https://rclone.org/install/'
      : program.endsWith('ssh') ? 'apt-get install openssh-client, or set the ssh command with --ssh / ZIPPY_SSH'
        : `apt-get install ${program}`;
    return `${program} is needed for this remote but was not found${program.includes('/') ? '' : ' on PATH'} (${hint})`;
  }
  return undefined;
}

/**
 * Splits a command line such as `ssh -i "/a b/key" -p 2222` into words: whitespace separates,
 * single quotes keep everything, double quotes keep everything but `\"` and `\\`. No expansion.
 */
export function splitCommand(line: string): string[] {
  const words: string[] = [];
  let word = '';
  let inWord = false;
  let quote: '"' | "'" | undefined;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i]!;
    if (quote === "'") {
      if (ch === "'") quote = undefined;
      else word += ch;
    } else if (quote === '"') {
      if (ch === '"') quote = undefined;
      else if (ch === '\\' && (line[i + 1] === '"' || line[i + 1] === '\\')) word += line[++i];
      else word += ch;
    } else if (ch === "'" || ch === '"') {
      quote = ch;
      inWord = true;
    } else if (/\s/.test(ch)) {
      if (inWord) words.push(word);
      word = '';
      inWord = false;
    } else {
      word += ch === '\\' && i + 1 < line.length ? line[++i] : ch;
      inWord = true;
    }
  }
  if (quote !== undefined) throw new FsError('BAD_INPUT', `unterminated ${quote} quote in command ${JSON.stringify(line)}`);
  if (inWord) words.push(word);
  return words;
}

/** A string as one single-quoted POSIX shell word. */
export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

export interface ChildResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

export interface RunChildOptions {
  /** Written to the child's stdin, which is then closed. */
  readonly input?: string;
  /** Aborting sends SIGTERM to the child; the promise then rejects with the abort reason. */
  readonly signal?: AbortSignal;
  readonly env?: NodeJS.ProcessEnv;
  /** Called with each complete stdout line as it arrives (progress). */
  readonly onStdoutLine?: (line: string) => void;
  /** Called with each complete stderr line as it arrives (progress). */
  readonly onStderrLine?: (line: string) => void;
}

function lineSplitter(onLine: ((line: string) => void) | undefined): (text: string, final: boolean) => void {
  let pending = '';
  return (text, final) => {
    if (onLine === undefined) return;
    pending += text;
    const lines = pending.split('\n');
    pending = final ? '' : lines.pop()!;
    for (const line of lines) if (line !== '' || !final) onLine(line);
  };
}

/**
 * Runs `argv` to completion and resolves with its exit status and output (never rejects on a
 * non-zero exit: callers judge the code). Rejects when it cannot start, when its output passes
 * childOutputSizeMaxBytes, or when `signal` aborts (the child gets SIGTERM first).
 */
export function runChild(argv: readonly string[], options: RunChildOptions = {}): Promise<ChildResult> {
  const [program, ...args] = argv;
  if (program === undefined) throw new FsError('ASSERT', 'runChild without a program');
  if (options.signal?.aborted === true) return Promise.reject(options.signal.reason);
  return new Promise((resolvePromise, reject) => {
    const child = spawn(program, args, { env: options.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let failure: unknown;
    const outLines = lineSplitter(options.onStdoutLine);
    const errLines = lineSplitter(options.onStderrLine);
    const fail = (e: unknown): void => {
      if (failure === undefined) failure = e;
      child.kill('SIGTERM');
    };
    const onAbort = (): void => fail(options.signal!.reason);
    options.signal?.addEventListener('abort', onAbort, { once: true });
    child.stdout.setEncoding('utf8').on('data', (text: string) => {
      stdout += text;
      outLines(text, false);
      if (stdout.length > childOutputSizeMaxBytes) fail(new FsError('LIMIT', `output of ${program} passed ${childOutputSizeMaxBytes} bytes`));
    });
    child.stderr.setEncoding('utf8').on('data', (text: string) => {
      stderr += text;
      errLines(text, false);
      if (stderr.length > childOutputSizeMaxBytes) fail(new FsError('LIMIT', `error output of ${program} passed ${childOutputSizeMaxBytes} bytes`));
    });
    child.stdin.on('error', () => undefined); // a child that exits without reading its input
    child.stdin.end(options.input ?? '');
    child.on('error', (e) => {
      options.signal?.removeEventListener('abort', onAbort);
      reject(new FsError('ENOENT', `cannot run ${program}: ${e.message}`, program, { cause: e }));
    });
    child.on('close', (code, signal) => {
      options.signal?.removeEventListener('abort', onAbort);
      outLines('', true);
      errLines('', true);
      if (failure !== undefined) reject(failure);
      else resolvePromise({ code, signal, stdout, stderr });
    });
  });
}

/** The last lines of a child's stderr, for an error message. */
export function stderrTail(result: ChildResult, lineCount = 5): string {
  const lines = result.stderr.trim().split('\n').filter((l) => l !== '');
  return lines.slice(-lineCount).join(' | ') || `exit ${result.code ?? result.signal}`;
}
