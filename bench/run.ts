/**
 * `npm run bench [-- --only engine|mount|sync|syncd|fsck] [-- --quick]`: runs the engine benchmark (issue 2),
 * the whole-mount benchmark (issue 3), the sync benchmark (issues 4 and 6, plain vs encrypted), the sync daemon benchmark (issue 5) and the fsck benchmark (issue 7), prints one table per suite (zippy figure, baseline
 * figure, ratio, the issue's target and whether it is met), and writes bench/report.md and
 * bench/report.json (both git-ignored). Temporary directories and mounts are removed even when a
 * workload fails; the exit code is 1 if a workload failed, 0 otherwise (a missed target is a
 * finding, not a failure).
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { cachesDropped, Cleanup, MiB, targetMet, type Figure } from './common.js';
import { runEngine } from './engine.js';
import { runFsck } from './fsck.js';
import { runMount } from './mount.js';
import { runSync } from './sync.js';
import { runSyncd } from './syncd.js';

const suites = ['engine', 'mount', 'sync', 'syncd', 'fsck'] as const;
type Suite = (typeof suites)[number];

const repoDir = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const benchDir = join(repoDir, 'bench');

function parse(): { only: Suite[]; quick: boolean } {
  const { values } = parseArgs({ options: { only: { type: 'string' }, quick: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } });
  if (values.help === true) {
    process.stdout.write('Usage: npm run bench -- [--only engine|mount|sync|syncd|fsck] [--quick]\n');
    process.exit(0);
  }
  if (values.only !== undefined && !(suites as readonly string[]).includes(values.only)) {
    process.stderr.write(`bench: --only must be one of ${suites.join(', ')}\n`);
    process.exit(2);
  }
  return { only: values.only === undefined ? [...suites] : [values.only as Suite], quick: values.quick === true };
}

function fmt(value: number): string {
  if (!Number.isFinite(value)) return String(value);
  if (Math.abs(value) >= 100) return Math.round(value).toLocaleString('en-US');
  if (Math.abs(value) >= 10) return value.toFixed(1);
  return value.toFixed(2);
}

function row(f: Figure): string[] {
  const met = targetMet(f);
  const ratio = f.baseline === 0 ? '—' : `${(f.zippy / f.baseline).toFixed(2)}×`;
  return [f.workload, f.unit, fmt(f.zippy), fmt(f.baseline), ratio, f.target.text, met === undefined ? '' : met ? 'yes' : 'NO'];
}

const header = ['workload', 'unit', 'zippy', 'baseline', 'ratio', 'target', 'met'];

/** A plain-text table with aligned columns. */
function textTable(figures: Figure[]): string {
  const rows = [header, ...figures.map(row)];
  const widths = header.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  const line = (r: string[]) => r.map((cell, c) => (c >= 2 && c <= 4 ? cell.padStart(widths[c]!) : cell.padEnd(widths[c]!))).join('  ').trimEnd();
  return [line(rows[0]!), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.slice(1).map(line)].join('\n');
}

function markdownTable(figures: Figure[]): string {
  const rows = figures.map((f) => [...row(f), f.baselineName, f.note ?? '']);
  const head = [...header, 'baseline is', 'notes'];
  return [`| ${head.join(' | ')} |`, `| ${head.map((_, c) => (c >= 2 && c <= 4 ? '---:' : '---')).join(' | ')} |`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

function gitCommit(): string {
  try {
    const sha = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: repoDir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: repoDir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    return dirty === '' ? sha : `${sha} (with uncommitted changes)`;
  } catch {
    return 'unknown';
  }
}

async function main(): Promise<void> {
  const { only, quick } = parse();
  const cleanup = new Cleanup();
  const onSignal = (signal: NodeJS.Signals) => {
    process.stderr.write(`bench: ${signal}, cleaning up\n`);
    void cleanup.runAll().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  const started = new Date();
  const results: { suite: Suite; figures: Figure[]; error?: string }[] = [];
  for (const suite of only) {
    try {
      const figures = suite === 'engine' ? await runEngine(quick, cleanup) : suite === 'mount' ? await runMount(quick, cleanup)
        : suite === 'sync' ? await runSync(quick, cleanup) : suite === 'syncd' ? await runSyncd(quick, cleanup) : await runFsck(quick, cleanup);
      results.push({ suite, figures });
    } catch (e) {
      const message = String((e as Error)?.stack ?? e);
      process.stderr.write(`bench: ${suite} failed: ${message}\n`);
      results.push({ suite, figures: [], error: message });
    } finally {
      await cleanup.runAll();
    }
  }

  const machine = `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${Math.round(totalmem() / MiB / 1024)} GiB RAM, Node ${process.version}`;
  const context = [
    `date ${started.toISOString()}, commit ${gitCommit()}, ${quick ? 'QUICK sizes (not the issues\' figures)' : 'full sizes'}`,
    machine,
    cachesDropped() === true ? 'page cache dropped (echo 3 > /proc/sys/vm/drop_caches) before cold runs' : 'page cache could not be dropped: "cold" runs are warm',
  ];
  const titles: Record<Suite, string> = {
    engine: 'Engine (issue 2): inode API in-process vs raw syscalls / raw LMDB', mount: 'Mount (issue 3): FUSE mount vs plain directory on the same disk',
    sync: 'Sync (issues 4 and 6): engine in-process, encrypted sync dir vs plain sync dir',
    syncd: 'Sync daemon (issue 5): zippy-sync --once with rsync to a local path',
    fsck: 'fsck (issue 7): zippy-fsck of a large store vs reading its files once',
  };
  let text = '';
  let md = `# zippy-fs benchmark report\n\n${context.map((c) => `- ${c}`).join('\n')}\n\nRatio = zippy ÷ baseline. Produced by \`npm run bench\` (bench/run.ts).\n`;
  for (const r of results) {
    text += `\n${titles[r.suite]}\n${r.error !== undefined ? `FAILED: ${r.error.split('\n')[0]}\n` : ''}${textTable(r.figures)}\n`;
    md += `\n## ${titles[r.suite]}\n\n${r.error !== undefined ? `**Failed:** \`${r.error.split('\n')[0]}\`\n\n` : ''}${markdownTable(r.figures)}\n`;
  }
  process.stdout.write(`${context.join('\n')}\n${text}`);
  writeFileSync(join(benchDir, 'report.md'), md);
  writeFileSync(join(benchDir, 'report.json'), `${JSON.stringify({ date: started.toISOString(), commit: gitCommit(), quick, machine, results: results.map((r) => ({ ...r, figures: r.figures.map((f) => ({ ...f, ratio: f.zippy / f.baseline, met: targetMet(f) ?? null })) })) }, null, 2)}\n`);
  process.stdout.write(`\nreport: ${join(benchDir, 'report.md')} (+ report.json)\n`);
  process.exitCode = results.some((r) => r.error !== undefined) ? 1 : 0;
}

await main();
