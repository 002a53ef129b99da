/**
 * Differential random-operations test in the spirit of fsx and fsstress: a seeded generator
 * applies the same operations to a real zippy-fs mount and to a plain directory on the local
 * disk, with fs.*Sync calls from this process (the mount is served by another process), and
 * requires the same result of every call: the same value, or the same errno code. Then both
 * trees are compared byte for byte and attribute for attribute (type, mode, uid, gid, size,
 * nlink, symlink targets, xattrs; not times), before and after a remount.
 *
 * Seed: ZIPPY_FSX_SEED (default below); operation count: ZIPPY_FSX_OPS (default 5,000). The
 * seed and the failing operation are printed on failure; replay with the same seed.
 *
 * The mount runs with its normal cache timeouts, and open files stay open across renames,
 * unlinks and rmdirs: through libfuse's low-level API a file is one kernel inode whatever its
 * names, so hard links and open files see every change at once, and an unlinked open file is
 * an orphan inode (no .fuse_hidden* name; the tree comparison would show one). With sync
 * publishing, this is what found that a file held back while being written must still be
 * published at once when it lost a name (SyncEngine.lostName).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { diffTrees, mountSkipReason, mountZippy, seededRandom, snapshotTree, tempDir, XattrHelper, type TestMount, type TreeField } from './fixtures.js';

const skip = mountSkipReason();
const seed = Number(process.env['ZIPPY_FSX_SEED'] ?? 20261122);
const opCount = Number(process.env['ZIPPY_FSX_OPS'] ?? 5000);
const fileSizeMaxBytes = 600 * 1024;
const openFileCountMax = 4;
const names = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'];
const modes = [0o644, 0o600, 0o755, 0o700, 0o444, 0o640, 0o4755, 0o2750, 0o1777];
const compareFields: TreeField[] = ['type', 'mode', 'uid', 'gid', 'size', 'sha256', 'target', 'nlink', 'xattrs'];

type Result = { ok: unknown } | { err: string };

function attempt(fn: () => unknown): Result {
  try {
    const value = fn();
    return { ok: value === undefined ? null : value };
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (typeof code !== 'string') throw e;
    return { err: code };
  }
}

function sha(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex').slice(0, 16);
}

function statSummary(st: fs.Stats): Record<string, number | string> {
  const type = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'other';
  return { type, mode: st.mode, nlink: st.nlink, ...(type === 'dir' ? {} : { size: st.size }), uid: st.uid, gid: st.gid };
}

interface OpenPair {
  path: string;
  fds: [number, number];
}

let xattrs: XattrHelper;

before(() => {
  if (skip === false) xattrs = new XattrHelper();
});

after(() => {
  xattrs?.close();
});

const extraOptions = process.env['ZIPPY_FSX_MOUNT_OPTIONS']?.split(',') ?? [];

// The POSIX layer on its own: publishing to the sync dir is held off for the whole run.
test(`fsx: ${opCount} random operations give the same results on the mount and on a plain directory (seed ${seed})`, { skip, timeout: 600_000 }, async () => {
  await runFsx(['publish_delay_ms=60000', ...extraOptions], opCount);
});

// The product as it runs: the sync engine publishes (and sees its own archives) every 300 ms
// while the operations go on.
test(`fsx with sync publishing: ${Math.min(opCount, 3000)} random operations (seed ${seed})`, { skip, timeout: 600_000 }, async () => {
  await runFsx(extraOptions, Math.min(opCount, 3000));
});

async function runFsx(mountOptions: string[], opCount: number): Promise<void> {
  const m: TestMount = await mountZippy({ options: mountOptions });
  const plainBase = tempDir('zippy-fsx-');
  try {
    await runFsxOn(m, plainBase, opCount);
  } finally {
    await m.cleanup();
    fs.rmSync(plainBase, { recursive: true, force: true });
  }
}

async function runFsxOn(m: TestMount, plainBase: string, opCount: number): Promise<void> {
  const roots: [string, string] = [join(m.mountpoint, 'fsx'), join(plainBase, 'fsx')];
  for (const root of roots) fs.mkdirSync(root);
  const rand = seededRandom(seed);
  const open: OpenPair[] = [];
  const log: string[] = [];
  const counts = new Map<string, number>();
  const fullLogPath = process.env['ZIPPY_FSX_LOG'];
  const fullLog: string[] | undefined = fullLogPath === undefined ? undefined : [];

  /** Every entry below the plain root (the model), by kind. */
  const listPlain = (): { dirs: string[]; files: string[]; all: string[] } => {
    const dirs = [''];
    const files: string[] = [];
    const all: string[] = [];
    const stack = [''];
    while (stack.length > 0) {
      const rel = stack.pop()!;
      for (const name of fs.readdirSync(join(roots[1], rel)).sort()) {
        const path = rel === '' ? name : `${rel}/${name}`;
        const st = fs.lstatSync(join(roots[1], path));
        all.push(path);
        if (st.isDirectory()) {
          dirs.push(path);
          stack.push(path);
        } else if (st.isFile()) files.push(path);
      }
    }
    return { dirs, files, all };
  };

  const newPath = (dirs: string[]): string => {
    const dir = rand.pick(dirs);
    return dir === '' ? rand.pick(names) : `${dir}/${rand.pick(names)}`;
  };

  /** An existing path mostly, sometimes a fresh or an impossible one (for errno coverage). */
  const anyPath = (tree: ReturnType<typeof listPlain>, pool: string[]): string => {
    const r = rand.next();
    if (r < 0.75 && pool.length > 0) return rand.pick(pool);
    if (r < 0.9) return newPath(tree.dirs);
    if (r < 0.95 && tree.files.length > 0) return `${rand.pick(tree.files)}/${rand.pick(names)}`;
    return `${rand.pick(names)}/${rand.pick(names)}/${rand.pick(names)}`;
  };

  const randomData = (sizeBytes: number): Buffer => {
    const data = Buffer.alloc(sizeBytes);
    const fill = rand.int(256);
    for (let i = 0; i < sizeBytes; i += 512) data[i] = rand.int(256);
    for (let i = 0; i < sizeBytes; i++) data[i] = data[i]! ^ ((fill + i) & 0xff);
    return data;
  };

  const both = (what: string, fn: (root: string, side: 0 | 1) => unknown): void => {
    log.push(what);
    fullLog?.push(what);
    if (log.length > 20) log.shift();
    const results = [attempt(() => fn(roots[0], 0)), attempt(() => fn(roots[1], 1))];
    if (JSON.stringify(results[0]) !== JSON.stringify(results[1]) && process.env['ZIPPY_FSX_DEBUG'] !== undefined) {
      for (const root of roots) process.stderr.write(`${root}:\n${[...snapshotTree(root)].map(([p, e]) => `  ${p} ${e.type} ${e.mode.toString(8)} nlink ${e.nlink}`).join('\n')}\n`);
    }
    assert.deepEqual(results[0], results[1], `operation #${counts.get('total') ?? 0} differs: ${what}\n  mount: ${JSON.stringify(results[0])}\n  plain: ${JSON.stringify(results[1])}\n  seed ${seed} (ZIPPY_FSX_SEED=${seed}); last operations:\n    ${log.join('\n    ')}`);
  };

  const ops: [number, string, () => void][] = [
    [14, 'write', () => {
      const tree = listPlain();
      const path = rand.next() < 0.8 && tree.files.length > 0 ? rand.pick(tree.files) : newPath(tree.dirs);
      const offset = rand.next() < 0.3 ? rand.int(8192) : rand.int(fileSizeMaxBytes);
      const data = randomData(rand.next() < 0.5 ? rand.int(4096) + 1 : rand.int(131072) + 1);
      both(`write ${path} @${offset} +${data.length}`, (root) => {
        const fd = fs.openSync(join(root, path), fs.constants.O_WRONLY | fs.constants.O_CREAT, 0o644);
        try {
          return fs.writeSync(fd, data, 0, data.length, offset);
        } finally {
          fs.closeSync(fd);
        }
      });
    }],
    [8, 'read', () => {
      const tree = listPlain();
      const path = anyPath(tree, tree.files);
      const offset = rand.int(fileSizeMaxBytes);
      const length = rand.int(200_000) + 1;
      both(`read ${path} @${offset} +${length}`, (root) => {
        const fd = fs.openSync(join(root, path), 'r');
        try {
          const buffer = Buffer.alloc(length);
          const n = fs.readSync(fd, buffer, 0, length, offset);
          return [n, sha(buffer.subarray(0, n))];
        } finally {
          fs.closeSync(fd);
        }
      });
    }],
    [4, 'readall', () => {
      const tree = listPlain();
      const path = anyPath(tree, tree.all);
      both(`readFile ${path}`, (root) => sha(fs.readFileSync(join(root, path))));
    }],
    [6, 'truncate', () => {
      const tree = listPlain();
      const path = anyPath(tree, tree.files);
      const size = rand.next() < 0.3 ? 0 : rand.int(fileSizeMaxBytes + 100_000);
      both(`truncate ${path} ${size}`, (root) => fs.truncateSync(join(root, path), size));
    }],
    [5, 'create', () => {
      const tree = listPlain();
      const path = newPath(tree.dirs);
      const mode = rand.pick(modes) & 0o777;
      both(`create ${path} ${mode.toString(8)}`, (root) => fs.closeSync(fs.openSync(join(root, path), 'wx', mode)));
    }],
    [4, 'mkdir', () => {
      const tree = listPlain();
      if (tree.dirs.length > 25) return;
      const path = newPath(tree.dirs.filter((d) => d.split('/').length < 4));
      both(`mkdir ${path}`, (root) => fs.mkdirSync(join(root, path), 0o755));
    }],
    [3, 'rmdir', () => {
      const tree = listPlain();
      const path = anyPath(tree, tree.dirs.slice(1));
      both(`rmdir ${path}`, (root) => fs.rmdirSync(join(root, path)));
    }],
    [5, 'unlink', () => {
      const tree = listPlain();
      const path = rand.next() < 0.4 && open.length > 0 ? rand.pick(open).path : anyPath(tree, tree.all);
      both(`unlink ${path}`, (root) => fs.unlinkSync(join(root, path)));
    }],
    [7, 'rename', () => {
      const tree = listPlain();
      const from = rand.next() < 0.2 && open.length > 0 ? rand.pick(open).path : anyPath(tree, tree.all);
      const to = rand.next() < 0.5 ? newPath(tree.dirs) : anyPath(tree, tree.all);
      const result = attempt(() => fs.lstatSync(join(roots[1], from)).ino);
      both(`rename ${from} -> ${to}`, (root) => fs.renameSync(join(root, from), join(root, to)));
      for (const pair of open) if ('ok' in result && fs.fstatSync(pair.fds[1]).ino === result.ok) pair.path = to;
    }],
    [4, 'link', () => {
      const tree = listPlain();
      const from = anyPath(tree, tree.files);
      const to = rand.next() < 0.8 ? newPath(tree.dirs) : anyPath(tree, tree.all);
      both(`link ${from} -> ${to}`, (root) => fs.linkSync(join(root, from), join(root, to)));
    }],
    [3, 'symlink', () => {
      const tree = listPlain();
      const target = rand.next() < 0.5 ? rand.pick(names) : `../${rand.pick(names)}/${'x'.repeat(rand.int(40))}`;
      const path = newPath(tree.dirs);
      both(`symlink ${path} -> ${target}`, (root) => fs.symlinkSync(target, join(root, path)));
    }],
    [2, 'readlink', () => {
      const tree = listPlain();
      const path = anyPath(tree, tree.all);
      both(`readlink ${path}`, (root) => fs.readlinkSync(join(root, path)));
    }],
    [5, 'chmod', () => {
      const tree = listPlain();
      const path = anyPath(tree, [...tree.files, ...tree.dirs.slice(1)]);
      const mode = rand.pick(modes);
      both(`chmod ${path} ${mode.toString(8)}`, (root) => fs.chmodSync(join(root, path), mode));
    }],
    [2, 'chown', () => {
      const tree = listPlain();
      const path = anyPath(tree, tree.all);
      const uid = rand.pick([0, 1000, 65534]);
      const gid = rand.pick([0, 100, 65534]);
      both(`lchown ${path} ${uid}:${gid}`, (root) => fs.lchownSync(join(root, path), uid, gid));
    }],
    [6, 'stat', () => {
      const tree = listPlain();
      const path = anyPath(tree, tree.all);
      both(`lstat ${path}`, (root) => statSummary(fs.lstatSync(join(root, path))));
    }],
    [3, 'readdir', () => {
      const tree = listPlain();
      const path = anyPath(tree, tree.dirs);
      both(`readdir ${path}`, (root) => fs.readdirSync(join(root, path)).sort());
    }],
    [5, 'xattr', () => {
      const tree = listPlain();
      const path = anyPath(tree, [...tree.files, ...tree.dirs]);
      const name = `user.${rand.pick(['a', 'b', 'c', 'long.' + 'n'.repeat(100)])}`;
      const r = rand.next();
      if (r < 0.45) {
        const value = randomData(rand.int(300));
        const flags = rand.pick([0, 0, 1, 2]);
        both(`setxattr ${path} ${name} +${value.length} flags ${flags}`, (root) => {
          const res = xattrs.set(join(root, path), name, value, flags);
          if (!res.ok) throw Object.assign(new Error(res.code), { code: res.code });
        });
      } else if (r < 0.7) {
        both(`getxattr ${path} ${name}`, (root) => {
          const res = xattrs.get(join(root, path), name);
          if (!res.ok) throw Object.assign(new Error(res.code), { code: res.code });
          return res.value;
        });
      } else if (r < 0.85) {
        both(`listxattr ${path}`, (root) => {
          const res = xattrs.list(join(root, path));
          if (!res.ok) throw Object.assign(new Error(res.code), { code: res.code });
          return res.value;
        });
      } else {
        both(`removexattr ${path} ${name}`, (root) => {
          const res = xattrs.remove(join(root, path), name);
          if (!res.ok) throw Object.assign(new Error(res.code), { code: res.code });
        });
      }
    }],
    [4, 'open', () => {
      if (open.length >= openFileCountMax) return;
      const tree = listPlain();
      const path = anyPath(tree, tree.files);
      const fds: number[] = [];
      both(`open ${path} r+`, (root) => {
        fds.push(fs.openSync(join(root, path), 'r+'));
      });
      if (fds.length === 2) open.push({ path, fds: fds as [number, number] });
      else for (const fd of fds) fs.closeSync(fd);
    }],
    [8, 'fd', () => {
      if (open.length === 0) return;
      const pair = rand.pick(open);
      const r = rand.next();
      if (r < 0.35) {
        const data = randomData(rand.int(65536) + 1);
        const offset = rand.int(fileSizeMaxBytes);
        both(`fd write ${pair.path} @${offset} +${data.length}`, (_root, side) => fs.writeSync(pair.fds[side], data, 0, data.length, offset));
      } else if (r < 0.65) {
        const offset = rand.int(fileSizeMaxBytes);
        const length = rand.int(100_000) + 1;
        both(`fd read ${pair.path} @${offset} +${length}`, (_root, side) => {
          const buffer = Buffer.alloc(length);
          const n = fs.readSync(pair.fds[side], buffer, 0, length, offset);
          return [n, sha(buffer.subarray(0, n))];
        });
      } else if (r < 0.8) {
        both(`fstat ${pair.path}`, (_root, side) => statSummary(fs.fstatSync(pair.fds[side])));
      } else if (r < 0.9) {
        const size = rand.int(fileSizeMaxBytes);
        both(`ftruncate ${pair.path} ${size}`, (_root, side) => fs.ftruncateSync(pair.fds[side], size));
      } else if (r < 0.95) {
        both(`fsync ${pair.path}`, (_root, side) => fs.fsyncSync(pair.fds[side]));
      } else {
        both(`close ${pair.path}`, (_root, side) => fs.closeSync(pair.fds[side]));
        open.splice(open.indexOf(pair), 1);
      }
    }],
  ];
  const weightTotal = ops.reduce((sum, [weight]) => sum + weight, 0);

  try {
    for (let i = 0; i < opCount; i++) {
      counts.set('total', i);
      let r = rand.int(weightTotal);
      for (const [weight, name, run] of ops) {
        if (r < weight) {
          counts.set(name, (counts.get(name) ?? 0) + 1);
          run();
          break;
        }
        r -= weight;
      }
    }
    for (const pair of open.splice(0)) {
      fs.closeSync(pair.fds[0]);
      fs.closeSync(pair.fds[1]);
    }
    const plain = snapshotTree(roots[1], { xattrs });
    assert.ok(plain.size > 10, `only ${plain.size} entries at the end`);
    assert.deepEqual(diffTrees(snapshotTree(roots[0], { xattrs }), plain, compareFields), [], `trees differ after ${opCount} operations (seed ${seed})`);
    await m.unmount();
    await m.remount();
    assert.deepEqual(diffTrees(snapshotTree(roots[0], { xattrs }), plain, compareFields), [], `trees differ after the remount (seed ${seed})`);
    await m.unmount();
  } catch (e) {
    if (fullLogPath !== undefined) fs.writeFileSync(fullLogPath, `${fullLog!.join('\n')}\n`);
    process.stderr.write(`fsx failed with seed ${seed} (rerun: ZIPPY_FSX_SEED=${seed}); operations by kind: ${JSON.stringify(Object.fromEntries(counts))}; last operations:\n  ${log.join('\n  ')}\nmount log (tail):\n${m.logs().slice(-4000)}\n`);
    throw e;
  }
  process.stderr.write(`fsx seed ${seed}: ${JSON.stringify(Object.fromEntries(counts))}\n`);
}
