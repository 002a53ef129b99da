/**
 * The boxid: 32 random lowercase hex naming this machine in version stamps. It lives in
 * `${XDG_CONFIG_HOME:-~/.config}/zippy-fs/boxid` and is created on first use (exclusively, so two
 * processes starting at once agree on one). A file that does not hold 32 hex is an error, never
 * silently replaced: stamps made under the old id would lose their owner.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { FsError } from '../errors.js';
import { isHex128 } from './names.js';

/** Path of the boxid file for the given environment. */
export function boxidPath(env: NodeJS.ProcessEnv = process.env): string {
  const config = env['XDG_CONFIG_HOME'] !== undefined && env['XDG_CONFIG_HOME'] !== '' ? env['XDG_CONFIG_HOME'] : join(homedir(), '.config');
  return join(config, 'zippy-fs', 'boxid');
}

/** Reads the boxid, creating the file with a fresh random id when it does not exist. */
export function loadBoxid(path: string = boxidPath()): string {
  try {
    return checked(readFileSync(path, 'utf8'), path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  mkdirSync(dirname(path), { recursive: true });
  try {
    writeFileSync(path, `${randomBytes(16).toString('hex')}\n`, { flag: 'wx', mode: 0o644 });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  }
  return checked(readFileSync(path, 'utf8'), path);
}

function checked(text: string, path: string): string {
  const id = text.trim();
  if (!isHex128(id)) throw new FsError('BAD_INPUT', `boxid file does not hold 32 lowercase hex digits`, path);
  return id;
}
