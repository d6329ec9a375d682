// global-websocket.test.mjs: the package "runs unchanged" where the runtime has a global
// WebSocket (browsers, React Native, Node 22+): a child Node started with
// `--experimental-websocket` (Node 20's global WebSocket, undici's) joins a real server
// without a WebSocket option, from the CommonJS build and from the ES module, does the resume
// handshake, exchanges a message with a host that uses `ws`, and sees the session close. On
// Node 20 without the flag there is no global WebSocket: `connect()` rejects with kind
// "config" and says to pass one.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Client } from "../../dist/esm/index.js";
import { startServer, FAST_SERVER_ARGS, within, WAIT_MS } from "../support/server.mjs";
import { peers, hostOptions } from "../support/peers.mjs";

const member = join(dirname(fileURLToPath(import.meta.url)), "../support/global-websocket-member.cjs");
let server;
const group = peers();

before(async () => {
  server = await startServer(FAST_SERVER_ARGS);
});
after(async () => {
  await group.closeAll();
  await server?.stop();
});

/** Starts the member child; `lines()` is what it printed so far, parsed; `until(type)` waits for one. */
function child(args, nodeFlags) {
  const proc = spawn(process.execPath, [...nodeFlags, member, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  proc.stdout.on("data", (chunk) => { out += chunk; });
  proc.stderr.on("data", (chunk) => { err += chunk; });
  const exited = new Promise((resolve) => proc.once("exit", (code) => resolve(code)));
  const lines = () => out.split("\n").filter(Boolean).map((line) => JSON.parse(line));
  const until = async (type) => {
    const deadline = Date.now() + WAIT_MS;
    for (;;) {
      const found = lines().find((event) => event.type === type);
      if (found) return found;
      if (Date.now() > deadline || proc.exitCode !== null) {
        throw new Error(`the member printed no ${type}: stdout ${out} stderr ${err}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  };
  return { proc, lines, until, exited, stderr: () => err };
}

for (const build of ["cjs", "esm"]) {
  test(`the ${build} build joins with the runtime's global WebSocket (no WebSocket option)`, async () => {
    const sessionId = `global-${build}`;
    const host = await group.connect(hostOptions(server.url, sessionId, `desk-${build}`));
    const m = child([server.url, sessionId, build], ["--experimental-websocket"]);
    try {
      const connected = await m.until("connected");
      assert.equal(connected.link, "CONNECTED", "the resume handshake ran over the global WebSocket");
      assert.deepEqual(connected.members, [`desk-${build} name`, `global ${build}`]);
      const message = await host.log.waitFor("message", (event) => event.data?.hello === build);
      assert.equal(message.from, host.client.members().find((x) => x.name === `global ${build}`)?.id);
      host.client.send({ reply: build });
      const reply = await m.until("message");
      assert.deepEqual(reply.data, { reply: build });
      await host.client.closeSession();
      assert.equal((await m.until("sessionClosed")).type, "sessionClosed");
      assert.equal(await within(m.exited, WAIT_MS, "the member exits"), 0, m.stderr());
    } finally {
      m.proc.kill();
    }
  });
}

test("without a global WebSocket and without the option, connect() rejects with kind config", async () => {
  // Node 20 has none without --experimental-websocket; on a Node that has one, hide it here.
  const saved = Object.getOwnPropertyDescriptor(globalThis, "WebSocket");
  if (saved) delete globalThis.WebSocket;
  try {
    const client = new Client({ url: server.url, sessionId: "nobody", device: { id: "d", name: "n", type: "client" } });
    await assert.rejects(client.connect(), (error) => {
      assert.equal(error.kind, "config");
      assert.match(error.message, /ws/);
      return true;
    });
  } finally {
    if (saved) Object.defineProperty(globalThis, "WebSocket", saved);
  }
});
