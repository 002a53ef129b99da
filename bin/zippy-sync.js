#!/usr/bin/env node
// zippy-sync (moving archives to and from a server (rsync/rclone), GC and repacking) is not built yet: see issue 5. Until then this says so clearly
// instead of failing with a missing-module stack trace.
process.stderr.write('zippy-sync: not available yet in this build (moving archives to and from a server (rsync/rclone), GC and repacking); see docs/ARCHITECTURE.md\n');
process.exit(1);
