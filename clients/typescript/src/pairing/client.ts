/**
 * pairing/client.ts: the driver of the crSocket machine: one controller's or responder's
 * pairing over the WebSocket `ws(s)://HOST/crsocket/{APP}/ws` (PROTOCOL §16); a port of the
 * Rust SDK's `crates/client/src/pairing/driver.rs`.
 *
 * A `PairingClient` owns the socket, the `CrSocket` machine and ONE timer (a `setTimeout` at
 * the earliest of: the machine's `pollTimeout`, the next `cr_alive`, the silence limit, the
 * next connection attempt). After every input (a frame, a socket event, a command, the
 * timer) it settles: sends what the machine holds, tells the application what the machine
 * says (as `PairingUpdate`s, to `on` / `onAny` listeners and `events()` iterators), and
 * opens or closes the socket as the machine's state asks:
 * - a connection is opened while the machine is `connecting` (and closed when it leaves the
 *   connected states: on `passive`, after sending the `inactive` it hands over; on
 *   `readyToConnect` after an abort);
 * - `cr_identify` goes first; `cr_welcome` is the machine's `handleConnected`, `cr_aborted`
 *   its `handleAborted` (no reconnection until `retry`, a new token, or a passive/active
 *   cycle);
 * - each `cr_event` becomes a `PairingIncomingEvent` (its `receiveCt` stamped here, Unix ms)
 *   and each outgoing machine event a `cr_event` frame (its `sendCt` stamped here);
 * - `cr_alive` every `aliveIntervalMs` (12 s) once identified; a connection silent for
 *   `silenceTimeoutMs` (30 s) counts as lost; a lost one is reopened after
 *   `reconnectDelayMs` (2 s) for as long as the machine is connecting.
 * Without a `clientId` the client identifies without one (the server assigns it) and gives
 * the machine the server's id at the `cr_welcome`: an id-less client shows
 * `clientIdChanged`, `connecting`, then `welcome`, then `readyToPair`. The id is kept from
 * then on. Time is `performance.now()` (monotonic ms), stamps `Date.now()`.
 */
import type { WebSocketConstructor, WebSocketLike } from "../config.js";
import type { ServerError } from "../events.js";
import {
  CrSocket,
  PAIRING_DEFAULTS,
  PairingError,
  pairingMetastatesOf,
  type PairingConfig,
  type PairingEvent,
  type PairingIncomingEvent,
  type PairingMetastates,
  type PairingState,
} from "./machine.js";
import {
  PAIRING_ALIVE_FRAME,
  decodePairingServerFrame,
  pairingEventFrame,
  pairingIdentifyFrame,
  type PairingAbortReason,
} from "./frames.js";

/** The driver's default timers (ms) and activity. */
export const PAIRING_CLIENT_DEFAULTS = {
  active: true,
  aliveIntervalMs: 12_000,
  silenceTimeoutMs: 30_000,
  reconnectDelayMs: 2_000,
} as const;

/** Settings of a `PairingClient`: where, which app, the machine's settings, the driver's timers. */
export interface PairingClientConfig extends PairingConfig {
  /**
   * The server: `ws://HOST:PORT/` or `wss://HOST:PORT/`. The endpoint is `crsocket/{app}/ws`
   * under the URL's path (a trailing `/ws`, the session endpoint, is dropped first).
   */
  url: string;
  /** The app's name (`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`). */
  app: string;
  /** Whether the application is active from the start (true); otherwise wait for `setActive`. */
  active?: boolean | undefined;
  /** How often to send `cr_alive` once identified (12000; the server's timeout is 25 s). */
  aliveIntervalMs?: number | undefined;
  /** Nothing heard (or no `cr_welcome`) for this long: the connection is lost (30000). */
  silenceTimeoutMs?: number | undefined;
  /** Wait before each reconnection attempt (2000). */
  reconnectDelayMs?: number | undefined;
  /** The WebSocket constructor; default `globalThis.WebSocket` (pass `ws`'s in Node 20). */
  WebSocket?: WebSocketConstructor | undefined;
}

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

const CLIENT_ID = /^[0-9]{6}$/;
const ACCESS_TOKEN = /^[!-~]{1,256}$/;
const APP_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;
const TOKEN_RULE = "the access token must be 1 to 256 characters of ! to ~ (no spaces)";

/**
 * The pairing WebSocket's URL, e.g. `ws://127.0.0.1:8080/crsocket/alpha/ws`; throws
 * `PairingError` kind `config` for a URL that is not `ws://` / `wss://` or a bad app name.
 */
export function pairingEndpoint(url: string, app: string): string {
  if (typeof app !== "string" || !APP_NAME.test(app)) {
    throw new PairingError(
      "config",
      `\`${String(app)}\` is not an app name (1-64 of A-Z a-z 0-9 - _, starting with a letter or digit)`,
    );
  }
  const match = typeof url === "string" ? /^(wss?):\/\/([^/?#\s]+)([^?#\s]*)/i.exec(url) : null;
  const scheme = match?.[1];
  const authority = match?.[2];
  if (match === null || scheme === undefined || authority === undefined) {
    throw new PairingError(
      "config",
      `\`${String(url)}\` is not a ws:// or wss:// URL (write e.g. ws://127.0.0.1:8080/)`,
    );
  }
  const path = (match[3] ?? "").replace(/\/+$/, "");
  const prefix = path.endsWith("/ws") ? path.slice(0, -3) : path;
  return `${scheme.toLowerCase()}://${authority}${prefix}/crsocket/${app}/ws`;
}

/** The `cr_event` fields of the frame being handled, for the received event it may become. */
interface Arrival {
  buffered: boolean;
  logged: boolean;
  interceptable: boolean;
  sendCt: number | null;
  receiveCt: number;
}

const monotonicNow = (): number =>
  typeof globalThis.performance?.now === "function" ? globalThis.performance.now() : Date.now();

const ignore = (): void => {};

/** How long `close()` waits for the socket's close before it resolves anyway. */
const CLOSE_WAIT_MS = 1_000;

/** A controller's or responder's pairing client: see the module comment. */
export class PairingClient {
  private readonly machine: CrSocket;
  private readonly endpoint: string;
  private readonly role: PairingConfig["role"];
  private readonly WebSocketCtor: WebSocketConstructor;
  private readonly aliveIntervalMs: number;
  private readonly silenceTimeoutMs: number;
  private readonly reconnectDelayMs: number;
  private readonly app: string;
  /** The application's activity, as last given (the machine does not expose it). */
  private active: boolean;
  /** The token to identify with. */
  private token: string | null;
  /** The last abort, kept here for an id-less client (whose passive machine ignores it). */
  private driverAbort: PairingAbortReason | null = null;
  private ws: WebSocketLike | null = null;
  /** The socket's handshake completed (`onopen`). */
  private wsOpen = false;
  /** The socket got its `cr_welcome`. */
  private identified = false;
  /** The socket got a `cr_aborted` (its close is no disconnection). */
  private abortedSocket = false;
  /** What the socket's `onerror` said, for the reason of the close that follows. */
  private socketError: string | null = null;
  private nextAlive: number | null = null;
  private lastHeard = 0;
  private reconnectAt: number | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private started = false;
  private closed = false;
  private closing: Promise<void> | null = null;
  private first: { promise: Promise<void>; resolve: () => void; reject: (e: PairingError) => void } | null =
    null;
  private pending: PairingUpdate[] = [];
  private dispatching = false;
  private readonly listeners = new Set<(update: PairingUpdate) => void>();
  private readonly iterators = new Set<{ push: (u: PairingUpdate) => void; end: () => void }>();

  /** A client with these settings; nothing happens until `start()` or `connect()`. Throws kind `config`. */
  constructor(config: PairingClientConfig) {
    if (config === null || typeof config !== "object") throw new PairingError("config", "config must be an object");
    if (config.role !== "controller" && config.role !== "responder") {
      throw new PairingError("config", `role must be "controller" or "responder" (got ${JSON.stringify(config.role)})`);
    }
    this.endpoint = pairingEndpoint(config.url, config.app);
    const clientId = config.clientId ?? null;
    if (clientId !== null && (typeof clientId !== "string" || !CLIENT_ID.test(clientId))) {
      throw new PairingError("config", `client id \`${String(clientId)}\`: expected 6 ASCII digits`);
    }
    const token = config.accessToken ?? null;
    if (token !== null && (typeof token !== "string" || !ACCESS_TOKEN.test(token))) {
      throw new PairingError("config", TOKEN_RULE);
    }
    const ms = (name: string, value: number | undefined, fallback: number, min = 1): number => {
      const v = value ?? fallback;
      if (typeof v !== "number" || !Number.isFinite(v) || v < min) {
        throw new PairingError("config", `${name} must be a number >= ${min} (got ${String(v)})`);
      }
      return v;
    };
    const machineConfig: PairingConfig = {
      role: config.role,
      clientId,
      accessToken: token,
      partnerAliveMs: ms("partnerAliveMs", config.partnerAliveMs, PAIRING_DEFAULTS.partnerAliveMs),
      searchPingMs: ms("searchPingMs", config.searchPingMs, PAIRING_DEFAULTS.searchPingMs),
      interactPingMs: ms("interactPingMs", config.interactPingMs, PAIRING_DEFAULTS.interactPingMs),
      pacingMs: ms("pacingMs", config.pacingMs, PAIRING_DEFAULTS.pacingMs, 0),
      queueLimit: ms("queueLimit", config.queueLimit, PAIRING_DEFAULTS.queueLimit),
    };
    this.aliveIntervalMs = ms("aliveIntervalMs", config.aliveIntervalMs, PAIRING_CLIENT_DEFAULTS.aliveIntervalMs);
    this.silenceTimeoutMs = ms("silenceTimeoutMs", config.silenceTimeoutMs, PAIRING_CLIENT_DEFAULTS.silenceTimeoutMs);
    this.reconnectDelayMs = ms("reconnectDelayMs", config.reconnectDelayMs, PAIRING_CLIENT_DEFAULTS.reconnectDelayMs, 0);
    const ctor =
      config.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (typeof ctor !== "function") {
      throw new PairingError("config", "no WebSocket: pass the WebSocket option (e.g. from the ws package in Node)");
    }
    this.WebSocketCtor = ctor;
    this.role = config.role;
    this.app = config.app;
    this.token = token;
    this.active = config.active ?? PAIRING_CLIENT_DEFAULTS.active;
    this.machine = new CrSocket(machineConfig);
  }

  /** A client started at once (`new` + `start()`); failures arrive as updates. */
  static start(config: PairingClientConfig): PairingClient {
    const client = new PairingClient(config);
    client.start();
    return client;
  }

  /** `new` + `connect()`: resolves with the client at its first `cr_welcome`. */
  static async connect(config: PairingClientConfig): Promise<PairingClient> {
    const client = new PairingClient(config);
    await client.connect();
    return client;
  }

  /** Starts the client and returns at once; connection failures and refusals arrive as updates. */
  start(): void {
    this.ensureOpen();
    if (this.started) return;
    this.started = true;
    if (this.active) this.machine.setActive(monotonicNow(), true);
    this.settle();
  }

  /**
   * Starts the client and waits for the first connection's outcome: resolves at its
   * `cr_welcome`; rejects `PairingError` kind `refused` at a `cr_aborted` (`abortReason`
   * set) or `connect` if it could not be made or ended before the welcome, and the client
   * is closed then (nothing is retried). A client that would not connect at the start (not
   * `active`, or no token) resolves at once.
   */
  connect(): Promise<void> {
    if (this.closed) return Promise.reject(new PairingError("closed", "the pairing client is closed"));
    if (this.first !== null) return this.first.promise;
    if (this.started) return Promise.resolve();
    let resolve!: () => void;
    let reject!: (e: PairingError) => void;
    const promise = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    this.first = { promise, resolve, reject };
    this.start();
    return promise;
  }

  // ---- reading -------------------------------------------------------------------------

  /** Everything the client currently knows. */
  snapshot(): PairingSnapshot {
    return {
      state: this.machine.state(),
      metastates: this.machine.metastates(),
      clientId: this.machine.clientId(),
      partner: this.machine.partner(),
      rejected: this.machine.rejected(),
      aborted: this.driverAbort,
    };
  }

  /** The machine's state. */
  state(): PairingState {
    return this.machine.state();
  }

  /** The machine's metastates. */
  metastates(): PairingMetastates {
    return pairingMetastatesOf(this.machine.state());
  }

  /** This client's id, once it has one. */
  clientId(): string | null {
    return this.machine.clientId();
  }

  /** The assigned partner, if any. */
  partner(): string | null {
    return this.machine.partner();
  }

  /** The subtype the partner is flagged rejected with, if it is. */
  rejected(): string | null {
    return this.machine.rejected();
  }

  /** The last abort reason, while it holds the client back from connecting. */
  aborted(): PairingAbortReason | null {
    return this.driverAbort;
  }

  // ---- updates -------------------------------------------------------------------------

  /** Calls `listener` with every update of `type`; returns the unsubscribe function. */
  on<T extends PairingUpdateType>(type: T, listener: (update: PairingUpdateOf<T>) => void): () => void {
    return this.onAny((update) => {
      if (update.type === type) listener(update as PairingUpdateOf<T>);
    });
  }

  /** Calls `listener` with every update; returns the unsubscribe function. */
  onAny(listener: (update: PairingUpdate) => void): () => void {
    const wrapped = (update: PairingUpdate): void => listener(update);
    this.listeners.add(wrapped);
    return () => {
      this.listeners.delete(wrapped);
    };
  }

  /** Every update from this call on, buffered; ends after the client is closed. */
  events(): AsyncIterableIterator<PairingUpdate> {
    const buffer: PairingUpdate[] = [];
    const waiting: Array<(r: IteratorResult<PairingUpdate>) => void> = [];
    let ended = this.closed && this.pending.length === 0;
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
        return new Promise((res) => waiting.push(res));
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

  // ---- commands ------------------------------------------------------------------------

  /**
   * The application became active (visible, in use) or passive. Going passive sends
   * `inactive` to a partner and closes the connection; going active connects again.
   */
  setActive(active: boolean): void {
    this.ensureOpen();
    if (this.active !== active) this.driverAbort = null;
    this.active = active;
    if (this.started) this.machine.setActive(monotonicNow(), active);
    this.settle();
  }

  /**
   * Assigns the partner (`null` unassigns it): a controller's only way to get one. A
   * controller pings it; a responder assigned one rejects other controllers. Throws kind
   * `invalid` for an id that is not 6 digits.
   */
  assignPartner(partner: string | null): void {
    this.ensureOpen();
    if (partner !== null && (typeof partner !== "string" || !CLIENT_ID.test(partner))) {
      throw new PairingError("invalid", `partner id \`${String(partner)}\`: expected 6 ASCII digits`);
    }
    this.machine.assignPartner(monotonicNow(), partner);
    this.settle();
  }

  /** A new access token (or `null`: readyToConnect). A new token clears an abort: it connects again. */
  setAccessToken(token: string | null): void {
    this.ensureOpen();
    if (token !== null && (typeof token !== "string" || !ACCESS_TOKEN.test(token))) {
      throw new PairingError("invalid", TOKEN_RULE);
    }
    if (this.token !== token) {
      this.driverAbort = null;
      this.token = token;
      this.reconnectAt = null;
    }
    this.machine.setAccessToken(monotonicNow(), token);
    this.settle();
  }

  /** After an `aborted` update: connect again. */
  retry(): void {
    this.ensureOpen();
    this.driverAbort = null;
    this.reconnectAt = null;
    this.machine.retry(monotonicNow());
    this.settle();
  }

  /**
   * Queues an application event for the partner, sent paced (one per `pacingMs`). Throws
   * `PairingError` kind `not_paired` unless paired, `reserved` for the pairing's own types,
   * `invalid` for a type or subtype that is not letters and digits or a parameter with `,`,
   * `queue_full` when `queueLimit` events wait.
   */
  sendEvent(eventType: string, subType = "", params: readonly string[] = []): void {
    this.ensureOpen();
    this.machine.sendAppEvent(monotonicNow(), eventType, subType, params);
    this.settle();
  }

  /**
   * Goes passive (a partner gets `inactive`), closes the connection and ends the client;
   * resolves once the socket is closed (at most ~1 s). `events()` iterators end after the
   * last updates; commands throw kind `closed` from then on.
   */
  close(): Promise<void> {
    if (this.closing !== null) return this.closing;
    const now = monotonicNow();
    this.active = false;
    this.machine.setActive(now, false);
    this.flush();
    const socketClosed = this.closeSocket();
    this.closed = true;
    this.clearTimer();
    this.failFirst(new PairingError("closed", "the pairing client was closed before cr_welcome"));
    this.dispatch();
    for (const it of [...this.iterators]) it.end();
    this.closing = socketClosed;
    return socketClosed;
  }

  // ---- the driver ----------------------------------------------------------------------

  private ensureOpen(): void {
    if (this.closed) throw new PairingError("closed", "the pairing client is closed");
  }

  /** Whether a socket should be open now (see the module comment on the client id). */
  private wantsConnection(): boolean {
    if (!this.started || this.closed) return false;
    if (this.machine.clientId() !== null) {
      const s = this.machine.state();
      return s === "connecting" || s === "readyToPair" || s === "searching" || s === "interacting";
    }
    return this.active && this.token !== null && this.driverAbort === null;
  }

  /** Sends what the machine holds, tells the app, opens or closes the socket, re-arms the timer. */
  private settle(): void {
    if (this.closed) return;
    this.flush();
    if (this.ws !== null) {
      // Identified, but the machine no longer counts itself connected: this socket is done.
      const stale = this.identified && !this.machine.metastates().connected;
      if (!this.wantsConnection() || stale || this.abortedSocket) void this.closeSocket();
    }
    if (this.ws === null && this.wantsConnection()) {
      if (this.reconnectAt === null || this.reconnectAt <= monotonicNow()) this.open();
    }
    if (this.first !== null && this.started && this.ws === null && !this.wantsConnection()) {
      // Nothing to wait for: `connect` of a client that does not connect.
      const first = this.first;
      this.first = null;
      first.resolve();
    }
    this.arm();
    this.dispatch();
  }

  /** The machine's outputs: events to send (on an identified socket; dropped otherwise) and updates. */
  private flush(): void {
    this.drainUpdates(null);
    for (let out = this.machine.pollTransmit(); out !== undefined; out = this.machine.pollTransmit()) {
      if (!this.identified || this.ws === null) continue; // e.g. an `inactive` after a drop
      this.sendText(pairingEventFrame(out, Date.now()));
    }
    this.drainUpdates(null);
  }

  private sendText(text: string): void {
    try {
      this.ws?.send(text);
    } catch {
      // A socket that cannot send is about to report its close.
    }
  }

  private drainUpdates(arrival: Arrival | null): void {
    for (let e = this.machine.pollEvent(); e !== undefined; e = this.machine.pollEvent()) {
      this.emit(toUpdate(e, arrival));
    }
  }

  private emit(update: PairingUpdate): void {
    this.pending.push(update);
  }

  /** Delivers queued updates in order; a listener's command only queues more (no re-entry). */
  private dispatch(): void {
    if (this.dispatching) return;
    this.dispatching = true;
    try {
      for (let u = this.pending.shift(); u !== undefined; u = this.pending.shift()) {
        for (const it of this.iterators) it.push(u);
        for (const listener of [...this.listeners]) {
          try {
            listener(u);
          } catch (error) {
            queueMicrotask(() => {
              throw error;
            });
          }
        }
      }
    } finally {
      this.dispatching = false;
    }
  }

  private failFirst(error: PairingError): void {
    const first = this.first;
    if (first === null) return;
    this.first = null;
    first.reject(error);
    if (error.kind !== "closed") void this.close();
  }

  private resolveFirst(): void {
    const first = this.first;
    if (first === null) return;
    this.first = null;
    first.resolve();
  }

  private deadline(): number | null {
    const due: number[] = [];
    const machine = this.machine.pollTimeout();
    if (machine !== undefined) due.push(machine);
    if (this.identified && this.nextAlive !== null) due.push(this.nextAlive);
    if (this.ws !== null) due.push(this.lastHeard + this.silenceTimeoutMs);
    if (this.ws === null && this.reconnectAt !== null && this.wantsConnection()) due.push(this.reconnectAt);
    return due.length === 0 ? null : Math.min(...due);
  }

  private arm(): void {
    this.clearTimer();
    const at = this.deadline();
    if (at === null || this.closed) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.onTimer();
    }, Math.max(0, Math.ceil(at - monotonicNow())));
  }

  private clearTimer(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  private onTimer(): void {
    if (this.closed) return;
    const now = monotonicNow();
    if (this.ws !== null && this.lastHeard + this.silenceTimeoutMs <= now) {
      const what = !this.wsOpen ? "no connection" : this.identified ? "nothing heard" : "no cr_welcome";
      const reason = `${what} from the server for ${this.silenceTimeoutMs} ms`;
      const wasOpen = this.wsOpen;
      void this.closeSocket(true);
      if (wasOpen) this.lost(now, reason);
      else this.connectFailed(now, reason);
      this.settle();
      return;
    }
    const machineDue = this.machine.pollTimeout();
    if (machineDue !== undefined && machineDue <= now) this.machine.handleTimeout(now);
    if (this.identified && this.nextAlive !== null && this.nextAlive <= now) {
      this.nextAlive = Math.max(this.nextAlive, now - this.aliveIntervalMs) + this.aliveIntervalMs;
      this.sendText(PAIRING_ALIVE_FRAME);
    }
    this.settle();
  }

  private open(): void {
    this.reconnectAt = null;
    let socket: WebSocketLike;
    try {
      socket = new this.WebSocketCtor(this.endpoint);
    } catch (error) {
      this.connectFailed(monotonicNow(), error instanceof Error ? error.message : String(error));
      return;
    }
    this.ws = socket;
    this.wsOpen = false;
    this.identified = false;
    this.abortedSocket = false;
    this.socketError = null;
    this.lastHeard = monotonicNow();
    socket.onopen = () => {
      if (this.ws !== socket) return;
      this.wsOpen = true;
      this.lastHeard = monotonicNow();
      this.sendText(pairingIdentifyFrame(this.role, this.machine.clientId(), this.token));
      this.settle();
    };
    socket.onmessage = (event) => {
      if (this.ws !== socket) return;
      const now = monotonicNow();
      this.lastHeard = now;
      if (typeof event.data === "string") this.onText(now, event.data);
      this.settle();
    };
    socket.onerror = (event) => {
      if (this.ws !== socket) return;
      const message = (event as { message?: unknown } | null)?.message;
      this.socketError = typeof message === "string" && message !== "" ? message : "WebSocket error";
    };
    socket.onclose = (event) => {
      if (this.ws !== socket) return;
      this.ws = null;
      const now = monotonicNow();
      const code = event?.code ?? 1006;
      const text = event?.reason ? `closed (${code} ${event.reason})` : `closed (${code})`;
      if (!this.wsOpen) this.connectFailed(now, this.socketError ?? text);
      else this.lost(now, text);
      this.settle();
    };
  }

  /** Closes the socket (if any), detached from the driver; resolves at its close (bounded). */
  private closeSocket(broken = false): Promise<void> {
    const socket = this.ws;
    this.ws = null;
    this.identified = false;
    this.nextAlive = null;
    if (socket === null) return Promise.resolve();
    const done = new Promise<void>((resolve) => {
      const bound = setTimeout(resolve, CLOSE_WAIT_MS);
      socket.onopen = ignore;
      socket.onmessage = ignore;
      socket.onerror = ignore; // `ws` throws an error event nobody listens to
      socket.onclose = () => {
        clearTimeout(bound);
        resolve();
      };
    });
    try {
      if (broken) socket.close();
      else socket.close(1000);
    } catch {
      // Already closing.
    }
    return done;
  }

  private connectFailed(now: number, reason: string): void {
    this.wsOpen = false;
    let why = reason;
    if (/\b404\b/.test(reason)) {
      why += ` (the server has no pairing app \`${this.app}\`: it serves one given as \`loudsync serve --app ${this.app}\`)`;
    }
    this.reconnectAt = now + this.reconnectDelayMs;
    this.emit({ type: "connectFailed", reason: why });
    this.failFirst(new PairingError("connect", why));
  }

  /** The open socket ended (already taken out): unless an abort ended it, reconnect after the delay. */
  private lost(now: number, reason: string): void {
    const wasIdentified = this.identified;
    this.identified = false;
    this.wsOpen = false;
    this.nextAlive = null;
    if (this.abortedSocket) {
      this.abortedSocket = false;
      return;
    }
    this.reconnectAt = now + this.reconnectDelayMs;
    if (wasIdentified) this.machine.handleDisconnected(now);
    this.drainUpdates(null);
    this.emit({ type: "disconnected", reason });
    this.failFirst(new PairingError("connect", `the connection ended before cr_welcome: ${reason}`));
  }

  private onText(now: number, text: string): void {
    const frame = decodePairingServerFrame(text);
    if (frame === null) return; // unreadable: ignored, as the Rust SDK does
    switch (frame.type) {
      case "cr_welcome": {
        if (this.identified || this.abortedSocket) return;
        this.identified = true;
        this.nextAlive = now + this.aliveIntervalMs;
        if (this.machine.clientId() === null) {
          this.machine.setClientId(now, frame.clientId);
          this.drainUpdates(null);
        }
        // The welcome first, then what it does to the machine (readyToPair, ...).
        this.emit({ type: "welcome", appId: frame.appId, clientId: frame.clientId });
        this.machine.handleConnected(now, frame.clientId);
        this.drainUpdates(null);
        this.resolveFirst();
        return;
      }
      case "cr_event": {
        if (!this.identified) return;
        const arrival: Arrival = {
          buffered: frame.buffered,
          logged: frame.logged,
          interceptable: frame.interceptable,
          sendCt: frame.sendCt,
          receiveCt: Date.now(),
        };
        this.machine.handleEvent(now, {
          sender: frame.sender,
          eventType: frame.eventType,
          subType: frame.subType,
          params: frame.params,
        });
        this.drainUpdates(arrival);
        return;
      }
      case "cr_alive":
        return;
      case "cr_aborted": {
        this.abortedSocket = true;
        this.identified = false;
        this.nextAlive = null;
        this.driverAbort = frame.reason;
        this.machine.handleAborted(now, frame.reason);
        this.drainUpdates(null);
        this.emit({ type: "aborted", reason: frame.reason });
        this.failFirst(
          new PairingError("refused", `identify refused: ${frame.reason}`, { abortReason: frame.reason }),
        );
        return;
      }
      case "error":
        this.emit({ type: "error", error: frame.error });
        return;
    }
  }
}

/** A machine event as an update; `arrival` completes an application event from the frame just read. */
function toUpdate(event: PairingEvent, arrival: Arrival | null): PairingUpdate {
  if (event.type !== "appEvent") return event;
  return { type: "appEvent", event: received(event.event, arrival) };
}

function received(e: PairingIncomingEvent, arrival: Arrival | null): PairingReceivedEvent {
  return {
    sender: e.sender,
    eventType: e.eventType,
    subType: e.subType,
    params: e.params,
    buffered: arrival?.buffered ?? false,
    logged: arrival?.logged ?? false,
    interceptable: arrival?.interceptable ?? true,
    sendCt: arrival?.sendCt ?? null,
    receiveCt: arrival?.receiveCt ?? Date.now(),
  };
}
