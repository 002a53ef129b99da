#!/usr/bin/env node
import '../dist/src/sync/daemon/main.js';
