// e2e.mjs: the SDK end to end against a real `loudsync serve`, for bench/run.mjs. One Node
// process holds every client: the built package's `Client` over the `ws` package, on loopback.
//
// How it works: `startBenchServer` spawns the release binary (test/support/server.mjs's
// `startServer`, 127.0.0.1 port 0) with the limits `loudsync bench` lifts for its own spawned
// servers (one address makes every connection: a trusted proxy, no join rate, no per-address
// caps), `--max-members` for the session and `--rate-limit 0`, so the sender's burst is not
// throttled. `runPass` then connects `members` clients to one session (a host, which sends,
// and members - 1 receivers; up to 25 joins in flight), and measures, in this order:
// - throughput: `bursts` times, the host sends `messages` messages `{n}` at once (the SDK's
//   pacer opened up: `sendRate`/`sendBurst`/`queueLimit` above the count) and the time from the
//   first `send` to the last receiver holding all of them is added up; every receiver is
//   checked to hold every n exactly once and in order, without losing its connection; Node's
//   and the server's CPU over the bursts. A burst stays under the server's replay buffer of a
//   resumable member (`--resume-buffer-messages`, 1000 unacknowledged frames): the server
//   writes a burst to every socket before one receiver's `ack` (every 100) is back, so a
//   burst of 1000 ends the resumable receivers' places (`buffer_overflow`);
// - fan-out latency, the same measurement as `loudsync bench handoff`'s `message` row: `rounds`
//   rounds, each one message of about 1126 bytes on the wire, the time from `send` to the first
//   and to the last receiver, a 20 ms gap between rounds (the Rust bench's `--gap`);
// - the timers pending in the process (bench/timers.mjs's counter) once everyone is joined:
//   the SDK holds one per client, whatever the table's size.
// Every wait is bounded and fails the run with what was missing.
import WebSocket from "ws";
import { readFileSync } from "node:fs";
import { Client } from "../dist/esm/index.js";
import { startServer } from "../test/support/server.mjs";
import { countTimers } from "./timers.mjs";

/** The flags `loudsync bench` gives its spawned servers (crates/cli/src/bench/mod.rs), and ours. */
export function benchServerArgs(members) {
  return [
    "--trusted-proxy", "127.0.0.1",
    "--join-rate-per-address", "0",
    "--max-connections-per-address", "1000000",
    "--max-unjoined-per-address", "1000000",
    "--max-members", String(members),
    "--rate-limit", "0",
    "--log", "warn",
  ];
}

/** Starts the server for a pass of `members`. */
export function startBenchServer(members) {
  return startServer(benchServerArgs(members), { env: { LOUDSYNC_LOG: "warn" } });
}

/** CPU seconds (user + system) a process has used, from /proc (Linux), or null. */
function processCpuSeconds(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in ticks of 10 ms
  } catch {
    return null;
  }
}

/** This process's CPU seconds. */
function ownCpuSeconds() {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1e6;
}

/** Resolves when `isDone()` holds, checked by `poke()`; rejects after `ms` with `describe()`. */
function condition(ms, describe) {
  let settle;
  const promise = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`not within ${ms} ms: ${describe()}`)), ms);
    settle = () => {
      clearTimeout(timer);
      resolve();
    };
  });
  return { promise, settle };
}

/** Runs `tasks` (functions returning promises) with at most `limit` in flight. */
async function inBatches(tasks, limit) {
  const results = [];
  for (let i = 0; i < tasks.length; i += limit) {
    results.push(...(await Promise.all(tasks.slice(i, i + limit).map((task) => task()))));
  }
  return results;
}

/** The percentile `p` (0-1) of sorted `values`. */
function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)];
}

/** p50 / p99 / max of `values`, ms. */
function summary(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return { p50: percentile(sorted, 0.5), p99: percentile(sorted, 0.99), max: sorted[sorted.length - 1], count: sorted.length };
}

/**
 * One pass: `members` clients (resumable or plain) against `server`.
 * @returns {Promise<object>} the figures (see the module comment)
 */
export async function runPass(server, { members, messages, bursts, rounds, resume, timeoutMs = 15_000 }) {
  const timers = countTimers();
  const clients = [];
  try {
    const pacerOff = { sendRate: 1e6, sendBurst: 1e6, queueLimit: Math.max(messages * 2, 1000) };
    const base = { url: server.url, sessionId: `bench-${resume ? "r" : "p"}`, WebSocket, resume, ...pacerOff };
    const host = new Client({ ...base, sessionName: "bench", device: { id: "sender", name: "sender", type: "host" } });
    clients.push(host);
    const joinStart = performance.now();
    await host.connect();
    const receivers = Array.from({ length: members - 1 }, (_, i) =>
      new Client({ ...base, device: { id: `r${i}`, name: `receiver ${i}`, type: "client" } }));
    clients.push(...receivers);
    await inBatches(receivers.map((client) => () => client.connect()), 25);
    const joinSeconds = (performance.now() - joinStart) / 1000;
    const everyoneSeen = condition(timeoutMs, () => `the host sees ${host.members().length} of ${members}`);
    const checkTable = () => {
      if (host.members().length === members) everyoneSeen.settle();
    };
    const stopWatching = host.onAny(checkTable);
    checkTable();
    await everyoneSeen.promise;
    stopWatching();
    const timersJoined = timers.pending();

    // Throughput: `bursts` times `messages` at once; every receiver must hold them all once, in order.
    const got = receivers.map(() => ({ next: 0, wrong: 0 }));
    const otherEvents = new Map();
    const stopCounting = receivers.map((client) => client.onAny((event) => {
      if (event.type === "message" || event.type === "latency") return;
      const detail = event.type === "error" ? event.error?.code : event.type === "resumeFailed" ? event.reason : null;
      const name = detail ? `${event.type} ${detail}` : event.type;
      otherEvents.set(name, (otherEvents.get(name) ?? 0) + 1);
    }));
    let complete = 0;
    let burstDone = null;
    const unsubscribe = receivers.map((client, i) => client.on("message", (event) => {
      const mine = got[i];
      const n = event.data?.n;
      if (typeof n !== "number") return;
      if (n !== mine.next) mine.wrong += 1;
      mine.next = n + 1;
      if (mine.next % messages === 0 && (complete += 1) === receivers.length) burstDone?.settle();
    }));
    const cpuBefore = { node: ownCpuSeconds(), server: processCpuSeconds(server.process.pid) };
    let elapsedMs = 0;
    let sentMs = 0;
    for (let burst = 0; burst < bursts; burst += 1) {
      complete = 0;
      burstDone = condition(timeoutMs, () =>
        `burst ${burst + 1}: ${complete} of ${receivers.length} receivers hold all ${messages}; fewest held ` +
        `${Math.min(...got.map((g) => g.next)) - burst * messages}; the receivers' other events: ` +
        JSON.stringify(Object.fromEntries(otherEvents)));
      const sendStart = performance.now();
      for (let n = burst * messages; n < (burst + 1) * messages; n += 1) host.send({ n });
      sentMs += performance.now() - sendStart;
      await burstDone.promise;
      elapsedMs += performance.now() - sendStart;
    }
    const cpuAfter = { node: ownCpuSeconds(), server: processCpuSeconds(server.process.pid) };
    const wrong = got.reduce((sum, g) => sum + g.wrong, 0);
    if (wrong > 0 || got.some((g) => g.next !== bursts * messages)) {
      throw new Error(`${wrong} messages out of order, doubled or missing`);
    }
    if (otherEvents.has("connectionLost")) throw new Error(`receivers lost their connection: ${JSON.stringify(Object.fromEntries(otherEvents))}`);
    for (const stop of [...unsubscribe, ...stopCounting]) stop();
    const timersAfterBurst = timers.pending();

    // Fan-out latency: one ~1126-byte frame per round, to every receiver.
    const hostId = host.clientId() ?? "";
    const framePrefix = JSON.stringify({ type: "message", from: hostId, data: { round: 0, pad: "" }, timestamp: Date.now() });
    const seqBytes = resume ? `"seq":${messages + 10},`.length : 0;
    const pad = "x".repeat(Math.max(0, 1126 - framePrefix.length - seqBytes));
    const frameBytes = framePrefix.length + seqBytes + pad.length;
    const toFirst = [];
    const toLast = [];
    for (let round = 1; round <= rounds; round += 1) {
      let arrived = 0;
      let firstAt = 0;
      const roundDone = condition(5_000, () => `round ${round}: ${arrived} of ${receivers.length} receivers`);
      const stops = receivers.map((client) => client.on("message", (event) => {
        if (event.data?.round !== round) return;
        arrived += 1;
        if (arrived === 1) firstAt = performance.now();
        if (arrived === receivers.length) roundDone.settle();
      }));
      const start = performance.now();
      host.send({ round, pad });
      await roundDone.promise;
      const end = performance.now();
      for (const stop of stops) stop();
      toFirst.push(firstAt - start);
      toLast.push(end - start);
      await new Promise((resolve) => setTimeout(resolve, 20)); // the Rust bench's --gap 20ms
    }
    const timersEnd = timers.pending();
    const nodeCpu = cpuAfter.node - cpuBefore.node;
    const serverCpu = cpuAfter.server === null || cpuBefore.server === null ? null : cpuAfter.server - cpuBefore.server;
    const deliveries = bursts * messages * receivers.length;
    return {
      resume,
      members,
      receivers: receivers.length,
      messages,
      bursts,
      joinSeconds,
      burst: {
        deliveries,
        sendMs: sentMs,
        elapsedMs,
        perSecond: deliveries / (elapsedMs / 1000),
        nodeCpuUsPerDelivery: (nodeCpu * 1e6) / deliveries,
        nodeCpuShare: nodeCpu / (elapsedMs / 1000),
        serverCpuShare: serverCpu === null ? null : serverCpu / (elapsedMs / 1000),
      },
      fanout: { rounds, frameBytes, toFirst: summary(toFirst), toLast: summary(toLast) },
      timers: { clients: clients.length, joined: timersJoined, afterBurst: timersAfterBurst, end: timersEnd, tableSize: host.members().length },
    };
  } finally {
    await Promise.all(clients.map((client) => client.disconnect().catch(() => {})));
    timers.restore();
  }
}
