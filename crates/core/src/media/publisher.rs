//! The publisher of a relayed session stream (issue 13 §9, R7), sans-IO: an initiator's
//! handshake (START with a publish token, START_ACK, START_CONFIRM) followed by sending DATA.
//!
//! SKELETON: filled in by the relay work.
