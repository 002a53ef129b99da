/**
 * Where the project's compiled N-API addons live: native/<dir>/build/Release/<file> under the
 * repository root. Shared by src/fuse/binding.ts and src/crc32.ts; imports nothing from the
 * layers above.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fsError } from './errors.js';

const repoRootSearchDepthMax = 16;

/**
 * Walks up from this file to the directory holding package.json and native/<dir>/binding.gyp;
 * works from src/ (tsx) and from dist/src/ (compiled) alike.
 */
function findRepoRoot(dir: string): string {
  const start = dirname(fileURLToPath(import.meta.url));
  let at = start;
  for (let depth = 0; depth < repoRootSearchDepthMax; depth++) {
    if (existsSync(join(at, 'package.json')) && existsSync(join(at, 'native', dir, 'binding.gyp'))) return at;
    const parent = dirname(at);
    if (parent === at) break;
    at = parent;
  }
  throw fsError('ENOENT', `cannot find the repository root (package.json next to native/${dir}/)`, start);
}

/** Path of the compiled addon `file` of native/`dir` (it may not be built yet). */
export function nativeAddonPath(dir: string, file: string): string {
  return join(findRepoRoot(dir), 'native', dir, 'build', 'Release', file);
}
