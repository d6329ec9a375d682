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
import {
  CrSocket,
  PairingError,
  pairingMetastatesOf,
  type PairingMetastates,
  type PairingRole,
  type PairingState,
} from "./machine.js";
import {
  PAIRING_ALIVE_FRAME,
  decodePairingServerFrame,
  pairingEventFrame,
  pairingIdentifyFrame,
  type PairingAbortReason,
} from "./frames.js";
import {
  PAIRING_TOKEN_RULE,
  isPairingAccessToken,
  isPairingClientId,
  resolvePairingClientConfig,
  type PairingClientConfig,
} from "./options.js";
import {
  PairingUpdateHub,
  pairingUpdateOf,
  type PairingArrival,
  type PairingSnapshot,
  type PairingUpdate,
  type PairingUpdateOf,
  type PairingUpdateType,
} from "./updates.js";

const monotonicNow = (): number =>
  typeof globalThis.performance?.now === "function" ? globalThis.performance.now() : Date.now();

const ignore = (): void => {};

/** How long `close()` waits for the socket's close before it resolves anyway. */
const CLOSE_WAIT_MS = 1_000;

/** A controller's or responder's pairing client: see the module comment. */
export class PairingClient {
  private readonly machine: CrSocket;
  private readonly endpoint: string;
  private readonly role: PairingRole;
  private readonly WebSocketCtor: WebSocketConstructor;
  private readonly aliveIntervalMs: number;
  private readonly silenceTimeoutMs: number;
  private readonly reconnectDelayMs: number;
  private readonly app: string;
  private readonly hub = new PairingUpdateHub();
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

  /** A client with these settings; nothing happens until `start()` or `connect()`. Throws kind `config`. */
  constructor(config: PairingClientConfig) {
    const resolved = resolvePairingClientConfig(config);
    this.endpoint = resolved.endpoint;
    this.app = resolved.app;
    this.role = resolved.role;
    this.WebSocketCtor = resolved.WebSocket;
    this.aliveIntervalMs = resolved.aliveIntervalMs;
    this.silenceTimeoutMs = resolved.silenceTimeoutMs;
    this.reconnectDelayMs = resolved.reconnectDelayMs;
    this.token = resolved.accessToken;
    this.active = resolved.active;
    this.machine = new CrSocket(resolved.machine);
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
   * `active`, or no token), or one already started, resolves at once.
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
    return this.hub.onAny(listener);
  }

  /** Every update from this call on, buffered; ends after the client is closed. */
  events(): AsyncIterableIterator<PairingUpdate> {
    return this.hub.events();
  }

  /** What `JSON.stringify` shows of a client: its snapshot (never the access token). */
  toJSON(): PairingSnapshot {
    return this.snapshot();
  }

  /** What Node's `util.inspect` (and `console.log`) shows: the snapshot, never the token. */
  [Symbol.for("nodejs.util.inspect.custom")](): string {
    return `PairingClient ${JSON.stringify(this.snapshot())}`;
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
    if (partner !== null && !isPairingClientId(partner)) {
      throw new PairingError("invalid", `partner id \`${String(partner)}\`: expected 6 ASCII digits`);
    }
    this.machine.assignPartner(monotonicNow(), partner);
    this.settle();
  }

  /** A new access token (or `null`: readyToConnect). A new token clears an abort: it connects again. */
  setAccessToken(token: string | null): void {
    this.ensureOpen();
    if (token !== null && !isPairingAccessToken(token)) {
      throw new PairingError("invalid", PAIRING_TOKEN_RULE);
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
    this.hub.end();
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
    this.hub.dispatch();
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

  private drainUpdates(arrival: PairingArrival | null): void {
    for (let e = this.machine.pollEvent(); e !== undefined; e = this.machine.pollEvent()) {
      this.emit(pairingUpdateOf(e, arrival));
    }
  }

  private emit(update: PairingUpdate): void {
    this.hub.emit(update);
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
      // Told first, while `identified` still says whether the machine was connected.
      if (this.wsOpen) this.lost(now, reason);
      else this.connectFailed(now, reason);
      void this.closeSocket(true);
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
    // A silent peer never finishes a close handshake, and `ws` holds such a socket (and a
    // Node process with it) 30 s for one: where the implementation can drop the connection
    // (`ws`'s `terminate()`), a broken socket is dropped at once and any other once the
    // close has not come within CLOSE_WAIT_MS.
    const terminate = (): boolean => {
      const drop = (socket as { terminate?: unknown }).terminate;
      if (typeof drop !== "function") return false;
      try {
        drop.call(socket);
      } catch {
        // Already closed.
      }
      return true;
    };
    const done = new Promise<void>((resolve) => {
      const bound = setTimeout(() => {
        terminate();
        resolve();
      }, CLOSE_WAIT_MS);
      socket.onopen = ignore;
      socket.onmessage = ignore;
      socket.onerror = ignore; // `ws` throws an error event nobody listens to
      socket.onclose = () => {
        clearTimeout(bound);
        resolve();
      };
    });
    try {
      if (!(broken && terminate())) {
        if (broken) socket.close();
        else socket.close(1000);
      }
    } catch {
      // Already closing.
    }
    return done;
  }

  private connectFailed(now: number, reason: string): void {
    this.wsOpen = false;
    // Named with the endpoint, as the session client's `could not connect: URL: ...`.
    let why = `could not connect to ${this.endpoint}: ${reason}`;
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
        const arrival: PairingArrival = {
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
