// dev-proxy.mjs: a development server for the dashboard: serves the built files of
// crates/server/assets/dashboard/ at /dashboard/ with the server's headers (the CSP included) and
// passes every other request (/v1/*, the event stream) to a running `loudsync serve`, so the page
// can be tried without rebuilding the binary after each `npm run build`. Loopback only.
// Run: `node scripts/dev-proxy.mjs http://127.0.0.1:8080 [port]`; it prints its own address.
import { readFileSync } from "node:fs";
import { createServer, request } from "node:http";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const assets = join(dirname(fileURLToPath(import.meta.url)), "../../crates/server/assets/dashboard");
const upstream = new URL(process.argv[2] ?? "http://127.0.0.1:8080");
const port = Number(process.argv[3] ?? 0);
const types = { "index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8" };
const headers = {
  "Cache-Control": "no-cache",
  "X-Content-Type-Options": "nosniff",
  "Content-Security-Policy":
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
  "Referrer-Policy": "no-referrer",
};

const server = createServer((req, res) => {
  const path = new URL(req.url ?? "/", "http://x").pathname;
  if (path === "/dashboard") {
    res.writeHead(302, { Location: "/dashboard/" }).end();
    return;
  }
  const file = path === "/dashboard/" ? "index.html" : path.startsWith("/dashboard/") ? path.slice(11) : null;
  if (file !== null && file in types) {
    res.writeHead(200, { ...headers, "Content-Type": types[file] }).end(readFileSync(join(assets, file)));
    return;
  }
  const up = request(
    { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: { ...req.headers, host: upstream.host } },
    (ur) => {
      res.writeHead(ur.statusCode ?? 502, ur.headers);
      ur.pipe(res);
    },
  );
  up.on("error", (e) => res.writeHead(502, { "Content-Type": "application/json" }).end(JSON.stringify({ code: "bad_gateway", message: String(e) })));
  req.pipe(up);
  res.on("close", () => up.destroy());
});
server.listen(port, "127.0.0.1", () => {
  const a = server.address();
  console.log(`dashboard dev proxy on http://127.0.0.1:${a.port}/dashboard/ -> ${upstream.origin}`);
});
