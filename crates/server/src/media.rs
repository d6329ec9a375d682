//! The UDP media stream's I/O (issue 13): the sockets and clocks around the sans-IO roles of
//! [`loudsync_core::media`].
//!
//! - [`udp`]: batched datagram I/O shared by both loops.
//! - [`standalone`]: `loudsync media serve`, the responder streaming a synthetic pattern.
//! - [`relay`]: the session relay inside `loudsync serve --media-listen`.

pub mod relay;
pub mod standalone;
pub mod udp;
