//! The UDP media stream on the client side (issue 13): tokio drivers around the sans-IO
//! roles of `loudsync_core::media`.
//!
//! - [`receiver`]: an initiator (`loudsync media recv`, a relay subscriber).
//! - [`publisher`]: a relay publisher (the session's host).

pub mod publisher;
pub mod receiver;
mod socket;

pub use socket::host_monotonic_origin;
