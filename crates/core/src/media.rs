//! The UDP media stream of seed 002 (issue 13), sans-IO: the two roles of the 3-way handshake
//! and the paced stream, driven with the current time and drained of datagrams to send.
//!
//! - [`responder`]: the sender (`loudsync media serve`, the session relay's publisher side):
//!   validates each datagram in the order of D12, keyed by the initiator's address, answers
//!   START with START_ACK, streams only after START_CONFIRM, paces DATA frames.
//! - [`initiator`]: the receiver (`loudsync media recv`, a subscriber): sends START with
//!   retries, checks START_ACK, confirms, and classifies the frames that arrive.
//!
//! The wire (frame layouts, TLVs, fragmentation) is [`loudsync_protocol::media`].

pub mod initiator;
pub mod pacer;
pub mod publisher;
pub mod relay;
pub mod responder;
mod screen;
