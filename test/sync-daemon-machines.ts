/**
 * Machines with real mounts for the end-to-end zippy-sync tests: each machine is a sync dir, a
 * zippy-fs mount with its own HOME/XDG dirs (so its own boxid), and a seeded workload of writes,
 * partial overwrites, renames, deletes, directories and concurrent edits of one shared file.
 */
import { existsSync, mkdirSync, openSync, closeSync, readdirSync, renameSync, rmSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { diffTrees, mountZippy, seededRandom, snapshotTree, type TestMount, type TreeEntry } from './fixtures.js';
import { makeMachine, sleep, type Machine } from './sync-daemon-fixtures.js';

export interface MountedMachine extends Machine {
  readonly mount: TestMount;
}

export async function mountMachine(name: string, root: string, boxid: string): Promise<MountedMachine> {
  const m = makeMachine(name, root, boxid);
  const mount = await mountZippy({ syncDir: m.syncDir, env: m.env, options: ['publish_delay_ms=100'] });
  return { ...m, mount };
}

const names = ['a.txt', 'b.bin', 'notes.md', 'd1/x', 'd1/y.txt', 'd2/z', 'd2/deep/w'];

/** A seeded round of operations on one mount (errors from paths that do not exist are skipped). */
export function randomOps(m: MountedMachine, seed: number, count: number): void {
  const rand = seededRandom(seed);
  const root = m.mount.mountpoint;
  const path = (rel: string): string => join(root, rel);
  for (let i = 0; i < count; i++) {
    const rel = rand.pick(names);
    const op = rand.int(10);
    try {
      if (op < 4) {
        mkdirSync(join(root, rel, '..'), { recursive: true });
        writeFileSync(path(rel), `${m.name} ${seed} ${i} `.repeat(1 + rand.int(400)));
      } else if (op < 6) {
        if (!existsSync(path(rel))) continue;
        const fd = openSync(path(rel), 'r+');
        writeSync(fd, Buffer.from(`<${m.name}:${i}>`), 0, undefined, rand.int(3000));
        closeSync(fd);
      } else if (op < 8) {
        const to = rand.pick(names);
        if (!existsSync(path(rel)) || to === rel || to.startsWith(`${rel}/`)) continue;
        mkdirSync(join(root, to, '..'), { recursive: true });
        renameSync(path(rel), path(to));
      } else if (op < 9) {
        if (existsSync(path(rel))) unlinkSync(path(rel));
      } else {
        const dir = rand.pick(['d1', 'd2', 'd3']);
        if (existsSync(path(dir)) && readdirSync(path(dir)).length === 0 && rand.next() < 0.5) rmSync(path(dir), { recursive: true });
        else mkdirSync(path(dir), { recursive: true });
      }
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'EISDIR' && code !== 'ENOTDIR' && code !== 'ENOTEMPTY' && code !== 'EEXIST') throw e;
    }
  }
}

/** Every machine edits the same file (the same base, no sync in between): a conflict. */
export function concurrentEdit(machines: readonly MountedMachine[], round: number): void {
  for (const m of machines) writeFileSync(join(m.mount.mountpoint, 'shared.txt'), `round ${round} by ${m.name}\n`);
}

export function snapshot(m: MountedMachine): Map<string, TreeEntry> {
  return snapshotTree(m.mount.mountpoint);
}

const fields = ['type', 'mode', 'size', 'sha256', 'target'] as const;

/** Differences between the first machine's tree and every other's (empty when all equal). */
export function treeDifferences(machines: readonly MountedMachine[]): string[] {
  const first = snapshot(machines[0]!);
  return machines.slice(1).flatMap((m) => diffTrees(first, snapshot(m), [...fields]).map((d) => `${machines[0]!.name} vs ${m.name}: ${d}`));
}

/**
 * Runs `syncRound` (every machine syncs once) until every tree is equal after the mounts have had
 * time to import, at most `roundCountMax` times; returns the differences left (empty on success).
 */
export async function syncUntilEqual(machines: readonly MountedMachine[], syncRound: () => void, roundCountMax = 8): Promise<string[]> {
  let differences: string[] = [];
  for (let round = 0; round < roundCountMax; round++) {
    syncRound();
    await sleep(1000); // imports (inotify) and publishes settle; the loop, not this wait, decides
    differences = treeDifferences(machines);
    if (differences.length === 0) return [];
  }
  return differences;
}
