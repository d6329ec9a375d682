/**
 * pairing/machine.ts: the crSocket state machine of seed 004 (controller/responder pairing),
 * sans-IO; a port of the Rust SDK's `crates/client/src/pairing.rs`, rule for rule.
 *
 * A `CrSocket` is one controller's or one responder's side of a pairing. The server is a
 * relay that keeps no partner table: who the partner is, when to ping, which events reach
 * the application and how fast events go out are all decided here. The machine does no I/O
 * and reads no clock: the driver feeds it inputs with the current time `now` (ms on a
 * monotonic clock) and drains its outputs (`pollTransmit` for the events to send,
 * `pollEvent` for what the application observes, `pollTimeout` for when to call
 * `handleTimeout` next). The driver opens a connection while the state is `connecting` and
 * closes it on `passive` (after sending what `pollTransmit` still holds).
 *
 * States (recomputed after every input):
 * - app passive, or no client id: `passive`;
 * - active, not connected, no token or last attempt aborted: `readyToConnect`;
 * - active, not connected, token, not aborted: `connecting`;
 * - connected, no partner or partner rejected: `readyToPair`;
 * - connected, partner, no counting partner event in the last 25 s: `searching`;
 * - connected, partner, a partner event under 25 s old, not `inactive`: `interacting`.
 * Metastates: active = all but passive; connected = readyToPair, searching, interacting;
 * paired = searching, interacting. Both are observable (`stateChanged`, then
 * `metastatesChanged`, only when they change).
 *
 * What each move sends: entering paired, a `ping` at once then every 5 s while searching,
 * 10 s while interacting (searching -> interacting pings at once too; any application event
 * sent restarts the sequence). Leaving paired for readyToPair drops the queue and, for a
 * controller whose partner was unassigned or replaced (not rejected), sends `unassign`
 * `notPaired`; leaving it for passive / readyToConnect / connecting sends `inactive`.
 * Pings and application events are paced (one per 1 s); `reject`, `unassign`, `inactive`
 * skip the queue but count as the last send. The module comment of pairing.rs has the
 * readings of the document chosen; this port keeps every one.
 */

/** The event type of a ping. */
export const CR_PING = "ping";
/** The event type a controller sends its former partner when it unassigns it. */
export const CR_UNASSIGN = "unassign";
/** The event type sent to the partner on leaving paired for a non-connected state. */
export const CR_INACTIVE = "inactive";
/** The event type of a reject (its subtype says why). */
export const CR_REJECT = "reject";
/** Reject subtype: this responder is paired with another controller. */
export const CR_ASSIGNED_TO_OTHER = "assignedToOther";
/** Reject subtype (and `unassign`'s): this controller is not paired with the sender. */
export const CR_NOT_PAIRED = "notPaired";
/** Server reject subtype: the pinged client is in another app. */
export const CR_APP_ID_MISMATCH = "appIdMismatch";
/** Server reject subtype: the pinged client has the same role. */
export const CR_INVALID_PARTNER_ROLE = "invalidPartnerRole";

/** A crSocket's role: a controller drives a responder; a responder is driven. */
export type PairingRole = "controller" | "responder";

/** The seed's six states. */
export type PairingState =
  | "passive"
  | "readyToConnect"
  | "connecting"
  | "readyToPair"
  | "searching"
  | "interacting";

/** The seed's metastates, each a set of states. */
export interface PairingMetastates {
  /** readyToConnect, connecting, readyToPair, searching, interacting. */
  active: boolean;
  /** readyToPair, searching, interacting. */
  connected: boolean;
  /** searching, interacting. */
  paired: boolean;
}

/** The metastates `state` belongs to. */
export function pairingMetastatesOf(state: PairingState): PairingMetastates {
  return {
    active: state !== "passive",
    connected: state === "readyToPair" || state === "searching" || state === "interacting",
    paired: state === "searching" || state === "interacting",
  };
}

function sameMetastates(a: PairingMetastates, b: PairingMetastates): boolean {
  return a.active === b.active && a.connected === b.connected && a.paired === b.paired;
}

/** The reference timers of a crSocket (ms) and its queue bound. */
export const PAIRING_DEFAULTS = {
  partnerAliveMs: 25_000,
  searchPingMs: 5_000,
  interactPingMs: 10_000,
  pacingMs: 1_000,
  queueLimit: 64,
} as const;

/** Settings of one crSocket; only `role` is required (the rest: `PAIRING_DEFAULTS`). */
export interface PairingConfig {
  /** Controller or responder. */
  role: PairingRole;
  /** This client's 6-digit id, if it has one already. */
  clientId?: string | null | undefined;
  /** The app's access token, if known already. */
  accessToken?: string | null | undefined;
  /** The partner counts as active while its last event is younger than this (25000). */
  partnerAliveMs?: number | undefined;
  /** Ping interval while searching (5000). */
  searchPingMs?: number | undefined;
  /** Ping interval while interacting (10000). */
  interactPingMs?: number | undefined;
  /** At most one queued event per this interval (1000). */
  pacingMs?: number | undefined;
  /** At most this many application events wait for the pacing (64); beyond: `queue_full`. */
  queueLimit?: number | undefined;
}

/** An event received from the server (the sender's id as the server stamped it). */
export interface PairingIncomingEvent {
  /** The sender's client id. */
  sender: string;
  /** `ping`, `unassign`, `inactive`, `reject` or an application type. */
  eventType: string;
  /** The subtype (`""` if none). */
  subType: string;
  /** The parameters. */
  params: string[];
}

/** An event for the driver to send. */
export interface PairingOutgoingEvent {
  /** The recipient's client id. */
  recipient: string;
  /** The event type. */
  eventType: string;
  /** The subtype (`""` if none). */
  subType: string;
  /** The parameters. */
  params: string[];
}

/** What the application observes of a crSocket, in order. */
export type PairingEvent =
  /** The state changed. */
  | { type: "stateChanged"; state: PairingState }
  /** The metastates changed (after the `stateChanged` that caused it). */
  | { type: "metastatesChanged"; metastates: PairingMetastates }
  /** The partner id changed (assigned, auto-paired, unassigned: `null`). */
  | { type: "partnerChanged"; partner: string | null }
  /** The partner rejected this client (or the server rejected a ping to it). */
  | { type: "rejected"; partner: string; subType: string }
  /** The client id changed (the server's `cr_welcome` gave another one). */
  | { type: "clientIdChanged"; clientId: string }
  /** An application event from the current partner. */
  | { type: "appEvent"; event: PairingIncomingEvent };

/** Which failure a `PairingError` is. */
export type PairingErrorKind =
  /** A setting cannot work (URL, app name, client id, token syntax); nothing was sent. */
  | "config"
  /** `connect`: the first connection could not be made or ended before `cr_welcome`. */
  | "connect"
  /** `connect`: the server refused the identify (`cr_aborted`): `abortReason` says why. */
  | "refused"
  /** A command's argument is unusable (a partner id that is not 6 digits, say). */
  | "invalid"
  /** Sending: only a paired socket (searching, interacting) sends; `state` says where it is. */
  | "not_paired"
  /** Sending: `ping`, `unassign`, `inactive` and `reject` are the crSocket's own. */
  | "reserved"
  /** Sending: `queueLimit` events already wait for the pacing; try again later. */
  | "queue_full"
  /** The pairing client was closed. */
  | "closed";

/** The pairing layer's one error class (the machine's send refusals and the driver's errors). */
export class PairingError extends Error {
  /** Which failure. */
  readonly kind: PairingErrorKind;
  /** For `not_paired`: the state the socket was in. */
  readonly state: PairingState | undefined;
  /** For `refused`: the server's abort reason. */
  readonly abortReason: string | undefined;

  constructor(
    kind: PairingErrorKind,
    message: string,
    extra: { state?: PairingState; abortReason?: string } = {},
  ) {
    super(message);
    this.name = "PairingError";
    this.kind = kind;
    this.state = extra.state;
    this.abortReason = extra.abortReason;
  }
}

function isReserved(eventType: string): boolean {
  return (
    eventType === CR_PING ||
    eventType === CR_UNASSIGN ||
    eventType === CR_INACTIVE ||
    eventType === CR_REJECT
  );
}

const ALNUM = /^[0-9A-Za-z]*$/;

/** P5's rules for what this machine sends; a sentence for the first one broken, or null. */
function checkEvent(eventType: string, subType: string, params: readonly string[]): string | null {
  if (typeof eventType !== "string" || eventType === "" || !ALNUM.test(eventType)) {
    return `event type \`${String(eventType)}\`: expected letters and digits only (at least one)`;
  }
  if (typeof subType !== "string" || !ALNUM.test(subType)) {
    return `event subtype \`${String(subType)}\`: expected letters and digits only`;
  }
  if (!Array.isArray(params)) return "event parameters: expected an array of strings";
  const bad = params.findIndex((p) => typeof p !== "string" || p.includes(","));
  if (bad >= 0) return `event parameter ${bad}: must be a string without \`,\``;
  return null;
}

function outgoing(recipient: string, eventType: string, subType: string): PairingOutgoingEvent {
  return { recipient, eventType, subType, params: [] };
}

/** The settings with every default filled in. */
interface ResolvedPairingConfig {
  role: PairingRole;
  partnerAliveMs: number;
  searchPingMs: number;
  interactPingMs: number;
  pacingMs: number;
  queueLimit: number;
}

/** One crSocket: see the module comment. */
export class CrSocket {
  private readonly config: ResolvedPairingConfig;
  private appActive = false;
  private ownClientId: string | null;
  private accessToken: string | null;
  private connected = false;
  /** The server's abort reason, while it keeps the socket in readyToConnect. */
  private abortReason: string | null = null;
  private partnerId: string | null = null;
  /** The reject subtype the partner is flagged with. */
  private rejectedWith: string | null = null;
  /** When the partner's last event arrived, and whether it counts as activity. */
  private lastPartnerEvent: { at: number; counts: boolean } | null = null;
  private current: PairingState = "passive";
  /** The partner while paired (to address `unassign` / `inactive` after it changed). */
  private pairedWith: string | null = null;
  private nextPing: number | null = null;
  private queue: PairingOutgoingEvent[] = [];
  private lastSent: number | null = null;
  private outbox: PairingOutgoingEvent[] = [];
  private events: PairingEvent[] = [];

  /** A crSocket, passive until `setActive(now, true)` (and a client id). */
  constructor(config: PairingConfig) {
    this.config = {
      role: config.role,
      partnerAliveMs: config.partnerAliveMs ?? PAIRING_DEFAULTS.partnerAliveMs,
      searchPingMs: config.searchPingMs ?? PAIRING_DEFAULTS.searchPingMs,
      interactPingMs: config.interactPingMs ?? PAIRING_DEFAULTS.interactPingMs,
      pacingMs: config.pacingMs ?? PAIRING_DEFAULTS.pacingMs,
      queueLimit: config.queueLimit ?? PAIRING_DEFAULTS.queueLimit,
    };
    this.ownClientId = config.clientId ?? null;
    this.accessToken = config.accessToken ?? null;
  }

  /** The current state. */
  state(): PairingState {
    return this.current;
  }

  /** The current metastates. */
  metastates(): PairingMetastates {
    return pairingMetastatesOf(this.current);
  }

  /** The role. */
  role(): PairingRole {
    return this.config.role;
  }

  /** This client's id, if it has one. */
  clientId(): string | null {
    return this.ownClientId;
  }

  /** The partner's id, if one is assigned (rejected or not). */
  partner(): string | null {
    return this.partnerId;
  }

  /** How many events (pings included) wait for the pacing. */
  queued(): number {
    return this.queue.length;
  }

  /** The subtype the partner is flagged rejected with, if it is. */
  rejected(): string | null {
    return this.rejectedWith;
  }

  /** The server's abort reason, while it holds the socket in readyToConnect. */
  aborted(): string | null {
    return this.abortReason;
  }

  /**
   * The application became active (`true`: visible, online, not paused) or passive. Going
   * passive drops the connection (the driver closes it) and clears a reject flag and an abort.
   */
  setActive(now: number, active: boolean): void {
    if (this.appActive === active) return;
    this.appActive = active;
    this.rejectedWith = null;
    this.abortReason = null;
    if (!active) this.connected = false;
    this.update(now);
  }

  /** Gives this client an id (or takes it away with `null`: passive). */
  setClientId(now: number, clientId: string | null): void {
    if (this.ownClientId === clientId) return;
    this.ownClientId = clientId;
    this.abortReason = null;
    this.connected = false;
    if (clientId !== null) this.events.push({ type: "clientIdChanged", clientId });
    this.update(now);
  }

  /**
   * Gives the access token (or takes it away: readyToConnect). A new token clears an abort,
   * so the socket tries to connect again.
   */
  setAccessToken(now: number, token: string | null): void {
    if (this.accessToken === token) return;
    this.accessToken = token;
    this.abortReason = null;
    this.connected = false;
    this.update(now);
  }

  /** Leaves the readyToConnect an abort put it in: connecting again. */
  retry(now: number): void {
    this.abortReason = null;
    this.update(now);
  }

  /**
   * Assigns the partner (`null` unassigns it). For a controller this is the only way to get
   * one; a responder may be assigned one too. The same id again clears a reject flag.
   */
  assignPartner(now: number, partner: string | null): void {
    if (this.partnerId === partner) {
      if (this.rejectedWith !== null) {
        this.rejectedWith = null;
        this.update(now);
      }
      return;
    }
    if (this.partnerId !== null) {
      this.setPartner(null);
      this.update(now);
    }
    if (partner !== null) {
      this.setPartner(partner);
      this.update(now);
    }
  }

  /**
   * The connection is open (`cr_welcome`); `clientId` is the id the server confirmed.
   * Ignored unless the socket is connecting.
   */
  handleConnected(now: number, clientId: string): void {
    if (this.current !== "connecting") return;
    if (this.ownClientId !== clientId) {
      this.ownClientId = clientId;
      this.events.push({ type: "clientIdChanged", clientId });
    }
    this.connected = true;
    this.update(now);
  }

  /** The connection dropped without an abort: connecting again (the driver reconnects). */
  handleDisconnected(now: number): void {
    if (this.connected) {
      this.connected = false;
      this.update(now);
    }
  }

  /**
   * The server aborted the connection or refused it (`cr_aborted`) with `reason`:
   * readyToConnect until `retry`, a new token or id, or a passive/active cycle.
   */
  handleAborted(now: number, reason: string): void {
    if (this.current === "passive") return;
    this.connected = false;
    this.abortReason = reason;
    this.update(now);
  }

  /** An event the server delivered. Ignored unless connected. */
  handleEvent(now: number, event: PairingIncomingEvent): void {
    if (!pairingMetastatesOf(this.current).connected) return;
    const fromPartner = this.partnerId === event.sender;
    const ping = event.eventType === CR_PING;
    const autoPair = this.config.role === "responder" && this.current === "readyToPair" && ping;
    if (!(fromPartner || autoPair)) {
      if (ping) {
        let answer: string | null = null;
        if (this.config.role === "controller") answer = CR_NOT_PAIRED;
        else if (this.partnerId !== null) answer = CR_ASSIGNED_TO_OTHER;
        if (answer !== null) this.sendNow(now, outgoing(event.sender, CR_REJECT, answer));
      }
      return;
    }
    if (ping && this.current === "readyToPair") {
      // The first pinger (responder), or the rejected partner itself: (re)assigned.
      if (fromPartner) this.rejectedWith = null;
      else this.setPartner(event.sender);
    } else if (event.eventType === CR_UNASSIGN && this.config.role === "responder") {
      this.setPartner(null);
      this.update(now);
      return;
    } else if (event.eventType === CR_REJECT) {
      this.rejectedWith = event.subType;
      this.events.push({ type: "rejected", partner: event.sender, subType: event.subType });
    }
    const counts = event.eventType !== CR_INACTIVE && event.eventType !== CR_REJECT;
    this.lastPartnerEvent = { at: now, counts };
    if (!isReserved(event.eventType)) {
      this.events.push({ type: "appEvent", event: copyIncoming(event) });
    }
    this.update(now);
  }

  /**
   * Queues an application event for the partner (paced; restarts the ping sequence).
   * Throws `PairingError` kind `reserved`, `invalid`, `not_paired` or `queue_full`; nothing
   * is queued then.
   */
  sendAppEvent(now: number, eventType: string, subType = "", params: readonly string[] = []): void {
    if (isReserved(eventType)) {
      throw new PairingError(
        "reserved",
        `\`${eventType}\` is a pairing event type; the crSocket sends it itself`,
      );
    }
    const invalid = checkEvent(eventType, subType, params);
    if (invalid !== null) throw new PairingError("invalid", invalid);
    const partner = this.partnerId;
    if (partner === null || !pairingMetastatesOf(this.current).paired) {
      throw new PairingError("not_paired", `not paired; state is ${this.current}`, {
        state: this.current,
      });
    }
    const waiting = this.queue.filter((e) => e.eventType !== CR_PING).length;
    if (waiting >= this.config.queueLimit) throw new PairingError("queue_full", "send queue full");
    this.queue.push({ recipient: partner, eventType, subType, params: [...params] });
    this.restartPings(now);
    this.pump(now);
  }

  /** Time passed: pings, the partner's activity, the pacing queue. */
  handleTimeout(now: number): void {
    if (this.nextPing !== null && this.nextPing <= now && pairingMetastatesOf(this.current).paired) {
      this.queuePing();
      this.restartPings(now);
    }
    this.update(now);
    this.pump(now);
  }

  /** The next event to send, if any. */
  pollTransmit(): PairingOutgoingEvent | undefined {
    return this.outbox.shift();
  }

  /** The next event for the application, if any. */
  pollEvent(): PairingEvent | undefined {
    return this.events.shift();
  }

  /** When `handleTimeout` should be called next (ms on the caller's clock), if ever. */
  pollTimeout(): number | undefined {
    const due: number[] = [];
    if (this.nextPing !== null && pairingMetastatesOf(this.current).paired) due.push(this.nextPing);
    const last = this.lastPartnerEvent;
    if (this.current === "interacting" && last !== null && last.counts) {
      due.push(last.at + this.config.partnerAliveMs);
    }
    if (this.queue.length > 0 && this.lastSent !== null) due.push(this.lastSent + this.config.pacingMs);
    return due.length === 0 ? undefined : Math.min(...due);
  }

  private setPartner(partner: string | null): void {
    this.partnerId = partner;
    this.rejectedWith = null;
    this.lastPartnerEvent = null;
    this.events.push({ type: "partnerChanged", partner });
  }

  private partnerActive(now: number): boolean {
    const last = this.lastPartnerEvent;
    return last !== null && last.counts && now < last.at + this.config.partnerAliveMs;
  }

  private compute(now: number): PairingState {
    if (!this.appActive || this.ownClientId === null) return "passive";
    if (!this.connected) {
      return this.accessToken !== null && this.abortReason === null ? "connecting" : "readyToConnect";
    }
    if (this.partnerId === null || this.rejectedWith !== null) return "readyToPair";
    return this.partnerActive(now) ? "interacting" : "searching";
  }

  /** Recomputes the state; on a change, does what the move sends and tells the app. */
  private update(now: number): void {
    const old = this.current;
    const next = this.compute(now);
    if (old === next) return;
    this.current = next;
    const was = pairingMetastatesOf(old);
    const is = pairingMetastatesOf(next);
    if (!was.paired && is.paired) {
      this.pairedWith = this.partnerId;
      this.queuePing();
      this.restartPings(now);
    } else if (was.paired && is.paired) {
      if (next === "interacting") this.queuePing();
      this.restartPings(now);
    } else if (was.paired && !is.paired) {
      this.nextPing = null;
      this.queue = [];
      const former = this.pairedWith;
      this.pairedWith = null;
      if (former !== null) {
        if (next === "readyToPair") {
          if (this.config.role === "controller" && this.rejectedWith === null) {
            this.sendNow(now, outgoing(former, CR_UNASSIGN, CR_NOT_PAIRED));
          }
        } else {
          this.sendNow(now, outgoing(former, CR_INACTIVE, ""));
        }
      }
    }
    this.events.push({ type: "stateChanged", state: next });
    if (!sameMetastates(was, is)) this.events.push({ type: "metastatesChanged", metastates: is });
    this.pump(now);
  }

  private queuePing(): void {
    const partner = this.partnerId;
    if (partner === null) return;
    if (!this.queue.some((e) => e.eventType === CR_PING)) this.queue.push(outgoing(partner, CR_PING, ""));
  }

  private restartPings(now: number): void {
    if (this.current === "searching") this.nextPing = now + this.config.searchPingMs;
    else if (this.current === "interacting") this.nextPing = now + this.config.interactPingMs;
    else this.nextPing = null;
  }

  /** Sends outside the pacing queue (CRSocket's `sendCrEventNow`); counts as the last send. */
  private sendNow(now: number, event: PairingOutgoingEvent): void {
    this.outbox.push(event);
    this.lastSent = now;
  }

  /** Releases the queue's head if a pacing interval passed since the last send. */
  private pump(now: number): void {
    if (this.queue.length === 0) return;
    if (this.lastSent !== null && now < this.lastSent + this.config.pacingMs) return;
    const head = this.queue.shift();
    if (head !== undefined) {
      this.outbox.push(head);
      this.lastSent = now;
    }
  }
}

function copyIncoming(event: PairingIncomingEvent): PairingIncomingEvent {
  return { sender: event.sender, eventType: event.eventType, subType: event.subType, params: [...event.params] };
}
