/**
 * machine.ts: the client's rules as a sans-IO state machine (a port of the Rust SDK's
 * crates/client/src/machine.rs): connection states, join, heartbeats and pings, latency,
 * the member table, silence detection, reconnection with its attempts, and the resume
 * layer: the `token` handshake before a pipelined `join`, numbered frames both ways with
 * acks, and the resume of an unclean drop on a new socket. The resume layer's bookkeeping
 * (buffers, acks, pacing, which closes end a place) is in resume.ts, the handoff layer's
 * (host, term, state, readiness, the pending handoff) in handoff.ts, the wire in
 * protocol.ts; the handling of server frames once joined is in machine-frames.ts. This
 * file holds the flow.
 *
 * Resume: on a resumable connection (the handshake done, `welcome` with `resumable: true`)
 * a drop that the frames before it did not announce (own `leave` or formal disconnect,
 * `kicked`, `session_closed`) and whose close code does not end the place (4000, 1009,
 * 1002, 1007) is resumed: attempts go on, the reconnection policy's delay apart, until the
 * resume window has passed since the drop. Meanwhile the member table, id and session stay,
 * and what the application sends is queued, a `leave` or formal disconnect too (sent after
 * the rest; if the resume is refused or the window passes, the client just ends). On
 * `resumed` the unacknowledged frames are sent again (original `seq`), then the queue,
 * paced; the replayed server frames are handled as usual, duplicates dropped by `seq`. A
 * refused resume (`resumeFailed`) is followed by a fresh handshake and `join` on the same
 * socket, except for `session_closed` or a leave given while away. A resuming host resumes
 * (its session is held for it), so the host rule below applies to plain connections only.
 *
 * What is retried: a lost connection (drop, silence, server restart), and on a rejoin the
 * transient refusals `already_joined` and `session_not_found`. What is not: `kicked`,
 * `session_closed`, any refusal of the first join, the access refusals (password, token,
 * host role, attempts) at any join, and a host's lost connection other than a server going
 * away (close 1001): the server ends a session when its host's connection ends, so a
 * reconnecting host would silently open a new, empty session under the same id; the
 * machine reports `sessionClosed` instead.
 *
 * The driver (client.ts) owns the socket and the clock; this machine owns every decision.
 * It takes inputs through `handle*` methods with the current time (ms on a monotonic clock)
 * and tells the driver what to do through `pollAction()` and `pollTimeout()`. It never
 * reads a clock and never throws out of a `handle*` method; commands throw `LoudSyncError`.
 */
import type { ClientConfig } from "./config.js";
import { delayBefore } from "./config.js";
import { LoudSyncError } from "./errors.js";
import type { ClientEvent, ConnectionState, LinkState, PendingHandoff, Role, ServerError } from "./events.js";
import type { MemberInfo, ResumeFailure, SessionInfo } from "./types.js";
import {
  CLOSE_CODE,
  TOKEN_LEN,
  decodeServer,
  describeServerError,
  encodeClient,
  isDecodeFailure,
  jsonText,
  mergeTokens,
  validToken,
  PROTOCOL_VERSION,
} from "./protocol.js";
import type { ClientMessage, Received, ServerMessage } from "./protocol.js";
import { Inbox, Outbox, Pacer, closeEndsPlace, lastSeqOf, localToken } from "./resume.js";
import { Control } from "./handoff.js";
import { copyJson, copyMember, handleSessionMessage } from "./machine-frames.js";

/** What the machine asks its driver to do. */
export type Action =
  /** Open a new socket; report `handleConnected` or `handleConnectFailed`. */
  | { type: "connect" }
  /** Send this text frame. */
  | { type: "send"; text: string }
  /** Close the socket (a lost connection the machine detected itself, or the end). */
  | { type: "closeSocket" }
  /** Deliver this event to the application. */
  | { type: "emit"; event: ClientEvent };

/** Where the connection is (the Rust `Phase`). */
export type Phase =
  /** Not started. */
  | { kind: "idle" }
  /** A socket is being opened; `attempt` 0 is the first connect. */
  | { kind: "connecting"; attempt: number }
  /** Handshake step 1 sent, waiting for the server's token. */
  | { kind: "handshake"; attempt: number; deadline: number }
  /** `join` sent (after handshake step 3, on a resumable connection), waiting for `welcome`. */
  | { kind: "joining"; attempt: number; deadline: number }
  /** The resume frame sent, waiting for `resumed` or `resume_failed`. */
  | { kind: "resuming"; attempt: number; deadline: number }
  /** Joined. */
  | { kind: "connected" }
  /** Waiting before reconnection attempt `attempt`. */
  | { kind: "waiting"; attempt: number; at: number }
  /** Over: left, kicked, session closed, rejected, or failed. */
  | { kind: "ended" };

/** How the current socket is expected to end. */
export type Ending =
  /** Not ending: a close is a lost connection. */
  | { kind: "none" }
  /** This client sent `leave` or its formal disconnect. */
  | { kind: "leaving" }
  /** `kicked` arrived. */
  | { kind: "kicked"; reason: string }
  /** `session_closed` arrived; final unless the server closes with 1001 (going away). */
  | { kind: "sessionClosed"; reason: string };

/** A leave asked for while the place was being resumed: sent once resumed. */
type Farewell = "leave" | "disconnect";

const NOT_CONNECTED = (): LoudSyncError => new LoudSyncError("not_connected", "not connected");
const QUEUE_FULL = (): LoudSyncError => new LoudSyncError("queue_full", "send queue full");

/**
 * The client state machine. Construct it with the resolved config and the current time
 * (monotonic ms and Unix ms, which anchor its stamps), call `start`, then feed it the
 * socket's events and the timer, draining `pollAction()` after every call.
 */
export class Machine {
  /** The settings. */
  readonly config: ClientConfig;
  /** Where the connection is. @internal (read by machine-frames.ts; not for applications) */
  phase: Phase = { kind: "idle" };
  private connection: ConnectionState = "disconnected";
  /** How the current socket is expected to end. @internal */
  ending: Ending = { kind: "none" };
  /** This member's id, while joined. @internal (use `clientId()`) */
  ownId: string | null = null;
  /** The session, while joined. @internal (use `session()`) */
  sessionInfo: SessionInfo | null = null;
  /** The member table: host first, then join order; replaced, never mutated, on a change. @internal (use `members()`) */
  table: MemberInfo[] = [];
  /** The last round trip measured, in ms. @internal (use `latency()`) */
  lastLatency: number | null = null;
  private lastHeard: number;
  private nextBeat: number;
  /** The reason the connection was last lost, for `failed`. */
  private lostReason = "";
  private gen = 0;
  private readonly actions: Action[] = [];
  private actionsHead = 0;
  /** Unix ms at monotonic `epochNow` (to stamp messages without a wall clock). */
  private readonly epochNow: number;
  private readonly epochUnix: number;
  /** The resume link's state. */
  private link: LinkState = "DISCONNECTED";
  /** This handshake's local token and, once it arrived, the server's. */
  private localToken: string | null = null;
  private remoteToken: string | null = null;
  /** The connection token, from handshake step 4 until the place is given up. */
  private token: string | null = null;
  /** Whether the current (or held) connection was welcomed as resumable. @internal (use `isResumable()`) */
  resumable = false;
  /** While the server holds this client's place after a drop: until when to try resuming. */
  private resumeUntil: number | null = null;
  /** Numbered frames sent and unacknowledged, or queued. @internal */
  readonly outbox = new Outbox();
  /** Numbered server frames received, and the ack due. */
  private readonly inbox = new Inbox();
  /** Paces numbered sends under the server's rate limit. */
  private readonly pacer: Pacer;
  /** A formal disconnect is waiting for the queue to go out. */
  private disconnectPending = false;
  /** A leave (or formal disconnect) given while resuming, to send once resumed. */
  private farewell: Farewell | null = null;
  /** The handoff layer: host, term, state, readiness, the pending handoff. @internal */
  readonly control = new Control();
  /** The role last announced with `roleChanged`. */
  private shownRole: Role = "idle";

  /** A machine for `config`; `now` (monotonic ms) and `unixMs` anchor its clock. */
  constructor(config: ClientConfig, now: number, unixMs: number) {
    this.config = config;
    this.lastHeard = now;
    this.nextBeat = now;
    this.epochNow = now;
    this.epochUnix = Math.floor(unixMs);
    this.pacer = new Pacer(config.sendRate, config.sendBurst, now);
  }

  // ---------------------------------------------------------------- reading

  /** Whether the connection is over for good (left, kicked, closed, rejected or failed). */
  isEnded(): boolean {
    return this.phase.kind === "ended";
  }

  /** The current connection state. */
  state(): ConnectionState {
    return this.connection;
  }

  /** The resume link's state. */
  linkState(): LinkState {
    return this.link;
  }

  /** Whether the current connection is resumable (welcomed so, or held while resuming). */
  isResumable(): boolean {
    return this.resumable;
  }

  /** Whether a command given now would be taken: connected, or (resume on) reconnecting with room. */
  acceptsCommands(): boolean {
    if (this.ending.kind !== "none" || this.farewell !== null) return false;
    if (this.phase.kind === "connected") {
      return !this.resumable || this.outbox.length < this.config.queueLimit;
    }
    return this.queues() && this.outbox.length < this.config.queueLimit;
  }

  /** Whether commands are refused only because `queueLimit` frames are waiting. */
  queueFull(): boolean {
    return (
      this.ending.kind === "none" &&
      this.farewell === null &&
      ((this.phase.kind === "connected" && this.resumable) || this.queues()) &&
      this.outbox.length >= this.config.queueLimit
    );
  }

  /** This member's id, while joined. */
  clientId(): string | null {
    return this.ownId;
  }

  /** The session, while joined. */
  session(): SessionInfo | null {
    return this.sessionInfo;
  }

  /** The member table: host first, then join order (do not mutate it). */
  members(): readonly MemberInfo[] {
    return this.table;
  }

  /** The last round-trip time this client measured, in ms. */
  latency(): number | null {
    return this.lastLatency;
  }

  /** A counter that changes whenever state, ids, members, latency or the handoff layer change. */
  generation(): number {
    return this.gen;
  }

  /** This client's role (see handoff.ts). */
  role(): Role {
    const kind = this.phase.kind;
    if (kind === "idle") return "idle";
    if (kind === "ended") return "disconnected";
    if (kind === "connected" || this.resumingPlace()) {
      return this.control.ready && !this.isHost() ? "handoff_ready" : "assigned";
    }
    return "connecting";
  }

  /** Whether this client is the session's host now, as far as it knows; false while not joined. */
  isHost(): boolean {
    return this.ownId !== null && this.control.isHost(this.ownId);
  }

  /** The current host's id, while joined (null in an HTTP-created session no host joined yet). */
  hostId(): string | null {
    return this.ownId === null ? null : this.control.hostId;
  }

  /** The highest term seen (1 at a session's creation, +1 per change of host); 0 before `welcome`. */
  term(): number {
    return this.control.term;
  }

  /** The session state (a JSON object; `{}` until known) and its version. Treat it as read-only. */
  sessionState(): { state: Record<string, unknown>; version: number } {
    return { state: this.control.state, version: this.control.version };
  }

  /** The handoff this client is part of: its own request as host, or the offer it was sent. */
  pendingHandoff(): PendingHandoff | null {
    return this.control.pending;
  }

  /** Whether this client declared itself ready to take control (and is not the host). */
  isReady(): boolean {
    return this.control.ready && !this.isHost();
  }

  /**
   * The session's id: as the last `welcome` gave it (for a session this host opened without
   * one, the code the server assigned), else the configured one (null for a new session
   * before its `welcome`). Reconnections rejoin this id.
   */
  sessionId(): string | null {
    return this.control.assignedSession ?? (this.config.sessionId !== "" ? this.config.sessionId : null);
  }

  // ---------------------------------------------------------------- driving

  /** The next thing to do. Once nothing else is left, a change of `role()` is announced. */
  pollAction(): Action | undefined {
    if (this.actionsHead >= this.actions.length) this.syncRole();
    if (this.actionsHead >= this.actions.length) {
      this.actions.length = 0;
      this.actionsHead = 0;
      return undefined;
    }
    const action = this.actions[this.actionsHead];
    this.actions[this.actionsHead] = undefined as unknown as Action;
    this.actionsHead += 1;
    return action;
  }

  /** When `handleTimeout` must next be called (monotonic ms), if at all. */
  pollTimeout(): number | undefined {
    const p = this.phase;
    switch (p.kind) {
      case "connected": {
        let at = Math.min(this.nextBeat, this.lastHeard + this.config.silenceTimeoutMs);
        if (this.resumable) {
          const ack = this.inbox.deadline();
          if (ack !== null) at = Math.min(at, ack);
          if (this.outbox.hasUnsent()) at = Math.min(at, this.pacer.readyAt());
        }
        return at;
      }
      case "handshake":
      case "joining":
      case "resuming":
        return p.deadline;
      case "waiting":
        return p.at;
      default:
        return undefined;
    }
  }

  /** Starts the first connection. */
  start(_now: number): void {
    if (this.phase.kind !== "idle") return;
    this.phase = { kind: "connecting", attempt: 0 };
    this.setConnection("connecting");
    this.push({ type: "connect" });
  }

  /** The socket is open: resume (the server holds the place), start the handshake, or join. */
  handleConnected(now: number): void {
    const p = this.phase;
    if (p.kind !== "connecting") return;
    const attempt = p.attempt;
    this.ending = { kind: "none" };
    this.lastHeard = now;
    this.pacer.refill(now);
    const deadline = now + this.config.joinTimeoutMs;
    if (this.resumeUntil !== null && this.token !== null) {
      this.phase = { kind: "resuming", attempt, deadline };
      const frame = this.frame(now, { type: "token", token: this.token, lastSeq: this.inbox.last() });
      this.inbox.resumeSent();
      this.push({ type: "send", text: frame });
    } else if (this.config.resume) {
      this.startHandshake(now, attempt, deadline);
    } else {
      this.phase = { kind: "joining", attempt, deadline };
      this.sendJoin(now);
    }
  }

  /** Handshake step 1 on the current socket, with a fresh local token. */
  private startHandshake(now: number, attempt: number, deadline: number): void {
    const local = localToken(this.config.random);
    const frame = this.frame(now, { type: "token", token: local });
    this.localToken = local;
    this.remoteToken = null;
    this.token = null;
    this.resumable = false;
    this.phase = { kind: "handshake", attempt, deadline };
    this.setLink("OPEN");
    this.push({ type: "send", text: frame });
  }

  private sendJoin(now: number): void {
    const device = this.config.device;
    // A host that handed control over comes back as a member (decision 24).
    const type = this.control.yielded && device.type === "host" ? "client" : device.type;
    const frame = this.frame(now, {
      type: "join",
      sessionId: this.sessionId() ?? undefined,
      sessionName: this.config.sessionName,
      protocolVersion: PROTOCOL_VERSION,
      deviceInfo: { id: device.id, name: device.name, type },
      password: this.config.password,
      token: this.config.token,
    });
    this.push({ type: "send", text: frame });
  }

  /** The socket could not be opened. */
  handleConnectFailed(now: number, reason: string): void {
    const p = this.phase;
    if (p.kind !== "connecting") return;
    this.attemptFailed(now, p.attempt, `could not connect: ${reason}`);
  }

  /** A frame arrived (control frames included): the server is alive. */
  handleActivity(now: number): void {
    this.lastHeard = now;
  }

  /** A text frame arrived. A frame that cannot be read is ignored (never thrown). */
  handleText(now: number, text: string): void {
    this.lastHeard = now;
    const decoded = decodeServer(text);
    if (isDecodeFailure(decoded)) return;
    const { received, timestamp, seq } = decoded;
    if (this.phase.kind === "connected" && this.resumable && seq !== undefined) {
      if (this.inbox.arrive(seq, now, this.config.ackIntervalMs) === "duplicate") return;
    }
    this.dispatch(now, received, timestamp);
    if (this.phase.kind === "connected" && this.resumable) this.sendAckIfDue(now);
  }

  /** The Rust `match (phase, received)`, arm by arm in the same order. */
  private dispatch(now: number, received: Received, timestamp: number | undefined): void {
    const p = this.phase;
    const message: ServerMessage | null = received.kind === "known" ? received.message : null;
    if (p.kind === "handshake" && message?.type === "token" && message.token.length === TOKEN_LEN && validToken(message.token)) {
      // Step 2 arrived: confirm (step 3) and pipeline the join behind it.
      const frame = this.frame(now, { type: "token", token: this.localToken ?? "" });
      this.push({ type: "send", text: frame });
      this.remoteToken = message.token;
      this.setLink("PRECONNECTED");
      this.phase = { kind: "joining", attempt: p.attempt, deadline: p.deadline };
      this.sendJoin(now);
      return;
    }
    if (p.kind === "handshake" && received.kind === "error") {
      // A server without the handshake (or refusing it): join plainly, on this socket.
      this.localToken = null;
      this.setLink("DISCONNECTED");
      this.phase = { kind: "joining", attempt: p.attempt, deadline: p.deadline };
      this.sendJoin(now);
      return;
    }
    if (p.kind === "joining" && message?.type === "token" && this.remoteToken === message.token) {
      // Step 4: the server confirms; both sides hold the connection token.
      if (this.localToken !== null) {
        this.token = mergeTokens(this.localToken, message.token);
        this.setLink("CONNECTED");
      }
      return;
    }
    if (p.kind === "resuming" && message?.type === "token" && this.token === message.token) {
      // The server's confirmation of the resume (seed 003 step 15).
      this.setLink("CONNECTED");
      return;
    }
    if (p.kind === "resuming" && message?.type === "resumed") {
      this.resumed(now, message.lastSeq, message.replayed);
      return;
    }
    if (p.kind === "resuming" && message?.type === "resume_failed") {
      this.resumeRefused(now, message.reason);
      return;
    }
    if (p.kind === "resuming" && received.kind === "error") {
      // The resume frame itself was refused (the place stays held): a failed attempt,
      // retried within the window.
      this.push({ type: "closeSocket" });
      this.attemptFailed(now, p.attempt, `resume refused: ${describeServerError(received.error)}`);
      return;
    }
    if ((p.kind === "joining" || p.kind === "connected") && received.kind === "unknown") {
      this.emit({ type: "unknown", kind: received.type, raw: received.raw });
      return;
    }
    if (p.kind === "joining" && message?.type === "welcome") {
      this.welcome(now, message);
      return;
    }
    if (p.kind === "joining" && received.kind === "error") {
      this.joinRefused(now, p.attempt, received.error);
      return;
    }
    if (p.kind === "connected" && message !== null) {
      handleSessionMessage(this, now, message, timestamp);
      return;
    }
    if (p.kind === "connected" && received.kind === "error") {
      let shown = true;
      if (this.resumable) {
        const last = lastSeqOf(received.error.details);
        if (last !== undefined) {
          // A gap (or a frame the rate limit dropped): everything after `last` again. The
          // gap's `invalid_message` is this layer's business; `rate_limited` is still shown.
          this.outbox.rewind(last);
          this.pump(now);
          shown = received.error.code === "rate_limited";
        }
      }
      if (shown) this.emit({ type: "error", error: received.error });
    }
  }

  /** `welcome` while joining: connected, with the session, its host and its state. */
  private welcome(now: number, message: Extract<ServerMessage, { type: "welcome" }>): void {
    this.phase = { kind: "connected" };
    this.welcomed(message.resumable);
    this.nextBeat = now;
    const info = message.sessionInfo;
    const redeclare = this.control.welcomed(message.clientId, info.id, info.hostId ?? null, message.snapshot);
    this.ownId = message.clientId;
    this.sessionInfo = { ...info };
    this.table = [];
    this.bump();
    this.setConnection("connected");
    this.emit({ type: "welcome", clientId: message.clientId, session: { ...info } });
    if (message.snapshot) {
      this.emit({
        type: "sessionState",
        state: copyJson(this.control.state),
        version: this.control.version,
        term: this.control.term,
        updatedBy: null,
      });
    }
    if (redeclare) {
      // Behind whatever was queued while away, like any command.
      this.outbox.push(this.frame(now, { type: "handoff_ready", ready: true }));
    }
    this.flush(now);
  }

  /**
   * An `error` before `welcome` refuses the join, a code this version does not know
   * included; only a rejoin's transient `already_joined` / `session_not_found` is retried.
   */
  private joinRefused(now: number, attempt: number, error: ServerError): void {
    const retryable = error.code === "already_joined" || error.code === "session_not_found";
    this.push({ type: "closeSocket" });
    if (attempt > 0 && retryable) {
      this.attemptFailed(now, attempt, `rejoin refused: ${describeServerError(error)}`);
    } else {
      this.emit({ type: "error", error });
      if (attempt > 0) this.fail(`rejoin refused: ${describeServerError(error)}`);
      else this.end();
    }
  }

  /**
   * `welcome` arrived: numbering starts if the server made the connection resumable;
   * otherwise the handshake (if any) is forgotten and this is a plain connection.
   */
  private welcomed(resumable: boolean): void {
    if (resumable && this.token === null && this.localToken !== null && this.remoteToken !== null) {
      // The step-4 token should have come first; derive the token anyway.
      this.token = mergeTokens(this.localToken, this.remoteToken);
    }
    this.resumable = resumable && this.token !== null;
    this.localToken = null;
    this.remoteToken = null;
    this.inbox.reset();
    if (this.resumable) {
      this.outbox.start();
      this.setLink("CONNECTED");
    } else {
      this.token = null;
      this.setLink("DISCONNECTED");
    }
  }

  /** Sends what waited for the connection: numbered and paced, or plain in order. */
  private flush(now: number): void {
    if (this.resumable) {
      this.pump(now);
    } else {
      for (const plain of this.outbox.takeWaiting()) this.push({ type: "send", text: plain });
    }
  }

  /** Puts numbered frames on the socket as the pacer allows; then a pending formal disconnect. @internal */
  pump(now: number): void {
    if (this.phase.kind !== "connected" || !this.resumable) return;
    while (this.outbox.hasUnsent() && this.pacer.take(now)) {
      const frame = this.outbox.nextFrame();
      if (frame !== undefined) this.push({ type: "send", text: frame });
    }
    if (this.disconnectPending && !this.outbox.hasUnsent()) {
      this.disconnectPending = false;
      if (this.token !== null) this.push({ type: "send", text: this.frame(now, { type: "token", token: this.token }) });
      this.setLink("DISCONNECTED");
    }
  }

  private sendAckIfDue(now: number): void {
    const seq = this.inbox.ackDue(now, this.config.ackEvery);
    if (seq !== undefined) this.push({ type: "send", text: this.frame(now, { type: "ack", seq }) });
  }

  /** `resumed`: the same place, on this socket. */
  private resumed(now: number, lastSeq: number, replayed: number): void {
    this.phase = { kind: "connected" };
    this.resumeUntil = null;
    this.nextBeat = now;
    this.outbox.resumed(lastSeq);
    this.setLink("CONNECTED");
    this.setConnection("connected");
    this.emit({ type: "resumed", replayed });
    // A leave given while away goes out right behind the resend (and what was queued
    // before it); the server then closes with 1000 `left`.
    const farewell = this.farewell;
    this.farewell = null;
    if (farewell === "leave") {
      this.ending = { kind: "leaving" };
      this.outbox.push(this.frame(now, { type: "leave" }));
    } else if (farewell === "disconnect") {
      this.ending = { kind: "leaving" };
      this.disconnectPending = true;
    }
    this.pump(now);
  }

  /**
   * `resume_failed`: the place is gone. A fresh handshake and join on this socket follow,
   * unless the session itself ended or the application asked to leave meanwhile.
   */
  private resumeRefused(now: number, reason: ResumeFailure): void {
    const leaving = this.farewell !== null;
    const unconfirmed = this.forgetPlace();
    this.clearSession();
    const rejoining = reason !== "session_closed" && !leaving;
    this.emit({ type: "resumeFailed", reason, unconfirmed, rejoining });
    if (rejoining) {
      // The first attempt of a fresh join (the reconnection policy's attempts apply).
      this.startHandshake(now, 1, now + this.config.joinTimeoutMs);
    } else {
      this.push({ type: "closeSocket" });
      if (reason === "session_closed") {
        this.emit({ type: "sessionClosed", reason: "the session ended while this client was away" });
      }
      this.end();
    }
  }

  /**
   * Gives up the resumable place (numbering, tokens, window); returns how many sent frames
   * were never acknowledged. Unsent ones stay queued for the next connection.
   */
  private forgetPlace(): number {
    const unconfirmed = this.outbox.giveUp();
    this.inbox.reset();
    this.token = null;
    this.localToken = null;
    this.remoteToken = null;
    this.resumable = false;
    this.resumeUntil = null;
    this.disconnectPending = false;
    this.farewell = null;
    this.setLink("DISCONNECTED");
    return unconfirmed;
  }

  /** The socket ended; `close` is the server's close code and reason if a close frame came. */
  handleClosed(now: number, close: { code: number; reason: string } | null): void {
    const p = this.phase;
    const closeCode = close?.code;
    let attempt: number;
    if (p.kind === "connected") attempt = 0;
    else if (p.kind === "handshake" || p.kind === "joining" || p.kind === "resuming") attempt = p.attempt;
    else return;
    const why =
      close === null
        ? "connection dropped"
        : close.reason === ""
          ? `connection closed by the server (${close.code})`
          : `connection closed by the server (${close.code} ${close.reason})`;
    if (p.kind === "resuming") {
      // The resume's own socket ended: a failed attempt; the place is still held.
      this.ending = { kind: "none" };
      this.emit({ type: "connectionLost", reason: why });
      this.attemptFailed(now, attempt, why);
      return;
    }
    const joined = p.kind === "connected";
    const ending = this.ending;
    this.ending = { kind: "none" };
    switch (ending.kind) {
      case "leaving":
        this.end();
        return;
      case "kicked":
        this.emit({ type: "kicked", reason: ending.reason });
        this.end();
        return;
      case "sessionClosed":
        if (closeCode !== CLOSE_CODE.GOING_AWAY) {
          this.emit({ type: "sessionClosed", reason: ending.reason });
          this.end();
        } else {
          // A server going away ended the session: nothing to resume, rejoin afresh.
          this.forgetPlace();
          this.lose(now, attempt, `server going away: ${ending.reason}`);
        }
        return;
      case "none":
        break;
    }
    if (joined && this.resumable && !closeEndsPlace(closeCode)) {
      this.dropResumable(now, why);
    } else if (joined && this.resumable && closeCode === CLOSE_CODE.REPLACED) {
      // Another socket resumed this place: it is that socket's now.
      this.forgetPlace();
      this.emit({ type: "connectionLost", reason: why });
      this.fail(`${why}: another connection resumed this client's place`);
    } else if (closeCode === CLOSE_CODE.GOING_AWAY) {
      this.forgetPlace();
      this.lose(now, attempt, "server going away");
    } else {
      // A plain connection, or a close that ends the place (1009, 1002, 1007).
      this.forgetPlace();
      if (this.isHost() && joined) this.hostLost(why);
      else this.lose(now, attempt, why);
    }
  }

  /** A resumable connection dropped uncleanly: hold on to everything and resume. */
  private dropResumable(now: number, why: string): void {
    this.emit({ type: "connectionLost", reason: why });
    this.outbox.socketLost();
    this.resumeUntil = now + this.config.resumeWindowMs;
    this.setLink("RECONNECTING");
    this.lostReason = why;
    this.scheduleResume(now, 1);
  }

  /** Waits before resume attempt `attempt`, or ends once the window has passed. */
  private scheduleResume(now: number, attempt: number): void {
    const until = this.resumeUntil;
    if (until === null) return;
    if (this.config.reconnect.attempts === 0 || now >= until) {
      const reason = this.lostReason;
      this.lostReason = "";
      if (this.farewell !== null) {
        // The application asked to leave: the server's window has ended the place, which
        // is the end it asked for, if late.
        this.push({ type: "closeSocket" });
        this.end();
      } else {
        this.fail(`not resumed within the resume window: ${reason}`);
      }
      return;
    }
    const delay = delayBefore(this.config.reconnect, attempt, this.config.random);
    this.phase = { kind: "waiting", attempt, at: Math.min(now + delay, until) };
    this.setConnection("reconnecting");
  }

  /** Timers: heartbeat and ping, silence, acks, paced sends, join and resume timeouts, delays. */
  handleTimeout(now: number): void {
    const p = this.phase;
    switch (p.kind) {
      case "connected": {
        if (now - this.lastHeard >= this.config.silenceTimeoutMs) {
          this.push({ type: "closeSocket" });
          const why = "no sign of the server within the silence timeout";
          if (this.resumable) this.dropResumable(now, why);
          else if (this.isHost()) this.hostLost(why);
          else this.lose(now, 0, why);
          return;
        }
        if (now >= this.nextBeat) {
          this.nextBeat = now + this.config.heartbeatIntervalMs;
          this.push({ type: "send", text: this.frame(now, { type: "heartbeat" }) });
          this.push({ type: "send", text: this.frame(now, { type: "ping", timestamp: this.unixMs(now) }) });
        }
        if (this.resumable) {
          this.sendAckIfDue(now);
          this.pump(now);
        }
        return;
      }
      case "handshake":
      case "joining":
      case "resuming": {
        if (now < p.deadline) return;
        this.push({ type: "closeSocket" });
        const what = p.kind === "resuming" ? "no resume answer within the join timeout" : "no welcome within the join timeout";
        this.attemptFailed(now, p.attempt, what);
        return;
      }
      case "waiting": {
        if (now < p.at) return;
        this.phase = { kind: "connecting", attempt: p.attempt };
        if (this.resumeUntil !== null) {
          this.emit({ type: "resuming", attempt: p.attempt, windowLeftMs: Math.max(this.resumeUntil - now, 0) });
        } else {
          this.emit({ type: "reconnecting", attempt: p.attempt, of: this.config.reconnect.attempts });
        }
        this.push({ type: "connect" });
        return;
      }
      default:
        return;
    }
  }

  /**
   * Sends `leave` (numbered and behind what is queued, on a resumable connection); the
   * server closes the socket. While a resumable place is being resumed the leave is queued
   * (`leaveQueued()`): on `resumed` it goes out right after the resend; if the resume is
   * refused or the window passes, the client ends without joining afresh. Otherwise, if not
   * connected, ends at once.
   */
  leave(now: number): void {
    if (this.resumingPlace()) {
      this.farewell ??= "leave";
      this.bump();
    } else if (this.phase.kind === "connected") {
      this.ending = { kind: "leaving" };
      const leave = this.frame(now, { type: "leave" });
      if (this.resumable) {
        this.outbox.push(leave);
        this.pump(now);
      } else {
        this.push({ type: "send", text: leave });
      }
    } else if (this.phase.kind !== "ended") {
      this.push({ type: "closeSocket" });
      this.end();
    }
  }

  /**
   * The formal disconnect (seed 003): on a resumable connection, sends the connection token
   * once everything queued went out; the server treats it as `leave` and the token can no
   * longer be resumed. While the place is being resumed it is queued like `leave`.
   * Otherwise the same as `leave`.
   */
  disconnect(now: number): void {
    if (this.resumingPlace()) {
      this.farewell ??= "disconnect";
      this.bump();
    } else if (this.phase.kind === "connected" && this.resumable) {
      this.ending = { kind: "leaving" };
      this.disconnectPending = true;
      this.pump(now);
    } else {
      this.leave(now);
    }
  }

  /** Whether a leave (or formal disconnect) given while resuming waits for the resume. */
  leaveQueued(): boolean {
    return this.farewell !== null;
  }

  /** Whether the server holds this client's place and the machine is resuming it. */
  private resumingPlace(): boolean {
    return this.resumeUntil !== null && this.token !== null && this.phase.kind !== "ended";
  }

  /** The driver gave up waiting for the server to close after `leave`. */
  handleLeaveTimeout(): void {
    if (this.ending.kind === "leaving") {
      this.push({ type: "closeSocket" });
      this.end();
    }
  }

  // ---------------------------------------------------------------- commands

  /** Sends a `ping` now (one is also sent every heartbeat interval). Never queued. */
  ping(now: number): void {
    if (this.phase.kind !== "connected" || this.ending.kind !== "none") throw NOT_CONNECTED();
    this.push({ type: "send", text: this.frame(now, { type: "ping", timestamp: this.unixMs(now) }) });
  }

  /** Host only: removes a member. */
  kick(now: number, memberId: string, reason?: string): void {
    requireString("memberId", memberId);
    optionalString("reason", reason);
    this.send(now, { type: "kick", memberId, reason });
  }

  /** Asks for a fresh member list. */
  requestMemberList(now: number): void {
    this.send(now, { type: "member_list" });
  }

  /** Asks for a media token; the reply is `mediaToken`, or `error` `media_unavailable`. */
  requestMediaToken(now: number): void {
    this.send(now, { type: "media_token" });
  }

  /** Sends application data (any JSON value) to everyone else, or to one member. */
  sendMessage(now: number, data: unknown, to?: string): void {
    optionalString("to", to);
    if (jsonText(data) === undefined) {
      throw new LoudSyncError("invalid", "message data must be a JSON value (not undefined, a function, a BigInt or a cycle)");
    }
    this.send(now, { type: "message", data, to });
  }

  /**
   * Host only: replaces the session state (`state_set` with `state`), refused with
   * `stale_version` unless `baseVersion` is the current version (when given). Sent with the
   * current term, so a host that lost control meanwhile is refused.
   */
  setState(now: number, state: Record<string, unknown>, baseVersion?: number): void {
    this.sendState(now, "state", state, baseVersion);
  }

  /** Host only: applies `patch` as an RFC 7396 merge patch (`null` removes a key). */
  patchState(now: number, patch: Record<string, unknown>, baseVersion?: number): void {
    this.sendState(now, "patch", patch, baseVersion);
  }

  private sendState(now: number, field: "state" | "patch", value: Record<string, unknown>, baseVersion?: number): void {
    if (typeof value !== "object" || value === null || Array.isArray(value) || jsonText(value) === undefined) {
      throw new LoudSyncError("invalid", `the ${field} must be a JSON object`);
    }
    if (baseVersion !== undefined && !(Number.isInteger(baseVersion) && baseVersion >= 0)) {
      throw new LoudSyncError("invalid", `baseVersion must be a non-negative integer (got ${baseVersion})`);
    }
    const term = this.control.term > 0 ? this.control.term : undefined;
    const message: ClientMessage =
      field === "state"
        ? { type: "state_set", state: value, baseVersion, term }
        : { type: "state_set", patch: value, baseVersion, term };
    this.send(now, message);
  }

  /** Host only: hands control to `targetId`, or to the member the server chooses. */
  requestHandoff(now: number, targetId?: string): void {
    optionalString("targetId", targetId);
    this.send(now, { type: "handoff_request", targetId });
    this.control.requested(targetId ?? null);
    this.bump();
  }

  /** As the candidate: takes control (the answer to `handoffRequested`). */
  acceptHandoff(now: number, handoffId: string): void {
    requireString("handoffId", handoffId);
    this.send(now, { type: "handoff_accept", handoffId });
    this.control.answered(handoffId);
    this.bump();
  }

  /** As the candidate: refuses control; `reason` is not passed on to the host. */
  declineHandoff(now: number, handoffId: string, reason?: string): void {
    requireString("handoffId", handoffId);
    optionalString("reason", reason);
    this.send(now, { type: "handoff_decline", handoffId, reason });
    this.control.answered(handoffId);
    this.bump();
  }

  /**
   * As a member: declares (or withdraws) readiness to take control; the role becomes
   * `handoff_ready` (or `assigned`). The host cannot declare itself ready (the server
   * answers `invalid_message`; the role stays).
   */
  setReady(now: number, ready: boolean): void {
    if (typeof ready !== "boolean") throw new LoudSyncError("invalid", "ready must be true or false");
    this.send(now, { type: "handoff_ready", ready });
    if (!this.isHost()) {
      this.control.ready = ready;
      this.editMembers((table) => this.control.overlayOwn(this.ownId, table));
      this.bump();
      this.syncRole();
    }
  }

  /**
   * A numbered command: sent at once on a plain connection; on a resumable one, numbered
   * and paced; while reconnecting with resume on, queued.
   */
  private send(now: number, message: ClientMessage): void {
    if (this.ending.kind !== "none" || this.farewell !== null) throw NOT_CONNECTED();
    const frame = this.frame(now, message);
    if (this.phase.kind === "connected" && !this.resumable) {
      this.push({ type: "send", text: frame });
    } else if (this.phase.kind === "connected" || this.queues()) {
      if (this.outbox.length >= this.config.queueLimit) throw QUEUE_FULL();
      this.outbox.push(frame);
      this.pump(now);
    } else {
      throw NOT_CONNECTED();
    }
  }

  /** Whether commands are queued now: resume on, and reconnecting (not the first connection). */
  private queues(): boolean {
    if (!this.config.resume) return false;
    const p = this.phase;
    switch (p.kind) {
      case "waiting":
      case "resuming":
        return true;
      case "connecting":
      case "handshake":
      case "joining":
        return p.attempt > 0;
      default:
        return false;
    }
  }

  // ---------------------------------------------------------------- endings

  /**
   * A joined host's plain connection was lost, not by a server going away: the server ended
   * the session with it. Rejoining as host would open a new, empty session under the same
   * id, so the host is told instead.
   */
  private hostLost(why: string): void {
    this.emit({ type: "connectionLost", reason: why });
    this.emit({
      type: "sessionClosed",
      reason:
        `this host's connection was lost (${why}); the server ends a session with its ` +
        "host's connection (or, with --on-host-loss handoff, passes it to a member), " +
        "so it was not re-created",
    });
    this.end();
  }

  /** The connection was lost: start reconnecting, or fail if no attempts are configured. */
  private lose(now: number, attempt: number, reason: string): void {
    this.emit({ type: "connectionLost", reason });
    this.clearSession();
    if (attempt > 0) {
      // Lost while rejoining: that attempt failed.
      this.attemptFailed(now, attempt, reason);
    } else {
      this.lostReason = reason;
      this.schedule(now, 1);
    }
  }

  private attemptFailed(now: number, attempt: number, reason: string): void {
    if (this.resumeUntil !== null) {
      this.lostReason = reason;
      this.scheduleResume(now, attempt + 1);
      return;
    }
    if (attempt === 0) {
      // The very first connection: nothing to reconnect to.
      this.emit({ type: "failed", reason });
      this.forgetAll();
      this.phase = { kind: "ended" };
      this.setConnection("failed");
      return;
    }
    this.lostReason = reason;
    this.schedule(now, attempt + 1);
  }

  private schedule(now: number, attempt: number): void {
    const policy = this.config.reconnect;
    if (attempt > policy.attempts) {
      const reason = this.lostReason;
      this.lostReason = "";
      this.fail(reason);
      return;
    }
    const delay = delayBefore(policy, attempt, this.config.random);
    this.phase = { kind: "waiting", attempt, at: now + delay };
    this.setConnection("reconnecting");
  }

  private fail(reason: string): void {
    this.clearSession();
    this.forgetAll();
    this.phase = { kind: "ended" };
    this.setConnection("failed");
    this.emit({ type: "failed", reason });
  }

  private end(): void {
    this.clearSession();
    this.forgetAll();
    this.phase = { kind: "ended" };
    this.setConnection("disconnected");
  }

  /** The end: the place, the queue and the link go. */
  private forgetAll(): void {
    this.forgetPlace();
    this.outbox.clear();
  }

  /**
   * The membership is gone (ended, or a fresh join follows): what the session told this
   * member goes with it, except the assigned session id, the readiness wish and whether
   * this host handed control over.
   */
  private clearSession(): void {
    this.ownId = null;
    this.sessionInfo = null;
    this.table = [];
    this.lastLatency = null;
    this.control.hostId = null;
    this.control.pending = null;
    this.bump();
  }

  // ---------------------------------------------------------------- helpers

  private setConnection(state: ConnectionState): void {
    if (this.connection !== state) {
      this.connection = state;
      this.bump();
      this.emit({ type: "stateChanged", state });
    }
    this.syncRole();
  }

  /** Announces a change of `role()` now, beside what caused it. @internal */
  syncRole(): void {
    const role = this.role();
    if (role !== this.shownRole) {
      this.shownRole = role;
      this.bump();
      this.emit({ type: "roleChanged", role });
    }
  }

  private setLink(link: LinkState): void {
    if (this.link !== link) {
      this.link = link;
      this.bump();
      this.emit({ type: "linkChanged", link });
    }
  }

  /** Replaces the member table with an edited copy (entries copied too). @internal */
  editMembers(edit: (table: MemberInfo[]) => void): void {
    const table = this.table.map(copyMember);
    edit(table);
    this.table = table;
  }

  private push(action: Action): void {
    this.actions.push(action);
  }

  /** Queues an event for the application. @internal */
  emit(event: ClientEvent): void {
    this.actions.push({ type: "emit", event });
  }

  /** Notes that what a snapshot shows changed. @internal */
  bump(): void {
    this.gen += 1;
  }

  /** The Unix time at monotonic `now`, in whole ms. @internal */
  unixMs(now: number): number {
    return this.epochUnix + Math.floor(Math.max(now - this.epochNow, 0));
  }

  /** The text frame of `message`, stamped with the current time. @internal */
  frame(now: number, message: ClientMessage): string {
    return encodeClient(message, this.unixMs(now));
  }
}

function requireString(name: string, value: unknown): void {
  if (typeof value !== "string") throw new LoudSyncError("invalid", `${name} must be a string`);
}

function optionalString(name: string, value: unknown): void {
  if (value !== undefined && typeof value !== "string") {
    throw new LoudSyncError("invalid", `${name} must be a string when given`);
  }
}
