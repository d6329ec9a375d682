/**
 * pairing/updates.ts: what a `PairingClient` tells the application (`PairingUpdate`, one
 * discriminated union on `type`: the machine's events, the crSocket states and metastates
 * among them, and the driver's own: welcome, aborted, connectFailed, disconnected, error),
 * its snapshot, and the hub that delivers updates in order to `on` / `onAny` listeners and
 * `events()` iterators. A listener's command only queues more updates (no re-entry), and a
 * listener that throws does not stop the others nor the client: its error is reported with
 * `console.error`, as the session client's are (emitter.ts).
 */
import type { ServerError } from "../events.js";
import type { PairingEvent, PairingIncomingEvent, PairingMetastates, PairingState } from "./machine.js";
import type { PairingAbortReason } from "./frames.js";

/** An application event from the partner, with the fields of its `cr_event`. */
export interface PairingReceivedEvent {
  /** The sender's client id (the partner's), as the server stamped it. */
  sender: string;
  /** The application's event type. */
  eventType: string;
  /** The subtype (`""` if none). */
  subType: string;
  /** The parameters. */
  params: string[];
  /** The sender's `buffered` flag. */
  buffered: boolean;
  /** The sender's `logged` flag. */
  logged: boolean;
  /** The sender's `interceptable` flag. */
  interceptable: boolean;
  /** The sender's clock when it sent the event (ms), if it said. */
  sendCt: number | null;
  /** This client's clock when the event arrived (Unix ms): the `receiveCt` left to the SDK. */
  receiveCt: number;
}

/** What a `PairingClient` tells the application, in order. */
export type PairingUpdate =
  /** The machine's state changed. */
  | { type: "stateChanged"; state: PairingState }
  /** The metastates changed (after the `stateChanged` that caused it). */
  | { type: "metastatesChanged"; metastates: PairingMetastates }
  /** The partner changed (assigned, auto-paired, unassigned: `null`). */
  | { type: "partnerChanged"; partner: string | null }
  /** The partner (or the server, for a ping to it) rejected this client; now readyToPair. */
  | { type: "rejected"; partner: string; subType: string }
  /** This client's id changed (the server assigned one, or named another). */
  | { type: "clientIdChanged"; clientId: string }
  /** An application event from the partner. */
  | { type: "appEvent"; event: PairingReceivedEvent }
  /** A `cr_welcome`: the identify was accepted (every connection, reconnections too). */
  | { type: "welcome"; appId: string; clientId: string }
  /** A `cr_aborted`: no reconnection until `retry`, a new token or a passive/active cycle. */
  | { type: "aborted"; reason: PairingAbortReason }
  /** A connection attempt failed; another follows after the reconnect delay. */
  | { type: "connectFailed"; reason: string }
  /** An open connection ended without `cr_aborted`; reconnection follows while connecting. */
  | { type: "disconnected"; reason: string }
  /** An `error` frame the server sent (`invalid_message`, `too_large`, `rate_limited`, ...). */
  | { type: "error"; error: ServerError };

/** The `type`s of `PairingUpdate`. */
export type PairingUpdateType = PairingUpdate["type"];
/** The `PairingUpdate` of type `T`. */
export type PairingUpdateOf<T extends PairingUpdateType> = Extract<PairingUpdate, { type: T }>;

/** What a `PairingClient` currently knows. */
export interface PairingSnapshot {
  /** The machine's state. */
  state: PairingState;
  /** Its metastates. */
  metastates: PairingMetastates;
  /** This client's id, once it has one. */
  clientId: string | null;
  /** The assigned partner, if any (rejected or not). */
  partner: string | null;
  /** The subtype the partner is flagged rejected with, if it is. */
  rejected: string | null;
  /** The last abort reason, while it holds the client back from connecting. */
  aborted: PairingAbortReason | null;
}

/** The `cr_event` fields of the frame being handled, for the received event it may become. */
export interface PairingArrival {
  buffered: boolean;
  logged: boolean;
  interceptable: boolean;
  sendCt: number | null;
  receiveCt: number;
}

/** A machine event as an update; `arrival` completes an application event from the frame just read. */
export function pairingUpdateOf(event: PairingEvent, arrival: PairingArrival | null): PairingUpdate {
  if (event.type !== "appEvent") return event;
  const e: PairingIncomingEvent = event.event;
  return {
    type: "appEvent",
    event: {
      sender: e.sender,
      eventType: e.eventType,
      subType: e.subType,
      params: e.params,
      buffered: arrival?.buffered ?? false,
      logged: arrival?.logged ?? false,
      interceptable: arrival?.interceptable ?? true,
      sendCt: arrival?.sendCt ?? null,
      receiveCt: arrival?.receiveCt ?? Date.now(),
    },
  };
}

/** Delivers updates in order to listeners and iterators (see the module comment). */
export class PairingUpdateHub {
  private pending: PairingUpdate[] = [];
  private dispatching = false;
  private ended = false;
  private readonly listeners = new Set<(update: PairingUpdate) => void>();
  private readonly iterators = new Set<{ push: (u: PairingUpdate) => void; end: () => void }>();

  /** Queues `update`; `dispatch` delivers it. */
  emit(update: PairingUpdate): void {
    this.pending.push(update);
  }

  /** Calls `listener` with every update; returns the unsubscribe function. */
  onAny(listener: (update: PairingUpdate) => void): () => void {
    const wrapped = (update: PairingUpdate): void => listener(update);
    this.listeners.add(wrapped);
    return () => {
      this.listeners.delete(wrapped);
    };
  }

  /** Every update from this call on, buffered; ends after `end()`. */
  events(): AsyncIterableIterator<PairingUpdate> {
    const buffer: PairingUpdate[] = [];
    const waiting: Array<(r: IteratorResult<PairingUpdate>) => void> = [];
    let ended = this.ended;
    const entry = {
      push: (u: PairingUpdate): void => {
        const w = waiting.shift();
        if (w) w({ value: u, done: false });
        else buffer.push(u);
      },
      end: (): void => {
        ended = true;
        this.iterators.delete(entry);
        for (const w of waiting.splice(0)) w({ value: undefined, done: true });
      },
    };
    if (!ended) this.iterators.add(entry);
    const iterator: AsyncIterableIterator<PairingUpdate> = {
      next: () => {
        const u = buffer.shift();
        if (u !== undefined) return Promise.resolve({ value: u, done: false });
        if (ended) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => waiting.push(resolve));
      },
      return: () => {
        entry.end();
        buffer.length = 0;
        return Promise.resolve({ value: undefined, done: true });
      },
      [Symbol.asyncIterator]: () => iterator,
    };
    return iterator;
  }

  /** Delivers the queued updates in order. */
  dispatch(): void {
    if (this.dispatching) return;
    this.dispatching = true;
    try {
      for (let u = this.pending.shift(); u !== undefined; u = this.pending.shift()) {
        for (const it of this.iterators) it.push(u);
        for (const listener of [...this.listeners]) {
          try {
            listener(u);
          } catch (error) {
            // Reported, never rethrown (an uncaught exception ends a Node process), as the
            // session client's listeners (emitter.ts).
            globalThis.console?.error?.(`loudsync-client: a "${u.type}" pairing listener threw:`, error);
          }
        }
      }
    } finally {
      this.dispatching = false;
    }
  }

  /** Delivers what is queued, then ends every iterator (after their buffered updates). */
  end(): void {
    this.dispatch();
    this.ended = true;
    for (const it of [...this.iterators]) it.end();
  }
}
