/**
 * loudsync-client: the TypeScript client SDK for LoudSync sessions (browsers, React Native,
 * Node 20+; zero runtime dependencies). One module per layer, as in the Rust SDK:
 * - `config`: settings and defaults; `types`: the wire's data types; `events`: every event;
 * - `protocol`: writes every client frame and reads every server frame;
 * - `resume`: the resume layer's bookkeeping (numbered frames, acks, pacing);
 * - `handoff`: the handoff layer's (roles, host and term, the session state);
 * - `machine`: every client rule as a sans-IO state machine on a caller-given clock;
 * - `client`: the driver that owns the WebSocket and the one timer;
 * - `pairing`: the crSocket pairing layer (seed 004): its machine and its driver.
 */
export * from "./types.js";
export * from "./events.js";
export * from "./errors.js";
export * from "./config.js";
export * from "./machine.js";
export * from "./client.js";
export * from "./pairing/index.js";
