// exit-member.mjs: a client in its own Node process, to show that the process can exit once
// the client is over (no timer, no socket left holding the event loop). Started by
// support/exiting.mjs as `node exit-member.mjs URL SESSION MODE`. MODE `leave` / `disconnect`:
// it joins SESSION at URL as a member (with `ws`, short timers), prints every event as one
// JSON line with the state after it, and on the line `go` on its stdin calls `leave()` /
// `disconnect()`, then prints `{"type":"left", state}` and `{"type":"over"}`. MODE `pairing`:
// a PairingClient responder of app `alpha` at URL, closed (`close()`) on `go`. Stdin is
// destroyed after `go` (and once a session client is over by itself), so it holds nothing;
// the parent measures how long the process takes to exit.
import WebSocket from "ws";
import { Client, PairingClient } from "../../dist/esm/index.js";

const [url, sessionId, mode] = process.argv.slice(2);
const print = (line) => process.stdout.write(`${JSON.stringify(line)}\n`);

/** MODE `pairing`: a responder of app `alpha` at URL (SESSION unused), closed on `go`. */
function pairingMember() {
  const pairing = new PairingClient({
    url,
    app: "alpha",
    role: "responder",
    accessToken: "tok",
    WebSocket,
    aliveIntervalMs: 200,
    silenceTimeoutMs: 1_000,
    reconnectDelayMs: 200,
  });
  pairing.onAny((update) => print({ type: update.type }));
  onGo(() => pairing.close());
  pairing.connect().then(
    () => print({ type: "joined" }),
    (error) => {
      print({ type: "rejected", kind: error.kind });
      process.stdin.destroy();
    },
  );
}

/** Calls `over` (which returns a promise) on the line `go`, then prints `over`. */
function onGo(over) {
  let input = "";
  process.stdin.setEncoding("utf8");
  process.stdin.on("data", (chunk) => {
    input += chunk;
    if (!input.includes("go\n")) return;
    process.stdin.destroy();
    over().then(() => print({ type: "over" }));
  });
}

/** MODE `leave` / `disconnect`: a session member. */
function sessionMember() {
  const client = new Client({
    url,
    sessionId,
    device: { id: `exit-${mode}`, name: `exit ${mode}`, type: "client" },
    WebSocket,
    heartbeatIntervalMs: 200,
    silenceTimeoutMs: 1_000,
    leaveTimeoutMs: 400,
    reconnect: { attempts: 3, delayMs: 200 },
    resumeWindowMs: 5_000,
  });
  client.onAny((event) => {
    print({ type: event.type, state: client.state() });
    // The client is over (left, failed): stdin must not hold the process either.
    if (event.type === "stateChanged" && (event.state === "failed" || event.state === "disconnected")) {
      process.stdin.destroy();
    }
  });
  onGo(() => (mode === "disconnect" ? client.disconnect() : client.leave()).then(() => print({ type: "left", state: client.state() })));
  client.connect().then(
    () => print({ type: "joined" }),
    (error) => {
      print({ type: "rejected", kind: error.kind });
      process.stdin.destroy();
    },
  );
}

if (mode === "pairing") pairingMember();
else sessionMember();
