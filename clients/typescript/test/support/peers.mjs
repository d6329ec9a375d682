// peers.mjs: SDK clients for the integration tests. `connectPeer` builds a `Client` from the
// built package (dist/esm) with `ws` as its WebSocket and short timers, starts recording its
// events BEFORE `connect()` (so the first welcome is in the record), connects with a bounded
// wait, and registers the client for `closeAll`, which each test's `after` calls: every
// client is disconnected (bounded) before its server stops, so no reconnection outlives a test.
import WebSocket from "ws";
import { Client } from "../../dist/esm/index.js";
import { record, within, WAIT_MS } from "./server.mjs";

/** Client timers matching FAST_SERVER_ARGS: heartbeat and ping every 100 ms, quick reconnects. */
export const FAST_CLIENT = {
  heartbeatIntervalMs: 100,
  silenceTimeoutMs: 800,
  joinTimeoutMs: 3_000,
  leaveTimeoutMs: 1_000,
  reconnect: { attempts: 3, delayMs: 200 },
  resumeWindowMs: 5_000,
  ackIntervalMs: 200,
};

/** The options of a host device `id` opening (or owning) `sessionId` at `url`. */
export function hostOptions(url, sessionId, id = "desk", extra = {}) {
  return { url, sessionId, device: { id, name: `${id} name`, type: "host" }, WebSocket, ...FAST_CLIENT, ...extra };
}

/** The options of a member device `id` joining `sessionId` at `url`. */
export function memberOptions(url, sessionId, id, extra = {}) {
  return { url, sessionId, device: { id, name: `${id} name`, type: "client" }, WebSocket, ...FAST_CLIENT, ...extra };
}

/**
 * A set of clients to close when the test ends. `connect(options)` resolves with
 * `{ client, log, id }` (`log`: support/server.mjs `record`, started before connecting).
 */
export function peers() {
  const clients = [];
  return {
    /** Connects a client; rejects (bounded) with the SDK's error. */
    async connect(options) {
      const client = new Client(options);
      const log = record(client);
      clients.push(client);
      await within(client.connect(), WAIT_MS, `connect ${options.device.id}`);
      return { client, log, id: client.clientId() };
    },
    /** Tries to connect; resolves with the rejection (or fails the test if it connects). */
    async refused(options) {
      const client = new Client(options);
      const log = record(client);
      clients.push(client);
      try {
        await within(client.connect(), WAIT_MS, `connect ${options.device.id}`);
      } catch (error) {
        return { error, log, client };
      }
      throw new Error(`${options.device.id} connected to ${options.sessionId}, expected a refusal`);
    },
    /** A client not connected yet, recorded, registered for cleanup. */
    create(options) {
      const client = new Client(options);
      const log = record(client);
      clients.push(client);
      return { client, log };
    },
    /** Disconnects every client (each bounded; errors ignored: the test's verdict is made). */
    async closeAll() {
      await Promise.all(clients.map((client) =>
        within(Promise.resolve().then(() => client.disconnect()), 3_000, "disconnect").catch(() => {})));
    },
  };
}
