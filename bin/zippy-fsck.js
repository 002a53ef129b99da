#!/usr/bin/env node
import '../dist/tools/fsck.js';
