// session.test.mjs: the browser test. A small Node http server serves session.html and the
// built bundle (dist/loudsync-client.min.js, an ES module); headless Chromium (Debian's
// /usr/bin/chromium driven by playwright-core) opens the page, which joins a session on a
// real `loudsync serve` through support/proxy.mjs. The host and a second member join from
// Node; the page must list all three by name. Then proxy.cutAll() forces an unclean
// disconnect: the page must show `resumed`, the same client id and still the members. A
// host message with markup must appear as text (the page escapes what the server sends).
// A screenshot goes to test/browser/out/session.png and is checked to be a non-empty PNG.
// Run: `npm run build && node --test test/browser/`. LOUDSYNC_BIN overrides the server
// binary, CHROMIUM the browser.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { mkdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { startServer, FAST_SERVER_ARGS } from "../support/server.mjs";
import { startProxy } from "../support/proxy.mjs";
import { peers, hostOptions, memberOptions } from "../support/peers.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const packageRoot = resolve(here, "../..");
const bundlePath = join(packageRoot, "dist/loudsync-client.min.js");
const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";
const outDir = join(here, "out");
const WAIT_MS = 15_000; // every browser-side wait is bounded by this

let server; // loudsync serve
let proxy; // the cutting proxy in front of it, for the page
let pages; // the http server for the page and the bundle
let pagesBase; // http://127.0.0.1:PORT
let browser;
const nodePeers = peers();

/** Serves session.html at / and the bundle beside it; everything else is 404. */
function startPageServer() {
  const files = {
    "/": { path: join(here, "session.html"), type: "text/html; charset=utf-8" },
    "/session.html": { path: join(here, "session.html"), type: "text/html; charset=utf-8" },
    "/loudsync-client.min.js": { path: bundlePath, type: "text/javascript; charset=utf-8" },
  };
  const http = createServer((request, response) => {
    const file = files[new URL(request.url, "http://x").pathname];
    if (!file) {
      response.writeHead(404, { "content-type": "text/plain" }).end("not found");
      return;
    }
    response.writeHead(200, { "content-type": file.type, "cache-control": "no-store" });
    response.end(readFileSync(file.path));
  });
  return new Promise((resolveStart) => http.listen(0, "127.0.0.1", () => resolveStart(http)));
}

before(async () => {
  statSync(bundlePath); // fails with a clear ENOENT if `npm run build` was not run
  mkdirSync(outDir, { recursive: true });
  server = await startServer(FAST_SERVER_ARGS);
  proxy = await startProxy(server.port);
  pages = await startPageServer();
  pagesBase = `http://127.0.0.1:${pages.address().port}`;
  // playwright's launch() runs Chromium on a fresh temporary profile (user-data dir) of its own.
  browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    timeout: WAIT_MS,
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
});

after(async () => {
  await browser?.close();
  await nodePeers.closeAll();
  await proxy?.close();
  await new Promise((resolveClose) => (pages ? pages.close(() => resolveClose()) : resolveClose()));
  await server?.stop();
});

/** What the page shows and what went wrong in it, for failure messages. */
async function screenText(page) {
  const text = await page.evaluate(() => document.body.innerText).catch((error) => `(unreadable: ${error.message})`);
  return `${text}\n${page.problems.join("\n")}\n--- server ---\n${server.log().slice(-3000)}`;
}

/** Waits until `predicate(arg)` holds in the page; on timeout fails saying what, showing the page. */
async function waitUntil(page, what, predicate, arg) {
  try {
    await page.waitForFunction(predicate, arg, { timeout: WAIT_MS, polling: 50 });
  } catch (error) {
    throw new Error(`${what} did not happen within ${WAIT_MS} ms. The page shows:\n${await screenText(page)}\n` +
      `(${error.message.split("\n")[0]})`);
  }
}

/** The names in the page's member table, in order. */
const memberNames = (page) => page.$$eval("#members li", (rows) => rows.map((row) => row.dataset.name));

test("a page joins through the proxy, sees a member join from Node, survives a cut with resume", async () => {
  const host = await nodePeers.connect(hostOptions(server.url, "gig", "desk"));
  const context = await browser.newContext({ viewport: { width: 720, height: 640 } });
  const page = await context.newPage();
  page.problems = [];
  page.on("pageerror", (error) => page.problems.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error") page.problems.push(`console: ${message.text()}`);
  });
  page.on("response", (response) => {
    if (response.status() >= 400) page.problems.push(`${response.status()} for ${response.url()}`);
  });
  const query = new URLSearchParams({ url: proxy.url, session: "gig", device: "browser", name: "Chromium" });
  const response = await page.goto(`${pagesBase}/?${query}`, { timeout: WAIT_MS });
  assert.equal(response.status(), 200);

  await waitUntil(page, "the page joining", () => document.body.dataset.state === "connected" &&
    /^c_[0-9a-z]{12}$/.test(document.getElementById("clientId").textContent));
  const clientId = await page.locator("#clientId").innerText();
  assert.equal(await page.locator("#link").innerText(), "CONNECTED", "the page's connection is resumable");
  await host.log.waitFor("memberJoined", (event) => event.member.id === clientId);

  // A second member joins from Node: the page lists the host, itself and the newcomer.
  const phone = await nodePeers.connect(memberOptions(server.url, "gig", "phone"));
  await waitUntil(page, "the page listing the member from Node",
    () => [...document.querySelectorAll("#members li")].some((row) => row.dataset.name === "phone name"));
  assert.deepEqual(await memberNames(page), ["desk name", "Chromium", "phone name"]);
  assert.equal(proxy.accepted(), 1);

  // A forced, unclean disconnect: the page resumes with the same id and keeps the table.
  assert.equal(proxy.cutAll(), 1, "the page's one connection was cut");
  await waitUntil(page, "the page resuming", () => document.body.dataset.resumed === "1" &&
    document.body.dataset.state === "connected");
  assert.ok(proxy.accepted() >= 2, "the page opened a new connection");
  assert.equal(await page.locator("#clientId").innerText(), clientId, "the same client id after the resume");
  assert.deepEqual(await memberNames(page), ["desk name", "Chromium", "phone name"]);
  const log = await page.locator("#log").innerText();
  assert.match(log, /connection lost/);
  assert.match(log, /resumed \(replayed \d+\)/);
  assert.doesNotMatch(log, /welcome as (?!c_)/);
  assert.equal((log.match(/welcome as/g) ?? []).length, 1, "no second join: a resume");
  assert.equal(host.log.ofType("memberLeft").length, 0, "the others never saw it leave");

  // Markup from the server is shown as text, never parsed.
  host.client.send({ text: "<b id=injected>bold?</b>" });
  await waitUntil(page, "the host's message in the log",
    () => document.getElementById("log").textContent.includes("<b id=injected>"));
  assert.equal(await page.locator("#injected").count(), 0, "no element was created from the message");

  const shot = join(outDir, "session.png");
  await page.screenshot({ path: shot, fullPage: true });
  const png = readFileSync(shot);
  assert.ok(png.length > 1000, `a real screenshot (${png.length} bytes)`);
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], "a PNG file");
  const text = await page.evaluate(() => document.body.innerText);
  for (const name of ["desk name", "Chromium", clientId, "connected", "resumed"]) {
    assert.ok(text.includes(name), `the page shows ${name}:\n${text}`);
  }
  for (const name of ["phone name"]) assert.ok(text.includes(name), `the page shows ${name}`);

  // The node member leaves: the page's table follows.
  await phone.client.leave();
  await waitUntil(page, "the page dropping the member who left",
    () => document.querySelectorAll("#members li").length === 2);
  assert.deepEqual(await memberNames(page), ["desk name", "Chromium"]);
  assert.deepEqual(page.problems, [], "no page errors, console errors or failed requests");
  await context.close();
});
