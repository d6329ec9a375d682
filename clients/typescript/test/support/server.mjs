// server.mjs: starts a real `loudsync serve` for the integration and browser tests. It spawns
// `process.env.LOUDSYNC_BIN || <repo>/target/release/loudsync serve --listen 127.0.0.1:PORT ...args`
// (PORT 0, a free port, unless options.port asks for one, e.g. to restart on the same address),
// keeps its stdout + stderr for failure messages, and resolves once the server prints
// `loudsync listening on http://...`. Every wait is bounded; an early exit or a missing line
// rejects with the server's output. Also the bounded event waits the tests share (waitFor,
// collect, waitUntil): they subscribe to a Client (`on`/`onAny`) or any EventEmitter.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
/** The repository's root (clients/typescript/test/support -> four levels up). */
export const repoRoot = resolve(here, "../../../..");
/** The server binary the tests run. */
export const serverBin = process.env.LOUDSYNC_BIN || join(repoRoot, "target/release/loudsync");
/** The default bound on every wait, ms. */
export const WAIT_MS = 10_000;

/** Short server timers for tests: liveness, resume acks and handoff all in about a second. */
export const FAST_SERVER_ARGS = [
  "--heartbeat-timeout", "1s",
  "--heartbeat-check-interval", "200ms",
  "--resume-window", "5s",
  "--ack-interval", "200ms",
  "--handoff-timeout", "2s",
  "--drain-timeout", "1s",
  "--close-timeout", "500ms",
];

/**
 * Starts `loudsync serve` on 127.0.0.1 and resolves once it listens.
 * @param {string[]} args extra `serve` flags
 * @param {{ port?: number, timeoutMs?: number, env?: Record<string,string> }} options
 * @returns {Promise<{ url: string, http: string, port: number, process: import("node:child_process").ChildProcess,
 *   stop(): Promise<void>, kill(signal?: NodeJS.Signals): void, log(): string, exited: Promise<void> }>}
 */
export function startServer(args = [], options = {}) {
  if (!existsSync(serverBin)) {
    return Promise.reject(new Error(
      `no server binary at ${serverBin}: run \`cargo build --release --bin loudsync\` or set LOUDSYNC_BIN`));
  }
  const port = options.port ?? 0;
  const timeoutMs = options.timeoutMs ?? WAIT_MS;
  const fullArgs = ["serve", "--listen", `127.0.0.1:${port}`, ...mergeFlags(args)];
  const child = spawn(serverBin, fullArgs, {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, LOUDSYNC_LOG: process.env.LOUDSYNC_LOG || "info", ...options.env },
  });
  let output = "";
  const exited = new Promise((resolveExit) => child.once("exit", () => resolveExit()));
  const log = () => output;

  /** SIGTERM, then SIGKILL if the server has not exited within 5 s. */
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill("SIGTERM");
    const killer = setTimeout(() => child.kill("SIGKILL"), 5_000);
    await exited;
    clearTimeout(killer);
  };
  const kill = (signal = "SIGKILL") => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
  };

  return new Promise((resolveStart, reject) => {
    let settled = false;
    const fail = (why) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      kill("SIGKILL");
      reject(new Error(`${serverBin} ${fullArgs.join(" ")}: ${why}\n--- server output ---\n${output}`));
    };
    const timer = setTimeout(() => fail(`printed no "listening on" line within ${timeoutMs} ms`), timeoutMs);
    child.once("error", (error) => fail(`cannot start: ${error.message}`));
    child.once("exit", (code, signal) => fail(`exited early (code ${code}, signal ${signal})`));
    const onData = (chunk) => {
      output += chunk;
      if (settled) return;
      const match = /loudsync listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(output);
      if (!match) return;
      settled = true;
      clearTimeout(timer);
      const actualPort = Number(match[1]);
      resolveStart({
        url: `ws://127.0.0.1:${actualPort}/`,
        http: `http://127.0.0.1:${actualPort}`,
        port: actualPort,
        process: child,
        stop,
        kill,
        log,
        exited,
      });
    };
    child.stdout.setEncoding("utf8").on("data", onData);
    child.stderr.setEncoding("utf8").on("data", onData);
  });
}

/**
 * `args` with each `--flag value` pair kept only at its last occurrence, so a test can
 * override one of FAST_SERVER_ARGS by appending it (the server refuses a flag given twice).
 * A flag followed by another flag (or nothing) is a switch and is kept as it is.
 */
export function mergeFlags(args) {
  const pairs = [];
  for (let i = 0; i < args.length; i += 1) {
    const flag = args[i];
    const value = args[i + 1];
    if (flag.startsWith("--") && !flag.includes("=") && value !== undefined && !value.startsWith("--")) {
      pairs.push([flag, value]);
      i += 1;
    } else {
      pairs.push([flag]);
    }
  }
  const last = new Map(pairs.map((pair, index) => [pair[0], index]));
  const repeatable = new Set(["--app", "--trusted-proxy", "--pairing-cors-origin", "--mdns-interface"]);
  return pairs.filter((pair, index) => repeatable.has(pair[0]) || last.get(pair[0]) === index).flat();
}

/** Subscribes `listener` to every event of `source` (a Client, or an EventEmitter); returns unsubscribe. */
function subscribe(source, type, listener) {
  if (typeof source.on === "function" && typeof source.onAny === "function") {
    return source.on(type, listener); // a Client: on() returns its unsubscribe
  }
  source.on(type, listener); // an EventEmitter
  return () => source.off(type, listener);
}

/**
 * Resolves with the first `type` event of `source` for which `predicate(event)` holds;
 * rejects after `timeoutMs` saying what it waited for (and `describe()`, if given).
 * @template T
 */
export function waitFor(source, type, predicate = () => true, timeoutMs = WAIT_MS, describe) {
  return new Promise((resolveWait, reject) => {
    const timer = setTimeout(() => {
      unsubscribe();
      const extra = describe ? `\n${describe()}` : "";
      reject(new Error(`no "${type}" event matching ${predicate.toString()} within ${timeoutMs} ms${extra}`));
    }, timeoutMs);
    const unsubscribe = subscribe(source, type, (event) => {
      let matches;
      try {
        matches = predicate(event);
      } catch (error) {
        clearTimeout(timer);
        unsubscribe();
        reject(error);
        return;
      }
      if (matches) {
        clearTimeout(timer);
        unsubscribe();
        resolveWait(event);
      }
    });
  });
}

/**
 * Records every event of a Client from now on: `events` (in order), `ofType(type)`, and
 * `waitFor(type, predicate, timeoutMs)`, which also looks at what was already recorded
 * (so an event that came before the wait is not missed). `stop()` unsubscribes.
 */
export function record(client) {
  const events = [];
  const waiters = new Set();
  const unsubscribe = client.onAny((event) => {
    events.push(event);
    for (const waiter of [...waiters]) waiter(event);
  });
  return {
    events,
    ofType: (type) => events.filter((event) => event.type === type),
    types: () => events.map((event) => event.type),
    stop: unsubscribe,
    /** Resolves with the first recorded (past or future) `type` event matching `predicate`. */
    waitFor(type, predicate = () => true, timeoutMs = WAIT_MS) {
      const seen = events.find((event) => event.type === type && predicate(event));
      if (seen) return Promise.resolve(seen);
      return this.next(type, predicate, timeoutMs);
    },
    /** Resolves with the next `type` event matching `predicate` that arrives from now on. */
    next(type, predicate = () => true, timeoutMs = WAIT_MS) {
      return new Promise((resolveWait, reject) => {
        const waiter = (event) => {
          if (event.type !== type || !predicate(event)) return;
          clearTimeout(timer);
          waiters.delete(waiter);
          resolveWait(event);
        };
        const timer = setTimeout(() => {
          waiters.delete(waiter);
          reject(new Error(`no "${type}" event matching ${predicate.toString()} within ${timeoutMs} ms; ` +
            `events so far: ${events.map((event) => event.type).join(", ")}`));
        }, timeoutMs);
        waiters.add(waiter);
      });
    },
  };
}

/**
 * Polls `condition()` every 20 ms until it is truthy and resolves with its value; rejects after
 * `timeoutMs` with `what`. For conditions no event announces (e.g. a table's contents).
 */
export async function waitUntil(what, condition, timeoutMs = WAIT_MS) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await condition();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((resolveTick) => setTimeout(resolveTick, 20));
  }
}

/** Rejects after `timeoutMs` unless `promise` settles first. */
export function within(promise, timeoutMs, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${timeoutMs} ms`)), timeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
