//! The UDP media stream of seed 002 (issue 13), sans-IO: the roles of the 3-way handshake
//! and the paced stream, driven with the current time and drained of datagrams to send.
//!
//! - [`responder`]: the sender of the standalone stream (`loudsync media serve`): validates
//!   each datagram in the order of D12, keyed by the initiator's address, answers START with
//!   START_ACK, streams only after START_CONFIRM, paces DATA frames.
//! - [`initiator`]: the receiver (`loudsync media recv`, a relay subscriber): sends START with
//!   retries, checks START_ACK, confirms, and classifies the frames that arrive.
//! - [`relay`]: the session relay's responder (`loudsync serve --media-listen`): the same
//!   handshake with media tokens, and the fan-out of a publisher's DATA to its subscribers.
//! - [`publisher`]: a relay publisher (the session's host): the initiator's handshake, then
//!   paced synthetic or application frames.
//! - [`pacer`]: what the senders share (frame due times, counters, fragments, the retry
//!   schedule); `screen`: D12 steps 1-4, shared by the responder and the relay.
//!
//! The wire (frame layouts, TLVs, fragmentation) is [`loudsync_protocol::media`].

pub mod initiator;
pub mod pacer;
pub mod publisher;
pub mod relay;
pub mod responder;
mod screen;
