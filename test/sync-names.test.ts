import assert from 'node:assert/strict';
import { test } from 'node:test';
import { nameLengthMaxBytes, pathLengthMaxBytes } from '../src/limits.js';
import {
  checkIdxPath, checkZipEntryName, hex128FromBytes, hex128ToBytes, isArchiveName, isTempName, newArchiveName, newTempName,
} from '../src/sync/names.js';

test('names: archive names are 32 lowercase hex and fresh each time', () => {
  const a = newArchiveName();
  const b = newArchiveName();
  assert.match(a, /^[0-9a-f]{32}$/);
  assert.notEqual(a, b);
  assert.ok(isArchiveName(a));
  assert.ok(!isArchiveName(a.toUpperCase()));
  assert.ok(!isArchiveName(`${a}0`));
  assert.ok(!isArchiveName(a.slice(1)));
  assert.ok(!isArchiveName(`${a.slice(1)}g`));
  assert.equal(hex128FromBytes(hex128ToBytes(a)), a);
});

test('names: temp names are recognised and never archive names', () => {
  const t = newTempName('zip');
  assert.ok(isTempName(t));
  assert.ok(t.endsWith('.zip'));
  assert.ok(!isArchiveName(t.slice(0, -4)));
  assert.ok(!isTempName(`${newArchiveName()}.zip`));
});

test('names: good zip entry names pass, directories lose their slash', () => {
  assert.deepEqual(checkZipEntryName('a/b/c.txt'), { ok: true, path: 'a/b/c.txt', isDirectory: false });
  assert.deepEqual(checkZipEntryName('a/b/'), { ok: true, path: 'a/b', isDirectory: true });
  assert.deepEqual(checkZipEntryName('é/..x/.hidden'), { ok: true, path: 'é/..x/.hidden', isDirectory: false });
});

test('names: hostile zip entry names are rejected with a typed reason', () => {
  const cases: [string, string][] = [
    ['', 'empty'],
    ['/', 'empty'],
    ['../x', 'dot-dot'],
    ['a/../../x', 'dot-dot'],
    ['a/..', 'dot-dot'],
    ['/abs', 'absolute'],
    ['//abs', 'absolute'],
    ['C:/x', 'drive-letter'],
    ['c:x', 'drive-letter'],
    ['a\0b', 'nul'],
    ['..\\x', 'backslash'],
    ['a\\b', 'backslash'],
    ['a//b', 'empty-component'],
    ['a//', 'empty-component'],
    ['./a', 'dot'],
    ['a/./b', 'dot'],
    [`${'n'.repeat(nameLengthMaxBytes + 1)}`, 'component-too-long'],
    [`a/${'é'.repeat(128)}`, 'component-too-long'],
    [`${'a/'.repeat(pathLengthMaxBytes / 2)}b`, 'path-too-long'],
  ];
  for (const [name, reason] of cases) {
    const result = checkZipEntryName(name);
    assert.equal(result.ok, false, `${JSON.stringify(name)} accepted`);
    if (!result.ok) {
      assert.equal(result.reason, reason, JSON.stringify(name));
      assert.ok(result.detail.length > 0);
    }
  }
  assert.equal(checkZipEntryName('n'.repeat(nameLengthMaxBytes)).ok, true);
});

test('names: idx paths: the empty path is the root, no trailing slash', () => {
  assert.equal(checkIdxPath('').ok, true);
  assert.equal(checkIdxPath('a/b').ok, true);
  assert.equal(checkIdxPath('a/').ok, false);
  assert.equal(checkIdxPath('/a').ok, false);
});
