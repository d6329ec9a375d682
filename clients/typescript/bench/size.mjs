// size.mjs: the SDK's size, for bench/run.mjs. It reads the bundle `npm run build` wrote
// (dist/loudsync-client.min.js: src/index.ts, esbuild, minified, ES2020, ESM), gzips it at
// level 9 (what scripts/size.mjs reports), and bundles src/ twice more in memory with the same
// esbuild settings: the session layer alone (every module of src/index.ts but `pairing/`) and
// the whole package, with esbuild's metafile, to say how many minified bytes each layer adds.
// Nothing is written to disk.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { build } from "esbuild";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");

/** The session layer's entry: src/index.ts without `export * from "./pairing/index.js"`. */
const SESSION_ONLY_ENTRY = [
  "types", "events", "errors", "config", "machine", "client",
].map((name) => `export * from "./${name}.js";`).join("\n");

/** The same esbuild settings as scripts/build.mjs's bundle. */
const BUNDLE = { bundle: true, minify: true, format: "esm", target: "es2020", write: false, metafile: true, logLevel: "warning" };

/** Minified and minified + gzipped (level 9) byte counts of `bytes`. */
function sizes(bytes) {
  return { minified: bytes.length, gzipped: gzipSync(bytes, { level: 9 }).length };
}

/** Bundles `options` (an esbuild entry) in memory; returns its bytes and its metafile. */
async function bundle(options) {
  const result = await build({ ...BUNDLE, ...options });
  const output = result.outputFiles?.[0];
  if (!output) throw new Error("esbuild wrote no output");
  return { bytes: Buffer.from(output.contents), metafile: result.metafile };
}

/** Minified bytes in the output per source module (path relative to src/), largest first. */
function bytesPerModule(metafile) {
  const [output] = Object.values(metafile.outputs);
  const rows = Object.entries(output.inputs).map(([path, info]) => [path.replace(/^.*src\//, ""), info.bytesInOutput]);
  return rows.filter(([, bytes]) => bytes > 0).sort((a, b) => b[1] - a[1]);
}

/**
 * Measures the built bundle and the two in-memory bundles.
 * @returns {Promise<{ bundle: {minified:number, gzipped:number}, session: {minified:number, gzipped:number},
 *   full: {minified:number, gzipped:number}, pairingShare: number, modules: [string, number][] }>}
 */
export async function measureSize() {
  const built = readFileSync(join(root, "dist/loudsync-client.min.js"));
  const session = await bundle({
    stdin: { contents: SESSION_ONLY_ENTRY, resolveDir: join(root, "src"), loader: "ts", sourcefile: "session-only.ts" },
  });
  const full = await bundle({ entryPoints: [join(root, "src/index.ts")] });
  const modules = bytesPerModule(full.metafile);
  const pairingShare = modules.filter(([path]) => path.startsWith("pairing/")).reduce((sum, [, bytes]) => sum + bytes, 0);
  return { bundle: sizes(built), session: sizes(session.bytes), full: sizes(full.bytes), pairingShare, modules };
}
