// resume.test.mjs: the SDK's resume layer against a real `loudsync serve` on loopback, the
// member's connection going through support/proxy.mjs so it can be cut for real (cutAll:
// both TCP sockets destroyed, no close frame). Numbered messages both ways across three cuts
// (one while messages are in flight, one lasting while both sides send) arrive exactly once
// and in order; the member keeps its clientId and gets `resumed`; a cut host keeps its
// session; what is sent while away is queued up to queueLimit; past the server's window the
// resume is refused (`expired`) and a fresh join follows; a killed and restarted server
// answers `unknown_token` and the client joins afresh; a frozen connection is noticed by the
// client's silence timer and resumed; the formal disconnect is a leave.
// Run: `npm run build && node --test --test-concurrency=1 test/integration/resume.test.mjs`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { LoudSyncError } from "../../dist/esm/index.js";
import { startServer, FAST_SERVER_ARGS, waitUntil, within, WAIT_MS } from "../support/server.mjs";
import { startProxy } from "../support/proxy.mjs";
import { peers, hostOptions, memberOptions } from "../support/peers.mjs";

/** A server with fast timers + `args`, a proxy in front of it, and a peer set; all torn down. */
async function setup(t, args = []) {
  const server = await startServer([...FAST_SERVER_ARGS, ...args]);
  const proxy = await startProxy(server.port);
  const set = peers();
  t.after(async () => {
    await set.closeAll();
    await proxy.close();
    await server.stop();
  });
  return { server, proxy, peers: set };
}

/** The `n` of every `{n}` message from `from`, in the order received. */
const numbersFrom = (peer, from) =>
  peer.log.ofType("message").filter((event) => event.from === from && typeof event.data?.n === "number")
    .map((event) => event.data.n);

/** Sends `{n}` for n in [from, to), yielding to the event loop every 10 (so cuts land mid-stream). */
async function sendRange(client, from, to, target) {
  for (let n = from; n < to; n += 1) {
    if (target) client.sendTo(target, { n });
    else client.send({ n });
    if (n % 10 === 9) await new Promise((resolveTick) => setImmediate(resolveTick));
  }
}

/** [from, to) as an array. */
const range = (from, to) => Array.from({ length: to - from }, (_, i) => from + i);

const isThrownKind = (kind) => (error) => error instanceof LoudSyncError && error.kind === kind;

test("connections are resumable by default; resume: false is a plain connection", async (t) => {
  const { server, peers } = await setup(t);
  const host = await peers.connect(hostOptions(server.url, "party"));
  assert.equal(host.client.linkState(), "CONNECTED");
  const links = host.log.ofType("linkChanged").map((event) => event.link);
  assert.deepEqual(links.slice(-1), ["CONNECTED"], `link states: ${links.join(", ")}`);
  const plain = await peers.connect(memberOptions(server.url, "party", "plain", { resume: false }));
  assert.equal(plain.client.linkState(), "DISCONNECTED");
  assert.equal(plain.client.state(), "connected");
  plain.client.send({ n: 1 });
  const got = await host.log.waitFor("message");
  assert.deepEqual(got.data, { n: 1 });
});

test("a member cut three times: numbered messages both ways arrive once each, in order", async (t) => {
  // A high server rate limit so the paced sends are the only brake.
  const { server, proxy, peers } = await setup(t, ["--rate-limit", "2000", "--rate-burst", "4000"]);
  // Paced at 400/s in bursts of 20: 100 messages take a quarter second, so cuts land mid-stream.
  const fastSends = { sendRate: 400, sendBurst: 20 };
  const host = await peers.connect(hostOptions(server.url, "party", "desk", fastSends));
  const member = await peers.connect(memberOptions(proxy.url, "party", "phone", fastSends));
  // A third member, connected directly, sees the host's broadcasts as the server relays them.
  const watcher = await peers.connect(memberOptions(server.url, "party", "watcher"));
  const memberId = member.id;
  assert.equal(member.client.linkState(), "CONNECTED");

  // Cut 1: while 0..100 are in flight both ways.
  const sending = [sendRange(host.client, 0, 100), sendRange(member.client, 0, 100)];
  await waitUntil("some of the first messages relayed", () => numbersFrom(watcher, host.id).length >= 10);
  assert.ok(proxy.cutAll() >= 1, "the member's connection was open");
  assert.ok(numbersFrom(host, memberId).length < 100 && numbersFrom(member, host.id).length < 100,
    "the cut came while messages were in flight both ways");
  await Promise.all(sending);
  const resumed1 = await member.log.waitFor("resumed");
  assert.equal(typeof resumed1.replayed, "number");

  // Cut 2: a drop that lasts while both sides send 100..200.
  // (Waits are set up before the cut: the first cut's events are in the record already.)
  const away = member.log.next("stateChanged", (event) => event.state === "reconnecting");
  const seenAway = host.log.next("memberUpdated",
    (event) => event.member.id === memberId && event.member.connectionStatus === "reconnecting");
  proxy.pause();
  proxy.cutAll();
  await away;
  await seenAway;
  assert.equal(member.client.state(), "reconnecting");
  assert.equal(member.client.clientId(), memberId, "the id is kept while away");
  assert.equal(member.client.members().length, 3, "the table is kept while away");
  await sendRange(member.client, 100, 200); // queued: taken, not refused
  await sendRange(host.client, 100, 200); // buffered by the server for the away member
  await waitUntil("the host's 100..200 reached the server", () => numbersFrom(watcher, host.id).length >= 200);
  assert.equal(numbersFrom(host, memberId).includes(100), false, "nothing queued went out while cut");
  const resuming2 = member.log.next("resumed");
  const seenBack = host.log.next("memberUpdated",
    (event) => event.member.id === memberId && event.member.connectionStatus === "connected");
  proxy.resume();
  const resumed2 = await resuming2;
  assert.ok(resumed2.replayed >= 100, `the server replayed what it held (${resumed2.replayed})`);
  await seenBack;

  // Cut 3: mid-stream again, 200..300.
  const last = [sendRange(host.client, 200, 300), sendRange(member.client, 200, 300)];
  await waitUntil("some of the last messages relayed", () => numbersFrom(watcher, host.id).length >= 210);
  proxy.cutAll();
  assert.ok(numbersFrom(host, memberId).length < 300 && numbersFrom(member, host.id).length < 300,
    "the third cut came while messages were in flight both ways");
  await Promise.all(last);
  await waitUntil("the third resume", () => member.log.ofType("resumed").length >= 3);

  // A final marker each way: order is kept, so anything lost or doubled shows before it.
  host.client.send({ done: "host" });
  member.client.send({ done: "member" });
  await member.log.waitFor("message", (event) => event.data?.done === "host");
  await host.log.waitFor("message", (event) => event.data?.done === "member");
  assert.deepEqual(numbersFrom(host, memberId), range(0, 300), "the host got the member's messages once, in order");
  assert.deepEqual(numbersFrom(member, host.id), range(0, 300), "the member got the host's messages once, in order");
  const lastFromHost = member.log.ofType("message").filter((event) => event.from === host.id).at(-1);
  assert.deepEqual(lastFromHost.data, { done: "host" }, "nothing from the host after its marker");

  // The same member throughout: resumed three times, welcomed once, never left.
  assert.equal(member.client.clientId(), memberId);
  assert.equal(member.log.ofType("resumed").length, 3, member.log.types().join(", "));
  assert.equal(member.log.ofType("welcome").length, 1, "only the first join's welcome");
  assert.equal(member.log.ofType("resumeFailed").length, 0);
  assert.ok(member.log.ofType("resuming").length >= 3, "a resuming event per resume at least");
  assert.equal(host.log.ofType("memberLeft").length, 0, host.log.types().join(", "));
  assert.equal(member.client.state(), "connected");
  assert.equal(member.client.linkState(), "CONNECTED");
  assert.ok(host.client.members().every((m) => m.connectionStatus === "connected"));
});

test("a cut host resumes and its session stays open", async (t) => {
  const { server, proxy, peers } = await setup(t);
  const host = await peers.connect(hostOptions(proxy.url, "party"));
  const member = await peers.connect(memberOptions(server.url, "party", "phone"));
  const hostId = host.id;
  proxy.pause();
  proxy.cutAll();
  await member.log.waitFor("memberUpdated",
    (event) => event.member.id === hostId && event.member.connectionStatus === "reconnecting");
  host.client.send({ n: 7 }); // queued while away
  proxy.resume();
  await host.log.waitFor("resumed");
  await member.log.waitFor("memberUpdated",
    (event) => event.member.id === hostId && event.member.connectionStatus === "connected");
  const message = await member.log.waitFor("message");
  assert.deepEqual(message, { type: "message", from: hostId, data: { n: 7 } });
  assert.equal(host.client.clientId(), hostId);
  assert.equal(host.client.isHost(), true);
  assert.equal(host.client.state(), "connected");
  assert.equal(member.log.ofType("sessionClosed").length, 0);
  assert.equal(member.log.ofType("memberLeft").length, 0);
  assert.equal(host.log.ofType("sessionClosed").length, 0);
});

test("while away sends are queued up to queueLimit; pings are refused", async (t) => {
  const { server, proxy, peers } = await setup(t);
  const host = await peers.connect(hostOptions(server.url, "party"));
  const member = await peers.connect(memberOptions(proxy.url, "party", "phone", { queueLimit: 5 }));
  // Let the join's own numbered frames be acknowledged, so the queue starts empty.
  member.client.send({ n: 0 });
  await host.log.waitFor("message", (event) => event.data?.n === 0);
  proxy.pause();
  proxy.cutAll();
  await member.log.waitFor("stateChanged", (event) => event.state === "reconnecting");
  assert.throws(() => member.client.ping(), isThrownKind("not_connected"), "a ping is never queued");
  let taken = 0;
  let refusal;
  for (let n = 1; n <= 10; n += 1) {
    try {
      member.client.send({ n });
      taken += 1;
    } catch (error) {
      refusal = error;
      break;
    }
  }
  assert.ok(refusal instanceof LoudSyncError && refusal.kind === "queue_full", `refusal: ${refusal}`);
  assert.ok(taken >= 1 && taken <= 5, `${taken} sends taken before queue_full`);
  proxy.resume();
  await member.log.waitFor("resumed");
  await host.log.waitFor("message", (event) => event.data?.n === taken);
  assert.deepEqual(numbersFrom(host, member.id), range(0, taken + 1), "the queued sends, once, in order");
});

test("past the server's window the resume is refused (expired) and the member joins afresh", async (t) => {
  const { server, proxy, peers } = await setup(t, ["--resume-window", "500ms"]);
  const host = await peers.connect(hostOptions(server.url, "party"));
  const member = await peers.connect(memberOptions(proxy.url, "party", "phone"));
  const oldId = member.id;
  proxy.pause();
  proxy.cutAll();
  const left = await host.log.waitFor("memberLeft", (event) => event.memberId === oldId);
  assert.equal(left.reason, "timeout");
  proxy.resume();
  const failed = await member.log.waitFor("resumeFailed");
  assert.equal(failed.reason, "expired");
  assert.equal(failed.rejoining, true);
  const welcome = await member.log.waitFor("welcome", (event) => event.clientId !== oldId);
  assert.equal(member.client.clientId(), welcome.clientId);
  assert.equal(member.client.state(), "connected");
  assert.equal(member.client.linkState(), "CONNECTED");
  await host.log.waitFor("memberJoined", (event) => event.member.id === welcome.clientId);
  // The fresh connection is resumable in turn.
  proxy.cutAll();
  await member.log.waitFor("resumed");
  assert.equal(member.client.clientId(), welcome.clientId);
});

test("a killed server restarted on the same port: unknown_token, then a fresh join", async (t) => {
  let server = await startServer(FAST_SERVER_ARGS);
  const set = peers();
  t.after(async () => {
    await set.closeAll();
    await server.stop();
  });
  const port = server.port;
  const host = await set.connect(hostOptions(server.url, "party"));
  const member = await set.connect(memberOptions(server.url, "party", "phone"));
  const oldIds = [host.id, member.id];
  server.kill("SIGKILL"); // no close frame, no session_closed: an unclean drop
  await server.exited;
  await member.log.waitFor("resuming");
  server = await startServer(FAST_SERVER_ARGS, { port });
  for (const peer of [host, member]) {
    const failed = await peer.log.waitFor("resumeFailed");
    assert.equal(failed.reason, "unknown_token");
    assert.equal(failed.rejoining, true);
    await peer.log.waitFor("welcome", (event) => !oldIds.includes(event.clientId));
  }
  assert.equal(host.client.isHost(), true, "the host opened the session again");
  await waitUntil("both tables list both members",
    () => host.client.members().length === 2 && member.client.members().length === 2);
  assert.equal(member.client.hostId(), host.client.clientId());
});

test("a frozen connection: the client's silence timer notices, and it resumes on a new socket", async (t) => {
  const { server, proxy, peers } = await setup(t);
  const host = await peers.connect(hostOptions(server.url, "party"));
  const member = await peers.connect(memberOptions(proxy.url, "party", "phone"));
  const memberId = member.id;
  assert.equal(proxy.freezeAll(), 1);
  const lost = await member.log.waitFor("connectionLost");
  assert.match(lost.reason, /silence/, "the client's own silence detection, not a close");
  await member.log.waitFor("resumed");
  assert.equal(member.client.clientId(), memberId);
  assert.equal(member.client.state(), "connected");
  assert.ok(proxy.accepted() >= 2, "the resume came on a new connection");
  member.client.send({ n: 1 });
  const got = await host.log.waitFor("message", (event) => event.from === memberId);
  assert.deepEqual(got.data, { n: 1 });
  assert.equal(host.log.ofType("memberLeft").length, 0);
});

test("the formal disconnect is a leave: member_left left, no resume", async (t) => {
  const { server, peers } = await setup(t);
  const host = await peers.connect(hostOptions(server.url, "party"));
  const member = await peers.connect(memberOptions(server.url, "party", "phone"));
  const id = member.id;
  member.client.send({ n: 1 });
  await within(member.client.disconnect(), WAIT_MS, "disconnect");
  assert.equal(member.client.state(), "disconnected");
  assert.equal(member.client.linkState(), "DISCONNECTED");
  const left = await host.log.waitFor("memberLeft", (event) => event.memberId === id);
  assert.equal(left.reason, "left");
  assert.deepEqual(numbersFrom(host, id), [1], "what was sent went out before the token");
  for (const type of ["resumed", "resuming", "reconnecting"]) {
    assert.equal(member.log.ofType(type).length, 0, `${type}: ${member.log.types().join(", ")}`);
  }
});
