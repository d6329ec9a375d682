// support.mjs: what the dashboard's browser tests (dashboard.test.mjs) share. It starts a real
// `loudsync serve --listen 127.0.0.1:0` (target/release/loudsync, under CARGO_TARGET_DIR if set,
// or LOUDSYNC_BIN) with `--events-stats-interval 200ms` (the admin event stream's `stats` every
// 200 ms), launches headless Chromium (Debian's /usr/bin/chromium, or CHROMIUM, driven by playwright-core from the
// dashboard's devDependencies), opens dashboard pages that record their console errors, page
// errors, failed responses and every URL they request, and connects real members with the
// TypeScript SDK (clients/typescript/dist/esm, built by `npm run build` there) over `ws` (from
// clients/typescript/node_modules), through a TCP proxy that can cut them when a test needs a
// lost connection. Every wait here is bounded (WAIT_MS).
import { spawn } from "node:child_process";
import { existsSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { createServer, connect } from "node:net";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
/** The repository's root. */
export const repoRoot = resolve(here, "../..");
/** Where screenshots go (gitignored). */
export const outDir = join(here, "out");
/** The bound on every wait, ms. */
export const WAIT_MS = 15_000;

const serverBin = process.env.LOUDSYNC_BIN || join(process.env.CARGO_TARGET_DIR || join(repoRoot, "target"), "release/loudsync");
const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";
const sdkDir = join(repoRoot, "clients/typescript");

// playwright-core from dashboard/node_modules; `ws` from the SDK's node_modules.
const { chromium } = createRequire(join(repoRoot, "dashboard/package.json"))("playwright-core");
/** The `ws` WebSocket class the SDK clients use in Node. */
export const WebSocket = createRequire(join(sdkDir, "package.json"))("ws");

const sdkEntry = join(sdkDir, "dist/esm/index.js");
if (!existsSync(sdkEntry)) {
  throw new Error(`no TypeScript SDK build at ${sdkEntry}: run \`cd clients/typescript && npm ci && npm run build\``);
}
/** The TypeScript SDK (Client, PairingClient, ...). */
export const sdk = await import(pathToFileURL(sdkEntry).href);

/**
 * Starts `loudsync serve` on a free loopback port (or `options.port`, e.g. to restart on the same
 * address) with `args` (and `--events-stats-interval 200ms`); resolves once it prints its address.
 * @returns {Promise<{ http: string, ws: string, port: number, log(): string, stop(): Promise<void> }>}
 */
export function startServer(args = [], { port: listenPort = 0 } = {}) {
  if (!existsSync(serverBin)) {
    return Promise.reject(new Error(`no server binary at ${serverBin}: run \`cargo build --release --bin loudsync\``));
  }
  const fullArgs = ["serve", "--listen", `127.0.0.1:${listenPort}`, "--events-stats-interval", "200ms", ...args];
  const child = spawn(serverBin, fullArgs, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, LOUDSYNC_LOG: "info" } });
  let output = "";
  const exited = new Promise((done) => child.once("exit", done));
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill("SIGTERM");
    const killer = setTimeout(() => child.kill("SIGKILL"), 5_000);
    await exited;
    clearTimeout(killer);
  };
  return new Promise((resolveStart, reject) => {
    let settled = false;
    const fail = (why) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      child.kill("SIGKILL");
      reject(new Error(`${serverBin} ${fullArgs.join(" ")}: ${why}\n--- server output ---\n${output}`));
    };
    const timer = setTimeout(() => fail(`printed no "listening on" line within ${WAIT_MS} ms`), WAIT_MS);
    child.once("error", (error) => fail(`cannot start: ${error.message}`));
    child.once("exit", (code, signal) => fail(`exited early (code ${code}, signal ${signal})`));
    const onData = (chunk) => {
      output += chunk;
      if (settled) return;
      const match = /loudsync listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(output);
      if (!match) return;
      settled = true;
      clearTimeout(timer);
      const port = Number(match[1]);
      resolveStart({ http: `http://127.0.0.1:${port}`, ws: `ws://127.0.0.1:${port}/`, port, log: () => output, stop });
    };
    child.stdout.setEncoding("utf8").on("data", onData);
    child.stderr.setEncoding("utf8").on("data", onData);
  });
}

/** Launches headless Chromium. */
export function launchBrowser() {
  return chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    timeout: WAIT_MS,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
}

/**
 * Opens `base + path` in a fresh browser context. The page records `problems` (console errors,
 * page errors, responses >= 400 other than the `expectedStatus` ones) and
 * `requested` (every "METHOD URL"), and accepts every confirm() (`dialogs` lists them) but the
 * next one after `page.dismissNext = true`.
 */
export async function openPage(browser, base, path = "/dashboard/", { expectedStatus = [] } = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const page = await context.newPage();
  page.problems = [];
  page.requested = [];
  page.dialogs = [];
  page.expectedStatus = new Set(expectedStatus);
  page.on("pageerror", (error) => page.problems.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() !== "error") return;
    // Chromium logs every 4xx as "Failed to load resource"; the expected ones are not problems.
    const status = /the server responded with a status of (\d+)/.exec(message.text());
    if (status && page.expectedStatus.has(Number(status[1]))) return;
    page.problems.push(`console: ${message.text()}`);
  });
  page.on("request", (request) => page.requested.push(`${request.method()} ${request.url()}`));
  page.on("response", (response) => {
    if (response.status() >= 400 && !page.expectedStatus.has(response.status())) {
      page.problems.push(`${response.status()} for ${response.request().method()} ${response.url()}`);
    }
  });
  page.dismissNext = false;
  page.on("dialog", async (dialog) => {
    page.dialogs.push(`${dialog.type()}: ${dialog.message()}`);
    if (page.dismissNext) {
      page.dismissNext = false;
      await dialog.dismiss();
    } else {
      await dialog.accept();
    }
  });
  const response = await page.goto(base + path, { timeout: WAIT_MS });
  if (response.status() !== 200) throw new Error(`GET ${path} answered ${response.status()}`);
  return page;
}

/** The page's visible text and its problems, for failure messages. */
export async function screenText(page) {
  const text = await page.evaluate(() => document.body.innerText).catch((e) => `(unreadable: ${e.message})`);
  return `${text}\n--- problems ---\n${page.problems.join("\n")}`;
}

/**
 * Waits until `predicate(arg)` holds in the page (polled every 50 ms, at most WAIT_MS); on timeout
 * fails saying what it waited for, with the page's text and the server's log.
 */
export async function waitInPage(page, what, predicate, arg, server) {
  try {
    await page.waitForFunction(predicate, arg, { timeout: WAIT_MS, polling: 50 });
  } catch (error) {
    throw new Error(`${what}: not within ${WAIT_MS} ms. The page shows:\n${await screenText(page)}\n` +
      (server ? `--- server log (tail) ---\n${server.log().slice(-3000)}\n` : "") +
      `(${error.message.split("\n")[0]})`);
  }
}

/** Saves a full-page screenshot as dashboard/test/out/<name>.png. */
export async function screenshot(page, name) {
  mkdirSync(outDir, { recursive: true });
  await page.screenshot({ path: join(outDir, `${name}.png`), fullPage: true });
}

/**
 * Records every event of an SDK client (or PairingClient) from now on; `waitFor(type, predicate)`
 * looks at what was recorded already, then waits (bounded) for the next.
 */
export function record(client) {
  const events = [];
  const waiters = new Set();
  client.onAny((event) => {
    events.push(event);
    for (const waiter of [...waiters]) waiter(event);
  });
  return {
    events,
    waitFor(type, predicate = () => true, timeoutMs = WAIT_MS) {
      const seen = events.find((event) => event.type === type && predicate(event));
      if (seen) return Promise.resolve(seen);
      return new Promise((resolveWait, reject) => {
        const waiter = (event) => {
          if (event.type !== type || !predicate(event)) return;
          clearTimeout(timer);
          waiters.delete(waiter);
          resolveWait(event);
        };
        const timer = setTimeout(() => {
          waiters.delete(waiter);
          reject(new Error(`no "${type}" event within ${timeoutMs} ms; events: ${events.map((e) => e.type).join(", ")}`));
        }, timeoutMs);
        waiters.add(waiter);
      });
    },
  };
}

/** Rejects after `timeoutMs` unless `promise` settles first. */
export function within(promise, timeoutMs, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${timeoutMs} ms`)), timeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** SDK client timers short enough for tests. */
const FAST_CLIENT = {
  heartbeatIntervalMs: 200,
  silenceTimeoutMs: 3_000,
  joinTimeoutMs: 5_000,
  leaveTimeoutMs: 1_000,
  reconnect: { attempts: 0, delayMs: 200 },
  resume: false,
};

/**
 * A set of SDK members. `connect(url, sessionId, deviceId, name, type)` resolves with
 * `{ client, log, id }` once joined; `closeAll()` disconnects them all (bounded).
 */
export function members() {
  const clients = [];
  return {
    async connect(url, sessionId, deviceId, name, type = "client", extra = {}) {
      const client = new sdk.Client({
        url, sessionId, device: { id: deviceId, name, type }, WebSocket, ...FAST_CLIENT, ...extra,
      });
      const log = record(client);
      clients.push(client);
      await within(client.connect(), WAIT_MS, `${deviceId} joining ${sessionId}`);
      return { client, log, id: client.clientId(), name };
    },
    async closeAll() {
      await Promise.all(clients.map((client) =>
        within(Promise.resolve().then(() => client.disconnect()), 3_000, "disconnect").catch(() => {})));
    },
  };
}

/** GET `base + path` as JSON (bounded). */
export async function getJson(base, path, headers = {}) {
  const response = await fetch(base + path, { headers, signal: AbortSignal.timeout(WAIT_MS) });
  if (!response.ok) throw new Error(`GET ${path}: ${response.status} ${await response.text()}`);
  return response.json();
}

/**
 * A loopback TCP proxy to 127.0.0.1:`targetPort`, so a test can drop its members' connections
 * uncleanly (`cutAll()`: both sockets destroyed, no close frame), as a lost network does; the
 * proxy keeps listening, so a client's next connection goes through.
 * @returns {Promise<{ ws: string, cutAll(): number, close(): Promise<void> }>}
 */
export function startProxy(targetPort) {
  const pairs = new Set();
  const server = createServer((downstream) => {
    const upstream = connect({ host: "127.0.0.1", port: targetPort });
    const pair = { downstream, upstream };
    pairs.add(pair);
    const drop = () => {
      pairs.delete(pair);
      downstream.destroy();
      upstream.destroy();
    };
    downstream.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
    downstream.pipe(upstream);
    upstream.pipe(downstream);
  });
  return new Promise((resolveStart, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      resolveStart({
        ws: `ws://127.0.0.1:${port}/`,
        cutAll() {
          const count = pairs.size;
          for (const { downstream, upstream } of [...pairs]) {
            downstream.destroy();
            upstream.destroy();
          }
          pairs.clear();
          return count;
        },
        close: () => new Promise((done) => {
          for (const { downstream, upstream } of [...pairs]) { downstream.destroy(); upstream.destroy(); }
          server.close(() => done());
        }),
      });
    });
  });
}
