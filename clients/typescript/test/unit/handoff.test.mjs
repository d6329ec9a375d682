// handoff.test.mjs: the handoff layer's rules on a fake clock (issue 11): the roles and their
// changes, the host and the term, the state from `welcome` and `state` frames (a stale
// term's dropped), the frames each command writes (with the term), the host's request and
// the candidate's prompt with their answers and failures, readiness in the member table,
// `host_changed`'s reordering, a new session's join and its rejoin, and the layer's commands
// queued while resuming.
// Ports, case for case and under the same names (camelCase of the Rust test name):
//   - crates/client/src/machine/handoff_tests.rs (every test; one Rust-only assertion, on
//     the config's `opens_new_session()`, is replaced by what it means: see that test);
//   - the layer's own tests in crates/client/src/handoff.rs (at the end of this file,
//     against dist/esm/handoff.js: `reorder` and `Control.stateFrame`).
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  Rig,
  plainMember,
  plainHost,
  newSessionConfig,
  memberConfig,
  sends,
  decoded,
  seqs,
  emitted,
  roles,
  assertPlainEqual,
  assertHasEvent,
  member,
  numbered,
  handshakeOnSocket,
  rconnectedWith,
  dropAndReopen,
} from "./support.mjs";
import { Control, reorder } from "../../dist/esm/handoff.js";

/** A `welcome` with the handoff layer's fields. */
function welcomeWithState(clientId, host, state, version, term) {
  return {
    type: "welcome",
    timestamp: 1,
    clientId,
    sessionInfo: { id: "s1", name: "S", hostId: host },
    state,
    version,
    term,
  };
}

/** Host `h` (joined at 1), `c1` (2), `c2` (3, ready), `c3` (4). */
function fourMembers() {
  return {
    type: "member_list",
    timestamp: 1,
    members: [
      member("h", "Host", true, 1),
      member("c1", "Phone", false, 2),
      member("c2", "Tablet", false, 3, { handoffReady: true }),
      member("c3", "Tv", false, 4),
    ],
  };
}

/**
 * A plain connection joined as `me` in a session hosted by `h`, at term 1, with
 * `fourMembers`; returns the rig and every action so far.
 */
function joinedAs(config, me) {
  const r = new Rig(config);
  r.m.start(r.now);
  r.m.handleConnected(r.now);
  r.text(welcomeWithState(me, "h", {}, 0, 1));
  r.text(fourMembers());
  return [r, r.drainAll()];
}

function hostChanged(hostId, previousHostId, term, reason) {
  return { type: "host_changed", timestamp: 1, hostId, previousHostId, term, reason };
}

/** The member table as `[id, isHost, handoffReady]` rows (`handoffReady` absent: false). */
function table(r) {
  return r.m.members().map((m) => [m.id, m.isHost, m.handoffReady === true]);
}

const stateFrame = (state, version, term, updatedBy) => ({
  type: "state",
  timestamp: 1,
  state,
  version,
  term,
  updatedBy,
});

/** The id of the pending handoff (`PendingHandoff::handoff_id` in Rust). */
function pendingId(p) {
  if (!p) return null;
  if (p.kind === "started") return p.handoffId;
  if (p.kind === "offered") return p.offer.handoffId;
  return null;
}

test("roles go idle connecting assigned ready and disconnected", () => {
  const r = new Rig(plainMember());
  assert.equal(r.m.role(), "idle");
  r.m.start(r.now);
  assert.deepStrictEqual(roles(r.drainAll()), ["connecting"]);
  r.m.handleConnected(r.now);
  r.text(welcomeWithState("c1", "h", {}, 0, 1));
  let a = r.drainAll();
  assert.deepStrictEqual(roles(a), ["assigned"]);
  assert.equal(r.m.role(), "assigned");
  // Declaring readiness: the frame, and the role.
  r.m.setReady(r.now, true);
  a = r.drainAll();
  assert.deepStrictEqual(decoded(a), [{ type: "handoff_ready", ready: true }], JSON.stringify(a));
  assert.deepStrictEqual(roles(a), ["handoff_ready"]);
  assert.ok(r.m.isReady());
  r.m.setReady(r.now, false);
  a = r.drainAll();
  assert.deepStrictEqual(decoded(a), [{ type: "handoff_ready", ready: false }]);
  assert.deepStrictEqual(roles(a), ["assigned"]);
  // The end.
  r.m.leave(r.now);
  r.m.handleClosed(r.now, { code: 1000, reason: "left" });
  assert.deepStrictEqual(roles(r.drainAll()), ["disconnected"]);
  assert.equal(r.m.role(), "disconnected");
});

test("a plain connection's loss is connecting until the fresh join and failed is disconnected", () => {
  const [r] = joinedAs(plainMember(), "c1");
  r.m.handleClosed(r.now, null);
  const a = r.drainAll();
  assert.deepStrictEqual(roles(a), ["connecting"]);
  assert.equal(r.m.hostId(), null, "the membership is gone");
  // The attempts run out: Disconnected comes before the final `Failed`.
  const all = [];
  for (let i = 0; i < 4; i++) {
    all.push(...r.runUntil(r.elapsed() + 3000));
    if (r.m.isEnded()) break;
    r.m.handleConnectFailed(r.now, "refused");
    all.push(...r.drainAll());
  }
  const ev = emitted(all);
  assert.equal(ev[ev.length - 1]?.type, "failed", JSON.stringify(ev));
  assertHasEvent(ev, { type: "roleChanged", role: "disconnected" });
  assert.equal(r.m.role(), "disconnected");
});

test("welcome carries the state and the term and state frames follow", () => {
  const r = new Rig(plainMember());
  r.m.start(r.now);
  r.m.handleConnected(r.now);
  r.text(welcomeWithState("c1", "h", { track: "a" }, 3, 2));
  const ev = emitted(r.drainAll());
  assertHasEvent(ev, { type: "sessionState", state: { track: "a" }, version: 3, term: 2, updatedBy: null });
  assertPlainEqual(r.m.sessionState(), { state: { track: "a" }, version: 3 });
  assert.equal(r.m.term(), 2);
  assert.equal(r.m.hostId(), "h");
  assert.ok(!r.m.isHost());
  r.text(stateFrame({ track: "b" }, 4, 2, "h"));
  assertPlainEqual(emitted(r.drainAll()), [
    { type: "sessionState", state: { track: "b" }, version: 4, term: 2, updatedBy: "h" },
  ]);
  assertPlainEqual(r.m.sessionState(), { state: { track: "b" }, version: 4 });
});

test("state frames of a term below the highest seen are dropped", () => {
  const [r] = joinedAs(plainMember(), "c1");
  r.text(hostChanged("c2", "h", 2, "handoff"));
  r.drainAll();
  assert.equal(r.m.term(), 2);
  // A frame the former host's term produced (it may be in flight): dropped, unseen.
  r.text(stateFrame({ stale: true }, 7, 1, "h"));
  assert.deepStrictEqual(emitted(r.drainAll()), []);
  assertPlainEqual(r.m.sessionState(), { state: {}, version: 0 });
  // The new host's frame is taken; a higher term than seen is taken too.
  r.text(stateFrame({ x: 1 }, 1, 2, "c2"));
  r.text(stateFrame({ x: 2 }, 2, 3, "c3"));
  assert.equal(emitted(r.drainAll()).length, 2);
  assertPlainEqual(r.m.sessionState(), { state: { x: 2 }, version: 2 });
  assert.equal(r.m.term(), 3);
  // And a host_changed of an older term means nothing.
  r.text(hostChanged("c1", "c2", 2, "handoff"));
  assert.deepStrictEqual(emitted(r.drainAll()), []);
  assert.equal(r.m.hostId(), "c2");
});

test("set state and patch state carry the term and the base version", () => {
  const [r] = joinedAs(plainHost(), "h");
  assert.ok(r.m.isHost());
  r.m.setState(r.now, { track: "a" }, 0);
  r.m.patchState(r.now, { pos: null });
  assert.deepStrictEqual(decoded(r.drainAll()), [
    { type: "state_set", state: { track: "a" }, baseVersion: 0, term: 1 },
    { type: "state_set", patch: { pos: null }, term: 1 },
  ]);
  // The confirmation is the state frame every member gets.
  r.text(stateFrame({ track: "a" }, 1, 1, "h"));
  r.drainAll();
  assert.equal(r.m.sessionState().version, 1);
  // After a term change, the sets carry the new term.
  r.text(hostChanged("h", "c2", 5, "host_lost"));
  r.drainAll();
  r.m.setState(r.now, {});
  const wire = sends(r.drainAll());
  assert.equal(wire[0].term, 5, JSON.stringify(wire));
  assert.ok(!("baseVersion" in wire[0]), JSON.stringify(wire));
});

test("a host's request is pending while it stays assigned and it becomes ready after handing over", () => {
  const [r] = joinedAs(plainHost(), "h");
  r.m.requestHandoff(r.now);
  const a = r.drainAll();
  assert.deepStrictEqual(decoded(a), [{ type: "handoff_request" }]);
  assertPlainEqual(r.m.pendingHandoff(), { kind: "requested", targetId: null });
  assert.equal(r.m.role(), "assigned", "a host is never Handoff-Ready");
  r.text({ type: "handoff_started", timestamp: 1, handoffId: "h1", targetId: "c2" });
  assertPlainEqual(emitted(r.drainAll()), [{ type: "handoffStarted", handoffId: "h1", targetId: "c2" }]);
  assertPlainEqual(r.m.pendingHandoff(), { kind: "started", handoffId: "h1", targetId: "c2" });
  // A second request meanwhile: `busy` leaves the started one alone.
  r.m.requestHandoff(r.now, "c3");
  r.text({ type: "handoff_failed", timestamp: 1, reason: "busy" });
  assertPlainEqual(emitted(r.drainAll()), [
    { type: "handoffFailed", reason: "busy", handoffId: null, targetId: null },
  ]);
  assert.equal(pendingId(r.m.pendingHandoff()), "h1");
  // Accepted: the ack, then host_changed makes this client a ready member.
  r.text({ type: "handoff_ack", timestamp: 1, handoffId: "h1", hostId: "c2", term: 2 });
  r.text(hostChanged("c2", "h", 2, "handoff"));
  assertPlainEqual(emitted(r.drainAll()), [
    { type: "handoffAcknowledged", handoffId: "h1", hostId: "c2", term: 2 },
    { type: "hostChanged", hostId: "c2", previousHostId: "h", term: 2, reason: "handoff" },
    { type: "roleChanged", role: "handoff_ready" },
  ]);
  assert.ok(!r.m.isHost());
  assert.equal(r.m.hostId(), "c2");
  assert.equal(r.m.session()?.hostId, "c2");
  assert.equal(r.m.term(), 2);
  assert.equal(r.m.pendingHandoff(), null);
  assert.ok(r.m.isReady());
  assert.deepStrictEqual(table(r), [
    ["c2", true, false],
    ["h", false, true],
    ["c1", false, false],
    ["c3", false, false],
  ]);
});

test("handoff failures end the request they name", () => {
  const [r] = joinedAs(plainHost(), "h");
  // No candidate: answered at once, nothing pending.
  r.m.requestHandoff(r.now, "nobody");
  r.text({ type: "handoff_failed", timestamp: 1, reason: "no_candidate" });
  r.drainAll();
  assert.equal(r.m.pendingHandoff(), null);
  for (const reason of ["declined", "timeout", "candidate_left"]) {
    r.m.requestHandoff(r.now, "c1");
    r.text({ type: "handoff_started", timestamp: 1, handoffId: "h2", targetId: "c1" });
    // A failure naming another request changes nothing.
    r.text({ type: "handoff_failed", timestamp: 1, reason, handoffId: "h1", targetId: "c1" });
    r.drainAll();
    assert.notEqual(r.m.pendingHandoff(), null, reason);
    r.text({ type: "handoff_failed", timestamp: 1, reason, handoffId: "h2", targetId: "c1" });
    const ev = emitted(r.drainAll());
    assert.ok(
      ev.length === 1 && ev[0].type === "handoffFailed" && ev[0].handoffId === "h2" && ev[0].targetId === "c1",
      `${reason}: ${JSON.stringify(ev)}`,
    );
    assert.equal(r.m.pendingHandoff(), null, reason);
    assert.ok(r.m.isHost() && r.m.role() === "assigned" && r.m.term() === 1);
  }
});

test("the candidate gets the prompt with the state and its answers are written", () => {
  const [r] = joinedAs(plainMember(), "c1");
  const prompt = {
    type: "handoff_request",
    timestamp: 1,
    handoffId: "h1",
    fromId: "h",
    state: { track: "a" },
    version: 4,
    term: 1,
    timeoutMs: 10000,
  };
  r.text(prompt);
  const offer = { handoffId: "h1", fromId: "h", state: { track: "a" }, version: 4, term: 1, timeoutMs: 10000 };
  assertPlainEqual(emitted(r.drainAll()), [{ type: "handoffRequested", ...offer }]);
  assertPlainEqual(r.m.pendingHandoff(), { kind: "offered", offer });
  // Decline: the frame with its reason; the prompt is answered.
  r.m.declineHandoff(r.now, "h1", "driving");
  assert.deepStrictEqual(decoded(r.drainAll()), [{ type: "handoff_decline", handoffId: "h1", reason: "driving" }]);
  assert.equal(r.m.pendingHandoff(), null);
  // A second prompt that expires: the candidate's `handoff_failed` ends it.
  r.text(prompt);
  r.text({ type: "handoff_failed", timestamp: 1, reason: "timeout", handoffId: "h1" });
  r.drainAll();
  assert.equal(r.m.pendingHandoff(), null);
  // A third, accepted: this member becomes host, its readiness cleared.
  r.m.setReady(r.now, true);
  r.text(prompt);
  r.m.acceptHandoff(r.now, "h1");
  let a = r.drainAll();
  assert.deepStrictEqual(decoded(a), [
    { type: "handoff_ready", ready: true },
    { type: "handoff_accept", handoffId: "h1" },
  ]);
  assert.equal(r.m.role(), "handoff_ready");
  r.text(hostChanged("c1", "h", 2, "handoff"));
  a = r.drainAll();
  assert.deepStrictEqual(roles(a), ["assigned"]);
  assert.ok(r.m.isHost() && !r.m.isReady());
  assert.deepStrictEqual(table(r), [
    ["c1", true, false],
    ["h", false, true],
    ["c2", false, true],
    ["c3", false, false],
  ]);
  // As host now, its sets carry the new term.
  r.m.setState(r.now, { track: "b" }, 4);
  assert.equal(sends(r.drainAll())[0].term, 2);
});

test("host changed for others reorders the table and host lost sets no readiness", () => {
  const [r] = joinedAs(plainMember(), "c1");
  // A handoff between others: the old host keeps its join-order place, ready.
  r.text(hostChanged("c3", "h", 2, "handoff"));
  const a = r.drainAll();
  assert.deepStrictEqual(roles(a), [], "this member's role did not change");
  assert.deepStrictEqual(table(r), [
    ["c3", true, false],
    ["h", false, true],
    ["c1", false, false],
    ["c2", false, true],
  ]);
  // The host is lost: member_left first, then host_changed host_lost (no readiness set).
  r.text({ type: "member_left", timestamp: 1, memberId: "c3", reason: "timeout" });
  r.text(hostChanged("c2", "c3", 3, "host_lost"));
  assertHasEvent(emitted(r.drainAll()), {
    type: "hostChanged",
    hostId: "c2",
    previousHostId: "c3",
    term: 3,
    reason: "host_lost",
  });
  assert.deepStrictEqual(table(r), [
    ["c2", true, false],
    ["h", false, true],
    ["c1", false, false],
  ]);
  assert.deepStrictEqual([r.m.hostId(), r.m.term()], ["c2", 3]);
});

test("readiness shows in the own entry of the member table", () => {
  const [r] = joinedAs(plainMember(), "c1");
  r.m.setReady(r.now, true);
  r.drainAll();
  assert.ok(table(r).some((row) => JSON.stringify(row) === '["c1",false,true]'), JSON.stringify(table(r)));
  // A fresh member list (the server may not have processed it yet) keeps showing it.
  r.text(fourMembers());
  r.drainAll();
  assert.ok(table(r).some((row) => JSON.stringify(row) === '["c1",false,true]'), JSON.stringify(table(r)));
  // Others' readiness arrives as member_updated.
  r.text({ type: "member_updated", timestamp: 1, member: member("c3", "Tv", false, 4, { handoffReady: true }) });
  r.drainAll();
  assert.ok(table(r).some((row) => JSON.stringify(row) === '["c3",false,true]'), JSON.stringify(table(r)));
});

test("a new session joins without an id and rejoins the assigned one", () => {
  const r = new Rig(newSessionConfig({ resume: false }));
  // Rust also asserts `config.opens_new_session()`, a method of the Rust config type; the
  // TypeScript config is a plain object, so what it means is asserted instead: no id yet.
  assert.equal(r.m.sessionId(), null);
  r.m.start(r.now);
  r.m.handleConnected(r.now);
  let join = sends(r.drainAll())[0];
  assert.equal(join.type, "join");
  assert.ok(!("sessionId" in join), JSON.stringify(join));
  assert.equal(join.deviceInfo.type, "host");
  r.text({
    type: "welcome",
    timestamp: 1,
    clientId: "h",
    sessionInfo: { id: "A1B2C3", name: "Party", hostId: "h" },
    state: {},
    version: 0,
    term: 1,
  });
  r.drainAll();
  assert.equal(r.m.sessionId(), "A1B2C3");
  assert.ok(r.m.isHost());
  // The server goes away (1001): the host rejoins, naming the assigned code.
  r.m.handleClosed(r.now, { code: 1001, reason: "going away" });
  r.drainAll();
  assert.equal(r.m.sessionId(), "A1B2C3", "kept while away");
  r.runUntil(3000);
  r.m.handleConnected(r.now);
  join = sends(r.drainAll())[0];
  assert.equal(join.sessionId, "A1B2C3", JSON.stringify(join));
});

test("a host that handed over rejoins as a member and a member that took over is the host", () => {
  // The old host: a plain connection's loss is a member's (reconnect), as `client`.
  let [r] = joinedAs(plainHost(), "h");
  r.text(hostChanged("c2", "h", 2, "handoff"));
  r.drainAll();
  r.m.handleClosed(r.now, null);
  let ev = emitted(r.drainAll());
  assert.ok(!ev.some((e) => e.type === "sessionClosed"), JSON.stringify(ev));
  r.runUntil(3000);
  r.m.handleConnected(r.now);
  const join = sends(r.drainAll())[0];
  assert.equal(join.deviceInfo.type, "client", JSON.stringify(join));
  // Rejoined as a member: it re-declares the readiness it had (the old host's).
  r.text(welcomeWithState("c9", "c2", {}, 0, 2));
  const a = r.drainAll();
  assert.deepStrictEqual(decoded(a), [{ type: "handoff_ready", ready: true }], JSON.stringify(a));
  assert.equal(r.m.role(), "handoff_ready");

  // The member that took over: its plain connection's loss is a host's (the session
  // ended with it, or passed on): no rejoin.
  [r] = joinedAs(plainMember(), "c1");
  r.text(hostChanged("c1", "h", 2, "handoff"));
  r.drainAll();
  r.m.handleClosed(r.now, null);
  ev = emitted(r.drainAll());
  assert.ok(ev.some((e) => e.type === "sessionClosed"), JSON.stringify(ev));
  assert.ok(r.m.isEnded());
  assert.equal(r.m.role(), "disconnected");
});

test("while resuming the role stays and the layer's commands are queued then sent numbered", () => {
  const [r] = rconnectedWith(memberConfig());
  r.m.setReady(r.now, true);
  assert.deepStrictEqual(seqs(r.drain()), [[1, "handoff_ready"]]);
  const [a] = dropAndReopen(r);
  assert.deepStrictEqual(roles(a), [], "the server holds the place and its role");
  assert.equal(r.m.role(), "handoff_ready");
  assert.equal(r.m.state(), "reconnecting");
  // Queued while away, behind the unacknowledged readiness.
  r.m.setReady(r.now, false);
  r.m.acceptHandoff(r.now, "h1");
  r.m.declineHandoff(r.now, "h2");
  r.m.requestHandoff(r.now);
  r.m.setState(r.now, { a: 1 });
  assert.deepStrictEqual(seqs(r.drain()), [], "nothing on the socket before the resume");
  r.text({ type: "resumed", timestamp: 1, lastSeq: 0, replayed: 0 });
  const back = r.drainAll();
  assert.deepStrictEqual(seqs(back), [
    [1, "handoff_ready"],
    [2, "handoff_ready"],
    [3, "handoff_accept"],
    [4, "handoff_decline"],
    [5, "handoff_request"],
    [6, "state_set"],
  ]);
  assert.equal(r.m.role(), "assigned");
  // Replayed server frames of this layer are handled as usual, duplicates dropped.
  const state = stateFrame({ a: 1 }, 1, 1, "h");
  r.text(numbered(2, state));
  r.text(numbered(2, state));
  const states = emitted(r.drainAll()).filter((e) => e.type === "sessionState").length;
  assert.equal(states, 1);
});

test("a refused resume is connecting then a fresh join re-declares readiness", () => {
  const [r] = rconnectedWith(memberConfig());
  r.m.setReady(r.now, true);
  r.drain();
  dropAndReopen(r);
  r.text({ type: "resume_failed", timestamp: 1, reason: "expired" });
  const failed = r.drainAll();
  assert.deepStrictEqual(roles(failed), ["connecting"]);
  const [, joined] = handshakeOnSocket(r, failed, "c2");
  assert.equal(r.m.role(), "handoff_ready");
  const afterWelcome = seqs(joined).filter(([s]) => s !== null);
  assert.deepStrictEqual(afterWelcome, [[1, "handoff_ready"]]);
});

test("the snapshot getters follow the frames", () => {
  const [r] = joinedAs(plainMember(), "c1");
  let generation = r.m.generation();
  r.text(stateFrame({ k: "v" }, 1, 1, "h"));
  r.drainAll();
  assert.notEqual(r.m.generation(), generation, "the driver republishes");
  generation = r.m.generation();
  r.text(hostChanged("c2", "h", 2, "handoff"));
  r.drainAll();
  assert.notEqual(r.m.generation(), generation);
});

test("the first host joining a session created over http is the host", () => {
  const r = new Rig(plainMember());
  r.m.start(r.now);
  r.m.handleConnected(r.now);
  r.text({
    type: "welcome",
    timestamp: 1,
    clientId: "c1",
    sessionInfo: { id: "s1", name: "S", hostId: null },
    state: {},
    version: 0,
    term: 1,
  });
  r.drainAll();
  assert.equal(r.m.hostId(), null);
  r.text({ type: "member_joined", timestamp: 1, member: member("h", "Host", true, 5) });
  r.drainAll();
  assert.equal(r.m.hostId(), "h");
  assert.equal(r.m.session()?.hostId, "h");
});

// ---- crates/client/src/handoff.rs's own tests: the bookkeeping, without the machine.

test("a handoff puts the new host first and the old one back in join order", () => {
  const row = (id, isHost, joinedAt, handoffReady) => ({
    id,
    name: id,
    isHost,
    connectionStatus: "connected",
    joinedAt,
    handoffReady,
  });
  const members = [row("h", true, 1, false), row("a", false, 1, false), row("b", false, 3, true), row("c", false, 4, false)];
  reorder(members, "b", "h", "handoff");
  assert.deepStrictEqual(
    members.map((m) => [m.id, m.isHost, m.handoffReady]),
    [
      ["b", true, false],
      ["h", false, true],
      ["a", false, false],
      ["c", false, false],
    ],
  );
});

test("a stale term is refused and an equal one taken", () => {
  const c = new Control();
  c.term = 3;
  assert.ok(!c.stateFrame({ x: 1 }, 9, 2));
  assert.equal(c.version, 0);
  assert.ok(c.stateFrame({ x: 1 }, 9, 3));
  assert.deepStrictEqual([c.version, c.term], [9, 3]);
});

test("an application that edits an event's state does not edit the machine's", () => {
  // The Rust events own their values; here a listener writing into `event.state` (a reducer
  // that mutates, say) must not change what sessionState() and pendingHandoff() say.
  const r = new Rig(plainMember());
  r.m.start(r.now);
  r.m.handleConnected(r.now);
  r.text(welcomeWithState("c1", "h", { score: 1, nested: { a: 1 } }, 1, 1));
  r.text({ type: "state", timestamp: 1, state: { score: 2, nested: { a: 2 } }, version: 2, term: 1, updatedBy: "h" });
  r.text({
    type: "handoff_request",
    timestamp: 1,
    handoffId: "x1",
    fromId: "h",
    state: { score: 2, nested: { a: 2 } },
    version: 2,
    term: 1,
    timeoutMs: 5000,
  });
  const events = emitted(r.drain());
  for (const e of events) {
    if (e.type === "sessionState" || e.type === "handoffRequested") {
      e.state.score = 99;
      e.state.nested.a = 99;
    }
  }
  assert.equal(events.filter((e) => e.type === "sessionState").length, 2);
  assert.deepStrictEqual(r.m.sessionState(), { state: { score: 2, nested: { a: 2 } }, version: 2 });
  assert.deepStrictEqual(r.m.pendingHandoff().offer.state, { score: 2, nested: { a: 2 } });
});
