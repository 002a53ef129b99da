/**
 * The sync daemon benchmark (issue 5), `npm run bench -- --only syncd`:
 *
 * 1. 1,000 small changes: an in-process peer (store + file system + sync engine) publishes 1,000
 *    single-file changes as 1,000 archives; `zippy-sync --once` uploads them to a server directory
 *    (rsync to a local path), and a second machine's `zippy-sync --once` downloads them. Time and
 *    bytes of each, beside `rsync -r` of the same sync dir into an empty directory.
 * 2. A 4 KiB edit of a 256 MiB file: the file is published and synced, then 4 KiB in its middle
 *    are rewritten and published; the figure is the bytes that run moves (archive files) and the
 *    bytes rsync reports on the wire, as a ratio to 4 KiB.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openSyncBox, writeBoxFile } from '../test/fixtures.js';
import { Cleanup, KiB, MiB, patternBuffer, timedSync, type Figure } from './common.js';

const syncMain = fileURLToPath(new URL('../src/sync/daemon/main.js', import.meta.url));

interface Machine {
  syncDir: string;
  env: NodeJS.ProcessEnv;
}

interface Report {
  ok: boolean;
  up: { archives: number; bytes: number; files: number };
  down: { archives: number; bytes: number; files: number };
  wireBytes?: number;
  errors: string[];
}

function machine(root: string, name: string): Machine {
  const base = join(root, name);
  const syncDir = join(base, 'sync');
  mkdirSync(syncDir, { recursive: true });
  mkdirSync(join(base, 'config', 'zippy-fs'), { recursive: true });
  writeFileSync(join(base, 'config', 'zippy-fs', 'boxid'), `${name === 'a' ? 'a'.repeat(32) : 'b'.repeat(32)}\n`);
  return { syncDir, env: { ...process.env, HOME: base, XDG_CONFIG_HOME: join(base, 'config'), XDG_CACHE_HOME: join(base, 'cache') } };
}

function syncOnce(m: Machine, server: string): { seconds: number; report: Report } {
  let result: ReturnType<typeof spawnSync> | undefined;
  const seconds = timedSync(() => {
    result = spawnSync(process.execPath, [syncMain, '--once', '--json', '--remote', server, m.syncDir], { env: m.env, encoding: 'utf8', maxBuffer: 64 * MiB });
  });
  const report = JSON.parse(String(result!.stdout).trim().split('\n').pop() ?? '{}') as Report;
  if (result!.status !== 0 || !report.ok) throw new Error(`zippy-sync --once failed (${result!.status}): ${String(result!.stderr)} ${report.errors?.join('; ')}`);
  return { seconds, report };
}

function rsyncSeconds(from: string, to: string): number {
  return timedSync(() => {
    const r = spawnSync('rsync', ['-r', `${from}/`, `${to}/`], { stdio: 'ignore' });
    if (r.status !== 0) throw new Error(`rsync baseline failed: ${r.status}`);
  });
}

async function smallChanges(root: string, changeCount: number): Promise<Figure[]> {
  const a = machine(root, 'a');
  const b = machine(root, 'b');
  const server = join(root, 'server-small');
  const box = await openSyncBox(a.syncDir, { boxid: 'a'.repeat(32) });
  try {
    for (let i = 0; i < changeCount; i++) {
      writeBoxFile(box, `/c${i}.txt`, `change ${i}\n`.repeat(1 + (i % 20)));
      await box.engine.publishNow();
    }
  } finally {
    await box.cleanup();
  }
  const up = syncOnce(a, server);
  const down = syncOnce(b, server);
  const baseline = rsyncSeconds(a.syncDir, join(root, 'rsync-baseline'));
  const note = `${up.report.up.archives} archives, ${up.report.up.files} files`;
  return [
    { suite: 'syncd', workload: `sync up ${changeCount} small changes`, unit: 's', zippy: up.seconds, baseline, baselineName: 'rsync -r of the sync dir to an empty dir', higherIsBetter: false, target: { kind: 'none', text: '—' }, note: `${note}, ${(up.report.up.bytes / KiB).toFixed(0)} KiB moved, ${((up.report.wireBytes ?? 0) / KiB).toFixed(0)} KiB on the wire (rsync)` },
    { suite: 'syncd', workload: `sync down ${changeCount} small changes`, unit: 's', zippy: down.seconds, baseline, baselineName: 'rsync -r of the sync dir to an empty dir', higherIsBetter: false, target: { kind: 'none', text: '—' }, note: `${down.report.down.archives} archives, ${(down.report.down.bytes / KiB).toFixed(0)} KiB moved` },
    { suite: 'syncd', workload: `bytes moved for ${changeCount} small changes`, unit: 'KiB', zippy: up.report.up.bytes / KiB, baseline: 0, baselineName: '—', higherIsBetter: false, target: { kind: 'none', text: '—' } },
  ];
}

async function smallEditOfBigFile(root: string, fileSizeBytes: number): Promise<Figure[]> {
  const a = machine(root, 'a2');
  const server = join(root, 'server-big');
  const box = await openSyncBox(a.syncDir, { boxid: 'c'.repeat(32) });
  try {
    for (let offset = 0; offset < fileSizeBytes; offset += 4 * MiB) writeBoxFile(box, '/big.bin', patternBuffer(4 * MiB, 1 + offset / MiB), offset);
    await box.engine.publishNow();
    syncOnce(a, server);
    writeBoxFile(box, '/big.bin', patternBuffer(4 * KiB, 99), Math.floor(fileSizeBytes / 2 / (4 * KiB)) * 4 * KiB + 4 * KiB);
    await box.engine.publishNow();
  } finally {
    await box.cleanup();
  }
  const edit = syncOnce(a, server);
  const wire = edit.report.wireBytes ?? 0;
  const size = `${fileSizeBytes / MiB} MiB`;
  return [
    { suite: 'syncd', workload: `4 KiB edit of a ${size} file: archive bytes uploaded`, unit: 'bytes', zippy: edit.report.up.bytes, baseline: 4 * KiB, baselineName: 'the 4 KiB written', higherIsBetter: false, target: { kind: 'none', text: '—' }, note: `${edit.report.up.archives} archive, ${edit.report.up.files} files` },
    { suite: 'syncd', workload: `4 KiB edit of a ${size} file: bytes on the wire (rsync --stats)`, unit: 'bytes', zippy: wire, baseline: 4 * KiB, baselineName: 'the 4 KiB written', higherIsBetter: false, target: { kind: 'none', text: '—' }, note: 'rsync to a local path: sent + received of the run\'s transfers (listing excluded)' },
  ];
}

export async function runSyncd(quick: boolean, cleanup: Cleanup): Promise<Figure[]> {
  const root = cleanup.tempDir('syncd');
  return [...await smallChanges(root, quick ? 100 : 1000), ...await smallEditOfBigFile(root, quick ? 32 * MiB : 256 * MiB)];
}
