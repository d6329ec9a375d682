//! Controller/responder pairing (issue 12, "CRSocket"): the server's transports around the
//! core's pairing relay.
//!
//! - [`hub`]: the relay under one lock, each connection's outbox, the relay's timer task.
//! - [`ws`]: the pairing WebSocket's driver (`/crsocket/{NAME}/ws`), run by the same socket
//!   task as a session member's ([`crate::ws_pump`]).
//! - [`sse`]: a stream of server-sent events (`eventsource/`) as a response body.
//! - [`routes`]: the HTTP surface under `/crsocket/`: the WebSocket upgrade, `clientid/`,
//!   `eventsource/`, `sendevent/`, static pages (`--pairing-pages`) and CORS
//!   (`--pairing-cors-origin`).
//!
//! Every rule (identity, one connection per id, routing, blocking, rejects, liveness) is the
//! core's ([`loudsync_core::pairing`]); the wire is the protocol crate's
//! ([`loudsync_protocol::pairing`]).
//!
//! In cluster mode (`--redis`) the hub of every node is a proxy to the cluster's one relay:
//! see [`crate::cluster::pairing`].

pub mod hub;
pub mod routes;
pub mod sse;
pub mod ws;

pub use hub::PairingHub;
