// hostile.test.mjs: a property-style test of what a hostile or broken server can send. A
// seeded PRNG (mulberry32, no dependency) mutates valid server frames (a field of the wrong
// type, a missing field, huge / negative / fractional numbers, a `seq` of every wrong kind,
// deep nesting, an unknown or a wrong known `type`), or sends what is not a frame at all
// (non-JSON, truncated JSON, binary garbage decoded as text, JSON that is not an object), to
// a joined machine, plain and resumable, a bounded number of times. After every frame it
// asserts: `handleText` did not throw; the member table is well-formed (typed entries, ids
// unique unless the server's own list repeated one); every frame the machine sent is a valid
// client frame (support.mjs's `checkClientFrame`: JSON, a string `type`, each type's fields,
// `seq` a positive safe integer); and the driver's copies (`sessionState`, `pendingHandoff`)
// can be made. At the end of each run the machine still answers valid frames: a
// `member_joined` lands in the table, a `pong` gives a latency, a command sends a valid
// frame. The same for the pairing layer: `decodePairingServerFrame` never throws and a
// connected CrSocket fed what it decodes never throws and sends only well-formed events.
// Every failure message carries the seed and the frame, so a failure can be replayed.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  Rig,
  plainMember,
  memberConfig,
  member,
  checkClientFrame,
  rconnectedWith,
  numbered,
  sentMessages,
} from "./support.mjs";
import { CrSocket, decodePairingServerFrame, pairingEventFrame } from "../../dist/esm/index.js";

/** mulberry32: a small seeded PRNG, uniform in [0, 1). */
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const pick = (rand, items) => items[Math.floor(rand() * items.length)];

/** Nesting `depth` levels deep, as JSON text (arrays or objects). */
function deepText(depth, rand) {
  const object = rand() < 0.5;
  return object ? '{"a":'.repeat(depth) + "1" + "}".repeat(depth) : "[".repeat(depth) + "]".repeat(depth);
}

/** A JSON value of the kinds that break readers: wrong types, extreme numbers, nesting. */
function hostileValue(rand) {
  return pick(rand, [
    () => null,
    () => true,
    () => -1,
    () => 1.5,
    () => -0.0001,
    () => 1e300,
    () => -1e300,
    () => 2 ** 53 + 2,
    () => Number.MAX_SAFE_INTEGER,
    () => 0,
    () => "",
    () => "x".repeat(1 + Math.floor(rand() * 5000)),
    () => "\u0000\ud800",
    () => [],
    () => [1, "a", null],
    () => ({}),
    () => ({ type: "welcome" }),
    () => JSON.parse(deepText(50 + Math.floor(rand() * 100), rand)),
    () => pick(rand, ["h", "c1", "c2", "m", "ghost"]),
  ])();
}

const SERVER_TYPES = [
  "welcome", "member_list", "member_joined", "member_updated", "member_left", "kicked",
  "session_closed", "pong", "error", "message", "token", "resumed", "resume_failed", "ack",
  "state", "handoff_started", "handoff_request", "handoff_ack", "host_changed",
  "handoff_failed", "media_token",
];

/** Valid frames a joined member `c1` can get (docs/PROTOCOL.md §4, §14, §15). */
function validFrames(rand) {
  const id = pick(rand, ["m1", "m2", "m3", "h", "c1"]);
  return [
    { type: "member_joined", timestamp: 1, member: member(id, "M", false, 5) },
    { type: "member_updated", timestamp: 1, member: member(id, "M", false, 5, { connectionStatus: "reconnecting" }) },
    { type: "member_left", timestamp: 1, memberId: id, reason: "left" },
    {
      type: "member_list",
      timestamp: 1,
      members: [member("h", "Host", true, 1), member("c1", "Phone", false, 2), member("m1", "M", false, 3, { latency: 9 })],
    },
    { type: "message", timestamp: 1, from: "h", data: { n: 1 } },
    { type: "pong", timestamp: 1_800_000_000_000 },
    { type: "ack", timestamp: 1, seq: 1 },
    { type: "state", timestamp: 1, state: { a: 1 }, version: 2, term: 1, updatedBy: "h" },
    { type: "host_changed", timestamp: 1, hostId: "m1", previousHostId: "h", term: 2, reason: "handoff" },
    { type: "handoff_started", timestamp: 1, handoffId: "x1", targetId: "c1" },
    { type: "handoff_request", timestamp: 1, handoffId: "x1", fromId: "h", state: { a: 1 }, version: 1, term: 1, timeoutMs: 5000 },
    { type: "handoff_ack", timestamp: 1, handoffId: "x1", hostId: "c1", term: 2 },
    { type: "handoff_failed", timestamp: 1, reason: "declined", handoffId: "x1", targetId: null },
    { type: "media_token", timestamp: 1, token: "t", role: "publish", streamId: "s", port: 9000, expiresAt: 5 },
    { type: "error", timestamp: 1, code: "rate_limited", message: "slow down", details: { lastSeq: 0 } },
    { type: "error", timestamp: 1, code: "invalid_message", message: "bad" },
    { type: "token", timestamp: 1, token: "S".repeat(32) },
    { type: "resumed", timestamp: 1, lastSeq: 0, replayed: 0 },
    { type: "resume_failed", timestamp: 1, reason: "expired" },
    { type: "welcome", timestamp: 1, clientId: "c9", resumable: true, sessionInfo: { id: "s1", name: "S", hostId: "h" } },
  ];
}

/** Changes one field somewhere in `frame` (recursing into objects and arrays), in place. */
function mutateField(rand, value, depth = 0) {
  if (typeof value !== "object" || value === null) return;
  const keys = Array.isArray(value) ? value.map((_, i) => i) : Object.keys(value);
  if (keys.length === 0) return;
  const key = pick(rand, keys);
  const inner = value[key];
  if (depth < 3 && typeof inner === "object" && inner !== null && rand() < 0.5) {
    mutateField(rand, inner, depth + 1);
  } else if (rand() < 0.25 && !Array.isArray(value)) {
    delete value[key];
  } else {
    value[key] = hostileValue(rand);
  }
}

/** One hostile text frame: a mutated valid frame, or something that is not a frame. */
function hostileText(rand) {
  const roll = rand();
  if (roll < 0.12) {
    return pick(rand, [
      () => "",
      () => "not json",
      () => "null",
      () => "42",
      () => '"welcome"',
      () => "[]",
      () => "{",
      () => deepText(5000 + Math.floor(rand() * 50_000), rand),
      () => `{"type":"message","from":"h","data":${deepText(200 + Math.floor(rand() * 20_000), rand)}}`,
      () => `{"type":"state","state":{"a":${deepText(200 + Math.floor(rand() * 20_000), rand)}},"version":9,"term":1,"updatedBy":"h"}`,
      () => {
        // Binary garbage, decoded as the driver would (UTF-8, replacement characters).
        const bytes = new Uint8Array(1 + Math.floor(rand() * 200));
        for (let i = 0; i < bytes.length; i += 1) bytes[i] = Math.floor(rand() * 256);
        return new TextDecoder().decode(bytes);
      },
      () => String.fromCharCode(...Array.from({ length: 50 }, () => Math.floor(rand() * 0xffff))),
    ])();
  }
  const frame = structuredClone(pick(rand, validFrames(rand)));
  const mutations = 1 + Math.floor(rand() * 3);
  for (let i = 0; i < mutations; i += 1) {
    const what = rand();
    if (what < 0.15) frame.type = pick(rand, [...SERVER_TYPES, "zzz_future", "", 7, null]);
    else if (what < 0.35) frame.seq = pick(rand, [-1, 0, 1, 1.5, 2 ** 53 + 2, 1e300, "3", null, 1 + Math.floor(rand() * 5)]);
    else if (what < 0.45) frame.timestamp = hostileValue(rand);
    else mutateField(rand, frame);
  }
  const text = JSON.stringify(frame);
  // Sometimes cut short.
  return rand() < 0.05 ? text.slice(0, Math.floor(rand() * text.length)) : text;
}

const STATUSES = ["connected", "disconnected", "reconnecting"];

/** Why the member table is not well-formed, or null. */
function tableProblem(machine, allowDuplicates) {
  const table = machine.members();
  if (!Array.isArray(table)) return "not an array";
  const ids = new Set();
  for (const m of table) {
    if (typeof m !== "object" || m === null) return "an entry is not an object";
    if (typeof m.id !== "string" || typeof m.name !== "string") return `id/name: ${JSON.stringify(m)}`;
    if (typeof m.isHost !== "boolean" || typeof m.handoffReady !== "boolean") return `flags: ${JSON.stringify(m)}`;
    if (!STATUSES.includes(m.connectionStatus)) return `connectionStatus: ${JSON.stringify(m)}`;
    if (!Number.isSafeInteger(m.joinedAt) || m.joinedAt < 0) return `joinedAt: ${JSON.stringify(m)}`;
    if (m.latency !== undefined && !(Number.isSafeInteger(m.latency) && m.latency >= 0)) return `latency: ${JSON.stringify(m)}`;
    if (ids.has(m.id) && !allowDuplicates) return `duplicate id ${m.id}`;
    ids.add(m.id);
  }
  return null;
}

/** Whether `text` is a member_list the decoder would take whose ids repeat. */
function listWithDuplicates(text) {
  try {
    const f = JSON.parse(text);
    if (f?.type !== "member_list" || !Array.isArray(f.members)) return false;
    const ids = f.members.map((m) => m?.id);
    return new Set(ids).size !== ids.length;
  } catch {
    return false;
  }
}

/** Drains the machine; asserts every send is a valid client frame. Returns the actions. */
function drainChecked(r, context) {
  const actions = r.drainAll();
  for (const a of actions) {
    // Messages are built only on failure: an event may hold data too deep to print.
    if (!["connect", "send", "closeSocket", "emit"].includes(a.type)) assert.fail(`${context}: action ${a.type}`);
    if (a.type !== "send") continue;
    if (typeof a.text !== "string") assert.fail(`${context}: send without text`);
    const problem = checkClientFrame(a.text);
    if (problem !== null) assert.fail(`${context}: not a valid client frame (${problem}): ${a.text.slice(0, 300)}`);
  }
  return actions;
}

/** A plain member `c1`, joined. */
function plainJoined() {
  const r = new Rig(plainMember());
  r.m.start(r.now);
  r.join("c1");
  r.drainAll();
  return r;
}

/** A resumable member `c1`, joined (member_list seq 1 received). */
function resumableJoined() {
  const [r] = rconnectedWith(memberConfig());
  r.drainAll();
  return r;
}

/** Feeds `count` hostile frames to a fresh joined machine per run, `runs` times, from `seed`. */
function hostileRuns(name, join, seed, runs, count) {
  let checked = 0;
  let handled = 0;
  for (let run = 0; run < runs; run += 1) {
    const rand = prng(seed + run);
    const r = join();
    let allowDuplicates = false;
    const fed = [];
    for (let i = 0; i < count; i += 1) {
      const text = hostileText(rand);
      fed.push(text.length > 200 ? `${text.slice(0, 200)}...(${text.length})` : text);
      const context = `${name} seed ${seed + run} frame ${i}: ${fed[fed.length - 1]}`;
      r.now += 1 + Math.floor(rand() * 50);
      const generation = r.m.generation();
      assert.doesNotThrow(() => r.m.handleText(r.now, text), context);
      if (r.m.generation() !== generation) handled += 1;
      if (listWithDuplicates(text)) allowDuplicates = true;
      drainChecked(r, context);
      assert.equal(tableProblem(r.m, allowDuplicates), null, context);
      // What the driver copies for the application (JSON round trips) must not throw.
      assert.doesNotThrow(() => JSON.stringify(r.m.sessionState()), `${context}: sessionState copies`);
      assert.doesNotThrow(() => JSON.stringify(r.m.pendingHandoff()), `${context}: pendingHandoff copies`);
      if (r.m.isEnded()) break;
      // Timers keep running between frames (acks, pacing, heartbeats); nothing malformed.
      const due = r.m.pollTimeout();
      if (due !== undefined && due <= r.now) r.m.handleTimeout(r.now);
      drainChecked(r, `${context} (timer)`);
    }
    const context = `${name} seed ${seed + run} after ${JSON.stringify(fed).slice(0, 2000)}`;
    if (assertStillAnswers(r, context)) checked += 1;
  }
  // Not a vacuous run: many mutated frames still changed the machine, and most runs ended
  // joined, so the final check ran.
  assert.ok(handled > runs * count * 0.05, `${name}: ${handled} frames of ${runs * count} changed the machine`);
  assert.ok(checked > runs / 2, `${name}: ${checked} of ${runs} runs checked at the end`);
}

/**
 * The machine still handles valid frames and commands (unless the frames ended it: a
 * mutated `kicked` then a close, say); returns whether it was checked.
 */
function assertStillAnswers(r, context) {
  if (r.m.isEnded() || r.m.state() !== "connected") return false;
  // Unnumbered, so a hostile `seq` the inbox took earlier cannot make it a duplicate.
  const joined = { type: "member_joined", timestamp: 1, member: member("fresh-1", "Fresh", false, 99) };
  r.m.handleText(r.now, JSON.stringify(joined));
  drainChecked(r, context);
  assert.ok(
    r.m.members().some((m) => m.id === "fresh-1"),
    `${context}: a valid member_joined still lands in the table`,
  );
  if (!r.m.acceptsCommands()) return true;
  r.m.sendMessage(r.now, { still: "here" });
  r.m.ping(r.now);
  const sent = drainChecked(r, context).filter((a) => a.type === "send");
  assert.ok(
    sent.some((a) => JSON.parse(a.text).type === "ping"),
    `${context}: a ping goes out: ${JSON.stringify(sent)}`,
  );
  return true;
}

test("a plain joined member survives hostile server frames", () => {
  hostileRuns("plain", plainJoined, 1_000, 150, 40);
});

test("a resumable joined member survives hostile server frames", () => {
  hostileRuns("resumable", resumableJoined, 2_000, 150, 40);
});

test("a member still joining (handshake or join sent) survives hostile server frames", () => {
  // Before welcome nothing is joined: only the no-throw and valid-frame rules apply, and
  // whatever the frames did, the machine is connected, still joining, or ended cleanly.
  for (const resume of [true, false]) {
    for (let run = 0; run < 100; run += 1) {
      const seed = (resume ? 5_000 : 6_000) + run;
      const rand = prng(seed);
      const r = new Rig(resume ? memberConfig() : plainMember());
      r.m.start(r.now);
      r.m.handleConnected(r.now);
      drainChecked(r, `seed ${seed} start`);
      for (let i = 0; i < 20 && !r.m.isEnded(); i += 1) {
        const text = hostileText(rand);
        const context = `joining resume=${resume} seed ${seed} frame ${i}: ${text.slice(0, 200)}`;
        assert.doesNotThrow(() => r.m.handleText(r.now, text), context);
        drainChecked(r, context);
        assert.equal(tableProblem(r.m, listWithDuplicates(text)), null, context);
      }
      assert.ok(["connecting", "connected", "disconnected", "failed"].includes(r.m.state()), `seed ${seed}: ${r.m.state()}`);
    }
  }
});

test("a numbered frame with a seq beyond exact integers is not numbered, and nothing sent repeats it", () => {
  // 2^53 + 2 and 1e300 are integers to JSON.parse but not exact ones: they must not become
  // the inbox's last seq (every later frame would be a duplicate, and the ack would carry
  // `1e+300`).
  for (const huge of [2 ** 53 + 2, 1e300]) {
    const r = resumableJoined();
    r.text({ seq: huge, type: "message", timestamp: 1, from: "h", data: 1 });
    drainChecked(r, `seq ${huge}`);
    r.text(numbered(2, { type: "message", timestamp: 1, from: "h", data: 2 }));
    const events = drainChecked(r, `seq ${huge} then 2`)
      .filter((a) => a.type === "emit" && a.event.type === "message")
      .map((a) => a.event.data);
    assert.deepStrictEqual(events, [2], `after seq ${huge}, seq 2 is still delivered`);
  }
});

test("a frame nested deeper than the Rust SDK reads is ignored, so copies never overflow the stack", () => {
  // serde_json (the Rust SDK's reader) refuses nesting of 128 levels; such a frame is
  // dropped there. Here too: a `state` of 20000 levels must not become the session state
  // (JSON.stringify of it throws RangeError in `Client.sessionState()`).
  const r = plainJoined();
  const deep = `{"type":"state","timestamp":1,"state":{"a":${"[".repeat(20_000)}${"]".repeat(20_000)}},"version":7,"term":1,"updatedBy":"h"}`;
  r.m.handleText(r.now, deep);
  const events = drainChecked(r, "deep state").filter((a) => a.type === "emit").map((a) => a.event.type);
  assert.deepStrictEqual(events, [], "the deep frame is dropped");
  assert.equal(r.m.sessionState().version, 0);
  assert.doesNotThrow(() => JSON.stringify(r.m.sessionState()));
  // The boundary: 127 levels in all (the frame, `state`, 125 arrays) are taken, 128 are not;
  // brackets inside strings do not count.
  const nested = (arrays, version) =>
    `{"type":"state","timestamp":1,"state":{"s":"[[[{{{","a":${"[".repeat(arrays)}${"]".repeat(arrays)}},"version":${version},"term":1,"updatedBy":"h"}`;
  r.m.handleText(r.now, nested(126, 8));
  drainChecked(r, "128 levels");
  assert.equal(r.m.sessionState().version, 0, "128 levels are refused");
  r.m.handleText(r.now, nested(125, 9));
  drainChecked(r, "127 levels");
  assert.equal(r.m.sessionState().version, 9, "127 levels are taken");
});

test("a resumed lastSeq above what was ever sent still sends what was queued while away", () => {
  // The server says it processed seq 99 when this client sent only 1: a broken server. The
  // message queued while away (seq 2) and those given afterwards must still go out, in
  // order (the Rust Outbox::resumed takes `last + 1` unclamped and would skip them all).
  const r = resumableJoined();
  r.m.sendMessage(r.now, "one");
  r.drain();
  r.m.handleClosed(r.now, null);
  r.drain();
  r.m.sendMessage(r.now, "two");
  dropAndReopenFromClosed(r);
  r.text({ type: "resumed", timestamp: 1, lastSeq: 99, replayed: 0 });
  r.m.sendMessage(r.now, "three");
  const sent = sentMessages(drainChecked(r, "resumed 99"));
  assert.deepStrictEqual(sent, [[2, "two"], [3, "three"]]);
});

/** `dropAndReopen` for a machine whose socket already closed: waits, reopens, reads the resume frame. */
function dropAndReopenFromClosed(r) {
  const until = r.elapsed() + 3000;
  r.runUntil(until);
  r.m.handleConnected(r.now);
  const resume = r.drain().filter((a) => a.type === "send");
  assert.equal(resume.length, 1, "the resume frame alone");
}

// ---- the pairing layer

const ME = "111111";
const PARTNER = "222222";

function validPairingFrames(rand) {
  const sender = pick(rand, [PARTNER, "333333", ME]);
  return [
    { type: "cr_event", senderClientId: sender, eventType: "ping", eventSubType: "", eventParams: [], sendCt: 5 },
    { type: "cr_event", senderClientId: sender, eventType: "tap", eventSubType: "x", eventParams: ["1", "2"] },
    { type: "cr_event", senderClientId: sender, eventType: "reject", eventSubType: "assignedToOther" },
    { type: "cr_event", senderClientId: sender, eventType: "unassign", eventSubType: "notPaired" },
    { type: "cr_event", senderClientId: sender, eventType: "inactive" },
    { type: "cr_alive" },
    { type: "cr_welcome", appId: "app", clientId: ME, clientRole: "controller" },
    { type: "cr_aborted", reason: "releasedByOther" },
    { type: "error", code: "rate_limited", message: "slow" },
  ];
}

function hostilePairingText(rand) {
  if (rand() < 0.12) {
    return pick(rand, [() => "", () => "{", () => "null", () => "[1]", () => deepText(20_000, rand), () => "\ud800garbage"])();
  }
  const frame = structuredClone(pick(rand, validPairingFrames(rand)));
  const mutations = 1 + Math.floor(rand() * 3);
  for (let i = 0; i < mutations; i += 1) {
    if (rand() < 0.15) frame.type = pick(rand, ["cr_event", "cr_alive", "cr_aborted", "cr_welcome", "error", "zzz", 3]);
    else mutateField(rand, frame);
  }
  return JSON.stringify(frame);
}

const ALNUM = /^[A-Za-z0-9]*$/;

/** Why an outgoing pairing event is malformed, or null. */
function outgoingProblem(event) {
  if (typeof event.recipient !== "string") return "recipient";
  if (typeof event.eventType !== "string" || event.eventType === "" || !ALNUM.test(event.eventType)) return "eventType";
  if (typeof event.subType !== "string") return "subType";
  if (!Array.isArray(event.params) || !event.params.every((p) => typeof p === "string")) return "params";
  const frame = JSON.parse(pairingEventFrame(event, 1_800_000_000_000));
  return frame.type === "cr_event" ? null : "frame type";
}

test("the pairing frames and a paired CrSocket survive hostile server frames", () => {
  for (const role of ["controller", "responder"]) {
    for (let run = 0; run < 150; run += 1) {
      const seed = (role === "controller" ? 3_000 : 4_000) + run;
      const rand = prng(seed);
      let now = 100_000;
      const c = new CrSocket({ role, clientId: ME, accessToken: "tok" });
      c.setActive(now, true);
      c.handleConnected(now, ME);
      if (role === "controller") c.assignPartner(now, PARTNER);
      for (let i = 0; i < 40; i += 1) {
        const text = hostilePairingText(rand);
        const context = `${role} seed ${seed} frame ${i}: ${text.slice(0, 200)}`;
        now += 1 + Math.floor(rand() * 3000);
        let frame;
        assert.doesNotThrow(() => {
          frame = decodePairingServerFrame(text);
        }, context);
        assert.doesNotThrow(() => {
          if (frame?.type === "cr_event") {
            c.handleEvent(now, { sender: frame.sender, eventType: frame.eventType, subType: frame.subType, params: frame.params });
          } else if (frame?.type === "cr_aborted") {
            c.handleAborted(now, frame.reason);
            c.retry(now);
            c.handleConnected(now, ME);
          }
          const due = c.pollTimeout();
          if (due !== undefined && due <= now) c.handleTimeout(now);
        }, context);
        for (let e = c.pollTransmit(); e !== undefined; e = c.pollTransmit()) {
          assert.equal(outgoingProblem(e), null, `${context}: ${JSON.stringify(e)}`);
        }
        for (let e = c.pollEvent(); e !== undefined; e = c.pollEvent()) {
          assert.equal(typeof e.type, "string", context);
        }
      }
      // Still answers: a ping from a partner-to-be pairs a responder; a controller's partner pings back.
      const context = `${role} seed ${seed} at the end`;
      if (!c.metastates().connected) continue;
      c.assignPartner(now, role === "controller" ? PARTNER : null);
      c.handleEvent(now, { sender: PARTNER, eventType: "ping", subType: "", params: [] });
      assert.ok(c.metastates().paired, `${context}: paired again (${c.state()})`);
    }
  }
});
