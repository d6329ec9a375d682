// size.mjs: prints the minified and the minified + gzipped size of the bundled SDK
// (dist/loudsync-client.min.js, written by `npm run build`): the figure the README reports.
// Run: `npm run build && npm run size`.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const file = join(dirname(fileURLToPath(import.meta.url)), "../dist/loudsync-client.min.js");
const bytes = readFileSync(file);
const gz = gzipSync(bytes, { level: 9 });
const kb = (n) => `${(n / 1024).toFixed(1)} KiB`;
console.log(`loudsync-client.min.js: ${kb(bytes.length)} minified, ${kb(gz.length)} minified + gzipped`);
