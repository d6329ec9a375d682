/**
 * client.ts: the driver, `Client` (the TypeScript counterpart of the Rust SDK's tokio driver
 * in crates/client/src/lib.rs). It owns the WebSocket and ONE timer and carries out what the
 * sans-IO `Machine` asks; every rule (heartbeat and ping, silence, reconnection, resume,
 * handoff) lives in the machine.
 *
 * How it works: `connect()` checks the settings, builds the machine and calls `start`; from
 * then on, after anything happens (a socket report, the timer, a command) the driver drains
 * `machine.pollAction()`: `connect` opens a socket (`options.WebSocket ??
 * globalThis.WebSocket`, see socket.ts), `send` sends a text frame, `closeSocket` closes the
 * socket with 1000 and forgets it (a forgotten socket reports nothing: its handlers are
 * detached; one closed from the timer, because its peer went silent, is dropped instead,
 * so no close handshake that cannot finish keeps a Node process alive), `emit` settles `connect()` / `mediaToken()` when the event answers them and
 * delivers the event (emitter.ts). Then it re-arms its one timer at the earliest of
 * `machine.pollTimeout()`, the leave deadline (after `leave`/`disconnect`: the server's close
 * is awaited `leaveTimeoutMs`, then `handleLeaveTimeout`) and the connect deadline (a socket
 * that neither opens nor fails within 10 s, as the Rust transport's CONNECT_TIMEOUT, is a
 * failed connection attempt). No timers per member, none per request.
 *
 * Every frame received also counts as a sign of life (`handleActivity`). The Rust driver
 * also counts WebSocket pongs and other control frames; the WHATWG WebSocket (browsers, React
 * Native, `ws`'s `onmessage`) hides control frames, so here only data frames count: the
 * client's own `ping` every heartbeat interval is what keeps the silence timer quiet. A close
 * with code 1006 (no close frame) is reported to the machine as no close at all, as the Rust
 * driver reports a socket that ended without one.
 *
 * Time: `performance.now()` (monotonic) for the machine's `now`, `Date.now()` once for its
 * Unix clock, `setTimeout` for the timer. A listener that throws is reported with
 * `console.error` and the driver carries on (emitter.ts). No Node imports: browsers, React
 * Native and Node 20+ (pass `WebSocket` from the `ws` package where there is no global one).
 *
 * Testing the driver: pass a fake WebSocket class as `options.WebSocket` (it needs
 * `readyState`, `send`, `close` and the four `on*` properties; call `onopen({})`,
 * `onmessage({data})`, `onclose({code, reason})` to play the server) and, to run the timers
 * on a fake clock, a `ClientEnvironment` as the constructor's second argument (`now`,
 * `unixNow`, `setTimer`, `clearTimer`); advance the clock and call the scheduled callback.
 * With `resume: false` the first frame sent is `join`; answer it with a `welcome` frame
 * (`{type: "welcome", clientId, sessionInfo, resumable: false, timestamp}`) and `connect()`
 * resolves; advancing the fake clock 5 s then shows `heartbeat` and `ping` in the sent frames.
 */
import type { ClientConfig, ClientOptions, WebSocketConstructor } from "./config.js";
import { resolveConfig } from "./config.js";
import { EventHub } from "./emitter.js";
import { LoudSyncError } from "./errors.js";
import type {
  ClientEvent,
  ClientEventOf,
  ClientEventType,
  ConnectionState,
  LinkState,
  MediaGrant,
  PendingHandoff,
  Role,
} from "./events.js";
import type { Action } from "./machine.js";
import { Machine } from "./machine.js";
import type { Socket } from "./socket.js";
import { openSocket } from "./socket.js";
import type { MemberInfo, SessionInfo } from "./types.js";

/** Everything the client currently knows, as one copy (`Client.snapshot()`). */
export interface Snapshot {
  /** The connection state. */
  state: ConnectionState;
  /** The resume link's state (`DISCONNECTED` on a plain connection). */
  linkState: LinkState;
  /** This member's id, while joined. */
  clientId: string | null;
  /** The session, while joined (its `hostId` follows `host_changed`). */
  session: SessionInfo | null;
  /** The member table: host first, then join order. */
  members: MemberInfo[];
  /** This client's last measured round trip, ms. */
  latency: number | null;
  /** This client's role. */
  role: Role;
  /** The session's id: `welcome`'s once joined, the configured one before (null for a new session). */
  sessionId: string | null;
  /** The current host's id, while joined. */
  hostId: string | null;
  /** Whether this client is the host now. */
  isHost: boolean;
  /** The highest term seen; 0 before `welcome`. */
  term: number;
  /** The session state (a JSON object, `{}` until known). */
  sessionState: Record<string, unknown>;
  /** Its version. */
  stateVersion: number;
  /** The handoff this client is part of. */
  pendingHandoff: PendingHandoff | null;
}

/**
 * What the driver takes from its surroundings. The default uses `performance.now()`,
 * `Date.now()`, `setTimeout` and `clearTimeout`; a test passes its own to run on a fake clock.
 */
export interface ClientEnvironment {
  /** A monotonic clock, ms. */
  now(): number;
  /** The Unix time, ms (read once, when `connect()` builds the machine). */
  unixNow(): number;
  /** Calls `callback` once after `ms`; returns a handle for `clearTimer`. */
  setTimer(callback: () => void, ms: number): unknown;
  /** Cancels a `setTimer`. */
  clearTimer(handle: unknown): void;
}

/** How long a socket may take to open (as the Rust SDK's transport), ms. */
const CONNECT_TIMEOUT_MS = 10_000;
/** The longest delay `setTimeout` takes without firing at once. */
const MAX_TIMER_MS = 2_147_483_647;

/** The browser's (or Node's, or React Native's) clock and timers. */
const defaultEnvironment: ClientEnvironment = {
  now: () => {
    const performance = (globalThis as { performance?: { now?: () => number } }).performance;
    return typeof performance?.now === "function" ? performance.now() : Date.now();
  },
  unixNow: () => Date.now(),
  setTimer: (callback, ms) => setTimeout(callback, ms),
  clearTimer: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};

/** Whoever awaits a promise the driver settles. */
interface Waiter<T> {
  resolve(value: T): void;
  reject(error: LoudSyncError): void;
}

/**
 * A LoudSync client: connects, joins, keeps the member table, reconnects and resumes, and
 * tells the application by events. Nothing happens until `connect()`.
 */
export class Client {
  private readonly options: ClientOptions;
  private readonly env: ClientEnvironment;
  private readonly hub = new EventHub();
  private config: ClientConfig | null = null;
  private machine: Machine | null = null;
  private WebSocketClass: WebSocketConstructor | null = null;
  private started: Promise<void> | null = null;
  /** `connect()`'s caller, until the first `welcome` (or the first join's failure). */
  private first: Waiter<void> | null = null;
  private socket: Socket | null = null;
  /** Identifies the current socket: a report from any other one is ignored. */
  private socketToken: object | null = null;
  private connectDeadline: number | null = null;
  private leaveDeadline: number | null = null;
  /** A leave was queued by the machine while resuming: its timeout starts once it went out. */
  private leaveWaitsForResume = false;
  private leaving: Array<() => void> = [];
  /** One entry per `media_token` request sent and not answered, oldest first (null: nobody waits). */
  private mediaReplies: Array<Waiter<MediaGrant> | null> = [];
  private timer: unknown = null;
  private timerAt: number | null = null;
  private pumping = false;
  private finished = false;
  /**
   * While a timer is handled: a socket closed now is closed because its peer stopped
   * answering (silence, a join, resume or leave timeout), so it is dropped, not closed
   * with a handshake that cannot finish (socket.ts `detach(true)`).
   */
  private peerSilent = false;

  /** A client for `options`; the second argument replaces the clock and timers (tests). */
  constructor(options: ClientOptions, environment: ClientEnvironment = defaultEnvironment) {
    this.options = options;
    this.env = environment;
  }

  /** `new Client(options, environment)`, then `connect()`: resolves with the joined client. */
  static async connect(options: ClientOptions, environment?: ClientEnvironment): Promise<Client> {
    const client = new Client(options, environment);
    await client.connect();
    return client;
  }

  /**
   * Connects and joins. Resolves at the first `welcome`; rejects with `LoudSyncError` kind
   * `config` (a setting, or no WebSocket), `connect` (the first connection failed: nothing is
   * retried) or `rejected` (the server refused the first join: `serverError` says why). Calling
   * it again returns the same promise.
   */
  connect(): Promise<void> {
    if (this.started) return this.started;
    let first!: Waiter<void>;
    // Kept before anything runs: a listener that calls connect() while the first events are
    // delivered (below, synchronously) gets this same promise, not a second machine.
    this.started = new Promise<void>((resolve, reject) => {
      first = { resolve, reject };
    });
    try {
      this.config = resolveConfig(this.options);
      this.WebSocketClass = this.options.WebSocket ?? globalWebSocket();
      if (typeof this.WebSocketClass !== "function") {
        throw new LoudSyncError(
          "config",
          "no WebSocket implementation: pass one as the WebSocket option " +
            '(on Node < 22: `import WebSocket from "ws"` and `{ WebSocket }`)',
        );
      }
    } catch (error) {
      this.finished = true;
      this.hub.close();
      first.reject(error instanceof LoudSyncError ? error : new LoudSyncError("config", String(error)));
      return this.started;
    }
    this.first = first;
    const now = this.env.now();
    this.machine = new Machine(this.config, now, this.env.unixNow());
    this.machine.start(now);
    this.pump();
    return this.started;
  }

  // ---- events ----

  /** Calls `listener` with every event of `type`; returns the function that unsubscribes it. */
  on<T extends ClientEventType>(type: T, listener: (event: ClientEventOf<T>) => void): () => void {
    return this.hub.on(type, listener);
  }

  /** Calls `listener` with every event; returns the function that unsubscribes it. */
  onAny(listener: (event: ClientEvent) => void): () => void {
    return this.hub.onAny(listener);
  }

  /** Every event from this call on, buffered until read; ends when the client ends. */
  events(): AsyncIterableIterator<ClientEvent> {
    return this.hub.stream();
  }

  // ---- what the client knows (copies) ----

  /** Everything the client currently knows. */
  snapshot(): Snapshot {
    const { state, version } = this.sessionState();
    return {
      state: this.state(),
      linkState: this.linkState(),
      clientId: this.clientId(),
      session: this.session(),
      members: this.members(),
      latency: this.latency(),
      role: this.role(),
      sessionId: this.sessionId(),
      hostId: this.hostId(),
      isHost: this.isHost(),
      term: this.term(),
      sessionState: state,
      stateVersion: version,
      pendingHandoff: this.pendingHandoff(),
    };
  }

  /** The connection state. */
  state(): ConnectionState {
    return this.machine?.state() ?? "disconnected";
  }

  /** The resume link's state (`DISCONNECTED` on a plain connection). */
  linkState(): LinkState {
    return this.machine?.linkState() ?? "DISCONNECTED";
  }

  /** The member table (host first, then join order). */
  members(): MemberInfo[] {
    return (this.machine?.members() ?? []).map((member) => ({ ...member }));
  }

  /** This member's id, while joined. */
  clientId(): string | null {
    return this.machine?.clientId() ?? null;
  }

  /** The session, while joined. */
  session(): SessionInfo | null {
    const session = this.machine?.session();
    return session ? { ...session } : null;
  }

  /** This client's last measured round trip, ms. */
  latency(): number | null {
    return this.machine?.latency() ?? null;
  }

  /** This client's role. */
  role(): Role {
    return this.machine?.role() ?? "idle";
  }

  /** The session's id: `welcome`'s once joined, the configured one before. */
  sessionId(): string | null {
    if (this.machine) return this.machine.sessionId();
    return this.options.sessionId ? this.options.sessionId : null;
  }

  /** The current host's id, while joined. */
  hostId(): string | null {
    return this.machine?.hostId() ?? null;
  }

  /** Whether this client is the session's host now. */
  isHost(): boolean {
    return this.machine?.isHost() ?? false;
  }

  /** The highest term seen (+1 per change of host). */
  term(): number {
    return this.machine?.term() ?? 0;
  }

  /** The session state (a JSON object) and its version. */
  sessionState(): { state: Record<string, unknown>; version: number } {
    const known = this.machine?.sessionState();
    return known ? { state: cloneJson(known.state), version: known.version } : { state: {}, version: 0 };
  }

  /** The handoff this client is part of (its request as host, its prompt as candidate). */
  pendingHandoff(): PendingHandoff | null {
    const pending = this.machine?.pendingHandoff() ?? null;
    return pending ? cloneJson(pending) : null;
  }

  // ---- commands (throw LoudSyncError "not_connected" | "queue_full" | "invalid") ----

  /** Sends application data to every other member. */
  send(data: unknown): void {
    this.command((machine, now) => machine.sendMessage(now, data));
  }

  /** Sends application data to one member. */
  sendTo(memberId: string, data: unknown): void {
    this.command((machine, now) => machine.sendMessage(now, data, memberId));
  }

  /** Sends a `ping` now (one also goes every heartbeat interval); only while connected. */
  ping(): void {
    this.command((machine, now) => machine.ping(now));
  }

  /** Host only: removes a member. */
  kick(memberId: string, reason?: string): void {
    this.command((machine, now) => machine.kick(now, memberId, reason));
  }

  /** Asks for a fresh member list (arrives as `memberList`). */
  requestMemberList(): void {
    this.command((machine, now) => machine.requestMemberList(now));
  }

  /** Asks for a media token; the reply arrives as `mediaToken` (or `error` `media_unavailable`). */
  requestMediaToken(): void {
    this.askMediaToken(null);
  }

  /**
   * Asks for a media token and waits for the reply: the grant, or kind `refused` on
   * `media_unavailable`. Replies are matched to requests in order. Kind `not_connected` when
   * the request cannot be sent, or the client ends or joins afresh before the reply. Any other
   * `error` it provokes arrives as an `error` event only: bound the wait where that matters.
   */
  mediaToken(): Promise<MediaGrant> {
    return new Promise<MediaGrant>((resolve, reject) => {
      try {
        this.askMediaToken({ resolve, reject });
      } catch (error) {
        reject(error);
      }
    });
  }

  /** Host only: replaces the session state (a JSON object); `baseVersion` guards against a race. */
  setState(state: Record<string, unknown>, baseVersion?: number): void {
    requireObject(state);
    this.command((machine, now) => machine.setState(now, state, baseVersion));
  }

  /** Host only: applies `patch` to the session state as an RFC 7396 merge patch. */
  patchState(patch: Record<string, unknown>, baseVersion?: number): void {
    requireObject(patch);
    this.command((machine, now) => machine.patchState(now, patch, baseVersion));
  }

  /** Host only: hands control to `targetId`, or to the member that declared itself ready first. */
  requestHandoff(targetId?: string): void {
    this.command((machine, now) => machine.requestHandoff(now, targetId));
  }

  /** As the candidate: takes control. */
  acceptHandoff(handoffId: string): void {
    this.command((machine, now) => machine.acceptHandoff(now, handoffId));
  }

  /** As the candidate: refuses control. */
  declineHandoff(handoffId: string, reason?: string): void {
    this.command((machine, now) => machine.declineHandoff(now, handoffId, reason));
  }

  /** As a member: declares (or withdraws) readiness to take control. */
  setReady(ready: boolean): void {
    this.command((machine, now) => machine.setReady(now, ready));
  }

  /**
   * Leaves the session; resolves when the connection is over (the server closed it, or
   * `leaveTimeoutMs` passed). For the host this ends the session for everyone. While a
   * resumable connection is being resumed the leave waits for the resume (up to the resume
   * window), as in the Rust SDK. A second call (or `disconnect()`) waits for the first.
   */
  leave(): Promise<void> {
    return this.farewell((machine, now) => machine.leave(now));
  }

  /** Host only: ends the session for everyone (the host's `leave`). */
  closeSession(): Promise<void> {
    return this.leave();
  }

  /**
   * The formal disconnect (seed 003): on a resumable connection the connection token goes
   * out once everything queued did, and the place can no longer be resumed; otherwise
   * `leave`. Resolves when the connection is over. After `leave()` (or a first
   * `disconnect()`) it only waits for that one.
   */
  disconnect(): Promise<void> {
    return this.farewell((machine, now) => machine.disconnect(now));
  }

  // ---- the driver ----

  /** Runs a command on the machine (which throws when it refuses), then carries it out. */
  private command(run: (machine: Machine, now: number) => void): void {
    run(this.runningMachine(), this.env.now());
    this.pump();
  }

  /** The machine, while the client runs. */
  private runningMachine(): Machine {
    if (!this.machine || this.finished) throw new LoudSyncError("not_connected", "not connected");
    return this.machine;
  }

  /** Sends `media_token`; `waiter` (if any) gets the reply. */
  private askMediaToken(waiter: Waiter<MediaGrant> | null): void {
    const machine = this.runningMachine();
    machine.requestMediaToken(this.env.now());
    this.mediaReplies.push(waiter);
    this.pump();
  }

  /**
   * `leave` and `disconnect`: resolves when the connection is over. Once one is under way a
   * later call just waits for it: no second `leave` frame, and the leave timeout still runs
   * from the first call (a button pressed twice must not push it back).
   */
  private farewell(run: (machine: Machine, now: number) => void): Promise<void> {
    const machine = this.machine;
    if (!machine || this.finished) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const underWay = this.leaving.length > 0;
      this.leaving.push(resolve);
      if (underWay) return;
      const now = this.env.now();
      run(machine, now);
      // The leave timeout runs from now, or, if the machine queued the leave while
      // resuming, from when it goes out (the resume window bounds the wait until then).
      if (machine.leaveQueued()) this.leaveWaitsForResume = true;
      else if (!this.leaveWaitsForResume) this.leaveDeadline = now + this.leaveTimeoutMs();
      this.pump();
    });
  }

  private leaveTimeoutMs(): number {
    return this.config?.leaveTimeoutMs ?? 2000;
  }

  /** Carries out every action the machine has, then re-arms the timer (or finishes). */
  private pump(): void {
    const machine = this.machine;
    // A listener's command while actions are being carried out: the loop below takes it.
    if (!machine || this.pumping || this.finished) return;
    this.pumping = true;
    try {
      for (let action = machine.pollAction(); action; action = machine.pollAction()) {
        this.carryOut(action);
      }
    } finally {
      this.pumping = false;
    }
    if (machine.isEnded()) {
      this.finish();
      return;
    }
    if (this.leaveWaitsForResume && !machine.leaveQueued()) {
      // The leave queued while resuming went out: now wait for the server's close.
      this.leaveWaitsForResume = false;
      this.leaveDeadline = this.env.now() + this.leaveTimeoutMs();
    }
    this.arm();
  }

  private carryOut(action: Action): void {
    switch (action.type) {
      case "connect":
        this.openSocket();
        break;
      case "send":
        this.socket?.send(action.text);
        break;
      case "closeSocket":
        this.dropSocket(this.peerSilent);
        break;
      case "emit":
        this.emit(action.event);
        break;
    }
  }

  /** Opens a new socket (forgetting any old one); its reports go to the machine. */
  private openSocket(): void {
    this.dropSocket();
    const machine = this.runningMachine();
    // A listener ended the client (leave() on the event before this action): nothing to open.
    if (machine.isEnded()) return;
    const url = this.config?.url ?? this.options.url;
    const token = {};
    const current = (): boolean => this.socketToken === token && !this.finished;
    this.socketToken = token;
    this.connectDeadline = this.env.now() + CONNECT_TIMEOUT_MS;
    this.socket = openSocket(this.WebSocketClass as WebSocketConstructor, url, {
      opened: () => {
        if (!current()) return;
        this.connectDeadline = null;
        machine.handleConnected(this.env.now());
        this.pump();
      },
      text: (text) => {
        if (!current()) return;
        const now = this.env.now();
        machine.handleActivity(now);
        machine.handleText(now, text);
        this.pump();
      },
      closed: (close) => {
        if (!current()) return;
        this.forgetSocket();
        machine.handleClosed(this.env.now(), close);
        this.pump();
      },
      failed: (reason) => {
        if (!current()) return;
        this.forgetSocket();
        machine.handleConnectFailed(this.env.now(), `${url}: ${reason}`);
        this.pump();
      },
    });
  }

  /** Closes the current socket (1000; dropped when `abrupt`) and forgets it. */
  private dropSocket(abrupt = false): void {
    const socket = this.socket;
    this.forgetSocket();
    socket?.detach(abrupt);
  }

  private forgetSocket(): void {
    this.socket = null;
    this.socketToken = null;
    this.connectDeadline = null;
  }

  /** Settles what the event answers, then delivers it. */
  private emit(event: ClientEvent): void {
    const first = this.first;
    if (first) {
      if (event.type === "welcome") {
        this.first = null;
        first.resolve();
      } else if (event.type === "error") {
        this.first = null;
        const { code, message } = event.error;
        first.reject(new LoudSyncError("rejected", `join rejected: ${message} (${code})`, event.error));
      } else if (event.type === "failed") {
        this.first = null;
        first.reject(new LoudSyncError("connect", event.reason));
      }
    }
    this.answerMediaToken(event);
    this.hub.deliver(event);
  }

  /** Hands a `media_token` reply to the oldest request; a fresh join or refused resume voids them all. */
  private answerMediaToken(event: ClientEvent): void {
    if (event.type === "welcome" || event.type === "resumeFailed") {
      this.voidMediaReplies("joined afresh before the media token came (a new member id)");
      return;
    }
    if (event.type === "mediaToken") {
      this.mediaReplies.shift()?.resolve(event.grant);
    } else if (event.type === "error" && event.error.code === "media_unavailable") {
      const { message } = event.error;
      this.mediaReplies.shift()?.reject(new LoudSyncError("refused", `refused: ${message}`, event.error));
    }
  }

  private voidMediaReplies(why: string): void {
    for (const waiter of this.mediaReplies.splice(0)) waiter?.reject(new LoudSyncError("not_connected", why));
  }

  /** Sets the one timer to the earliest deadline (the machine's, the leave's, the connect's). */
  private arm(): void {
    const deadlines = [this.machine?.pollTimeout(), this.leaveDeadline, this.connectDeadline];
    let at: number | null = null;
    for (const deadline of deadlines) {
      if (typeof deadline === "number" && (at === null || deadline < at)) at = deadline;
    }
    if (at === this.timerAt && this.timer !== null) return;
    this.disarm();
    if (at === null) return;
    const delay = Math.min(Math.max(at - this.env.now(), 0), MAX_TIMER_MS);
    this.timerAt = at;
    this.timer = this.env.setTimer(() => this.onTimer(), delay);
  }

  private disarm(): void {
    if (this.timer !== null) this.env.clearTimer(this.timer);
    this.timer = null;
    this.timerAt = null;
  }

  /** The timer fired: whichever deadlines passed are handled, then the timer is re-armed. */
  private onTimer(): void {
    this.timer = null;
    this.timerAt = null;
    const machine = this.machine;
    if (!machine || this.finished) return;
    const now = this.env.now();
    this.peerSilent = true;
    try {
      if (this.leaveDeadline !== null && this.leaveDeadline <= now) {
        this.leaveDeadline = null;
        machine.handleLeaveTimeout();
      }
      if (this.connectDeadline !== null && this.connectDeadline <= now && this.socket && !this.socket.isOpen) {
        const url = this.config?.url ?? this.options.url;
        this.dropSocket(true);
        machine.handleConnectFailed(now, `${url}: no connection within ${CONNECT_TIMEOUT_MS / 1000} s`);
      }
      const due = machine.pollTimeout();
      if (due !== undefined && due <= now) machine.handleTimeout(now);
      this.pump();
    } finally {
      this.peerSilent = false;
    }
  }

  /** The machine ended: close the socket, stop the timer, settle every promise, end the iterators. */
  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.disarm();
    this.dropSocket();
    this.leaveDeadline = null;
    this.leaveWaitsForResume = false;
    for (const done of this.leaving.splice(0)) done();
    this.voidMediaReplies("the client ended before the media token came");
    const first = this.first;
    this.first = null;
    first?.reject(new LoudSyncError("connect", "the client ended before joining"));
    this.hub.close();
  }
}

/** The environment's own WebSocket (browsers, React Native, Node 22+), if any. */
function globalWebSocket(): WebSocketConstructor | null {
  const found = (globalThis as { WebSocket?: unknown }).WebSocket;
  return typeof found === "function" ? (found as WebSocketConstructor) : null;
}

/** Throws kind `invalid` unless `value` is a JSON object (not null, not an array). */
function requireObject(value: unknown): void {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new LoudSyncError("invalid", "the session state must be a JSON object");
  }
}

/** A deep copy of JSON data (what the machine holds came from the wire). */
function cloneJson<T>(value: T): T {
  return JSON.parse(JSON.stringify(value)) as T;
}
