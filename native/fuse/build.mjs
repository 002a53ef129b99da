#!/usr/bin/env node
/** Builds native/fuse/build/Release/fuse_native.node when it does not match its sources; see ../build.mjs. */
import { main } from '../build.mjs';

main(process.argv.slice(2).filter((a) => a === '--force'), ['fuse']);
