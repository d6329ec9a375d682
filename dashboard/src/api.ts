// api.ts: typed fetch wrappers for the admin API the dashboard reads and acts through
// (docs/PROTOCOL.md §8): sessions, one session, kick, handoff, close, pairing, media, login and
// logout. Requests go same-origin with the admin cookie; failures become `ApiError`s carrying the
// API's JSON `{code, message}`, and a 401 also tells the app to show its login form.

/** Member info as `GET /v1/sessions/{id}` and the event stream give it (§3, §8, §17.2). */
export interface Member {
  id: string;
  name: string;
  isHost: boolean;
  connectionStatus: string;
  joinedAt: number;
  latency?: number | null;
  handoffReady: boolean;
  deviceId?: string;
  dialect?: string;
}

/** A session as `GET /v1/sessions` lists it. */
export interface Session {
  id: string;
  name: string;
  maxMembers: number;
  hostId: string | null;
  passwordProtected: boolean;
  members: Member[];
  hostName?: string | null;
}

/** The detailed `GET /v1/sessions/{id}`: members with device and dialect, the state document. */
export interface SessionDetail extends Session {
  state?: unknown;
  version?: number;
  term?: number;
}

/** One client the pairing hub knows (`GET /v1/pairing`). */
export interface PairingClient {
  clientId: string;
  role: string;
  transport: string;
  connected: boolean;
  partner: string | null;
  active: boolean;
}

/** `GET /v1/pairing`. */
export interface Pairing {
  apps: { app: string; clients: PairingClient[] }[];
}

/** A media peer: a member and its UDP address. */
export interface MediaPeer {
  memberId: string;
  address: string;
}

/** One relayed stream of `GET /v1/media`. */
export interface MediaStream {
  sessionId: string;
  publisher: MediaPeer | null;
  subscribers: MediaPeer[];
  datagramsRelayed: number;
  framesLost: number;
  jitterMs: number | null;
}

/** `GET /v1/media`. */
export type Media = { enabled: false } | { enabled: true; port: number; streams: MediaStream[] };

/** A failed request: the HTTP status and the API's `{code, message}` (or a stand-in). */
export class ApiError extends Error {
  /** The HTTP status, 0 when the request never got an answer. */
  readonly status: number;
  /** The API's error code, e.g. `member_not_found`, or `network` / `http_<status>`. */
  readonly code: string;

  constructor(status: number, code: string, message: string) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let unauthorizedHandler: () => void = () => {};

/** Sets what happens when any request answers 401 (the app shows its login form). */
export function onUnauthorized(handler: () => void): void {
  unauthorizedHandler = handler;
}

async function request(method: string, path: string, body?: unknown): Promise<Response> {
  const init: RequestInit = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers = { "Content-Type": "application/json" };
  }
  let res: Response;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, "network", `the server did not answer (${String(e)})`);
  }
  if (res.ok) return res;
  let code = `http_${res.status}`;
  let message = `${method} ${path} answered ${res.status} ${res.statusText}`.trim();
  try {
    const json: unknown = await res.json();
    if (json && typeof json === "object") {
      const j = json as { code?: unknown; message?: unknown };
      if (typeof j.code === "string") code = j.code;
      if (typeof j.message === "string") message = j.message;
    }
  } catch {
    // Not JSON: keep the status line.
  }
  if (res.status === 401 && !path.startsWith("/dashboard/")) unauthorizedHandler();
  throw new ApiError(res.status, code, message);
}

async function json<T>(method: string, path: string, body?: unknown): Promise<T> {
  const res = await request(method, path, body);
  return (await res.json()) as T;
}

const seg = encodeURIComponent;

/** `GET /v1/sessions`. */
export async function listSessions(): Promise<Session[]> {
  return (await json<{ sessions: Session[] }>("GET", "/v1/sessions")).sessions;
}

/** `GET /v1/sessions/{id}`: the detailed view. */
export function getSession(id: string): Promise<SessionDetail> {
  return json<SessionDetail>("GET", `/v1/sessions/${seg(id)}`);
}

/** `POST /v1/sessions/{id}/members/{member}/kick`. */
export async function kickMember(session: string, member: string): Promise<void> {
  await request("POST", `/v1/sessions/${seg(session)}/members/${seg(member)}/kick`);
}

/** `POST /v1/sessions/{id}/handoff`: asks the host to hand control to `targetId`. */
export function handoff(session: string, targetId: string): Promise<{ handoffId: string; targetId: string }> {
  return json("POST", `/v1/sessions/${seg(session)}/handoff`, { targetId });
}

/** `DELETE /v1/sessions/{id}`: closes the session for all its members. */
export async function closeSession(session: string): Promise<void> {
  await request("DELETE", `/v1/sessions/${seg(session)}`);
}

/** `GET /v1/pairing`. */
export function getPairing(): Promise<Pairing> {
  return json<Pairing>("GET", "/v1/pairing");
}

/** `GET /v1/media`. */
export function getMedia(): Promise<Media> {
  return json<Media>("GET", "/v1/media");
}

/** `POST /dashboard/login`: sets the admin cookie when the token is right. */
export async function login(token: string): Promise<void> {
  await request("POST", "/dashboard/login", { token });
}

/** `POST /dashboard/logout`: clears the admin cookie. */
export async function logout(): Promise<void> {
  await request("POST", "/dashboard/logout");
}

/** A readable message for any thrown value. */
export function errorText(e: unknown): string {
  if (e instanceof ApiError) return e.message;
  if (e instanceof Error) return e.message;
  return String(e);
}
