/**
 * types.ts: the wire's data types, as the server writes them (docs/PROTOCOL.md §3-§4):
 * devices, members, sessions, and the closed string sets (leave reasons, error codes, ...).
 * Field names are the wire's own (camelCase), so a member from `member_list` is used as is.
 * Every set that a newer server may extend is typed open (`| (string & {})`): an unknown
 * value reaches the application instead of failing the frame.
 */

/** `host` opens (or owns) a session; `client` joins one. */
export type DeviceType = "host" | "client";

/** This device, as sent in `join`. */
export interface DeviceInfo {
  /** Stable across reconnections (the server refuses a second live connection with it). */
  id: string;
  /** Shown to the other members. */
  name: string;
  /** `host` or `client`. */
  type: DeviceType;
}

/** A member's connection, as the member table shows it. */
export type ConnectionStatus = "connected" | "disconnected" | "reconnecting";

/** One row of the member table (`member_list`, `member_joined`, `member_updated`). */
export interface MemberInfo {
  /** The member's id in this session (assigned by the server at join). */
  id: string;
  /** Its device's name. */
  name: string;
  /** Whether it is the session's host. */
  isHost: boolean;
  /** `connected`, or `reconnecting` while a resumable member is away. */
  connectionStatus: ConnectionStatus;
  /** When it joined, ms since the Unix epoch. */
  joinedAt: number;
  /** Its last measured round trip in ms, when the server knows one. */
  latency?: number;
  /** Whether it declared itself ready to take control (handoff layer). */
  handoffReady?: boolean;
}

/** The session, as `welcome` describes it. */
export interface SessionInfo {
  /** The session id (the code a host without one was given). */
  id: string;
  /** Its name. */
  name: string;
  /** The host's member id, when there is one. */
  hostId?: string | null;
}

/** Why a member left (`member_left`). */
export type LeaveReason = "left" | "kicked" | "timeout" | "error" | (string & {});

/** Why the host changed (`host_changed`). */
export type HostChange = "handoff" | "host_lost" | (string & {});

/** Why a handoff did not happen (`handoff_failed`). */
export type HandoffFailure =
  | "no_candidate"
  | "declined"
  | "timeout"
  | "candidate_left"
  | "host_left"
  | "busy"
  | (string & {});

/** Why the server refused a resume (`resume_failed`). */
export type ResumeFailure =
  | "unknown_token"
  | "expired"
  | "buffer_overflow"
  | "session_closed"
  | (string & {});

/** The error codes of docs/PROTOCOL.md §5; a newer server's code arrives as its string. */
export type ErrorCode =
  | "session_not_found"
  | "session_full"
  | "already_joined"
  | "invalid_message"
  | "unauthorized"
  | "version_mismatch"
  | "rate_limited"
  | "too_large"
  | "password_required"
  | "wrong_password"
  | "token_required"
  | "invalid_token"
  | "host_not_allowed"
  | "too_many_attempts"
  | "stale_version"
  | "stale_term"
  | "state_too_large"
  | "handoff_not_pending"
  | "media_unavailable"
  | (string & {});

/** `publish` for the session's host, `subscribe` for every other member (issue 13). */
export type MediaRole = "publish" | "subscribe";
