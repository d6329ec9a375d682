//! One pairing WebSocket's own rules (`GET /crsocket/{NAME}/ws`, issue 12 §3), sans-IO: what
//! each frame means before it reaches the relay, the landed per-socket limits, and the close.
//!
//! The [`PairingRelay`](super::PairingRelay) decides routing, identity and liveness for every
//! connection of every transport; this machine decides what only a WebSocket has:
//!
//! - **Every text and binary frame is rate limited** first, with the landed rule
//!   ([`RateLimiter`]): a dropped frame gets `error` `rate_limited` at most once a second, and
//!   more than `rate-burst` drops in a window close the socket 1008 `rate limit exceeded`.
//! - **Malformed frames never close the socket** (P13): invalid JSON, a binary frame, an
//!   unknown type, a bad field, an event or `cr_alive` before `cr_welcome`, a second
//!   `cr_identify` are each answered `error` `invalid_message` with the decoder's text; an
//!   event whose SSE data string would pass 8192 characters is `error` `too_large`.
//! - **Identify**: a valid-looking `cr_identify` is handed to the caller
//!   ([`SocketAction::Identify`]), who asks the relay and reports the answer with
//!   [`PairingSocket::handle_identified`] (the `cr_welcome` is the caller's, queued where
//!   the relay's deliveries are) or [`PairingSocket::handle_refused`]; a refusal sends
//!   `cr_aborted` and closes 1000 `identify rejected`. Nothing more is read between.
//! - **The close**: once a close is queued (by this machine or by the relay through the
//!   caller, [`PairingSocket::handle_close_queued`]) every further frame is ignored, and if
//!   the client has not completed the close within `close_timeout` the socket is dropped
//!   ([`SocketAction::Abort`], through [`PairingSocket::poll_timeout`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use loudsync_protocol::pairing::ws::{
    already_identified, decode, not_identified, IdentifyFrame, PairingClientFrame,
    PairingServerFrame,
};
use loudsync_protocol::pairing::{AbortReason, Event};
use loudsync_protocol::{close_code, ErrorCode};

use crate::limits::{RateLimiter, Verdict};
use crate::Now;

/// The close reason after a refused identify.
pub const IDENTIFY_REJECTED: &str = "identify rejected";

/// A pairing socket's settings (the landed ones: `--rate-limit`, `--rate-burst`,
/// `--close-timeout`).
#[derive(Debug, Clone, Copy)]
pub struct SocketConfig {
    /// Frames per second on average (0 = unlimited).
    pub rate_per_sec: u32,
    /// Frames in a burst.
    pub rate_burst: u32,
    /// How long a queued close may take before the socket is dropped.
    pub close_timeout: Duration,
}

impl Default for SocketConfig {
    fn default() -> Self {
        SocketConfig {
            rate_per_sec: 100,
            rate_burst: 200,
            close_timeout: Duration::from_secs(1),
        }
    }
}

/// What the caller must do for this socket, drained with [`PairingSocket::poll_action`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketAction {
    /// Send this pairing frame.
    Send(PairingServerFrame),
    /// Send the landed `error` message.
    Error {
        /// `invalid_message`, `too_large` or `rate_limited`.
        code: ErrorCode,
        /// Its text.
        message: String,
    },
    /// Ask the relay to identify the connection; answer with
    /// [`PairingSocket::handle_identified`] or [`PairingSocket::handle_refused`].
    Identify(IdentifyFrame),
    /// Hand this event to the relay, for `recipient`.
    Event {
        /// `recipientClientId`.
        recipient: String,
        /// The event.
        event: Event,
    },
    /// Hand a `cr_alive` to the relay (it answers and refreshes the connection).
    Alive,
    /// Queue a close frame with this code and reason; nothing after it is sent.
    Close {
        /// The close code.
        code: u16,
        /// The reason.
        reason: String,
    },
    /// Drop the socket now: its close did not complete in time.
    Abort,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Opened; the first valid `cr_identify` is awaited.
    Open,
    /// The relay is being asked (the caller answers before it reads the next frame).
    Identifying,
    /// Welcomed as `client_id`.
    Identified { client_id: String },
    /// A close is queued; frames are ignored.
    Closing,
}

/// One pairing WebSocket: see the module comment.
#[derive(Debug)]
pub struct PairingSocket {
    config: SocketConfig,
    phase: Phase,
    rate: RateLimiter,
    close_deadline: Option<Instant>,
    aborted: bool,
    actions: VecDeque<SocketAction>,
}

impl PairingSocket {
    /// A socket opened at `now`.
    pub fn new(config: SocketConfig, now: Now) -> Self {
        PairingSocket {
            config,
            phase: Phase::Open,
            rate: RateLimiter::new(config.rate_per_sec, config.rate_burst, now.instant),
            close_deadline: None,
            aborted: false,
            actions: VecDeque::new(),
        }
    }

    /// The client id once welcomed.
    pub fn client_id(&self) -> Option<&str> {
        match &self.phase {
            Phase::Identified { client_id } => Some(client_id),
            _ => None,
        }
    }

    /// A text frame arrived.
    pub fn handle_text(&mut self, now: Now, text: &str) {
        if !self.admit(now) {
            return;
        }
        let frame = match decode(text) {
            Ok(frame) => frame,
            Err(e) => return self.error(ErrorCode::InvalidMessage, e.message),
        };
        match (&self.phase, frame) {
            (Phase::Open, PairingClientFrame::Identify(identify)) => {
                self.phase = Phase::Identifying;
                self.actions.push_back(SocketAction::Identify(identify));
            }
            (Phase::Identified { .. }, PairingClientFrame::Identify(_)) => {
                self.error(ErrorCode::InvalidMessage, already_identified().message)
            }
            (Phase::Identified { client_id }, PairingClientFrame::Event { recipient, event }) => {
                if event.too_large(client_id) {
                    return self.error(
                        ErrorCode::TooLarge,
                        format!(
                            "cr_event: the event's data string would be longer than {} characters",
                            loudsync_protocol::pairing::event::MAX_EVENT_DATA_CHARS
                        ),
                    );
                }
                self.actions
                    .push_back(SocketAction::Event { recipient, event });
            }
            (Phase::Identified { .. }, PairingClientFrame::Alive) => {
                self.actions.push_back(SocketAction::Alive)
            }
            (_, PairingClientFrame::Event { .. }) => self.error(
                ErrorCode::InvalidMessage,
                not_identified("cr_event").message,
            ),
            (_, PairingClientFrame::Alive) => self.error(
                ErrorCode::InvalidMessage,
                not_identified("cr_alive").message,
            ),
            // Identifying (the caller answers first) or closing: nothing to do.
            (_, PairingClientFrame::Identify(_)) => {}
        }
    }

    /// A binary frame arrived: the protocol is JSON text only.
    pub fn handle_binary(&mut self, now: Now) {
        if !self.admit(now) {
            return;
        }
        self.error(
            ErrorCode::InvalidMessage,
            "binary frames are not part of the protocol; send JSON as a text frame",
        );
    }

    /// The relay welcomed the connection as `client_id` (the hub queues the `cr_welcome`
    /// itself, under its lock, so no event delivered to the new connection can go before it).
    pub fn handle_identified(&mut self, client_id: &str) {
        if self.phase != Phase::Identifying {
            return;
        }
        self.phase = Phase::Identified {
            client_id: client_id.to_string(),
        };
    }

    /// The relay refused the identify: `cr_aborted`, then close 1000.
    pub fn handle_refused(&mut self, now: Now, reason: AbortReason) {
        if self.phase != Phase::Identifying {
            return;
        }
        self.actions
            .push_back(SocketAction::Send(PairingServerFrame::Aborted { reason }));
        self.close(now, close_code::NORMAL, IDENTIFY_REJECTED);
    }

    /// A close was queued on the socket by someone else (the relay's abort, shutdown): the
    /// close deadline starts and frames are ignored from now on.
    pub fn handle_close_queued(&mut self, now: Now) {
        self.phase = Phase::Closing;
        self.start_close_deadline(now);
    }

    /// Runs the close deadline.
    pub fn handle_timeout(&mut self, now: Now) {
        if self.close_deadline.is_some_and(|d| now.instant >= d) && !self.aborted {
            self.aborted = true;
            self.close_deadline = None;
            self.actions.push_back(SocketAction::Abort);
        }
    }

    /// When [`PairingSocket::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.close_deadline
    }

    /// Whether the caller must hold off reading (an identify is being answered).
    pub fn reading_paused(&self) -> bool {
        self.phase == Phase::Identifying
    }

    /// The next action, in the order the inputs caused them.
    pub fn poll_action(&mut self) -> Option<SocketAction> {
        self.actions.pop_front()
    }

    fn error(&mut self, code: ErrorCode, message: impl Into<String>) {
        self.actions.push_back(SocketAction::Error {
            code,
            message: message.into(),
        });
    }

    fn close(&mut self, now: Now, code: u16, reason: &str) {
        self.phase = Phase::Closing;
        self.actions.push_back(SocketAction::Close {
            code,
            reason: reason.to_string(),
        });
        self.start_close_deadline(now);
    }

    fn start_close_deadline(&mut self, now: Now) {
        if self.close_deadline.is_none() && !self.aborted {
            self.close_deadline = Some(now.instant + self.config.close_timeout);
        }
    }

    /// The landed rate limit over every text and binary frame; `false` drops the frame.
    fn admit(&mut self, now: Now) -> bool {
        if self.phase == Phase::Closing {
            return false;
        }
        match self.rate.check(now.instant) {
            Verdict::Admit => true,
            Verdict::Drop { notify } => {
                if notify {
                    self.error(
                        ErrorCode::RateLimited,
                        format!(
                            "over the rate limit of {} messages/s (burst {}); messages are dropped until the rate falls",
                            self.config.rate_per_sec, self.config.rate_burst
                        ),
                    );
                }
                false
            }
            Verdict::Close => {
                self.close(now, close_code::POLICY_VIOLATION, "rate limit exceeded");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Now {
        Now {
            instant: Instant::now(),
            unix_ms: 1_700_000_000_000,
        }
    }

    fn drain(s: &mut PairingSocket) -> Vec<SocketAction> {
        std::iter::from_fn(|| s.poll_action()).collect()
    }

    const IDENTIFY: &str = r#"{"type":"cr_identify","clientRole":"controller","accessToken":"tok","clientId":"123456"}"#;
    const EVENT: &str = r#"{"type":"cr_event","recipientClientId":"654321","eventType":"ping"}"#;

    fn identified(now: Now) -> PairingSocket {
        let mut s = PairingSocket::new(SocketConfig::default(), now);
        s.handle_text(now, IDENTIFY);
        assert!(matches!(drain(&mut s)[..], [SocketAction::Identify(_)]));
        assert!(
            s.reading_paused(),
            "nothing is read while the relay answers"
        );
        s.handle_identified("123456");
        assert!(!s.reading_paused());
        assert!(drain(&mut s).is_empty(), "the hub sends the welcome");
        s
    }

    fn error_code(actions: &[SocketAction]) -> Vec<(ErrorCode, String)> {
        actions
            .iter()
            .filter_map(|a| match a {
                SocketAction::Error { code, message } => Some((*code, message.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_identified_socket_hands_events_and_alives_to_the_relay() {
        let now = t0();
        let mut s = identified(now);
        assert_eq!(s.client_id(), Some("123456"));
        s.handle_text(now, EVENT);
        s.handle_text(now, r#"{"type":"cr_alive"}"#);
        let actions = drain(&mut s);
        assert!(
            matches!(&actions[..], [SocketAction::Event { recipient, event }, SocketAction::Alive]
                if recipient == "654321" && event.event_type == "ping"),
            "{actions:?}"
        );
    }

    #[test]
    fn frames_before_the_welcome_and_a_second_identify_are_errors_that_keep_the_socket() {
        let now = t0();
        let mut s = PairingSocket::new(SocketConfig::default(), now);
        s.handle_text(now, EVENT);
        s.handle_text(now, r#"{"type":"cr_alive"}"#);
        s.handle_binary(now);
        s.handle_text(now, r#"{"type":"join","sessionId":"x"}"#);
        s.handle_text(now, "not json");
        let errors = error_code(&drain(&mut s));
        assert_eq!(errors.len(), 5, "{errors:?}");
        assert!(errors.iter().all(|(c, _)| *c == ErrorCode::InvalidMessage));
        assert_eq!(
            errors[0].1,
            "cr_event: send `cr_identify` first; this connection has not identified"
        );
        assert!(errors[1]
            .1
            .starts_with("cr_alive: send `cr_identify` first"));
        assert!(errors[2].1.starts_with("binary frames are not part"));
        assert_eq!(
            errors[3].1,
            "unknown message type `join`; expected one of: cr_identify, cr_event, cr_alive"
        );
        // Still open: an identify now works.
        s.handle_text(now, IDENTIFY);
        assert!(matches!(drain(&mut s)[..], [SocketAction::Identify(_)]));
        s.handle_identified("123456");
        drain(&mut s);
        s.handle_text(now, IDENTIFY);
        assert_eq!(
            error_code(&drain(&mut s)),
            vec![(
                ErrorCode::InvalidMessage,
                "cr_identify: this connection has already identified".to_string()
            )]
        );
    }

    #[test]
    fn an_event_too_large_for_the_sse_data_string_is_too_large() {
        let now = t0();
        let mut s = identified(now);
        let params: Vec<String> = (0..10).map(|_| "x".repeat(900)).collect();
        let frame = serde_json::json!({
            "type": "cr_event", "recipientClientId": "654321", "eventType": "app",
            "eventParams": params,
        });
        s.handle_text(now, &frame.to_string());
        let errors = error_code(&drain(&mut s));
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0, ErrorCode::TooLarge);
        // Just under the limit passes.
        let ok = serde_json::json!({
            "type": "cr_event", "recipientClientId": "654321", "eventType": "app",
            "eventParams": ["x".repeat(8000)],
        });
        s.handle_text(now, &ok.to_string());
        assert!(matches!(drain(&mut s)[..], [SocketAction::Event { .. }]));
    }

    #[test]
    fn a_refused_identify_sends_cr_aborted_then_closes_1000_and_ignores_the_rest() {
        let now = t0();
        let mut s = PairingSocket::new(SocketConfig::default(), now);
        s.handle_text(now, IDENTIFY);
        drain(&mut s);
        s.handle_refused(now, AbortReason::NotAuthorized);
        assert_eq!(
            drain(&mut s),
            vec![
                SocketAction::Send(PairingServerFrame::Aborted {
                    reason: AbortReason::NotAuthorized
                }),
                SocketAction::Close {
                    code: 1000,
                    reason: "identify rejected".into()
                }
            ]
        );
        s.handle_text(now, EVENT);
        assert!(drain(&mut s).is_empty(), "ignored once closing");
        // The client never completes the close: dropped at the close timeout exactly.
        let deadline = s.poll_timeout().expect("a close deadline");
        assert_eq!(deadline, now.instant + Duration::from_secs(1));
        s.handle_timeout(now.plus(Duration::from_millis(999)));
        assert!(drain(&mut s).is_empty());
        s.handle_timeout(now.plus(Duration::from_secs(1)));
        assert_eq!(drain(&mut s), vec![SocketAction::Abort]);
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn a_close_queued_by_the_relay_starts_the_deadline() {
        let now = t0();
        let mut s = identified(now);
        s.handle_close_queued(now);
        s.handle_text(now, EVENT);
        assert!(drain(&mut s).is_empty());
        assert_eq!(s.poll_timeout(), Some(now.instant + Duration::from_secs(1)));
    }

    #[test]
    fn the_landed_rate_limit_errors_once_then_closes_1008_after_burst_plus_one_drops() {
        let config = SocketConfig {
            rate_per_sec: 10,
            rate_burst: 5,
            close_timeout: Duration::from_secs(1),
        };
        let now = t0();
        let mut s = PairingSocket::new(config, now);
        s.handle_text(now, IDENTIFY);
        drain(&mut s);
        s.handle_identified("123456");
        drain(&mut s);
        // The identify took one token: 4 more events pass.
        for _ in 0..4 {
            s.handle_text(now, EVENT);
        }
        assert_eq!(drain(&mut s).len(), 4);
        // The next is dropped with one rate_limited error; the following drops are silent.
        s.handle_text(now, EVENT);
        let errors = error_code(&drain(&mut s));
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0, ErrorCode::RateLimited);
        for _ in 0..4 {
            s.handle_binary(now);
        }
        assert!(drain(&mut s).is_empty(), "binary frames count, silently");
        // The sixth drop in a row (burst + 1) closes 1008.
        s.handle_text(now, EVENT);
        assert_eq!(
            drain(&mut s),
            vec![SocketAction::Close {
                code: 1008,
                reason: "rate limit exceeded".into()
            }]
        );
    }
}
