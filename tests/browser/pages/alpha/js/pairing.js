// pairing.js: the small SSE + HTTP pairing client behind the browser test's controller and
// responder pages (tests/browser/pairing.test.mjs). Our own code, written from the wire in
// issue 12 (P14-P19), not CRSocket's: get a client id from ../clientid/, open
// ../eventsource/, send events with ../sendevent/, keep the stream alive, and show on screen
// the id, the role, the state and the last event received.
//
// Query parameters: partner=NNNNNN (controller: the responder to ping), token=T (default
// "browsertest"), alive=MS (milliseconds between alive events, default 10000).
"use strict";

const role = document.body.dataset.role; // "controller" | "responder"
const query = new URLSearchParams(location.search);
const token = query.get("token") || "browsertest";
const aliveMs = Number(query.get("alive")) || 10000;

let clientId = "";
let sid = "";
let partner = role === "controller" ? query.get("partner") || "" : "";
let paired = false;
let aliveEchoes = 0;
let source = null;
let aliveTimer = null;

function show(id, text) {
  document.getElementById(id).textContent = text;
}

function setState(state) {
  document.body.dataset.state = state;
  show("state", state);
}

function log(line) {
  const item = document.createElement("li");
  item.textContent = line;
  document.getElementById("log").prepend(item);
}

// GET sendevent/ with the query the server expects; resolves to the HTTP status.
async function sendevent(recipient, eventType, eventData) {
  const params = new URLSearchParams({
    clientId, clientRole: role, accessToken: token,
    recipientClientId: recipient, eventType, eventData,
  });
  const response = await fetch("../sendevent/?" + params.toString(), { cache: "no-store" });
  if (response.status !== 204) log(`sendevent ${eventType} answered ${response.status}`);
  return response.status;
}

// A crEvent to `to`: the data string of P18 (the server fills in receiveCt and senderClientId).
function sendCrEvent(to, type, subType = "", params = []) {
  const fields = [type, subType, "false", "false", "true", String(Date.now()), "NaN", clientId, ...params];
  log(`sent ${type}${subType ? "/" + subType : ""} to ${to}${params.length ? ": " + params.join(" ") : ""}`);
  return sendevent(to, "crEvent", fields.join(","));
}

function onCrEvent(message) {
  const fields = decodeURIComponent(message.data).split(",");
  const [type, subType, , , , , , sender, ...params] = fields;
  const text = `${type}${subType ? "/" + subType : ""} from ${sender}${params.length ? ": " + params.join(" ") : ""}`;
  show("lastEvent", text);
  log("got " + text);

  if (type === "ping") {
    if (role === "responder" && !partner) partner = sender; // the first pinger becomes the partner
    if (sender !== partner) {
      sendCrEvent(sender, "reject", "assignedToOther");
      return;
    }
    show("partner", partner);
    if (role === "responder") sendCrEvent(sender, "ping"); // answer, so the controller knows
    if (!paired) {
      paired = true;
      setState("paired");
      if (role === "controller") sendCrEvent(partner, "hello", "", ["from controller"]);
    }
  } else if (type === "hello" && role === "responder" && sender === partner) {
    sendCrEvent(sender, "hello", "", ["from responder"]);
  } else if (type === "reject") {
    setState("rejected " + subType);
  }
}

function openStream() {
  const params = new URLSearchParams({ clientId, clientRole: role, accessToken: token });
  source = new EventSource("../eventsource/?" + params.toString());
  setState("connecting");
  source.addEventListener("hello", (message) => {
    sid = decodeURIComponent(message.data);
    show("sid", sid);
    setState(role === "controller" ? "searching" : "waiting for a controller");
    pingUntilPaired();
  });
  source.addEventListener("crEvent", onCrEvent);
  source.addEventListener("alive", () => show("alive", String(++aliveEchoes)));
  for (const ending of ["aborted", "closed", "shutdown"]) {
    source.addEventListener(ending, (message) => {
      source.close(); // the stream has ended; EventSource would otherwise reconnect
      clearInterval(aliveTimer);
      setState(ending + " " + decodeURIComponent(message.data));
    });
  }
  source.onerror = () => log("EventSource error (it retries by itself)");
  // P17: alive goes to our own id with the stream id; the server echoes it on the stream.
  aliveTimer = setInterval(() => { if (sid) sendevent(clientId, "alive", sid); }, aliveMs);
}

// The controller pings its partner every second until the partner pings back.
function pingUntilPaired() {
  if (role !== "controller" || paired || !sid) return;
  if (!partner) { setState("no partner: add ?partner=NNNNNN"); return; }
  sendCrEvent(partner, "ping");
  setTimeout(pingUntilPaired, 1000);
}

async function start() {
  show("role", role);
  setState("getting a client id");
  const body = await (await fetch("../clientid/", { cache: "no-store" })).text();
  const match = /value='([0-9]{6})'/.exec(body);
  if (!match) { setState("bad clientid/ answer: " + body); return; }
  clientId = match[1];
  show("clientId", clientId);
  show("partner", partner || "none yet");
  openStream();
}

start().catch((error) => setState("error: " + error));
