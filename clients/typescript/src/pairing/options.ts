/**
 * pairing/options.ts: the settings of a `PairingClient` (where, which app, the machine's
 * settings, the driver's timers, the WebSocket constructor) with their defaults, the
 * checks that refuse settings that cannot work (`PairingError` kind `config`, before
 * anything is sent), and the pairing endpoint's URL built from the server's URL and the app.
 */
import type { WebSocketConstructor } from "../config.js";
import { PAIRING_DEFAULTS, PairingError, type PairingConfig, type PairingRole } from "./machine.js";

/** The driver's default timers (ms) and activity. */
export const PAIRING_CLIENT_DEFAULTS = {
  active: true,
  aliveIntervalMs: 12_000,
  silenceTimeoutMs: 30_000,
  reconnectDelayMs: 2_000,
} as const;

/** Settings of a `PairingClient`: where, which app, the machine's settings, the driver's timers. */
export interface PairingClientConfig extends PairingConfig {
  /**
   * The server: `ws://HOST:PORT/` or `wss://HOST:PORT/`. The endpoint is `crsocket/{app}/ws`
   * under the URL's path (a trailing `/ws`, the session endpoint, is dropped first).
   */
  url: string;
  /** The app's name (`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`). */
  app: string;
  /** Whether the application is active from the start (true); otherwise wait for `setActive`. */
  active?: boolean | undefined;
  /** How often to send `cr_alive` once identified (12000; the server's timeout is 25 s). */
  aliveIntervalMs?: number | undefined;
  /** Nothing heard, no `cr_welcome` or no upgrade for this long: the connection is lost (30000). */
  silenceTimeoutMs?: number | undefined;
  /** Wait before each reconnection attempt (2000). */
  reconnectDelayMs?: number | undefined;
  /** The WebSocket constructor; default `globalThis.WebSocket` (pass `ws`'s in Node 20). */
  WebSocket?: WebSocketConstructor | undefined;
}

const CLIENT_ID = /^[0-9]{6}$/;
const ACCESS_TOKEN = /^[!-~]{1,256}$/;
const APP_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;

/** What an unusable access token is told. */
export const PAIRING_TOKEN_RULE = "the access token must be 1 to 256 characters of ! to ~ (no spaces)";

/** Whether `id` is a client id: exactly 6 ASCII digits (leading zeros allowed). */
export function isPairingClientId(id: unknown): id is string {
  return typeof id === "string" && CLIENT_ID.test(id);
}

/** Whether `token` is a well-formed access token: 1 to 256 of `!` to `~`. */
export function isPairingAccessToken(token: unknown): token is string {
  return typeof token === "string" && ACCESS_TOKEN.test(token);
}

/**
 * The pairing WebSocket's URL, e.g. `ws://127.0.0.1:8080/crsocket/alpha/ws`; throws
 * `PairingError` kind `config` for a URL that is not `ws://` / `wss://` or a bad app name.
 */
export function pairingEndpoint(url: string, app: string): string {
  if (typeof app !== "string" || !APP_NAME.test(app)) {
    throw new PairingError(
      "config",
      `\`${String(app)}\` is not an app name (1-64 of A-Z a-z 0-9 - _, starting with a letter or digit)`,
    );
  }
  const match = typeof url === "string" ? /^(wss?):\/\/([^/?#\s]+)([^?#\s]*)/i.exec(url) : null;
  const scheme = match?.[1];
  const authority = match?.[2];
  if (match === null || scheme === undefined || authority === undefined) {
    throw new PairingError(
      "config",
      `\`${String(url)}\` is not a ws:// or wss:// URL (write e.g. ws://127.0.0.1:8080/)`,
    );
  }
  const path = (match[3] ?? "").replace(/\/+$/, "");
  const prefix = path.endsWith("/ws") ? path.slice(0, -3) : path;
  return `${scheme.toLowerCase()}://${authority}${prefix}/crsocket/${app}/ws`;
}


/** `PairingClientConfig` checked, with every default filled in. */
export interface ResolvedPairingClientConfig {
  /** The pairing WebSocket's URL. */
  endpoint: string;
  /** The app's name. */
  app: string;
  /** Controller or responder. */
  role: PairingRole;
  /** The machine's settings (role, id, token, timers), every one given. */
  machine: PairingConfig;
  /** Active from the start. */
  active: boolean;
  /** The token to identify with. */
  accessToken: string | null;
  /** `cr_alive` interval, ms. */
  aliveIntervalMs: number;
  /** Silence limit, ms. */
  silenceTimeoutMs: number;
  /** Wait before each connection attempt after a failure, ms. */
  reconnectDelayMs: number;
  /** The WebSocket constructor. */
  WebSocket: WebSocketConstructor;
}

/** Checks `config` and fills in the defaults; throws `PairingError` kind `config`. */
export function resolvePairingClientConfig(config: PairingClientConfig): ResolvedPairingClientConfig {
  const fail = (what: string): never => {
    throw new PairingError("config", what);
  };
  if (config === null || typeof config !== "object") fail("config must be an object");
  if (config.role !== "controller" && config.role !== "responder") {
    fail(`role must be "controller" or "responder" (got ${JSON.stringify(config.role)})`);
  }
  const endpoint = pairingEndpoint(config.url, config.app);
  const clientId = config.clientId ?? null;
  if (clientId !== null && !isPairingClientId(clientId)) {
    fail(`client id \`${String(clientId)}\`: expected 6 ASCII digits`);
  }
  const accessToken = config.accessToken ?? null;
  if (accessToken !== null && !isPairingAccessToken(accessToken)) fail(PAIRING_TOKEN_RULE);
  const ms = (name: string, value: number | undefined, fallback: number, min = 1): number => {
    const v = value ?? fallback;
    if (typeof v !== "number" || !Number.isFinite(v) || v < min) fail(`${name} must be a number >= ${min} (got ${String(v)})`);
    return v;
  };
  const ctor = config.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (typeof ctor !== "function") fail("no WebSocket: pass the WebSocket option (e.g. from the ws package in Node)");
  return {
    endpoint,
    app: config.app,
    role: config.role,
    machine: {
      role: config.role,
      clientId,
      accessToken,
      partnerAliveMs: ms("partnerAliveMs", config.partnerAliveMs, PAIRING_DEFAULTS.partnerAliveMs),
      searchPingMs: ms("searchPingMs", config.searchPingMs, PAIRING_DEFAULTS.searchPingMs),
      interactPingMs: ms("interactPingMs", config.interactPingMs, PAIRING_DEFAULTS.interactPingMs),
      pacingMs: ms("pacingMs", config.pacingMs, PAIRING_DEFAULTS.pacingMs, 0),
      queueLimit: ms("queueLimit", config.queueLimit, PAIRING_DEFAULTS.queueLimit),
    },
    active: config.active ?? PAIRING_CLIENT_DEFAULTS.active,
    accessToken,
    aliveIntervalMs: ms("aliveIntervalMs", config.aliveIntervalMs, PAIRING_CLIENT_DEFAULTS.aliveIntervalMs),
    silenceTimeoutMs: ms("silenceTimeoutMs", config.silenceTimeoutMs, PAIRING_CLIENT_DEFAULTS.silenceTimeoutMs),
    reconnectDelayMs: ms("reconnectDelayMs", config.reconnectDelayMs, PAIRING_CLIENT_DEFAULTS.reconnectDelayMs, 0),
    WebSocket: ctor as WebSocketConstructor,
  };
}
