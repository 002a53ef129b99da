/**
 * Property test of the POSIX layer against a simple in-memory model of a file system.
 * Random sequences of 15 kinds of operation run on both; error codes must agree; random
 * "crash and reopen" points drop all process state without writing anything back. After a
 * crash: the namespace is exactly the model's (namespace operations commit at once); a file
 * fsynced and not touched since has exactly its fsynced bytes; any other file holds only
 * bytes that were written at that position at some time, or zeros; the checker passes. Half the
 * runs send aligned whole-block writes straight to the log (writeDirect) instead of the cache.
 * fast-check prints the seed and the shrunk sequence on failure.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { openTestFs, type TestFs } from './fixtures.js';
import { rootCtx, rootIno, S_IFMT, S_IFREG } from '../src/inode/types.js';
import { isFsError } from '../src/errors.js';

interface MFile { kind: 'file'; data: Buffer; written: Set<number>[]; synced: boolean; mode: number; xattrs: Map<string, string> }
interface MDir { kind: 'dir'; children: Map<string, MNode>; mode: number; xattrs: Map<string, string> }
interface MLink { kind: 'symlink'; target: string; mode: number; xattrs: Map<string, string> }
type MNode = MFile | MDir | MLink;

type Op =
  | { op: 'create' | 'mkdir' | 'symlink'; dir: number; name: number }
  | { op: 'write'; file: number; offset: number; length: number; zero: boolean }
  | { op: 'truncate'; file: number; size: number }
  | { op: 'unlink' | 'rmdir' | 'chmod' | 'setxattr' | 'fsync' | 'read'; path: number; value: number }
  | { op: 'rename' | 'link'; path: number; dir: number; name: number }
  | { op: 'crash' | 'reopen' };

const names = ['a', 'b', 'c', 'd', 'e'];

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { arbitrary: fc.record({ op: fc.constantFrom('create' as const, 'mkdir' as const, 'symlink' as const), dir: fc.nat(), name: fc.nat() }), weight: 6 },
  {
    // Some writes are whole aligned blocks (the direct path when the run allows it), some all zeros (holes).
    arbitrary: fc.record({
      op: fc.constant('write' as const), file: fc.nat(),
      offset: fc.oneof(fc.nat({ max: 14000 }), fc.nat({ max: 3 }).map((b) => b * 4096)),
      length: fc.oneof(fc.integer({ min: 1, max: 9000 }), fc.integer({ min: 1, max: 3 }).map((n) => n * 4096)),
      zero: fc.nat({ max: 7 }).map((v) => v === 0),
    }),
    weight: 8,
  },
  { arbitrary: fc.record({ op: fc.constant('truncate' as const), file: fc.nat(), size: fc.nat({ max: 20000 }) }), weight: 2 },
  { arbitrary: fc.record({ op: fc.constantFrom('unlink' as const, 'rmdir' as const, 'chmod' as const, 'setxattr' as const, 'fsync' as const, 'read' as const), path: fc.nat(), value: fc.nat() }), weight: 8 },
  { arbitrary: fc.record({ op: fc.constantFrom('rename' as const, 'link' as const), path: fc.nat(), dir: fc.nat(), name: fc.nat() }), weight: 4 },
  { arbitrary: fc.record({ op: fc.constantFrom('crash' as const, 'reopen' as const) }), weight: 1 },
);

class Model {
  root: MDir = { kind: 'dir', children: new Map(), mode: 0o40755, xattrs: new Map() };
  writeSeq = 0;

  paths(filter?: (n: MNode) => boolean): { path: string; node: MNode; parent: MDir; name: string }[] {
    const out: { path: string; node: MNode; parent: MDir; name: string }[] = [];
    const stack: [MDir, string][] = [[this.root, '']];
    while (stack.length > 0) {
      const [dir, prefix] = stack.pop()!;
      for (const [name, node] of [...dir.children].sort((x, y) => (x[0] < y[0] ? -1 : 1))) {
        const path = `${prefix}/${name}`;
        if (filter === undefined || filter(node)) out.push({ path, node, parent: dir, name });
        if (node.kind === 'dir') stack.push([node, path]);
      }
    }
    return out.sort((x, y) => (x.path < y.path ? -1 : 1));
  }

  dirs(): { path: string; node: MDir }[] {
    return [{ path: '', node: this.root }, ...this.paths((n) => n.kind === 'dir').map((p) => ({ path: p.path, node: p.node as MDir }))];
  }

  contains(dir: MDir, node: MNode): boolean {
    if (dir === node) return true;
    for (const child of dir.children.values()) if (child.kind === 'dir' && this.contains(child, node)) return true;
    return false;
  }
}

function outcome(fn: () => unknown): string {
  try {
    fn();
    return 'ok';
  } catch (e) {
    if (isFsError(e)) return e.code;
    throw e;
  }
}

function pick<T>(list: T[], index: number): T | undefined {
  return list.length === 0 ? undefined : list[index % list.length];
}

function fill(length: number, seq: number): Buffer {
  return Buffer.alloc(length, (seq % 250) + 1);
}

function apply(t: TestFs, m: Model, op: Op): void | Promise<void> {
  const fs = t.fs;
  switch (op.op) {
    case 'create':
    case 'mkdir':
    case 'symlink': {
      const dir = pick(m.dirs(), op.dir)!;
      const name = names[op.name % names.length]!;
      const parent = fs.resolve(dir.path || '/');
      const expected = dir.node.children.has(name) ? 'EEXIST' : 'ok';
      const got = outcome(() => {
        if (op.op === 'create') fs.mknod(rootCtx, parent, name, S_IFREG | 0o644);
        else if (op.op === 'mkdir') fs.mkdir(rootCtx, parent, name, 0o755);
        else fs.symlink(rootCtx, parent, name, `target-${op.name}`);
      });
      assert.equal(got, expected, `${op.op} ${dir.path}/${name}`);
      if (expected === 'ok') {
        const node: MNode = op.op === 'create' ? { kind: 'file', data: Buffer.alloc(0), written: [], synced: false, mode: 0o100644, xattrs: new Map() }
          : op.op === 'mkdir' ? { kind: 'dir', children: new Map(), mode: 0o40755, xattrs: new Map() }
          : { kind: 'symlink', target: `target-${op.name}`, mode: 0o120777, xattrs: new Map() };
        dir.node.children.set(name, node);
      }
      return;
    }
    case 'write': {
      const file = pick(m.paths((n) => n.kind === 'file'), op.file);
      if (file === undefined) return;
      const node = file.node as MFile;
      const seq = ++m.writeSeq;
      const data = op.zero ? Buffer.alloc(op.length) : fill(op.length, seq);
      fs.write(rootCtx, fs.resolve(file.path), op.offset, data);
      const end = op.offset + op.length;
      if (node.data.length < end) node.data = Buffer.concat([node.data, Buffer.alloc(end - node.data.length)]);
      data.copy(node.data, op.offset);
      for (let i = op.offset; i < end; i++) (node.written[i] ??= new Set()).add(data[0]!);
      node.synced = false;
      return;
    }
    case 'truncate': {
      const file = pick(m.paths((n) => n.kind === 'file'), op.file);
      if (file === undefined) return;
      const node = file.node as MFile;
      fs.truncate(rootCtx, fs.resolve(file.path), op.size);
      node.data = op.size <= node.data.length ? Buffer.from(node.data.subarray(0, op.size)) : Buffer.concat([node.data, Buffer.alloc(op.size - node.data.length)]);
      for (let i = op.size; i < node.written.length; i++) node.written[i]?.add(0);
      node.synced = false;
      return;
    }
    case 'read': {
      const file = pick(m.paths((n) => n.kind === 'file'), op.path);
      if (file === undefined) return;
      const node = file.node as MFile;
      const offset = op.value % (node.data.length + 1);
      const got = fs.read(fs.resolve(file.path), offset, 5000);
      assert.ok(got.equals(node.data.subarray(offset, offset + 5000)), `read ${file.path} at ${offset}`);
      return;
    }
    case 'fsync': {
      const file = pick(m.paths((n) => n.kind === 'file'), op.path);
      if (file === undefined) return;
      const node = file.node as MFile;
      node.synced = true;
      const ino = fs.resolve(file.path);
      // Written back, a file holds exactly its blocks with a non-zero byte (zeros become holes).
      return fs.fsync(ino).then(() => assert.equal(fs.getattr(ino).blocks, 8 * nonZeroBlockCount(node.data), `st_blocks of ${file.path}`));
    }
    case 'unlink':
    case 'rmdir': {
      const entry = pick(m.paths(), op.path);
      if (entry === undefined) return;
      const isDirNode = entry.node.kind === 'dir';
      const expected = op.op === 'unlink' ? (isDirNode ? 'EISDIR' : 'ok')
        : !isDirNode ? 'ENOTDIR' : (entry.node as MDir).children.size > 0 ? 'ENOTEMPTY' : 'ok';
      const parent = fs.resolve(entry.path.slice(0, entry.path.lastIndexOf('/')) || '/');
      const got = outcome(() => (op.op === 'unlink' ? fs.unlink(rootCtx, parent, entry.name) : fs.rmdir(rootCtx, parent, entry.name)));
      assert.equal(got, expected, `${op.op} ${entry.path}`);
      if (expected === 'ok') entry.parent.children.delete(entry.name);
      return;
    }
    case 'chmod': {
      const entry = pick(m.paths(), op.path);
      if (entry === undefined) return;
      const mode = op.value & 0o777;
      fs.chmod(rootCtx, fs.resolve(entry.path), mode);
      entry.node.mode = (entry.node.mode & S_IFMT) | mode;
      return;
    }
    case 'setxattr': {
      const entry = pick(m.paths((n) => n.kind !== 'symlink'), op.path);
      if (entry === undefined) return;
      const name = `user.k${op.value % 3}`;
      fs.setxattr(fs.resolve(entry.path), name, Buffer.from(`v${op.value}`), 0);
      entry.node.xattrs.set(name, `v${op.value}`);
      return;
    }
    case 'rename':
    case 'link': {
      const entry = pick(m.paths(), op.path);
      if (entry === undefined) return;
      const dir = pick(m.dirs(), op.dir)!;
      const name = names[op.name % names.length]!;
      const srcParent = fs.resolve(entry.path.slice(0, entry.path.lastIndexOf('/')) || '/');
      const dstParent = fs.resolve(dir.path || '/');
      const target = dir.node.children.get(name);
      let expected: string;
      if (op.op === 'link') expected = entry.node.kind === 'dir' ? 'EPERM' : target !== undefined ? 'EEXIST' : 'ok';
      else if (entry.node.kind === 'dir' && m.contains(entry.node, dir.node)) expected = target === entry.node ? 'ok' : 'EINVAL';
      else if (target === undefined || target === entry.node) expected = 'ok';
      else if (target.kind === 'dir') expected = entry.node.kind !== 'dir' ? 'EISDIR' : target.children.size > 0 ? 'ENOTEMPTY' : 'ok';
      else expected = entry.node.kind === 'dir' ? 'ENOTDIR' : 'ok';
      const got = outcome(() => (op.op === 'link' ? fs.link(rootCtx, fs.resolve(entry.path), dstParent, name) : fs.rename(rootCtx, srcParent, entry.name, dstParent, name)));
      assert.equal(got, expected, `${op.op} ${entry.path} -> ${dir.path}/${name}`);
      if (expected !== 'ok' || target === entry.node) return;
      if (op.op === 'rename') entry.parent.children.delete(entry.name);
      dir.node.children.set(name, entry.node);
      return;
    }
    case 'reopen':
      return t.reopen();
    case 'crash':
      return crash(t, m);
  }
}

function nonZeroBlockCount(data: Buffer): number {
  let count = 0;
  for (let start = 0; start < data.length; start += 4096) if (data.subarray(start, start + 4096).some((b) => b !== 0)) count++;
  return count;
}

async function crash(t: TestFs, m: Model): Promise<void> {
  await t.crashAndReopen();
  t.check();
  compareNamespace(t, m);
  const seen = new Set<MFile>();
  for (const { path, node } of m.paths((n) => n.kind === 'file')) {
    const file = node as MFile;
    if (seen.has(file)) continue;
    seen.add(file);
    const ino = t.fs.resolve(path);
    const actual = t.fs.read(ino, 0, 1 << 20);
    if (file.synced) {
      assert.ok(actual.equals(file.data), `fsynced file ${path} lost data: ${actual.length} vs ${file.data.length} bytes`);
    } else {
      for (let i = 0; i < actual.length; i++) {
        const b = actual[i]!;
        assert.ok(b === 0 || (file.written[i]?.has(b) ?? false), `${path} byte ${i} = ${b} was never written there`);
      }
    }
    file.data = Buffer.from(actual);
    file.synced = true;
  }
}

function compareNamespace(t: TestFs, m: Model): void {
  const expected = m.paths().map(({ path, node }) => `${path} ${node.kind} ${(node.mode & 0o7777).toString(8)} ${[...node.xattrs].sort().join(',')}${node.kind === 'symlink' ? ` -> ${node.target}` : ''}`);
  const actual: string[] = [];
  const stack: [number, string][] = [[rootIno, '']];
  while (stack.length > 0) {
    const [ino, prefix] = stack.pop()!;
    for (const entry of t.fs.readdir(ino)) {
      const path = `${prefix}/${entry.name}`;
      const attr = t.fs.getattr(entry.ino);
      const type = attr.mode & S_IFMT;
      const kind = type === 0o040000 ? 'dir' : type === 0o120000 ? 'symlink' : 'file';
      const xattrs = t.fs.listxattr(entry.ino).sort().map((n) => [n, t.fs.getxattr(entry.ino, n).toString()].join(','));
      actual.push(`${path} ${kind} ${(attr.mode & 0o7777).toString(8)} ${xattrs.join(',')}${kind === 'symlink' ? ` -> ${t.fs.readlink(entry.ino)}` : ''}`);
      if (kind === 'dir') stack.push([entry.ino, path]);
    }
  }
  assert.deepEqual(actual.sort(), expected.sort());
}

test('random operations agree with the model across crashes', async () => {
  const runs = Number(process.env['ZIPPY_MODEL_RUNS'] ?? 200);
  await fc.assert(
    fc.asyncProperty(fc.array(opArb, { minLength: 5, maxLength: 40 }), fc.boolean(), fc.boolean(), async (ops, smallCache, direct) => {
      // direct: every aligned write of whole blocks goes straight to the log (writeDirect).
      const t = openTestFs({ fs: { cacheSizeBytes: smallCache ? 16 * 4096 : 1 << 22, ...(direct ? { directWriteBlockCountMin: 1 } : {}) }, store: { segmentSizeMaxBytes: 64 * 1024 } });
      const m = new Model();
      try {
        for (const op of ops) await apply(t, m, op);
        await crash(t, m);
      } finally {
        await t.cleanup();
      }
    }),
    { numRuns: runs, verbose: 1 },
  );
});
