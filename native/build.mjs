#!/usr/bin/env node
/**
 * Builds zippy-fs's native addons with node-gyp, each only when it does not already match its
 * sources. `npm run build:native` runs this file, which builds every addon in `addons` below;
 * `node native/build.mjs crc` builds the named ones; each addon's own build.mjs builds just it.
 *
 * Idempotence: <addon>/build/source-hash.txt records a SHA-256 of everything the build reads
 * (the addon's sources, its build.mjs, this file) plus the Node-API-relevant environment
 * (platform, arch, Node major version). When it matches and the addon exists, nothing runs.
 * `--force` rebuilds anyway.
 *
 * Finding node-gyp, first hit wins: $NODE_GYP; $npm_config_node_gyp (set by npm for scripts);
 * a node-gyp installed in the project; the copy bundled with the npm that runs on this machine.
 *
 * Node headers: node-gyp downloads them unless told otherwise, and this machine may be
 * offline, so the script passes --nodedir when the running Node ships its headers
 * (<prefix>/include/node/node_api.h, as the Debian and NodeSource packages do) and npm did
 * not already set npm_config_nodedir.
 */
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { existsSync, mkdirSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const nativeDir = dirname(fileURLToPath(import.meta.url));

function checkPkgConfigFuse() {
  const r = spawnSync('pkg-config', ['--exists', 'fuse'], { stdio: 'ignore' });
  if (r.error || r.status !== 0) {
    throw new Error('pkg-config cannot find "fuse": install the Debian packages libfuse-dev and pkg-config');
  }
}

/**
 * The addons: directory under native/, the file node-gyp produces, the files the build reads,
 * and a check of the system prerequisites that fails with an actionable message.
 */
export const addons = {
  fuse: { output: 'fuse_native.node', sources: ['fuse-native.c', 'binding.gyp', 'build.mjs'], check: checkPkgConfigFuse },
  crc: { output: 'crc32.node', sources: ['crc32.c', 'binding.gyp', 'build.mjs'], check: () => {} },
};

function sourceHash(dir, sources) {
  const hash = createHash('sha256');
  for (const [name, path] of [...sources.map((s) => [s, join(dir, s)]), ['../build.mjs', join(nativeDir, 'build.mjs')]]) {
    hash.update(name).update('\0').update(readFileSync(path)).update('\0');
  }
  hash.update(`${process.platform}-${process.arch}-node${process.versions.node.split('.')[0]}`);
  return hash.digest('hex');
}

function findNodeGyp() {
  const fromEnv = process.env.NODE_GYP ?? process.env.npm_config_node_gyp;
  if (fromEnv && existsSync(fromEnv)) return fromEnv;
  try {
    return createRequire(join(nativeDir, '..', 'package.json')).resolve('node-gyp/bin/node-gyp.js');
  } catch {
    // not installed in the project: fall through to npm's bundled copy
  }
  const npm = spawnSync('sh', ['-c', 'command -v npm'], { encoding: 'utf8' }).stdout.trim();
  if (npm) {
    const npmRoot = resolve(dirname(realpathSync(npm)), '..');
    for (const candidate of [
      join(npmRoot, 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
      join(npmRoot, 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
    ]) {
      if (existsSync(candidate)) return candidate;
    }
  }
  throw new Error('node-gyp not found: install npm, or set NODE_GYP=/path/to/node-gyp.js');
}

function nodedirArgs() {
  if (process.env.npm_config_nodedir) return [];
  const prefix = resolve(dirname(process.execPath), '..');
  return existsSync(join(prefix, 'include', 'node', 'node_api.h')) ? [`--nodedir=${prefix}`] : [];
}

/** Builds native/<name> unless it is up to date (or `force`); exits the process when node-gyp fails. */
export function buildAddon(name, force) {
  const addon = addons[name];
  if (addon === undefined) throw new Error(`unknown addon "${name}": one of ${Object.keys(addons).join(', ')}`);
  const dir = join(nativeDir, name);
  const addonPath = join(dir, 'build', 'Release', addon.output);
  const hashPath = join(dir, 'build', 'source-hash.txt');
  const hash = sourceHash(dir, addon.sources);
  if (!force && existsSync(addonPath) && existsSync(hashPath) && readFileSync(hashPath, 'utf8').trim() === hash) {
    console.log(`native/${name}: up to date (${addonPath})`);
    return;
  }
  addon.check();
  const nodeGyp = findNodeGyp();
  const args = [nodeGyp, 'rebuild', ...nodedirArgs()];
  console.log(`native/${name}: ${process.execPath} ${args.join(' ')}`);
  const r = spawnSync(process.execPath, args, { cwd: dir, stdio: 'inherit' });
  if (r.error) throw r.error;
  if (r.status !== 0) process.exit(r.status ?? 1);
  mkdirSync(dirname(hashPath), { recursive: true });
  writeFileSync(hashPath, `${hash}\n`);
  console.log(`native/${name}: built ${addonPath}`);
}

/** Command line: [--force] [addon...]; no names builds every addon. */
export function main(argv, defaults = Object.keys(addons)) {
  const force = argv.includes('--force');
  const names = argv.filter((a) => a !== '--force');
  for (const name of names.length > 0 ? names : defaults) buildAddon(name, force);
}

if (import.meta.url === pathToFileURL(realpathSync(process.argv[1] ?? '')).href) main(process.argv.slice(2));
