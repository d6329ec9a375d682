// events.ts: the one admin event stream of the page, `GET /v1/events` (docs/PROTOCOL.md §17),
// read with EventSource (which sends the admin cookie). It hands every session event to the
// pages that listen, tells them to reload their lists when they may have missed something (a
// fresh subscription, `reset`, `overflow`), and drives the live indicator.

import type { Member } from "./api";

/** A numbered session event of §17.2: its kind and its JSON data. */
export type StreamEvent =
  | { kind: "session_opened"; data: { session: string; name: string; maxMembers: number; hostId: string | null; hostName: string | null; passwordProtected: boolean; at: number } }
  | { kind: "session_closed"; data: { session: string; reason: string; at: number } }
  | { kind: "member_joined"; data: { session: string; member: Member; at: number } }
  | { kind: "member_left"; data: { session: string; memberId: string; reason: string; at: number } }
  | { kind: "member_updated"; data: { session: string; member: Member; at: number } }
  | { kind: "host_changed"; data: { session: string; hostId: string | null; previousHostId: string | null; term: number; reason: string; at: number } }
  | { kind: "handoff"; data: { session: string; outcome: string; handoffId?: string; hostId?: string; targetId?: string | null; reason?: string; at: number } }
  | { kind: "resume"; data: { session: string | null; memberId: string | null; outcome: string; reason?: string; at: number } };

/** The cumulative counters and current levels of a `stats` event. */
export interface Stats {
  at: number;
  joins: number;
  framesIn: number;
  framesOut: number;
  slowConsumerDrops: number;
  heartbeatTimeouts: number;
  resumes: number;
  resumeFailures: number;
  connections: number;
  sessions: number;
  members: number;
  subscribers: number;
}

/** What a listener of the stream is told. */
export interface StreamListener {
  /** A numbered session event, live or replayed. */
  event?(e: StreamEvent): void;
  /** Lists may be stale (fresh subscription, `reset`, `overflow`): load them again. */
  reload?(): void;
  /** A `stats` event. */
  stats?(s: Stats): void;
  /** The stream opened (true) or is down and being retried (false). */
  status?(live: boolean): void;
}

const SESSION_KINDS = [
  "session_opened",
  "session_closed",
  "member_joined",
  "member_left",
  "member_updated",
  "host_changed",
  "handoff",
  "resume",
] as const;

const listeners = new Set<StreamListener>();
let source: EventSource | null = null;
let live = false;
let retryTimer: ReturnType<typeof setTimeout> | null = null;
let retryDelay = 1000;
let stopped = true;

/** Adds a listener; returns the function that removes it. */
export function listen(l: StreamListener): () => void {
  listeners.add(l);
  l.status?.(live);
  return () => listeners.delete(l);
}

/** Whether the stream is open now. */
export function isLive(): boolean {
  return live;
}

function emit(fn: (l: StreamListener) => void): void {
  for (const l of [...listeners]) {
    try {
      fn(l);
    } catch (e) {
      console.error("dashboard listener failed", e);
    }
  }
}

function setLive(value: boolean): void {
  if (live === value) return;
  live = value;
  emit((l) => l.status?.(value));
}

function parse(e: Event): unknown {
  try {
    return JSON.parse((e as MessageEvent<string>).data);
  } catch {
    return null;
  }
}

function open(): void {
  retryTimer = null;
  // A new EventSource has no Last-Event-ID: the server sends `hello` and live events only, so
  // the first `hello` of each one means "load the lists now" (subscribe first, then load: §17.3).
  let fresh = true;
  const es = new EventSource("/v1/events");
  source = es;
  es.addEventListener("open", () => {
    retryDelay = 1000;
  });
  es.addEventListener("hello", () => {
    setLive(true);
    if (fresh) {
      fresh = false;
      emit((l) => l.reload?.());
    }
  });
  es.addEventListener("reset", () => emit((l) => l.reload?.()));
  es.addEventListener("overflow", () => {
    // The response ends after this; EventSource reconnects with its Last-Event-ID by itself.
    setLive(false);
    emit((l) => l.reload?.());
  });
  es.addEventListener("shutdown", () => setLive(false));
  es.addEventListener("stats", (e) => {
    const s = parse(e);
    if (s && typeof s === "object") emit((l) => l.stats?.(s as Stats));
  });
  for (const kind of SESSION_KINDS) {
    es.addEventListener(kind, (e) => {
      const data = parse(e);
      if (data && typeof data === "object") {
        const ev = { kind, data } as StreamEvent;
        emit((l) => l.event?.(ev));
      }
    });
  }
  es.addEventListener("error", () => {
    setLive(false);
    if (es.readyState === EventSource.CLOSED && source === es) {
      // EventSource gave up (a 401/403, a wrong content type): retry ourselves, backing off.
      source = null;
      if (!stopped) {
        retryTimer = setTimeout(open, retryDelay);
        retryDelay = Math.min(retryDelay * 2, 10000);
      }
    }
  });
}

/** Opens the stream (again); a no-op while it is open. */
export function start(): void {
  stopped = false;
  if (source) return;
  if (retryTimer) clearTimeout(retryTimer);
  open();
}

/** Closes the stream (e.g. while the login form is shown). */
export function stop(): void {
  stopped = true;
  if (retryTimer) clearTimeout(retryTimer);
  retryTimer = null;
  source?.close();
  source = null;
  setLive(false);
}
