#!/usr/bin/env node
// zippy-export (export as a standard zip or a checkpoint archive) is not built yet: see issue 7. Until then this says so clearly
// instead of failing with a missing-module stack trace.
process.stderr.write('zippy-export: not available yet in this build (export as a standard zip or a checkpoint archive); see docs/ARCHITECTURE.md\n');
process.exit(1);
