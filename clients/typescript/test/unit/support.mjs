// support.mjs: the harness of the machine's unit tests, a port of the Rust tests' `Rig` and
// helpers (crates/client/src/machine/tests.rs, resume_tests.rs, handoff_tests.rs). A `Rig`
// holds a Machine on a fake clock: `now` is a number of ms that the test moves by hand
// (`at`), timers fire by calling `handleTimeout(now)` once `pollTimeout()` has come
// (`runUntil`, in 100 ms steps like the Rust rig), and the actions the machine queued are
// drained and read with the helpers below (the frames sent, parsed; their `seq`; the events).
// Nothing here reads a real clock or opens a socket.
import assert from "node:assert/strict";
import { Machine, resolveConfig, LoudSyncError } from "../../dist/esm/index.js";

/** The Unix time (ms) the machine is given at its start, as the Rust tests' `T0_MS`. */
export const T0_MS = 1_800_000_000_000;

/** Where the fake monotonic clock starts (not 0, so a `!deadline` bug would show). */
export const T0 = 10_000;

/** The server's local token in the resume tests (`A` in resume_tests.rs). */
export const A = "SSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSS";

/** A fixed source of randomness: backoff jitter is zero at 0.5 (the Rust tests' seed). */
const fixedRandom = () => 0.5;

/**
 * A member's settings, as `ClientConfig::member("ws://x/", "s1", "dev-1", "Phone")` with
 * `jitter_seed = 1`; resume on unless `overrides` says otherwise.
 */
export function memberConfig(overrides = {}) {
  return resolveConfig({
    url: "ws://x/",
    sessionId: "s1",
    device: { id: "dev-1", name: "Phone", type: "client" },
    random: fixedRandom,
    ...overrides,
  });
}

/** A host's settings, as `ClientConfig::host("ws://x/", "s1", "Party", "mac", "Mac")`. */
export function hostConfig(overrides = {}) {
  return resolveConfig({
    url: "ws://x/",
    sessionId: "s1",
    sessionName: "Party",
    device: { id: "mac", name: "Mac", type: "host" },
    random: fixedRandom,
    ...overrides,
  });
}

/** A host opening a new session, as `ClientConfig::new_session("ws://x/", "Party", "mac", "Mac")`. */
export function newSessionConfig(overrides = {}) {
  return hostConfig({ sessionId: "", ...overrides });
}

/** Plain (resume off) settings: the landed first layer, as tests.rs's `config()`. */
export const plainMember = (overrides = {}) => memberConfig({ resume: false, ...overrides });
/** A plain host, as tests.rs's `host_config()`. */
export const plainHost = (overrides = {}) => hostConfig({ resume: false, ...overrides });

/** A Machine on a fake clock, with the Rust `Rig`'s helpers. */
export class Rig {
  /** A machine for `config`, started at `T0` (Unix `T0_MS`). */
  constructor(config) {
    this.t0 = T0;
    this.now = T0;
    this.m = new Machine(config, T0, T0_MS);
  }

  /** Moves the clock to `ms` after the start; returns the new `now`. */
  at(ms) {
    this.now = this.t0 + ms;
    return this.now;
  }

  /** Milliseconds since the start. */
  elapsed() {
    return this.now - this.t0;
  }

  /** Every action, the role announcements included. */
  drainAll() {
    const out = [];
    for (let a = this.m.pollAction(); a !== undefined; a = this.m.pollAction()) {
      out.push(a);
      assert.ok(out.length < 100_000, "pollAction never runs dry");
    }
    return out;
  }

  /** Every action without the role announcements (`roleChanged`), as the Rust `drain`. */
  drain() {
    return this.drainAll().filter((a) => !(a.type === "emit" && a.event.type === "roleChanged"));
  }

  /** The events among `drain()`. */
  events() {
    return emitted(this.drain());
  }

  /** A text frame from the server: an object (sent as its JSON) or a string, at `now`. */
  text(frame) {
    this.m.handleText(this.now, typeof frame === "string" ? frame : JSON.stringify(frame));
  }

  /** Runs timers until `untilMs` after the start, in 100 ms steps; returns every action. */
  runUntil(untilMs) {
    const out = [];
    let t = this.elapsed();
    while (t < untilMs) {
      t += 100;
      this.step(t);
      out.push(...this.drain());
    }
    return out;
  }

  /** Moves the clock to `t` ms after the start and fires the timer if it is due. */
  step(t) {
    const now = this.at(t);
    const due = this.m.pollTimeout();
    if (due !== undefined && due <= now) this.m.handleTimeout(now);
  }

  /** Connects and joins a plain connection with `clientId` (tests.rs's `Rig::join`). */
  join(clientId) {
    this.m.handleConnected(this.now);
    this.text({
      type: "welcome",
      timestamp: 1,
      clientId,
      sessionInfo: { id: "s1", name: "S", hostId: "h" },
    });
    this.text({
      type: "member_list",
      timestamp: 1,
      members: [
        { id: "h", name: "Host", isHost: true, connectionStatus: "connected", joinedAt: 1, latency: 12 },
        { id: clientId, name: "Phone", isHost: false, connectionStatus: "connected", joinedAt: 2 },
      ],
    });
  }
}

/** Whether `actions` hold an action of `type` (`connect`, `closeSocket`). */
export function has(actions, type) {
  return actions.some((a) => a.type === type);
}

/** The texts of the frames sent, in order. */
export function texts(actions) {
  return actions.filter((a) => a.type === "send").map((a) => a.text);
}

/** The frames sent, parsed (the Rust `sends`). */
export function sends(actions) {
  return texts(actions).map((t) => JSON.parse(t));
}

/**
 * What the sent frames say (the Rust `decoded`, which reads them with the server's
 * decoder): each frame parsed, checked valid for the server (`checkClientFrame`), without
 * `timestamp` and `seq`, and without top-level `null`s (the server reads `null` as absent;
 * `message.data` keeps its `null`).
 */
export function decoded(actions) {
  return texts(actions).map((text) => {
    const problem = checkClientFrame(text);
    assert.equal(problem, null, `a valid client frame: ${text}`);
    const frame = JSON.parse(text);
    delete frame.timestamp;
    if (frame.type !== "ack") delete frame.seq;
    for (const [k, v] of Object.entries(frame)) {
      if (v === null && !(frame.type === "message" && k === "data")) delete frame[k];
    }
    return frame;
  });
}

/** The frame types sent, in order. */
export function kinds(actions) {
  return sends(actions).map((f) => f.type);
}

/**
 * The `seq` of each sent frame (`null`: absent) with its type: the Rust `seqs` (an `ack`'s
 * `seq` is its field, not a numbering: `null`).
 */
export function seqs(actions) {
  return sends(actions).map((f) => [f.type === "ack" ? null : (f.seq ?? null), f.type]);
}

/** The numbered `message` frames sent, as `[seq, data]` (the Rust `sent_messages`). */
export function sentMessages(actions) {
  return sends(actions)
    .filter((f) => f.type === "message" && Number.isInteger(f.seq))
    .map((f) => [f.seq, f.data]);
}

/** The events in `actions`, in order. */
export function emitted(actions) {
  return actions.filter((a) => a.type === "emit").map((a) => a.event);
}

/** The events as plain JSON values (what is `undefined` goes), for deep comparisons. */
export function plain(value) {
  return value === undefined ? undefined : JSON.parse(JSON.stringify(value));
}

/** Whether `events` hold one deep-equal to `want` (after `plain`). */
export function hasEvent(events, want) {
  const w = JSON.stringify(plain(want));
  return events.some((e) => JSON.stringify(plain(e)) === w);
}

/** Asserts `events` hold one deep-equal to `want`. */
export function assertHasEvent(events, want, message) {
  assert.ok(hasEvent(events, want), message ?? `${JSON.stringify(want)} in ${JSON.stringify(events)}`);
}

/** Asserts `actual` (events, frames, ...) deep-equals `expected`, compared as plain JSON. */
export function assertPlainEqual(actual, expected, message) {
  assert.deepStrictEqual(plain(actual), plain(expected), message);
}

/** The link states announced in `actions`. */
export function links(actions) {
  return emitted(actions)
    .filter((e) => e.type === "linkChanged")
    .map((e) => e.link);
}

/** The roles announced in `actions`. */
export function roles(actions) {
  return emitted(actions)
    .filter((e) => e.type === "roleChanged")
    .map((e) => e.role);
}

/** The connection token of two local tokens: the byte-smaller first (seed 003). */
export function mergeTokens(a, b) {
  return a < b ? a + b : b + a;
}

/** Asserts `fn` throws a LoudSyncError of `kind` (`not_connected`, `queue_full`, ...). */
export function assertThrowsKind(fn, kind, message) {
  assert.throws(
    fn,
    (e) => e instanceof LoudSyncError && e.kind === kind,
    message ?? `throws LoudSyncError ${kind}`,
  );
}

/** A member entry of the wire. */
export function member(id, name, isHost, joinedAt, extra = {}) {
  return { id, name, isHost, connectionStatus: "connected", joinedAt, ...extra };
}

const TOKEN_RE = /^[A-Za-z0-9]+$/;
const isString = (v) => typeof v === "string";
const isOptString = (v) => v === undefined || v === null || typeof v === "string";
const isCount = (v) => Number.isSafeInteger(v) && v >= 0;
const isObject = (v) => typeof v === "object" && v !== null && !Array.isArray(v);

/**
 * Why `text` is not a client frame the server takes (docs/PROTOCOL.md §3, §14.2, §15.2),
 * or `null` if it is: the stand-in for the Rust tests' use of the server's own decoder. It
 * checks the JSON, the type, each type's fields, and the numbering: a `seq` is a positive
 * integer, written as the frame's first key (`{"seq":N,"type":...`).
 */
export function checkClientFrame(text) {
  let f;
  try {
    f = JSON.parse(text);
  } catch {
    return "not JSON";
  }
  if (!isObject(f)) return "not an object";
  // `ack`'s `seq` is its field (the server seq acknowledged), never a numbering.
  if ("seq" in f && f.type !== "ack") {
    if (!Number.isSafeInteger(f.seq) || f.seq < 1) return "seq is not a positive integer";
    if (!text.startsWith(`{"seq":${f.seq},"type":`)) return "a numbered frame starts with seq, then type";
  }
  switch (f.type) {
    case "join": {
      const d = f.deviceInfo;
      if (!isObject(d) || !isString(d.id) || d.id.trim() === "" || !isString(d.name)) return "join: deviceInfo";
      if (d.type !== "host" && d.type !== "client") return "join: deviceInfo.type";
      if (!isOptString(f.sessionId)) return "join: sessionId";
      if (f.sessionId == null && d.type !== "host") return "join: a client needs sessionId";
      if (!isOptString(f.sessionName) || !isOptString(f.password) || !isOptString(f.token)) return "join: fields";
      if (f.protocolVersion !== undefined && !/^\d{1,9}(\.\d{1,9})?$/.test(f.protocolVersion)) {
        return "join: protocolVersion";
      }
      return null;
    }
    case "leave":
      return isOptString(f.reason) ? null : "leave: reason";
    case "heartbeat":
    case "member_list":
    case "media_token":
      return null;
    case "ping":
      return Number.isSafeInteger(f.timestamp) ? null : "ping: timestamp";
    case "kick":
      return isString(f.memberId) && isOptString(f.reason) ? null : "kick: fields";
    case "message":
      return "data" in f && isOptString(f.to) ? null : "message: fields";
    case "token":
      if (!isString(f.token) || !TOKEN_RE.test(f.token) || (f.token.length !== 32 && f.token.length !== 64)) {
        return "token: 32 or 64 alphanumerics";
      }
      return f.lastSeq === undefined || isCount(f.lastSeq) ? null : "token: lastSeq";
    case "ack":
      return isCount(f.seq) ? null : "ack: seq";
    case "state_set": {
      const one = ("state" in f) !== ("patch" in f);
      if (!one) return "state_set: exactly one of state, patch";
      if (!isObject(f.state ?? f.patch)) return "state_set: an object";
      if (f.baseVersion != null && !isCount(f.baseVersion)) return "state_set: baseVersion";
      if (f.term != null && !isCount(f.term)) return "state_set: term";
      return null;
    }
    case "handoff_ready":
      return typeof f.ready === "boolean" ? null : "handoff_ready: ready";
    case "handoff_request":
      return isOptString(f.targetId) ? null : "handoff_request: targetId";
    case "handoff_accept":
      return isString(f.handoffId) ? null : "handoff_accept: handoffId";
    case "handoff_decline":
      return isString(f.handoffId) && isOptString(f.reason) ? null : "handoff_decline: fields";
    default:
      return `unknown type ${JSON.stringify(f.type)}`;
  }
}

// ---- The resume tests' helpers (resume_tests.rs), shared with the handoff and media tests.

/** `frame` with `"seq": seq` (the server's numbered frames). */
export function numbered(seq, frame) {
  return { ...frame, seq };
}

/** A `message` from `from`. */
export function messageFrom(from, data) {
  return { type: "message", timestamp: 1, from, data };
}

/** A `welcome` for `clientId` in session `s1` hosted by `h`. */
export function welcome(clientId, resumable) {
  return {
    type: "welcome",
    timestamp: 1,
    clientId,
    resumable,
    sessionInfo: { id: "s1", name: "S", hostId: "h" },
  };
}

/** The member list a member `clientId` (or the host `h` alone) gets after its welcome. */
export function memberListFor(clientId) {
  const host = member("h", "Host", true, 1);
  if (clientId === "h") return { type: "member_list", timestamp: 1, members: [host] };
  return { type: "member_list", timestamp: 1, members: [host, member(clientId, "Phone", false, 2)] };
}

/**
 * Runs the handshake on the current socket (after `handleConnected`, or after a refused
 * resume) and joins as `clientId`; `pending` are the actions that hold step 1. Returns this
 * client's local token and every action.
 */
export function handshakeOnSocket(r, pending, clientId) {
  const all = [...pending];
  const step1 = decoded(all);
  const last = step1[step1.length - 1];
  assert.ok(
    last && last.type === "token" && last.lastSeq === undefined,
    `step 1 expected: ${JSON.stringify(step1)}`,
  );
  const b = last.token;
  r.text({ type: "token", timestamp: 1, token: A });
  r.text({ type: "token", timestamp: 1, token: A });
  r.text(welcome(clientId, true));
  r.text(numbered(1, memberListFor(clientId)));
  all.push(...r.drain());
  return [b, all];
}

/**
 * Connected and joined on a resumable connection, member_list seq 1 received: a member as
 * `c1`, a host as `h`. Returns the rig and the connection token.
 */
export function rconnectedWith(config) {
  const id = config.device.type === "host" ? "h" : "c1";
  const r = new Rig(config);
  r.m.start(r.now);
  r.drain();
  r.m.handleConnected(r.now);
  const first = r.drain();
  const [b] = handshakeOnSocket(r, first, id);
  assert.ok(r.m.isResumable(), "resumable after the handshake");
  return [r, mergeTokens(A, b)];
}

/**
 * Drops the socket (no close frame), waits out the first delay and opens the new socket;
 * returns the actions and the resume frame's token and `lastSeq`.
 */
export function dropAndReopen(r) {
  r.m.handleClosed(r.now, null);
  const until = r.elapsed() + 3000;
  const actions = r.drain();
  actions.push(...r.runUntil(until));
  assert.ok(has(actions, "connect"), JSON.stringify(actions));
  r.m.handleConnected(r.now);
  const sent = r.drain();
  const resume = decoded(sent);
  assert.equal(resume.length, 1, `the resume frame comes first and alone: ${JSON.stringify(resume)}`);
  const frame = resume[0];
  assert.ok(
    frame.type === "token" && Number.isInteger(frame.lastSeq),
    `resume frame expected: ${JSON.stringify(resume)}`,
  );
  actions.push(...sent);
  return [actions, frame.token, frame.lastSeq];
}
