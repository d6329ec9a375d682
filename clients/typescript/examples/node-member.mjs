#!/usr/bin/env node
// node-member.mjs: a terminal member of a LoudSync session, built on the loudsync-client SDK.
// It joins SESSION as NAME (or, with --host, opens/owns it as its host), prints the member
// table, who joins and leaves and what the others send, and sends every line typed on stdin
// to the others as `{ text: LINE }`. `/members` prints the table again, `/quit` (or Ctrl-D)
// leaves. Everything that came from the network (names, messages, reasons) is printed
// escaped: control characters (C0, DEL, C1) and the bidirectional overrides become `\xNN` /
// `\u{NNNN}`, so a peer cannot move the cursor, recolour or retitle this terminal.
//
// Run it (after `npm ci && npm run build` in clients/typescript, with `loudsync serve` up):
//   node examples/node-member.mjs --host party Desk      # opens session `party`
//   node examples/node-member.mjs party Sara             # joins it
// Options: --url ws://127.0.0.1:8080/ (default), --id DEVICE_ID (default: random),
// --session-name NAME (with --host). Node 20 gets its WebSocket from the `ws` package (a dev
// dependency of this package); Node 22+ uses its global one.
import { createInterface } from "node:readline";
import { randomBytes } from "node:crypto";
import { parseArgs } from "node:util";
import { Client, LoudSyncError } from "loudsync-client";

const usage = "usage: node examples/node-member.mjs [--host] [--url URL] [--id ID] [--session-name NAME] SESSION NAME";

/** `text` with every character that could steer a terminal written as an escape. */
function escapeForTerminal(text) {
  return String(text).replace(/[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069\\]/g, (c) => {
    if (c === "\\") return "\\\\";
    const code = c.codePointAt(0);
    return code <= 0xff ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u{${code.toString(16)}}`;
  });
}

/** Application data as one printable line: a `{text}` message's text, anything else as JSON. */
function describeData(data) {
  if (data && typeof data === "object" && typeof data.text === "string") return escapeForTerminal(data.text);
  return escapeForTerminal(JSON.stringify(data));
}

let parsed;
try {
  parsed = parseArgs({
    allowPositionals: true,
    options: {
      host: { type: "boolean", default: false },
      url: { type: "string", default: "ws://127.0.0.1:8080/" },
      id: { type: "string" },
      "session-name": { type: "string" },
    },
  });
} catch (error) {
  console.error(`${error.message}\n${usage}`);
  process.exit(2);
}
const [sessionId, name] = parsed.positionals;
if (sessionId === undefined || name === undefined || parsed.positionals.length > 2) {
  console.error(usage);
  process.exit(2);
}

// Node 22+ (and browsers, React Native) have a global WebSocket; Node 20 takes ws's.
const WebSocket = globalThis.WebSocket ?? (await import("ws")).default;

const client = new Client({
  url: parsed.values.url,
  sessionId,
  sessionName: parsed.values["session-name"],
  device: {
    id: parsed.values.id ?? `node-${randomBytes(4).toString("hex")}`,
    name,
    type: parsed.values.host ? "host" : "client",
  },
  WebSocket,
});

/** A member's name for printing (escaped), by id; the id itself if the table lacks it. */
function nameOf(memberId) {
  const member = client.members().find((m) => m.id === memberId);
  return escapeForTerminal(member ? member.name : memberId);
}

function printMembers(members = client.members()) {
  const list = members.map((m) => `${escapeForTerminal(m.name)}${m.isHost ? " (host)" : ""}`);
  console.log(`members: ${list.join(", ")}`);
}

// A leaving member is no longer in the table when `memberLeft` comes: remember the names.
const names = new Map();
let listed = false;
client.on("memberList", ({ members }) => {
  for (const m of members) names.set(m.id, m.name);
  if (!listed) printMembers(members); // the table that follows each welcome
  listed = true;
});
client.on("memberJoined", ({ member }) => {
  names.set(member.id, member.name);
  console.log(`+ ${escapeForTerminal(member.name)} joined`);
});
client.on("memberLeft", ({ memberId, reason }) => {
  console.log(`- ${escapeForTerminal(names.get(memberId) ?? memberId)} left (${escapeForTerminal(reason)})`);
});
client.on("message", ({ from, data }) => console.log(`${nameOf(from)}: ${describeData(data)}`));
client.on("reconnecting", ({ attempt, of }) => console.log(`[reconnecting ${attempt}/${of}]`));
client.on("resuming", ({ attempt }) => console.log(`[resuming, attempt ${attempt}]`));
client.on("resumed", ({ replayed }) => console.log(`[resumed, ${replayed} replayed]`));
let joinedBefore = false;
client.on("welcome", ({ clientId, session }) => {
  // A second welcome: the connection was lost and could not be resumed, so a fresh join.
  if (joinedBefore) console.log(`[joined again as ${clientId}]`);
  else console.log(`joined ${escapeForTerminal(session.id)} as ${clientId} (${escapeForTerminal(name)})`);
  joinedBefore = true;
  listed = false;
});
client.on("hostChanged", ({ hostId }) => console.log(`[${nameOf(hostId)} is the host now]`));
client.on("error", ({ error }) => console.log(`[server: ${escapeForTerminal(error.code)}: ${escapeForTerminal(error.message)}]`));

let input = null;
let over = false;
/** The client is over (kicked, session closed, failed): stop reading stdin, let the process end. */
function end(why) {
  console.log(why);
  over = true;
  input?.close();
}
client.on("kicked", ({ reason }) => end(`[kicked: ${escapeForTerminal(reason)}]`));
client.on("sessionClosed", ({ reason }) => end(`[session closed: ${escapeForTerminal(reason)}]`));
client.on("failed", ({ reason }) => end(`[connection failed: ${escapeForTerminal(reason)}]`));

try {
  await client.connect(); // resolves at the first welcome; the listeners above print it
} catch (error) {
  const detail = error instanceof LoudSyncError ? `${error.kind}: ${error.message}` : String(error);
  console.error(`could not join ${escapeForTerminal(sessionId)}: ${escapeForTerminal(detail)}`);
  process.exit(1);
}

if (over) {
  // The session ended before this line ran (everything came in one burst): nothing to read.
  await client.leave();
  console.log("[left]");
} else {
  input = createInterface({ input: process.stdin, terminal: false });
  input.on("line", (line) => {
    if (line === "/quit") return input.close();
    if (line === "/members") return printMembers();
    if (line.trim() === "") return;
    try {
      client.send({ text: line });
    } catch (error) {
      console.log(`[not sent: ${error.message}]`);
    }
  });
  input.on("close", async () => {
    process.stdin.destroy(); // readline only pauses it: a pipe left open would keep Node running
    await client.leave();
    console.log("[left]");
  });
}
