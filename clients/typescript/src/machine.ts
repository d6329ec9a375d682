/**
 * machine.ts: the client's rules as a sans-IO state machine (a port of the Rust SDK's
 * crates/client/src/machine.rs). Skeleton: the signatures of the contract; the port follows.
 */
import type { ClientConfig } from "./config.js";
import type { ClientEvent, ConnectionState, LinkState, PendingHandoff, Role } from "./events.js";
import type { MemberInfo, SessionInfo } from "./types.js";

/** What the machine asks its driver to do. */
export type Action =
  | { type: "connect" }
  | { type: "send"; text: string }
  | { type: "closeSocket" }
  | { type: "emit"; event: ClientEvent };

const todo = (): never => {
  throw new Error("not implemented");
};

/** The client state machine (skeleton). */
export class Machine {
  constructor(config: ClientConfig, now: number, unixMs: number) {
    void config;
    void now;
    void unixMs;
  }
  isEnded(): boolean { return todo(); }
  state(): ConnectionState { return todo(); }
  linkState(): LinkState { return todo(); }
  isResumable(): boolean { return todo(); }
  acceptsCommands(): boolean { return todo(); }
  queueFull(): boolean { return todo(); }
  clientId(): string | null { return todo(); }
  session(): SessionInfo | null { return todo(); }
  members(): readonly MemberInfo[] { return todo(); }
  latency(): number | null { return todo(); }
  generation(): number { return todo(); }
  role(): Role { return todo(); }
  isHost(): boolean { return todo(); }
  hostId(): string | null { return todo(); }
  term(): number { return todo(); }
  sessionState(): { state: Record<string, unknown>; version: number } { return todo(); }
  pendingHandoff(): PendingHandoff | null { return todo(); }
  isReady(): boolean { return todo(); }
  sessionId(): string | null { return todo(); }
  pollAction(): Action | undefined { return todo(); }
  pollTimeout(): number | undefined { return todo(); }
  start(_now: number): void { todo(); }
  handleConnected(_now: number): void { todo(); }
  handleConnectFailed(_now: number, _reason: string): void { todo(); }
  handleActivity(_now: number): void { todo(); }
  handleText(_now: number, _text: string): void { todo(); }
  handleClosed(_now: number, _close: { code: number; reason: string } | null): void { todo(); }
  handleTimeout(_now: number): void { todo(); }
  leave(_now: number): void { todo(); }
  disconnect(_now: number): void { todo(); }
  leaveQueued(): boolean { return todo(); }
  handleLeaveTimeout(): void { todo(); }
  ping(_now: number): void { todo(); }
  kick(_now: number, _memberId: string, _reason?: string): void { todo(); }
  requestMemberList(_now: number): void { todo(); }
  requestMediaToken(_now: number): void { todo(); }
  sendMessage(_now: number, _data: unknown, _to?: string): void { todo(); }
  setState(_now: number, _state: Record<string, unknown>, _baseVersion?: number): void { todo(); }
  patchState(_now: number, _patch: Record<string, unknown>, _baseVersion?: number): void { todo(); }
  requestHandoff(_now: number, _targetId?: string): void { todo(); }
  acceptHandoff(_now: number, _handoffId: string): void { todo(); }
  declineHandoff(_now: number, _handoffId: string, _reason?: string): void { todo(); }
  setReady(_now: number, _ready: boolean): void { todo(); }
}
