// build.mjs: builds the dashboard into crates/server/assets/dashboard/, the three files the
// server embeds (include_bytes!) and serves at /dashboard: app.js (src/main.ts bundled and
// minified by esbuild, ES2020, no source map), app.css (src/style.css minified) and index.html
// (copied). The output is deterministic (no timestamps, no absolute paths), so CI can rebuild it
// and compare with the committed files. Run: `npm run build`.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const out = join(root, "../crates/server/assets/dashboard");
mkdirSync(out, { recursive: true });

const common = {
  bundle: true,
  minify: true,
  target: "es2020",
  sourcemap: false,
  legalComments: "none",
  charset: "utf8",
  write: false,
  absWorkingDir: root,
  logLevel: "warning",
};
const banner = "/* LoudSync dashboard: built from dashboard/src by dashboard/scripts/build.mjs; do not edit. */";

const js = await build({
  ...common,
  entryPoints: ["src/main.ts"],
  format: "iife",
  platform: "browser",
  outfile: "app.js",
  banner: { js: banner },
});
const css = await build({
  ...common,
  entryPoints: ["src/style.css"],
  loader: { ".css": "css" },
  outfile: "app.css",
  banner: { css: banner },
});

const html = readFileSync(join(root, "src/index.html"), "utf8");
if (/<script(?![^>]*\bsrc=)|<style|\son\w+=/i.test(html)) {
  throw new Error("src/index.html must have no inline script, style or handler (the CSP forbids them)");
}

const one = (result) => {
  if (result.outputFiles.length !== 1) throw new Error("expected one output file");
  return result.outputFiles[0].text;
};
const files = [
  ["app.js", one(js)],
  ["app.css", one(css)],
  ["index.html", html],
];
for (const [name, text] of files) {
  writeFileSync(join(out, name), text.endsWith("\n") ? text : `${text}\n`);
  console.log(`${name}: ${Buffer.byteLength(text)} bytes`);
}
