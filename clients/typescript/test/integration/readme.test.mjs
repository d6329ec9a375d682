// readme.test.mjs: keeps the package README and examples/node-member.mjs from rotting. It
// extracts the README's code blocks whose first line is a `// README:TAG` marker (browser, node,
// handoff, media, pairing; and the repository README's `// README:root`), replaces the README's
// server address ws://127.0.0.1:8080/ with a real `loudsync serve` started on a free loopback
// port (support/server.mjs), and runs each block as it is written in its own `node
// --input-type=module -e` process with this package as its directory (so `import ... from
// "loudsync-client"` is the built package, by self-reference, and `ws` is the dev dependency).
// The browser block runs with `ws` installed as `globalThis.WebSocket` first, as a browser or
// React Native provides one. Each block's output is checked against what the README says it
// does, with peers (SDK clients from Node) playing the other members where a block needs some.
// examples/node-member.mjs runs against a real server with a second member (names and messages
// with control characters and bidi overrides printed escaped, stdin lines sent, /members,
// /quit), and against a fake, hostile server whose member names carry ESC sequences (the real
// server refuses such names at join, which is checked too). The README's size figures are
// checked against the built bundle (within 10 %), and examples/browser.html's import against the
// bundle's exports. Every wait is bounded; every child process is killed when its test ends.
// Run: `npm run build && node --test --test-concurrency=1 test/integration/readme.test.mjs`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { WebSocketServer } from "ws";
import { LoudSyncError } from "../../dist/esm/index.js";
import { startServer, within, WAIT_MS } from "../support/server.mjs";
import { peers, hostOptions, memberOptions } from "../support/peers.mjs";

const packageRoot = join(dirname(fileURLToPath(import.meta.url)), "../..");
const README_URL = "ws://127.0.0.1:8080/";
const RAN_TAGS = ["browser", "node", "handoff", "media", "pairing"];

/** The marked code blocks of a README (the package's, or `file`): tag -> code. */
function readmeBlocks(file = join(packageRoot, "README.md")) {
  const text = readFileSync(file, "utf8");
  const blocks = new Map();
  for (const match of text.matchAll(/^```(?:js|javascript|ts|typescript|tsx)\n([\s\S]*?)^```$/gm)) {
    const code = match[1];
    const marker = /^\/\/ README:([a-z-]+)[^\n]*\n/.exec(code);
    if (!marker) continue;
    assert.ok(!blocks.has(marker[1]), `two README blocks are marked ${marker[1]}`);
    blocks.set(marker[1], code);
  }
  return blocks;
}

/** The block `tag` aimed at `url` (asserting that it names the README's address to replace). */
function blockFor(tag, url, file = undefined) {
  const code = readmeBlocks(file).get(tag);
  assert.ok(code, `the README has a block marked // README:${tag}`);
  assert.ok(code.includes(README_URL), `the ${tag} block connects to ${README_URL}`);
  return code.replaceAll(README_URL, url);
}

/** Every child process a test started, killed when it ends. */
function children(t) {
  const started = [];
  t.after(() => {
    for (const child of started) if (child.process.exitCode === null && child.process.signalCode === null) child.process.kill("SIGKILL");
  });
  return (args, what) => {
    const child = run(args, what);
    started.push(child);
    return child;
  };
}

/**
 * Spawns `node ...args` in the package's directory. `waitFor(pattern)` resolves with the
 * stdout line matching it (past or future), rejecting after WAIT_MS with all output so far;
 * `exited` resolves with `{ code, signal }`; `write(text)` goes to stdin.
 */
function run(args, what) {
  const child = spawn(process.execPath, args, { cwd: packageRoot, stdio: ["pipe", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  const waiters = new Set();
  const lines = () => stdout.split("\n");
  const check = () => {
    for (const waiter of [...waiters]) waiter();
  };
  child.stdout.setEncoding("utf8").on("data", (chunk) => {
    stdout += chunk;
    check();
  });
  child.stderr.setEncoding("utf8").on("data", (chunk) => {
    stderr += chunk;
  });
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => {
    check();
    resolve({ code, signal });
  }));
  const describe = () => `${what}\n--- stdout ---\n${stdout}\n--- stderr ---\n${stderr}`;
  return {
    process: child,
    stdout: () => stdout,
    describe,
    exited,
    write: (text) => child.stdin.write(text),
    endInput: () => child.stdin.end(),
    waitFor(pattern, timeoutMs = WAIT_MS) {
      return new Promise((resolve, reject) => {
        const waiter = () => {
          const line = lines().find((l) => pattern.test(l));
          if (line !== undefined) {
            waiters.delete(waiter);
            clearTimeout(timer);
            resolve(line);
          } else if (child.exitCode !== null || child.signalCode !== null) {
            waiters.delete(waiter);
            clearTimeout(timer);
            reject(new Error(`exited before printing ${pattern}\n${describe()}`));
          }
        };
        const timer = setTimeout(() => {
          waiters.delete(waiter);
          reject(new Error(`no line matching ${pattern} within ${timeoutMs} ms\n${describe()}`));
        }, timeoutMs);
        waiters.add(waiter);
        waiter();
      });
    },
  };
}

/** Runs README block `tag` against `url`; `globalWebSocket`: install ws as globalThis.WebSocket first. */
function runBlock(start, tag, url, { globalWebSocket = false, file = undefined } = {}) {
  const prelude = globalWebSocket ? 'import { WebSocket as __WS } from "ws"; globalThis.WebSocket = __WS;\n' : "";
  return start(["--input-type=module", "-e", prelude + blockFor(tag, url, file)], `README block ${tag}`);
}

/** Resolves once `child` exited with code 0 (bounded). */
async function exitsCleanly(child, timeoutMs = WAIT_MS) {
  const { code, signal } = await within(child.exited, timeoutMs, `${child.describe()}\nexit`);
  assert.equal(code, 0, `exit code ${code} (signal ${signal})\n${child.describe()}`);
}

/** A real server with default timers (the README's code uses the SDK's defaults) and a peer set. */
async function setup(t, args = []) {
  const server = await startServer(args);
  const set = peers();
  t.after(async () => {
    await set.closeAll();
    await server.stop();
  });
  return { server, peers: set, start: children(t) };
}

/** A raw control character (C0 but the newline, DEL, C1) in `text`, if any. */
const rawControl = (text) => /[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/.exec(text);

test("the README's marked blocks are the ones this test runs", () => {
  assert.deepEqual([...readmeBlocks().keys()].sort(), [...RAN_TAGS].sort());
});

test("the README's size figures are within 10 % of the built bundle's", () => {
  const text = readFileSync(join(packageRoot, "README.md"), "utf8");
  const claim = /\*\*Size:\*\* ([0-9.]+) KiB minified, \*\*([0-9.]+) KiB minified \+ gzipped\*\*/.exec(text);
  assert.ok(claim, "the README states the size as **Size:** N KiB minified, **M KiB minified + gzipped**");
  const bundle = readFileSync(join(packageRoot, "dist/loudsync-client.min.js"));
  const measured = [bundle.length / 1024, gzipSync(bundle, { level: 9 }).length / 1024];
  [Number(claim[1]), Number(claim[2])].forEach((stated, i) => {
    assert.ok(Math.abs(stated - measured[i]) <= 0.1 * measured[i],
      `README says ${stated} KiB, the bundle is ${measured[i].toFixed(1)} KiB: run npm run size and update the README`);
  });
});

test("examples/browser.html imports names the built bundle exports, from a path that exists", async () => {
  // The page itself was tried in chromium by hand; this keeps its import from rotting.
  const html = readFileSync(join(packageRoot, "examples/browser.html"), "utf8");
  const imports = [...html.matchAll(/import \{ ([^}]+) \} from "([^"]+)"/g)];
  assert.equal(imports.length, 1, "one import of the bundle");
  const [, names, from] = imports[0];
  const bundle = await import(pathToFileURL(join(packageRoot, "examples", from)).href);
  for (const name of names.split(",").map((n) => n.trim())) assert.equal(typeof bundle[name], "function", name);
});

test("the repository README's TypeScript SDK block joins, sends and prints messages", async (t) => {
  const { server, peers, start } = await setup(t);
  const host = await peers.connect(hostOptions(server.url, "party", "desk"));
  const block = runBlock(start, "root", server.url, { globalWebSocket: true, file: join(packageRoot, "../../README.md") });
  const sent = await host.log.waitFor("message");
  assert.deepEqual(sent.data, { track: "Blue in Green" });
  await peers.connect(memberOptions(server.url, "party", "phone"));
  await block.waitFor(/^phone name joined$/);
  host.client.send({ n: 1 });
  await block.waitFor(new RegExp(`^${host.id} \\{ n: 1 \\}$`));
  await host.client.leave();
  await exitsCleanly(block);
});

test("README:browser joins with the global WebSocket, sees members and messages, ends with the session", async (t) => {
  const { server, peers, start } = await setup(t);
  const host = await peers.connect(hostOptions(server.url, "party", "desk"));
  const block = runBlock(start, "browser", server.url, { globalWebSocket: true });
  await block.waitFor(/^connection: connected$/);
  await block.waitFor(/^members: desk name, Living-room browser$/);
  const sent = await host.log.waitFor("message");
  assert.deepEqual(sent.data, { track: "Blue in Green", position: 42.5 });
  const browserId = sent.from;
  host.client.send({ hello: 1 });
  await block.waitFor(new RegExp(`^${host.id} says \\{"hello":1\\}$`));
  const phone = await peers.connect(memberOptions(server.url, "party", "phone"));
  await block.waitFor(/^phone name joined$/);
  await phone.client.leave();
  await block.waitFor(new RegExp(`^${phone.id} left \\(left\\)$`));
  assert.ok(host.client.members().some((m) => m.id === browserId && m.name === "Living-room browser"));
  await host.client.leave();
  await block.waitFor(/^session over: /);
  await exitsCleanly(block);
});

test("README:node joins on Node 20 with ws, sends, prints joins and messages until the session ends", async (t) => {
  const { server, peers, start } = await setup(t);
  const host = await peers.connect(hostOptions(server.url, "party", "desk"));
  const block = runBlock(start, "node", server.url);
  const joined = await block.waitFor(/^joined as /);
  assert.match(joined, /^joined as c_[0-9a-z]{12} with desk name, Sara's phone$/);
  const sent = await host.log.waitFor("message");
  assert.deepEqual(sent.data, { track: "Blue in Green" });
  host.client.send({ n: 1 });
  await block.waitFor(new RegExp(`^${host.id}: \\{"n":1\\}$`));
  await peers.connect(memberOptions(server.url, "party", "phone"));
  await block.waitFor(/^"phone name" joined$/);
  await host.client.leave();
  await exitsCleanly(block);
});

test("README:handoff hands control from the desk to the phone and prints what the README says", async (t) => {
  const { start, server } = await setup(t);
  const block = runBlock(start, "handoff", server.url);
  await exitsCleanly(block, 3 * WAIT_MS);
  assert.deepEqual(block.stdout().trim().split("\n"), [
    'asked to take over at version 1: {"position":0,"track":"So What"}',
    "the phone is the host: true, term 2, the desk is handoff_ready",
    'the desk sees {"state":{"position":42,"track":"So What"},"version":2}',
  ]);
});

test("README:media gets a publish grant from a relay, and reports media_unavailable without one", async (t) => {
  const { start, server } = await setup(t, ["--media-listen", "127.0.0.1:0"]);
  const granted = runBlock(start, "media", server.url);
  await exitsCleanly(granted);
  const relayPort = /media relay listening on udp:\/\/127\.0\.0\.1:(\d+)/.exec(server.log())?.[1];
  assert.ok(relayPort, server.log());
  assert.equal(granted.stdout().trim(), `media: publish stream stage on UDP port ${relayPort}`);

  const plain = await startServer([]);
  t.after(() => plain.stop());
  const refused = runBlock(start, "media", plain.url);
  await exitsCleanly(refused);
  assert.equal(refused.stdout().trim(), "no media relay: media_unavailable");
});

test("README:pairing pairs a controller with a responder and delivers the event", async (t) => {
  const { start, server } = await setup(t, ["--app", "remote"]);
  const block = runBlock(start, "pairing", server.url);
  await exitsCleanly(block, 3 * WAIT_MS);
  const lines = block.stdout().trim().split("\n");
  assert.equal(lines[0], "screen: interacting", block.describe());
  assert.match(lines[1], /^screen got volume up 3 from [0-9]{6}$/, block.describe());
  // Then the closes: the phone's `inactive` (searching) unless the screen closed first, then passive.
  assert.ok(["screen: searching|screen: passive", "screen: passive"].includes(lines.slice(2).join("|")), block.describe());
});

test("examples/node-member.mjs hosts a session: members, joins, escaped messages, stdin, /members, /quit", async (t) => {
  const { server, peers, start } = await setup(t);
  const member = start(["examples/node-member.mjs", "--host", "--url", server.url, "--id", "desk", "party", "Desk"],
    "node-member --host");
  const joined = await member.waitFor(/^joined party as /);
  assert.match(joined, /^joined party as c_[0-9a-z]{12} \(Desk\)$/);
  await member.waitFor(/^members: Desk \(host\)$/);

  // A second member whose name holds a right-to-left override (the server allows it).
  const eve = await peers.connect(memberOptions(server.url, "party", "eve", { device: { id: "eve", name: "Eve\u202eevil", type: "client" } }));
  await member.waitFor(/^\+ Eve\\u\{202e\}evil joined$/);
  eve.client.send({ text: "hi \u001b[31mred\u001b]0;title\u0007 \u009b2J \\ end" });
  await member.waitFor(/^Eve\\u\{202e\}evil: hi \\x1b\[31mred\\x1b\]0;title\\x07 \\x9b2J \\\\ end$/);
  eve.client.send({ n: 1, s: "\u001b" });
  await member.waitFor(/^Eve\\u\{202e\}evil: \{"n":1,"s":"\\\\u001b"\}$/);

  // What is typed goes to the others.
  const hostId = /as (c_[0-9a-z]{12})/.exec(joined)[1];
  member.write("hello there\n");
  const said = await eve.log.waitFor("message");
  assert.deepEqual({ from: said.from, data: said.data }, { from: hostId, data: { text: "hello there" } });
  member.write("/members\n");
  await member.waitFor(/^members: Desk \(host\), Eve\\u\{202e\}evil$/);
  await eve.client.leave();
  await member.waitFor(/^- Eve\\u\{202e\}evil left \(left\)$/);
  member.write("/quit\n");
  await member.waitFor(/^\[left\]$/);
  await exitsCleanly(member);
  assert.equal(rawControl(member.stdout()), null, `a raw control character reached the terminal:\n${JSON.stringify(member.stdout())}`);
});

test("the server refuses a member name with ESC at join, so the example's member is told rejected", async (t) => {
  const { server, peers, start } = await setup(t);
  await peers.connect(hostOptions(server.url, "party", "desk"));
  const refused = await peers.refused(memberOptions(server.url, "party", "mallory", {
    device: { id: "mallory", name: "Mallory\u001b[2J", type: "client" } }));
  assert.ok(refused.error instanceof LoudSyncError && refused.error.kind === "rejected", String(refused.error));
  assert.equal(refused.error.serverError?.code, "invalid_message");
  const member = start(["examples/node-member.mjs", "--url", server.url, "party", "Mal\u001b]0;x\u0007"], "node-member hostile name");
  const { code } = await within(member.exited, WAIT_MS, "node-member exit");
  assert.equal(code, 1, member.describe());
  assert.match(member.describe(), /could not join party: rejected: .*control characters/);
  assert.equal(rawControl(member.stdout()), null);
});

test("examples/node-member.mjs prints a hostile server's ESC names and messages escaped", async (t) => {
  // A fake server that refuses the resume handshake, welcomes the join and names its host
  // with terminal escape sequences (a compromised or hostile server: the real one refuses them).
  const hostile = "Mallory\u001b[2J\u001b]0;pwned\u0007\u009b31m";
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await new Promise((resolve) => wss.once("listening", resolve));
  t.after(() => new Promise((resolve) => {
    for (const socket of wss.clients) socket.terminate();
    wss.close(() => resolve());
  }));
  const frames = [];
  wss.on("connection", (socket) => {
    const reply = (frame) => socket.send(JSON.stringify({ timestamp: Date.now(), ...frame }));
    socket.on("message", (raw) => {
      const frame = JSON.parse(String(raw));
      frames.push(frame);
      if (frame.type === "token") reply({ type: "error", code: "invalid_message", message: "unknown message type `token`" });
      if (frame.type === "join") {
        reply({ type: "welcome", clientId: "c_me", resumable: false, sessionInfo: { id: "party", name: "P", hostId: "c_bad" } });
        reply({ type: "member_list", members: [
          { id: "c_bad", name: hostile, isHost: true, connectionStatus: "connected", joinedAt: 1 },
          { id: "c_me", name: frame.deviceInfo.name, isHost: false, connectionStatus: "connected", joinedAt: 2 },
        ] });
        reply({ type: "message", from: "c_bad", data: { text: "\u001b[1A\u001b[2Kall fine" } });
        reply({ type: "member_left", memberId: "c_bad", reason: "gone\u001b[0m" });
        reply({ type: "session_closed", reason: "bye\u001b]0;x\u0007" });
        socket.close(1000, "session closed"); // as the real server: the close makes it final
      }
    });
  });
  const start = children(t);
  const url = `ws://127.0.0.1:${wss.address().port}/`;
  const member = start(["examples/node-member.mjs", "--url", url, "party", "Sara"], "node-member vs a hostile server");
  await exitsCleanly(member);
  const out = member.stdout();
  assert.equal(rawControl(out), null, `a raw control character reached the terminal:\n${JSON.stringify(out)}`);
  const shown = "Mallory\\x1b[2J\\x1b]0;pwned\\x07\\x9b31m";
  assert.deepEqual(out.trim().split("\n"), [
    "joined party as c_me (Sara)",
    `members: ${shown} (host), Sara`,
    `${shown}: \\x1b[1A\\x1b[2Kall fine`,
    `- ${shown} left (gone\\x1b[0m)`,
    "[session closed: bye\\x1b]0;x\\x07]",
    "[left]",
  ]);
  assert.deepEqual(frames.map((f) => f.type).slice(0, 2), ["token", "join"]);
});
