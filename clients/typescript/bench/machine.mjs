// machine.mjs: the sans-IO machine's CPU cost per received frame, for bench/run.mjs. A
// `Machine` from the built package (dist/esm) is joined on a fake clock (numbers, no timers,
// no socket), then fed the same kind of server frame many times; per frame it does what the
// driver (src/client.ts) does with a text frame: `handleActivity`, `handleText`, drain every
// action (`pollAction`), `pollTimeout`. The loop is timed with `process.hrtime.bigint()` in
// rounds after a warm-up round; the median round is reported as ns per frame. The frames are
// prepared as strings beforehand, so building them is not counted; parsing them is.
//
// Cases: a `message` on a plain connection; a `member_joined` into a table of 1000 (fresh ids,
// the table reset to 1000 between batches of 100, outside the timing; a tenth of the frames,
// each join being a copy of the table) and, for contrast, into a table of 10 (reset every 10);
// a table filled from 2 to 1000 by 998 joins on a fresh machine (what one client pays while a
// big session fills; cold, one pass per machine); a numbered `message` on a resumable
// connection (the seed 003 handshake done, every frame a new `seq`, an `ack` sent every
// `ackEvery` = 100 frames).
import { Machine, resolveConfig } from "../dist/esm/index.js";

/** The server's local token in the handshake (32 characters, as the tests' `A`). */
const SERVER_TOKEN = "S".repeat(32);
/** An arbitrary Unix time for the machine's stamps. */
const UNIX_T0 = 1_800_000_000_000;
/** The members' frames carry a small application payload, as a sync app sends. */
const PAYLOAD = { track: 3, position: 12.5, playing: true };

/** A member entry of the wire. */
function member(id, isHost = false) {
  return { id, name: `${id} name`, isHost, connectionStatus: "connected", joinedAt: UNIX_T0, handoffReady: false };
}

/** A `member_list` frame: the host `h`, this client `c1`, then `c0002`... up to `size` entries. */
function memberList(size) {
  const members = [member("h", true), member("c1")];
  for (let i = members.length; i < size; i += 1) members.push(member(`c${String(i).padStart(4, "0")}`));
  return JSON.stringify({ type: "member_list", timestamp: UNIX_T0, members });
}

/** Drains every queued action; returns how many were `send`s. */
function drain(machine) {
  let sends = 0;
  for (let action = machine.pollAction(); action !== undefined; action = machine.pollAction()) {
    if (action.type === "send") sends += 1;
  }
  return sends;
}

/** A member's settings (plain or resumable) with the document's defaults. */
function config(resume) {
  return resolveConfig({
    url: "ws://bench/",
    sessionId: "s1",
    device: { id: "dev-1", name: "Phone", type: "client" },
    resume,
    random: () => 0.5,
  });
}

/** A machine joined as `c1` at `now`, plain or through the resume handshake, with a table of `tableSize`. */
function joinedMachine(now, { resume, tableSize }) {
  const machine = new Machine(config(resume), now, UNIX_T0);
  machine.start(now);
  drain(machine);
  machine.handleConnected(now);
  drain(machine);
  if (resume) {
    machine.handleText(now, JSON.stringify({ type: "token", timestamp: UNIX_T0, token: SERVER_TOKEN }));
    machine.handleText(now, JSON.stringify({ type: "token", timestamp: UNIX_T0, token: SERVER_TOKEN }));
  }
  const sessionInfo = { id: "s1", name: "S", hostId: "h" };
  machine.handleText(now, JSON.stringify({ type: "welcome", timestamp: UNIX_T0, clientId: "c1", sessionInfo, resumable: resume }));
  const list = memberList(tableSize);
  machine.handleText(now, resume ? `{"seq":1,${list.slice(1)}` : list);
  drain(machine);
  if (machine.state() !== "connected" || machine.members().length !== tableSize || machine.isResumable() !== resume) {
    throw new Error(`bench machine not joined as expected: ${machine.state()}, ${machine.members().length} members`);
  }
  return machine;
}

/** The median of `values`. */
function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

/**
 * Feeds `frameAt(i)` to `machine` `count` times per round, as the driver does, after a
 * warm-up round; `between(i)` (untimed, optional) runs before frame `i` when `batch` divides
 * it. Returns ns per frame (median round, every round), the `send` actions counted and the
 * warm-up round's total ns (with `rounds: 0` the only round: a cold, one-pass timing).
 */
function timeFrames(machine, { frameAt, count, rounds, batch = 0, between }) {
  let now = 20_000;
  let sends = 0;
  let warmUpNs = 0;
  const perRound = [];
  for (let round = 0; round <= rounds; round += 1) {
    let elapsed = 0n;
    let start = process.hrtime.bigint();
    for (let i = 0; i < count; i += 1) {
      if (batch > 0 && i % batch === 0 && between) {
        elapsed += process.hrtime.bigint() - start;
        between(round * count + i);
        start = process.hrtime.bigint();
      }
      const text = frameAt(round * count + i);
      now += 0.01;
      machine.handleActivity(now);
      machine.handleText(now, text);
      sends += drain(machine);
      machine.pollTimeout();
    }
    elapsed += process.hrtime.bigint() - start;
    if (round > 0) perRound.push(Number(elapsed) / count); // round 0 warms up
    else warmUpNs = Number(elapsed);
  }
  return { nsPerFrame: median(perRound), rounds: perRound, sends, warmUpNs };
}

/**
 * Runs every case; `frames` is the total measured per case (default 100 000, in 5 rounds).
 * @returns {{ cases: { name: string, frames: number, nsPerFrame: number, rounds: number[], note: string }[] }}
 */
export function measureMachine({ frames = 100_000, rounds = 5 } = {}) {
  const count = Math.max(Math.floor(frames / rounds), 100);
  const cases = [];

  // 1. A `message` frame, plain connection.
  {
    const machine = joinedMachine(10_000, { resume: false, tableSize: 2 });
    const texts = Array.from({ length: 1000 }, (_, i) =>
      JSON.stringify({ type: "message", timestamp: UNIX_T0 + i, from: "h", data: { ...PAYLOAD, n: i } }));
    const r = timeFrames(machine, { frameAt: (i) => texts[i % texts.length], count, rounds });
    cases.push({ name: "message (plain connection)", frames: count * rounds, ...r, note: `${texts[0].length} B frame` });
  }

  // 2. `member_joined` into a table of 1000 (and of 10): fresh ids, the table reset every
  // `batch` joins. Each join into 1000 costs a copy of the table: a tenth of the frames do.
  for (const [tableSize, batch, share] of [[1000, 100, 10], [10, 10, 1]]) {
    const joinCount = Math.max(Math.floor(count / share), batch);
    const machine = joinedMachine(10_000, { resume: false, tableSize });
    const list = memberList(tableSize);
    const joinedText = (i) => JSON.stringify({ type: "member_joined", timestamp: UNIX_T0, member: member(`n${i}`) });
    const texts = Array.from({ length: joinCount * (rounds + 1) }, (_, i) => joinedText(i));
    const r = timeFrames(machine, {
      frameAt: (i) => texts[i],
      count: joinCount,
      rounds,
      batch,
      between: () => {
        machine.handleText(30_000, list);
        drain(machine);
      },
    });
    if (machine.members().length !== tableSize + batch) throw new Error(`table holds ${machine.members().length}`);
    cases.push({
      name: `member_joined into a ${tableSize}-member table`,
      frames: joinCount * rounds,
      ...r,
      note: `${tableSize}..${tableSize + batch - 1} members before each join`,
    });
  }

  // 2b. A session filling up: one machine gets the member_joined of 998 others (2 -> 1000 members).
  {
    const perRound = [];
    for (let round = 0; round <= rounds; round += 1) {
      const machine = joinedMachine(10_000, { resume: false, tableSize: 2 });
      const texts = Array.from({ length: 998 }, (_, i) =>
        JSON.stringify({ type: "member_joined", timestamp: UNIX_T0, member: member(`f${i}`) }));
      const r = timeFrames(machine, { frameAt: (i) => texts[i % 998], count: 998, rounds: 0 });
      if (machine.members().length !== 1000) throw new Error(`the filled table holds ${machine.members().length}`);
      if (round > 0) perRound.push(r.warmUpNs / 1e6);
    }
    const totalMs = median(perRound);
    cases.push({
      name: "member_joined filling a table 2 -> 1000",
      frames: 998 * rounds,
      nsPerFrame: (totalMs * 1e6) / 998,
      rounds: perRound,
      note: `${totalMs.toFixed(1)} ms for the 998 joins (median of ${rounds} fresh machines)`,
    });
  }

  // 3. Numbered `message` frames on a resumable connection, acked every 100.
  {
    const machine = joinedMachine(10_000, { resume: true, tableSize: 2 });
    const body = (i) => JSON.stringify({ type: "message", timestamp: UNIX_T0 + i, from: "h", data: { ...PAYLOAD, n: i } }).slice(1);
    const texts = Array.from({ length: count * (rounds + 1) }, (_, i) => `{"seq":${i + 2},${body(i)}`);
    const r = timeFrames(machine, { frameAt: (i) => texts[i], count, rounds });
    const expectedAcks = Math.floor((count * (rounds + 1) + 1) / 100);
    if (r.sends < expectedAcks) throw new Error(`numbered frames: ${r.sends} acks sent, expected ${expectedAcks}`);
    cases.push({
      name: "numbered message (resumable, acks)",
      frames: count * rounds,
      ...r,
      note: `${r.sends} acks sent for ${count * (rounds + 1)} frames`,
    });
  }
  return { cases };
}
