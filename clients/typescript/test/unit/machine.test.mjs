// machine.test.mjs: the client rules on a fake clock, plain connections (resume off, the
// landed first layer): join, member table, heartbeats, latency, silence, reconnection
// attempts, and the endings that must not reconnect; then the media token request.
// Ports, case for case and under the same names (camelCase of the Rust test name):
//   - crates/client/src/machine/tests.rs (every test);
//   - crates/client/src/machine/media_tests.rs (every test but one, Rust-only: see below);
//   - the reconnection policy's tests in crates/client/src/config.rs (at the end: the
//     policy's delays, `delayBefore`; its Debug-output test is Rust-only, see below).
// The harness (fake clock, drain, frames) is ./support.mjs; timers fire by calling
// `handleTimeout(now)` once `pollTimeout()` has come, in 100 ms steps.
import { test } from "node:test";
import assert from "node:assert/strict";
import { isAccessRefusal, delayBefore, DEFAULTS, resolveConfig, LoudSyncError } from "../../dist/esm/index.js";
import {
  Rig,
  T0_MS,
  plainMember,
  plainHost,
  memberConfig,
  has,
  sends,
  decoded,
  seqs,
  emitted,
  plain,
  assertPlainEqual,
  assertHasEvent,
  assertThrowsKind,
  member,
  rconnectedWith,
  dropAndReopen,
} from "./support.mjs";

const NORMAL = 1000;
const GOING_AWAY = 1001;

/** A plain member, started: `connecting`, then the connect action. */
function started() {
  const r = new Rig(plainMember());
  r.m.start(r.now);
  assertPlainEqual(r.drain(), [
    { type: "emit", event: { type: "stateChanged", state: "connecting" } },
    { type: "connect" },
  ]);
  return r;
}

/** A plain member joined as `c1`. */
function connected() {
  const r = started();
  r.join("c1");
  r.drain();
  return r;
}

/** A plain host joined as `h`. */
function hosting() {
  const r = new Rig(plainHost());
  r.m.start(r.now);
  r.drain();
  r.join("h");
  r.drain();
  return r;
}

const ids = (r) => r.m.members().map((m) => m.id);
const findEvent = (events, type) => events.find((e) => e.type === type);
const anyEvent = (events, type, pred = () => true) => events.some((e) => e.type === type && pred(e));

test("join sends device info then welcome connects and fills the member table", () => {
  let r = new Rig(plainHost());
  r.m.start(r.now);
  r.drain();
  r.m.handleConnected(r.now);
  const join = sends(r.drain())[0];
  assert.equal(join.type, "join");
  assert.equal(join.sessionId, "s1");
  assert.equal(join.sessionName, "Party");
  assert.deepStrictEqual(join.deviceInfo, { id: "mac", name: "Mac", type: "host" });
  assert.equal(join.protocolVersion, "1.0");

  r = started();
  r.join("c1");
  let ev = r.events();
  assertHasEvent(ev, { type: "stateChanged", state: "connected" });
  assert.ok(anyEvent(ev, "welcome", (e) => e.clientId === "c1"), JSON.stringify(ev));
  const last = ev[ev.length - 1];
  assert.ok(last.type === "memberList" && last.members.length === 2, JSON.stringify(last));
  assert.equal(r.m.state(), "connected");
  assert.equal(r.m.clientId(), "c1");
  assert.equal(r.m.members()[0].latency, 12);

  r.text({ type: "member_joined", timestamp: 1, member: member("c2", "Tab", false, 3) });
  assert.deepStrictEqual(ids(r), ["h", "c1", "c2"]);
  r.text({ type: "member_left", timestamp: 1, memberId: "c1", reason: "left" });
  assert.deepStrictEqual(ids(r), ["h", "c2"]);
  ev = r.events();
  assert.ok(ev[0].type === "memberJoined" && ev[0].member.id === "c2", JSON.stringify(ev));
  assertPlainEqual(ev[1], { type: "memberLeft", memberId: "c1", reason: "left" });
});

test("heartbeat and ping every interval and latency from own send time", () => {
  const r = connected();
  const actions = r.runUntil(10_050);
  const sent = sends(actions);
  assert.deepStrictEqual(
    sent.map((f) => f.type),
    ["heartbeat", "ping", "heartbeat", "ping", "heartbeat", "ping"],
  );
  const pingTs = sent[5].timestamp;
  // The first beat goes out at the first timer after joining (the 100 ms step), then every 5 s.
  assert.equal(pingTs, T0_MS + 10_100);
  r.at(10_137);
  r.m.handleActivity(r.now);
  r.text({ type: "pong", timestamp: pingTs });
  assertPlainEqual(r.events(), [{ type: "latency", ms: 37 }]);
  assert.equal(r.m.latency(), 37);
});

test("silence is a lost connection then three attempts two seconds apart then failed", () => {
  const r = connected();
  // The server answers nothing: after 15 s the client notices.
  const actions = r.runUntil(16_000);
  const lostAt = actions.findIndex((a) => a.type === "closeSocket");
  assert.ok(lostAt >= 0, "closes the socket");
  assert.ok(
    emitted(actions.slice(lostAt)).some((e) => e.type === "stateChanged" && e.state === "reconnecting"),
  );
  assert.equal(r.m.state(), "reconnecting");
  assert.equal(r.m.clientId(), null, "session state is cleared while reconnecting");
  // Attempts 2 s apart (each connect fails at once), then failed.
  const attempts = [];
  let failedReason;
  let t = r.elapsed();
  while (t < 30_000 && r.m.state() !== "failed") {
    t += 100;
    r.step(t);
    const batch = r.drain();
    for (const a of batch) {
      if (a.type === "connect") {
        attempts.push(t);
        r.m.handleConnectFailed(r.now, "refused");
      }
      if (a.type === "emit" && a.event.type === "failed") failedReason = a.event.reason;
    }
    for (const e of r.events()) if (e.type === "failed") failedReason = e.reason;
  }
  assert.equal(attempts.length, 3, JSON.stringify(attempts));
  assert.equal(attempts[1] - attempts[0], 2000);
  assert.equal(attempts[2] - attempts[1], 2000);
  assert.equal(r.m.state(), "failed");
  assert.ok(r.m.isEnded());
  assert.ok(failedReason !== undefined, "a failed event");
  assert.ok(failedReason.includes("could not connect: refused"), failedReason);
});

test("already joined and session not found on rejoin are failed attempts", () => {
  const r = connected();
  r.m.handleClosed(r.now, null); // 1006: dropped
  const ev = r.events();
  assert.ok(ev[0].type === "connectionLost" && ev[0].reason.includes("dropped"), JSON.stringify(ev));
  for (const [i, code] of ["already_joined", "session_not_found"].entries()) {
    let acts = r.runUntil(r.elapsed() + 2000);
    assert.ok(has(acts, "connect"), `attempt ${i + 1}`);
    r.m.handleConnected(r.now);
    r.drain();
    r.text({ type: "error", timestamp: 1, code, message: "m" });
    acts = r.drain();
    assert.ok(has(acts, "closeSocket"));
    assert.equal(r.m.state(), "reconnecting", `${code} is not final`);
  }
  // Third attempt succeeds: connected again with a new id.
  r.runUntil(r.elapsed() + 2000);
  r.join("c9");
  assert.equal(r.m.state(), "connected");
  assert.equal(r.m.clientId(), "c9");
  // And the attempt count starts over for the next loss.
  r.m.handleClosed(r.now, null);
  r.drain();
  const acts = r.runUntil(r.elapsed() + 2000);
  assertHasEvent(emitted(acts), { type: "reconnecting", attempt: 1, of: 3 });
});

test("other join errors on rejoin fail at once", () => {
  const r = connected();
  r.m.handleClosed(r.now, { code: 1011, reason: "" });
  r.runUntil(r.elapsed() + 2000);
  r.m.handleConnected(r.now);
  r.text({ type: "error", timestamp: 1, code: "session_full", message: "full" });
  const ev = r.events();
  assert.ok(anyEvent(ev, "error", (e) => e.error.code === "session_full"), JSON.stringify(ev));
  assert.ok(anyEvent(ev, "failed"), JSON.stringify(ev));
  assert.equal(r.m.state(), "failed");
});

test("kicked ends without reconnecting and clears the session", () => {
  const r = connected();
  r.text({ type: "kicked", timestamp: 1, reason: "bye" });
  r.m.handleClosed(r.now, { code: NORMAL, reason: "" });
  const ev = r.events();
  assertHasEvent(ev, { type: "kicked", reason: "bye" });
  assertHasEvent(ev, { type: "stateChanged", state: "disconnected" });
  assert.ok(r.m.isEnded());
  assert.ok(r.m.members().length === 0 && r.m.clientId() === null);
  assert.deepStrictEqual(r.runUntil(30_000), [], "no reconnection");
});

test("session closed is final unless the server is going away", () => {
  let r = connected();
  r.text({ type: "session_closed", timestamp: 1, reason: "Host ended the session" });
  r.m.handleClosed(r.now, { code: NORMAL, reason: "" });
  let ev = r.events();
  assertHasEvent(ev, { type: "sessionClosed", reason: "Host ended the session" });
  assert.ok(r.m.isEnded());
  assert.equal(r.m.state(), "disconnected");

  r = connected();
  r.text({ type: "session_closed", timestamp: 1, reason: "Server shutting down" });
  r.m.handleClosed(r.now, { code: GOING_AWAY, reason: "" });
  ev = r.events();
  assert.ok(!anyEvent(ev, "sessionClosed"), JSON.stringify(ev));
  assert.ok(anyEvent(ev, "connectionLost", (e) => e.reason.includes("going away")), JSON.stringify(ev));
  assert.equal(r.m.state(), "reconnecting");
});

test("first join rejection ends without reconnecting", () => {
  const r = started();
  r.m.handleConnected(r.now);
  r.text({ type: "error", timestamp: 1, code: "session_not_found", message: "no" });
  const acts = r.drain();
  assert.ok(has(acts, "closeSocket"));
  assert.ok(anyEvent(emitted(acts), "error", (e) => e.error.code === "session_not_found"));
  assert.ok(r.m.isEnded());
  assert.equal(r.m.state(), "disconnected");
});

test("first connect failure is failed without retrying", () => {
  const r = started();
  r.m.handleConnectFailed(r.now, "connection refused");
  const ev = r.events();
  assert.ok(anyEvent(ev, "failed", (e) => e.reason.includes("connection refused")), JSON.stringify(ev));
  assert.equal(r.m.state(), "failed");
  assert.deepStrictEqual(r.runUntil(30_000), []);
});

test("commands need a connection and leave ends cleanly", () => {
  let r = started();
  assertThrowsKind(() => r.m.sendMessage(r.now, 1), "not_connected");
  r = connected();
  r.m.kick(r.now, "c2", "rude");
  r.m.sendMessage(r.now, { a: 1 }, "h");
  r.m.requestMemberList(r.now);
  assert.deepStrictEqual(decoded(r.drain()), [
    { type: "kick", memberId: "c2", reason: "rude" },
    { type: "message", data: { a: 1 }, to: "h" },
    { type: "member_list" },
  ]);
  r.m.leave(r.now);
  assert.deepStrictEqual(decoded(r.drain()), [{ type: "leave" }]);
  assertThrowsKind(() => r.m.ping(r.now), "not_connected", "nothing after leave");
  r.m.handleClosed(r.now, { code: NORMAL, reason: "" });
  assertHasEvent(r.events(), { type: "stateChanged", state: "disconnected" });
  assert.ok(r.m.isEnded());
});

test("join timeout counts as a failed attempt", () => {
  const r = connected();
  r.m.handleClosed(r.now, null);
  r.runUntil(r.elapsed() + 2000);
  r.m.handleConnected(r.now);
  r.drain();
  const acts = r.runUntil(r.elapsed() + 11_000);
  assert.ok(has(acts, "closeSocket"));
  assert.equal(r.m.state(), "reconnecting");
});

test("every frame sent is valid for the server", () => {
  // `decoded` checks each frame against the protocol document (support.mjs's
  // checkClientFrame), the stand-in for the Rust test's use of the server's decoder.
  let r = new Rig(plainHost());
  r.m.start(r.now);
  r.drain();
  r.m.handleConnected(r.now);
  const join = decoded(r.drain())[0];
  assert.equal(join.type, "join");
  assert.equal(join.sessionName, "Party");
  assert.equal(join.protocolVersion, "1.0");
  r = connected();
  const sent = decoded(r.runUntil(200));
  assert.equal(sent[0].type, "heartbeat");
  assert.equal(sent[1].type, "ping");
});

const QUOTA =
  '{"type":"error","code":"quota_exceeded","message":"over your quota","details":{"limit":5},"timestamp":1,"retryAfter":30}';
const PRESENCE = '{"type":"presence_diff","timestamp":1,"added":["c_9"],"removed":[],"v":1e2}';

test("a newer server's error code reaches the application", () => {
  const r = connected();
  r.m.handleText(r.now, QUOTA);
  assertPlainEqual(r.events(), [
    { type: "error", error: { code: "quota_exceeded", message: "over your quota", details: { limit: 5 } } },
  ]);
  assert.equal(r.m.state(), "connected", "not fatal when joined");
});

test("a newer server's message type reaches the application with its bytes", () => {
  const r = connected();
  const members = plain(r.m.members());
  r.m.handleText(r.now, PRESENCE);
  assertPlainEqual(r.events(), [{ type: "unknown", kind: "presence_diff", raw: PRESENCE }]);
  assertPlainEqual(r.m.members(), members, "the client's own state is unchanged");
  assert.equal(r.m.state(), "connected");
});

test("while joining unknown types are delivered and unknown codes refuse the join", () => {
  const r = started();
  r.m.handleConnected(r.now);
  r.drain();
  r.m.handleText(r.now, PRESENCE);
  const ev = r.events();
  assert.ok(ev.length === 1 && ev[0].type === "unknown" && ev[0].kind === "presence_diff", JSON.stringify(ev));
  r.m.handleText(r.now, QUOTA);
  const acts = r.drain();
  assert.ok(has(acts, "closeSocket"));
  assert.ok(anyEvent(emitted(acts), "error", (e) => e.error.code === "quota_exceeded"));
  assert.ok(r.m.isEnded());
});

test("known types with extra fields still work", () => {
  const r = connected();
  r.m.handleText(
    r.now,
    '{"type":"member_left","timestamp":1,"memberId":"c1","reason":"left","colour":"red"}',
  );
  assertPlainEqual(r.events(), [{ type: "memberLeft", memberId: "c1", reason: "left" }]);
});

test("a host timed out by the server is told and does not re-create the session", () => {
  // Frozen (SIGSTOP) past the server's heartbeat timeout, then thawed: the server has
  // closed the socket with 1000 `heartbeat timeout` and ended the session with it.
  const r = hosting();
  r.at(40_000);
  r.m.handleClosed(r.now, { code: NORMAL, reason: "heartbeat timeout" });
  const ev = r.events();
  const closed = findEvent(ev, "sessionClosed");
  assert.ok(closed, `told that the session ended: ${JSON.stringify(ev)}`);
  assert.ok(
    closed.reason.includes("1000 heartbeat timeout") && closed.reason.includes("not re-created"),
    closed.reason,
  );
  assert.ok(r.m.isEnded());
  assert.equal(r.m.state(), "disconnected");
  const later = r.runUntil(80_000);
  assert.ok(!has(later, "connect"), "no reconnection, so no new session under the same id");
});

test("a host that hears nothing is told its session ended rather than rejoining", () => {
  // The thawed host's own timer may fire before it reads the close frame.
  let r = hosting();
  const actions = r.runUntil(16_000);
  assert.ok(has(actions, "closeSocket"));
  assert.ok(anyEvent(emitted(actions), "sessionClosed", (e) => e.reason.includes("silence")));
  assert.ok(!has(actions, "connect"));
  assert.ok(r.m.isEnded());
  // A dropped socket (no close frame) is the same for a host.
  r = hosting();
  r.m.handleClosed(r.now, null);
  assert.ok(anyEvent(r.events(), "sessionClosed", (e) => e.reason.includes("dropped")));
  assert.deepStrictEqual(r.runUntil(30_000), []);
});

test("a host whose server goes away reopens the session after the restart", () => {
  let r = hosting();
  r.text({ type: "session_closed", timestamp: 1, reason: "Server shutting down" });
  r.m.handleClosed(r.now, { code: GOING_AWAY, reason: "session closed" });
  assert.ok(!anyEvent(r.events(), "sessionClosed"));
  assert.equal(r.m.state(), "reconnecting");
  const acts = r.runUntil(r.elapsed() + 2000);
  assert.ok(has(acts, "connect"));
  // 1001 without a `session_closed` (the socket was closed before it) is the same.
  r = hosting();
  r.m.handleClosed(r.now, { code: GOING_AWAY, reason: "server shutting down" });
  assert.equal(r.m.state(), "reconnecting");
});

test("a member whose connection is lost still rejoins", () => {
  const r = connected();
  r.m.handleClosed(r.now, { code: NORMAL, reason: "heartbeat timeout" });
  const ev = r.events();
  assert.ok(!anyEvent(ev, "sessionClosed"));
  assert.ok(anyEvent(ev, "connectionLost", (e) => e.reason.includes("heartbeat timeout")), JSON.stringify(ev));
  assert.equal(r.m.state(), "reconnecting");
});

test("join carries the password and the token", () => {
  let r = new Rig(plainMember({ password: "open sesame", token: "t.o.k" }));
  r.m.start(r.now);
  r.drain();
  r.m.handleConnected(r.now);
  const join = decoded(r.drain())[0];
  assert.equal(join.type, "join");
  assert.equal(join.password, "open sesame");
  assert.equal(join.token, "t.o.k");
  // And neither when not configured.
  r = started();
  r.m.handleConnected(r.now);
  const sent = sends(r.drain())[0];
  assert.ok(!("password" in sent) && !("token" in sent), JSON.stringify(sent));
});

const ACCESS_CODES = [
  "password_required",
  "wrong_password",
  "token_required",
  "invalid_token",
  "host_not_allowed",
  "too_many_attempts",
];

test("access refusals are typed and never retried", () => {
  for (const code of ACCESS_CODES) {
    // The first join: ended, with the typed error.
    let r = started();
    r.m.handleConnected(r.now);
    r.text({ type: "error", timestamp: 1, code, message: "no" });
    const ev = r.events();
    const e = findEvent(ev, "error");
    assert.ok(e, `${code}: no error event in ${JSON.stringify(ev)}`);
    assert.ok(isAccessRefusal(e.error), code);
    assert.equal(e.error.code, code);
    assert.ok(r.m.isEnded(), code);
    assert.deepStrictEqual(r.runUntil(30_000), [], code);

    // A rejoin after a lost connection: failed at once, no further attempt.
    r = connected();
    r.m.handleClosed(r.now, null);
    r.runUntil(r.elapsed() + 2000);
    r.m.handleConnected(r.now);
    r.drain();
    r.text({ type: "error", timestamp: 1, code, message: "no" });
    assert.equal(r.m.state(), "failed", code);
    assert.ok(!has(r.runUntil(r.elapsed() + 30_000), "connect"), `${code} retried`);
  }
  assert.ok(!isAccessRefusal({ code: "session_full", message: "" }));
});

// ---- media_tests.rs: the `media_token` request (issue 13).

/** A plain member joined as `c1` (media_tests.rs's `plain_connected`). */
const plainConnected = connected;

function grantFrame(role) {
  return {
    type: "media_token",
    token: "T".repeat(43),
    role,
    streamId: "s1",
    port: 40001,
    expiresAt: 1_800_000_030_000,
    timestamp: 1,
  };
}

function grant(role) {
  return { token: "T".repeat(43), role, streamId: "s1", port: 40001, expiresAt: 1_800_000_030_000 };
}

test("the request is the protocol's field-less media_token frame", () => {
  const r = plainConnected();
  r.m.requestMediaToken(r.now);
  const actions = r.drain();
  assert.deepStrictEqual(decoded(actions), [{ type: "media_token" }]);
  assert.equal(actions[0]?.type, "send", `one frame sent: ${JSON.stringify(actions)}`);
  const frame = JSON.parse(actions[0].text);
  assert.equal(frame.type, "media_token");
  assert.equal(Object.keys(frame).length, 2, `type and timestamp only: ${actions[0].text}`);
});

test("the request needs a connection", () => {
  const r = new Rig(memberConfig());
  assertThrowsKind(() => r.m.requestMediaToken(r.now), "not_connected");
  r.m.start(r.now);
  assertThrowsKind(() => r.m.requestMediaToken(r.now), "not_connected", "not while connecting");
});

test("the reply is a typed media token event for either role", () => {
  const r = plainConnected();
  const generation = r.m.generation();
  for (const role of ["subscribe", "publish"]) {
    r.text(grantFrame(role));
    assertPlainEqual(r.events(), [{ type: "mediaToken", grant: grant(role) }]);
  }
  assert.equal(r.m.state(), "connected");
  assert.equal(r.m.generation(), generation, "a grant changes nothing the snapshot shows");
});

test("media unavailable is a typed error and the connection stays", () => {
  const r = plainConnected();
  r.m.requestMediaToken(r.now);
  r.drain();
  const message = "media_token: this server has no media relay (start it with --media-listen)";
  r.text({ type: "error", timestamp: 1, code: "media_unavailable", message });
  const events = r.events();
  assert.equal(events.length, 1, `one error event: ${JSON.stringify(events)}`);
  assert.equal(events[0].type, "error");
  const error = events[0].error;
  assert.equal(error.code, "media_unavailable");
  assert.ok(!isAccessRefusal(error));
  assert.equal(error.message, message);
  assert.equal(r.m.state(), "connected");
  assert.doesNotThrow(() => r.m.requestMediaToken(r.now), "still taking commands");
});

test("on a resumable connection the request is numbered and queued while away", () => {
  const [r] = rconnectedWith(memberConfig());
  r.m.requestMemberList(r.now);
  r.m.requestMediaToken(r.now);
  assert.deepStrictEqual(seqs(r.drain()), [
    [1, "member_list"],
    [2, "media_token"],
  ]);
  // Acknowledged, then the socket drops: a request given while away waits for the resume.
  r.text({ type: "ack", timestamp: 1, seq: 2 });
  r.drain();
  dropAndReopen(r);
  r.m.requestMediaToken(r.now);
  assert.deepStrictEqual(seqs(r.drain()), [], "nothing sent before `resumed`");
  r.text({ type: "resumed", timestamp: 1, lastSeq: 2, replayed: 0 });
  assert.deepStrictEqual(seqs(r.drain()), [[3, "media_token"]]);
  // Its reply, numbered by the server, is the typed event.
  r.text({ ...grantFrame("subscribe"), seq: 2 });
  const events = emitted(r.drain()).filter((e) => e.type === "mediaToken");
  assertPlainEqual(events, [{ type: "mediaToken", grant: grant("subscribe") }]);
});

// Not ported: `a_grant_gives_the_start_values_and_never_shows_its_token`. It tests Rust-only
// things: the grant's `Debug` output (`<redacted>`) and its conversion to the media crate's
// `MediaToken` / `StreamId` types, which the TypeScript SDK does not have (its grant is a
// plain object; the UDP media relay is not part of this package).

// ---- crates/client/src/config.rs's tests: the reconnection policy's delays.

test("fixed delay by default", () => {
  const policy = { attempts: DEFAULTS.reconnect.attempts, delayMs: DEFAULTS.reconnect.delayMs };
  assert.equal(policy.attempts, 3);
  for (let n = 1; n <= 3; n++) assert.equal(delayBefore(policy, n, Math.random), 2000);
  // And what `resolveConfig` fills in is that policy.
  const resolved = memberConfig().reconnect;
  assert.deepStrictEqual([resolved.attempts, resolved.delayMs, resolved.backoff], [3, 2000, undefined]);
});

test("backoff grows caps and jitters within bounds", () => {
  const policy = { attempts: 10, delayMs: 100, backoff: { factor: 2, maxDelayMs: 1000, jitter: 0.2 } };
  // A seeded generator, as the Rust test's `Rng::with_seed(7)`; the extremes too.
  let seed = 7;
  const seeded = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
  for (const random of [seeded, () => 0, () => 0.999999]) {
    for (const [n, base] of [
      [1, 100],
      [2, 200],
      [3, 400],
      [4, 800],
      [5, 1000],
      [9, 1000],
    ]) {
      const d = delayBefore(policy, n, random);
      assert.ok(d >= base * 0.8 - 0.001 && d <= base * 1.2 + 0.001, `attempt ${n}: ${d}`);
    }
  }
});

test("a backoff with a missing or broken field is refused as a setting", () => {
  // Before, `{ factor: 2 }` (no maxDelayMs, easy to write from JavaScript) made every delay
  // NaN: the driver's timer then fired every millisecond and never reconnected.
  const options = (backoff) => ({
    url: "ws://x/",
    sessionId: "s1",
    device: { id: "d", name: "D", type: "client" },
    reconnect: { attempts: 3, delayMs: 100, backoff },
  });
  for (const backoff of [
    { factor: 2 },
    { factor: 2, maxDelayMs: 1000 },
    { factor: Number.NaN, maxDelayMs: 1000, jitter: 0 },
    { factor: 0.5, maxDelayMs: 1000, jitter: 0 },
    { factor: 2, maxDelayMs: -1, jitter: 0 },
    { factor: 2, maxDelayMs: 1000, jitter: 1.5 },
    { factor: 2, maxDelayMs: Infinity, jitter: 0 },
    "fast",
  ]) {
    assert.throws(
      () => resolveConfig(options(backoff)),
      (e) => e instanceof LoudSyncError && e.kind === "config" && /reconnect\.backoff/.test(e.message),
      JSON.stringify(backoff),
    );
  }
  const good = resolveConfig(options({ factor: 2, maxDelayMs: 1000, jitter: 0.2 })).reconnect.backoff;
  assert.deepStrictEqual(good, { factor: 2, maxDelayMs: 1000, jitter: 0.2 });
  for (let n = 1; n <= 5; n++) assert.ok(Number.isFinite(delayBefore({ attempts: 5, delayMs: 100, backoff: good }, n, Math.random)));
});

// Not ported: `credentials_never_show_in_debug_output` (config.rs). It tests the Rust
// config's `Debug` output and its `Secret` wrapper; the TypeScript config is a plain object
// with no such formatting (the password and token are plain strings there).
