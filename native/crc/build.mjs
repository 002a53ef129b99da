#!/usr/bin/env node
/** Builds native/crc/build/Release/crc32.node when it does not match its sources; see ../build.mjs. */
import { main } from '../build.mjs';

main(process.argv.slice(2).filter((a) => a === '--force'), ['crc']);
