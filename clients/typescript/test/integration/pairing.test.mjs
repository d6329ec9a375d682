// pairing.test.mjs: integration tests of the pairing layer against a real `loudsync serve`
// (test/support/server.mjs starts it on 127.0.0.1, port 0, with the apps `alpha`, `beta` and
// `secret:tokA` and a 1 s pairing alive timeout). PairingClients (Node 20: `ws`'s WebSocket
// passed in) pair as controller and responder over /crsocket/{APP}/ws: the updates and the
// states / metastates each sees in order, events both ways with their fields, going passive
// and back, unassign; the rejects (a responder assigned to another controller, and the
// server's own for a same-role or other-app partner); a second connection of the same id
// releasing the first, which waits for `retry`; refused identifies; cr_alive keeping a
// connection open past the alive timeout; reconnection to a restarted server; a Node process
// exits by itself after close() on a frozen connection (support/exiting.mjs). Every wait is
// bounded (record().waitFor); the few fixed waits check that something does NOT happen.
import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { PairingClient, PairingError } from "../../dist/esm/index.js";
import { startServer, record } from "../support/server.mjs";
import { startProxy } from "../support/proxy.mjs";
import { spawnMember } from "../support/exiting.mjs";

const ALIVE_TIMEOUT_ARGS = ["--pairing-alive-timeout", "1s", "--heartbeat-check-interval", "100ms"];
const APP_ARGS = ["--app", "alpha", "--app", "beta", "--app", "secret:tokA"];

const M_NONE = { active: false, connected: false, paired: false };
const M_ACTIVE = { active: true, connected: false, paired: false };
const M_CONNECTED = { active: true, connected: true, paired: false };
const M_PAIRED = { active: true, connected: true, paired: true };

let server;
const open = new Set();

before(async () => {
  server = await startServer([...APP_ARGS, ...ALIVE_TIMEOUT_ARGS]);
});

after(async () => {
  await server?.stop();
});

afterEach(async () => {
  await Promise.all([...open].map((c) => c.close()));
  open.clear();
});

/** A client of `role` on the shared server (short timers), with a recorder of its updates. */
function pairing(role, extra = {}, on = server) {
  const client = new PairingClient({
    url: on.url,
    app: "alpha",
    role,
    accessToken: "tok",
    WebSocket,
    aliveIntervalMs: 300,
    reconnectDelayMs: 100,
    pacingMs: 50,
    ...extra,
  });
  open.add(client);
  return { client, rec: record(client) };
}

const statesOf = (rec) => rec.ofType("stateChanged").map((u) => u.state);
const metastatesOf = (rec) => rec.ofType("metastatesChanged").map((u) => u.metastates);
const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The first `type` update matching `predicate` recorded after `mark` (rec.events.length then), or the next. */
function waitSince(rec, mark, type, predicate = () => true, timeoutMs = undefined) {
  const seen = rec.events.slice(mark).find((u) => u.type === type && predicate(u));
  return seen ? Promise.resolve(seen) : rec.next(type, predicate, timeoutMs);
}

/** A responder (id from the server) and a controller paired with it, both interacting. */
async function pairedCouple() {
  const r = pairing("responder");
  await r.client.connect();
  const c = pairing("controller");
  await c.client.connect();
  c.client.assignPartner(r.client.clientId());
  await c.rec.waitFor("stateChanged", (u) => u.state === "interacting");
  await r.rec.waitFor("stateChanged", (u) => u.state === "interacting");
  return { r, c };
}

test("a controller and a responder pair, exchange events both ways, go passive and back, unassign", async () => {
  const r = pairing("responder");
  await r.client.connect();
  const rid = r.client.clientId();
  assert.match(rid, /^[0-9]{6}$/, "the server assigned an id");
  // An id-less client: the id and connecting, then the welcome, then readyToPair.
  assert.deepEqual(r.rec.events, [
    { type: "clientIdChanged", clientId: rid },
    { type: "stateChanged", state: "connecting" },
    { type: "metastatesChanged", metastates: M_ACTIVE },
    { type: "welcome", appId: "alpha", clientId: rid },
    { type: "stateChanged", state: "readyToPair" },
    { type: "metastatesChanged", metastates: M_CONNECTED },
  ]);

  // A controller with its own id (any other 6 digits).
  const cid = String((Number(rid) + 1) % 1_000_000).padStart(6, "0");
  const c = pairing("controller", { clientId: cid });
  await c.client.connect();
  assert.deepEqual(c.rec.types(), ["stateChanged", "metastatesChanged", "welcome", "stateChanged", "metastatesChanged"]);
  assert.deepEqual(c.client.snapshot(), {
    state: "readyToPair", metastates: M_CONNECTED, clientId: cid, partner: null, rejected: null, aborted: null,
  });
  assert.throws(() => c.client.sendEvent("tap"), (e) => e instanceof PairingError && e.kind === "not_paired");

  c.client.assignPartner(rid);
  await c.rec.waitFor("stateChanged", (u) => u.state === "interacting");
  await r.rec.waitFor("stateChanged", (u) => u.state === "interacting");
  assert.deepEqual(statesOf(c.rec), ["connecting", "readyToPair", "searching", "interacting"]);
  assert.deepEqual(metastatesOf(c.rec), [M_ACTIVE, M_CONNECTED, M_PAIRED]);
  // The responder auto-paired with the first controller that pinged it: straight to interacting.
  assert.deepEqual(statesOf(r.rec), ["connecting", "readyToPair", "interacting"]);
  assert.deepEqual(metastatesOf(r.rec), [M_ACTIVE, M_CONNECTED, M_PAIRED]);
  assert.deepEqual(r.rec.ofType("partnerChanged"), [{ type: "partnerChanged", partner: cid }]);
  assert.equal(r.client.partner(), cid);

  // Events both ways, with their fields.
  const before = Date.now();
  c.client.sendEvent("tap", "left", ["1", "b c", ""]);
  const tap = (await r.rec.waitFor("appEvent")).event;
  assert.deepEqual(
    { ...tap, sendCt: typeof tap.sendCt, receiveCt: typeof tap.receiveCt },
    { sender: cid, eventType: "tap", subType: "left", params: ["1", "b c", ""], buffered: false, logged: false,
      interceptable: true, sendCt: "number", receiveCt: "number" },
  );
  assert.ok(tap.sendCt >= before && tap.receiveCt >= tap.sendCt, `sendCt ${tap.sendCt}, receiveCt ${tap.receiveCt}`);
  r.client.sendEvent("score", "", ["7"]);
  r.client.sendEvent("score", "", ["8"]);
  await c.rec.waitFor("appEvent", (u) => u.event.params[0] === "8");
  assert.deepEqual(
    c.rec.ofType("appEvent").map((u) => [u.event.sender, u.event.eventType, u.event.params]),
    [[rid, "score", ["7"]], [rid, "score", ["8"]]],
    "in order, once each; pings and the pairing's own events never reach the app",
  );

  // The controller goes passive: `inactive` moves the responder to searching at once.
  c.client.setActive(false);
  assert.equal(c.client.state(), "passive");
  assert.deepEqual(c.client.metastates(), M_NONE);
  await r.rec.waitFor("stateChanged", (u) => u.state === "searching");
  assert.equal(r.client.partner(), cid, "still paired, searching");
  // ... and back: it reconnects with its id and its partner (active again within 25 s).
  const [cMark, rMark] = [c.rec.events.length, r.rec.events.length];
  c.client.setActive(true);
  await waitSince(c.rec, cMark, "welcome", (u) => u.clientId === cid);
  await waitSince(c.rec, cMark, "stateChanged", (u) => u.state === "interacting");
  await waitSince(r.rec, rMark, "stateChanged", (u) => u.state === "interacting");

  // The controller unassigns: the responder is free (readyToPair) again.
  c.client.assignPartner(null);
  assert.equal(c.client.state(), "readyToPair");
  await r.rec.waitFor("partnerChanged", (u) => u.partner === null);
  assert.equal(r.client.state(), "readyToPair");
  assert.deepEqual(r.client.metastates(), M_CONNECTED);

  await c.client.close();
  assert.equal(c.client.state(), "passive");
  assert.throws(() => c.client.assignPartner(rid), (e) => e instanceof PairingError && e.kind === "closed");
});

test("a paired responder rejects a second controller; the server rejects same-role and other-app partners", async () => {
  const { r, c } = await pairedCouple();
  const rid = r.client.clientId();
  const c2 = pairing("controller");
  await c2.client.connect();
  c2.client.assignPartner(rid);
  const rejected = await c2.rec.waitFor("rejected");
  assert.deepEqual(rejected, { type: "rejected", partner: rid, subType: "assignedToOther" });
  assert.equal(c2.client.state(), "readyToPair");
  assert.equal(c2.client.snapshot().rejected, "assignedToOther");
  assert.equal(c2.client.partner(), rid, "flagged, not unassigned");
  assert.deepEqual(statesOf(c2.rec), ["connecting", "readyToPair", "searching", "readyToPair"]);
  assert.equal(r.client.partner(), c.client.clientId(), "the responder keeps its partner");
  assert.equal(r.rec.ofType("appEvent").length, 0);

  // The server's own rejects: a partner of the same role, a partner in another app.
  c2.client.assignPartner(c.client.clientId());
  assert.deepEqual(await c2.rec.waitFor("rejected", (u) => u.subType !== "assignedToOther"), {
    type: "rejected", partner: c.client.clientId(), subType: "invalidPartnerRole",
  });
  const other = pairing("responder", { app: "beta" });
  await other.client.connect();
  c2.client.assignPartner(other.client.clientId());
  assert.deepEqual(await c2.rec.waitFor("rejected", (u) => u.subType === "appIdMismatch"), {
    type: "rejected", partner: other.client.clientId(), subType: "appIdMismatch",
  });
  assert.equal(other.client.state(), "readyToPair", "nothing reached the other app's responder");
  assert.equal(c.client.state(), "interacting", "the first controller is undisturbed");
});

test("a second connection with the same id releases the first, which waits for retry", async () => {
  const first = pairing("responder");
  await first.client.connect();
  const id = first.client.clientId();
  const second = pairing("responder", { clientId: id });
  await second.client.connect();
  assert.deepEqual(await first.rec.waitFor("aborted"), { type: "aborted", reason: "releasedByOther" });
  assert.equal(first.client.state(), "readyToConnect");
  assert.deepEqual(first.client.metastates(), M_ACTIVE);
  assert.equal(first.client.aborted(), "releasedByOther");
  assert.deepEqual(statesOf(first.rec), ["connecting", "readyToPair", "readyToConnect"]);
  // No reconnection of its own: over several reconnect delays (100 ms) nothing happens.
  await pause(600);
  assert.equal(first.rec.ofType("welcome").length, 1);
  assert.equal(second.rec.ofType("aborted").length, 0);
  assert.equal(second.client.state(), "readyToPair");
  // A controller reaches the one connected now.
  const c = pairing("controller");
  await c.client.connect();
  c.client.assignPartner(id);
  await second.rec.waitFor("stateChanged", (u) => u.state === "interacting");
  // retry(): the first takes the id back and releases the second.
  const mark = first.rec.events.length;
  first.client.retry();
  await waitSince(first.rec, mark, "welcome", (u) => u.clientId === id);
  assert.equal(first.client.aborted(), null);
  assert.deepEqual(await second.rec.waitFor("aborted"), { type: "aborted", reason: "releasedByOther" });
  assert.equal(second.client.state(), "readyToConnect");
});

test("refused identifies reject connect(): notAuthorized, and an unknown app's 404", async () => {
  const wrong = pairing("controller", { app: "secret", accessToken: "nope" });
  await assert.rejects(wrong.client.connect(), (e) => {
    assert.ok(e instanceof PairingError);
    assert.equal(e.kind, "refused");
    assert.equal(e.abortReason, "notAuthorized");
    return true;
  });
  assert.deepEqual(wrong.rec.ofType("aborted"), [{ type: "aborted", reason: "notAuthorized" }]);
  assert.equal(wrong.client.aborted(), "notAuthorized");
  assert.throws(() => wrong.client.retry(), (e) => e.kind === "closed", "a failed connect() closes the client");

  const right = pairing("controller", { app: "secret", accessToken: "tokA" });
  await right.client.connect();
  assert.equal(right.client.state(), "readyToPair");

  const unknown = pairing("controller", { app: "nope" });
  await assert.rejects(unknown.client.connect(), (e) => {
    assert.equal(e.kind, "connect");
    assert.match(e.message, /404/);
    assert.match(e.message, /--app nope/);
    return true;
  });
  assert.equal(unknown.rec.ofType("connectFailed").length, 1);
});

test("cr_alive keeps a connection open past the alive timeout; a silent one is aborted clientNotAlive", async () => {
  const alive = pairing("responder");
  await alive.client.connect();
  const silent = pairing("responder", { aliveIntervalMs: 60_000 });
  await silent.client.connect();
  const started = Date.now();
  assert.deepEqual(await silent.rec.waitFor("aborted", () => true, 5_000), { type: "aborted", reason: "clientNotAlive" });
  assert.ok(Date.now() - started >= 800, "not before the 1 s alive timeout");
  assert.equal(silent.client.state(), "readyToConnect");
  // Well past the timeout (the silent one's abort plus another second), the alive one is served.
  await pause(1_000);
  assert.equal(alive.rec.ofType("aborted").length, 0);
  assert.equal(alive.rec.ofType("disconnected").length, 0);
  assert.equal(alive.client.state(), "readyToPair");
});

test("a lost connection reconnects to a restarted server and pairs again", async () => {
  const own = await startServer([...APP_ARGS, ...ALIVE_TIMEOUT_ARGS]);
  let restarted;
  try {
    const r = pairing("responder", {}, own);
    await r.client.connect();
    const c = pairing("controller", {}, own);
    await c.client.connect();
    c.client.assignPartner(r.client.clientId());
    await c.rec.waitFor("stateChanged", (u) => u.state === "interacting");
    const [cMark, rMark] = [c.rec.events.length, r.rec.events.length];
    own.kill("SIGKILL");
    await own.exited;
    await waitSince(c.rec, cMark, "disconnected");
    await waitSince(r.rec, rMark, "disconnected");
    assert.equal(c.client.state(), "connecting");
    assert.equal(r.client.state(), "connecting");
    await waitSince(c.rec, cMark, "connectFailed");
    restarted = await startServer([...APP_ARGS, ...ALIVE_TIMEOUT_ARGS], { port: own.port });
    await waitSince(c.rec, cMark, "welcome", (u) => u.clientId === c.client.clientId());
    await waitSince(r.rec, rMark, "welcome", (u) => u.clientId === r.client.clientId());
    // Both kept their ids and the pairing: interacting again once they hear from each other.
    await waitSince(c.rec, cMark, "stateChanged", (u) => u.state === "interacting");
    await waitSince(r.rec, rMark, "stateChanged", (u) => u.state === "interacting");
    c.client.sendEvent("again");
    assert.equal((await r.rec.waitFor("appEvent")).event.eventType, "again");
  } finally {
    await Promise.all([...open].map((c) => c.close()));
    open.clear();
    await own.stop();
    await restarted?.stop();
  }
});

test("the process exits after close() on a frozen connection", async (t) => {
  // close() resolves after its 1 s bound; before the fix `ws` went on waiting 30 s for the
  // frozen peer's close frame, and held the process.
  const proxy = await startProxy(server.port);
  t.after(() => proxy.close());
  const child = spawnMember(t, proxy.url, "pairing");
  await child.until("joined");
  assert.equal(proxy.freezeAll(), 1);
  child.go();
  const { at } = await child.until("over");
  await child.exitWithin(at);
});
