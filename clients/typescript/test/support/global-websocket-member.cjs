// global-websocket-member.cjs: a member that uses the runtime's own global WebSocket, as in a
// browser or React Native (no WebSocket option), from the CommonJS build or the ES module
// (argv[4]: "cjs" | "esm"). Run by test/integration/global-websocket.test.mjs under
// `node --experimental-websocket` (Node 20's global WebSocket). It joins argv[3] at argv[2],
// sends one message and prints every event as one JSON line until the session closes.
const [url, sessionId, build] = process.argv.slice(2);

async function main() {
  const sdk = build === "esm" ? await import("loudsync-client") : require("loudsync-client");
  const client = new sdk.Client({
    url,
    sessionId,
    device: { id: `global-${build}`, name: `global ${build}`, type: "client" },
    heartbeatIntervalMs: 200,
  });
  client.onAny((event) => {
    process.stdout.write(`${JSON.stringify(event)}\n`);
    if (event.type === "sessionClosed" || event.type === "kicked") process.exit(0);
  });
  await client.connect();
  process.stdout.write(`${JSON.stringify({ type: "connected", link: client.linkState(), members: client.members().map((m) => m.name) })}\n`);
  client.send({ hello: build });
}

main().catch((error) => {
  process.stdout.write(`${JSON.stringify({ type: "fatal", kind: error.kind, message: error.message })}\n`);
  process.exit(1);
});
