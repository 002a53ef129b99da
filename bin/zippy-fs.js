#!/usr/bin/env node
import '../dist/src/fuse/main.js';
