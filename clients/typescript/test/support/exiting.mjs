// exiting.mjs: runs support/exit-member.mjs in a child Node process and measures how long the
// process takes to exit once its client is over: a Node application must be able to end
// after `leave()`, `disconnect()`, a final failure or a pairing client's `close()`, with no
// timer armed and no socket held open (for instance by a close handshake a silent peer never
// answers: `ws` waits 30 s for it). Used by integration/session.test.mjs and pairing.test.mjs.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { WAIT_MS } from "./server.mjs";

const script = join(dirname(fileURLToPath(import.meta.url)), "exit-member.mjs");

/** How long a process may take to exit once its client is over (ws's close wait is 30 s). */
export const EXIT_MS = 4_000;

/**
 * Starts exit-member.mjs for `url`, session `s1`, `mode` (`leave`, `disconnect`, `pairing`),
 * killed after the test `t` if still running. `until(type)` waits (bounded) for a printed line
 * of `type` and gives it with the time it was seen; `go()` tells the child to end its client;
 * `exitWithin(since)` fails unless the process exits within EXIT_MS of `since`, cleanly.
 */
export function spawnMember(t, url, mode) {
  const proc = spawn(process.execPath, [script, url, "s1", mode], { stdio: ["pipe", "pipe", "pipe"] });
  let out = "";
  let err = "";
  proc.stdout.on("data", (chunk) => { out += chunk; });
  proc.stderr.on("data", (chunk) => { err += chunk; });
  let exitedAt = null;
  const exited = new Promise((resolve) => proc.once("exit", (code) => {
    exitedAt = Date.now();
    resolve(code);
  }));
  t.after(() => {
    if (exitedAt === null) proc.kill("SIGKILL");
  });
  const lines = () => out.split("\n").filter(Boolean).map((line) => JSON.parse(line));
  const until = async (type) => {
    const deadline = Date.now() + WAIT_MS;
    for (;;) {
      const found = lines().find((line) => line.type === type);
      if (found) return { line: found, at: Date.now() };
      if (exitedAt !== null || Date.now() > deadline) {
        assert.fail(`no ${type} from the child (exited: ${exitedAt !== null}); out: ${out} err: ${err}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  };
  const exitWithin = async (since) => {
    let bound;
    const timeout = new Promise((resolve) => { bound = setTimeout(() => resolve("timeout"), EXIT_MS + 1_000); });
    const code = await Promise.race([exited, timeout]);
    clearTimeout(bound);
    assert.notEqual(code, "timeout", `the process did not exit; out: ${out} err: ${err}`);
    const took = exitedAt - since;
    assert.ok(took < EXIT_MS, `exited ${took} ms after the client was over; out: ${out}`);
    assert.equal(code, 0, `exit code; err: ${err}`);
    assert.equal(err, "", "nothing on stderr");
    return took;
  };
  return { lines, until, exitWithin, go: () => proc.stdin.write("go\n") };
}
