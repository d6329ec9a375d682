/**
 * pairing/frames.ts: the JSON frames of the pairing WebSocket `/crsocket/{APP}/ws`
 * (PROTOCOL §16): what a pairing client writes (`cr_identify`, `cr_event`, `cr_alive`) and
 * how it reads what the server sends (`cr_welcome`, `cr_event`, `cr_alive`, `cr_aborted`,
 * and the landed `error`). Reading is strict about the fields it uses (a frame missing one
 * is unreadable: `null`) and ignores the rest, as the Rust SDK's `decode_server` does.
 */
import type { ServerError } from "../events.js";
import type { ErrorCode } from "../types.js";
import type { PairingOutgoingEvent, PairingRole } from "./machine.js";

/**
 * Why the server ends (or refuses) a pairing connection: `cr_aborted.reason`. A newer
 * server's unknown reason arrives as its string.
 */
export type PairingAbortReason =
  | "invalidRole"
  | "invalidClientId"
  | "invalidAccessToken"
  | "notAuthorized"
  | "clientIdInUse"
  | "releasedByOther"
  | "clientNotAlive"
  | (string & {});

/** A frame from the server to a pairing client, read. */
export type PairingServerFrame =
  /** `cr_welcome`: the identify was accepted. */
  | { type: "cr_welcome"; appId: string; clientId: string; clientRole: string }
  /** `cr_event`: an event relayed from `sender` (or a server reject). */
  | {
      type: "cr_event";
      sender: string;
      eventType: string;
      subType: string;
      params: string[];
      buffered: boolean;
      logged: boolean;
      interceptable: boolean;
      sendCt: number | null;
    }
  /** `cr_alive`: the answer to the client's `cr_alive`. */
  | { type: "cr_alive" }
  /** `cr_aborted`: the connection ends (close 1000 follows). */
  | { type: "cr_aborted"; reason: PairingAbortReason }
  /** The landed `error` frame (`invalid_message`, `too_large`, `rate_limited`, ...). */
  | { type: "error"; error: ServerError };

/** The `cr_identify` frame: `clientId` omitted (`null`) asks the server to assign one. */
export function pairingIdentifyFrame(role: PairingRole, clientId: string | null, accessToken: string | null): string {
  const frame: Record<string, string> = { type: "cr_identify", clientRole: role };
  if (accessToken !== null) frame["accessToken"] = accessToken;
  if (clientId !== null) frame["clientId"] = clientId;
  return JSON.stringify(frame);
}

/** A machine event as a `cr_event` frame, with `sendCt` = `unixMs`. */
export function pairingEventFrame(event: PairingOutgoingEvent, unixMs: number): string {
  return JSON.stringify({
    type: "cr_event",
    recipientClientId: event.recipient,
    eventType: event.eventType,
    eventSubType: event.subType,
    eventParams: event.params,
    buffered: false,
    logged: false,
    interceptable: true,
    sendCt: Math.floor(unixMs),
  });
}

/** The `cr_alive` frame. */
export const PAIRING_ALIVE_FRAME = '{"type":"cr_alive"}';

const isString = (v: unknown): v is string => typeof v === "string";

/** Reads one text frame of the server; `null` if it is not a readable pairing frame. */
export function decodePairingServerFrame(text: string): PairingServerFrame | null {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return null;
  const o = value as Record<string, unknown>;
  switch (o["type"]) {
    case "cr_welcome": {
      const { appId, clientId, clientRole } = o;
      if (!isString(appId) || !isString(clientId) || !isString(clientRole)) return null;
      return { type: "cr_welcome", appId, clientId, clientRole };
    }
    case "cr_event": {
      const sender = o["senderClientId"];
      const eventType = o["eventType"];
      if (!isString(sender) || !isString(eventType)) return null;
      const subType = o["eventSubType"] ?? "";
      const params = o["eventParams"] ?? [];
      if (!isString(subType) || !Array.isArray(params) || !params.every(isString)) return null;
      const flag = (name: string, fallback: boolean): boolean | null => {
        const v = o[name] ?? fallback;
        return typeof v === "boolean" ? v : null;
      };
      const buffered = flag("buffered", false);
      const logged = flag("logged", false);
      const interceptable = flag("interceptable", true);
      if (buffered === null || logged === null || interceptable === null) return null;
      const sendCt = o["sendCt"] ?? null;
      if (sendCt !== null && (typeof sendCt !== "number" || !Number.isInteger(sendCt))) return null;
      return { type: "cr_event", sender, eventType, subType, params, buffered, logged, interceptable, sendCt };
    }
    case "cr_alive":
      return { type: "cr_alive" };
    case "cr_aborted": {
      const reason = o["reason"];
      if (!isString(reason) || reason === "") return null;
      return { type: "cr_aborted", reason };
    }
    case "error": {
      const { code, message, details } = o;
      if (!isString(code) || !isString(message)) return null;
      const error: ServerError = { code: code as ErrorCode, message };
      if (details !== undefined) error.details = details;
      return { type: "error", error };
    }
    default:
      return null;
  }
}
