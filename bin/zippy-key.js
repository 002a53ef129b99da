#!/usr/bin/env node
import '../dist/src/sync/key-main.js';
