// timers.mjs: counts timers, and times the whole driver per frame, for bench/run.mjs.
//
// `countTimers()` replaces `globalThis.setTimeout` / `clearTimeout` with wrappers that keep
// the set of pending timers (added when set, removed when cleared or fired) and count every
// call; `restore()` puts the originals back. The SDK's driver calls the global `setTimeout`
// through its default environment, so with the counter installed every timer the SDK holds is
// in the set (and so is anything else the process sets meanwhile: the e2e run reads it while
// only the SDK's clients and `ws` run).
//
// `measureDriver()` runs one real `Client` (the driver, its machine and its emitter, with the
// default environment: `performance.now()` and the patched `setTimeout`) over `FakeServer`, an
// in-process WebSocket that plays the server of seed 003: it answers the resume handshake,
// welcomes the client and sends a member_list of 1000 (and closes on `leave` or the formal disconnect), then 1000 `member_joined` (a table of
// 2000), then numbered `message` frames, all through `onmessage` as `ws` would. It reports the
// timers pending at each point (the issue: "no timers per member"), the setTimeout calls per
// frame, and the driver's ns per received `message` frame (listener included, socket not).
import { Client } from "../dist/esm/index.js";

const SERVER_TOKEN = "S".repeat(32);
const UNIX_T0 = 1_800_000_000_000;

/** Installs the counting setTimeout / clearTimeout; see the module comment. */
export function countTimers() {
  const original = { setTimeout: globalThis.setTimeout, clearTimeout: globalThis.clearTimeout };
  const pending = new Set();
  const counts = { set: 0, cleared: 0, fired: 0 };
  globalThis.setTimeout = function countedSetTimeout(callback, ms, ...args) {
    counts.set += 1;
    const handle = original.setTimeout.call(globalThis, (...inner) => {
      pending.delete(handle);
      counts.fired += 1;
      callback(...inner);
    }, ms, ...args);
    pending.add(handle);
    return handle;
  };
  globalThis.clearTimeout = function countedClearTimeout(handle) {
    if (pending.delete(handle)) counts.cleared += 1;
    return original.clearTimeout.call(globalThis, handle);
  };
  return {
    /** Timers set and neither cleared nor fired yet. */
    pending: () => pending.size,
    /** Calls so far: `set`, `cleared` (of pending ones), `fired`. */
    counts: () => ({ ...counts }),
    /** Puts the original functions back. */
    restore() {
      globalThis.setTimeout = original.setTimeout;
      globalThis.clearTimeout = original.clearTimeout;
    },
  };
}

/** A member entry of the wire. */
function member(id, isHost = false) {
  return { id, name: `${id} name`, isHost, connectionStatus: "connected", joinedAt: UNIX_T0, handoffReady: false };
}

/**
 * An in-process WebSocket playing a LoudSync server (the WHATWG surface the SDK uses). It
 * opens on a microtask, answers the handshake's first `token` with the server's token and
 * `join` with the confirmation, `welcome` and a numbered `member_list` of `tableSize`.
 * `FakeServer.last` is the newest socket; `deliver(text)` plays a frame from the server.
 */
class FakeServer {
  static last = null;
  static tableSize = 1000;
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
    this.sent = [];
    this.seq = 0;
    this.tokens = 0;
    FakeServer.last = this;
    queueMicrotask(() => {
      this.readyState = 1;
      this.onopen?.({});
    });
  }
  send(text) {
    this.sent.push(text);
    const frame = JSON.parse(text);
    if (frame.type === "token" && (this.tokens += 1) === 1) {
      this.deliver(JSON.stringify({ type: "token", timestamp: UNIX_T0, token: SERVER_TOKEN }));
    } else if (frame.type === "join") {
      this.deliver(JSON.stringify({ type: "token", timestamp: UNIX_T0, token: SERVER_TOKEN }));
      const sessionInfo = { id: "s1", name: "S", hostId: "h" };
      this.deliver(JSON.stringify({ type: "welcome", timestamp: UNIX_T0, clientId: "c1", sessionInfo, resumable: true }));
      const members = [member("h", true), member("c1")];
      while (members.length < FakeServer.tableSize) members.push(member(`m${members.length}`));
      this.deliverNumbered({ type: "member_list", timestamp: UNIX_T0, members });
    } else if (frame.type === "leave" || (frame.type === "token" && frame.token.length === 64)) {
      // `leave`, or seed 003's formal disconnect (the connection token): the server closes.
      this.close(1000, "left");
    }
  }
  close(code = 1000, reason = "") {
    if (this.readyState === 3) return;
    this.readyState = 3;
    queueMicrotask(() => this.onclose?.({ code, reason, wasClean: true }));
  }
  /** A frame from the server. */
  deliver(text) {
    this.onmessage?.({ data: text });
  }
  /** A frame from the server with the next `seq`. */
  deliverNumbered(frame) {
    this.seq += 1;
    this.deliver(`{"seq":${this.seq},${JSON.stringify(frame).slice(1)}`);
  }
}

/**
 * Runs the driver over FakeServer with the counter installed (see the module comment).
 * @returns {Promise<{ afterJoin: number, afterJoins: number, afterMessages: number, tableSize: number,
 *   messages: number, driverNsPerMessage: number, setTimeoutPerFrame: number, acksSent: number }>}
 */
export async function measureDriver({ tableSize = 1000, joins = 1000, messages = 50_000 } = {}) {
  FakeServer.tableSize = tableSize;
  const timers = countTimers();
  try {
    const client = new Client({
      url: "ws://fake/",
      sessionId: "s1",
      device: { id: "dev-1", name: "Phone", type: "client" },
      WebSocket: FakeServer,
    });
    let received = 0;
    client.on("message", () => {
      received += 1;
    });
    await client.connect();
    const server = FakeServer.last;
    const afterJoin = timers.pending();
    for (let i = 0; i < joins; i += 1) {
      server.deliverNumbered({ type: "member_joined", timestamp: UNIX_T0, member: member(`j${i}`) });
    }
    const afterJoins = timers.pending();
    if (client.members().length !== tableSize + joins) throw new Error(`table holds ${client.members().length}`);
    const texts = Array.from({ length: messages }, (_, i) =>
      `{"seq":${server.seq + 1 + i},"type":"message","timestamp":${UNIX_T0 + i},"from":"h","data":{"track":3,"position":12.5,"n":${i}}}`);
    server.seq += messages;
    const before = timers.counts().set;
    const start = process.hrtime.bigint();
    for (const text of texts) server.deliver(text);
    const elapsed = Number(process.hrtime.bigint() - start);
    const setCalls = timers.counts().set - before;
    const afterMessages = timers.pending();
    if (received !== messages) throw new Error(`the listener got ${received} of ${messages} messages`);
    const acksSent = server.sent.filter((text) => text.includes('"type":"ack"')).length;
    await client.disconnect();
    return {
      tableSize: tableSize + joins,
      afterJoin,
      afterJoins,
      afterMessages,
      afterDisconnect: timers.pending(),
      messages,
      driverNsPerMessage: elapsed / messages,
      setTimeoutPerFrame: setCalls / messages,
      acksSent,
    };
  } finally {
    timers.restore();
  }
}
