/**
 * handoff.ts: the handoff layer's bookkeeping (issue 11, seed 000 "Multi-Client Sync and
 * Handoff"; a port of crates/client/src/handoff.rs): who the host is and the term, the
 * session's state document with its version, this client's readiness, the handoff in
 * progress, and the member table's order after a change of host. The machine (machine.ts)
 * feeds it the frames and decides when; everything here is sans-IO.
 *
 * Roles (decision 8), as `Machine.role()` derives them:
 *
 *     idle -> connecting -> assigned <-> handoff_ready -> disconnected
 *                  ^            |              |
 *                  +------------+--------------+   (a lost place: a fresh join follows)
 *
 * - `idle`: not started. `connecting`: the socket, the handshake, `join`; and again while a
 *   fresh join is made after the place was lost (a plain drop, a refused resume).
 * - `assigned`: joined, host or not (a host with a pending request stays assigned).
 * - `handoff_ready`: joined, not the host, declared ready (`setReady(true)`), or a host that
 *   just handed control over (the server counts it as a fresh declaration, decision 16).
 * - `disconnected`: over. While a resumable connection is being resumed the role stays what
 *   it was: the server holds the place, id and role for the resume window.
 *
 * State and term: the document and its version come from `welcome` and from every `state`
 * frame. A `state` frame whose term is below the highest term seen (in `welcome`, `state`,
 * a forwarded `handoff_request`, `handoff_ack`, `host_changed`) is dropped (decision 21). A
 * fresh `welcome` starts the count again from its own term.
 *
 * Readiness across a fresh join: a member that declared itself ready and whose place is
 * lost declares itself ready again right after the new `welcome`, unless it is the host
 * there (the server forgot the declaration with the old place).
 */
import type { HandoffOffer, PendingHandoff } from "./events.js";
import type { HandoffFailure, HostChange, MemberInfo } from "./types.js";
import type { StateSnapshot } from "./protocol.js";

/** The request id of a pending handoff, once the server gave it one. */
export function pendingHandoffId(pending: PendingHandoff | null): string | null {
  if (pending === null) return null;
  switch (pending.kind) {
    case "requested":
      return null;
    case "started":
      return pending.handoffId;
    case "offered":
      return pending.offer.handoffId;
  }
}

/** What the machine keeps for the handoff layer. */
export class Control {
  /**
   * The id the server assigned to a session this client opened without one (decision 25);
   * kept across reconnections so a rejoin names it.
   */
  assignedSession: string | null = null;
  /** The current host's id (`sessionInfo.hostId`, then `host_changed`). */
  hostId: string | null = null;
  /** The highest term seen; 0 before `welcome` (or from a server without this layer). */
  term = 0;
  /** The session state (always an object). */
  state: Record<string, unknown> = {};
  /** Its version. */
  version = 0;
  /** This client declared itself ready (and is not the host). */
  ready = false;
  /** The handoff in progress. */
  pending: PendingHandoff | null = null;
  /**
   * This client was a host and control passed to another member: a fresh join must not ask
   * for the host role (decision 24: `unauthorized` while another host is connected).
   */
  yielded = false;

  /**
   * A `welcome` (a new membership as `clientId`): the host, the session's id and its state.
   * Returns whether readiness must be declared again.
   */
  welcomed(clientId: string, sessionId: string, hostId: string | null, snapshot: StateSnapshot | null): boolean {
    this.assignedSession = sessionId;
    this.hostId = hostId;
    this.pending = null;
    if (snapshot) {
      this.state = snapshot.state;
      this.version = snapshot.version;
      this.term = snapshot.term;
    } else {
      this.state = {};
      this.version = 0;
      this.term = 0;
    }
    const hosting = hostId === clientId;
    if (hosting) {
      this.yielded = false;
      this.ready = false;
    }
    return this.ready && !hosting;
  }

  /** Whether `clientId` is the current host. */
  isHost(clientId: string | null): boolean {
    return clientId !== null && this.hostId === clientId;
  }

  /** Notes a term carried by a frame; whether it is not below the highest seen. */
  seeTerm(term: number): boolean {
    if (term < this.term) return false;
    this.term = term;
    return true;
  }

  /** A `state` frame: applied unless its term is stale (decision 21). */
  stateFrame(state: Record<string, unknown>, version: number, term: number): boolean {
    if (!this.seeTerm(term)) return false;
    this.state = state;
    this.version = version;
    return true;
  }

  /**
   * `host_changed`: the new host, the term, readiness and the member table. Returns false
   * (and changes nothing) for a frame of an older term.
   */
  hostChanged(
    me: string | null,
    members: MemberInfo[],
    hostId: string,
    previousHostId: string,
    term: number,
    reason: HostChange,
  ): boolean {
    if (!this.seeTerm(term)) return false;
    this.hostId = hostId;
    this.pending = null;
    if (me !== null && me === hostId) {
      this.ready = false;
      this.yielded = false;
    } else if (me !== null && me === previousHostId) {
      this.yielded = true;
      // Decision 16: the host that handed control over is ready at once.
      this.ready = reason === "handoff";
    }
    reorder(members, hostId, previousHostId, reason);
    return true;
  }

  /**
   * A `handoff_failed`: clears what it ends. A `busy` answer leaves a started request alone
   * (it is about a second request; the first goes on).
   */
  handoffFailed(reason: HandoffFailure, handoffId: string | null): void {
    const p = this.pending;
    if (p === null) return;
    let ends: boolean;
    if (p.kind === "requested") ends = true;
    else if (p.kind === "started" && reason === "busy") ends = false;
    else ends = handoffId === null || pendingHandoffId(p) === handoffId;
    if (ends) this.pending = null;
  }

  /** `handoff_ack` to this (old) host: its request is done. */
  acknowledged(handoffId: string, term: number): void {
    this.seeTerm(term);
    const p = this.pending;
    if ((p?.kind === "started" && p.handoffId === handoffId) || p?.kind === "requested") {
      this.pending = null;
    }
  }

  /** This client answered the offer `handoffId`. */
  answered(handoffId: string): void {
    const p = this.pending;
    if (p?.kind === "offered" && p.offer.handoffId === handoffId) this.pending = null;
  }

  /**
   * This host sent a request: it is pending unless one was started already (then the server
   * answers the second with `busy` and the first goes on).
   */
  requested(targetId: string | null): void {
    if (this.pending?.kind !== "started") this.pending = { kind: "requested", targetId };
  }

  /** A forwarded `handoff_request`: this member is asked to take control. */
  offered(offer: HandoffOffer): void {
    this.seeTerm(offer.term);
    this.pending = { kind: "offered", offer };
  }

  /**
   * Shows this client's own readiness in its entry of the member table (the server never
   * sends a member its own `member_updated`).
   */
  overlayOwn(me: string | null, members: MemberInfo[]): void {
    if (me === null) return;
    const entry = members.find((m) => m.id === me);
    if (entry) entry.handoffReady = this.ready && !entry.isHost;
  }
}

/**
 * The member table after a change of host, as the server orders it (decision 26): the new
 * host first with `isHost`, every other member in join order (by `joinedAt`; the old host,
 * first before, stays first among equal times: the sort is stable), the old host with
 * `isHost: false`. After a handoff the old host is ready and the new host is not.
 */
export function reorder(members: MemberInfo[], hostId: string, previousHostId: string, reason: HostChange): void {
  const index = members.findIndex((m) => m.id === hostId);
  const newHost = index >= 0 ? members.splice(index, 1)[0] : undefined;
  for (const m of members) {
    m.isHost = false;
    if (m.id === previousHostId && reason === "handoff") m.handoffReady = true;
  }
  members.sort((a, b) => a.joinedAt - b.joinedAt);
  if (newHost) {
    newHost.isHost = true;
    newHost.handoffReady = false;
    members.unshift(newHost);
  }
}
