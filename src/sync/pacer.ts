/**
 * Long loops on the JS thread, which also answers FUSE requests, give the event loop a turn every
 * slice: `if (pacer.due()) await pacer.rest();` inside the loop. A request that arrives meanwhile
 * then waits at most about one slice instead of the whole loop (a GC plan held the thread 1.8 s
 * in one piece: a 1 GiB store whose LMDB pages were not in the page cache).
 */
export class Pacer {
  private sliceEndMs: number;
  private calls = 0;
  private restCount = 0;

  /** `sliceMs`: how long to work between turns (0: a turn every 64 steps; Infinity: never). */
  constructor(private readonly sliceMs: number) {
    this.sliceEndMs = performance.now() + sliceMs;
  }

  /** True when the slice is used up; cheap (it looks at the clock every 64 calls). */
  due(): boolean {
    return (++this.calls & 63) === 0 && performance.now() >= this.sliceEndMs;
  }

  /** Lets the event loop run once (waiting FUSE requests are answered), then starts a new slice. */
  async rest(): Promise<void> {
    await new Promise<void>((resolve) => setImmediate(resolve));
    this.restCount++;
    this.sliceEndMs = performance.now() + this.sliceMs;
  }

  /** Turns given so far. */
  get rests(): number {
    return this.restCount;
  }
}
