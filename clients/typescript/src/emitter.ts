/**
 * emitter.ts: how the driver hands events to the application: listeners per event type
 * (`on`), listeners of every event (`onAny`) and async iterators (`events()`), each of which
 * buffers every event from its creation until it is read, and ends when the client ends.
 *
 * How it works: `deliver` first appends the event to every open iterator's buffer (waking a
 * pending `next()`), then calls the listeners of its type, then the `onAny` listeners, each on
 * a copy of the set (a listener may unsubscribe itself or others while being called). A
 * listener that throws is reported with `console.error` (every throw, naming the event type)
 * and the other listeners and the driver carry on: an application's bug must not stop the
 * heartbeat. `close` ends every iterator once its buffer is read; later `deliver`s are ignored.
 */
import type { ClientEvent, ClientEventOf, ClientEventType } from "./events.js";

/** A function that gets events. */
type Listener = (event: ClientEvent) => void;

/** The listeners and iterators of one client. */
export class EventHub {
  private readonly byType = new Map<ClientEventType, Set<Listener>>();
  private readonly anyListeners = new Set<Listener>();
  private readonly streams = new Set<EventStream>();
  private closed = false;

  /** Calls `listener` with every event of `type`; returns the function that unsubscribes it. */
  on<T extends ClientEventType>(type: T, listener: (event: ClientEventOf<T>) => void): () => void {
    let set = this.byType.get(type);
    if (!set) {
      set = new Set();
      this.byType.set(type, set);
    }
    // Only events of `type` reach this set, so the narrowing is sound.
    const wrapped = listener as Listener;
    set.add(wrapped);
    return () => {
      set.delete(wrapped);
    };
  }

  /** Calls `listener` with every event; returns the function that unsubscribes it. */
  onAny(listener: (event: ClientEvent) => void): () => void {
    this.anyListeners.add(listener);
    return () => {
      this.anyListeners.delete(listener);
    };
  }

  /** An iterator of every event from now on; it ends when the client ends (at once if it has). */
  stream(): AsyncIterableIterator<ClientEvent> {
    const stream = new EventStream(() => this.streams.delete(stream));
    if (this.closed) stream.end();
    else this.streams.add(stream);
    return stream;
  }

  /** Hands `event` to every iterator and listener. */
  deliver(event: ClientEvent): void {
    if (this.closed) return;
    for (const stream of this.streams) stream.push(event);
    const typed = this.byType.get(event.type);
    if (typed) for (const listener of [...typed]) call(listener, event);
    for (const listener of [...this.anyListeners]) call(listener, event);
  }

  /** The client ended: every iterator ends once read; nothing is delivered any more. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const stream of this.streams) stream.end();
    this.streams.clear();
  }
}

/** Calls one listener; a throw is reported, never passed on. */
function call(listener: Listener, event: ClientEvent): void {
  try {
    listener(event);
  } catch (error) {
    globalThis.console?.error?.(`loudsync-client: a "${event.type}" listener threw:`, error);
  }
}

/** One `events()` iterator: a buffer and, while it is empty, the readers waiting on it. */
class EventStream implements AsyncIterableIterator<ClientEvent> {
  private readonly buffer: ClientEvent[] = [];
  private readonly waiting: Array<(result: IteratorResult<ClientEvent>) => void> = [];
  private done = false;

  constructor(private readonly forget: () => void) {}

  /** Adds an event (to the first waiting reader, or to the buffer). */
  push(event: ClientEvent): void {
    if (this.done) return;
    const reader = this.waiting.shift();
    if (reader) reader({ value: event, done: false });
    else this.buffer.push(event);
  }

  /** No more events: waiting readers get `done`; buffered events are still read first. */
  end(): void {
    this.done = true;
    for (const reader of this.waiting.splice(0)) reader({ value: undefined, done: true });
  }

  next(): Promise<IteratorResult<ClientEvent>> {
    const event = this.buffer.shift();
    if (event !== undefined) return Promise.resolve({ value: event, done: false });
    if (this.done) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  /** Stops this iterator (a `break` out of `for await` calls it): the buffer is dropped. */
  return(): Promise<IteratorResult<ClientEvent>> {
    this.buffer.length = 0;
    this.end();
    this.forget();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<ClientEvent> {
    return this;
  }
}
