/**
 * Convergence property: several in-process boxes (store + file system + sync engine, each with
 * its own sync dir) do random operations, publish, and exchange archives in random orders and
 * random subsets. Once every archive has reached every box and each has imported, every visible
 * tree is identical, conflict copies included.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { copyFileSync, existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { rootCtx } from '../src/inode/types.js';
import type { FileSystem } from '../src/inode/fs.js';
import { openSyncBox, tempDir, type SyncBox } from './fixtures.js';

const files = ['a', 'b.txt', 'd/c', 'd/e.txt', 'f/g'];
const dirs = ['d', 'f'];

type Op =
  | { kind: 'write'; box: number; path: number; data: number; offset: number }
  | { kind: 'delete'; box: number; path: number }
  | { kind: 'rename'; box: number; from: number; to: number }
  | { kind: 'chmod'; box: number; path: number; mode: number }
  | { kind: 'mkdir'; box: number; dir: number }
  | { kind: 'rmdir'; box: number; dir: number }
  | { kind: 'symlink'; box: number; path: number; target: number }
  | { kind: 'xattr'; box: number; path: number; value: number }
  | { kind: 'publish'; box: number }
  | { kind: 'send'; from: number; to: number; pick: number[] }
  | { kind: 'import'; box: number };

const boxCount = 3;
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('write' as const), box: fc.nat(boxCount - 1), path: fc.nat(files.length - 1), data: fc.nat(5), offset: fc.constantFrom(0, 3, 5000) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('delete' as const), box: fc.nat(boxCount - 1), path: fc.nat(files.length - 1) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('rename' as const), box: fc.nat(boxCount - 1), from: fc.nat(files.length - 1), to: fc.nat(files.length - 1) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('chmod' as const), box: fc.nat(boxCount - 1), path: fc.nat(files.length - 1), mode: fc.constantFrom(0o600, 0o644, 0o755) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('mkdir' as const), box: fc.nat(boxCount - 1), dir: fc.nat(dirs.length - 1) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('rmdir' as const), box: fc.nat(boxCount - 1), dir: fc.nat(dirs.length - 1) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('symlink' as const), box: fc.nat(boxCount - 1), path: fc.nat(files.length - 1), target: fc.nat(3) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('xattr' as const), box: fc.nat(boxCount - 1), path: fc.nat(files.length - 1), value: fc.nat(3) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('publish' as const), box: fc.nat(boxCount - 1) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('send' as const), from: fc.nat(boxCount - 1), to: fc.nat(boxCount - 1), pick: fc.array(fc.nat(20), { maxLength: 4 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('import' as const), box: fc.nat(boxCount - 1) }) },
);

function attempt(action: () => void): void {
  try {
    action();
  } catch (e) {
    if (!(e instanceof Error) || !/^E[A-Z]+:/.test(e.message)) throw e;
  }
}

function ensureFile(fs: FileSystem, path: string): number {
  try {
    return fs.resolve(`/${path}`);
  } catch {
    const { parent, name } = fs.resolveParent(`/${path}`);
    return fs.mknod(rootCtx, parent, name, 0o100644).ino;
  }
}

function apply(fs: FileSystem, op: Op): void {
  switch (op.kind) {
    case 'write': {
      const path = files[op.path]!;
      attempt(() => {
        const ino = ensureFile(fs, path);
        const fh = fs.open(ino);
        fs.write(rootCtx, ino, op.offset, Buffer.from(`data${op.data}-${'x'.repeat(op.data * 7)}`));
        fs.release(fh);
      });
      return;
    }
    case 'delete':
      attempt(() => {
        const { parent, name } = fs.resolveParent(`/${files[op.path]!}`);
        fs.unlink(rootCtx, parent, name);
      });
      return;
    case 'rename':
      attempt(() => {
        const from = fs.resolveParent(`/${files[op.from]!}`);
        const to = fs.resolveParent(`/${files[op.to]!}`);
        fs.rename(rootCtx, from.parent, from.name, to.parent, to.name);
      });
      return;
    case 'chmod':
      attempt(() => fs.chmod(rootCtx, fs.resolve(`/${files[op.path]!}`), op.mode));
      return;
    case 'mkdir':
      attempt(() => fs.mkdir(rootCtx, 1, dirs[op.dir]!, 0o755));
      return;
    case 'rmdir':
      attempt(() => fs.rmdir(rootCtx, 1, dirs[op.dir]!));
      return;
    case 'symlink':
      attempt(() => {
        const { parent, name } = fs.resolveParent(`/${files[op.path]!}`);
        fs.symlink(rootCtx, parent, name, `target-${op.target}`);
      });
      return;
    case 'xattr':
      attempt(() => fs.setxattr(fs.resolve(`/${files[op.path]!}`), 'user.tag', Buffer.from(`v${op.value}`), 0));
      return;
    default:
  }
}

/** Copies archives (zip first, idx last, as a transfer would) that `to` lacks. */
function send(fromDir: string, toDir: string, pick: number[] | undefined): void {
  const names = readdirSync(fromDir).filter((f) => f.endsWith('.idx')).map((f) => f.slice(0, -4)).sort();
  const chosen = pick === undefined ? names : [...new Set(pick.map((i) => names[i % Math.max(1, names.length)]).filter((n): n is string => n !== undefined))];
  for (const name of chosen) {
    if (existsSync(join(toDir, `${name}.idx`))) continue;
    copyFileSync(join(fromDir, `${name}.zip`), join(toDir, `${name}.zip`));
    copyFileSync(join(fromDir, `${name}.idx`), join(toDir, `${name}.idx`));
  }
}

function snapshot(fs: FileSystem): string[] {
  const out: string[] = [];
  const stack: { ino: number; path: string }[] = [{ ino: 1, path: '' }];
  while (stack.length > 0) {
    const { ino, path } = stack.pop()!;
    for (const entry of fs.readdir(ino)) {
      const p = `${path}/${entry.name}`;
      const attr = fs.getattr(entry.ino);
      const type = attr.mode & 0o170000;
      const xattrs = fs.listxattr(entry.ino).sort().map((n) => `${n}=${fs.getxattr(entry.ino, n).toString('hex')}`).join(',');
      out.push(`${p} xattrs ${xattrs}`);
      if (type === 0o040000) {
        out.push(`${p} dir ${(attr.mode & 0o7777).toString(8)}`);
        stack.push({ ino: entry.ino, path: p });
      } else if (type === 0o120000) {
        out.push(`${p} link ${fs.readlink(entry.ino)}`);
      } else {
        out.push(`${p} file ${(attr.mode & 0o7777).toString(8)} ${attr.size} ${attr.mtimeNs} ${fs.read(entry.ino, 0, attr.size).toString('base64')}`);
      }
    }
  }
  return out.sort();
}

test('convergence: random operations and archive exchanges in any order leave every box with the same tree', async () => {
  let runs = 0;
  let conflictRuns = 0;
  await fc.assert(
    fc.asyncProperty(fc.array(opArb, { minLength: 5, maxLength: 25 }), fc.array(fc.nat(boxCount - 1), { minLength: 9, maxLength: 9 }), async (ops, finalOrder) => {
      runs++;
      const dirsOf: string[] = [];
      const boxes: SyncBox[] = [];
      try {
        for (let i = 0; i < boxCount; i++) {
          const d = tempDir('zippy-conv-');
          dirsOf.push(d);
          boxes.push(await openSyncBox(d));
        }
        for (const op of ops) {
          if (op.kind === 'publish') await boxes[op.box]!.engine.publishNow();
          else if (op.kind === 'import') await boxes[op.box]!.engine.importNow();
          else if (op.kind === 'send') {
            if (op.from !== op.to) send(dirsOf[op.from]!, dirsOf[op.to]!, op.pick);
          } else apply(boxes[op.box]!.fs, op);
        }
        for (const box of boxes) await box.engine.publishNow();
        // Everything reaches everyone, box by box in a random order, importing as it arrives.
        for (const to of finalOrder) {
          for (let from = 0; from < boxCount; from++) if (from !== to) send(dirsOf[from]!, dirsOf[to]!, undefined);
          await boxes[to]!.engine.importNow();
        }
        for (let to = 0; to < boxCount; to++) {
          for (let from = 0; from < boxCount; from++) if (from !== to) send(dirsOf[from]!, dirsOf[to]!, undefined);
        }
        for (const box of boxes) {
          const report = await box.engine.importNow();
          assert.deepEqual(report.waiting, [], 'every archive imports once all have arrived');
          assert.equal(box.engine.port.outboxCount(), 0, 'imports do not enter the outbox');
        }
        const trees = boxes.map((b) => snapshot(b.fs));
        for (let i = 1; i < boxCount; i++) assert.deepEqual(trees[i], trees[0], `box ${i} differs from box 0`);
        if (trees[0]!.some((line) => line.includes(".sync-conflict-"))) conflictRuns++;
      } finally {
        for (const box of boxes) await box.cleanup();
        for (const d of dirsOf) rmSync(d, { recursive: true, force: true });
      }
    }),
    { numRuns: Number(process.env['ZIPPY_CONVERGENCE_RUNS'] ?? 100), ...(process.env['ZIPPY_SEED'] === undefined ? {} : { seed: Number(process.env['ZIPPY_SEED']) }) },
  );
  process.stdout.write(`convergence: ${runs} runs, ${conflictRuns} with conflict copies\n`);
  assert.ok(runs >= 100 || process.env['ZIPPY_CONVERGENCE_RUNS'] !== undefined);
});
