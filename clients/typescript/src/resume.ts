/**
 * resume.ts: the resume layer's bookkeeping (issue 10, seed 003's connectivity; a port of
 * crates/client/src/resume.rs), kept apart from the machine's flow so a reader finds it in
 * one place: the local token, the numbered frames this client sent and keeps until the
 * server acknowledges them (with what the application queued while disconnected), the last
 * server `seq` received and when to acknowledge it, the pacing of numbered sends under the
 * server's rate limit, and which closes are never resumed.
 *
 * Everything here is sans-IO and clock-free: times are the numbers (ms on a monotonic
 * clock) the machine passes in. The link states themselves (`LinkState`) are in events.ts.
 */
import { CLOSE_CODE, TOKEN_LEN, numberFrame } from "./protocol.js";

const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/** The platform's CSPRNG, if it has one (browsers, Node 20, React Native with a polyfill). */
function cryptoFill(): ((bytes: Uint8Array) => void) | undefined {
  const c = (globalThis as { crypto?: { getRandomValues?: (a: Uint8Array) => Uint8Array } }).crypto;
  if (c && typeof c.getRandomValues === "function") {
    const get = c.getRandomValues.bind(c);
    return (bytes) => {
      get(bytes);
    };
  }
  return undefined;
}

/**
 * A fresh local token: 32 characters of `[A-Za-z0-9]` from `crypto.getRandomValues`
 * (unbiased: bytes of 248 and above are drawn again), or from `random` where the platform
 * has no CSPRNG.
 */
export function localToken(random: () => number): string {
  const fill = cryptoFill();
  let token = "";
  if (fill) {
    const bytes = new Uint8Array(64);
    try {
      while (token.length < TOKEN_LEN) {
        fill(bytes);
        for (const b of bytes) {
          if (b < 248 && token.length < TOKEN_LEN) token += ALPHABET[b % 62];
        }
      }
      return token;
    } catch {
      // A stub that throws (a platform without a real CSPRNG): fall back to `random`.
      token = "";
    }
  }
  while (token.length < TOKEN_LEN) {
    token += ALPHABET[Math.min(Math.floor(random() * 62), 61)];
  }
  return token;
}

/**
 * Whether a close with `code` ends this client's place for good, so it is never resumed:
 * 4000 (`replaced`: another socket resumed this token), 1009 (a frame too large: the resend
 * would repeat it), 1002 and 1007 (framing violations). Every other close, 1000 `heartbeat
 * timeout` and 1008 (rate limit, slow consumer) included, is resumed unless the frame
 * before it said otherwise (own `leave`, `kicked`, `session_closed`).
 */
export function closeEndsPlace(code: number | undefined): boolean {
  return (
    code === CLOSE_CODE.REPLACED ||
    code === CLOSE_CODE.MESSAGE_TOO_BIG ||
    code === CLOSE_CODE.PROTOCOL_ERROR ||
    code === CLOSE_CODE.INVALID_PAYLOAD
  );
}

/**
 * The `details.lastSeq` of a server `error` on a numbered connection (a gap, or
 * `rate_limited`): the last client `seq` the server processed.
 */
export function lastSeqOf(details: unknown): number | undefined {
  if (typeof details !== "object" || details === null || Array.isArray(details)) return undefined;
  const last = (details as Record<string, unknown>)["lastSeq"];
  return typeof last === "number" && Number.isSafeInteger(last) && last >= 0 ? last : undefined;
}

/**
 * The numbered frames this client sends, from the `welcome` of a resumable connection on.
 *
 * Each frame gets its `seq` when the application gives it (connected or not), stays here
 * until the server acknowledges it (`ack`, or `resumed.lastSeq`), and is put on the current
 * socket in order, as the pacer allows. Frames given while no numbering exists (a fresh
 * join after a refused resume, a plain reconnection) wait unnumbered in `waiting`.
 */
export class Outbox {
  /** Numbered frames not acknowledged, in seq order, plain: `frames[i]` has seq `first + i`. */
  private frames: string[] = [];
  /** The seq of `frames[0]` (one above the last acknowledged). */
  private first = 1;
  /** The next seq to put on the current socket; `null` while there is no socket to send on. */
  private next: number | null = null;
  /** The highest seq ever sent, on any socket. */
  private sentUpTo = 0;
  /** Frames given while no numbering exists, plain, in order. */
  private waiting: string[] = [];
  /** Whether numbering exists (a resumable connection was welcomed and not given up). */
  private numbered = false;

  /**
   * Numbering starts (a resumable `welcome`): seq 1 is the first frame; what waited is
   * numbered first, in order. Sending starts on the current socket.
   */
  start(): void {
    this.frames = this.waiting;
    this.waiting = [];
    this.first = 1;
    this.sentUpTo = 0;
    this.next = 1;
    this.numbered = true;
  }

  /** Whether numbering exists. */
  isNumbered(): boolean {
    return this.numbered;
  }

  /** Frames held: unacknowledged, unsent and waiting. */
  get length(): number {
    return this.frames.length + this.waiting.length;
  }

  /** Adds a frame from the application, numbered if numbering exists. */
  push(plain: string): void {
    if (this.numbered) this.frames.push(plain);
    else this.waiting.push(plain);
  }

  /** The last seq given out (0 if none). */
  lastSeq(): number {
    return this.first + this.frames.length - 1;
  }

  /** Whether a frame is ready for the current socket. */
  hasUnsent(): boolean {
    return this.next !== null && this.next <= this.lastSeq();
  }

  /** The next frame for the current socket, numbered, if any: it counts as sent. */
  nextFrame(): string | undefined {
    const n = this.next;
    if (n === null || n > this.lastSeq()) return undefined;
    const plain = this.frames[n - this.first];
    if (plain === undefined) return undefined;
    this.next = n + 1;
    this.sentUpTo = Math.max(this.sentUpTo, n);
    return numberFrame(n, plain);
  }

  /**
   * The server processed everything up to `seq` (an `ack`): those frames are dropped. A
   * seq above what was ever sent is a server's mistake and acknowledges only what was.
   */
  acknowledge(seq: number): void {
    const upTo = Math.min(seq, this.sentUpTo);
    const drop = Math.max(0, Math.min(upTo - this.first + 1, this.frames.length));
    if (drop > 0) {
      this.frames.splice(0, drop);
      this.first += drop;
    }
    if (this.frames.length === 0) this.first = Math.max(this.first, upTo + 1);
    if (this.next !== null) this.next = Math.max(this.next, this.first);
  }

  /**
   * The server asks for everything after `last` again (a gap, `rate_limited`): what it
   * processed is dropped and the current socket goes back to `last + 1`. Returns whether
   * anything is to be resent.
   */
  rewind(last: number): boolean {
    if (last > this.sentUpTo) return false;
    this.acknowledge(last);
    if (this.next !== null && this.next > last + 1) {
      this.next = last + 1;
      return true;
    }
    return false;
  }

  /** The socket is gone: nothing is sent until the next one is resumed. */
  socketLost(): void {
    this.next = null;
  }

  /**
   * The resume succeeded and the server processed up to `last`: everything after it is
   * sent again on the new socket, in order, with its original seq. A `last` above what was
   * ever sent (a broken server) counts as everything sent: what was queued while away still
   * goes out (the Rust `resumed` takes `last + 1` as it comes and would skip it).
   */
  resumed(last: number): void {
    this.acknowledge(last);
    this.next = Math.max(this.first, Math.min(last, this.sentUpTo) + 1);
  }

  /**
   * The numbering ends (a refused resume, a close that ends the place, a plain
   * reconnection): frames sent but never acknowledged are dropped (they may or may not have
   * arrived; sending them again under new numbering could double them) and their count
   * returned; frames never sent wait, unnumbered, for the next connection.
   */
  giveUp(): number {
    const sent = Math.min(Math.max(this.sentUpTo - (this.first - 1), 0), this.frames.length);
    const unsent = this.frames.slice(sent);
    this.waiting = unsent.concat(this.waiting);
    this.frames = [];
    this.first = 1;
    this.sentUpTo = 0;
    this.next = null;
    this.numbered = false;
    return sent;
  }

  /** Takes the waiting frames, to send plain on a connection without numbering. */
  takeWaiting(): string[] {
    const waiting = this.waiting;
    this.waiting = [];
    return waiting;
  }

  /** Drops everything (the client ended). */
  clear(): void {
    this.frames = [];
    this.first = 1;
    this.next = null;
    this.sentUpTo = 0;
    this.waiting = [];
    this.numbered = false;
  }
}

/** What to do with a numbered server frame: handle it, or drop it as already received. */
export type Arrival = "new" | "duplicate";

/** The server's numbered frames as received: the last `seq`, duplicates, and when to ack. */
export class Inbox {
  /** The last server seq received (0: none). */
  private lastReceived = 0;
  /** The last seq acknowledged (sent in an `ack`, or as a resume's `lastSeq`). */
  private acked = 0;
  /** When the pending acknowledgement must go out at the latest. */
  private due: number | null = null;

  /** A numbered frame `seq` arrived at `now`; the first unacknowledged one starts the ack clock. */
  arrive(seq: number, now: number, interval: number): Arrival {
    if (seq <= this.lastReceived) return "duplicate";
    // A seq that skips ahead is taken too: the server never skips, and there is nothing to
    // ask for on this socket.
    this.lastReceived = seq;
    if (this.due === null) this.due = now + interval;
    return "new";
  }

  /** The last server seq received (a resume's `lastSeq`). */
  last(): number {
    return this.lastReceived;
  }

  /**
   * The seq to acknowledge now, if an `ack` is due: `every` frames arrived since the last
   * one, or the interval passed since the first of them.
   */
  ackDue(now: number, every: number): number | undefined {
    const pending = this.lastReceived - this.acked;
    const due = pending >= Math.max(every, 1) || (this.due !== null && this.due <= now);
    if (pending > 0 && due) {
      this.acked = this.lastReceived;
      this.due = null;
      return this.lastReceived;
    }
    return undefined;
  }

  /** When an `ack` will be due if nothing else arrives. */
  deadline(): number | null {
    return this.due;
  }

  /** A resume sent `lastSeq` = everything received: that acknowledges it. */
  resumeSent(): void {
    this.acked = this.lastReceived;
    this.due = null;
  }

  /** A new numbering starts (a resumable `welcome`), or it ended. */
  reset(): void {
    this.lastReceived = 0;
    this.acked = 0;
    this.due = null;
  }
}

/** A token bucket for numbered sends: `rate` per second on average, `burst` at once. */
export class Pacer {
  private readonly rate: number;
  private readonly burst: number;
  private tokens: number;
  private at: number;

  /** A full bucket at `now`. */
  constructor(rate: number, burst: number, now: number) {
    this.rate = Math.max(rate, 1);
    this.burst = Math.max(burst, 1);
    this.tokens = this.burst;
    this.at = now;
  }

  /** Full again (a new socket: the server's bucket is per socket). */
  refill(now: number): void {
    this.tokens = this.burst;
    this.at = now;
  }

  private update(now: number): void {
    const elapsedSeconds = Math.max(now - this.at, 0) / 1000;
    this.tokens = Math.min(this.tokens + elapsedSeconds * this.rate, this.burst);
    this.at = Math.max(now, this.at);
  }

  /** Takes one send if the bucket allows it now. */
  take(now: number): boolean {
    this.update(now);
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return true;
    }
    return false;
  }

  /** When the next send will be allowed (a microsecond past it, so a timer then finds the token). */
  readyAt(): number {
    if (this.tokens >= 1) return this.at;
    const waitSeconds = (1 - this.tokens) / this.rate;
    return this.at + (Math.ceil(waitSeconds * 1e6) + 1) / 1000;
  }
}
