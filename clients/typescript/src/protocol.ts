/**
 * protocol.ts: the wire, both directions, as the client sees it (a port of what the SDK
 * uses from crates/protocol: `encode_client`, `number_frame`, `decode_server_numbered`,
 * `merge_tokens`, `valid_token`; docs/PROTOCOL.md §3-§5, §14, §15).
 *
 * Writing: `encodeClient` turns a `ClientMessage` into our dialect's text frame, `type`
 * first, then `timestamp` (ms since the Unix epoch; the server ignores it), then the
 * message's own fields, optional fields left out when absent. `ping` carries only its own
 * `timestamp` (echoed by `pong`: that is how latency is measured). On a resumable
 * connection numbered frames are the plain frame with `{"seq":N,` in place of its opening
 * brace (`numberFrame`).
 *
 * Reading: `decodeServer` reads a server frame forward compatibly, as the Rust client does:
 * unknown fields are ignored; an `error` keeps any code (a newer server's too); a frame of
 * an unknown `type` is `{ kind: "unknown" }` with its text; a frame that is not a JSON
 * object with a string `type`, or a known type whose known fields are missing or mistyped,
 * is a `DecodeFailure` naming the field path (`member_list: members[1].joinedAt must be a
 * non-negative integer`), and so is a frame nested deeper than `MAX_NESTING`. Integers
 * (`seq`, versions, terms, times) must be exact in a JS number (at most 2^53 - 1); a larger
 * `seq` leaves the frame unnumbered, as the Rust reader does above `u64`. It never throws.
 * The sets a newer server may extend (leave reasons, host changes, handoff failures, resume
 * failures) are taken as any string, so an unknown value reaches the application instead of
 * failing the frame (types.ts).
 */
import type { ServerError } from "./events.js";
import type {
  ConnectionStatus,
  DeviceInfo,
  HandoffFailure,
  HostChange,
  LeaveReason,
  MediaRole,
  MemberInfo,
  ResumeFailure,
  SessionInfo,
} from "./types.js";

/** The protocol version this client speaks, sent in `join`. */
export const PROTOCOL_VERSION = "1.0";

/** Length of a side's local token in the resume handshake (seed 003). */
export const TOKEN_LEN = 32;

/** Length of the connection token both sides derive from the two local tokens. */
export const CONNECTION_TOKEN_LEN = 2 * TOKEN_LEN;

/** The WebSocket close codes the server uses. */
export const CLOSE_CODE = {
  /** The protocol ended the connection: leave, kick, session closed, join rejected, timeout. */
  NORMAL: 1000,
  /** The server is shutting down. */
  GOING_AWAY: 1001,
  /** A WebSocket framing violation. */
  PROTOCOL_ERROR: 1002,
  /** A text message or close reason that is not valid UTF-8. */
  INVALID_PAYLOAD: 1007,
  /** A policy was broken (rate limit, slow consumer). */
  POLICY_VIOLATION: 1008,
  /** A frame larger than the server accepts. */
  MESSAGE_TOO_BIG: 1009,
  /** A resume moved the member onto a new socket; this one is closed (never resumed). */
  REPLACED: 4000,
} as const;

/** Whether `token` has the form of a local token or a connection token: 32 or 64 `[A-Za-z0-9]`. */
export function validToken(token: string): boolean {
  return (token.length === TOKEN_LEN || token.length === CONNECTION_TOKEN_LEN) && /^[A-Za-z0-9]*$/.test(token);
}

/**
 * The connection token of a handshake: the two local tokens concatenated in byte order
 * (`Z` < `a`), the smaller first (both are ASCII, so UTF-16 order is byte order).
 */
export function mergeTokens(a: string, b: string): string {
  return a < b ? a + b : b + a;
}

/** A client message, as the machine sends it (docs/PROTOCOL.md §3, §14, §15). */
export type ClientMessage =
  | {
      type: "join";
      sessionId?: string | undefined;
      sessionName?: string | undefined;
      protocolVersion?: string | undefined;
      deviceInfo: DeviceInfo;
      password?: string | undefined;
      token?: string | undefined;
    }
  | { type: "leave"; reason?: string | undefined }
  | { type: "heartbeat" }
  | { type: "ping"; timestamp: number }
  | { type: "kick"; memberId: string; reason?: string | undefined }
  | { type: "member_list" }
  | { type: "media_token" }
  | { type: "message"; data: unknown; to?: string | undefined }
  | { type: "token"; token: string; lastSeq?: number | undefined }
  | { type: "ack"; seq: number }
  | {
      type: "state_set";
      state?: Record<string, unknown> | undefined;
      patch?: Record<string, unknown> | undefined;
      baseVersion?: number | undefined;
      term?: number | undefined;
    }
  | { type: "handoff_ready"; ready: boolean }
  | { type: "handoff_request"; targetId?: string | undefined }
  | { type: "handoff_accept"; handoffId: string }
  | { type: "handoff_decline"; handoffId: string; reason?: string | undefined };

/**
 * Writes `message` as one text frame of our dialect: `type`, then `timestamp` (except on
 * `ping`, whose `timestamp` is its own), then the fields in the order the Rust encoder
 * writes them; `undefined` fields are left out. Throws (a `TypeError` from
 * `JSON.stringify`) only for `message.data` that JSON cannot hold (a BigInt, a cycle); the
 * machine checks `data` first (`jsonText`).
 */
export function encodeClient(message: ClientMessage, timestampMs: number): string {
  if (message.type === "ping") return `{"type":"ping","timestamp":${JSON.stringify(message.timestamp)}}`;
  const { type, ...fields } = message;
  const ordered: Record<string, unknown> = { type, timestamp: timestampMs };
  for (const [key, value] of Object.entries(fields)) {
    if (value !== undefined) ordered[key] = value;
  }
  return JSON.stringify(ordered);
}

/**
 * The JSON text of an application value, or `undefined` if JSON cannot hold it: a BigInt,
 * a cycle, or a value that stringifies to nothing (`undefined`, a function, a symbol).
 */
export function jsonText(value: unknown): string | undefined {
  try {
    return JSON.stringify(value);
  } catch {
    return undefined;
  }
}

/** `{"seq":N,` followed by `frame` without its opening brace: the numbered form of a frame. */
export function numberFrame(seq: number, frame: string): string {
  const rest = frame.startsWith("{") ? frame.slice(1) : frame;
  return `{"seq":${seq},${rest}`;
}

/** The session state as `welcome` carries it (`state`, `version`, `term` at the top level). */
export interface StateSnapshot {
  state: Record<string, unknown>;
  version: number;
  term: number;
}

/** A server message of a type this version knows, other than `error`. */
export type ServerMessage =
  | {
      type: "welcome";
      clientId: string;
      sessionInfo: SessionInfo;
      resumable: boolean;
      /** Absent from a server older than the handoff layer. */
      snapshot: StateSnapshot | null;
    }
  | { type: "member_list"; members: MemberInfo[] }
  | { type: "member_joined"; member: MemberInfo }
  | { type: "member_updated"; member: MemberInfo }
  | { type: "member_left"; memberId: string; reason: LeaveReason }
  | { type: "kicked"; reason: string }
  | { type: "session_closed"; reason: string }
  | { type: "pong" }
  | { type: "message"; from: string; data: unknown }
  | { type: "token"; token: string }
  | { type: "resumed"; lastSeq: number; replayed: number }
  | { type: "resume_failed"; reason: ResumeFailure }
  | { type: "ack"; seq: number }
  | { type: "state"; state: unknown; version: number; term: number; updatedBy: string }
  | { type: "handoff_started"; handoffId: string; targetId: string }
  | {
      type: "handoff_request";
      handoffId: string;
      fromId: string;
      state: unknown;
      version: number;
      term: number;
      timeoutMs: number;
    }
  | { type: "handoff_ack"; handoffId: string; hostId: string; term: number }
  | { type: "host_changed"; hostId: string; previousHostId: string; term: number; reason: HostChange }
  | { type: "handoff_failed"; reason: HandoffFailure; handoffId: string | null; targetId: string | null }
  | { type: "media_token"; token: string; role: MediaRole; streamId: string; port: number; expiresAt: number };

/** A server frame as the client reads it (the Rust `Received`). */
export type Received =
  /** A message of a known type (never an `error`). */
  | { kind: "known"; message: ServerMessage }
  /** An `error`, whether or not this version knows its code. */
  | { kind: "error"; error: ServerError }
  /** A message whose `type` this version does not know, with the frame's text. */
  | { kind: "unknown"; type: string; raw: string };

/** A decoded server frame: what it is, its top-level `timestamp` and its `seq` if numbered. */
export interface DecodedServerFrame {
  received: Received;
  /** The frame's `timestamp` if it is a number (a `pong` echoes the ping's). */
  timestamp: number | undefined;
  /** The frame's `seq` (a non-negative integer) on a resumable connection; never an `ack`'s. */
  seq: number | undefined;
}

/** Why a server frame could not be read: the message names the type and field path. */
export interface DecodeFailure {
  error: string;
}

/** The server message types this version knows. */
export const SERVER_TYPES: readonly string[] = [
  "welcome",
  "member_list",
  "member_joined",
  "member_left",
  "kicked",
  "session_closed",
  "pong",
  "error",
  "message",
  "member_updated",
  "token",
  "resumed",
  "resume_failed",
  "ack",
  "state",
  "handoff_started",
  "handoff_request",
  "handoff_ack",
  "host_changed",
  "handoff_failed",
  "media_token",
];

/** Thrown inside the decoder only; `decodeServer` turns it into a `DecodeFailure`. */
class FieldError extends Error {}

type JsonObject = Record<string, unknown>;

function isObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return typeof value === "object" ? "an object" : `${typeof value} ${JSON.stringify(value)}`;
}

/** Reads the fields of one object, naming `path.field` in every complaint. */
class Fields {
  constructor(
    private readonly object: JsonObject,
    private readonly path: string,
  ) {}

  private fail(field: string, what: string, value: unknown): never {
    throw new FieldError(
      value === undefined
        ? `${this.path}.${field} is missing (${what})`
        : `${this.path}.${field} must be ${what}, got ${describe(value)}`,
    );
  }

  /** A required string. */
  string(field: string): string {
    const v = this.object[field];
    return typeof v === "string" ? v : this.fail(field, "a string", v);
  }

  /** An optional string: absent or `null` is `null`. */
  optionalString(field: string): string | null {
    const v = this.object[field];
    if (v === undefined || v === null) return null;
    return typeof v === "string" ? v : this.fail(field, "a string or null", v);
  }

  /** A required non-negative integer (a Rust `u64`). */
  uint(field: string): number {
    const v = this.object[field];
    return isUint(v) ? v : this.fail(field, "a non-negative integer", v);
  }

  /** An optional non-negative integer: absent or `null` is `undefined`. */
  optionalUint(field: string): number | undefined {
    const v = this.object[field];
    if (v === undefined || v === null) return undefined;
    return isUint(v) ? v : this.fail(field, "a non-negative integer or null", v);
  }

  /** A required boolean. */
  bool(field: string): boolean {
    const v = this.object[field];
    return typeof v === "boolean" ? v : this.fail(field, "true or false", v);
  }

  /** A boolean that defaults to `false` when absent. */
  boolOrFalse(field: string): boolean {
    const v = this.object[field];
    if (v === undefined) return false;
    return typeof v === "boolean" ? v : this.fail(field, "true or false", v);
  }

  /** A required JSON value of any kind (`null` included). */
  any(field: string): unknown {
    if (!(field in this.object)) this.fail(field, "any JSON value", undefined);
    return this.object[field];
  }

  /** A required object, read with its own path. */
  nested(field: string): Fields {
    const v = this.object[field];
    return isObject(v) ? new Fields(v, `${this.path}.${field}`) : this.fail(field, "an object", v);
  }

  /** A required array. */
  array(field: string): unknown[] {
    const v = this.object[field];
    return Array.isArray(v) ? v : this.fail(field, "an array", v);
  }

  /** A required string from a closed set. */
  oneOf<T extends string>(field: string, allowed: readonly T[]): T {
    const v = this.object[field];
    if (typeof v === "string" && (allowed as readonly string[]).includes(v)) return v as T;
    return this.fail(field, `one of ${allowed.map((a) => JSON.stringify(a)).join(", ")}`, v);
  }
}

/**
 * A non-negative integer that a JS number holds exactly (at most 2^53 - 1). The Rust
 * reader takes any `u64`; above 2^53 a JS number is no longer that integer (and `1e300`
 * passes `Number.isInteger`), so such a value is refused rather than misread: a `seq` of
 * `1e300` taken as the last one received would turn every later frame into a duplicate and
 * go back to the server as `"seq":1e+300`.
 */
function isUint(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

/**
 * The deepest nesting of arrays and objects a server frame may have: 127 levels, the frame
 * itself included, as serde_json (the Rust SDK's reader, and the server's) takes. A deeper
 * frame is unreadable there and here; beyond the rule, JSON data nested a few thousand
 * levels deep makes `JSON.stringify` (the driver's copies) overflow the stack.
 */
export const MAX_NESTING = 127;

/**
 * Whether the parsed JSON `value` of the frame `text` nests at most `limit` levels of arrays
 * and objects. A text shorter than `2 * limit + 2` characters cannot nest deeper (each level
 * takes an opening and a closing bracket), which is every usual frame; a longer one is
 * walked without recursion, container by container.
 */
function nestingWithin(text: string, value: unknown, limit: number): boolean {
  if (text.length < 2 * limit + 2) return true;
  const stack: Array<{ node: object; depth: number }> = [];
  if (typeof value === "object" && value !== null) stack.push({ node: value, depth: 1 });
  for (let top = stack.pop(); top !== undefined; top = stack.pop()) {
    if (top.depth > limit) return false;
    const children: unknown[] = Array.isArray(top.node) ? top.node : Object.values(top.node);
    for (const child of children) {
      if (typeof child === "object" && child !== null) stack.push({ node: child, depth: top.depth + 1 });
    }
  }
  return true;
}

const CONNECTION_STATUSES: readonly ConnectionStatus[] = ["connected", "disconnected", "reconnecting"];
const MEDIA_ROLES: readonly MediaRole[] = ["publish", "subscribe"];

/** One member entry (`member_list`, `member_joined`, `member_updated`). */
function readMember(value: unknown, path: string): MemberInfo {
  if (!isObject(value)) throw new FieldError(`${path} must be an object, got ${describe(value)}`);
  const f = new Fields(value, path);
  const member: MemberInfo = {
    id: f.string("id"),
    name: f.string("name"),
    isHost: f.bool("isHost"),
    connectionStatus: f.oneOf("connectionStatus", CONNECTION_STATUSES),
    joinedAt: f.uint("joinedAt"),
    handoffReady: f.boolOrFalse("handoffReady"),
  };
  const latency = f.optionalUint("latency");
  if (latency !== undefined) member.latency = latency;
  return member;
}

/** The welcome's flattened state snapshot: all three fields valid, or none (as serde's flatten). */
function readSnapshot(object: JsonObject): StateSnapshot | null {
  const { state, version, term } = object;
  if (isObject(state) && isUint(version) && isUint(term)) return { state, version, term };
  return null;
}

function readKnown(type: string, f: Fields, object: JsonObject): ServerMessage {
  switch (type) {
    case "welcome": {
      const info = f.nested("sessionInfo");
      const sessionInfo: SessionInfo = { id: info.string("id"), name: info.string("name"), hostId: info.optionalString("hostId") };
      return {
        type,
        clientId: f.string("clientId"),
        sessionInfo,
        resumable: f.boolOrFalse("resumable"),
        snapshot: readSnapshot(object),
      };
    }
    case "member_list":
      return { type, members: f.array("members").map((m, i) => readMember(m, `member_list.members[${i}]`)) };
    case "member_joined":
    case "member_updated":
      return { type, member: readMember(object["member"], `${type}.member`) };
    case "member_left":
      return { type, memberId: f.string("memberId"), reason: f.string("reason") };
    case "kicked":
    case "session_closed":
      return { type, reason: f.string("reason") };
    case "pong":
      return { type };
    case "message":
      return { type, from: f.string("from"), data: f.any("data") };
    case "token":
      return { type, token: f.string("token") };
    case "resumed":
      return { type, lastSeq: f.uint("lastSeq"), replayed: f.uint("replayed") };
    case "resume_failed":
      return { type, reason: f.string("reason") };
    case "ack":
      return { type, seq: f.uint("seq") };
    case "state":
      return { type, state: f.any("state"), version: f.uint("version"), term: f.uint("term"), updatedBy: f.string("updatedBy") };
    case "handoff_started":
      return { type, handoffId: f.string("handoffId"), targetId: f.string("targetId") };
    case "handoff_request":
      return {
        type,
        handoffId: f.string("handoffId"),
        fromId: f.string("fromId"),
        state: f.any("state"),
        version: f.uint("version"),
        term: f.uint("term"),
        timeoutMs: f.uint("timeoutMs"),
      };
    case "handoff_ack":
      return { type, handoffId: f.string("handoffId"), hostId: f.string("hostId"), term: f.uint("term") };
    case "host_changed":
      return {
        type,
        hostId: f.string("hostId"),
        previousHostId: f.string("previousHostId"),
        term: f.uint("term"),
        reason: f.string("reason"),
      };
    case "handoff_failed":
      return { type, reason: f.string("reason"), handoffId: f.optionalString("handoffId"), targetId: f.optionalString("targetId") };
    case "media_token": {
      const port = f.uint("port");
      if (port > 65535) throw new FieldError(`media_token.port must be at most 65535, got ${port}`);
      return {
        type,
        token: f.string("token"),
        role: f.oneOf("role", MEDIA_ROLES),
        streamId: f.string("streamId"),
        port,
        expiresAt: f.uint("expiresAt"),
      };
    }
    default:
      throw new FieldError(`${type}: not a known type`);
  }
}

/**
 * Decodes a server frame with its `timestamp` and `seq` (the Rust
 * `decode_server_numbered`). Never throws: a frame it cannot read is a `DecodeFailure`.
 */
export function decodeServer(text: string): DecodedServerFrame | DecodeFailure {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    return { error: `not JSON: ${e instanceof Error ? e.message : String(e)}` };
  }
  if (!nestingWithin(text, value, MAX_NESTING)) {
    return { error: `nested deeper than ${MAX_NESTING} levels (the Rust SDK's limit)` };
  }
  if (!isObject(value) || typeof value["type"] !== "string") {
    return { error: "a server message is an object with a string `type`" };
  }
  const type = value["type"];
  const stamp = value["timestamp"];
  const timestamp = typeof stamp === "number" ? stamp : undefined;
  const rawSeq = value["seq"];
  const seq = type !== "ack" && isUint(rawSeq) ? rawSeq : undefined;
  try {
    const f = new Fields(value, type);
    let received: Received;
    if (type === "error") {
      const error: ServerError = { code: f.string("code"), message: f.string("message") };
      const details = value["details"];
      if (details !== undefined && details !== null) error.details = details;
      received = { kind: "error", error };
    } else if (SERVER_TYPES.includes(type)) {
      received = { kind: "known", message: readKnown(type, f, value) };
    } else {
      received = { kind: "unknown", type, raw: text };
    }
    return { received, timestamp, seq };
  } catch (e) {
    if (e instanceof FieldError) return { error: e.message };
    return { error: String(e) };
  }
}

/** Whether `decoded` is a failure. */
export function isDecodeFailure(decoded: DecodedServerFrame | DecodeFailure): decoded is DecodeFailure {
  return "error" in decoded;
}

/** A server error as the Rust `Display` writes it: `code: message`. */
export function describeServerError(error: ServerError): string {
  return `${error.code}: ${error.message}`;
}
