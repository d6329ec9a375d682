// pairing.test.mjs: unit tests of the pairing layer on a fake clock. The first part ports
// crates/client/src/pairing/tests.rs case for case (every state transition, metastate change
// and timer of the CrSocket machine, with `now` a number of ms moved by hand); the second
// ports the driver's own tests (crates/client/src/pairing/driver.rs: the endpoint, settings
// refused, the token kept out of what is shown, the cr_event frame) and drives a
// PairingClient over a fake WebSocket (no network, no timers waited for): the identify, the
// welcome's order of updates, events in and out, an abort, a retry, a drop, close.
import { test, afterEach } from "node:test";
import assert from "node:assert/strict";
import {
  CrSocket,
  PairingClient,
  PairingError,
  pairingEndpoint,
  pairingEventFrame,
  CR_PING as PING,
  CR_UNASSIGN as UNASSIGN,
  CR_INACTIVE as INACTIVE,
  CR_REJECT as REJECT,
  CR_ASSIGNED_TO_OTHER as ASSIGNED_TO_OTHER,
  CR_NOT_PAIRED as NOT_PAIRED,
  CR_APP_ID_MISMATCH as APP_ID_MISMATCH,
  CR_INVALID_PARTNER_ROLE as INVALID_PARTNER_ROLE,
} from "../../dist/esm/index.js";

const ME = "111111";
const A = "222222";
const B = "333333";

const s = (n) => n * 1000;
const ms = (n) => n;

/** A start time with room before it (the helpers set things up shortly before `t0`). */
const base = () => 100_000;

const config = (role, extra = {}) => ({ role, clientId: ME, accessToken: "tok", ...extra });
const ev = (sender, eventType, subType = "") => ({ sender, eventType, subType, params: [] });
const out = (recipient, eventType, subType = "") => ({ recipient, eventType, subType, params: [] });

const stateChanged = (state) => ({ type: "stateChanged", state });
const metastatesChanged = (metastates) => ({ type: "metastatesChanged", metastates });
const partnerChanged = (partner) => ({ type: "partnerChanged", partner });
const clientIdChanged = (clientId) => ({ type: "clientIdChanged", clientId });
const rejected = (partner, subType) => ({ type: "rejected", partner, subType });

const M_NONE = { active: false, connected: false, paired: false };
const M_ACTIVE = { active: true, connected: false, paired: false };
const M_CONNECTED = { active: true, connected: true, paired: false };
const M_PAIRED = { active: true, connected: true, paired: true };

function events(c) {
  const all = [];
  for (let e = c.pollEvent(); e !== undefined; e = c.pollEvent()) all.push(e);
  return all;
}

function sent(c) {
  const all = [];
  for (let e = c.pollTransmit(); e !== undefined; e = c.pollTransmit()) all.push(e);
  return all;
}

const states = (c) => events(c).filter((e) => e.type === "stateChanged").map((e) => e.state);

/** Fires every timeout up to `until`; returns what was sent, with its time since `t0`. */
function runUntil(c, t0, until) {
  const log = [];
  for (let at = c.pollTimeout(); at !== undefined && at <= until; at = c.pollTimeout()) {
    c.handleTimeout(at);
    for (const e of sent(c)) log.push([at - t0, e]);
  }
  return log;
}

const pings = (log) => log.filter(([, e]) => e.eventType === PING).map(([t]) => t);

/** A socket of `role`, connected at `t0`, its events and transmits drained. */
function connected(role, t0) {
  const c = new CrSocket(config(role));
  c.setActive(t0, true);
  c.handleConnected(t0, ME);
  assert.equal(c.state(), "readyToPair");
  events(c);
  sent(c);
  return c;
}

/** A controller paired with A and interacting at `t0` (A pinged it), drained. */
function interactingController(t0) {
  const c = connected("controller", t0 - s(2));
  c.assignPartner(t0 - s(2), A);
  c.handleEvent(t0, ev(A, PING));
  assert.equal(c.state(), "interacting");
  assert.deepEqual(c.pollTransmit(), out(A, PING));
  assert.deepEqual(c.pollTransmit(), out(A, PING), "interacting's ping");
  events(c);
  sent(c);
  return c;
}

/** Asserts that `fn` throws a PairingError of `kind` (and, if given, `state`). */
function throwsKind(fn, kind, state) {
  assert.throws(fn, (e) => {
    assert.ok(e instanceof PairingError, `not a PairingError: ${e}`);
    assert.equal(e.kind, kind, e.message);
    if (state !== undefined) assert.equal(e.state, state);
    return true;
  });
}

// ---- passive, readyToConnect, connecting --------------------------------------------------

test("passive until the app is active and has a client id", () => {
  const t0 = base();
  const c = new CrSocket({ role: "controller", accessToken: "tok" });
  assert.equal(c.state(), "passive");
  assert.deepEqual(c.metastates(), M_NONE);
  c.setActive(t0, true);
  assert.equal(c.state(), "passive", "no client id yet");
  assert.deepEqual(events(c), []);
  c.setClientId(t0, ME);
  assert.deepEqual(events(c), [clientIdChanged(ME), stateChanged("connecting"), metastatesChanged(M_ACTIVE)]);
  c.setClientId(t0, null);
  assert.equal(c.state(), "passive");
  assert.deepEqual(events(c), [stateChanged("passive"), metastatesChanged(M_NONE)]);
});

test("readyToConnect without a token and connecting once it is given", () => {
  const t0 = base();
  const c = new CrSocket({ role: "responder", clientId: ME });
  c.setActive(t0, true);
  assert.deepEqual(events(c), [stateChanged("readyToConnect"), metastatesChanged(M_ACTIVE)]);
  c.setAccessToken(t0, "tok");
  assert.equal(c.state(), "connecting");
  // Same metastates: only the state is told.
  assert.deepEqual(events(c), [stateChanged("connecting")]);
  c.setAccessToken(t0, null);
  assert.equal(c.state(), "readyToConnect");
});

test("connecting then connected is readyToPair", () => {
  const t0 = base();
  const c = new CrSocket(config("controller"));
  c.setActive(t0, true);
  assert.equal(c.state(), "connecting");
  events(c);
  c.handleConnected(t0, ME);
  assert.deepEqual(events(c), [stateChanged("readyToPair"), metastatesChanged(M_CONNECTED)]);
  assert.deepEqual(sent(c), [], "no partner: nothing to ping");
  assert.equal(c.pollTimeout(), undefined);
});

test("connected is ignored unless connecting", () => {
  const t0 = base();
  const c = new CrSocket(config("controller"));
  c.handleConnected(t0, ME);
  assert.equal(c.state(), "passive");
  c.setActive(t0, true);
  c.handleAborted(t0, "notAuthorized");
  c.handleConnected(t0, ME);
  assert.equal(c.state(), "readyToConnect", "a stale welcome after an abort");
});

test("the server's client id replaces the own one", () => {
  const t0 = base();
  const c = new CrSocket(config("responder"));
  c.setActive(t0, true);
  events(c);
  c.handleConnected(t0, "000042");
  assert.equal(c.clientId(), "000042");
  assert.deepEqual(events(c)[0], clientIdChanged("000042"));
});

test("an abort holds readyToConnect until retry, a new token or a passive cycle", () => {
  const t0 = base();
  const c = connected("controller", t0);
  c.handleAborted(t0, "releasedByOther");
  assert.equal(c.state(), "readyToConnect");
  assert.equal(c.aborted(), "releasedByOther");
  assert.deepEqual(events(c), [stateChanged("readyToConnect"), metastatesChanged(M_ACTIVE)]);
  c.retry(t0);
  assert.equal(c.state(), "connecting");
  c.handleAborted(t0, "notAuthorized");
  c.setAccessToken(t0, "other");
  assert.equal(c.state(), "connecting", "a new token tries again");
  c.handleAborted(t0, "clientNotAlive");
  c.setActive(t0, false);
  c.setActive(t0, true);
  assert.equal(c.state(), "connecting", "a passive/active cycle tries again");
  assert.equal(c.aborted(), null);
});

test("going passive from any active state is passive", () => {
  const t0 = base();
  for (let setup = 0; setup < 4; setup++) {
    const c = new CrSocket(config("controller"));
    c.setActive(t0, true);
    if (setup === 0) c.setAccessToken(t0, null);
    else if (setup === 2) c.handleConnected(t0, ME);
    else if (setup === 3) {
      c.handleConnected(t0, ME);
      c.assignPartner(t0, A);
    }
    events(c);
    c.setActive(t0, false);
    assert.equal(c.state(), "passive", `setup ${setup}`);
    assert.deepEqual(
      events(c).filter((e) => e.type === "metastatesChanged"),
      [metastatesChanged(M_NONE)],
    );
    c.setActive(t0, true);
    assert.equal(c.state(), setup === 0 ? "readyToConnect" : "connecting", "passive dropped the connection");
  }
});

// ---- readyToPair, searching, interacting; pings ------------------------------------------

test("a controller assigned a partner searches and pings at once, then every 5 s", () => {
  const t0 = base();
  const c = connected("controller", t0);
  c.assignPartner(t0, A);
  assert.deepEqual(events(c), [partnerChanged(A), stateChanged("searching"), metastatesChanged(M_PAIRED)]);
  assert.deepEqual(sent(c), [out(A, PING)]);
  assert.equal(c.pollTimeout(), t0 + s(5));
  const log = runUntil(c, t0, t0 + s(21));
  assert.deepEqual(pings(log), [s(5), s(10), s(15), s(20)]);
  assert.equal(c.state(), "searching");
});

test("a partner event moves searching to interacting with a ping, then every 10 s", () => {
  const t0 = base();
  const c = connected("controller", t0);
  c.assignPartner(t0, A);
  sent(c);
  events(c);
  c.handleEvent(t0 + s(2), ev(A, PING));
  assert.equal(c.state(), "interacting");
  // Paired both times: the metastates do not change.
  assert.deepEqual(events(c), [stateChanged("interacting")]);
  assert.deepEqual(sent(c), [out(A, PING)]);
  // Keep the partner alive with an event every 20 s; the pings stay 10 s apart.
  const log = runUntil(c, t0, t0 + s(20));
  c.handleEvent(t0 + s(20), ev(A, "tap"));
  log.push(...runUntil(c, t0, t0 + s(33)));
  assert.deepEqual(pings(log), [s(12), s(22), s(32)]);
  assert.equal(c.state(), "interacting");
});

test("the partner is active for 25 s after its last event", () => {
  const t0 = base();
  const c = interactingController(t0);
  c.handleTimeout(t0 + s(25) - ms(1));
  assert.equal(c.state(), "interacting");
  // An event at 10 s carries it to 35 s.
  c.handleEvent(t0 + s(10), ev(A, "tap"));
  runUntil(c, t0, t0 + s(35) - ms(1));
  assert.equal(c.state(), "interacting");
  assert.equal(c.pollTimeout(), t0 + s(35), "the partner's deadline");
  events(c);
  c.handleTimeout(t0 + s(35));
  assert.equal(c.state(), "searching");
  assert.deepEqual(events(c), [stateChanged("searching")]);
});

test("interacting to searching restarts the 5 s ping sequence without a ping at once", () => {
  const t0 = base();
  const c = interactingController(t0);
  let log = runUntil(c, t0, t0 + s(25));
  assert.equal(c.state(), "searching");
  assert.deepEqual(pings(log), [s(10), s(20)], "none at 25 s");
  log = runUntil(c, t0, t0 + s(36));
  assert.deepEqual(pings(log), [s(30), s(35)]);
});

test("a responder auto-pairs with the first controller that pings it", () => {
  const t0 = base();
  const r = connected("responder", t0);
  r.handleEvent(t0, ev(A, PING));
  assert.equal(r.partner(), A);
  assert.deepEqual(events(r), [partnerChanged(A), stateChanged("interacting"), metastatesChanged(M_PAIRED)]);
  assert.deepEqual(sent(r), [out(A, PING)], "a ping back at once");
  const log = runUntil(r, t0, t0 + s(11));
  assert.deepEqual(pings(log), [s(10)], "a responder pings while paired too");
});

test("a paired responder rejects a second controller with assignedToOther at once", () => {
  const t0 = base();
  const r = connected("responder", t0);
  r.handleEvent(t0, ev(A, PING));
  sent(r);
  events(r);
  // Within the pacing interval of its own ping: a reject skips the queue.
  r.handleEvent(t0 + ms(100), ev(B, PING));
  assert.deepEqual(sent(r), [out(B, REJECT, ASSIGNED_TO_OTHER)]);
  assert.equal(r.partner(), A);
  assert.equal(r.state(), "interacting");
  assert.deepEqual(events(r), [], "nothing from B reaches the app");
  // Searching too.
  r.handleTimeout(t0 + s(25));
  assert.equal(r.state(), "searching");
  sent(r);
  r.handleEvent(t0 + s(26), ev(B, PING));
  assert.deepEqual(sent(r), [out(B, REJECT, ASSIGNED_TO_OTHER)]);
});

test("a responder assigned by the app rejects other pingers", () => {
  const t0 = base();
  const r = connected("responder", t0);
  r.assignPartner(t0, A);
  assert.equal(r.state(), "searching");
  assert.deepEqual(sent(r), [out(A, PING)]);
  r.handleEvent(t0 + s(1), ev(B, PING));
  assert.deepEqual(sent(r), [out(B, REJECT, ASSIGNED_TO_OTHER)]);
  r.handleEvent(t0 + s(1), ev(A, PING));
  assert.equal(r.state(), "interacting");
});

test("a controller answers a ping from a non-partner with notPaired", () => {
  const t0 = base();
  const c = connected("controller", t0);
  c.handleEvent(t0, ev(B, PING));
  assert.deepEqual(sent(c), [out(B, REJECT, NOT_PAIRED)]);
  assert.equal(c.partner(), null, "a controller never auto-pairs");
  assert.equal(c.state(), "readyToPair");
  c.assignPartner(t0, A);
  sent(c);
  c.handleEvent(t0, ev(B, PING));
  assert.deepEqual(sent(c), [out(B, REJECT, NOT_PAIRED)]);
  assert.equal(c.state(), "searching", "B's ping is no partner activity");
});

test("notPaired from the controller flags a pinging responder", () => {
  const t0 = base();
  const r = connected("responder", t0);
  r.assignPartner(t0, A);
  sent(r);
  events(r);
  r.handleEvent(t0, ev(A, REJECT, NOT_PAIRED));
  assert.equal(r.rejected(), NOT_PAIRED);
  assert.equal(r.state(), "readyToPair");
  assert.deepEqual(events(r), [
    rejected(A, NOT_PAIRED),
    stateChanged("readyToPair"),
    metastatesChanged(M_CONNECTED),
  ]);
  assert.deepEqual(sent(r), [], "a responder sends no unassign");
  // Reading: a rejected partner no longer pairs it; the next controller's ping does.
  r.handleEvent(t0 + s(1), ev(B, PING));
  assert.equal(r.partner(), B);
  assert.equal(r.rejected(), null);
  assert.equal(r.state(), "interacting");
});

test("a reject flags the partner and stops the pings until reassigned", () => {
  for (const subType of [ASSIGNED_TO_OTHER, APP_ID_MISMATCH, INVALID_PARTNER_ROLE]) {
    const t0 = base();
    const c = connected("controller", t0);
    c.assignPartner(t0, A);
    sent(c);
    events(c);
    // The server's rejects carry the pinged id (the partner) as sender (P22).
    c.handleEvent(t0 + s(1), ev(A, REJECT, subType));
    assert.equal(c.state(), "readyToPair", subType);
    assert.equal(c.partner(), A, "flagged, not unassigned");
    assert.deepEqual(events(c)[0], rejected(A, subType));
    assert.deepEqual(sent(c), [], "no unassign after a reject");
    assert.equal(c.pollTimeout(), undefined, "the ping sequence stopped");
    assert.deepEqual(runUntil(c, t0, t0 + s(60)), []);
    // Reassigning the same id removes the flag.
    c.assignPartner(t0 + s(60), A);
    assert.equal(c.state(), "searching");
    assert.deepEqual(sent(c), [out(A, PING)]);
  }
});

test("assigning another partner removes the reject flag", () => {
  const t0 = base();
  const c = connected("controller", t0);
  c.assignPartner(t0, A);
  c.handleEvent(t0, ev(A, REJECT, ASSIGNED_TO_OTHER));
  sent(c);
  c.assignPartner(t0 + s(2), B);
  assert.equal(c.rejected(), null);
  assert.equal(c.state(), "searching");
  assert.deepEqual(sent(c), [out(B, PING)]);
});

test("a ping from the rejected partner reassigns it", () => {
  const t0 = base();
  const c = connected("controller", t0);
  c.assignPartner(t0, A);
  c.handleEvent(t0, ev(A, REJECT, ASSIGNED_TO_OTHER));
  sent(c);
  c.handleEvent(t0 + s(3), ev(A, PING));
  assert.equal(c.rejected(), null);
  assert.equal(c.state(), "interacting");
  assert.deepEqual(sent(c), [out(A, PING)]);
});

test("a reject from a non-partner is ignored", () => {
  const t0 = base();
  const c = interactingController(t0);
  c.handleEvent(t0, ev(B, REJECT, ASSIGNED_TO_OTHER));
  assert.equal(c.rejected(), null);
  assert.equal(c.state(), "interacting");
  assert.deepEqual(events(c), []);
  assert.deepEqual(sent(c), [], "only pings are answered");
});

test("going passive clears the reject flag", () => {
  const t0 = base();
  const c = connected("controller", t0);
  c.assignPartner(t0, A);
  c.handleEvent(t0, ev(A, REJECT, ASSIGNED_TO_OTHER));
  c.setActive(t0, false);
  c.setActive(t0, true);
  c.handleConnected(t0, ME);
  assert.equal(c.state(), "searching");
});

// ---- inactive, unassign ------------------------------------------------------------------

test("inactive from the partner drops interacting to searching at once", () => {
  const t0 = base();
  const c = interactingController(t0);
  c.handleEvent(t0 + s(1), ev(A, INACTIVE));
  assert.equal(c.state(), "searching", "not 25 s later");
  assert.deepEqual(events(c), [stateChanged("searching")]);
  const log = runUntil(c, t0, t0 + s(7));
  assert.deepEqual(pings(log), [s(6)], "searching's 5 s from the drop");
  // The partner's next event brings it back.
  c.handleEvent(t0 + s(8), ev(A, PING));
  assert.equal(c.state(), "interacting");
});

test("going passive sends inactive to the partner", () => {
  const t0 = base();
  const c = interactingController(t0);
  c.setActive(t0 + s(1), false);
  assert.equal(c.state(), "passive");
  assert.deepEqual(sent(c), [out(A, INACTIVE)]);
  assert.deepEqual(events(c), [stateChanged("passive"), metastatesChanged(M_NONE)]);
  assert.equal(c.pollTimeout(), undefined);
  assert.equal(c.partner(), A, "the assignment is kept");
});

/** Delivers what each side sends to the other until both are quiet (a lossless relay). */
function relay(x, xId, y, yId, now) {
  for (;;) {
    let quiet = true;
    for (const e of sent(x)) {
      quiet = false;
      if (e.recipient === yId) y.handleEvent(now, incoming(xId, e));
    }
    for (const e of sent(y)) {
      quiet = false;
      if (e.recipient === xId) x.handleEvent(now, incoming(yId, e));
    }
    if (quiet) return;
  }
}

const incoming = (sender, e) => ({ sender, eventType: e.eventType, subType: e.subType, params: e.params });

test("a controller going passive moves the responder to searching at once", () => {
  const t0 = base();
  const c = connected("controller", t0);
  const r = new CrSocket(config("responder", { clientId: A }));
  r.setActive(t0, true);
  r.handleConnected(t0, A);
  c.assignPartner(t0, A);
  relay(c, ME, r, A, t0);
  assert.equal(c.state(), "interacting");
  assert.equal(r.state(), "interacting");
  assert.equal(r.partner(), ME);
  c.setActive(t0 + s(3), false);
  relay(c, ME, r, A, t0 + s(3));
  assert.equal(r.state(), "searching");
});

test("unassigning sends unassign notPaired and is readyToPair", () => {
  const t0 = base();
  const c = interactingController(t0);
  c.assignPartner(t0 + s(1), null);
  assert.equal(c.state(), "readyToPair");
  assert.deepEqual(sent(c), [out(A, UNASSIGN, NOT_PAIRED)]);
  assert.deepEqual(events(c), [partnerChanged(null), stateChanged("readyToPair"), metastatesChanged(M_CONNECTED)]);
  assert.equal(c.pollTimeout(), undefined);
});

test("a responder drops its partner on the partner's unassign", () => {
  const t0 = base();
  const r = connected("responder", t0);
  r.handleEvent(t0, ev(A, PING));
  sent(r);
  events(r);
  r.handleEvent(t0 + s(1), ev(B, UNASSIGN, NOT_PAIRED));
  assert.equal(r.partner(), A, "a stranger's unassign is ignored");
  r.handleEvent(t0 + s(1), ev(A, UNASSIGN, NOT_PAIRED));
  assert.equal(r.partner(), null);
  assert.equal(r.state(), "readyToPair");
  assert.deepEqual(events(r), [partnerChanged(null), stateChanged("readyToPair"), metastatesChanged(M_CONNECTED)]);
  assert.deepEqual(sent(r), []);
  // Free again: the next controller that pings becomes the partner.
  r.handleEvent(t0 + s(2), ev(B, PING));
  assert.equal(r.partner(), B);
});

test("replacing the partner unassigns the former one, then pings the new one", () => {
  const t0 = base();
  const c = interactingController(t0);
  c.assignPartner(t0 + s(2), B);
  assert.deepEqual(states(c), ["readyToPair", "searching"], "through readyToPair");
  assert.deepEqual(sent(c), [out(A, UNASSIGN, NOT_PAIRED)], "the ping waits for the pacing after the unassign");
  c.handleTimeout(t0 + s(3));
  assert.deepEqual(sent(c), [out(B, PING)]);
  c.handleEvent(t0 + s(3), ev(A, PING));
  assert.deepEqual(sent(c), [out(A, REJECT, NOT_PAIRED)]);
});

// ---- disconnection and reconnection ------------------------------------------------------

test("a drop while paired is connecting and sends inactive", () => {
  const t0 = base();
  const c = interactingController(t0);
  c.handleDisconnected(t0 + s(1));
  assert.equal(c.state(), "connecting");
  assert.deepEqual(sent(c), [out(A, INACTIVE)]);
  assert.deepEqual(events(c), [stateChanged("connecting"), metastatesChanged(M_ACTIVE)]);
  assert.equal(c.pollTimeout(), undefined, "no pings while not connected");
  c.handleEvent(t0 + s(2), ev(A, PING));
  assert.equal(c.state(), "connecting", "events are ignored while not connected");
});

test("reconnecting within the alive time is interacting, after it searching", () => {
  const t0 = base();
  let c = interactingController(t0);
  c.handleDisconnected(t0 + s(1));
  c.handleConnected(t0 + s(3), ME);
  assert.equal(c.state(), "interacting");
  assert.deepEqual(events(c), [
    stateChanged("connecting"),
    metastatesChanged(M_ACTIVE),
    stateChanged("interacting"),
    metastatesChanged(M_PAIRED),
  ]);
  const after = sent(c);
  assert.deepEqual(after.at(-1), out(A, PING), "a ping on re-pairing");

  c = interactingController(t0);
  c.handleDisconnected(t0 + s(1));
  c.handleConnected(t0 + s(30), ME);
  assert.equal(c.state(), "searching");
  c.handleDisconnected(t0 + s(31));
  c.handleDisconnected(t0 + s(31));
  assert.equal(c.state(), "connecting");
});

test("a responder reconnecting keeps its auto-assigned partner", () => {
  const t0 = base();
  const r = connected("responder", t0);
  r.handleEvent(t0, ev(A, PING));
  r.handleDisconnected(t0 + s(1));
  r.handleConnected(t0 + s(40), ME);
  assert.equal(r.partner(), A);
  assert.equal(r.state(), "searching");
  sent(r);
  r.handleEvent(t0 + s(41), ev(B, PING));
  assert.deepEqual(sent(r), [out(B, REJECT, ASSIGNED_TO_OTHER)]);
});

// ---- application events ------------------------------------------------------------------

test("application events reach the app only from the current partner", () => {
  const t0 = base();
  const c = interactingController(t0);
  const tap = { ...ev(A, "tap", "left"), params: ["1", "2"] };
  c.handleEvent(t0, tap);
  c.handleEvent(t0, ev(B, "tap", "right"));
  c.handleEvent(t0, ev(A, PING));
  assert.deepEqual(events(c), [{ type: "appEvent", event: tap }]);
});

test("an application event is partner activity", () => {
  const t0 = base();
  const c = connected("controller", t0);
  c.assignPartner(t0, A);
  c.handleEvent(t0 + s(1), ev(A, "hello"));
  assert.equal(c.state(), "interacting");
});

test("sending is refused unless paired and valid", () => {
  const t0 = base();
  const c = connected("controller", t0);
  throwsKind(() => c.sendAppEvent(t0, "tap", "", []), "not_paired", "readyToPair");
  c.assignPartner(t0, A);
  throwsKind(() => c.sendAppEvent(t0, PING, "", []), "reserved");
  for (const [t, sub, params] of [
    ["", "", []],
    ["ta-p", "", []],
    ["tap", "a b", []],
    ["tap", "", ["a,b"]],
  ]) {
    throwsKind(() => c.sendAppEvent(t0, t, sub, params), "invalid");
  }
  c.handleEvent(t0, ev(A, REJECT, ASSIGNED_TO_OTHER));
  throwsKind(() => c.sendAppEvent(t0, "tap", "", []), "not_paired", "readyToPair");
});

test("queued events go out one per second and delay the pings", () => {
  const t0 = base();
  const c = interactingController(t0);
  // The interacting ping went out at t0: these wait for the pacing.
  for (let n = 0; n < 3; n++) c.sendAppEvent(t0, "tap", "", [String(n)]);
  assert.deepEqual(sent(c), []);
  assert.equal(c.pollTimeout(), t0 + s(1));
  let log = runUntil(c, t0, t0 + s(12));
  assert.deepEqual(
    log.map(([t, e]) => [t, e.eventType]),
    [[s(1), "tap"], [s(2), "tap"], [s(3), "tap"], [s(10), "ping"]],
  );
  assert.deepEqual(log[2][1].params, ["2"], "in order");
  // A send restarts the ping sequence: the next ping is 10 s after it.
  c.sendAppEvent(t0 + s(15), "tap", "", []);
  assert.equal(sent(c).length, 1, "a free slot: at once");
  log = runUntil(c, t0, t0 + s(26));
  assert.deepEqual(pings(log), [s(25)]);
});

test("a reject skips the queue but counts as the last send", () => {
  const t0 = base();
  const c = interactingController(t0);
  c.handleTimeout(t0 + s(5));
  c.handleEvent(t0 + s(5), ev(B, PING));
  c.sendAppEvent(t0 + s(5), "tap", "", []);
  assert.deepEqual(sent(c), [out(B, REJECT, NOT_PAIRED)]);
  assert.equal(c.pollTimeout(), t0 + s(6));
  c.handleTimeout(t0 + s(6));
  assert.equal(sent(c)[0].eventType, "tap");
});

test("leaving paired drops what was queued for the partner", () => {
  const t0 = base();
  const c = interactingController(t0);
  c.sendAppEvent(t0, "tap", "", []);
  c.assignPartner(t0, null);
  assert.deepEqual(sent(c), [out(A, UNASSIGN, NOT_PAIRED)]);
  assert.deepEqual(runUntil(c, t0, t0 + s(30)), []);
});

test("every timer is configurable", () => {
  const t0 = base();
  const c = new CrSocket(
    config("controller", { partnerAliveMs: s(3), searchPingMs: s(2), interactPingMs: s(4), pacingMs: ms(100) }),
  );
  c.setActive(t0, true);
  c.handleConnected(t0, ME);
  c.assignPartner(t0, A);
  sent(c);
  let log = runUntil(c, t0, t0 + s(5));
  assert.deepEqual(pings(log), [s(2), s(4)]);
  c.handleEvent(t0 + s(5), ev(A, PING));
  assert.deepEqual(sent(c), [out(A, PING)], "100 ms after the last: at once");
  assert.equal(c.state(), "interacting");
  c.sendAppEvent(t0 + s(5), "a", "", []);
  c.sendAppEvent(t0 + s(5), "b", "", []);
  log = runUntil(c, t0, t0 + s(8));
  // The interacting ping at 5 s, then a at 5.1, b at 5.2; alive 3 s: searching at 8 s.
  assert.deepEqual(
    log.map(([t, e]) => [t, e.eventType]),
    [[s(5) + ms(100), "a"], [s(5) + ms(200), "b"]],
  );
  assert.equal(c.state(), "searching");
});

test("a controller and a responder pair and exchange events", () => {
  const t0 = base();
  const c = connected("controller", t0);
  const r = new CrSocket(config("responder", { clientId: A }));
  r.setActive(t0, true);
  r.handleConnected(t0, A);
  events(r);
  c.assignPartner(t0, A);
  relay(c, ME, r, A, t0);
  events(c);
  events(r);
  r.sendAppEvent(t0 + s(2), "score", "", ["7"]);
  relay(c, ME, r, A, t0 + s(2));
  assert.deepEqual(events(c), [
    { type: "appEvent", event: { sender: A, eventType: "score", subType: "", params: ["7"] } },
  ]);
  // A second controller is turned away.
  const c2 = new CrSocket(config("controller", { clientId: B }));
  c2.setActive(t0, true);
  c2.handleConnected(t0, B);
  c2.assignPartner(t0 + s(3), A);
  relay(c2, B, r, A, t0 + s(3));
  assert.equal(c2.rejected(), ASSIGNED_TO_OTHER);
  assert.equal(c2.state(), "readyToPair");
  assert.equal(r.partner(), ME);
});

test("the pacing queue is bounded", () => {
  const t0 = base();
  const c = new CrSocket(config("controller", { queueLimit: 2 }));
  c.setActive(t0, true);
  c.handleConnected(t0, ME);
  c.assignPartner(t0, A);
  assert.deepEqual(sent(c), [out(A, PING)]);
  c.sendAppEvent(t0, "a", "", []);
  c.sendAppEvent(t0, "b", "", []);
  throwsKind(() => c.sendAppEvent(t0, "c", "", []), "queue_full");
  assert.equal(c.queued(), 2);
  c.handleTimeout(t0 + s(1));
  assert.equal(sent(c)[0].eventType, "a");
  c.sendAppEvent(t0 + s(1), "c", "", []);
});

test("an abort while paired sends inactive and is readyToConnect", () => {
  const t0 = base();
  const c = interactingController(t0);
  c.handleAborted(t0 + s(1), "releasedByOther");
  assert.equal(c.state(), "readyToConnect");
  assert.deepEqual(sent(c), [out(A, INACTIVE)]);
  assert.deepEqual(events(c), [stateChanged("readyToConnect"), metastatesChanged(M_ACTIVE)]);
  assert.equal(c.pollTimeout(), undefined);
});

test("searching to passive sends inactive too", () => {
  const t0 = base();
  let c = connected("controller", t0);
  c.assignPartner(t0, A);
  sent(c);
  c.setActive(t0 + s(2), false);
  assert.deepEqual(sent(c), [out(A, INACTIVE)]);
  // Not paired: going passive again or from readyToPair sends nothing.
  c = connected("controller", t0);
  c.setActive(t0, false);
  assert.deepEqual(sent(c), []);
});

// ---- the driver (crates/client/src/pairing/driver.rs's tests, and a fake WebSocket) ------

test("the endpoint is crsocket/{app}/ws under the URL's path", () => {
  for (const [url, want] of [
    ["ws://127.0.0.1:8080/", "ws://127.0.0.1:8080/crsocket/alpha/ws"],
    ["ws://127.0.0.1:8080", "ws://127.0.0.1:8080/crsocket/alpha/ws"],
    ["ws://127.0.0.1:8080/ws", "ws://127.0.0.1:8080/crsocket/alpha/ws"],
    ["wss://example.org/base/", "wss://example.org/base/crsocket/alpha/ws"],
    ["ws://[::1]:9/", "ws://[::1]:9/crsocket/alpha/ws"],
  ]) {
    assert.equal(pairingEndpoint(url, "alpha"), want, url);
  }
});

test("a bad URL or app name is a config error", () => {
  for (const url of ["http://x/", "127.0.0.1:8080", "", "ws:///"]) {
    assert.throws(() => pairingEndpoint(url, "alpha"), (e) => e.kind === "config" && /is not a ws:\/\/ or wss:\/\/ URL/.test(e.message), url);
  }
  for (const app of ["", "-x", "a/b", "a b", "x".repeat(65)]) {
    assert.throws(() => pairingEndpoint("ws://h/", app), (e) => e.kind === "config" && /is not an app name/.test(e.message), app);
  }
});

/** A WebSocket stand-in: records what the client sends; the test plays the server. */
function fakeSockets() {
  const sockets = [];
  class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.sent = [];
      this.readyState = 0;
      this.closedWith = null;
      this.onopen = this.onmessage = this.onclose = this.onerror = null;
      sockets.push(this);
    }
    send(text) {
      if (this.readyState !== 1) throw new Error("not open");
      this.sent.push(JSON.parse(text));
    }
    close(code) {
      if (this.closedWith) return;
      this.closedWith = { code };
      this.readyState = 3;
      queueMicrotask(() => this.onclose?.({ code: code ?? 1005, reason: "" }));
    }
    /** The server accepts the upgrade. */
    accept() {
      this.readyState = 1;
      this.onopen?.({});
    }
    /** The server sends `frame`. */
    deliver(frame) {
      this.onmessage?.({ data: JSON.stringify({ timestamp: 1, ...frame }) });
    }
    /** The connection breaks. */
    drop(code = 1006) {
      this.readyState = 3;
      this.onclose?.({ code, reason: "" });
    }
    welcome(clientId, clientRole) {
      this.deliver({ type: "cr_welcome", appId: "alpha", clientId, clientRole });
    }
  }
  return { FakeWebSocket, sockets };
}

/** Every fake-socket client of a test, closed after it (a failed assertion leaves no timer behind). */
const fakeClients = new Set();
afterEach(async () => {
  await Promise.all([...fakeClients].map((c) => c.close()));
  fakeClients.clear();
});

/** A driver over fake sockets, its updates recorded. */
function fakeClient(role, extra = {}) {
  const { FakeWebSocket, sockets } = fakeSockets();
  const client = new PairingClient({ url: "ws://127.0.0.1:9/", app: "alpha", role, accessToken: "tok", WebSocket: FakeWebSocket, ...extra });
  fakeClients.add(client);
  const updates = [];
  client.onAny((u) => updates.push(u));
  return { client, sockets, updates, take: () => updates.splice(0) };
}

const welcomeUpdate = (clientId) => ({ type: "welcome", appId: "alpha", clientId });
const eventFrom = (sender, eventType, fields = {}) => ({ type: "cr_event", senderClientId: sender, eventType, eventSubType: "", eventParams: [], buffered: false, logged: false, interceptable: true, sendCt: null, receiveCt: null, ...fields });

/** A fake controller ME, welcomed, paired with A and interacting (A pinged), its updates and frames taken. */
function interactingFake(extra = {}) {
  const f = fakeClient("controller", { clientId: ME, pacingMs: 0, ...extra });
  f.client.start();
  const ws = f.sockets[0];
  ws.accept();
  ws.welcome(ME, "controller");
  f.client.assignPartner(A);
  ws.deliver(eventFrom(A, PING));
  assert.equal(f.client.state(), "interacting");
  f.take();
  ws.sent.length = 0;
  return { ...f, ws };
}

test("bad settings are refused before anything is sent", () => {
  const { FakeWebSocket, sockets } = fakeSockets();
  const base = { url: "ws://127.0.0.1:9/", app: "alpha", WebSocket: FakeWebSocket };
  assert.throws(() => new PairingClient({ ...base, role: "controller", accessToken: "open", clientId: "12345" }),
    (e) => e.kind === "config" && /client id/.test(e.message));
  assert.throws(() => new PairingClient({ ...base, role: "responder", accessToken: "a b" }),
    (e) => e.kind === "config" && /token/.test(e.message));
  assert.throws(() => new PairingClient({ ...base, role: "boss", accessToken: "open" }), (e) => e.kind === "config");
  assert.throws(() => new PairingClient({ ...base, url: "http://x/", role: "controller" }), (e) => e.kind === "config");
  assert.throws(() => new PairingClient({ ...base, WebSocket: undefined, role: "controller" }),
    (e) => e.kind === "config" && /WebSocket/.test(e.message), "Node 20 has no global WebSocket");
  assert.equal(sockets.length, 0);
});

test("what a client shows hides the token", async () => {
  const { FakeWebSocket } = fakeSockets();
  const client = new PairingClient({ url: "ws://h/", app: "alpha", role: "responder", accessToken: "s3cret", WebSocket: FakeWebSocket });
  const { inspect } = await import("node:util");
  for (const shown of [JSON.stringify(client), inspect(client), String(inspect(client, { showHidden: true }))]) {
    assert.ok(!shown.includes("s3cret"), shown);
    assert.match(shown, /passive/);
  }
});

test("an outgoing event is a cr_event with sendCt", () => {
  const before = Date.now();
  const v = JSON.parse(pairingEventFrame({ recipient: "222222", eventType: "tap", subType: "left", params: ["1"] }, Date.now()));
  assert.equal(v.type, "cr_event");
  assert.equal(v.recipientClientId, "222222");
  assert.equal(v.eventType, "tap");
  assert.equal(v.eventSubType, "left");
  assert.deepEqual(v.eventParams, ["1"]);
  assert.ok(Number.isInteger(v.sendCt) && v.sendCt >= before);
});

test("an id-less client identifies without an id; the welcome gives it the server's, welcome before readyToPair", async () => {
  const f = fakeClient("responder");
  const connected = f.client.connect();
  assert.equal(f.sockets.length, 1);
  const ws = f.sockets[0];
  assert.equal(ws.url, "ws://127.0.0.1:9/crsocket/alpha/ws");
  assert.equal(f.client.state(), "passive", "no id yet");
  ws.accept();
  assert.deepEqual(ws.sent, [{ type: "cr_identify", clientRole: "responder", accessToken: "tok" }]);
  ws.welcome("004242", "responder");
  await connected;
  assert.deepEqual(f.take(), [
    clientIdChanged("004242"),
    stateChanged("connecting"),
    metastatesChanged(M_ACTIVE),
    welcomeUpdate("004242"),
    stateChanged("readyToPair"),
    metastatesChanged(M_CONNECTED),
  ]);
  assert.deepEqual(f.client.snapshot(), {
    state: "readyToPair", metastates: M_CONNECTED, clientId: "004242", partner: null, rejected: null, aborted: null,
  });
  await f.client.close();
});

test("the driver sends the machine's events as cr_event frames and passes the partner's on with their fields", async () => {
  const f = fakeClient("controller", { clientId: ME, pacingMs: 0 });
  f.client.start();
  const ws = f.sockets[0];
  ws.accept();
  assert.deepEqual(ws.sent, [{ type: "cr_identify", clientRole: "controller", accessToken: "tok", clientId: ME }]);
  ws.welcome(ME, "controller");
  f.client.assignPartner(A);
  const ping = ws.sent.at(-1);
  assert.deepEqual({ ...ping, sendCt: typeof ping.sendCt }, {
    type: "cr_event", recipientClientId: A, eventType: PING, eventSubType: "", eventParams: [],
    buffered: false, logged: false, interceptable: true, sendCt: "number",
  });
  // Before the welcome nothing but the identify; an event from a stranger is not passed on.
  ws.deliver(eventFrom(B, "tap"));
  ws.deliver(eventFrom(A, "tap", { eventSubType: "x", eventParams: ["1"], buffered: true, logged: true, interceptable: false, sendCt: 5 }));
  const before = Date.now();
  const apps = f.updates.filter((u) => u.type === "appEvent");
  assert.equal(apps.length, 1);
  const { receiveCt, ...fields } = apps[0].event;
  assert.deepEqual(fields, { sender: A, eventType: "tap", subType: "x", params: ["1"], buffered: true, logged: true, interceptable: false, sendCt: 5 });
  assert.ok(Number.isInteger(receiveCt) && receiveCt <= before + 1 && receiveCt > before - 60_000);
  assert.equal(f.client.state(), "interacting");
  f.client.sendEvent("score", "", ["7"]);
  assert.deepEqual(
    ws.sent.filter((fr) => fr.eventType === "score").map((fr) => [fr.recipientClientId, fr.eventParams]),
    [[A, ["7"]]],
  );
  assert.throws(() => f.client.sendEvent("ping"), (e) => e.kind === "reserved");
  assert.throws(() => f.client.assignPartner("12345"), (e) => e.kind === "invalid");
  assert.throws(() => f.client.setAccessToken("a b"), (e) => e.kind === "invalid");
  ws.deliver({ type: "error", code: "invalid_message", message: "nope" });
  assert.deepEqual(f.updates.at(-1), { type: "error", error: { code: "invalid_message", message: "nope" } });
  await f.client.close();
});

test("an abort closes the socket and holds the client until retry", async () => {
  const { client, sockets, ws, take } = interactingFake();
  ws.deliver({ type: "cr_aborted", reason: "releasedByOther" });
  assert.deepEqual(take(), [
    stateChanged("readyToConnect"),
    metastatesChanged(M_ACTIVE),
    { type: "aborted", reason: "releasedByOther" },
  ]);
  assert.deepEqual(ws.sent, [], "the `inactive` is dropped: the socket is not identified any more");
  assert.deepEqual(ws.closedWith, { code: 1000 }, "the client closes the aborted socket");
  await Promise.resolve();
  assert.equal(sockets.length, 1, "no reconnection");
  assert.equal(client.aborted(), "releasedByOther");
  client.retry();
  assert.equal(sockets.length, 2, "retry opens a new connection at once");
  assert.equal(client.aborted(), null);
  sockets[1].accept();
  assert.deepEqual(sockets[1].sent, [{ type: "cr_identify", clientRole: "controller", accessToken: "tok", clientId: ME }]);
  await client.close();
});

test("a dropped connection is disconnected, connecting, and reopened after the reconnect delay", async () => {
  const { client, sockets, ws, take } = interactingFake({ reconnectDelayMs: 0 });
  ws.drop(1006);
  assert.deepEqual(take(), [
    stateChanged("connecting"),
    metastatesChanged(M_ACTIVE),
    { type: "disconnected", reason: "closed (1006)" },
  ]);
  assert.equal(sockets.length, 2, "a zero delay reopens at once");
  sockets[1].accept();
  sockets[1].welcome(ME, "controller");
  assert.deepEqual(take(), [welcomeUpdate(ME), stateChanged("interacting"), metastatesChanged(M_PAIRED)], "back within 25 s");
  // A connection refused before the upgrade is connectFailed.
  sockets[1].drop(1006);
  take();
  sockets[2].onerror?.({ message: "Unexpected server response: 404" });
  sockets[2].drop(1006);
  const failed = take().find((u) => u.type === "connectFailed");
  assert.match(failed.reason, /404.*loudsync serve --app alpha/);
  await client.close();
});

test("close sends inactive to the partner, goes passive, closes the socket and ends events()", async () => {
  const { client, ws, take } = interactingFake();
  const iterator = client.events();
  await client.close();
  assert.deepEqual(ws.sent.map((fr) => [fr.recipientClientId, fr.eventType]), [[A, INACTIVE]]);
  assert.deepEqual(ws.closedWith, { code: 1000 });
  assert.deepEqual(take(), [stateChanged("passive"), metastatesChanged(M_NONE)]);
  const seen = [];
  for await (const u of iterator) seen.push(u.type);
  assert.deepEqual(seen, ["stateChanged", "metastatesChanged"]);
  assert.throws(() => client.sendEvent("tap"), (e) => e.kind === "closed");
  assert.equal(client.close(), client.close(), "close is idempotent");
});

test("a client that would not connect resolves connect() at once; setActive(true) connects it", async () => {
  const f = fakeClient("controller", { clientId: ME, active: false });
  await f.client.connect();
  assert.equal(f.sockets.length, 0);
  assert.equal(f.client.state(), "passive");
  f.client.setActive(true);
  assert.equal(f.sockets.length, 1);
  assert.equal(f.client.state(), "connecting");
  await f.client.close();
});

test("a listener's command runs after the update it answers, and the updates stay in order", async () => {
  const { client, ws, updates } = interactingFake();
  client.on("appEvent", (u) => client.sendEvent("echo", "", u.event.params));
  client.on("appEvent", () => client.assignPartner(null));
  ws.deliver(eventFrom(A, "tap", { eventParams: ["9"] }));
  assert.deepEqual(updates.map((u) => u.type), ["appEvent", "partnerChanged", "stateChanged", "metastatesChanged"]);
  assert.deepEqual(ws.sent.map((fr) => [fr.eventType, fr.eventSubType, fr.eventParams]), [
    ["echo", "", ["9"]],
    [UNASSIGN, NOT_PAIRED, []],
  ]);
  await client.close();
});

test("cr_alive goes out every aliveIntervalMs once identified; silence for silenceTimeoutMs is a lost connection", async () => {
  const f = fakeClient("controller", { clientId: ME, aliveIntervalMs: 20, silenceTimeoutMs: 150, reconnectDelayMs: 60_000 });
  f.client.start();
  const ws = f.sockets[0];
  ws.accept();
  ws.welcome(ME, "controller");
  const lost = await new Promise((resolve, reject) => {
    const bound = setTimeout(() => reject(new Error(`no disconnected within 3 s: ${JSON.stringify(f.updates)}`)), 3_000);
    f.client.on("disconnected", (u) => {
      clearTimeout(bound);
      resolve(u);
    });
  });
  assert.equal(lost.reason, "nothing heard from the server for 150 ms");
  const alives = ws.sent.filter((fr) => fr.type === "cr_alive").length;
  assert.ok(alives >= 3 && alives <= 10, `${alives} cr_alive in 150 ms at one per 20 ms`);
  assert.equal(f.client.state(), "connecting");
  assert.equal(f.sockets.length, 1, "the next attempt waits for the reconnect delay");
  await f.client.close();
});

test("a failed connection names the endpoint it tried", async () => {
  // Before: the bare socket error ("connect ECONNREFUSED ..."), unlike the session client.
  class Refused {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      queueMicrotask(() => {
        this.readyState = 3;
        this.onerror?.({ message: "connect ECONNREFUSED 127.0.0.1:9" });
        this.onclose?.({ code: 1006, reason: "" });
      });
    }
    send() {}
    close() {}
  }
  const client = new PairingClient({ url: "ws://127.0.0.1:9/", app: "alpha", role: "responder", accessToken: "tok", WebSocket: Refused });
  try {
    await assert.rejects(client.connect(), (e) => {
      assert.ok(e instanceof PairingError && e.kind === "connect", String(e));
      assert.equal(e.message, "could not connect to ws://127.0.0.1:9/crsocket/alpha/ws: connect ECONNREFUSED 127.0.0.1:9");
      return true;
    });
  } finally {
    await client.close();
  }
});

test("a pairing listener that throws is reported with console.error; the others and the client go on", async (t) => {
  // As the session client's listeners (emitter.ts). Before, the error was rethrown in a
  // microtask: an uncaught exception, which ends a Node process.
  const reported = [];
  t.mock.method(console, "error", (...args) => reported.push(args));
  const uncaught = [];
  const onUncaught = (error) => uncaught.push(error);
  process.on("uncaughtException", onUncaught);
  t.after(() => process.off("uncaughtException", onUncaught));
  const f = interactingFake();
  f.client.onAny((u) => {
    if (u.type === "appEvent") throw new Error("app bug");
  });
  const after = [];
  f.client.onAny((u) => after.push(u.type));
  f.ws.deliver(eventFrom(A, "tap"));
  f.ws.deliver(eventFrom(A, "tap"));
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepStrictEqual(uncaught, []);
  assert.equal(reported.length, 2, JSON.stringify(reported));
  assert.match(String(reported[0][0]), /"appEvent" pairing listener threw/);
  assert.equal(reported[0][1].message, "app bug");
  assert.deepStrictEqual(after, ["appEvent", "appEvent"]);
  assert.equal(f.client.state(), "interacting");
  f.client.sendEvent("still", "", []);
  assert.ok(f.ws.sent.some((fr) => fr.eventType === "still"));
});
