// timers.ts -- the loop's JavaScript timers: a binary min-heap of Timer
// objects ordered by (deadline, arming sequence), so that timers due at the
// same instant fire in the order they were armed, and ONE core timer, the
// alarm, armed to the heap's nearest deadline.
//
// Why not one core timer per Timer: every call into the binding costs about
// 65 ns, and a schedule-and-cancel pair made two of them. Here setTimeout and
// clearTimeout touch only this heap. The alarm moves only when a timer becomes
// due earlier than it; a cleared or refreshed timer leaves it where it is, and
// an alarm that finds nothing due just re-arms itself for the new nearest
// deadline. Deadlines are performance.now() milliseconds read at the call,
// and a timer fires only once performance.now() has reached its deadline:
// never early.
import { binding } from './binding';
import { performance } from 'node:perf_hooks';
import { errnoException } from './errors';

export type TimerCallback = (...args: any[]) => void;

/** What the timers need of their loop: the count of handles keeping the process alive. */
export interface TimerOwner {
  _ref(): void;
  _unref(): void;
}

function rethrow(err: unknown): never {
  throw err;
}

/** A timer on the iomux loop: precise to the millisecond, never early. */
export class Timer {
  /** @internal position in the heap; -1 when not armed */ _index = -1;
  /** @internal performance.now() ms at which it is due */ _deadline = 0;
  /** @internal arming order, the tie-break between equal deadlines */ _seq = 0;
  /** @internal */ _refed = true;
  /** @internal */ _cb: TimerCallback;
  /** @internal */ _args: unknown[] | undefined;
  /** @internal */ _ms: number;
  /** @internal */ _repeat: boolean;
  /** @internal cleared by clearTimeout(): refresh() then does nothing, as in node */
  _cleared = false;
  /** @internal */ _queue: TimerQueue;

  constructor(queue: TimerQueue, cb: TimerCallback, ms: number, args: unknown[] | undefined, repeat: boolean) {
    this._queue = queue;
    this._cb = cb;
    this._ms = ms;
    this._args = args;
    this._repeat = repeat;
  }

  /** Restarts the timer from now with its original delay (re-arms a fired one). */
  refresh(): this {
    if (!this._cleared) this._queue.arm(this);
    return this;
  }

  /** @internal Re-arms the timer to fire ms from now (also a fired or cleared one). */
  _rearm(ms: number): void {
    this._ms = ms;
    this._cleared = false;
    this._queue.arm(this);
  }

  ref(): this {
    if (!this._refed) {
      this._refed = true;
      if (this._index >= 0) this._queue.owner._ref();
    }
    return this;
  }

  unref(): this {
    if (this._refed) {
      this._refed = false;
      if (this._index >= 0) this._queue.owner._unref();
    }
    return this;
  }

  hasRef(): boolean {
    return this._refed;
  }

  /** Cancels the timer (same as loop.clearTimeout(timer)). */
  close(): this {
    this._queue.clear(this);
    return this;
  }
}

function before(a: Timer, b: Timer): boolean {
  return a._deadline < b._deadline || (a._deadline === b._deadline && a._seq < b._seq);
}

export class TimerQueue {
  readonly owner: TimerOwner;
  private readonly heap: Timer[] = [];
  private seq = 0;
  /** The alarm: the core timer's id and generation (-1: none armed), and when it fires. */
  private alarmId = -1;
  private alarmGen = 0;
  private alarmAt = Infinity;
  /** onAlarm() is running the due timers: it sets the alarm once, at its end. */
  private firing = false;
  private readonly scratch = new Int32Array(1);
  /** Calls into the core that armed or moved the alarm (tests assert on it). */
  alarmCalls = 0;

  constructor(owner: TimerOwner) {
    this.owner = owner;
  }

  /** Arms (or re-arms) a timer to fire its delay from now. */
  arm(timer: Timer): void {
    timer._deadline = performance.now() + timer._ms;
    timer._seq = this.seq++;
    let i = timer._index;
    if (i < 0) {
      i = this.heap.length;
      this.heap.push(timer);
      if (timer._refed) this.owner._ref();
      this.siftUp(timer, i);
    } else {
      // A restart usually moves a timer later, but may move it earlier.
      this.siftUp(timer, i);
      this.siftDown(timer, timer._index);
    }
    if (!this.firing && timer._index === 0 && timer._deadline < this.alarmAt) this.setAlarm(timer._deadline);
  }

  /** Cancels a timer. The alarm stays where it is. */
  clear(timer: Timer): void {
    timer._repeat = false;
    timer._cleared = true;
    if (timer._index >= 0) this.remove(timer);
  }

  /** The core timer `id` of generation `gen` fired: runs the timers now due. */
  onAlarm(id: number, gen: number): void {
    if (id !== this.alarmId || gen !== this.alarmGen) return; // an alarm since replaced
    this.alarmId = -1;
    this.alarmAt = Infinity;
    const heap = this.heap;
    const now = performance.now();
    this.firing = true;
    // Timers re-armed by these callbacks are due at now + 1 ms or later, so
    // this ends; those that come due while it runs wait for the next alarm.
    while (heap.length > 0 && heap[0]!._deadline <= now) {
      const timer = heap[0]!;
      if (timer._repeat) {
        this.arm(timer);
      } else {
        this.remove(timer);
      }
      try {
        const args = timer._args;
        if (args === undefined) timer._cb();
        else timer._cb(...args);
      } catch (err) {
        process.nextTick(rethrow, err);
      }
    }
    this.firing = false;
    if (heap.length > 0) this.setAlarm(heap[0]!._deadline);
  }

  private remove(timer: Timer): void {
    const heap = this.heap;
    const i = timer._index;
    timer._index = -1;
    if (timer._refed) this.owner._unref();
    const last = heap.pop()!;
    if (last === timer) return;
    this.siftUp(last, i);
    this.siftDown(last, last._index);
  }

  // Points the core's alarm at `deadline`, rounded up to its millisecond.
  private setAlarm(deadline: number): void {
    this.alarmCalls++;
    const now = performance.now();
    const ms = Math.max(0, Math.ceil(deadline - now));
    this.alarmAt = now + ms;
    if (this.alarmId >= 0 && binding.timerRestart(this.alarmId, this.alarmGen, ms) === 0) return;
    // None armed, or it expired in the batch being delivered and its record
    // is still ahead: that record no longer matches and is ignored.
    const id = binding.timerStart(ms, this.scratch);
    if (id < 0) {
      this.alarmId = -1;
      this.alarmAt = Infinity;
      throw errnoException(-id, 'timer');
    }
    this.alarmId = id;
    this.alarmGen = this.scratch[0]!;
  }

  private siftUp(timer: Timer, i: number): void {
    const heap = this.heap;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const p = heap[parent]!;
      if (!before(timer, p)) break;
      heap[i] = p;
      p._index = i;
      i = parent;
    }
    heap[i] = timer;
    timer._index = i;
  }

  private siftDown(timer: Timer, i: number): void {
    const heap = this.heap;
    const n = heap.length;
    for (;;) {
      let child = 2 * i + 1;
      if (child >= n) break;
      if (child + 1 < n && before(heap[child + 1]!, heap[child]!)) child++;
      const c = heap[child]!;
      if (!before(c, timer)) break;
      heap[i] = c;
      c._index = i;
      i = child;
    }
    heap[i] = timer;
    timer._index = i;
  }
}
