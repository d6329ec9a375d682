// proxy.mjs: a loopback TCP proxy (node:net) in front of a test server, so a test can cut
// every connection at once, uncleanly: `cutAll()` destroys both sockets of every open pair
// (no WebSocket close frame, no FIN handshake the peer waits for), as a dropped network does.
// The proxy keeps listening, so the client's next connection goes through again. `pause()`
// makes it refuse (destroy) new connections until `resume()`, for a drop that lasts;
// `freezeAll()` stops the bytes of the open connections without closing them (silence).
import { createServer, connect } from "node:net";

/**
 * Starts a proxy on 127.0.0.1 (a free port) forwarding to `targetPort` on 127.0.0.1.
 * @param {number} targetPort
 * @returns {Promise<{ port: number, url: string, http: string, connections(): number, accepted(): number,
 *   cutAll(): number, freezeAll(): number, pause(): void, resume(): void, setTarget(port: number): void, close(): Promise<void> }>}
 */
export function startProxy(targetPort) {
  let target = targetPort;
  let refusing = false;
  let acceptedCount = 0;
  const pairs = new Set();

  const server = createServer((downstream) => {
    acceptedCount += 1;
    if (refusing) {
      downstream.destroy();
      return;
    }
    const upstream = connect({ host: "127.0.0.1", port: target });
    const pair = { downstream, upstream };
    pairs.add(pair);
    const drop = () => {
      pairs.delete(pair);
      downstream.destroy();
      upstream.destroy();
    };
    downstream.setNoDelay(true);
    upstream.setNoDelay(true);
    downstream.pipe(upstream);
    upstream.pipe(downstream);
    downstream.on("error", drop);
    upstream.on("error", drop);
    downstream.on("close", drop);
    upstream.on("close", drop);
  });

  return new Promise((resolveStart, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      resolveStart({
        port,
        url: `ws://127.0.0.1:${port}/`,
        http: `http://127.0.0.1:${port}`,
        /** Open connection pairs now. */
        connections: () => pairs.size,
        /** Connections accepted since the start (refused ones included). */
        accepted: () => acceptedCount,
        /** Destroys every open connection both ways; returns how many pairs were cut. */
        cutAll() {
          const cut = pairs.size;
          for (const { downstream, upstream } of [...pairs]) {
            downstream.resetAndDestroy ? downstream.resetAndDestroy() : downstream.destroy();
            upstream.resetAndDestroy ? upstream.resetAndDestroy() : upstream.destroy();
          }
          pairs.clear();
          return cut;
        },
        /**
         * Stops the bytes of every open connection both ways without closing anything (a
         * frozen network path): neither end hears from the other until one gives up. New
         * connections are not affected. Returns how many pairs were frozen.
         */
        freezeAll() {
          for (const { downstream, upstream } of pairs) {
            downstream.unpipe(upstream);
            upstream.unpipe(downstream);
            downstream.pause();
            upstream.pause();
          }
          return pairs.size;
        },
        /** New connections are destroyed on accept until `resume()`. */
        pause() { refusing = true; },
        /** New connections are forwarded again. */
        resume() { refusing = false; },
        /** Later connections go to this port. */
        setTarget(port) { target = port; },
        /** Stops listening and cuts every open connection. */
        close() {
          for (const { downstream, upstream } of [...pairs]) {
            downstream.destroy();
            upstream.destroy();
          }
          pairs.clear();
          return new Promise((resolveClose) => server.close(() => resolveClose()));
        },
      });
    });
  });
}
