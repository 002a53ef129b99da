/**
 * Archives in the sync dir as other tools and bad actors see them: interop with Info-ZIP and
 * Python, bad input (truncated and corrupt zips, bad idx trailers, idx without zip, zip bombs,
 * duplicate entries, a huge idx), a publisher killed between zip and idx, the plain-zip union.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, truncateSync, utimesSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { openSyncBox, runTool, tempDir, writeBoxFile, readBoxFile, boxPathExists } from './fixtures.js';




function archives(dir: string): string[] {
  return readdirSync(dir).filter((f) => /^[0-9a-f]{32}\.idx$/.test(f)).map((f) => f.slice(0, 32)).sort();
}

function randomish(sizeBytes: number, seed: number): Buffer {
  const b = Buffer.alloc(sizeBytes);
  let x = seed | 1;
  for (let i = 0; i < sizeBytes; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b.writeInt32LE(x | 0, i);
  }
  return b;
}

test('interop: published archives pass unzip -t and Python zipfile testzip()', async () => {
  const dir = tempDir();
  const a = await openSyncBox(dir);
  try {
    writeBoxFile(a, '/text.txt', 'hello '.repeat(5000));
    writeBoxFile(a, '/random.bin', randomish(100_000, 7));
    await a.engine.publishNow();
    const names = archives(dir);
    assert.equal(names.length, 1);
    const zip = join(dir, `${names[0]!}.zip`);
    const out = runTool('unzip', ['-t', zip]);
    assert.match(out, /No errors detected/);
    const py = runTool('python3', ['-c', 'import sys, zipfile\nz = zipfile.ZipFile(sys.argv[1])\nr = z.testzip()\nprint("bad" if r else "ok", len(z.namelist()))', zip]);
    assert.match(py, /^ok \d+/);
  } finally {
    await a.cleanup();
  }
});

test('bad input: corrupt, truncated, half-written and oversized archives are skipped with a warning naming the file, and retried', async () => {
  const source = tempDir();
  const dir = tempDir();
  const a = await openSyncBox(source);
  const warnings: string[] = [];
  try {
    writeBoxFile(a, '/good.txt', 'good');
    await a.engine.publishNow();
    const [good] = archives(source);
    writeBoxFile(a, '/late.txt', 'arrives late');
    await a.engine.publishNow();
    const late = archives(source).find((n) => n !== good)!;
    writeBoxFile(a, '/crc.txt', 'bad crc');
    await a.engine.publishNow();
    const crc = archives(source).find((n) => n !== good && n !== late)!;
    for (const n of [good!, late, crc]) for (const ext of ['.zip', '.idx']) copyFileSync(join(source, n + ext), join(dir, n + ext));
    // late: the zip is still "in transfer" (cut short); crc: one flipped byte in the idx.
    truncateSync(join(dir, `${late}.zip`), 30);
    const idx = readFileSync(join(dir, `${crc}.idx`));
    idx[100] = idx[100]! ^ 0xff;
    writeFileSync(join(dir, `${crc}.idx`), idx);
    // An idx without zip, a huge idx, a zip that is not a zip, a plain zip with a bomb and duplicates.
    writeFileSync(join(dir, `${'ab'.repeat(16)}.idx`), readFileSync(join(source, `${good!}.idx`)));
    writeFileSync(join(dir, `${'cd'.repeat(16)}.idx`), Buffer.alloc(0));
    truncateSync(join(dir, `${'cd'.repeat(16)}.idx`), 65 * 1024 * 1024);
    writeFileSync(join(dir, 'garbage.zip'), 'this is not a zip file at all');
    runTool('python3', ['-c', [
      'import sys, zipfile, struct, warnings',
      'warnings.simplefilter("ignore")',
      'z = zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED)',
      'z.writestr("bomb.bin", b"\\0" * 100000)',
      'z.writestr("dup.txt", b"first")',
      'z.writestr("dup.txt", b"second")',
      'z.writestr("../evil.txt", b"escape")',
      'z.writestr("fine.txt", b"fine")',
      'z.close()',
      'b = bytearray(open(sys.argv[1], "rb").read())',
      'i = b.find(b"PK\\x01\\x02")',
      'struct.pack_into("<I", b, i + 24, 3 * 1024 ** 3 - 1)',
      'open(sys.argv[1], "wb").write(b)',
    ].join('\n'), join(dir, 'plain.zip')]);

    const b = await openSyncBox(dir, { log: (m) => warnings.push(m) });
    try {
      assert.equal(readBoxFile(b, '/good.txt'), 'good');
      assert.equal(boxPathExists(b, '/late.txt'), false);
      assert.equal(boxPathExists(b, '/crc.txt'), false);
      assert.equal(readBoxFile(b, '/fine.txt'), 'fine');
      assert.equal(boxPathExists(b, '/bomb.bin'), false);
      assert.equal(readBoxFile(b, '/dup.txt'), 'first');
      const text = warnings.join('\n');
      for (const name of [`${late}.idx`, `${crc}.idx`, `${'ab'.repeat(16)}.idx`, `${'cd'.repeat(16)}.idx`, 'garbage.zip']) {
        assert.ok(text.includes(name), `a warning names ${name}:\n${text}`);
      }
      assert.match(text, /plain\.zip: entry .*bomb\.bin.* (too-large|bad-ratio)/);
      assert.match(text, /plain\.zip: entry .*evil\.txt.* dot-dot/);
      assert.match(text, /plain\.zip: entry .*dup\.txt.* duplicate/);
      // The transfer finishes: the archive is picked up at the next scan; nothing imported is lost.
      copyFileSync(join(source, `${late}.zip`), join(dir, `${late}.zip`));
      await b.engine.importNow();
      assert.equal(readBoxFile(b, '/late.txt'), 'arrives late');
      assert.equal(readBoxFile(b, '/good.txt'), 'good');
    } finally {
      await b.cleanup();
    }
  } finally {
    await a.cleanup();
  }
});

async function killedPublisher(dir: string, storeDir: string, hook: string, content: string): Promise<void> {
  const self = fileURLToPath(import.meta.url);
  const ts = self.endsWith('.ts');
  const mod = (p: string): string => new URL(`../src/${p}.${ts ? 'ts' : 'js'}`, import.meta.url).href;
  const code = `
    const { Store } = await import(${JSON.stringify(mod('inode/store'))});
    const { FileSystem } = await import(${JSON.stringify(mod('inode/fs'))});
    const { SyncEngine } = await import(${JSON.stringify(mod('sync/engine'))});
    const { rootCtx } = await import(${JSON.stringify(mod('inode/types'))});
    const store = Store.open(${JSON.stringify(storeDir)});
    const fs = new FileSystem(store, { writebackDelayMs: 0 });
    const engine = await SyncEngine.start(fs, { syncDir: ${JSON.stringify(dir)}, boxid: 'aa'.repeat(16), publishDelayMs: 60000 });
    let ino;
    try { ino = fs.resolve('/victim.txt'); } catch { ino = fs.mknod(rootCtx, 1, 'victim.txt', 0o100644).ino; }
    fs.write(rootCtx, ino, 0, Buffer.from(${JSON.stringify(content)}));
    await fs.fsync();
    process.env.${hook} = '1';
    await engine.publishNow();
  `;
  const result = spawnSync(process.execPath, [...(ts ? ['--import', 'tsx'] : []), '--input-type=module', '-e', code], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(result.signal, 'SIGKILL', `the publisher was killed: ${result.stderr}`);
}

async function restartStore(dir: string, storeDir: string): Promise<void> {
  const { Store } = await import('../src/inode/store.js');
  const { FileSystem } = await import('../src/inode/fs.js');
  const { SyncEngine } = await import('../src/sync/engine.js');
  const store = Store.open(storeDir);
  const fs = new FileSystem(store, { writebackDelayMs: 0 });
  const engine = await SyncEngine.start(fs, { syncDir: dir, boxid: 'aa'.repeat(16), publishDelayMs: 60_000 });
  await engine.stop();
  await fs.close();
  await store.close();
}

test('kill -9 after the idx but before the catalog: the restarted store adopts its own archive and never conflicts with itself', async () => {
  const dir = tempDir();
  const storeDir = tempDir();
  try {
    await killedPublisher(dir, storeDir, 'ZIPPY_TEST_KILL_AFTER_IDX', 'first');
    assert.equal(archives(dir).length, 1);
    await restartStore(dir, storeDir);
    const reader = await openSyncBox(dir);
    try {
      assert.equal(readBoxFile(reader, '/victim.txt'), 'first');
      assert.deepEqual(reader.fs.readdir(1).map((e) => e.name), ['victim.txt']);
    } finally {
      await reader.cleanup();
    }
  } finally {
    rmSync(storeDir, { recursive: true, force: true });
  }
});

test('kill -9 of a publisher between zip and idx: nobody imports a partial archive, the next mount republishes', async () => {
  const dir = tempDir();
  const storeDir = tempDir();
  await killedPublisher(dir, storeDir, 'ZIPPY_TEST_KILL_BEFORE_IDX', 'survives the crash');
  const files = readdirSync(dir);
  assert.equal(files.filter((f) => f.endsWith('.idx')).length, 0);
  assert.equal(files.filter((f) => /^[0-9a-f]{32}\.zip$/.test(f)).length, 1, `a pending zip: ${files.join(' ')}`);
  const reader = await openSyncBox(dir);
  try {
    assert.equal(boxPathExists(reader, '/victim.txt'), false);
    await restartStore(dir, storeDir);
    await reader.engine.importNow();
    assert.equal(readBoxFile(reader, '/victim.txt'), 'survives the crash');
  } finally {
    await reader.cleanup();
    rmSync(storeDir, { recursive: true, force: true });
  }
});

test('plain zips made by Info-ZIP mount as a newest-wins union; a write shadows the entry with a new version', async () => {
  const dir = tempDir();
  const work = tempDir();
  const mk = (name: string, files: Record<string, string>, mtime: number): void => {
    const root = join(work, name);
    mkdirSync(root, { recursive: true });
    for (const [p, content] of Object.entries(files)) {
      mkdirSync(join(root, p, '..'), { recursive: true });
      writeFileSync(join(root, p), content);
      utimesSync(join(root, p), mtime, mtime);
    }
    return;
  };
  mk('one', { 'shared.txt': 'old', 'nested/deep/one.txt': 'one' }, 1_600_000_000);
  mkdirSync(join(work, 'one', 'empty'));
  symlinkSync('nested/deep/one.txt', join(work, 'one', 'link'));
  mk('two', { 'shared.txt': 'new', 'two.txt': 'two' }, 1_700_000_000);
  runTool('zip', ['-qry', join(dir, 'one.zip'), '.'], { cwd: join(work, 'one') });
  runTool('zip', ['-qry', join(dir, 'two.zip'), '.'], { cwd: join(work, 'two') });
  const box = await openSyncBox(dir);
  try {
    assert.equal(readBoxFile(box, '/shared.txt'), 'new');
    assert.equal(readBoxFile(box, '/nested/deep/one.txt'), 'one');
    assert.equal(readBoxFile(box, '/two.txt'), 'two');
    assert.equal(box.fs.readdir(box.fs.resolve('/empty')).length, 0);
    assert.equal(box.fs.readlink(box.fs.resolve('/link')), 'nested/deep/one.txt');
    writeBoxFile(box, '/shared.txt', 'NEW');
    await box.engine.publishNow();
    const peer = await openSyncBox(dir);
    try {
      assert.equal(readBoxFile(peer, '/shared.txt'), 'NEW');
      assert.equal(readBoxFile(peer, '/two.txt'), 'two');
    } finally {
      await peer.cleanup();
    }
  } finally {
    await box.cleanup();
  }
});
