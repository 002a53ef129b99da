/**
 * Progress of a transfer on a terminal: one line on stderr, rewritten in place (files and bytes
 * done of the total, up or down), at most ten times a second. Nothing is written when stderr is
 * not a TTY (a daemon under systemd, a test): `createProgress` returns undefined then.
 */

export interface Progress {
  begin(direction: 'up' | 'down', fileCount: number, totalBytes: number, sizeOf: (path: string) => number): void;
  fileDone(path: string): void;
  end(): void;
}

function mib(bytes: number): string {
  return (bytes / (1024 * 1024)).toFixed(1);
}

class TtyProgress implements Progress {
  private direction: 'up' | 'down' = 'up';
  private fileCount = 0;
  private totalBytes = 0;
  private doneFiles = 0;
  private doneBytes = 0;
  private sizeOf: (path: string) => number = () => 0;
  private lastDrawMs = 0;
  private active = false;

  constructor(private readonly stream: NodeJS.WriteStream) {}

  begin(direction: 'up' | 'down', fileCount: number, totalBytes: number, sizeOf: (path: string) => number): void {
    Object.assign(this, { direction, fileCount, totalBytes, sizeOf, doneFiles: 0, doneBytes: 0, active: true });
    this.draw(true);
  }

  fileDone(path: string): void {
    if (!this.active) return;
    this.doneFiles++;
    this.doneBytes += this.sizeOf(path);
    this.draw(false);
  }

  end(): void {
    if (!this.active) return;
    this.draw(true);
    this.stream.write('\n');
    this.active = false;
  }

  private draw(force: boolean): void {
    const now = Date.now();
    if (!force && now - this.lastDrawMs < 100) return;
    this.lastDrawMs = now;
    const arrow = this.direction === 'up' ? 'up  ' : 'down';
    this.stream.write(`\rzippy-sync ${arrow} ${this.doneFiles}/${this.fileCount} files  ${mib(this.doneBytes)}/${mib(this.totalBytes)} MiB\x1b[K`);
  }
}

/** A progress line on `stream` when it is a TTY, else undefined. */
export function createProgress(stream: NodeJS.WriteStream = process.stderr): Progress | undefined {
  return stream.isTTY === true ? new TtyProgress(stream) : undefined;
}
