// run.mjs: the TypeScript SDK's benchmark, `npm run bench` (after `npm run build`). In one run
// it measures, and prints side by side (docs/BENCHMARKS.md "TypeScript SDK" quotes it):
// 1. size: dist/loudsync-client.min.js minified and gzipped, and the session layer without
//    pairing (bench/size.mjs);
// 2. the machine's CPU per received frame on a fake clock (bench/machine.mjs), then the whole
//    driver per frame over an in-process socket (bench/timers.mjs);
// 3. end to end against a real `loudsync serve` (release binary, 127.0.0.1 port 0): N clients in
//    one session, bursts of M messages from one of them, resumable then plain (bench/e2e.mjs),
//    and the same fan-out measured by the Rust load generator, `loudsync bench handoff`;
// 4. timers: pending timers with 2000 members in the table (in-process socket) and with N
//    clients joined to the real server.
// Every step is bounded; a watchdog ends the run after 120 s. Flags: --members N (100),
// --messages M per burst (500), --bursts B (4), --rounds R (50), --frames F (100000),
// --no-rust, --json. Server binary: $LOUDSYNC_BIN or <repo>/target/release/loudsync.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { cpus } from "node:os";
import { measureSize } from "./size.mjs";
import { measureMachine } from "./machine.mjs";
import { measureDriver } from "./timers.mjs";
import { startBenchServer, runPass, benchServerArgs } from "./e2e.mjs";
import { serverBin } from "../test/support/server.mjs";

const WATCHDOG_MS = 120_000;

/** The command line's flags, with the defaults above. */
function parseFlags(argv) {
  const flags = { members: 100, messages: 500, bursts: 4, rounds: 50, frames: 100_000, rust: true, json: false };
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    if (arg === "--no-rust") flags.rust = false;
    else if (arg === "--json") flags.json = true;
    else if (["--members", "--messages", "--bursts", "--rounds", "--frames"].includes(arg)) {
      const value = Number(argv[(i += 1)]);
      if (!Number.isInteger(value) || value < 1) throw new Error(`${arg} needs a positive integer`);
      flags[arg.slice(2)] = value;
    } else throw new Error(`unknown flag ${arg} (see the comment at the top of bench/run.mjs)`);
  }
  if (flags.members < 2) throw new Error("--members must be at least 2 (a sender and a receiver)");
  if (flags.messages + flags.members > 1000) {
    throw new Error("--messages plus --members must stay under the server's replay buffer of 1000 frames (see bench/e2e.mjs)");
  }
  return flags;
}

/** `loudsync bench handoff`'s message fan-out for the same session size, or why not. */
function rustFanout(flags) {
  const args = ["bench", "handoff", "--spawn-server", "--members", String(flags.members),
    "--rounds", String(flags.rounds), "--json"];
  const run = spawnSync(serverBin, args, { encoding: "utf8", timeout: 60_000 });
  const command = `loudsync ${args.join(" ")}`;
  if (run.status !== 0) return { command, error: `exit ${run.status ?? run.signal}: ${run.stderr.slice(-500)}` };
  const report = JSON.parse(run.stdout);
  return { command, message: report.fanout.message };
}

const kib = (bytes) => `${(bytes / 1024).toFixed(1)} KiB`;
const fixed = (value, digits = 2) => (value === null || value === undefined ? "-" : value.toFixed(digits));
const grouped = (value) => Math.round(value).toLocaleString("en-US").replace(/,/g, " ");

/** Prints the results as the tables docs/BENCHMARKS.md shows. */
function print(result) {
  const { size, machine, driver, passes, rust, flags } = result;
  console.log(`loudsync-client bench, Node ${process.version}, ${cpus().length} CPUs, server ${serverBin}`);
  console.log("\n1. size (esbuild, minified, ES2020, ESM; gzip -9)");
  console.log(`  dist/loudsync-client.min.js       ${kib(size.bundle.minified)} minified, ${kib(size.bundle.gzipped)} gzipped`);
  console.log(`  session layer alone (no pairing)  ${kib(size.session.minified)} minified, ${kib(size.session.gzipped)} gzipped`);
  console.log(`  pairing's modules in the bundle   ${kib(size.pairingShare)} minified`);
  console.log(`  largest modules: ${size.modules.slice(0, 6).map(([path, bytes]) => `${path} ${kib(bytes)}`).join(", ")}`);
  console.log("\n2. CPU per received frame: handleActivity + handleText + drain + pollTimeout (fake clock)");
  for (const c of machine.cases) {
    console.log(`  ${c.name.padEnd(42)} ${grouped(c.nsPerFrame).padStart(8)} ns/frame  (${grouped(c.frames)} frames; ${c.note})`);
  }
  console.log(`  whole driver (Client over an in-process socket, numbered message, listener)  ${grouped(driver.driverNsPerMessage)} ns/frame (${grouped(driver.messages)} frames, ${driver.acksSent} acks)`);
  console.log(`\n3. end to end: ${flags.members} clients in one session (1 sender, ${flags.members - 1} receivers), loudsync serve on loopback`);
  for (const p of passes) {
    const mode = p.resume ? "resumable (default)" : "plain (resume: false)";
    console.log(`  ${mode}: joined in ${fixed(p.joinSeconds)} s`);
    console.log(`    ${p.bursts} bursts of ${p.messages}: ${grouped(p.burst.deliveries)} deliveries in ${fixed(p.burst.elapsedMs, 0)} ms = ` +
      `${grouped(p.burst.perSecond)} messages/s received; Node ${fixed(p.burst.nodeCpuUsPerDelivery)} us CPU per delivery ` +
      `(${fixed(p.burst.nodeCpuShare * 100, 0)} % of a core), server ${fixed(p.burst.serverCpuShare === null ? null : p.burst.serverCpuShare * 100, 0)} % of a core`);
    console.log(`    fan-out of one ${p.fanout.frameBytes} B message, ${p.fanout.rounds} rounds: send -> every receiver p50/p99/max ` +
      `${fixed(p.fanout.toLast.p50)} / ${fixed(p.fanout.toLast.p99)} / ${fixed(p.fanout.toLast.max)} ms; -> first ` +
      `${fixed(p.fanout.toFirst.p50)} / ${fixed(p.fanout.toFirst.p99)} / ${fixed(p.fanout.toFirst.max)} ms`);
  }
  if (rust?.message) {
    const m = rust.message;
    console.log(`  Rust load generator (${rust.command}), message row, ${m.frame_bytes_max} B:`);
    console.log(`    send -> every other member p50/p99/max ${m.send_to_last_member.p50_ms} / ${m.send_to_last_member.p99_ms} / ${m.send_to_last_member.max_ms} ms; ` +
      `-> first ${m.send_to_first_member.p50_ms} / ${m.send_to_first_member.p99_ms} / ${m.send_to_first_member.max_ms} ms`);
  } else if (rust) {
    console.log(`  Rust load generator: ${rust.command}: ${rust.error}`);
  }
  console.log("\n4. timers pending (counted by a patched setTimeout)");
  console.log(`  one Client, ${driver.tableSize / 2} members in its table: ${driver.afterJoin} after the welcome, ${driver.afterJoins} after ${driver.tableSize / 2} member_joined (${driver.tableSize} members), ` +
    `${driver.afterMessages} after ${grouped(driver.messages)} messages (${driver.setTimeoutPerFrame} setTimeout calls per frame), ${driver.afterDisconnect} after disconnect`);
  for (const p of passes) {
    console.log(`  ${p.timers.clients} Clients joined to the server (${p.timers.tableSize} members each, ${p.resume ? "resumable" : "plain"}): ` +
      `${p.timers.joined} pending, ${p.timers.afterBurst} after the bursts, ${p.timers.end} after the fan-out`);
  }
}

async function main() {
  const flags = parseFlags(process.argv.slice(2));
  if (!existsSync(serverBin)) throw new Error(`no server at ${serverBin}: cargo build --release --bin loudsync, or set LOUDSYNC_BIN`);
  const watchdog = setTimeout(() => {
    console.error(`bench: not finished within ${WATCHDOG_MS / 1000} s`);
    process.exit(2);
  }, WATCHDOG_MS);
  const started = performance.now();
  const size = await measureSize();
  const machine = measureMachine({ frames: flags.frames });
  const driver = await measureDriver({ tableSize: 1000, joins: 1000, messages: 50_000 });
  const failures = [];
  if (driver.afterJoin !== 1 || driver.afterJoins !== 1 || driver.afterMessages !== 1) failures.push("a Client holds more than one timer");
  const passes = [];
  const server = await startBenchServer(flags.members);
  try {
    for (const resume of [true, false]) {
      passes.push(await runPass(server, { members: flags.members, messages: flags.messages, bursts: flags.bursts, rounds: flags.rounds, resume }));
    }
  } finally {
    await server.stop();
  }
  for (const p of passes) {
    if (p.timers.joined !== p.timers.clients || p.timers.end !== p.timers.clients) failures.push(`${p.timers.clients} clients hold ${p.timers.joined} timers`);
  }
  const rust = flags.rust ? rustFanout(flags) : null;
  const result = {
    flags,
    serverArgs: benchServerArgs(flags.members),
    size,
    machine,
    driver,
    passes,
    rust,
    seconds: (performance.now() - started) / 1000,
  };
  clearTimeout(watchdog);
  if (flags.json) console.log(JSON.stringify(result, null, 2));
  else {
    print(result);
    console.log(`\n(${fixed(result.seconds, 1)} s; server flags: ${result.serverArgs.join(" ")})`);
  }
  if (failures.length > 0) {
    console.error(`bench: ${failures.join("; ")}`);
    process.exitCode = 1;
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
