/**
 * errors.ts: what the client's promises reject with and its commands throw: one
 * `LoudSyncError` class with a `kind` (as the Rust SDK's `ClientError` variants) and, for
 * `rejected` and `refused`, the server's error.
 */
import type { ServerError } from "./events.js";

/** Which failure a `LoudSyncError` is. */
export type LoudSyncErrorKind =
  /** A setting is invalid (before anything was sent). */
  | "config"
  /** The socket could not be opened, or closed before `welcome`. */
  | "connect"
  /** The server refused the first `join`: `serverError` says why. */
  | "rejected"
  /** The client is not connected (nor resuming). */
  | "not_connected"
  /** On a resumable connection: `queueLimit` frames are waiting already. */
  | "queue_full"
  /** An argument is invalid (e.g. a state that is not a JSON object). */
  | "invalid"
  /** The server refused a request (e.g. `media_unavailable`): `serverError` says why. */
  | "refused";

/** The SDK's one error class. */
export class LoudSyncError extends Error {
  /** Which failure. */
  readonly kind: LoudSyncErrorKind;
  /** For `rejected` and `refused`: the server's error. */
  readonly serverError: ServerError | undefined;

  constructor(kind: LoudSyncErrorKind, message: string, serverError?: ServerError) {
    super(message);
    this.name = "LoudSyncError";
    this.kind = kind;
    this.serverError = serverError;
  }
}
