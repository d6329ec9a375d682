// pairing.test.mjs: issue 12's browser test. It starts `loudsync serve --pairing-pages` on the
// pages beside this file, opens the responder and the controller page in headless Chromium
// (Debian's /usr/bin/chromium driven by playwright-core), checks that they pair over SSE + HTTP
// and exchange events, that the alive events keep both streams open past the server's alive
// timeout, and saves screenshots to tests/browser/out/. Run: `node --test tests/browser/pairing.test.mjs`
// after `cargo build --release --bin loudsync` and `npm ci` here (.ci/browser.sh does all three).
// LOUDSYNC_BIN overrides the binary, CHROMIUM the browser.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "../..");
const bin = process.env.LOUDSYNC_BIN || join(root, "target/release/loudsync");
const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";
const outDir = join(here, "out");
const WAIT_MS = 15_000; // every wait is bounded by this
const ALIVE_TIMEOUT_MS = 2_000; // the server's --pairing-alive-timeout
const ALIVE_EVERY_MS = 500; // the pages' alive interval (?alive=)

let server; // the loudsync child process
let serverLog = ""; // its stdout + stderr, for failure messages
let base; // http://127.0.0.1:PORT
let browser;

/** Starts the server on a free loopback port and resolves once it prints its address. */
function startServer() {
  const args = [
    "serve", "--listen", "127.0.0.1:0", "--app", "alpha",
    "--pairing-pages", join(here, "pages"),
    "--heartbeat-check-interval", "200ms", "--pairing-alive-timeout", `${ALIVE_TIMEOUT_MS}ms`,
  ];
  server = spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"] });
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`${bin} printed no "listening on" line within ${WAIT_MS} ms:\n${serverLog}`)),
      WAIT_MS,
    );
    const fail = (why) => { clearTimeout(timer); reject(new Error(`${bin} ${args.join(" ")}: ${why}\n${serverLog}`)); };
    server.on("error", (error) => fail(`cannot start: ${error.message}`));
    server.on("exit", (code, signal) => fail(`exited early (code ${code}, signal ${signal})`));
    server.stderr.on("data", (chunk) => { serverLog += chunk; });
    server.stdout.on("data", (chunk) => {
      serverLog += chunk;
      const match = /loudsync listening on (http:\/\/\S+)/.exec(serverLog);
      if (match) { clearTimeout(timer); resolvePromise(match[1]); }
    });
  });
}

/** Stops the server (SIGTERM, then SIGKILL if it has not exited within 5 s). */
async function stopServer() {
  if (!server || server.exitCode !== null || server.signalCode !== null) return;
  server.removeAllListeners("exit"); // startServer's "exited early" listener
  const exited = new Promise((resolvePromise) => server.once("exit", resolvePromise));
  server.kill("SIGTERM");
  const killer = setTimeout(() => server.kill("SIGKILL"), 5_000);
  await exited;
  clearTimeout(killer);
}

/** Opens one page in its own browser context, recording its console errors and page errors. */
async function openPage(path) {
  const context = await browser.newContext({ viewport: { width: 760, height: 600 } });
  const page = await context.newPage();
  page.problems = [];
  page.on("pageerror", (error) => page.problems.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error") page.problems.push(`console: ${message.text()}`);
  });
  page.on("response", (response) => {
    if (response.status() >= 400) page.problems.push(`${response.status()} for ${response.url()}`);
  });
  const response = await page.goto(base + path, { timeout: WAIT_MS });
  assert.equal(response.status(), 200, `GET ${path} answered ${response.status()}`);
  return page;
}

/** What a page shows (its fields and its event log), for failure messages. */
async function screenText(page) {
  const text = await page.evaluate(() => document.body.innerText).catch((e) => `(unreadable: ${e.message})`);
  return `${text}\n${page.problems.join("\n")}`;
}

/** Waits until `predicate(arg)` holds in the page; on timeout fails saying what and showing the page. */
async function waitUntil(page, what, predicate, arg) {
  try {
    await page.waitForFunction(predicate, arg, { timeout: WAIT_MS, polling: 50 });
  } catch (error) {
    throw new Error(`${what} did not happen within ${WAIT_MS} ms. The page shows:\n${await screenText(page)}\n` +
      `server log:\n${serverLog}\n(${error.message.split("\n")[0]})`);
  }
}

const field = (page, id) => page.locator(`#${id}`).innerText();
const logHas = (line) => [...document.querySelectorAll("#log li")].some((li) => li.textContent === line);

before(async () => {
  mkdirSync(outDir, { recursive: true });
  base = await startServer();
  browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    timeout: WAIT_MS,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
});

after(async () => {
  await browser?.close();
  await stopServer();
});

test("a controller and a responder page pair over SSE + HTTP and exchange events", async () => {
  const responder = await openPage(`/crsocket/alpha/responder/?alive=${ALIVE_EVERY_MS}`);
  await waitUntil(responder, "the responder showing a client id and its stream",
    () => /^[0-9]{6}$/.test(document.getElementById("clientId").textContent) &&
      document.body.dataset.state === "waiting for a controller");
  const responderId = await field(responder, "clientId");

  const controller = await openPage(`/crsocket/alpha/controller/?partner=${responderId}&alive=${ALIVE_EVERY_MS}`);
  await waitUntil(controller, "the controller getting a client id",
    () => /^[0-9]{6}$/.test(document.getElementById("clientId").textContent));
  const controllerId = await field(controller, "clientId");
  assert.notEqual(controllerId, responderId, "clientid/ handed out the same id twice");

  await waitUntil(responder, "the responder pairing and receiving the controller's hello",
    logHas, `got hello from ${controllerId}: from controller`);
  await waitUntil(controller, "the controller receiving the responder's hello reply",
    logHas, `got hello from ${responderId}: from responder`);

  for (const [page, role, id, partner] of [
    [controller, "controller", controllerId, responderId],
    [responder, "responder", responderId, controllerId],
  ]) {
    assert.equal(await field(page, "role"), role);
    assert.equal(await field(page, "clientId"), id);
    assert.equal(await field(page, "state"), "paired", `${role}:\n${await screenText(page)}`);
    assert.equal(await field(page, "partner"), partner, `${role}'s partner`);
    assert.match(await field(page, "sid"), /^[0-9]+$/, `${role}'s stream id from hello`);
  }
  // The responder answered the controller's ping with a ping of its own, then its hello.
  assert.ok(await controller.evaluate(logHas, `got ping from ${responderId}`), "controller never got the responder's ping");
  assert.equal(await field(responder, "lastEvent"), `hello from ${controllerId}: from controller`);
  assert.equal(await field(controller, "lastEvent"), `hello from ${responderId}: from responder`);

  // Past the server's alive timeout (plus checks), the alive events have kept both streams open.
  await new Promise((r) => setTimeout(r, ALIVE_TIMEOUT_MS + 1_000));
  for (const [page, role] of [[controller, "controller"], [responder, "responder"]]) {
    assert.equal(await field(page, "state"), "paired", `${role} after ${ALIVE_TIMEOUT_MS + 1_000} ms:\n${await screenText(page)}`);
    const echoes = Number(await field(page, "alive"));
    assert.ok(echoes >= 3, `${role} got ${echoes} alive echoes in ${ALIVE_TIMEOUT_MS + 1_000} ms (sending every ${ALIVE_EVERY_MS} ms)`);
    assert.deepEqual(page.problems, [], `${role} page problems`);
  }

  const shots = {};
  for (const [page, role] of [[controller, "controller"], [responder, "responder"]]) {
    shots[role] = join(outDir, `${role}.png`);
    await page.screenshot({ path: shots[role] });
  }
  // Both side by side in one picture.
  const sideBySide = await browser.newPage({ viewport: { width: 1540, height: 620 } });
  const img = (path) => `<img style="border:2px solid #888;margin:4px" src="data:image/png;base64,${readFileSync(path).toString("base64")}">`;
  await sideBySide.setContent(`<body style="margin:0;display:flex">${img(shots.controller)}${img(shots.responder)}</body>`);
  await sideBySide.screenshot({ path: join(outDir, "pairing.png") });
});
