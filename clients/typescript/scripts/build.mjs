// build.mjs: compiles src/ twice with tsc, to ES modules (dist/esm, with the .d.ts files in
// dist/types) and to CommonJS (dist/cjs, marked by its own package.json), and bundles a
// minified ES build for the size report (dist/loudsync-client.min.js, what scripts/size.mjs
// measures; the browser test loads it too). Run: `npm run build`.
import { execFileSync } from "node:child_process";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const tsc = join(root, "node_modules/typescript/bin/tsc");
rmSync(join(root, "dist"), { recursive: true, force: true });
execFileSync(process.execPath, [tsc, "-p", join(root, "tsconfig.json")], { stdio: "inherit" });
execFileSync(process.execPath, [tsc, "-p", join(root, "tsconfig.cjs.json")], { stdio: "inherit" });
writeFileSync(join(root, "dist/esm/package.json"), '{ "type": "module" }\n');
writeFileSync(join(root, "dist/cjs/package.json"), '{ "type": "commonjs" }\n');
mkdirSync(join(root, "dist"), { recursive: true });
await build({
  entryPoints: [join(root, "src/index.ts")],
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2020",
  outfile: join(root, "dist/loudsync-client.min.js"),
  logLevel: "warning",
});
