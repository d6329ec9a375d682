// session.test.mjs: the SDK's session layer against a real `loudsync serve` on loopback with
// short timers (support/server.mjs): join and welcome, the member table (host first, joins and
// leaves seen by the others, `memberList`), messages to all and to one, latency from the
// client's own ping and the server's measurement, kick (no reconnection), the host closing
// the session, the typed join errors (session_not_found, session_full, already_joined,
// password_required, wrong_password, an unreachable port), and reconnection to a server
// restarted on the same port, and `failed` after the attempts when it stays away; and that a
// Node process using the SDK exits by itself once its client is over (support/exiting.mjs):
// after leave() / disconnect(), after a leave() the frozen server never answers, after a
// frozen connection was dropped by silence and resumed, after a final failure. Each test
// starts its own server; every wait is bounded.
// Run: `npm run build && node --test --test-concurrency=1 test/integration/session.test.mjs`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { LoudSyncError } from "../../dist/esm/index.js";
import { startServer, FAST_SERVER_ARGS, waitUntil, within, WAIT_MS } from "../support/server.mjs";
import { startProxy } from "../support/proxy.mjs";
import { peers, hostOptions, memberOptions, FAST_CLIENT } from "../support/peers.mjs";
import { spawnMember } from "../support/exiting.mjs";

/** Starts a server (fast timers + `args`) and a peer set, both torn down after the test. */
async function setup(t, args = [], options = {}) {
  const server = await startServer([...FAST_SERVER_ARGS, "--latency-interval", "100ms", ...args], options);
  const set = peers();
  t.after(async () => {
    await set.closeAll();
    await server.stop();
  });
  return { server, peers: set };
}

/** The member ids of a table, in order. */
const ids = (members) => members.map((member) => member.id);

/** Asserts that `fn` throws a LoudSyncError of `kind`. */
function assertThrowsKind(fn, kind) {
  assert.throws(fn, (error) => error instanceof LoudSyncError && error.kind === kind,
    `expected a LoudSyncError of kind ${kind}`);
}

test("a host joins: welcome, its clientId, the session and its own table", async (t) => {
  const { server, peers } = await setup(t);
  const host = await peers.connect(hostOptions(server.url, "party", "desk", { sessionName: "The Party" }));
  const welcome = await host.log.waitFor("welcome");
  assert.match(welcome.clientId, /^c_[0-9a-z]{12}$/);
  assert.equal(host.client.clientId(), welcome.clientId);
  assert.equal(welcome.session.id, "party");
  assert.equal(welcome.session.name, "The Party");
  assert.equal(welcome.session.hostId, welcome.clientId);
  assert.equal(host.client.state(), "connected");
  assert.equal(host.client.linkState(), "CONNECTED", "resumable by default");
  assert.equal(host.client.sessionId(), "party");
  assert.equal(host.client.isHost(), true);
  assert.equal(host.client.hostId(), welcome.clientId);
  assert.equal(host.client.role(), "assigned");
  assert.equal(host.client.term(), 1);
  assert.deepEqual(host.client.sessionState(), { state: {}, version: 0 });
  assert.deepEqual(ids(host.client.members()), [welcome.clientId]);
  const me = host.client.members()[0];
  assert.equal(me.name, "desk name");
  assert.equal(me.isHost, true);
  assert.equal(me.connectionStatus, "connected");
  // The states it went through, in order, and one welcome.
  const states = host.log.ofType("stateChanged").map((event) => event.state);
  assert.deepEqual(states, ["connecting", "connected"]);
  assert.equal(host.log.ofType("welcome").length, 1);
  const snapshot = host.client.snapshot();
  assert.equal(snapshot.clientId, welcome.clientId);
  assert.equal(snapshot.state, "connected");
  assert.equal(snapshot.isHost, true);
});

test("the member table: host first, joins and leaves seen by the others, memberList on request", async (t) => {
  const { server, peers } = await setup(t);
  const host = await peers.connect(hostOptions(server.url, "party"));
  const alice = await peers.connect(memberOptions(server.url, "party", "alice"));
  // The joiner's table comes from member_list: host first, then itself.
  assert.deepEqual(ids(alice.client.members()), [host.id, alice.id]);
  assert.equal(alice.client.members()[0].isHost, true);
  assert.equal(alice.client.members()[1].name, "alice name");
  assert.equal(alice.client.isHost(), false);
  assert.equal(alice.client.hostId(), host.id);
  assert.equal(alice.log.ofType("memberJoined").length, 0, "a joiner never gets its own member_joined");
  // The host hears of it.
  const joined = await host.log.waitFor("memberJoined", (event) => event.member.id === alice.id);
  assert.equal(joined.member.name, "alice name");
  assert.equal(joined.member.isHost, false);
  const bob = await peers.connect(memberOptions(server.url, "party", "bob"));
  await host.log.waitFor("memberJoined", (event) => event.member.id === bob.id);
  await alice.log.waitFor("memberJoined", (event) => event.member.id === bob.id);
  assert.deepEqual(ids(host.client.members()), [host.id, alice.id, bob.id]);
  assert.deepEqual(ids(alice.client.members()), [host.id, alice.id, bob.id]);
  // A member_list on request: the full table, in order.
  alice.client.requestMemberList();
  const list = await alice.log.waitFor("memberList", (event) => event.members.length === 3);
  assert.deepEqual(ids(list.members), [host.id, alice.id, bob.id]);
  assert.deepEqual(list.members.map((member) => member.name), ["desk name", "alice name", "bob name"]);
  // Bob leaves: the others get member_left "left"; bob is disconnected and refuses commands.
  await within(bob.client.leave(), WAIT_MS, "bob's leave");
  assert.equal(bob.client.state(), "disconnected");
  for (const peer of [host, alice]) {
    const left = await peer.log.waitFor("memberLeft", (event) => event.memberId === bob.id);
    assert.equal(left.reason, "left");
  }
  assert.deepEqual(ids(host.client.members()), [host.id, alice.id]);
  assert.deepEqual(ids(alice.client.members()), [host.id, alice.id]);
  assertThrowsKind(() => bob.client.ping(), "not_connected");
  assertThrowsKind(() => bob.client.send({ late: true }), "not_connected");
  assert.equal(bob.log.ofType("reconnecting").length, 0, "a leave is not reconnected");
});

test("messages reach every other member, or just the one named", async (t) => {
  const { server, peers } = await setup(t);
  const host = await peers.connect(hostOptions(server.url, "party"));
  const alice = await peers.connect(memberOptions(server.url, "party", "alice"));
  const bob = await peers.connect(memberOptions(server.url, "party", "bob"));
  alice.client.send({ track: 3, position: 12.5 });
  for (const peer of [host, bob]) {
    const message = await peer.log.waitFor("message");
    assert.deepEqual(message, { type: "message", from: alice.id, data: { track: 3, position: 12.5 } });
  }
  host.client.sendTo(bob.id, "just you");
  const direct = await bob.log.waitFor("message", (event) => event.from === host.id);
  assert.equal(direct.data, "just you");
  // A later broadcast from bob proves alice got no copy of the direct one (per-link order).
  bob.client.send("after");
  await alice.log.waitFor("message", (event) => event.data === "after");
  assert.deepEqual(alice.log.ofType("message").map((event) => event.data), ["after"]);
  assert.equal(alice.log.ofType("message").some((event) => event.from === alice.id), false, "no echo to the sender");
});

test("latency: a latency event after a ping, and the server's measurement in the table", async (t) => {
  const { server, peers } = await setup(t);
  // Fewer automatic pings here (every 500 ms, within the server's 1 s heartbeat timeout).
  const slow = { heartbeatIntervalMs: 500, silenceTimeoutMs: 2_000 };
  const host = await peers.connect(hostOptions(server.url, "party", "desk", slow));
  const reply = host.log.next("latency");
  host.client.ping();
  const latency = await reply;
  assert.equal(typeof latency.ms, "number");
  assert.ok(latency.ms >= 0 && latency.ms < 1_000, `a loopback round trip of ${latency.ms} ms`);
  // latency() is the last measurement (an automatic ping's pong may have come after ours).
  assert.equal(host.client.latency(), host.log.ofType("latency").at(-1).ms);
  // The automatic pings of a client with the fast heartbeat give latency events on their own.
  const alice = await peers.connect(memberOptions(server.url, "party", "alice"));
  await alice.log.waitFor("latency");
  assert.equal(typeof alice.client.latency(), "number");
  // The server measures every member (--latency-interval 100ms); a member_list carries it.
  const measured = await waitUntil("server-measured latencies in member_list", async () => {
    const reply = alice.log.next("memberList");
    alice.client.requestMemberList();
    const list = await reply;
    return list.members.length === 2 && list.members.every((member) => typeof member.latency === "number")
      ? list.members : null;
  });
  assert.deepEqual(ids(measured), [host.id, alice.id]);
});

test("kick: the kicked member gets kicked and stays out, the others get member_left kicked", async (t) => {
  const { server, peers } = await setup(t);
  const proxy = await startProxy(server.port);
  t.after(() => proxy.close());
  const host = await peers.connect(hostOptions(server.url, "party"));
  const alice = await peers.connect(memberOptions(proxy.url, "party", "alice"));
  const bob = await peers.connect(memberOptions(server.url, "party", "bob"));
  await host.log.waitFor("memberJoined", (event) => event.member.id === bob.id);
  assert.equal(proxy.accepted(), 1);
  host.client.kick(alice.id, "be nice");
  const kicked = await alice.log.waitFor("kicked");
  assert.equal(kicked.reason, "be nice");
  for (const peer of [host, bob]) {
    const left = await peer.log.waitFor("memberLeft", (event) => event.memberId === alice.id);
    assert.equal(left.reason, "kicked");
  }
  await alice.log.waitFor("stateChanged", (event) => event.state === "disconnected");
  assert.equal(alice.client.state(), "disconnected");
  assert.deepEqual(alice.client.members(), [], "the session's table is cleared");
  assertThrowsKind(() => alice.client.send("still here?"), "not_connected");
  assert.deepEqual(ids(host.client.members()), [host.id, bob.id]);
  // It does not come back: after three reconnection delays no new connection reached the proxy.
  // (A negative can only be checked by waiting; the wait is bounded and short.)
  await new Promise((resolveWait) => setTimeout(resolveWait, 3 * FAST_CLIENT.reconnect.delayMs));
  assert.equal(proxy.accepted(), 1, "the kicked client opened no new connection");
  for (const type of ["reconnecting", "resuming", "connectionLost"]) {
    assert.equal(alice.log.ofType(type).length, 0, `${type}: ${alice.log.types().join(", ")}`);
  }
  // A member may not kick.
  bob.client.kick(host.id);
  const refusal = await bob.log.waitFor("error");
  assert.equal(refusal.error.code, "unauthorized");
});

test("the host closes the session: every member gets sessionClosed and nobody reconnects", async (t) => {
  const { server, peers } = await setup(t);
  const host = await peers.connect(hostOptions(server.url, "party"));
  const alice = await peers.connect(memberOptions(server.url, "party", "alice"));
  const bob = await peers.connect(memberOptions(server.url, "party", "bob"));
  await host.log.waitFor("memberJoined", (event) => event.member.id === bob.id);
  await within(host.client.closeSession(), WAIT_MS, "closeSession");
  assert.equal(host.client.state(), "disconnected");
  for (const peer of [alice, bob]) {
    const closed = await peer.log.waitFor("sessionClosed");
    assert.equal(closed.reason, "Host ended the session");
    await peer.log.waitFor("stateChanged", (event) => event.state === "disconnected");
    assert.equal(peer.client.state(), "disconnected");
    assert.equal(peer.log.ofType("memberLeft").length, 0, "a session end sends no member_left");
    assert.equal(peer.log.ofType("reconnecting").length, 0);
    assert.equal(peer.log.ofType("resuming").length, 0);
  }
  // The session is gone: joining it now is session_not_found.
  const late = await peers.refused(memberOptions(server.url, "party", "carol"));
  assert.equal(late.error.kind, "rejected");
  assert.equal(late.error.serverError.code, "session_not_found");
});

test("typed join errors: session_not_found, session_full, already_joined, unreachable", async (t) => {
  const { server, peers } = await setup(t, ["--max-members", "2"]);
  const missing = await peers.refused(memberOptions(server.url, "nope", "alice"));
  assert.ok(missing.error instanceof LoudSyncError);
  assert.equal(missing.error.kind, "rejected");
  assert.equal(missing.error.serverError.code, "session_not_found");
  assert.match(missing.error.serverError.message, /nope/);
  assert.equal(missing.log.ofType("reconnecting").length, 0, "a refused first join is not retried");

  const host = await peers.connect(hostOptions(server.url, "party"));
  await peers.connect(memberOptions(server.url, "party", "alice"));
  const again = await peers.refused(memberOptions(server.url, "party", "alice"));
  assert.equal(again.error.kind, "rejected");
  assert.equal(again.error.serverError.code, "already_joined");

  const full = await peers.refused(memberOptions(server.url, "party", "bob"));
  assert.equal(full.error.kind, "rejected");
  assert.equal(full.error.serverError.code, "session_full");
  assert.deepEqual(full.error.serverError.details, { maxMembers: 2, currentMembers: 2 });
  assert.equal(host.client.members().length, 2, "the refused joins left the session as it was");

  // Nothing listens on the server's port once it has stopped: kind "connect".
  const closedPort = await startServer(FAST_SERVER_ARGS);
  const deadUrl = closedPort.url;
  await closedPort.stop();
  const unreachable = await peers.refused(memberOptions(deadUrl, "party", "carol", { reconnect: { attempts: 0 } }));
  assert.equal(unreachable.error.kind, "connect");
  assert.equal(unreachable.error.serverError, undefined);
});

test("typed join errors: password_required and wrong_password; the right password joins", async (t) => {
  const { server, peers } = await setup(t);
  await peers.connect(hostOptions(server.url, "vault", "desk", { password: "open sesame" }));
  const without = await peers.refused(memberOptions(server.url, "vault", "alice"));
  assert.equal(without.error.kind, "rejected");
  assert.equal(without.error.serverError.code, "password_required");
  const wrong = await peers.refused(memberOptions(server.url, "vault", "alice", { password: "guess" }));
  assert.equal(wrong.error.kind, "rejected");
  assert.equal(wrong.error.serverError.code, "wrong_password");
  assert.ok(!wrong.error.message.includes("open sesame") && !wrong.error.serverError.message.includes("open sesame"),
    "the password is never echoed");
  const right = await peers.connect(memberOptions(server.url, "vault", "alice", { password: "open sesame" }));
  assert.equal(right.client.members().length, 2);
});

test("a server restarted on the same port: reconnecting, then a fresh welcome and a new id", async (t) => {
  // Enough attempts to outlast the restart (stop, then a new process on the same port).
  const patient = { reconnect: { attempts: 20, delayMs: 200 } };
  let server = await startServer(FAST_SERVER_ARGS);
  const set = peers();
  t.after(async () => {
    await set.closeAll();
    await server.stop();
  });
  const port = server.port;
  const host = await set.connect(hostOptions(server.url, "party", "desk", patient));
  const alice = await set.connect(memberOptions(server.url, "party", "alice", patient));
  const oldHostId = host.id;
  const oldAliceId = alice.id;
  // SIGTERM: the server sends session_closed "Server shutting down" and closes with 1001.
  await server.stop();
  for (const peer of [host, alice]) {
    await peer.log.waitFor("stateChanged", (event) => event.state === "reconnecting");
    await peer.log.waitFor("reconnecting", (event) => event.attempt >= 1);
  }
  assert.equal(alice.client.state(), "reconnecting");
  const first = alice.log.ofType("reconnecting")[0];
  assert.equal(first.attempt, 1);
  assert.equal(first.of, 20);
  assert.equal(alice.log.ofType("sessionClosed").length, 0, "a server going away is reconnected, not final");

  server = await startServer(FAST_SERVER_ARGS, { port });
  const hostWelcome = await host.log.waitFor("welcome", (event) => event.clientId !== oldHostId);
  const aliceWelcome = await alice.log.waitFor("welcome", (event) => event.clientId !== oldAliceId);
  assert.equal(alice.client.state(), "connected");
  assert.equal(host.client.state(), "connected");
  assert.equal(alice.client.clientId(), aliceWelcome.clientId);
  assert.equal(host.client.isHost(), true, "the host re-opened its session");
  assert.equal(alice.client.hostId(), hostWelcome.clientId);
  // The welcome comes after the reconnection attempts, and the tables are rebuilt.
  const types = alice.log.types();
  assert.ok(types.lastIndexOf("reconnecting") < types.lastIndexOf("welcome"), types.join(", "));
  await waitUntil("both tables list both members",
    () => host.client.members().length === 2 && alice.client.members().length === 2);
  assert.deepEqual(ids(alice.client.members()), [hostWelcome.clientId, aliceWelcome.clientId]);
  assert.deepEqual(ids(host.client.members()), [hostWelcome.clientId, aliceWelcome.clientId]);
});

test("a server that stays away: the reconnection attempts, then failed", async (t) => {
  const { server, peers } = await setup(t);
  const plain = { resume: false }; // a resumable client would resume (resume.test.mjs) instead
  await peers.connect(hostOptions(server.url, "party", "desk", plain));
  const alice = await peers.connect(memberOptions(server.url, "party", "alice", plain));
  await server.stop(); // session_closed "Server shutting down", close 1001: reconnected, not final
  const failed = await alice.log.waitFor("failed");
  assert.match(failed.reason, /could not connect/);
  assert.equal(alice.client.state(), "failed");
  const attempts = alice.log.ofType("reconnecting");
  assert.deepEqual(attempts.map((event) => [event.attempt, event.of]), [[1, 3], [2, 3], [3, 3]]);
  const types = alice.log.types();
  assert.ok(types.lastIndexOf("reconnecting") < types.indexOf("failed"), types.join(", "));
  assert.equal(alice.log.ofType("welcome").length, 1, "no second join");
  assertThrowsKind(() => alice.client.send("anyone?"), "not_connected");
});

// ---- a Node process exits by itself once its client is over (support/exiting.mjs)

/** A server, a proxy in front of it (to freeze the path) and a host in `s1`. */
async function exitSetup(t) {
  const { server, peers } = await setup(t);
  const proxy = await startProxy(server.port);
  t.after(() => proxy.close());
  await peers.connect(hostOptions(server.url, "s1"));
  return proxy;
}

for (const mode of ["leave", "disconnect"]) {
  test(`the process exits after ${mode}() on a live connection`, async (t) => {
    const proxy = await exitSetup(t);
    const child = spawnMember(t, proxy.url, mode);
    await child.until("joined");
    child.go();
    const { at } = await child.until("over");
    await child.exitWithin(at);
  });
}

test("the process exits after a leave() the frozen server never answers (the leave timeout ends it)", async (t) => {
  // Before the fix the socket was closed with a handshake the frozen peer never finished, and
  // `ws` held it (and the process) 30 s.
  const proxy = await exitSetup(t);
  const child = spawnMember(t, proxy.url, "leave");
  await child.until("joined");
  assert.equal(proxy.freezeAll(), 1);
  child.go();
  const { at, line } = await child.until("left");
  assert.equal(line.state, "disconnected");
  await child.exitWithin(at);
});

test("the process exits after leave() when an earlier frozen socket was dropped by silence", async (t) => {
  const proxy = await exitSetup(t);
  const child = spawnMember(t, proxy.url, "leave");
  await child.until("joined");
  proxy.freezeAll();
  await child.until("connectionLost");
  await child.until("resumed");
  child.go();
  const { at } = await child.until("over");
  await child.exitWithin(at);
});

test("the process exits after a final failure (frozen, then the server stays away)", async (t) => {
  const proxy = await exitSetup(t);
  const child = spawnMember(t, proxy.url, "leave");
  await child.until("joined");
  proxy.pause();
  proxy.freezeAll();
  const { at } = await child.until("failed");
  await child.exitWithin(at);
});
