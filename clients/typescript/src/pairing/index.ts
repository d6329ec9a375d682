/**
 * pairing/index.ts: the crSocket pairing layer (seed 004, PROTOCOL §16): the sans-IO
 * state machine (`CrSocket`, its states, metastates and events), the pairing WebSocket's
 * frames, the client's settings and updates, and the driver (`PairingClient`). Every
 * exported name is prefixed (`Pairing...`, `CrSocket`, `CR_...`) so it cannot clash with
 * the session layer's.
 */
export * from "./machine.js";
export * from "./frames.js";
export * from "./options.js";
export * from "./updates.js";
export * from "./client.js";
