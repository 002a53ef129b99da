/**
 * Monotonic counters: inode numbers, version stamps, Lamport clocks.
 *
 * A counter hands out strictly increasing unsigned integers that stay exact in a JS number
 * (u53: at most Number.MAX_SAFE_INTEGER). Its whole state is the next value it will hand
 * out; the layer above persists that mark with the metadata that used the values, so a value
 * is never handed out twice across restarts.
 *
 * Invariants: `first <= next <= Number.MAX_SAFE_INTEGER + 1`; every value returned by take()
 * is below the current `next`.
 */
import { assert, fsError } from '../errors.js';

/** The state of a counter: the next value it will hand out. Plain data, serialisable. */
export interface CounterMark {
  readonly next: number;
}

/** Hands out strictly increasing u53 values. */
export interface CounterAllocator {
  /** Returns the next value and advances past it; throws LIMIT when the u53 range is exhausted. */
  take(): number;
  /** Returns the value take() would return next, without advancing. */
  peek(): number;
  /** Advances so that every later take() returns a value greater than `seen` (a Lamport receive). */
  observe(seen: number): void;
  /** Returns the state to persist: every value below `mark().next` may have been handed out. */
  mark(): CounterMark;
  /** Resets the counter to a mark previously returned by mark() (e.g. after an aborted transaction). */
  restore(mark: CounterMark): void;
}

/** The value a counter cannot go beyond: the last exact integer of a JS number. */
const counterValueMax = Number.MAX_SAFE_INTEGER;

/** A CounterAllocator that starts at `first` (e.g. 1 for inode numbers where 0 means "none"). */
export class MonotonicCounter implements CounterAllocator {
  readonly first: number;
  private next: number;

  /** Creates a counter whose first take() returns `first`. */
  constructor(first: number) {
    assert(Number.isSafeInteger(first) && first >= 0, `first counter value ${first} is a u53`);
    this.first = first;
    this.next = first;
  }

  /** Creates a counter that continues from `mark`; `first` bounds what marks are accepted. */
  static fromMark(mark: CounterMark, first = 0): MonotonicCounter {
    const counter = new MonotonicCounter(first);
    counter.restore(mark);
    return counter;
  }

  take(): number {
    if (this.next > counterValueMax) throw fsError('LIMIT', `counter exhausted at ${counterValueMax}`, 'counter');
    const value = this.next;
    this.next += 1;
    return value;
  }

  peek(): number {
    if (this.next > counterValueMax) throw fsError('LIMIT', `counter exhausted at ${counterValueMax}`, 'counter');
    return this.next;
  }

  observe(seen: number): void {
    assert(Number.isSafeInteger(seen) && seen >= 0, `observed counter value ${seen} is a u53`);
    // seen + 1 may be MAX_SAFE_INTEGER + 1, which is still exact; take() then reports exhaustion.
    if (seen + 1 > this.next) this.next = seen + 1;
  }

  mark(): CounterMark {
    return { next: this.next };
  }

  restore(mark: CounterMark): void {
    if (!Number.isSafeInteger(mark.next - 1) || mark.next < this.first || mark.next > counterValueMax + 1) {
      throw fsError('BAD_INPUT', `next value ${mark.next} outside ${this.first}..${counterValueMax + 1}`, 'counter mark');
    }
    this.next = mark.next;
  }
}
