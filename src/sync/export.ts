/**
 * What `zippy-export` makes from a sync view (view.ts: the tree a mount shows, optionally as of a
 * time):
 * - `exportTreeZip`: a standard zip of the tree or of one subtree (export-zip.ts);
 * - `writeCheckpoint`: a self-contained checkpoint published into the sync dir: every head version
 *   the view knows (live, tombstones and conflict losers, so a peer merges it exactly as the
 *   originals), with ids runs only (no copy runs) and every block they need, written by the
 *   archive write protocol (zip, then idx as commit point), sealed in an encrypted sync dir.
 *
 * A checkpoint keeps each version's own stamp and base: a peer that already holds a version
 * ignores the copy, a new machine gets exactly the heads, and later archives that copy from those
 * stamps resolve. Versions are grouped into one archive per machine that made them, because the
 * importer maps every replica id of an archive to the idx header's writer boxid (conflict-copy
 * names show it); one machine's versions go into several archives when they pass the per-archive
 * limits.
 */
import { assert, FsError } from '../errors.js';
import { blockSizeBytes, treeDepthMax } from '../limits.js';
import { archivePointer, type PortNode } from '../inode/sync-port.js';
import { ArchiveBlockReader } from './archive-reader.js';
import { type WrittenArchive, writeArchive } from './archive-store.js';
import { type Keyring, sealFile, writeSealedFile } from './crypto/index.js';
import { blockRunsFromIds, type FileVersion, type Idx, idxSizeBytes } from './idx.js';
import { blockIdBytes, checkpointBlockCountMax, checkpointIdxSizeSoftMaxBytes, checkpointVersionCountMax } from './limits.js';
import type { VersionMeta } from './merge.js';
import { newArchiveName } from './names.js';
import { isZeroId } from './reconcile.js';
import type { SyncView } from './view.js';
import { TreeZipWriter } from './export-zip.js';
import { type BlockLocation, type BlockPayload, type ZipSink, writeBlockZip, writeBlockZipFile } from './zipfile.js';

/** Progress callback: entries or versions done, bytes done. */
export type Progress = (done: number, bytes: number) => void;

export interface TreeZipReport {
  readonly entryCount: number;
  readonly sizeBytes: number;
  readonly fileBytes: number;
  /** Paths left out (FIFOs, sockets, device nodes: a zip cannot carry them), one message each. */
  readonly skipped: readonly string[];
}

/** Normalises a `--path` argument to a sync path ('' = the root). */
export function syncPathOf(arg: string): string {
  return arg.split('/').filter((c) => c !== '' && c !== '.').join('/');
}

function join2(a: string, b: string): string {
  return a === '' ? b : `${a}/${b}`;
}

/**
 * Writes the tree below `subPath` of the view as a standard zip to `sink`: entry names relative to
 * `subPath` (a file given as `subPath` becomes one entry named by its last component).
 * FsError ENOENT when `subPath` is not in the view.
 */
export async function exportTreeZip(view: SyncView, subPath: string, sink: ZipSink, options: { compressionLevel?: number; progress?: Progress } = {}): Promise<TreeZipReport> {
  const port = view.engine.port;
  const rootIno = port.lookup(subPath);
  if (rootIno === undefined) throw new FsError('ENOENT', 'not in the tree (at that time)', subPath === '' ? '/' : subPath);
  const writer = new TreeZipWriter(sink, options.compressionLevel === undefined ? {} : { compressionLevel: options.compressionLevel });
  const skipped: string[] = [];
  let fileBytes = 0;
  const add = async (node: PortNode, name: string): Promise<void> => {
    switch (node.type) {
      case 'dir':
        await writer.addDirectory(name, node.mode, node.mtimeNs);
        return;
      case 'symlink':
        await writer.addSymlink(name, node.symlinkTarget, node.mode, node.mtimeNs);
        return;
      case 'file':
        await writer.addFile(name, node.mode, node.mtimeNs, node.sizeBytes, (offset, length) => view.fs.read(node.ino, offset, length));
        fileBytes += node.sizeBytes;
        return;
      default:
        skipped.push(`${name}: a ${node.type} cannot be stored in a zip; left out`);
    }
  };
  const top = port.node(rootIno);
  if (top === undefined) throw new FsError('ENOENT', 'vanished', subPath);
  if (top.type !== 'dir') {
    await add(top, subPath.slice(subPath.lastIndexOf('/') + 1));
  } else {
    // Explicit stack, parents before children, names sorted: the zip lists the tree in order.
    const stack: { ino: number; rel: string; depth: number }[] = [{ ino: rootIno, rel: '', depth: 0 }];
    while (stack.length > 0) {
      const { ino, rel, depth } = stack.pop()!;
      if (depth > treeDepthMax) throw new FsError('LIMIT', `deeper than ${treeDepthMax}`, rel);
      const children = port.children(ino).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      const dirs: { ino: number; rel: string; depth: number }[] = [];
      for (const child of children) {
        const node = port.node(child.ino);
        if (node === undefined) continue;
        const name = join2(rel, child.name);
        await add(node, name);
        if (node.type === 'dir') dirs.push({ ino: child.ino, rel: name, depth: depth + 1 });
        options.progress?.(writer.entryCount, fileBytes);
      }
      for (const d of dirs.reverse()) stack.push(d);
    }
  }
  const sizeBytes = await writer.finish();
  return { entryCount: writer.entryCount, sizeBytes, fileBytes, skipped };
}

// ---------------------------------------------------------------------------------------------
// Checkpoints

export interface CheckpointReport {
  readonly archives: readonly WrittenArchive[];
  readonly versionCount: number;
  readonly blockCount: number;
  /** Versions left out (plain-zip entries: those zips stay in the sync dir and carry themselves). */
  readonly skipped: readonly string[];
}

export interface CheckpointOptions {
  readonly syncDir: string;
  /** This machine's boxid: the writer of versions whose machine the view does not know. */
  readonly boxid: string;
  /** The keyring of an encrypted sync dir (seal with its current key), undefined for a plain one. */
  readonly keyring: Keyring | undefined;
  /** Only versions of this path, below it, and of its ancestors ('' = everything). */
  readonly subPath: string;
  readonly compressionLevel?: number;
  readonly progress?: Progress;
  /** Per-archive limits (tests make them small); default the limits in limits.ts. */
  readonly limits?: CheckpointLimits;
}

export interface CheckpointLimits {
  readonly versionCountMax: number;
  readonly blockCountMax: number;
  readonly idxSizeSoftMaxBytes: number;
}

const checkpointLimitsDefault: CheckpointLimits = {
  versionCountMax: checkpointVersionCountMax, blockCountMax: checkpointBlockCountMax, idxSizeSoftMaxBytes: checkpointIdxSizeSoftMaxBytes,
};


function inScope(path: string, subPath: string): boolean {
  return subPath === '' || path === '' || path === subPath || path.startsWith(`${subPath}/`) || subPath.startsWith(`${path}/`);
}

function fileVersionOf(meta: VersionMeta, flat: Uint8Array): FileVersion {
  return {
    path: meta.path, type: meta.type, mode: meta.mode, uid: meta.uid, gid: meta.gid, rdev: meta.rdev, mtimeNs: BigInt(meta.mtimeNs),
    sizeBytes: meta.sizeBytes, symlinkTarget: meta.symlinkTarget, xattrs: meta.xattrs.map(([name, value]) => ({ name, value: Uint8Array.from(value) })),
    deleted: meta.deleted, stamp: meta.stamp, base: meta.base,
    blockRuns: meta.type === 'file' && !meta.deleted ? blockRunsFromIds(flat) : [],
  };
}

interface Draft {
  readonly version: FileVersion;
  readonly flat: Uint8Array;
}

/** Every head version in scope with its flat block list, grouped by the machine that made it. */
function collectHeads(view: SyncView, options: CheckpointOptions): { byMachine: Map<string, Draft[]>; skipped: string[] } {
  const state = view.engine.state;
  const byMachine = new Map<string, Draft[]>();
  const skipped: string[] = [];
  const seen = new Set<string>();
  for (const path of ['', ...state.pathsBelow('')]) {
    if (!inScope(path, options.subPath)) continue;
    for (const meta of state.pathRecord(path).versions) {
      if (meta.stamp.counter === 0) {
        skipped.push(`${path}: comes from a plain zip, which stays in the sync dir as it is; left out`);
        continue;
      }
      const key = `${meta.stamp.counter}:${meta.stamp.boxid}`;
      if (seen.has(key)) continue;
      seen.add(key);
      const flat = meta.type === 'file' && !meta.deleted ? state.flatList(meta.stamp) : new Uint8Array(0);
      if (flat === undefined) throw new FsError('ASSERT', `no block list for version ${key} of ${path}`);
      const machine = state.replicaBoxid(meta.stamp.boxid) ?? options.boxid;
      const list = byMachine.get(machine) ?? [];
      list.push({ version: fileVersionOf(meta, flat), flat });
      byMachine.set(machine, list);
    }
  }
  return { byMachine, skipped };
}

/** Encoded size of one version record (the idx codec's own count, without header and trailer). */
function versionRecordBytes(version: FileVersion): number {
  const empty = { archiveName: '', writerBoxid: '', createdNs: 0n, encrypted: false, zipSizeBytes: 0 };
  return idxSizeBytes({ header: empty, versions: [version], blocks: [] }) - idxSizeBytes({ header: empty, versions: [], blocks: [] });
}

/** Splits one machine's drafts into archives under the limits; each block goes with the first version needing it. */
function planArchives(drafts: readonly Draft[], shipped: Set<string>, limits: CheckpointLimits): { drafts: Draft[]; blocks: Buffer[] }[] {
  const plans: { drafts: Draft[]; blocks: Buffer[] }[] = [];
  let current: { drafts: Draft[]; blocks: Buffer[] } | undefined;
  let idxBytes = 0;
  for (const draft of drafts) {
    const recordBytes = versionRecordBytes(draft.version);
    if (current === undefined || current.drafts.length >= limits.versionCountMax || idxBytes + recordBytes > limits.idxSizeSoftMaxBytes) {
      current = { drafts: [], blocks: [] };
      plans.push(current);
      idxBytes = 0;
    }
    current.drafts.push(draft);
    idxBytes += recordBytes;
    for (let slot = 0; slot < draft.flat.length / blockIdBytes; slot++) {
      if (isZeroId(draft.flat, slot)) continue;
      const id = Buffer.from(draft.flat.subarray(slot * blockIdBytes, (slot + 1) * blockIdBytes));
      const hex = id.toString('hex');
      if (shipped.has(hex)) continue;
      shipped.add(hex);
      if (current.blocks.length >= limits.blockCountMax) {
        // A file larger than one archive's blocks: the rest of its blocks go into the next
        // archive of the checkpoint; importers wait until every block a version needs is known.
        current = { drafts: [], blocks: [] };
        plans.push(current);
        idxBytes = 0;
      }
      current.blocks.push(id);
    }
  }
  return plans;
}

/**
 * Publishes a checkpoint of the view into the sync dir (see the file comment). Returns the
 * archives written; nothing is written when the view has no versions in scope.
 */
export async function writeCheckpoint(view: SyncView, options: CheckpointOptions): Promise<CheckpointReport> {
  const limits = options.limits ?? checkpointLimitsDefault;
  assert(limits.versionCountMax >= 1 && limits.versionCountMax <= checkpointVersionCountMax, 'checkpoint version limit');
  assert(limits.blockCountMax >= 1 && limits.blockCountMax <= checkpointBlockCountMax, 'checkpoint block limit');
  assert(limits.idxSizeSoftMaxBytes >= 1 && limits.idxSizeSoftMaxBytes <= checkpointIdxSizeSoftMaxBytes, 'checkpoint idx size limit');
  const { byMachine, skipped } = collectHeads(view, options);
  const state = view.engine.state;
  const keyring = options.keyring;
  const reader = new ArchiveBlockReader(options.syncDir, state, () => keyring?.keys);
  const archives: WrittenArchive[] = [];
  const shipped = new Set<string>();
  let versionCount = 0;
  let bytes = 0;
  try {
    for (const [machine, drafts] of [...byMachine].sort(([a], [b]) => (a < b ? -1 : 1))) {
      // Parents first: a peer installs shallow paths first anyway, this keeps the idx readable.
      drafts.sort((a, b) => (a.version.path < b.version.path ? -1 : a.version.path > b.version.path ? 1 : 0));
      for (const plan of planArchives(drafts, shipped, limits)) {
        const payloads = function* (): Generator<BlockPayload> {
          for (const id of plan.blocks) {
            const stored = state.block(id);
            if (stored === undefined) throw new FsError('ASSERT', `block ${id.toString('hex')} is in no known archive`);
            const data = reader.readBlock(archivePointer(id, stored.location.sizeBytes, stored.archive), 0, 0);
            bytes += data.length;
            yield { blockId: id, data };
          }
        };
        archives.push(await writeOneArchive(options, machine, plan.drafts.map((d) => d.version), payloads()));
        versionCount += plan.drafts.length;
        options.progress?.(versionCount, bytes);
      }
    }
  } finally {
    reader.close();
  }
  return { archives, versionCount, blockCount: shipped.size, skipped };
}

async function writeOneArchive(options: CheckpointOptions, writerBoxid: string, versions: FileVersion[], blocks: Iterable<BlockPayload>): Promise<WrittenArchive> {
  const name = newArchiveName();
  const keyring = options.keyring;
  const seal = keyring === undefined ? undefined : { key: keyring.keys.get(keyring.currentKeyId)!, keyId: keyring.currentKeyId, archiveName: name };
  const zipOptions = { compressionLevel: options.compressionLevel ?? 6 };
  let locations: BlockLocation[] = [];
  return writeArchive(options.syncDir, {
    name,
    writeZip: async (tempPath) => {
      locations = seal === undefined
        ? (await writeBlockZipFile(tempPath, blocks, zipOptions)).locations
        : (await writeSealedFile(tempPath, { ...seal, kind: 'zip' }, (sink) => writeBlockZip(blocks, sink, zipOptions))).result.locations;
    },
    ...(seal === undefined ? {} : { sealIdx: (idxBytes: Uint8Array) => sealFile(idxBytes, { ...seal, kind: 'idx' }) }),
    idx: (zipSizeBytes): Idx => ({
      header: { archiveName: name, writerBoxid, createdNs: BigInt(Date.now()) * 1_000_000n, encrypted: seal !== undefined, zipSizeBytes },
      versions,
      blocks: locations,
    }),
  });
}

/** Bytes of a file as the view shows it (for `--cat`): FsError ENOENT / EISDIR when it is not a file. */
export function readViewFile(view: SyncView, path: string): { sizeBytes: number; read: (offset: number, length: number) => Buffer } {
  const port = view.engine.port;
  const ino = port.lookup(path);
  if (ino === undefined) throw new FsError('ENOENT', 'not in the tree (at that time)', path);
  const node = port.node(ino);
  if (node === undefined) throw new FsError('ENOENT', 'vanished', path);
  if (node.type === 'symlink') return { sizeBytes: Buffer.byteLength(node.symlinkTarget), read: () => Buffer.from(node.symlinkTarget) };
  if (node.type !== 'file') throw new FsError('EISDIR', `a ${node.type}, not a file`, path);
  return { sizeBytes: node.sizeBytes, read: (offset, length) => view.fs.read(ino, offset, length) };
}

/** Bytes of one version by its flat block list (for `--cat --version`), read from the archives. */
export function readVersionBlocks(view: SyncView, keys: ReadonlyMap<string, Uint8Array> | undefined, stamp: { counter: number; boxid: string }, sizeBytes: number,
  syncDir: string): Generator<Buffer> {
  const state = view.engine.state;
  const flat = state.flatList(stamp);
  if (flat === undefined) throw new FsError('ENOENT', `version ${stamp.counter}:${stamp.boxid} is not known (an archive it needs is missing?)`);
  const reader = new ArchiveBlockReader(syncDir, state, () => keys);
  return (function* (): Generator<Buffer> {
    try {
      for (let slot = 0; slot * blockSizeBytes < sizeBytes; slot++) {
        const want = Math.min(blockSizeBytes, sizeBytes - slot * blockSizeBytes);
        const block = Buffer.alloc(want);
        if (slot < flat.length / blockIdBytes && !isZeroId(flat, slot)) {
          const id = Buffer.from(flat.subarray(slot * blockIdBytes, (slot + 1) * blockIdBytes));
          const stored = state.block(id);
          if (stored === undefined) throw new FsError('EIO', `block ${id.toString('hex')} is in no archive here`);
          reader.readBlock(archivePointer(id, stored.location.sizeBytes, stored.archive), 0, slot).copy(block, 0, 0, want);
        }
        yield block;
      }
    } finally {
      reader.close();
    }
  })();
}
