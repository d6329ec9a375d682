// driver.test.mjs: the driver, `Client`, with an injected fake WebSocket class (the test
// plays the server through its `onopen` / `onmessage` / `onclose`) and, for the timer tests,
// a fake clock passed as the constructor's second argument (`ClientEnvironment`: `now`,
// `unixNow`, `setTimer`, `clearTimer`), so no test waits on a real timer. What it checks:
// `connect()` resolves at the first `welcome` (plain and with the resume handshake) and
// rejects with kind `rejected` (the server's error attached) on a refused first join, `connect`
// on a first socket that fails, `config` on bad settings; a throwing listener does not break
// the client; the driver keeps ONE timer (none per member) and carries out the machine's
// timers (heartbeat and ping, latency, silence and a reconnection); `leave()` resolves at
// the server's close or at the leave timeout. No Rust test file is ported here: the Rust
// driver (crates/client/src/lib.rs) is tested against a real server, as
// test/integration/ does for this one.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Client, LoudSyncError } from "../../dist/esm/index.js";
import { T0_MS, A, member } from "./support.mjs";

const OPEN = 1;
const CLOSED = 3;

/** A fresh fake WebSocket class; `Fake.sockets` lists every socket it made, in order. */
function fakeWebSocketClass() {
  class FakeSocket {
    static sockets = [];
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.closeCalls = [];
      this.onopen = null;
      this.onmessage = null;
      this.onclose = null;
      this.onerror = null;
      FakeSocket.sockets.push(this);
    }
    send(text) {
      assert.equal(this.readyState, OPEN, "sends only on an open socket");
      this.sent.push(text);
    }
    close(code, reason) {
      this.closeCalls.push([code, reason]);
      this.readyState = CLOSED;
    }
    // ---- the server's side
    /** The socket opens. */
    open() {
      this.readyState = OPEN;
      this.onopen?.({});
    }
    /** The server sends a frame (an object is sent as its JSON). */
    receive(frame) {
      this.onmessage?.({ data: typeof frame === "string" ? frame : JSON.stringify(frame) });
    }
    /** The server closes the socket. */
    serverClose(code, reason = "") {
      this.readyState = CLOSED;
      this.onclose?.({ code, reason, wasClean: code !== 1006 });
    }
    /** The frames sent, parsed. */
    frames() {
      return this.sent.map((t) => JSON.parse(t));
    }
  }
  return FakeSocket;
}

/** A fake clock with timers: `advance(ms)` fires each due timer at its own time. */
function fakeEnvironment() {
  const timers = new Map();
  let nextHandle = 1;
  let maxLive = 0;
  const env = {
    t: 50_000,
    now: () => env.t,
    unixNow: () => T0_MS,
    setTimer(callback, ms) {
      assert.ok(Number.isFinite(ms) && ms >= 0, `a timer delay: ${ms}`);
      timers.set(nextHandle, { callback, at: env.t + ms });
      maxLive = Math.max(maxLive, timers.size);
      return nextHandle++;
    },
    clearTimer(handle) {
      timers.delete(handle);
    },
    /** Timers set and not yet fired or cleared. */
    live: () => timers.size,
    /** The most timers ever pending at once. */
    maxLive: () => maxLive,
    advance(ms) {
      const end = env.t + ms;
      for (let fired = 0; ; fired++) {
        assert.ok(fired < 10_000, "timers keep firing");
        let due = null;
        for (const [handle, timer] of timers) {
          if (timer.at <= end && (due === null || timer.at < due.timer.at)) due = { handle, timer };
        }
        if (due === null) break;
        timers.delete(due.handle);
        env.t = Math.max(env.t, due.timer.at);
        due.timer.callback();
      }
      env.t = end;
    },
  };
  return env;
}

/** Waits (bounded: 200 event-loop turns, no sleeps) until `condition()` holds. */
async function until(condition, what) {
  for (let i = 0; i < 200; i++) {
    if (condition()) return;
    await new Promise((resolve) => setImmediate(resolve));
  }
  assert.fail(`timed out waiting for ${what}`);
}

/** Whether `promise` has settled, after the microtasks queued so far have run. */
async function settled(promise) {
  let done = false;
  promise.then(
    () => (done = true),
    () => (done = true),
  );
  await new Promise((resolve) => setImmediate(resolve));
  return done;
}

const device = { id: "dev-1", name: "Phone", type: "client" };

function welcomeFrame(clientId, resumable = false) {
  return {
    type: "welcome",
    timestamp: 1,
    clientId,
    resumable,
    sessionInfo: { id: "s1", name: "S", hostId: "h" },
  };
}

const memberList = {
  type: "member_list",
  timestamp: 1,
  members: [member("h", "Host", true, 1), member("c1", "Phone", false, 2)],
};

/** A plain (resume off) client on the fake socket and clock, connected as `c1`. */
async function connectedClient(overrides = {}) {
  const Fake = fakeWebSocketClass();
  const env = fakeEnvironment();
  const client = new Client({ url: "ws://x/", sessionId: "s1", device, WebSocket: Fake, resume: false, ...overrides }, env);
  const joined = client.connect();
  await until(() => Fake.sockets.length === 1, "the socket");
  const ws = Fake.sockets[0];
  ws.open();
  await until(() => ws.sent.length === 1, "join");
  ws.receive(welcomeFrame("c1"));
  ws.receive(memberList);
  await joined;
  return { client, ws, env, Fake };
}

test("connect resolves at the first welcome, not before", { timeout: 5000 }, async () => {
  const Fake = fakeWebSocketClass();
  const env = fakeEnvironment();
  const client = new Client({ url: "ws://x/", sessionId: "s1", device, WebSocket: Fake, resume: false }, env);
  assert.equal(Fake.sockets.length, 0, "nothing happens until connect()");
  assert.equal(client.state(), "disconnected");
  const joined = client.connect();
  await until(() => Fake.sockets.length === 1, "the socket");
  const ws = Fake.sockets[0];
  assert.equal(ws.url, "ws://x/");
  assert.equal(client.state(), "connecting");
  ws.open();
  await until(() => ws.sent.length === 1, "join");
  const join = ws.frames()[0];
  assert.equal(join.type, "join");
  assert.equal(join.sessionId, "s1");
  assert.deepStrictEqual(join.deviceInfo, device);
  assert.equal(await settled(joined), false, "not before welcome");
  const seen = [];
  client.onAny((e) => seen.push(e.type));
  ws.receive(welcomeFrame("c1"));
  await joined;
  assert.equal(client.state(), "connected");
  assert.equal(client.clientId(), "c1");
  assert.equal(client.snapshot().clientId, "c1", "the snapshot says so when connect resolves");
  assert.ok(seen.includes("welcome"), JSON.stringify(seen));
  ws.receive(memberList);
  await until(() => client.members().length === 2, "the member table");
  assert.deepStrictEqual(
    client.members().map((m) => m.id),
    ["h", "c1"],
  );
  // Connect again: the same promise.
  assert.equal(client.connect(), joined);
});

test("connect resolves after the resume handshake and a resumable welcome", { timeout: 5000 }, async () => {
  const Fake = fakeWebSocketClass();
  const client = new Client({ url: "ws://x/", sessionId: "s1", device, WebSocket: Fake }, fakeEnvironment());
  const joined = client.connect();
  await until(() => Fake.sockets.length === 1, "the socket");
  const ws = Fake.sockets[0];
  ws.open();
  await until(() => ws.sent.length === 1, "handshake step 1");
  const step1 = ws.frames()[0];
  assert.equal(step1.type, "token");
  assert.match(step1.token, /^[A-Za-z0-9]{32}$/);
  ws.receive({ type: "token", timestamp: 1, token: A });
  await until(() => ws.sent.length === 3, "step 3 and the join");
  assert.deepStrictEqual(
    ws.frames().map((f) => f.type),
    ["token", "token", "join"],
  );
  ws.receive({ type: "token", timestamp: 1, token: A });
  assert.equal(await settled(joined), false, "not before welcome");
  ws.receive(welcomeFrame("c1", true));
  await joined;
  assert.equal(client.state(), "connected");
  assert.equal(client.linkState(), "CONNECTED");
});

test("connect rejects with kind rejected and the server's error on a refused first join", { timeout: 5000 }, async () => {
  const Fake = fakeWebSocketClass();
  const env = fakeEnvironment();
  const client = new Client({ url: "ws://x/", sessionId: "nope", device, WebSocket: Fake, resume: false }, env);
  const joined = client.connect();
  await until(() => Fake.sockets.length === 1, "the socket");
  const ws = Fake.sockets[0];
  ws.open();
  await until(() => ws.sent.length === 1, "join");
  ws.receive({ type: "error", timestamp: 1, code: "session_not_found", message: "no such session" });
  await assert.rejects(joined, (e) => {
    assert.ok(e instanceof LoudSyncError, String(e));
    assert.equal(e.kind, "rejected");
    assert.equal(e.serverError?.code, "session_not_found");
    assert.equal(e.serverError?.message, "no such session");
    return true;
  });
  assert.equal(client.state(), "disconnected");
  assert.ok(ws.closeCalls.length >= 1, "the socket is closed");
  // Never retried, and no timer left behind.
  env.advance(60_000);
  assert.equal(Fake.sockets.length, 1, "no reconnection");
  assert.equal(env.live(), 0, "no timer left");
  assert.throws(() => client.send(1), (e) => e instanceof LoudSyncError && e.kind === "not_connected");
});

test("connect rejects with kind connect when the first socket fails, and config on bad settings", { timeout: 5000 }, async () => {
  const Fake = fakeWebSocketClass();
  const env = fakeEnvironment();
  const client = new Client({ url: "ws://x/", sessionId: "s1", device, WebSocket: Fake, resume: false }, env);
  const joined = client.connect();
  await until(() => Fake.sockets.length === 1, "the socket");
  Fake.sockets[0].serverClose(1006);
  await assert.rejects(joined, (e) => e instanceof LoudSyncError && e.kind === "connect");
  assert.equal(client.state(), "failed");
  env.advance(60_000);
  assert.equal(Fake.sockets.length, 1, "the first connection is not retried");

  const bad = new Client({ url: "http://x/", sessionId: "s1", device, WebSocket: Fake }, env);
  await assert.rejects(bad.connect(), (e) => e instanceof LoudSyncError && e.kind === "config");
  assert.equal(Fake.sockets.length, 1, "no socket for bad settings");
});

test("a listener that throws does not break the client", { timeout: 5000 }, async (t) => {
  const errors = t.mock.method(console, "error", () => {});
  const { client, ws } = await connectedClient();
  const seen = [];
  client.on("memberJoined", () => {
    throw new Error("boom");
  });
  client.on("memberJoined", (e) => seen.push(`joined ${e.member.id}`));
  client.onAny((e) => {
    if (e.type === "memberLeft") seen.push(`left ${e.memberId}`);
  });
  ws.receive({ type: "member_joined", timestamp: 1, member: member("c2", "Tab", false, 3) });
  ws.receive({ type: "member_left", timestamp: 1, memberId: "c2", reason: "left" });
  await until(() => seen.length === 2, "both events");
  assert.deepStrictEqual(seen, ["joined c2", "left c2"]);
  assert.ok(errors.mock.callCount() >= 1, "the throw is reported");
  assert.ok(
    errors.mock.calls.some((c) => c.arguments.some((a) => String(a).includes("memberJoined"))),
    "naming the event",
  );
  // Still working: the table followed, commands go out.
  assert.deepStrictEqual(
    client.members().map((m) => m.id),
    ["h", "c1"],
  );
  client.send({ x: 1 });
  const last = ws.frames()[ws.frames().length - 1];
  assert.deepStrictEqual([last.type, last.data], ["message", { x: 1 }]);
  assert.equal(client.state(), "connected");
});

test("the driver keeps one timer, none per member", { timeout: 5000 }, async () => {
  const { client, ws, env } = await connectedClient();
  assert.equal(env.live(), 1, "one timer while connected");
  for (let i = 0; i < 50; i++) {
    ws.receive({ type: "member_joined", timestamp: 1, member: member(`m${i}`, `M${i}`, false, 10 + i) });
  }
  await until(() => client.members().length === 52, "52 members");
  assert.equal(env.live(), 1, "still one timer with 52 members");
  env.advance(20_000);
  assert.equal(env.maxLive(), 1, "never two timers at once");
});

test("the driver carries out the machine's timers: heartbeat and ping, latency, silence, a reconnection", { timeout: 5000 }, async () => {
  const { client, ws, env, Fake } = await connectedClient();
  const sentBefore = ws.sent.length;
  // The first beat at once (the machine's next beat is due at welcome), then every 5 s.
  env.advance(0);
  env.advance(5000);
  const beats = ws
    .frames()
    .slice(sentBefore)
    .map((f) => f.type);
  assert.deepStrictEqual(beats, ["heartbeat", "ping", "heartbeat", "ping"]);
  const ping = ws.frames()[ws.sent.length - 1];
  env.advance(37);
  ws.receive({ type: "pong", timestamp: ping.timestamp });
  await until(() => client.latency() !== null, "the latency");
  assert.equal(client.latency(), 37);
  // The server goes silent: after the silence timeout the socket is closed, then after the
  // reconnection delay (2 s) a new socket is opened.
  const events = [];
  client.onAny((e) => events.push(e.type));
  env.advance(15_000);
  assert.ok(ws.closeCalls.length >= 1, "the silent socket is closed");
  assert.equal(client.state(), "reconnecting");
  assert.ok(events.includes("connectionLost"), JSON.stringify(events));
  env.advance(2000);
  assert.equal(Fake.sockets.length, 2, "a reconnection attempt");
  assert.ok(events.includes("reconnecting"), JSON.stringify(events));
  assert.equal(env.maxLive(), 1, "one timer throughout");
});

test("leave resolves at the server's close, or at the leave timeout", { timeout: 5000 }, async () => {
  let { client, ws, env } = await connectedClient();
  let left = client.leave();
  const frames = ws.frames();
  assert.equal(frames[frames.length - 1].type, "leave");
  assert.equal(await settled(left), false, "waits for the server's close");
  ws.serverClose(1000, "left");
  await left;
  assert.equal(client.state(), "disconnected");
  assert.equal(env.live(), 0, "no timer left");

  ({ client, ws, env } = await connectedClient({ leaveTimeoutMs: 2000 }));
  left = client.leave();
  env.advance(1999);
  assert.equal(await settled(left), false, "not before the leave timeout");
  env.advance(1);
  await left;
  assert.equal(client.state(), "disconnected");
  assert.ok(ws.closeCalls.length >= 1, "the socket is closed by the client");
  assert.equal(env.live(), 0, "no timer left");
});

test("with the default clock and timers connect and leave work too", { timeout: 5000 }, async () => {
  // The contract's own environment (performance.now, Date.now, setTimeout): the client must
  // leave no timer behind once it ended, or this test file would never finish.
  const Fake = fakeWebSocketClass();
  const client = new Client({ url: "ws://x/", sessionId: "s1", device, WebSocket: Fake, resume: false });
  const joined = client.connect();
  await until(() => Fake.sockets.length === 1, "the socket");
  const ws = Fake.sockets[0];
  ws.open();
  await until(() => ws.sent.length >= 1, "join");
  ws.receive(welcomeFrame("c1"));
  await joined;
  assert.equal(client.state(), "connected");
  const left = client.leave();
  ws.serverClose(1000, "left");
  await left;
  assert.equal(client.state(), "disconnected");
});

test("a second leave() or disconnect() waits for the first: one leave frame, the first call's timeout", { timeout: 5000 }, async () => {
  // A button pressed twice must neither send a second leave nor push the leave timeout back.
  const { client, ws, env } = await connectedClient({ leaveTimeoutMs: 2000 });
  const first = client.leave();
  env.advance(1500);
  const second = client.leave();
  const third = client.disconnect();
  assert.deepStrictEqual(ws.frames().filter((f) => f.type === "leave").length, 1, "one leave frame");
  env.advance(500);
  await Promise.all([first, second, third]);
  assert.equal(client.state(), "disconnected");
  assert.equal(env.live(), 0, "no timer left");
});

test("leave() while the first socket is connecting: connect() rejects, the socket is closed, nothing stays armed", { timeout: 5000 }, async () => {
  const Fake = fakeWebSocketClass();
  const env = fakeEnvironment();
  const client = new Client({ url: "ws://x/", sessionId: "s1", device, WebSocket: Fake, resume: false }, env);
  const joined = client.connect();
  joined.catch(() => {});
  await until(() => Fake.sockets.length === 1, "the socket");
  const ws = Fake.sockets[0];
  await client.leave();
  await assert.rejects(joined, (e) => e instanceof LoudSyncError && e.kind === "connect");
  assert.equal(client.state(), "disconnected");
  assert.equal(ws.closeCalls.length, 1, "the connecting socket is closed");
  assert.equal(env.live(), 0, "no timer left");
  // The socket's late reports change nothing: no second socket, no events, no timer.
  const seen = [];
  client.onAny((e) => seen.push(e.type));
  ws.onopen?.({});
  ws.onmessage?.({ data: JSON.stringify(welcomeFrame("c1")) });
  ws.onclose?.({ code: 1006, reason: "" });
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepStrictEqual(seen, []);
  assert.equal(Fake.sockets.length, 1);
  assert.equal(env.live(), 0);
  assert.equal(client.state(), "disconnected");
  await client.leave(); // over already: resolves at once
});

test("a command given from inside a listener goes out after the frames already due, in order", { timeout: 5000 }, async () => {
  const { client, ws } = await connectedClient();
  // A member joins; the listener answers at once, and again from the answer's own events.
  client.on("memberJoined", (e) => {
    client.sendTo(e.member.id, { hello: e.member.id });
    client.send({ welcome: e.member.id });
  });
  const before = ws.sent.length;
  ws.receive({ type: "member_joined", timestamp: 1, member: member("m2", "Tab", false, 3) });
  ws.receive({ type: "member_joined", timestamp: 1, member: member("m3", "Tv", false, 4) });
  const sent = ws.frames().slice(before).map((f) => [f.type, f.to ?? null, f.data]);
  assert.deepStrictEqual(sent, [
    ["message", "m2", { hello: "m2" }],
    ["message", null, { welcome: "m2" }],
    ["message", "m3", { hello: "m3" }],
    ["message", null, { welcome: "m3" }],
  ]);
  assert.deepStrictEqual(client.members().map((m) => m.id), ["h", "c1", "m2", "m3"]);
});

test("the server's reports after a final failure change nothing and leave no timer", { timeout: 5000 }, async () => {
  const { client, ws, env, Fake } = await connectedClient({ reconnect: { attempts: 1, delayMs: 100 } });
  const ended = client.events();
  ws.serverClose(1006);
  env.advance(100);
  await until(() => Fake.sockets.length === 2, "the reconnection");
  Fake.sockets[1].serverClose(1006); // never opened: a failed attempt, the last one
  await until(() => client.state() === "failed", "failed");
  assert.equal(env.live(), 0, "no timer left");
  const types = [];
  for await (const e of ended) types.push(e.type);
  assert.ok(types.includes("failed"), types.join(", "));
  ws.onmessage?.({ data: JSON.stringify(welcomeFrame("c1")) });
  Fake.sockets[1].onopen?.({});
  assert.equal(client.state(), "failed");
  assert.equal(env.live(), 0);
  assert.equal(Fake.sockets.length, 2);
});

test("connect() called from a listener during the first connect() is the same call: one machine, one socket", { timeout: 5000 }, async () => {
  const Fake = fakeWebSocketClass();
  const env = fakeEnvironment();
  const client = new Client({ url: "ws://x/", sessionId: "s1", device, WebSocket: Fake, resume: false }, env);
  const again = [];
  client.on("stateChanged", () => again.push(client.connect()));
  const joined = client.connect();
  await until(() => Fake.sockets.length >= 1, "the socket");
  assert.ok(again.length >= 1, "the listener ran");
  for (const p of again) assert.equal(p, joined, "the same promise");
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(Fake.sockets.length, 1, "one socket");
  const ws = Fake.sockets[0];
  ws.open();
  ws.receive(welcomeFrame("c1"));
  await joined;
  assert.equal(client.clientId(), "c1");
  assert.ok(env.maxLive() <= 1, "one timer");
});

test("leave() from a listener of the first events opens no socket at all", { timeout: 5000 }, async () => {
  const Fake = fakeWebSocketClass();
  const env = fakeEnvironment();
  const client = new Client({ url: "ws://x/", sessionId: "s1", device, WebSocket: Fake, resume: false }, env);
  let left = null;
  client.on("stateChanged", (e) => {
    if (e.state === "connecting") left = client.leave();
  });
  const joined = client.connect();
  await assert.rejects(joined, (e) => e instanceof LoudSyncError && e.kind === "connect");
  await left;
  assert.equal(Fake.sockets.length, 0, "the connect the machine asked for before the leave is not carried out");
  assert.equal(client.state(), "disconnected");
  assert.equal(env.live(), 0);
});
