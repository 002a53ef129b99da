#!/usr/bin/env node
import '../dist/src/sync/export-main.js';
