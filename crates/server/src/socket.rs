//! One WebSocket's task: reads frames into the connection state machine, carries out its
//! actions, and writes the member's outbox to the socket, all in one task and one poll loop
//! (reading, writing and timers progress together; nothing blocks another).

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::ws::{Violation, WsError, WsMessage, WsStream};
use loudsync_core::connection::{ConnAction, Connection, MemberCommand};
use loudsync_protocol::{LeaveReason, ServerMessage};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{sleep_until, Instant as TokioInstant, Sleep};

/// Bytes queued on the socket beyond which the task writes before taking more from the outbox.
const FLUSH_THRESHOLD: usize = 16 * 1024;
/// Bytes owed to the client beyond which the task stops reading from it.
const READ_PAUSE_BYTES: usize = 64 * 1024;

use crate::outbox::{OutFrame, Outbox};
use crate::sessions::{Joiner, SessionHandle, SessionInput};
use crate::{encoding, now, App};

/// What woke the socket task.
enum Event {
    /// A message (text, binary, ping, pong, close) from the client.
    Frame(WsMessage),
    /// The stream ended or failed.
    Gone,
    /// A timer of the state machine (or the close deadline) is due.
    Timer,
    /// The outbox overflowed.
    Overflow,
    /// The server closed the socket (a close frame was written from the outbox).
    ServerClosed,
    /// A close was queued on the outbox: start the close deadline.
    Closing,
    /// The client broke the WebSocket protocol or a limit (the close is queued).
    Failed(Violation),
}

/// The member this socket carries, once joined.
struct Membership {
    member_id: String,
    session: SessionHandle,
}

/// Runs one upgraded WebSocket to its end.
pub async fn run<S>(app: Arc<App>, ws: WsStream<S>, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let conn_id = app.connections.open();
    let outbox = app.connections.outbox(conn_id);
    app.metrics.connections.increment(1.0);
    tracing::debug!(%peer, conn_id, "websocket open");
    let mut task = SocketTask {
        conn: Connection::new(app.config.connection(), now()),
        app: app.clone(),
        ws,
        outbox,
        membership: None,
        peer,
        pending: VecDeque::new(),
        close_deadline: None,
        overflow_reported: false,
    };
    task.run().await;
    app.connections.close(conn_id);
    app.metrics.connections.decrement(1.0);
    tracing::debug!(%peer, conn_id, "websocket closed");
}

struct SocketTask<S> {
    app: Arc<App>,
    conn: Connection,
    ws: WsStream<S>,
    outbox: Arc<Outbox>,
    membership: Option<Membership>,
    peer: SocketAddr,
    /// Frames taken from the outbox and not yet handed to the WebSocket.
    pending: VecDeque<OutFrame>,
    /// Set once a close frame is written: the socket is dropped at this time at the latest.
    close_deadline: Option<TokioInstant>,
    overflow_reported: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> SocketTask<S> {
    async fn run(&mut self) {
        let sleep = sleep_until(TokioInstant::now() + Duration::from_secs(3600));
        tokio::pin!(sleep);
        loop {
            self.carry_out_actions().await;
            let deadline = match (self.conn.poll_timeout(), self.close_deadline) {
                (_, Some(close)) => close,
                (Some(t), None) => TokioInstant::from_std(t),
                (None, None) => TokioInstant::now() + Duration::from_secs(3600),
            };
            if sleep.deadline() != deadline {
                sleep.as_mut().reset(deadline);
            }
            let event = poll_fn(|cx| self.poll_event(cx, sleep.as_mut())).await;
            match event {
                Event::Frame(message) => self.handle_frame(message),
                Event::Gone => {
                    self.conn.handle_socket_closed();
                    self.carry_out_actions().await;
                    return;
                }
                Event::Timer => {
                    if self
                        .close_deadline
                        .is_some_and(|d| d <= TokioInstant::now())
                    {
                        self.conn.handle_socket_closed();
                        self.carry_out_actions().await;
                        return;
                    }
                    self.conn.handle_timeout(now());
                }
                Event::Overflow => {
                    self.overflow_reported = true;
                    self.pending.clear();
                    self.app.metrics.slow_consumer_disconnects.increment(1);
                    self.conn.handle_outbound_overflow();
                }
                Event::Failed(violation) => {
                    tracing::debug!(
                        code = violation.code,
                        reason = violation.reason,
                        "websocket protocol violation"
                    );
                    self.conn.handle_socket_closed();
                    self.start_close_deadline();
                }
                Event::ServerClosed => {
                    self.conn.handle_closed_by_server();
                    self.start_close_deadline();
                }
                Event::Closing => self.start_close_deadline(),
            }
        }
    }

    /// The socket is dropped at the close timeout from now, unless that was already set.
    fn start_close_deadline(&mut self) {
        let at = TokioInstant::now() + self.app.config.close_timeout;
        self.close_deadline.get_or_insert(at);
    }

    fn handle_frame(&mut self, message: WsMessage) {
        match message {
            WsMessage::Text(text) => {
                self.app.metrics.frames_received.increment(1);
                self.conn.handle_text(now(), &text);
            }
            WsMessage::Binary(_) => {
                self.app.metrics.frames_received.increment(1);
                self.conn.handle_binary(now());
            }
            WsMessage::Pong(payload) => self.conn.handle_pong(now(), &payload),
            WsMessage::Close(_) => {
                // The stream echoes the close; then it ends.
                self.conn.handle_socket_closed();
                self.start_close_deadline();
            }
            // Answered by the stream; control frames never count as liveness.
            WsMessage::Ping(_) => {}
        }
    }

    async fn carry_out_actions(&mut self) {
        while let Some(action) = self.conn.poll_action() {
            match action {
                ConnAction::Reply(message, stamp) => {
                    if let ServerMessage::Error { code, .. } = &message {
                        crate::metrics::Metrics::error_sent(code.as_str());
                    }
                    self.app.metrics.frames_sent.increment(1);
                    let bytes = encoding::encode(
                        self.conn.dialect(),
                        &message,
                        &stamp,
                        now().unix_ms,
                        &encoding::no_addresses,
                    );
                    self.outbox.push(OutFrame::Text(bytes));
                }
                ConnAction::Ping(payload) => {
                    self.outbox.push(OutFrame::Ping(payload));
                }
                ConnAction::Join(join) => {
                    let member_id = new_client_id();
                    let session_id = join.session_id.clone();
                    let joiner = Joiner {
                        member_id: member_id.clone(),
                        outbox: self.outbox.clone(),
                        dialect: self.conn.dialect(),
                        address: self.peer.ip().to_string(),
                    };
                    let (session, reply) = self.app.registry.join(&self.app, joiner, join);
                    let result = reply.await.unwrap_or_else(|_| {
                        Err(ServerMessage::error(
                            loudsync_protocol::ErrorCode::SessionNotFound,
                            format!("session `{session_id}` has ended"),
                        ))
                    });
                    if let (Ok(()), Some(session)) = (&result, session) {
                        self.membership = Some(Membership { member_id, session });
                    }
                    self.conn.handle_join_result(now(), result);
                }
                ConnAction::Session(command) => {
                    if matches!(command, MemberCommand::Disconnected(LeaveReason::Timeout)) {
                        self.app.metrics.heartbeat_timeouts.increment(1);
                    }
                    if let Some(m) = &self.membership {
                        m.session.send(SessionInput::Command {
                            member_id: m.member_id.clone(),
                            command,
                        });
                    }
                }
                ConnAction::Close { code, reason } => {
                    self.outbox.force_close(code, reason);
                }
            }
        }
    }

    /// One poll of everything the task waits on: write what the outbox holds, flush, read,
    /// and check the timer.
    fn poll_event(&mut self, cx: &mut Context<'_>, mut sleep: Pin<&mut Sleep>) -> Poll<Event> {
        self.outbox.register(cx.waker());
        if !self.overflow_reported && self.outbox.overflowed() {
            return Poll::Ready(Event::Overflow);
        }
        if self.close_deadline.is_none() && self.outbox.is_closed() {
            // The close is decided: the socket goes at the deadline even if the client never
            // reads what is still queued before the close frame.
            return Poll::Ready(Event::Closing);
        }
        while !self.ws.close_sent() {
            if self.ws.pending_bytes() >= FLUSH_THRESHOLD {
                match self.ws.poll_flush(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(_)) => return Poll::Ready(Event::Gone),
                    Poll::Pending => break,
                }
            }
            if self.pending.is_empty() {
                // Take everything queued in one lock; the next batch only once this one is
                // handed to the socket, so the outbox's byte limit still bounds the backlog.
                self.outbox.drain_into(&mut self.pending);
            }
            let Some(frame) = self.pending.pop_front() else {
                break;
            };
            match frame {
                OutFrame::Text(bytes) => self.ws.queue_text(&bytes),
                OutFrame::Ping(payload) => self.ws.queue_ping(&payload),
                OutFrame::Close(code, reason) => {
                    self.ws.queue_close(code, &reason);
                    let _ = self.ws.poll_flush(cx);
                    return Poll::Ready(Event::ServerClosed);
                }
            }
        }
        if let Poll::Ready(Err(_)) = self.ws.poll_flush(cx) {
            return Poll::Ready(Event::Gone);
        }
        // Timers before reads, so a client sending without pause cannot hold them off.
        if sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Event::Timer);
        }
        if self.ws.pending_bytes() >= READ_PAUSE_BYTES {
            // The client sends but does not read (e.g. a ping flood): stop reading until
            // what it is owed is written, so memory stays bounded.
            return Poll::Pending;
        }
        match self.ws.poll_next(cx) {
            Poll::Ready(Some(Ok(message))) => return Poll::Ready(Event::Frame(message)),
            Poll::Ready(Some(Err(WsError::Violation(v)))) => return Poll::Ready(Event::Failed(v)),
            Poll::Ready(Some(Err(WsError::Io(_)))) | Poll::Ready(None) => {
                return Poll::Ready(Event::Gone)
            }
            Poll::Pending => {}
        }
        Poll::Pending
    }
}

/// A fresh `clientId`: `c_` and 12 random base-36 characters (about 62 bits).
pub fn new_client_id() -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut id = String::with_capacity(14);
    id.push_str("c_");
    for _ in 0..12 {
        id.push(ALPHABET[fastrand::usize(..ALPHABET.len())] as char);
    }
    id
}
