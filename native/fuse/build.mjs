#!/usr/bin/env node
/**
 * Builds native/fuse/build/Release/fuse_native.node with node-gyp, or does nothing when the
 * addon already matches its sources. Run as `npm run build:native` (or directly with node).
 *
 * Idempotence: build/source-hash.txt records a SHA-256 of everything the build reads
 * (fuse-native.c, binding.gyp, this file) plus the Node-API-relevant environment (platform,
 * arch, Node major version). When it matches and the addon exists, the script exits at once.
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
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const addonPath = join(here, 'build', 'Release', 'fuse_native.node');
const hashPath = join(here, 'build', 'source-hash.txt');
const sources = ['fuse-native.c', 'binding.gyp', 'build.mjs'];

function sourceHash() {
  const hash = createHash('sha256');
  for (const name of sources) {
    hash.update(name).update('\0').update(readFileSync(join(here, name))).update('\0');
  }
  hash.update(`${process.platform}-${process.arch}-node${process.versions.node.split('.')[0]}`);
  return hash.digest('hex');
}

function findNodeGyp() {
  const fromEnv = process.env.NODE_GYP ?? process.env.npm_config_node_gyp;
  if (fromEnv && existsSync(fromEnv)) return fromEnv;
  try {
    return createRequire(join(here, '..', '..', 'package.json')).resolve('node-gyp/bin/node-gyp.js');
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

function checkPkgConfig() {
  const r = spawnSync('pkg-config', ['--exists', 'fuse'], { stdio: 'ignore' });
  if (r.error || r.status !== 0) {
    throw new Error('pkg-config cannot find "fuse": install the Debian packages libfuse-dev and pkg-config');
  }
}

function main() {
  const force = process.argv.includes('--force');
  const hash = sourceHash();
  if (!force && existsSync(addonPath) && existsSync(hashPath) && readFileSync(hashPath, 'utf8').trim() === hash) {
    console.log(`native/fuse: up to date (${addonPath})`);
    return;
  }
  checkPkgConfig();
  const nodeGyp = findNodeGyp();
  const args = [nodeGyp, 'rebuild', ...nodedirArgs()];
  console.log(`native/fuse: ${process.execPath} ${args.join(' ')}`);
  const r = spawnSync(process.execPath, args, { cwd: here, stdio: 'inherit' });
  if (r.error) throw r.error;
  if (r.status !== 0) process.exit(r.status ?? 1);
  mkdirSync(dirname(hashPath), { recursive: true });
  writeFileSync(hashPath, `${hash}\n`);
  console.log(`native/fuse: built ${addonPath}`);
}

main();
