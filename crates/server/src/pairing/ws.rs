//! The pairing WebSocket's driver (`GET /crsocket/{NAME}/ws`): the glue between the socket's
//! task ([`crate::ws_pump`], the same task as a session member's) and the pairing hub.
//!
//! The core's [`PairingSocket`] decides what each frame means and applies the landed
//! limits; this driver carries out what it decides at once: replies and errors go on the
//! socket's one outbox (so they leave in the order of the frames that caused them, with the
//! events the hub queues on it), an identify, an event or a `cr_alive` is handed to the hub
//! under its lock, and a close is queued on the outbox. When the socket ends the hub forgets
//! the connection.
//!
//! In cluster mode the identify is answered later (through Redis): the driver keeps the
//! answer's future and the socket's task polls it ([`Driver::poll_answer`]); the socket reads
//! nothing meanwhile, as while any identify is pending. No answer in time (the cluster's relay
//! is gone or moved) closes the socket 1012 so the client reconnects.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use loudsync_core::pairing::socket::{PairingSocket, SocketAction, SocketConfig};
use loudsync_core::pairing::{ConnId, IdentifyError, Sender, Transport};
use loudsync_core::Now;
use loudsync_protocol::close_code;
use loudsync_protocol::pairing::ws::{self, IdentifyId};
use loudsync_protocol::pairing::ClaimedId;
use loudsync_protocol::ErrorCode;

use super::hub::{Answer, IdentifyAnswer, PairingHub};
use crate::admission::Permit;
use crate::clock::now;
use crate::outbox::{OutFrame, Outbox};
use crate::state::ServerState;
use crate::ws_pump::Driver;

/// Drives one pairing WebSocket of app `app`.
pub struct PairingDriver {
    state: Arc<ServerState>,
    hub: Arc<PairingHub>,
    app: String,
    socket: PairingSocket,
    conn: ConnId,
    outbox: Arc<Outbox>,
    /// The socket's place among its address's unidentified WebSockets, given back at the
    /// welcome.
    unjoined: Option<Permit>,
    aborted: bool,
    /// Cluster mode: the identify answer being awaited.
    pending: Option<Pin<Box<dyn Future<Output = Option<IdentifyAnswer>> + Send>>>,
}

/// The close reason of a pairing WebSocket whose relay did not answer or moved (1012).
pub const RELAY_MOVED: &str = "pairing relay moved: reconnect";

impl PairingDriver {
    /// A driver for a socket just opened for `app`, writing into `outbox`.
    pub fn new(
        state: Arc<ServerState>,
        hub: Arc<PairingHub>,
        app: String,
        outbox: Arc<Outbox>,
        unjoined: Option<Permit>,
    ) -> Self {
        let config = SocketConfig {
            rate_per_sec: state.config.rate_limit,
            rate_burst: state.config.rate_burst,
            close_timeout: state.config.close_timeout,
        };
        let (conn, _stream) = hub.open(Transport::WebSocket, outbox.clone());
        PairingDriver {
            socket: PairingSocket::new(config, now()),
            state,
            hub,
            app,
            conn,
            outbox,
            unjoined,
            aborted: false,
            pending: None,
        }
    }

    /// What the relay answered an identify (`None`: no answer, the relay is gone).
    fn identified(&mut self, now: Now, answer: Option<Result<String, IdentifyError>>) {
        match answer {
            Some(Ok(client_id)) => {
                self.unjoined = None;
                self.socket.handle_identified(&client_id);
            }
            Some(Err(IdentifyError::Aborted(reason))) => self.socket.handle_refused(now, reason),
            // The relay already ended the connection (its identify deadline passed): its
            // close is on the outbox, and this one is ignored. In cluster mode the relay may
            // also never have seen the connection open (it moved meanwhile): then this
            // close is the one.
            Some(Err(IdentifyError::NotAwaitingIdentify)) | None => {
                self.outbox
                    .force_close(close_code::SERVICE_RESTART, RELAY_MOVED.to_string());
                self.socket.handle_close_queued(now);
            }
        }
    }

    fn drive(&mut self, input: impl FnOnce(&mut PairingSocket, Now)) {
        let now = now();
        input(&mut self.socket, now);
        self.carry_out(now);
    }

    fn carry_out(&mut self, now: Now) {
        while let Some(action) = self.socket.poll_action() {
            match action {
                SocketAction::Send(frame) => self.reply(now, ws::encode(&frame, now.unix_ms)),
                SocketAction::Error { code, message } => {
                    crate::metrics::Metrics::error_sent(code.as_str());
                    self.reply(now, error_frame(code, &message, now.unix_ms));
                }
                SocketAction::Identify(frame) => {
                    let claimed = match &frame.client_id {
                        IdentifyId::Assign => ClaimedId::Assign,
                        IdentifyId::Given(id) => ClaimedId::Given(id),
                        IdentifyId::Invalid => ClaimedId::Invalid,
                    };
                    let answer = self.hub.identify_answer(
                        self.conn,
                        &self.app,
                        frame.client_role.as_deref(),
                        claimed,
                        frame.access_token.as_deref(),
                    );
                    match answer {
                        Answer::Now(answer) => self.identified(now, Some(answer.result)),
                        Answer::Later(future) => self.pending = Some(future),
                    }
                }
                SocketAction::Event { recipient, event } => {
                    self.hub.event(&Sender::Conn(self.conn), &recipient, event);
                }
                SocketAction::Alive => {
                    self.hub.alive(self.conn);
                }
                SocketAction::Close { code, reason } => self.outbox.force_close(code, reason),
                SocketAction::Abort => self.aborted = true,
            }
        }
    }

    fn reply(&self, now: Now, text: String) {
        self.state.metrics.frames_sent.increment(1);
        // Our own frame: the socket's task drains the outbox before it waits again.
        self.outbox
            .push_own(OutFrame::Text(Bytes::from(text)), now.instant);
    }
}

/// The landed `error` message, its fields in the landed order:
/// `{"type":"error","code":...,"message":...,"timestamp":T}`.
fn error_frame(code: ErrorCode, message: &str, unix_ms: u64) -> String {
    #[derive(serde::Serialize)]
    struct ErrorFrame<'a> {
        r#type: &'static str,
        code: &'static str,
        message: &'a str,
        timestamp: u64,
    }
    serde_json::to_string(&ErrorFrame {
        r#type: "error",
        code: code.as_str(),
        message,
        timestamp: unix_ms,
    })
    .expect("an error frame serializes")
}

impl Driver for PairingDriver {
    fn handle_text(&mut self, text: &str) {
        self.state.metrics.frames_received.increment(1);
        self.drive(|s, now| s.handle_text(now, text));
    }

    fn handle_binary(&mut self) {
        self.state.metrics.frames_received.increment(1);
        self.drive(|s, now| s.handle_binary(now));
    }

    /// The server sends no pings on a pairing socket; a pong is ignored.
    fn handle_pong(&mut self, _payload: &[u8]) {}

    fn handle_transport_closed(&mut self) {
        self.hub.gone(self.conn);
        self.drive(|s, now| s.handle_close_queued(now));
    }

    fn handle_transport_failed(&mut self) {
        self.hub.gone(self.conn);
        self.drive(|s, now| s.handle_close_queued(now));
    }

    fn handle_closed_by_server(&mut self) {
        self.drive(|s, now| s.handle_close_queued(now));
    }

    fn handle_overflow(&mut self) {
        self.state.metrics.slow_consumer_disconnects.increment(1);
        self.hub.gone(self.conn);
        self.outbox.force_close(
            close_code::POLICY_VIOLATION,
            "outbound queue overflow: client too slow".to_string(),
        );
        self.drive(|s, now| s.handle_close_queued(now));
    }

    fn handle_timeout(&mut self) {
        self.drive(|s, now| s.handle_timeout(now));
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.socket.poll_timeout()
    }

    fn reading_paused(&self) -> bool {
        self.socket.reading_paused()
    }

    fn is_aborted(&self) -> bool {
        self.aborted
    }

    /// On one node identifies are answered under the hub's lock at once: nothing is
    /// awaited. In cluster mode the identify's answer is.
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(pending) = self.pending.as_mut() else {
            return Poll::Pending;
        };
        let Poll::Ready(answer) = pending.as_mut().poll(cx) else {
            return Poll::Pending;
        };
        self.pending = None;
        let now = now();
        self.identified(now, answer.map(|a| a.result));
        self.carry_out(now);
        Poll::Ready(())
    }
}

impl Drop for PairingDriver {
    /// The socket ended: the hub forgets the connection (a no-op if it already did).
    fn drop(&mut self) {
        self.hub.gone(self.conn);
    }
}
