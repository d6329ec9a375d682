/**
 * config.ts: the client's settings with the protocol document's defaults (heartbeat and
 * ping every 5 s, 3 reconnection attempts 2 s apart), the resume layer's (handshake on, a
 * 30 s window, acks every 5 s or 100 messages, sends paced under the server's rate limit)
 * and the session's credentials. Durations are milliseconds. `resolveConfig` fills in the
 * defaults and checks every value, so a mistake fails at `connect`, worded for a person.
 */
import type { DeviceInfo } from "./types.js";
import { LoudSyncError } from "./errors.js";

/** Exponential backoff: attempt n waits `delayMs * factor^(n-1)`, at most `maxDelayMs`, ± `jitter`. */
export interface Backoff {
  /** Growth per attempt (e.g. 2). */
  factor: number;
  /** Upper bound on the wait. */
  maxDelayMs: number;
  /** Fraction of the wait to randomise, 0 to 1. */
  jitter: number;
}

/** How to reconnect after the connection is lost. */
export interface ReconnectPolicy {
  /** Attempts before giving up (state `failed`); 0 disables reconnection. Default 3. */
  attempts: number;
  /** Wait before each attempt, ms. Default 2000. */
  delayMs: number;
  /** Optional exponential backoff with jitter. */
  backoff?: Backoff | undefined;
}

/** A constructor of WebSocket-like objects: the global `WebSocket`, or `ws`'s in Node. */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** The part of the WHATWG WebSocket the client uses (browsers, React Native, `ws`). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string; wasClean?: boolean }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}

/** Everything a client needs to connect; only `url`, `sessionId` and `device` are required. */
export interface ClientOptions {
  /** `ws://host:port/` or `wss://host:port/`. */
  url: string;
  /** The session to join; empty (hosts only) opens a new session with a server-chosen code. */
  sessionId: string;
  /** This device. */
  device: DeviceInfo;
  /** For a host: the name of the session it opens. */
  sessionName?: string;
  /** The session's password, sent in `join`. */
  password?: string;
  /** A signed join token, sent in `join`. */
  token?: string;
  /** The WebSocket constructor; default `globalThis.WebSocket`. */
  WebSocket?: WebSocketConstructor;
  /** `heartbeat` and `ping` every this many ms (document: 5000). */
  heartbeatIntervalMs?: number;
  /** Hearing nothing from the server this long is a lost connection (document: 15000). */
  silenceTimeoutMs?: number;
  /** How long to wait for `welcome` after `join` (10000). */
  joinTimeoutMs?: number;
  /** How long to wait for the server's close after `leave` (2000). */
  leaveTimeoutMs?: number;
  /** Reconnection (3 attempts, 2000 ms apart). */
  reconnect?: Partial<ReconnectPolicy>;
  /** The resume handshake before `join` (default true). */
  resume?: boolean;
  /** How long after a drop a resume is attempted (30000, the server's default window). */
  resumeWindowMs?: number;
  /** Acknowledge received numbered messages at the latest this long after the first (5000). */
  ackIntervalMs?: number;
  /** ... and at the latest every this many (100). */
  ackEvery?: number;
  /** Numbered frames go out at most this many per second on average (80). */
  sendRate?: number;
  /** ... with bursts of up to this many (150). */
  sendBurst?: number;
  /** How many numbered frames may wait (unacknowledged or queued) before sends throw (1000). */
  queueLimit?: number;
  /** Source of randomness in [0, 1) for backoff jitter (default `Math.random`; fixed in tests). */
  random?: () => number;
}

/** `ClientOptions` with every default filled in. */
export interface ClientConfig {
  url: string;
  sessionId: string;
  device: DeviceInfo;
  sessionName: string | undefined;
  password: string | undefined;
  token: string | undefined;
  heartbeatIntervalMs: number;
  silenceTimeoutMs: number;
  joinTimeoutMs: number;
  leaveTimeoutMs: number;
  reconnect: ReconnectPolicy;
  resume: boolean;
  resumeWindowMs: number;
  ackIntervalMs: number;
  ackEvery: number;
  sendRate: number;
  sendBurst: number;
  queueLimit: number;
  random: () => number;
}

/** The document's defaults. */
export const DEFAULTS = {
  heartbeatIntervalMs: 5000,
  silenceTimeoutMs: 15000,
  joinTimeoutMs: 10000,
  leaveTimeoutMs: 2000,
  reconnect: { attempts: 3, delayMs: 2000 },
  resume: true,
  resumeWindowMs: 30000,
  ackIntervalMs: 5000,
  ackEvery: 100,
  sendRate: 80,
  sendBurst: 150,
  queueLimit: 1000,
} as const;

/** Fills in the defaults and checks every value; throws `LoudSyncError` kind `config`. */
export function resolveConfig(options: ClientOptions): ClientConfig {
  const fail = (what: string): never => {
    throw new LoudSyncError("config", what);
  };
  if (typeof options.url !== "string" || !/^wss?:\/\//i.test(options.url)) {
    fail(`url must start with ws:// or wss:// (got ${JSON.stringify(options.url)})`);
  }
  if (typeof options.sessionId !== "string") fail("sessionId must be a string");
  const device = options.device;
  if (!device || typeof device.id !== "string" || device.id === "") fail("device.id must be a non-empty string");
  if (typeof device.name !== "string") fail("device.name must be a string");
  if (device.type !== "host" && device.type !== "client") fail('device.type must be "host" or "client"');
  if (options.sessionId === "" && device.type !== "host") {
    fail("an empty sessionId opens a new session, which only a host may do");
  }
  const ms = (name: string, value: number | undefined, fallback: number, min = 1): number => {
    const v = value ?? fallback;
    if (typeof v !== "number" || !Number.isFinite(v) || v < min) fail(`${name} must be a number >= ${min} (got ${v})`);
    return v;
  };
  const reconnect: ReconnectPolicy = {
    attempts: ms("reconnect.attempts", options.reconnect?.attempts, DEFAULTS.reconnect.attempts, 0),
    delayMs: ms("reconnect.delayMs", options.reconnect?.delayMs, DEFAULTS.reconnect.delayMs, 0),
    backoff: resolveBackoff(options.reconnect?.backoff, fail),
  };
  return {
    url: options.url,
    sessionId: options.sessionId,
    device: { id: device.id, name: device.name, type: device.type },
    sessionName: options.sessionName,
    password: options.password,
    token: options.token,
    heartbeatIntervalMs: ms("heartbeatIntervalMs", options.heartbeatIntervalMs, DEFAULTS.heartbeatIntervalMs),
    silenceTimeoutMs: ms("silenceTimeoutMs", options.silenceTimeoutMs, DEFAULTS.silenceTimeoutMs),
    joinTimeoutMs: ms("joinTimeoutMs", options.joinTimeoutMs, DEFAULTS.joinTimeoutMs),
    leaveTimeoutMs: ms("leaveTimeoutMs", options.leaveTimeoutMs, DEFAULTS.leaveTimeoutMs),
    reconnect,
    resume: options.resume ?? DEFAULTS.resume,
    resumeWindowMs: ms("resumeWindowMs", options.resumeWindowMs, DEFAULTS.resumeWindowMs),
    ackIntervalMs: ms("ackIntervalMs", options.ackIntervalMs, DEFAULTS.ackIntervalMs),
    ackEvery: ms("ackEvery", options.ackEvery, DEFAULTS.ackEvery),
    sendRate: ms("sendRate", options.sendRate, DEFAULTS.sendRate),
    sendBurst: ms("sendBurst", options.sendBurst, DEFAULTS.sendBurst),
    queueLimit: ms("queueLimit", options.queueLimit, DEFAULTS.queueLimit),
    random: options.random ?? Math.random,
  };
}

/**
 * Checks a backoff: every field given, `factor` >= 1, `maxDelayMs` >= 0, `jitter` in 0..1,
 * all finite (a missing one would make every delay NaN, and the driver's timer spin).
 */
function resolveBackoff(backoff: Backoff | undefined, fail: (what: string) => never): Backoff | undefined {
  if (backoff === undefined) return undefined;
  if (typeof backoff !== "object" || backoff === null) {
    return fail("reconnect.backoff must be an object { factor, maxDelayMs, jitter }");
  }
  const field = (name: keyof Backoff, min: number, max: number): number => {
    const v = backoff[name];
    if (typeof v !== "number" || !Number.isFinite(v) || v < min || v > max) {
      const range = max === Infinity ? `>= ${min}` : `from ${min} to ${max}`;
      fail(`reconnect.backoff.${name} must be a number ${range} (got ${String(v)})`);
    }
    return v;
  };
  return { factor: field("factor", 1, Infinity), maxDelayMs: field("maxDelayMs", 0, Infinity), jitter: field("jitter", 0, 1) };
}

/** The wait before reconnection attempt `attempt` (1-based), with backoff and jitter. */
export function delayBefore(policy: ReconnectPolicy, attempt: number, random: () => number): number {
  const b = policy.backoff;
  if (!b) return policy.delayMs;
  const grown = policy.delayMs * Math.pow(Math.max(b.factor, 1), Math.max(attempt - 1, 0));
  const capped = Math.min(grown, b.maxDelayMs);
  const jitter = Math.min(Math.max(b.jitter, 0), 1);
  const spread = capped * jitter * (random() * 2 - 1);
  return Math.max(capped + spread, 0);
}
