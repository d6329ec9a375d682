// resume.test.mjs: the resume layer's rules on a fake clock (issue 10): the handshake and
// the pipelined join, numbering, acks by count and by time, duplicates, gap resends, resume
// with replay, each refusal and the fresh join after it, the closes never resumed, attempts
// until the window's end, queueing while away, pacing, `member_updated`, the formal
// disconnect, and a leave given while away.
// Ports, case for case and under the same names (camelCase of the Rust test name):
//   - crates/client/src/machine/resume_tests.rs (every test; none is Rust-only);
//   - the bookkeeping's own tests in crates/client/src/resume.rs (at the end of this file,
//     against dist/esm/resume.js: Outbox, Inbox, Pacer, closeEndsPlace, localToken).
// The harness is ./support.mjs (`rconnectedWith`, `dropAndReopen`, `handshakeOnSocket`
// are the Rust helpers of the same names).
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  Rig,
  A,
  memberConfig,
  hostConfig,
  has,
  texts,
  decoded,
  seqs,
  sentMessages,
  emitted,
  links,
  assertHasEvent,
  assertThrowsKind,
  mergeTokens,
  numbered,
  messageFrom,
  welcome,
  memberListFor,
  handshakeOnSocket,
  rconnectedWith,
  dropAndReopen,
  checkClientFrame,
} from "./support.mjs";
import { Outbox, Inbox, Pacer, closeEndsPlace, localToken } from "../../dist/esm/resume.js";

const rconnected = () => rconnectedWith(memberConfig());
const anyEvent = (events, type, pred = () => true) => events.some((e) => e.type === type && pred(e));
const acks = (actions) => decoded(actions).filter((f) => f.type === "ack");

test("handshake tokens then pipelined join then a resumable welcome", () => {
  const r = new Rig(memberConfig());
  r.m.start(r.now);
  r.drain();
  r.m.handleConnected(r.now);
  const step1 = r.drain();
  let sent = decoded(step1);
  assert.ok(
    sent.length === 1 && sent[0].type === "token" && sent[0].lastSeq === undefined,
    `only the client's token first, no join: ${JSON.stringify(sent)}`,
  );
  const b = sent[0].token;
  assert.equal(b.length, 32);
  assert.match(b, /^[A-Za-z0-9]{32}$/);
  assert.deepStrictEqual(links(step1), ["OPEN"]);
  assert.equal(r.m.linkState(), "OPEN");

  // Step 2: the server's token. Step 3 (the same B) and the join right behind it.
  r.text({ type: "token", timestamp: 1, token: A });
  const a = r.drain();
  sent = decoded(a);
  assert.equal(sent.length, 2, JSON.stringify(sent));
  assert.deepStrictEqual(sent[0], { type: "token", token: b });
  assert.ok(sent[1].type === "join" && sent[1].sessionId === "s1", JSON.stringify(sent[1]));
  assert.equal(seqs(a)[1][0], null, "join itself is not numbered");
  assert.deepStrictEqual(links(a), ["PRECONNECTED"]);

  // Step 4: confirmation; the connection token is the merge.
  r.text({ type: "token", timestamp: 1, token: A });
  assert.deepStrictEqual(links(r.drain()), ["CONNECTED"]);
  assert.equal(r.m.state(), "connecting");
  r.text(welcome("c1", true));
  assertHasEvent(r.events(), { type: "stateChanged", state: "connected" });
  assert.ok(r.m.isResumable());
  assert.equal(r.m.clientId(), "c1");

  // The connection token is what a resume carries.
  const [, token] = dropAndReopen(r);
  assert.equal(token, mergeTokens(A, b));
  assert.equal(token.length, 64);
});

test("a server refusing the handshake gets a plain join on the same socket", () => {
  const r = new Rig(memberConfig());
  r.m.start(r.now);
  r.drain();
  r.m.handleConnected(r.now);
  r.drain();
  r.text({ type: "error", timestamp: 1, code: "invalid_message", message: "unknown type `token`" });
  const a = r.drain();
  const sent = decoded(a);
  assert.ok(sent.length === 1 && sent[0].type === "join", JSON.stringify(a));
  assert.ok(!has(a, "closeSocket"));
  assert.ok(!anyEvent(emitted(a), "error"));
  r.text(welcome("c1", false));
  r.drain();
  assert.equal(r.m.state(), "connected");
  assert.ok(!r.m.isResumable());
  assert.equal(r.m.linkState(), "DISCONNECTED");
  // Plain: messages carry no seq, nothing is acked.
  r.m.sendMessage(r.now, 1);
  assert.deepStrictEqual(seqs(r.drain()), [[null, "message"]]);
  r.text(numbered(5, messageFrom("h", 2)));
  const actions = r.runUntil(12_000);
  assert.ok(!seqs(actions).some(([, t]) => t === "ack"));
});

test("client frames are numbered from 1 and liveness frames never", () => {
  const [r] = rconnected();
  const now = r.now;
  r.m.sendMessage(now, { n: 1 });
  r.m.kick(now, "c9");
  r.m.requestMemberList(now);
  r.m.sendMessage(now, { n: 2 }, "h");
  const actions = r.drain();
  actions.push(...r.runUntil(5300));
  const s = seqs(actions);
  assert.deepStrictEqual(
    s.filter(([q]) => q !== null),
    [
      [1, "message"],
      [2, "kick"],
      [3, "member_list"],
      [4, "message"],
    ],
  );
  for (const [q, t] of s) {
    if (["heartbeat", "ping", "ack"].includes(t)) assert.equal(q, null, `${t} is never numbered`);
  }
  assert.ok(s.some(([, t]) => t === "heartbeat") && s.some(([, t]) => t === "ping"));
  // The numbered frame is the plain one with the prefix: `{"seq":1,"type":"message",...`.
  const first = texts(actions)[0];
  assert.ok(first.startsWith('{"seq":1,"type":"message",'), first);
});

test("acks every n messages cumulatively", () => {
  const [r] = rconnectedWith(memberConfig({ ackEvery: 3 }));
  // member_list was seq 1.
  r.text(numbered(2, messageFrom("h", 2)));
  assert.deepStrictEqual(decoded(r.drain()), [], "two new: no ack yet");
  r.text(numbered(3, messageFrom("h", 3)));
  assert.deepStrictEqual(decoded(r.drain()), [{ type: "ack", seq: 3 }], "the third new frame is acked at once");
  for (let n = 4; n <= 6; n++) r.text(numbered(n, messageFrom("h", n)));
  assert.deepStrictEqual(acks(r.drain()), [{ type: "ack", seq: 6 }]);
});

test("acks after the interval and only when there is something new", () => {
  const [r] = rconnected();
  // member_list seq 1 arrived at 0 s: acked at the 5 s interval, not before.
  assert.deepStrictEqual(acks(r.runUntil(4900)), []);
  assert.deepStrictEqual(acks(r.runUntil(5100)), [{ type: "ack", seq: 1 }]);
  // Nothing new: no more acks, however long (heartbeats still go out).
  assert.deepStrictEqual(acks(r.runUntil(14_000)), []);
  // Something new: acked an interval after it.
  r.text(numbered(2, messageFrom("h", 2)));
  assert.deepStrictEqual(acks(r.runUntil(19_100)), [{ type: "ack", seq: 2 }]);
});

test("duplicate server frames are dropped by seq", () => {
  const [r] = rconnected();
  r.text(numbered(2, messageFrom("h", "once")));
  r.text(numbered(2, messageFrom("h", "once")));
  r.text(numbered(1, memberListFor("c1")));
  r.text(numbered(3, messageFrom("h", "next")));
  const seen = r
    .events()
    .filter((e) => e.type === "message" || e.type === "memberList")
    .map((e) => (e.type === "message" ? e.data : "member_list"));
  assert.deepStrictEqual(seen, ["once", "next"]);
});

test("a gap error resends everything after its last seq and is not shown", () => {
  const [r] = rconnected();
  for (let n = 1; n <= 5; n++) r.m.sendMessage(r.now, n);
  const originals = texts(r.drain());
  assert.equal(originals.length, 5);
  r.text(
    numbered(2, {
      type: "error",
      timestamp: 1,
      code: "invalid_message",
      message: "seq gap",
      details: { lastSeq: 2 },
    }),
  );
  let again = r.drain();
  const resent = texts(again).filter((t) => !t.includes('"ack"'));
  assert.deepStrictEqual(resent, originals.slice(2), "3, 4, 5 again, byte for byte");
  assert.ok(!anyEvent(emitted(again), "error"));

  // `rate_limited` with details: resent too, and shown as on plain connections.
  r.text(
    numbered(3, {
      type: "error",
      timestamp: 1,
      code: "rate_limited",
      message: "slow down",
      details: { lastSeq: 4 },
    }),
  );
  again = r.drain();
  assert.deepStrictEqual(sentMessages(again), [[5, 5]]);
  assert.ok(anyEvent(emitted(again), "error", (e) => e.error.code === "rate_limited"));
  // An error without lastSeq resends nothing.
  r.text(numbered(4, { type: "error", timestamp: 1, code: "member_not_found", message: "no" }));
  assert.deepStrictEqual(sentMessages(r.drain()), []);
});

test("acks from the server free the queue", () => {
  const [r] = rconnectedWith(memberConfig({ queueLimit: 3 }));
  for (let n = 1; n <= 3; n++) r.m.sendMessage(r.now, n);
  assert.ok(r.m.queueFull());
  assertThrowsKind(() => r.m.sendMessage(r.now, 4), "queue_full");
  r.text({ type: "ack", timestamp: 1, seq: 2 });
  assert.ok(!r.m.queueFull());
  r.m.sendMessage(r.now, 4);
  r.drain();
  // After a drop, only what the server did not acknowledge is resent.
  dropAndReopen(r);
  r.text({ type: "resumed", timestamp: 1, lastSeq: 2, replayed: 0 });
  assert.deepStrictEqual(sentMessages(r.drain()), [
    [3, 3],
    [4, 4],
  ]);
});

test("a drop resumes with the connection token and replay nothing lost or doubled", () => {
  const [r, token] = rconnected();
  r.text(numbered(2, messageFrom("h", "before 2")));
  r.text(numbered(3, messageFrom("h", "before 3")));
  for (let n = 1; n <= 3; n++) r.m.sendMessage(r.now, n);
  r.text({ type: "ack", timestamp: 1, seq: 1 });
  r.drain();

  r.m.handleClosed(r.now, { code: 1000, reason: "heartbeat timeout" });
  const lost = r.drain();
  let ev = emitted(lost);
  assert.ok(anyEvent(ev, "connectionLost"));
  assertHasEvent(ev, { type: "stateChanged", state: "reconnecting" });
  assert.deepStrictEqual(links(lost), ["RECONNECTING"]);
  assert.ok(!anyEvent(ev, "sessionClosed") && !anyEvent(ev, "failed"), JSON.stringify(ev));
  // The place is held: id, session and members stay.
  assert.equal(r.m.clientId(), "c1");
  assert.equal(r.m.members().length, 2);
  // What the app sends while away is queued.
  assert.ok(r.m.acceptsCommands());
  r.m.sendMessage(r.now, 4);
  assert.deepStrictEqual(decoded(r.drain()), [], "nothing goes out without a socket");
  assertThrowsKind(() => r.m.ping(r.now), "not_connected", "pings are never queued");

  const waited = r.runUntil(r.elapsed() + 2100);
  ev = emitted(waited);
  assert.ok(
    anyEvent(ev, "resuming", (e) => e.attempt === 1 && e.windowLeftMs <= 28_000),
    JSON.stringify(ev),
  );
  assert.ok(!anyEvent(ev, "reconnecting"));
  assert.ok(has(waited, "connect"));
  r.m.handleConnected(r.now);
  assert.deepStrictEqual(decoded(r.drain()), [{ type: "token", token, lastSeq: 3 }]);
  // Echo, then resumed: the server had processed up to 2.
  r.text({ type: "token", timestamp: 1, token });
  assert.equal(r.m.linkState(), "CONNECTED");
  r.text({ type: "resumed", timestamp: 1, lastSeq: 2, replayed: 2 });
  const back = r.drain();
  ev = emitted(back);
  assertHasEvent(ev, { type: "resumed", replayed: 2 });
  assertHasEvent(ev, { type: "stateChanged", state: "connected" });
  assert.ok(!anyEvent(ev, "welcome"));
  assert.deepStrictEqual(
    sentMessages(back),
    [
      [3, 3],
      [4, 4],
    ],
    "the unacknowledged one with its seq, then the queued one",
  );
  // The replay: 3 again (a duplicate), then 4 (sent while away).
  r.text(numbered(3, messageFrom("h", "before 3")));
  r.text(numbered(4, messageFrom("h", "while away")));
  const data = r
    .events()
    .filter((e) => e.type === "message")
    .map((e) => e.data);
  assert.deepStrictEqual(data, ["while away"]);
  assert.equal(r.m.clientId(), "c1");
  // Numbering continues: the next message is 5.
  r.m.sendMessage(r.now, 5);
  assert.deepStrictEqual(sentMessages(r.drain()), [[5, 5]]);
});

test("each refusal is reported then a fresh handshake and join on the same socket", () => {
  for (const wire of ["unknown_token", "expired", "buffer_overflow"]) {
    const [r, token] = rconnected();
    r.m.sendMessage(r.now, "sent");
    r.drain();
    dropAndReopen(r);
    r.m.sendMessage(r.now, "queued");
    r.drain();
    r.text({ type: "resume_failed", timestamp: 1, reason: wire });
    const failed = r.drain();
    const ev = emitted(failed);
    assertHasEvent(ev, { type: "resumeFailed", reason: wire, unconfirmed: 1, rejoining: true }, `${wire}: ${JSON.stringify(ev)}`);
    assert.ok(!has(failed, "connect"), `${wire}: same socket`);
    assert.ok(!has(failed, "closeSocket"), `${wire}: same socket`);
    assert.equal(r.m.clientId(), null, `${wire}: the old place is gone`);
    const [b, joined] = handshakeOnSocket(r, failed, "c2");
    assert.notEqual(mergeTokens(A, b), token, `${wire}: a new local token`);
    const jev = emitted(joined);
    assert.ok(anyEvent(jev, "welcome", (e) => e.clientId === "c2"), `${wire}: ${JSON.stringify(jev)}`);
    assertHasEvent(jev, { type: "stateChanged", state: "connected" });
    assert.deepStrictEqual(
      sentMessages(joined),
      [[1, "queued"]],
      `${wire}: the queued message under the new numbering, the unconfirmed one not again`,
    );
    assert.ok(r.m.isResumable());
  }
});

test("a session closed refusal ends with session closed", () => {
  const [r] = rconnected();
  dropAndReopen(r);
  r.text({ type: "resume_failed", timestamp: 1, reason: "session_closed" });
  const a = r.drain();
  const ev = emitted(a);
  assertHasEvent(ev, { type: "resumeFailed", reason: "session_closed", unconfirmed: 0, rejoining: false });
  assert.ok(anyEvent(ev, "sessionClosed"));
  assert.ok(has(a, "closeSocket"));
  assert.deepStrictEqual(decoded(a), [], "no fresh handshake");
  assert.ok(r.m.isEnded());
  assert.equal(r.m.state(), "disconnected");
  assert.equal(r.m.linkState(), "DISCONNECTED");
});

/**
 * What follows a close of a joined resumable member: every action, and the frames sent by
 * the next socket (if one opens within 3 s).
 */
function afterClose(r, close) {
  r.m.handleClosed(r.now, close);
  const until = r.elapsed() + 3000;
  const actions = r.drain();
  actions.push(...r.runUntil(until));
  let next = [];
  if (has(actions, "connect")) {
    r.m.handleConnected(r.now);
    const opened = r.drain();
    next = decoded(opened);
    actions.push(...opened);
  }
  return [actions, next];
}

function isResume(frames) {
  return (
    frames.length === 1 &&
    frames[0].type === "token" &&
    frames[0].lastSeq !== undefined &&
    frames[0].token.length === 64
  );
}

function isFreshHandshake(frames) {
  return (
    frames.length === 1 &&
    frames[0].type === "token" &&
    frames[0].lastSeq === undefined &&
    frames[0].token.length === 32
  );
}

test("closes announced by a frame are never resumed", () => {
  // kicked
  let [r] = rconnected();
  r.text(numbered(2, { type: "kicked", timestamp: 1, reason: "bye" }));
  let [a, next] = afterClose(r, { code: 1000, reason: "kicked" });
  assertHasEvent(emitted(a), { type: "kicked", reason: "bye" });
  assert.ok(next.length === 0 && r.m.isEnded());
  // session_closed
  [r] = rconnected();
  r.text(numbered(2, { type: "session_closed", timestamp: 1, reason: "Host ended the session" }));
  [a, next] = afterClose(r, { code: 1000, reason: "session closed" });
  assert.ok(anyEvent(emitted(a), "sessionClosed"));
  assert.ok(next.length === 0 && r.m.isEnded());
  // session_closed then 1001: the server is going away; a fresh join, not a resume.
  [r] = rconnected();
  r.text(numbered(2, { type: "session_closed", timestamp: 1, reason: "Server shutting down" }));
  [, next] = afterClose(r, { code: 1001, reason: "going away" });
  assert.ok(isFreshHandshake(next), JSON.stringify(next));
  // own leave (numbered, like any command)
  [r] = rconnected();
  r.m.leave(r.now);
  assert.deepStrictEqual(seqs(r.drain()), [[1, "leave"]]);
  [a, next] = afterClose(r, { code: 1000, reason: "left" });
  assert.ok(next.length === 0 && r.m.isEnded(), JSON.stringify(a));
  assert.equal(r.m.state(), "disconnected");
});

test("closes by code 4000 1009 1002 1007 are never resumed", () => {
  // 4000: another socket resumed this place.
  let [r] = rconnected();
  let [a, next] = afterClose(r, { code: 4000, reason: "replaced" });
  assert.deepStrictEqual(next, []);
  assert.ok(r.m.isEnded());
  assert.equal(r.m.state(), "failed");
  assert.ok(anyEvent(emitted(a), "failed"));
  // 1009, 1002, 1007: the place ended; a member joins afresh (the landed rule).
  for (const code of [1009, 1002, 1007]) {
    [r] = rconnected();
    [a, next] = afterClose(r, { code, reason: "" });
    assert.ok(isFreshHandshake(next), `${code}: ${JSON.stringify(next)}`);
    assertHasEvent(emitted(a), { type: "reconnecting", attempt: 1, of: 3 });
  }
  // ... and a host is told its session ended (it would re-create it).
  [r] = rconnectedWith(hostConfig());
  [a, next] = afterClose(r, { code: 1009, reason: "message too big" });
  assert.deepStrictEqual(next, []);
  assert.ok(anyEvent(emitted(a), "sessionClosed"));
});

test("drops timeouts and 1008 are resumed by members and hosts", () => {
  const closes = [
    null,
    { code: 1000, reason: "heartbeat timeout" },
    { code: 1008, reason: "rate limit exceeded" },
    { code: 1008, reason: "outbound queue overflow: client too slow" },
    { code: 1001, reason: "going away" },
    { code: 1011, reason: "" },
  ];
  for (const close of closes) {
    for (const config of [memberConfig(), hostConfig()]) {
      const host = config.device.type === "host";
      const [r] = rconnectedWith(config);
      const [a, next] = afterClose(r, close);
      assert.ok(isResume(next), `${JSON.stringify(close)} host ${host}: ${JSON.stringify(next)}`);
      assert.ok(!anyEvent(emitted(a), "sessionClosed"), `${JSON.stringify(close)}: a resumable host resumes`);
    }
  }
});

test("silence on a resumable connection resumes", () => {
  const [r] = rconnectedWith(hostConfig());
  let a = r.runUntil(15_100);
  assert.ok(has(a, "closeSocket"));
  const ev = emitted(a);
  assert.ok(anyEvent(ev, "connectionLost", (e) => e.reason.includes("silence")), JSON.stringify(ev));
  assert.ok(!anyEvent(ev, "sessionClosed"));
  a = r.runUntil(17_200);
  assert.ok(has(a, "connect"));
  r.m.handleConnected(r.now);
  assert.ok(isResume(decoded(r.drain())));
});

test("resume attempts go on with the backoff until the window has passed", () => {
  const [r] = rconnectedWith(
    memberConfig({
      reconnect: { attempts: 3, delayMs: 1000, backoff: { factor: 2, maxDelayMs: 8000, jitter: 0 } },
    }),
  );
  r.at(10_000);
  r.m.handleClosed(r.now, null);
  r.drain();
  const starts = [];
  let failed;
  while (r.elapsed() < 60_000 && failed === undefined) {
    const t = r.elapsed() + 100;
    for (const a of r.runUntil(t)) {
      if (a.type === "connect") {
        starts.push(r.elapsed() - 10_000);
        r.m.handleConnectFailed(r.now, "refused");
      } else if (a.type === "emit" && a.event.type === "failed") {
        failed = a.event.reason;
      }
    }
    // Failures reported within the same step produce more actions.
    for (const e of emitted(r.drain())) if (e.type === "failed") failed = e.reason;
  }
  // 1, 2, 4, 8, 8 s apart, the last clamped to the window's end (30 s after the drop).
  assert.deepStrictEqual(starts, [1000, 3000, 7000, 15_000, 23_000, 30_000], String(failed));
  assert.ok(failed !== undefined, "failed after the window");
  assert.ok(failed.includes("resume window"), failed);
  assert.equal(r.m.state(), "failed");
  assert.equal(r.m.linkState(), "DISCONNECTED");
  assert.equal(r.m.members().length, 0);
});

test("a plain connection keeps the landed three attempts", () => {
  const r = new Rig(memberConfig({ resume: false }));
  r.m.start(r.now);
  r.drain();
  r.join("c1");
  r.drain();
  r.m.handleClosed(r.now, null);
  let connects = 0;
  let actions = r.drain();
  for (let i = 0; i < 100; i++) {
    actions.push(...r.runUntil(r.elapsed() + 100));
    for (const a of actions) {
      if (a.type === "connect") {
        connects += 1;
        r.m.handleConnectFailed(r.now, "refused");
      }
    }
    actions = r.drain();
  }
  assert.equal(connects, 3);
  assert.equal(r.m.state(), "failed");
});

test("a resume attempt whose socket drops or times out is retried", () => {
  const [r] = rconnected();
  dropAndReopen(r);
  // The resume socket drops before any answer: another attempt after the delay.
  r.m.handleClosed(r.now, null);
  let a = r.runUntil(r.elapsed() + 2100);
  assert.ok(has(a, "connect"), JSON.stringify(a));
  r.m.handleConnected(r.now);
  assert.ok(isResume(decoded(r.drain())));
  // No answer within the join timeout: closed and retried.
  a = r.runUntil(r.elapsed() + 10_100);
  assert.ok(has(a, "closeSocket"));
  a = r.runUntil(r.elapsed() + 2100);
  assert.ok(has(a, "connect"));
  assert.ok(anyEvent(emitted(a), "resuming", (e) => e.attempt === 3), JSON.stringify(emitted(a)));
});

test("what is queued while away goes out in order paced to the rate", () => {
  const [r] = rconnectedWith(memberConfig({ sendRate: 10, sendBurst: 3 }));
  dropAndReopen(r);
  for (let n = 1; n <= 6; n++) r.m.sendMessage(r.now, n);
  r.text({ type: "resumed", timestamp: 1, lastSeq: 0, replayed: 0 });
  assert.deepStrictEqual(
    sentMessages(r.drain()),
    [
      [1, 1],
      [2, 2],
      [3, 3],
    ],
    "the burst at once",
  );
  const start = r.elapsed();
  const paced = [];
  const at = [];
  while (paced.length < 3 && r.elapsed() < start + 2000) {
    // 10 ms steps by hand (runUntil steps 100 ms).
    r.step(r.elapsed() + 10);
    for (const m of sentMessages(r.drain())) {
      paced.push(m);
      at.push(r.elapsed() - start);
    }
  }
  assert.deepStrictEqual(paced, [
    [4, 4],
    [5, 5],
    [6, 6],
  ]);
  // 100 ms apart at 10 per second (to the 10 ms step).
  at.forEach((ms, i) => {
    const want = 100 * (i + 1);
    assert.ok(ms >= want && ms <= want + 10, JSON.stringify(at));
  });
  // A message given while the backlog drains waits its turn.
  assert.doesNotThrow(() => r.m.sendMessage(r.now, 7));
});

test("sends while away are refused once the queue is full and without resume", () => {
  const [r] = rconnectedWith(memberConfig({ queueLimit: 2 }));
  r.m.handleClosed(r.now, null);
  r.drain();
  r.m.sendMessage(r.now, 1);
  r.m.sendMessage(r.now, 2);
  assert.ok(!r.m.acceptsCommands());
  assert.ok(r.m.queueFull());
  assertThrowsKind(() => r.m.sendMessage(r.now, 3), "queue_full");
  // With resume off, nothing is queued (the landed rule).
  const p = new Rig(memberConfig({ resume: false }));
  p.m.start(p.now);
  p.drain();
  p.join("c1");
  p.m.handleClosed(p.now, null);
  p.drain();
  assertThrowsKind(() => p.m.sendMessage(p.now, 1), "not_connected");
});

test("member updated changes the table entry and is an event", () => {
  const [r] = rconnected();
  r.text(
    numbered(2, {
      type: "member_updated",
      timestamp: 1,
      member: { id: "h", name: "Host", isHost: true, connectionStatus: "reconnecting", joinedAt: 1, latency: 9 },
    }),
  );
  assert.equal(r.m.members()[0].connectionStatus, "reconnecting");
  assert.equal(r.m.members()[0].latency, 9);
  assert.equal(r.m.members().length, 2, "updated in place");
  assert.ok(
    anyEvent(r.events(), "memberUpdated", (e) => e.member.id === "h" && e.member.connectionStatus === "reconnecting"),
  );
  r.text(
    numbered(3, {
      type: "member_updated",
      timestamp: 1,
      member: { id: "h", name: "Host", isHost: true, connectionStatus: "connected", joinedAt: 1 },
    }),
  );
  assert.equal(r.m.members()[0].connectionStatus, "connected");
  assert.equal(r.m.members()[0].id, "h");
});

test("the formal disconnect sends the token after the queue and ends", () => {
  const [r, token] = rconnectedWith(memberConfig({ sendRate: 10, sendBurst: 1 }));
  r.m.sendMessage(r.now, 1);
  r.m.sendMessage(r.now, 2);
  r.m.disconnect(r.now);
  let a = r.drain();
  assert.deepStrictEqual(sentMessages(a), [[1, 1]]);
  assert.ok(!decoded(a).some((f) => f.type === "token"));
  assert.throws(
    () => r.m.sendMessage(r.now, 3),
    (e) => e instanceof Error && "kind" in e,
    "nothing is taken after the disconnect",
  );
  a = r.runUntil(r.elapsed() + 200);
  const sent = decoded(a);
  const tail = sent.filter((f) => f.type !== "heartbeat" && f.type !== "ping");
  assert.equal(tail.length, 2, JSON.stringify(sent));
  assert.equal(tail[0].type, "message");
  assert.deepStrictEqual(tail[1], { type: "token", token });
  const s = seqs(a);
  assert.equal(s[s.length - 1][0], null, "the token is not numbered");
  assert.equal(r.m.linkState(), "DISCONNECTED");
  let next;
  [a, next] = afterClose(r, { code: 1000, reason: "left" });
  assert.ok(next.length === 0 && r.m.isEnded(), JSON.stringify(a));
  assert.equal(r.m.state(), "disconnected");
});

test("the plain join of resume off sends no token", () => {
  const r = new Rig(memberConfig({ resume: false }));
  r.m.start(r.now);
  r.drain();
  r.m.handleConnected(r.now);
  const sent = decoded(r.drain());
  assert.ok(sent.length === 1 && sent[0].type === "join", JSON.stringify(sent));
  assert.equal(r.m.linkState(), "DISCONNECTED");
});

test("every frame of a resumable connection is valid for the server", () => {
  const [r] = rconnected();
  const now = r.now;
  r.m.sendMessage(now, { k: [1, 2.5, "x"] }, "h");
  r.m.kick(now, "c9", "why");
  r.m.requestMemberList(now);
  const a = r.drain();
  a.push(...r.runUntil(6000));
  const [more] = dropAndReopen(r);
  a.push(...more);
  const all = texts(a);
  assert.ok(all.length >= 6, JSON.stringify(all));
  for (const t of all) assert.equal(checkClientFrame(t), null, t);
});

/** Runs timers until the next attempt opens a socket (within 3 s); returns every action. */
function untilConnect(r) {
  const until = r.elapsed() + 3000;
  const actions = [];
  while (r.elapsed() < until && !has(actions, "connect")) {
    actions.push(...r.runUntil(r.elapsed() + 100));
  }
  assert.ok(has(actions, "connect"), JSON.stringify(actions));
  return actions;
}

/**
 * A resumable member with `1` acknowledged and `2` sent unacknowledged drops and calls
 * `leave()` (or the formal disconnect) while away; returns the rig and the connection token.
 */
function leaveWhileAway(disconnect) {
  const [r, token] = rconnected();
  r.m.sendMessage(r.now, 1);
  r.m.sendMessage(r.now, 2);
  r.text({ type: "ack", timestamp: 1, seq: 1 });
  r.drain();
  r.m.handleClosed(r.now, null);
  r.drain();
  assert.equal(r.m.state(), "reconnecting");
  if (disconnect) r.m.disconnect(r.now);
  else r.m.leave(r.now);
  const a = r.drain();
  assert.ok(!r.m.isEnded(), `queued, not ended: ${JSON.stringify(a)}`);
  assert.ok(!has(a, "closeSocket"), JSON.stringify(a));
  assert.deepStrictEqual(decoded(a), [], "nothing goes out without a socket");
  assert.ok(r.m.leaveQueued());
  assert.equal(r.m.state(), "reconnecting");
  assert.equal(r.m.clientId(), "c1", "the place is still held");
  // Nothing is taken after the leave.
  assert.ok(!r.m.acceptsCommands());
  assert.ok(!r.m.queueFull());
  assertThrowsKind(() => r.m.sendMessage(r.now, 3), "not_connected");
  return [r, token];
}

/**
 * Opens the next socket (the first attempt is refused: the leave survives between
 * attempts) and gets to the resume's answer; returns the resume frame's `lastSeq`.
 */
function reopenAfterARefusedAttempt(r, token) {
  untilConnect(r);
  r.m.handleConnectFailed(r.now, "connection refused");
  const a = r.drain();
  assert.ok(!r.m.isEnded(), JSON.stringify(a));
  assert.ok(r.m.leaveQueued(), "kept between attempts");
  untilConnect(r);
  r.m.handleConnected(r.now);
  const sent = decoded(r.drain());
  assert.ok(
    sent.length === 1 && sent[0].type === "token" && sent[0].lastSeq !== undefined,
    `a resume, not a leave or a fresh join: ${JSON.stringify(sent)}`,
  );
  assert.equal(sent[0].token, token);
  r.text({ type: "token", timestamp: 1, token });
  return sent[0].lastSeq;
}

test("leave while resuming goes out right after the resend once resumed", () => {
  const [r, token] = leaveWhileAway(false);
  assert.equal(reopenAfterARefusedAttempt(r, token), 1);
  // The server processed 1; 2 is resent with its seq, then the leave is the next number.
  r.text({ type: "resumed", timestamp: 1, lastSeq: 1, replayed: 0 });
  const back = r.drain();
  assertHasEvent(emitted(back), { type: "resumed", replayed: 0 });
  assert.deepStrictEqual(seqs(back), [
    [2, "message"],
    [3, "leave"],
  ]);
  assert.ok(!r.m.leaveQueued());
  assert.ok(!r.m.acceptsCommands());
  // The server answers with 1000 `left`: the end, as after a connected leave.
  const [a, next] = afterClose(r, { code: 1000, reason: "left" });
  assert.ok(next.length === 0 && r.m.isEnded(), JSON.stringify(a));
  assert.ok(!emitted(a).some((e) => e.type === "failed" || e.type === "resuming"));
  assert.equal(r.m.state(), "disconnected");
  assert.equal(r.m.linkState(), "DISCONNECTED");
});

test("leave while resuming then resume failed ends without a fresh join", () => {
  for (const wire of ["unknown_token", "expired", "buffer_overflow", "session_closed"]) {
    const [r, token] = leaveWhileAway(false);
    reopenAfterARefusedAttempt(r, token);
    r.text({ type: "resume_failed", timestamp: 1, reason: wire });
    const a = r.drain();
    const ev = emitted(a);
    assertHasEvent(ev, { type: "resumeFailed", reason: wire, unconfirmed: 1, rejoining: false }, `${wire}: ${JSON.stringify(ev)}`);
    assert.equal(anyEvent(ev, "sessionClosed"), wire === "session_closed", `${wire}: ${JSON.stringify(ev)}`);
    assert.ok(!anyEvent(ev, "failed"));
    assert.deepStrictEqual(decoded(a), [], `${wire}: no fresh handshake`);
    assert.ok(has(a, "closeSocket"), wire);
    assert.ok(r.m.isEnded(), wire);
    assert.equal(r.m.state(), "disconnected", wire);
    assert.equal(r.m.linkState(), "DISCONNECTED", wire);
    assert.deepStrictEqual(r.runUntil(r.elapsed() + 60_000), []);
  }
});

test("leave while resuming ends when the window passes", () => {
  const [r] = leaveWhileAway(false);
  const all = [];
  while (r.elapsed() < 40_000 && !r.m.isEnded()) {
    for (const a of r.runUntil(r.elapsed() + 100)) {
      if (a.type === "connect") r.m.handleConnectFailed(r.now, "connection refused");
      all.push(a);
    }
    all.push(...r.drain());
  }
  assert.ok(r.m.isEnded());
  assert.ok(r.elapsed() >= 30_000, `the window: ${r.elapsed()}`);
  assert.equal(r.m.state(), "disconnected", "left, not failed");
  const ev = emitted(all);
  assert.ok(!anyEvent(ev, "failed"), JSON.stringify(ev));
  assert.ok(!anyEvent(ev, "reconnecting"));
  assert.deepStrictEqual(r.runUntil(r.elapsed() + 60_000), []);
});

test("the formal disconnect while resuming goes out after the resend", () => {
  const [r, token] = leaveWhileAway(true);
  reopenAfterARefusedAttempt(r, token);
  r.text({ type: "resumed", timestamp: 1, lastSeq: 1, replayed: 0 });
  const back = r.drain();
  assert.deepStrictEqual(seqs(back), [
    [2, "message"],
    [null, "token"],
  ]);
  assert.deepStrictEqual(decoded(back)[1], { type: "token", token });
  const [a, next] = afterClose(r, { code: 1000, reason: "left" });
  assert.ok(next.length === 0 && r.m.isEnded(), JSON.stringify(a));
  assert.equal(r.m.state(), "disconnected");
});

test("leave while reconnecting a plain connection still ends at once", () => {
  const r = new Rig(memberConfig());
  r.m.start(r.now);
  r.drain();
  r.m.handleConnected(r.now);
  r.drain();
  // The handshake, then a welcome without `resumable`: a plain connection.
  r.text({ type: "token", timestamp: 1, token: A });
  r.text({ type: "token", timestamp: 1, token: A });
  r.text(welcome("c1", false));
  r.drain();
  assert.ok(!r.m.isResumable());
  r.m.handleClosed(r.now, null);
  r.drain();
  assert.equal(r.m.state(), "reconnecting");
  r.m.leave(r.now);
  assert.ok(!r.m.leaveQueued());
  assert.ok(r.m.isEnded());
  assert.equal(r.m.state(), "disconnected");
});

// ---- crates/client/src/resume.rs's own tests: the bookkeeping, without the machine.

test("local tokens are 32 alphanumerics and differ", () => {
  const a = localToken(Math.random);
  const b = localToken(Math.random);
  assert.match(a, /^[A-Za-z0-9]{32}$/);
  assert.match(b, /^[A-Za-z0-9]{32}$/);
  assert.notEqual(a, b);
});

test("outbox numbers sends acks rewinds and gives up", () => {
  const o = new Outbox();
  o.push('{"type":"a"}');
  assert.ok(!o.isNumbered());
  o.start();
  o.push('{"type":"b"}');
  o.push('{"type":"c"}');
  assert.equal(o.lastSeq(), 3);
  assert.equal(o.nextFrame(), '{"seq":1,"type":"a"}');
  assert.equal(o.nextFrame(), '{"seq":2,"type":"b"}');
  o.acknowledge(1);
  assert.equal(o.length, 2);
  assert.ok(o.rewind(1));
  assert.equal(o.nextFrame(), '{"seq":2,"type":"b"}');
  assert.equal(o.nextFrame(), '{"seq":3,"type":"c"}');
  assert.equal(o.nextFrame(), undefined);
  // An ack beyond what was sent acknowledges only what was.
  o.push('{"type":"d"}');
  o.acknowledge(10);
  assert.equal(o.length, 1);
  assert.equal(o.nextFrame(), '{"seq":4,"type":"d"}');
  o.push('{"type":"e"}');
  o.socketLost();
  assert.equal(o.nextFrame(), undefined);
  // 4 sent, unacknowledged; 5 never sent.
  assert.equal(o.giveUp(), 1);
  assert.ok(!o.isNumbered());
  o.start();
  assert.equal(o.nextFrame(), '{"seq":1,"type":"e"}');
});

test("inbox drops duplicates and acks by count and time", () => {
  const t = 1000;
  const s = 5000;
  const i = new Inbox();
  assert.equal(i.ackDue(t, 3), undefined);
  assert.equal(i.arrive(1, t, s), "new");
  assert.equal(i.arrive(1, t, s), "duplicate");
  assert.equal(i.ackDue(t, 3), undefined);
  assert.equal(i.arrive(2, t, s), "new");
  assert.equal(i.arrive(3, t, s), "new");
  assert.equal(i.ackDue(t, 3), 3);
  assert.equal(i.ackDue(t + s, 3), undefined, "nothing new");
  assert.equal(i.arrive(4, t + s, s), "new");
  assert.equal(i.ackDue(t + s + s / 2, 3), undefined);
  assert.equal(i.ackDue(t + s + s, 3), 4);
});

test("pacer allows the burst then the rate", () => {
  const t = 1000;
  const p = new Pacer(10, 3, t);
  assert.ok(p.take(t) && p.take(t) && p.take(t));
  assert.ok(!p.take(t));
  const ready = p.readyAt();
  assert.ok(ready > t + 99 && ready < t + 102, String(ready - t));
  assert.ok(p.take(ready));
  assert.ok(!p.take(ready));
});

test("the closes that end a place", () => {
  for (const code of [4000, 1009, 1002, 1007]) assert.ok(closeEndsPlace(code), String(code));
  for (const code of [1000, 1001, 1008, 1011, undefined]) assert.ok(!closeEndsPlace(code), String(code));
});
