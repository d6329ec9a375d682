/**
 * socket.ts: one WebSocket connection as the driver sees it (the TypeScript counterpart of
 * the Rust SDK's `transport`): it opens a WHATWG-style WebSocket (the browser's, React
 * Native's, or `ws`'s in Node), turns its callbacks into four ordered reports (`opened`,
 * `text`, `closed`, `failed`: closed before it ever opened, worded for a person) and lets the
 * driver send, close and forget it.
 *
 * How it works: `openSocket` constructs the socket and installs `onopen` / `onmessage` /
 * `onclose` / `onerror`. Every report passes through one in-order chain, so a binary frame
 * delivered as a `Blob` (decoded asynchronously) is still reported before the frames and the
 * close that followed it; string data (every text frame in browsers, React Native and `ws`)
 * is reported at once. Binary data (`ArrayBuffer`, typed arrays such as Node's `Buffer`,
 * `Blob`) is decoded as UTF-8 with `TextDecoder` and reported as text. `detach()` makes the
 * socket silent for good: its handlers become no-ops (never `null`: `ws` throws an
 * unhandled `error` event when no listener is left), so a socket the driver forgot cannot
 * report anything late; it closes with 1000, or drops a socket whose peer went silent
 * (`detach(true)`: `ws`'s `terminate()`, so no close handshake holds the process). No Node imports: this runs in browsers and React Native unchanged.
 */
import type { WebSocketConstructor, WebSocketLike } from "./config.js";

/** What a socket reports to its owner; nothing is reported after `detach()`. */
export interface SocketReports {
  /** The socket is open. */
  opened(): void;
  /** A frame arrived, as text. */
  text(text: string): void;
  /** The open socket ended: the close frame's code and reason, or `null` when none came (1006). */
  closed(close: { code: number; reason: string } | null): void;
  /** The socket ended before it opened: why, worded for a person (without the URL). */
  failed(reason: string): void;
}

/** One WebSocket connection, opened by `openSocket`. */
export interface Socket {
  /** Whether `opened` was reported. */
  readonly isOpen: boolean;
  /** Sends a text frame; a socket that cannot send ignores it (its close follows). */
  send(text: string): void;
  /**
   * Stops every report, then closes the socket (if it is not closed already): with 1000, or,
   * when `abrupt` (the peer stopped answering), by dropping the connection where the
   * implementation can (`ws`'s `terminate()`), since a close handshake with a silent peer
   * cannot finish and `ws` would hold the socket, and a Node process with it, 30 s for it.
   */
  detach(abrupt?: boolean): void;
}

/** The WebSocket `OPEN` ready state (the same number in every implementation). */
const OPEN = 1;
/** The WebSocket `CLOSED` ready state. */
const CLOSED = 3;
/** RFC 6455's "abnormal closure": the socket ended without a close frame. */
const ABNORMAL_CLOSURE = 1006;

/**
 * Opens a socket to `url` with `WebSocketClass` and reports to `reports`. A constructor that
 * throws (e.g. an unparsable URL) is reported as `failed` on the next microtask, never
 * synchronously, so the caller's state is settled first.
 */
export function openSocket(WebSocketClass: WebSocketConstructor, url: string, reports: SocketReports): Socket {
  let ws: WebSocketLike | null = null;
  let detached = false;
  let opened = false;
  let ended = false;
  /** The last error text the socket gave (`ws` gives one; browsers give none). */
  let lastError = "";
  /** Reports wait here, in order, while a Blob is being decoded. */
  let chain: Promise<void> | null = null;

  const report = (step: () => void | Promise<void>): void => {
    if (detached) return;
    if (chain === null) {
      const result = step();
      if (result === undefined) return;
      track(result);
      return;
    }
    track(chain.then(() => (detached ? undefined : step())));
  };
  /** Makes `promise` the chain's tail; the chain is empty again once its tail settled. */
  const track = (promise: Promise<void>): void => {
    const tail: Promise<void> = promise
      .catch(() => undefined)
      .then(() => {
        if (chain === tail) chain = null;
      });
    chain = tail;
  };

  const deliver = (data: unknown): void | Promise<void> => {
    if (typeof data === "string") {
      reports.text(data);
      return undefined;
    }
    const bytes = toBytes(data);
    if (bytes) {
      reports.text(decodeUtf8(bytes));
      return undefined;
    }
    if (isBlob(data)) {
      return data.arrayBuffer().then((buffer) => {
        if (!detached) reports.text(decodeUtf8(new Uint8Array(buffer)));
      });
    }
    // Something this adapter does not know (e.g. `ws`'s "fragments" arrays): as text.
    reports.text(String(data));
    return undefined;
  };

  const end = (code: number | undefined, reason: string | undefined): void => {
    if (ended) return;
    ended = true;
    if (opened) {
      reports.closed(code === undefined || code === ABNORMAL_CLOSURE ? null : { code, reason: reason ?? "" });
    } else {
      const detail = lastError || (code === undefined ? "the socket closed" : `the socket closed (${code})`);
      reports.failed(detail);
    }
  };

  try {
    ws = new WebSocketClass(url);
  } catch (error) {
    const detail = error instanceof Error ? error.message : String(error);
    Promise.resolve().then(() => {
      if (!detached && !ended) {
        ended = true;
        reports.failed(detail);
      }
    });
    return {
      get isOpen() {
        return false;
      },
      send() {},
      detach() {
        detached = true;
      },
    };
  }

  const socket = ws;
  try {
    // Text frames arrive as strings anyway; this only avoids Blobs for binary ones.
    (socket as { binaryType?: string }).binaryType = "arraybuffer";
  } catch {
    // An implementation without binaryType: Blobs are decoded as well.
  }
  socket.onopen = () =>
    report(() => {
      if (ended || opened) return;
      opened = true;
      reports.opened();
    });
  socket.onmessage = (event) => report(() => (ended ? undefined : deliver(event.data)));
  socket.onerror = (event) => {
    const message = (event as { message?: unknown } | null)?.message;
    if (typeof message === "string" && message !== "") lastError = message;
  };
  socket.onclose = (event) => report(() => end(event?.code, event?.reason));

  return {
    get isOpen() {
      return opened && !ended;
    },
    send(text: string) {
      if (detached || socket.readyState !== OPEN) return;
      try {
        socket.send(text);
      } catch {
        // A send that fails shows up as the socket closing.
      }
    },
    detach(abrupt = false) {
      if (detached) return;
      detached = true;
      const silent = (): void => {};
      socket.onopen = silent;
      socket.onmessage = silent;
      socket.onclose = silent;
      socket.onerror = silent;
      if (socket.readyState !== CLOSED) {
        const terminate = (socket as { terminate?: unknown }).terminate;
        try {
          if (abrupt && typeof terminate === "function") terminate.call(socket);
          else socket.close(1000);
        } catch {
          // Closing a socket that is still connecting may throw in some implementations.
        }
      }
    },
  };
}

/** The bytes of an `ArrayBuffer` or of a typed array / `DataView` (Node's `Buffer` included). */
function toBytes(data: unknown): Uint8Array | null {
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return null;
}

/** Whether `data` looks like a `Blob` (checked by shape: React Native's is not the DOM's). */
function isBlob(data: unknown): data is { arrayBuffer(): Promise<ArrayBuffer> } {
  return typeof data === "object" && data !== null && typeof (data as { arrayBuffer?: unknown }).arrayBuffer === "function";
}

/** UTF-8 bytes as a string: `TextDecoder` where there is one, a small fallback elsewhere. */
function decodeUtf8(bytes: Uint8Array): string {
  const Decoder = (globalThis as { TextDecoder?: typeof TextDecoder }).TextDecoder;
  if (Decoder) return new Decoder("utf-8").decode(bytes);
  let escaped = "";
  for (const byte of bytes) escaped += `%${byte.toString(16).padStart(2, "0")}`;
  try {
    return decodeURIComponent(escaped);
  } catch {
    return String.fromCharCode(...bytes);
  }
}
