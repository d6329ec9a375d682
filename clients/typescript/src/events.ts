/**
 * events.ts: what the client tells the application: the connection states, the resume
 * link's states, the handoff roles, the server's errors and every event, as one
 * discriminated union on `type`. The names follow the Rust SDK (`Event::MemberJoined` is
 * `{ type: "memberJoined" }`, fields camelCase); docs: the package README's event reference.
 */
import type {
  HandoffFailure,
  HostChange,
  LeaveReason,
  MediaRole,
  MemberInfo,
  ErrorCode,
  ResumeFailure,
  SessionInfo,
} from "./types.js";

/** The connection states, as the protocol document names them. */
export type ConnectionState = "disconnected" | "connecting" | "connected" | "reconnecting" | "failed";

/**
 * The resume link's states (seed 003, beside the connection state): `OPEN` (own token
 * sent), `PRECONNECTED` (the server's token confirmed, `join` behind it), `CONNECTED` (both
 * hold the connection token), `RECONNECTING` (dropped; the server holds the place),
 * `DISCONNECTED` (no link: ended, or a plain connection without the handshake).
 */
export type LinkState = "OPEN" | "PRECONNECTED" | "CONNECTED" | "RECONNECTING" | "DISCONNECTED";

/** Seed 003's number for a link state (`OPEN: 0` ... `DISCONNECTED: 4`). */
export const LINK_STATE_CODES: Readonly<Record<LinkState, number>> = {
  OPEN: 0,
  PRECONNECTED: 1,
  CONNECTED: 2,
  RECONNECTING: 3,
  DISCONNECTED: 4,
};

/**
 * This client's role in its session (the handoff layer's view of seed 005's client states):
 * `idle` (not started), `connecting`, `assigned` (joined: the host, or a member not ready),
 * `handoff_ready` (joined, not the host, ready to take control), `disconnected` (over).
 */
export type Role = "idle" | "connecting" | "assigned" | "handoff_ready" | "disconnected";

/** An `error` frame from the server. */
export interface ServerError {
  /** The machine-readable code (a newer server's unknown code arrives as its string). */
  code: ErrorCode;
  /** The server's explanation. */
  message: string;
  /** Extra information (e.g. `{maxMembers, currentMembers}` for `session_full`). */
  details?: unknown;
}

/**
 * The codes that refuse access (`password_required`, `wrong_password`, `token_required`,
 * `invalid_token`, `host_not_allowed`, `too_many_attempts`): never retried.
 */
export function isAccessRefusal(error: ServerError): boolean {
  switch (error.code) {
    case "password_required":
    case "wrong_password":
    case "token_required":
    case "invalid_token":
    case "host_not_allowed":
    case "too_many_attempts":
      return true;
    default:
      return false;
  }
}

/** A media token the server granted (the `media_token` reply, issue 13). */
export interface MediaGrant {
  /** 43 base64url characters: START's MEDIA_TOKEN TLV. A credential: never log it. */
  token: string;
  /** `publish` for the host, `subscribe` for every other member. */
  role: MediaRole;
  /** START's STREAM_ID: the session id. */
  streamId: string;
  /** The relay's UDP port, on the server's host. */
  port: number;
  /** Until when a first START may claim the token, ms since the Unix epoch. */
  expiresAt: number;
}

/** A forwarded `handoff_request`: the host asks this member to take control. */
export interface HandoffOffer {
  /** Answer with this id. */
  handoffId: string;
  /** The host asking. */
  fromId: string;
  /** The session state at the time of the request. */
  state: Record<string, unknown>;
  /** Its version. */
  version: number;
  /** The current term. */
  term: number;
  /** How long the request waits for an answer, in ms. */
  timeoutMs: number;
}

/** The handoff this client is part of, if any. */
export type PendingHandoff =
  /** This host sent `handoff_request`; the server has not answered. */
  | { kind: "requested"; targetId: string | null }
  /** The server forwarded this host's request to `targetId`; its answer is awaited. */
  | { kind: "started"; handoffId: string; targetId: string }
  /** This member is asked to take control. */
  | { kind: "offered"; offer: HandoffOffer };

/** Something the application should know. Discriminated on `type`. */
export type ClientEvent =
  /** The connection state changed. */
  | { type: "stateChanged"; state: ConnectionState }
  /** The resume link's state changed. */
  | { type: "linkChanged"; link: LinkState }
  /** Joined (again, after a reconnection that was not a resume: a new id each time). */
  | { type: "welcome"; clientId: string; session: SessionInfo }
  /** The full member list (host first, then join order). */
  | { type: "memberList"; members: MemberInfo[] }
  /** The reply to `requestMediaToken`. */
  | { type: "mediaToken"; grant: MediaGrant }
  /** A member joined. */
  | { type: "memberJoined"; member: MemberInfo }
  /** A member's entry changed (e.g. `connectionStatus` went `reconnecting`); the table has it. */
  | { type: "memberUpdated"; member: MemberInfo }
  /** A member left. */
  | { type: "memberLeft"; memberId: string; reason: LeaveReason }
  /** The host removed this member; the connection ends without reconnecting. */
  | { type: "kicked"; reason: string }
  /** The session ended (or, to a host, its own connection was lost); no reconnection. */
  | { type: "sessionClosed"; reason: string }
  /** The server reported an error. */
  | { type: "error"; error: ServerError }
  /** A new round-trip time, from this client's own `ping`, in ms. */
  | { type: "latency"; ms: number }
  /** Application data from another member. */
  | { type: "message"; from: string; data: unknown }
  /** A message whose `type` this version does not know, handed over with its raw text. */
  | { type: "unknown"; kind: string; raw: string }
  /** The connection was lost; a reconnection follows (or `failed`). */
  | { type: "connectionLost"; reason: string }
  /** A reconnection attempt is starting (1-based `attempt` of `of`). */
  | { type: "reconnecting"; attempt: number; of: number }
  /** Reconnection gave up; the state is `failed`. */
  | { type: "failed"; reason: string }
  /** An attempt to resume is starting; `windowLeftMs` of the resume window remain. */
  | { type: "resuming"; attempt: number; windowLeftMs: number }
  /** Resumed: same id, same numbering; `replayed` server messages follow as usual events. */
  | { type: "resumed"; replayed: number }
  /** The server refused the resume; `rejoining`: a fresh join follows on the same socket. */
  | { type: "resumeFailed"; reason: ResumeFailure; unconfirmed: number; rejoining: boolean }
  /** This client's role changed. */
  | { type: "roleChanged"; role: Role }
  /** The session state (a `state` frame, or what `welcome` carried: `updatedBy` null). */
  | {
      type: "sessionState";
      state: Record<string, unknown>;
      version: number;
      term: number;
      updatedBy: string | null;
    }
  /** The host changed; the member table, `hostId` and `term` already say so. */
  | { type: "hostChanged"; hostId: string; previousHostId: string; term: number; reason: HostChange }
  /** To a candidate: the host asks this member to take control. */
  | {
      type: "handoffRequested";
      handoffId: string;
      fromId: string;
      state: Record<string, unknown>;
      version: number;
      term: number;
      timeoutMs: number;
    }
  /** To the host: its request went to this candidate. */
  | { type: "handoffStarted"; handoffId: string; targetId: string }
  /** To the old host: the candidate accepted; `hostChanged` follows. */
  | { type: "handoffAcknowledged"; handoffId: string; hostId: string; term: number }
  /** A handoff did not happen; host and term are unchanged. */
  | {
      type: "handoffFailed";
      reason: HandoffFailure;
      handoffId: string | null;
      targetId: string | null;
    };

/** The `type` of every event. */
export type ClientEventType = ClientEvent["type"];

/** The event of one `type`. */
export type ClientEventOf<T extends ClientEventType> = Extract<ClientEvent, { type: T }>;
