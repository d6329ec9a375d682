// package.test.mjs: the package as an application receives it, after `npm run build`: the
// ES module and the CommonJS build export the same names, `import "loudsync-client"` and
// `require("loudsync-client")` resolve through package.json's `exports`, the .d.ts files
// type-check an application's code (test/types/consumer.ts, with tsc against dist/types), the
// bundle has no import of its own (zero runtime dependencies, nothing from Node), and the
// package.json has no `dependencies`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "../..");
const require = createRequire(import.meta.url);
const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));

test("the ES module and the CommonJS build export the same names, through package.json's exports", async () => {
  const esm = await import("loudsync-client");
  const cjs = require("loudsync-client");
  const names = Object.keys(esm).sort();
  assert.deepEqual(Object.keys(cjs).sort(), names);
  for (const name of ["Client", "Machine", "LoudSyncError", "PairingClient", "CrSocket", "resolveConfig"]) {
    assert.ok(names.includes(name), `${name} is exported`);
  }
  assert.equal(typeof cjs.Client, "function");
  assert.notEqual(cjs.Client, esm.Client, "two builds, not one re-exported");
  // The CommonJS Client really works: a bad URL is refused, worded for a person.
  const client = new cjs.Client({ url: "http://x/", sessionId: "s", device: { id: "d", name: "n", type: "client" } });
  await assert.rejects(client.connect(), (error) => error.kind === "config" && /ws:\/\//.test(error.message));
});

test("the declarations type-check an application's code (test/types/consumer.ts)", () => {
  const tsc = join(root, "node_modules/typescript/bin/tsc");
  try {
    execFileSync(process.execPath, [tsc, "-p", join(root, "test/types/tsconfig.json")], { encoding: "utf8" });
  } catch (error) {
    assert.fail(`tsc on test/types/consumer.ts:\n${error.stdout}${error.stderr}`);
  }
});

test("zero runtime dependencies: no dependencies in package.json, no import in the bundle", () => {
  assert.equal(pkg.dependencies, undefined);
  assert.equal(pkg.peerDependencies, undefined);
  const bundle = readFileSync(join(root, "dist/loudsync-client.min.js"), "utf8");
  // esbuild writes import statements first, `import ... from"x"` or `import"x"`, and a
  // dynamic import or require as `import(` / `require(`; an error message that mentions
  // `import WebSocket from "ws"` sits inside a string, after code.
  assert.doesNotMatch(bundle, /^\s*import\b/, "the bundle starts with no import");
  assert.doesNotMatch(bundle, /\bimport\s*\(|\brequire\s*\(/, "the bundle imports nothing at run time");
  for (const dir of ["esm", "cjs"]) {
    const files = execFileSync("find", [join(root, "dist", dir), "-name", "*.js"], { encoding: "utf8" }).trim().split("\n");
    for (const file of files) {
      const text = readFileSync(file, "utf8");
      // tsc writes one statement per line: `import ... from "./x.js";` / `require("./x.js")`.
      const imports = /^(?:import|export)\b[^\n]*?\bfrom\s*["']([^"']+)["'];$|^import\s*["']([^"']+)["'];$|\brequire\("([^"]+)"\)/gm;
      for (const match of text.matchAll(imports)) {
        const spec = match[1] ?? match[2] ?? match[3];
        assert.ok(spec.startsWith("./") || spec.startsWith("../"), `${file} imports ${spec}`);
      }
    }
  }
});
