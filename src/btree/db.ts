/**
 * The memory-mapped B+Tree: one LMDB environment (lmdb package) with one named database per
 * table of keys.ts, all with binary keys and values. One filesystem operation is one call of
 * `transaction`, which commits synchronously but without fsync (LMDB `noSync`): commits are
 * visible at once and survive a killed process (they are in the page cache); `sync()` makes
 * everything committed so far durable, and is called by fsync and by the write-back timer.
 * Decision and its cost are in docs/ARCHITECTURE.md ("Durability").
 */
import { mkdirSync } from 'node:fs';
import { open, type Database, type RootDatabase } from 'lmdb';
import { fsError, isFsError, type FsError } from '../errors.js';
import { lmdbMapSizeBytes } from '../limits.js';
import { tableNames, type TableName } from './keys.js';

export type Table = Database<Buffer, Buffer>;

export interface BtreeOptions {
  readOnly?: boolean;
}

/** An open LMDB environment with its tables. */
export class Btree {
  readonly path: string;
  private readonly root: RootDatabase<Buffer, Buffer>;
  private readonly tables: Map<TableName, Table>;
  private transactionDepth = 0;

  private constructor(path: string, root: RootDatabase<Buffer, Buffer>, tables: Map<TableName, Table>) {
    this.path = path;
    this.root = root;
    this.tables = tables;
  }

  /** Opens (creating if absent) the environment in directory `path`. */
  static open(path: string, options: BtreeOptions = {}): Btree {
    mkdirSync(path, { recursive: true });
    let root: RootDatabase<Buffer, Buffer>;
    try {
      root = open<Buffer, Buffer>({
        path,
        maxDbs: 16,
        mapSize: lmdbMapSizeBytes,
        noSync: true,
        keyEncoding: 'binary',
        encoding: 'binary',
        readOnly: options.readOnly ?? false,
        cache: false,
      });
    } catch (e) {
      throw fsError('CORRUPT', `cannot open LMDB environment: ${(e as Error).message}`, path, e);
    }
    const tables = new Map<TableName, Table>();
    for (const name of Object.keys(tableNames) as TableName[]) {
      tables.set(name, root.openDB<Buffer, Buffer>({ name: tableNames[name], keyEncoding: 'binary', encoding: 'binary', cache: false }));
    }
    return new Btree(path, root, tables);
  }

  /** The table called `name`. */
  table(name: TableName): Table {
    const table = this.tables.get(name);
    if (table === undefined) throw fsError('ASSERT', `no table ${name}`);
    return table;
  }

  /** Runs `action` in one write transaction and commits it (visible at once, durable at sync()). */
  transaction<T>(action: () => T): T {
    this.transactionDepth++;
    try {
      return this.root.transactionSync(action);
    } catch (e) {
      throw spaceError(e, 'LMDB commit failed', this.path) ?? e;
    } finally {
      this.transactionDepth--;
    }
  }

  /** True inside transaction(): reads then see writes that may still roll back. */
  get inTransaction(): boolean {
    return this.transactionDepth > 0;
  }

  /** Makes every committed transaction durable (fsync of the LMDB files). */
  sync(): Promise<void> {
    return new Promise((resolve, reject) => {
      (this.root as unknown as { sync(cb: (e?: Error) => void): void }).sync((error?: Error) => {
        if (error) reject(spaceError(error, 'LMDB sync failed', this.path) ?? fsError('EIO', `LMDB sync failed: ${error.message}`, this.path, error));
        else resolve();
      });
    });
  }

  /** Closes the environment. Committed transactions stay committed; call sync() first for durability. */
  async close(): Promise<void> {
    await this.root.close();
  }
}

/** errno ENOSPC and LMDB's MDB_MAP_FULL, as the lmdb package reports them (a numeric `code`). */
const enospcErrno = 28;
const mdbMapFull = -30792;

/**
 * An LMDB failure for lack of space as FsError ENOSPC, or undefined for any other error. The
 * lmdb package throws a plain Error whose `code` is the errno *number* (28 when a page write
 * hits a full disk), which the FUSE edge would otherwise turn into EIO.
 */
function spaceError(e: unknown, what: string, place: string): FsError | undefined {
  if (isFsError(e)) return undefined;
  const code = (e as { code?: unknown } | undefined)?.code;
  const message = e instanceof Error ? e.message : String(e);
  const full = code === enospcErrno || code === 'ENOSPC' || code === mdbMapFull || /No space left on device|MDB_MAP_FULL/.test(message);
  return full ? fsError('ENOSPC', `${what}: ${message}`, place, e) : undefined;
}
