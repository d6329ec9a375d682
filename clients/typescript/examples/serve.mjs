#!/usr/bin/env node
// serve.mjs: a tiny static web server for trying examples/browser.html (a page's ES module
// imports do not load from file:// URLs). It serves this package's examples/ and dist/ folders
// (nothing else) on 127.0.0.1, port 8000 or the first argument, and prints the page's address.
// Run (after `npm run build`): node examples/serve.mjs [PORT]
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { dirname, extname, join, normalize, sep } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const port = Number(process.argv[2] ?? 8000);
const types = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".map": "application/json" };

const server = createServer(async (request, response) => {
  const path = normalize(decodeURIComponent(new URL(request.url ?? "/", "http://x").pathname));
  const allowed = path.startsWith(`${sep}examples${sep}`) || path.startsWith(`${sep}dist${sep}`);
  try {
    if (!allowed || path.includes("..")) throw new Error("not served");
    const body = await readFile(join(root, path));
    response.writeHead(200, { "content-type": types[extname(path)] ?? "application/octet-stream" });
    response.end(body);
  } catch {
    response.writeHead(404, { "content-type": "text/plain" });
    response.end("not found\n");
  }
});
server.listen(port, "127.0.0.1", () => {
  const { port: actual } = server.address();
  console.log(`open http://127.0.0.1:${actual}/examples/browser.html`);
});
