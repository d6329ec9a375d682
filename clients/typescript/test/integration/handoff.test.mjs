// handoff.test.mjs: the SDK's session state and handoff layer against a real `loudsync serve`
// on loopback (--handoff-timeout 2s): the host sets the state and a joiner's welcome carries
// it; a member declares itself ready; a first handoff request is declined (host and term
// unchanged); a second is accepted: handoffAcknowledged, then hostChanged on both sides with
// term + 1, the state carried; the old host is fenced; set and patch with a stale base
// version get `error` `stale_version` and change nothing.
// Run: `npm run build && node --test --test-concurrency=1 test/integration/handoff.test.mjs`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startServer, FAST_SERVER_ARGS, waitUntil } from "../support/server.mjs";
import { peers, hostOptions, memberOptions } from "../support/peers.mjs";

/** A server with fast timers and a peer set, torn down after the test. */
async function setup(t, args = []) {
  const server = await startServer([...FAST_SERVER_ARGS, ...args]);
  const set = peers();
  t.after(async () => {
    await set.closeAll();
    await server.stop();
  });
  return { server, peers: set };
}

/** (id, isHost, handoffReady) of every row of a table, in order. */
const table = (client) => client.members().map((m) => [m.id, m.isHost, m.handoffReady === true]);

test("a full handoff between two clients: decline, then accept; term + 1, the state carried", async (t) => {
  const { server, peers } = await setup(t);
  const host = await peers.connect(hostOptions(server.url, "party"));
  const hostId = host.id;
  assert.equal(host.client.isHost(), true);
  assert.equal(host.client.role(), "assigned");
  assert.equal(host.client.term(), 1);

  // The host sets the state; its own `state` frame confirms it.
  host.client.setState({ track: "Blue in Green", pos: 0 }, 0);
  const confirmed = await host.log.waitFor("sessionState", (event) => event.version === 1);
  assert.deepEqual(confirmed.state, { pos: 0, track: "Blue in Green" });
  assert.equal(confirmed.term, 1);
  assert.equal(confirmed.updatedBy, hostId);
  assert.deepEqual(host.client.sessionState(), { state: { pos: 0, track: "Blue in Green" }, version: 1 });

  // A member joins: its welcome carries the state, version and term.
  const member = await peers.connect(memberOptions(server.url, "party", "phone"));
  const memberId = member.id;
  assert.deepEqual(member.client.sessionState(), { state: { pos: 0, track: "Blue in Green" }, version: 1 });
  assert.equal(member.client.term(), 1);
  assert.equal(member.client.hostId(), hostId);
  assert.equal(member.client.isHost(), false);

  // It declares itself ready; the host sees it in its table.
  member.client.setReady(true);
  await member.log.waitFor("roleChanged", (event) => event.role === "handoff_ready");
  assert.equal(member.client.role(), "handoff_ready");
  await host.log.waitFor("memberUpdated", (event) => event.member.id === memberId && event.member.handoffReady === true);

  // A first request, declined: the host keeps control.
  host.client.requestHandoff();
  const first = await member.log.waitFor("handoffRequested");
  assert.equal(first.fromId, hostId);
  const started1 = await host.log.waitFor("handoffStarted", (event) => event.handoffId === first.handoffId);
  assert.equal(started1.targetId, memberId);
  member.client.declineHandoff(first.handoffId, "not now");
  const failed = await host.log.waitFor("handoffFailed");
  assert.deepEqual(
    { reason: failed.reason, handoffId: failed.handoffId, targetId: failed.targetId },
    { reason: "declined", handoffId: first.handoffId, targetId: memberId });
  await waitUntil("the declined request is over", () => host.client.pendingHandoff() === null);
  assert.equal(host.client.isHost(), true);
  assert.equal(host.client.term(), 1);
  assert.equal(member.log.ofType("hostChanged").length, 0);

  // The second, to the same ready member, accepted.
  host.client.requestHandoff(memberId);
  const started = await host.log.waitFor("handoffStarted", (event) => event.handoffId !== first.handoffId);
  assert.equal(started.targetId, memberId);
  assert.equal(host.client.pendingHandoff()?.kind, "started");
  const prompt = await member.log.waitFor("handoffRequested", (event) => event.handoffId === started.handoffId);
  assert.deepEqual(
    { fromId: prompt.fromId, state: prompt.state, version: prompt.version, term: prompt.term, timeoutMs: prompt.timeoutMs },
    { fromId: hostId, state: { pos: 0, track: "Blue in Green" }, version: 1, term: 1, timeoutMs: 2000 });
  const offered = member.client.pendingHandoff();
  assert.equal(offered?.kind, "offered");
  assert.equal(offered.offer.handoffId, started.handoffId);
  member.client.acceptHandoff(started.handoffId);

  // The old host is acknowledged, then both see host_changed with term 2.
  const ack = await host.log.waitFor("handoffAcknowledged");
  assert.deepEqual({ handoffId: ack.handoffId, hostId: ack.hostId, term: ack.term },
    { handoffId: started.handoffId, hostId: memberId, term: 2 });
  for (const peer of [host, member]) {
    const changed = await peer.log.waitFor("hostChanged");
    assert.deepEqual(changed, { type: "hostChanged", hostId: memberId, previousHostId: hostId, term: 2, reason: "handoff" });
  }
  const hostTypes = host.log.types();
  assert.ok(hostTypes.indexOf("handoffAcknowledged") < hostTypes.indexOf("hostChanged"), hostTypes.join(", "));

  // Roles, host, term, the state and the tables on both sides.
  assert.equal(member.client.isHost(), true);
  assert.equal(member.client.role(), "assigned");
  assert.equal(member.client.pendingHandoff(), null);
  assert.equal(host.client.isHost(), false);
  assert.equal(host.client.role(), "handoff_ready", "the old host is ready at once");
  for (const peer of [host, member]) {
    assert.equal(peer.client.term(), 2);
    assert.equal(peer.client.hostId(), memberId);
    assert.deepEqual(peer.client.sessionState(), { state: { pos: 0, track: "Blue in Green" }, version: 1 });
    assert.deepEqual(table(peer.client), [[memberId, true, false], [hostId, false, true]]);
  }

  // The new host patches the state; the old host gets it with term 2.
  member.client.patchState({ pos: 42 }, 1);
  const patched = await host.log.waitFor("sessionState", (event) => event.version === 2);
  assert.deepEqual({ state: patched.state, term: patched.term, updatedBy: patched.updatedBy },
    { state: { pos: 42, track: "Blue in Green" }, term: 2, updatedBy: memberId });

  // The old host is fenced: its set is refused and nothing changes.
  host.client.setState({ track: "So What" });
  const refusal = await host.log.waitFor("error", (event) => ["unauthorized", "stale_term"].includes(event.error.code));
  assert.equal(refusal.error.details.hostId, memberId);
  assert.equal(refusal.error.details.term, 2);
  member.client.patchState({ pos: 43 }, 2);
  const next = await host.log.waitFor("sessionState", (event) => event.version === 3);
  assert.deepEqual(next.state, { pos: 43, track: "Blue in Green" }, "the fenced set changed nothing");
});

test("set and patch with a stale base version: error stale_version, nothing changes", async (t) => {
  const { server, peers } = await setup(t);
  const host = await peers.connect(hostOptions(server.url, "party"));
  const member = await peers.connect(memberOptions(server.url, "party", "phone"));
  host.client.setState({ a: 1 }, 0);
  await member.log.waitFor("sessionState", (event) => event.version === 1);
  host.client.setState({ a: 2 }, 0);
  const stale = await host.log.waitFor("error", (event) => event.error.code === "stale_version");
  assert.deepEqual(stale.error.details, { currentVersion: 1 });
  assert.match(stale.error.message, /baseVersion 0 is not the current version 1/);
  host.client.patchState({ b: 1 }, 0);
  await waitUntil("a second stale_version", () =>
    host.log.ofType("error").filter((event) => event.error.code === "stale_version").length === 2);
  // Unconditional, then right-version changes still apply, in order.
  host.client.patchState({ b: 2 }, 1);
  const applied = await member.log.waitFor("sessionState", (event) => event.version === 2);
  assert.deepEqual(applied.state, { a: 1, b: 2 }, "the refused changes left no trace");
  const versionsSeen = member.log.ofType("sessionState").map((event) => event.version).filter((v) => v > 0);
  assert.deepEqual(versionsSeen, [1, 2], "one state frame per accepted change, none for the refused");
  await host.log.waitFor("sessionState", (event) => event.version === 2); // the host's own confirmation
  assert.deepEqual(host.client.sessionState(), { state: { a: 1, b: 2 }, version: 2 });
  assert.equal(member.log.ofType("error").length, 0, "only the sender gets the error");
  // A member may not set the state at all.
  member.client.setState({ mine: true });
  const unauthorized = await member.log.waitFor("error");
  assert.equal(unauthorized.error.code, "unauthorized");
});
