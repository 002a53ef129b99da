#!/usr/bin/env -S node --max-semi-space-size=4
// The flags above are src/limits.ts mountNodeFlags.
import '../dist/src/fuse/main.js';
