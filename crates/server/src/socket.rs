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

use bytes::Bytes;
use futures_core::Stream;
use futures_sink::Sink;
use loudsync_core::connection::{ConnAction, Connection, MemberCommand};
use loudsync_protocol::{LeaveReason, ServerMessage};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{sleep_until, Instant as TokioInstant, Sleep};
use tokio_websockets::{CloseCode, Message, WebSocketStream};

use crate::outbox::{OutFrame, Outbox};
use crate::sessions::{Joiner, SessionHandle, SessionInput};
use crate::{encoding, now, App};

/// What woke the socket task.
enum Event {
    /// A message (text, binary, ping, pong, close) from the client.
    Frame(Message),
    /// The stream ended or failed.
    Gone,
    /// A timer of the state machine (or the close deadline) is due.
    Timer,
    /// The outbox overflowed.
    Overflow,
    /// The server closed the socket (a close frame was written from the outbox).
    ServerClosed,
    /// The client broke the WebSocket protocol or a limit.
    Failed(tokio_websockets::Error),
}

/// The member this socket carries, once joined.
struct Membership {
    member_id: String,
    session: SessionHandle,
}

/// Runs one upgraded WebSocket to its end.
pub async fn run<S>(app: Arc<App>, ws: WebSocketStream<S>, peer: SocketAddr)
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
    ws: WebSocketStream<S>,
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
                Event::Failed(error) => {
                    tracing::debug!(%error, "websocket protocol error");
                    // The library queues a close for most errors itself, but not for a
                    // fragmented message over the limit; queue ours (refused if it already did).
                    let code = match error {
                        tokio_websockets::Error::PayloadTooLong { .. } => {
                            CloseCode::MESSAGE_TOO_BIG
                        }
                        _ => CloseCode::PROTOCOL_ERROR,
                    };
                    let _ = Pin::new(&mut self.ws)
                        .start_send(Message::close(Some(code), "frame rejected"));
                    self.conn.handle_socket_closed();
                    self.close_deadline = Some(TokioInstant::now() + self.app.config.close_timeout);
                }
                Event::ServerClosed => {
                    self.conn.handle_closed_by_server();
                    self.close_deadline = Some(TokioInstant::now() + self.app.config.close_timeout);
                }
            }
        }
    }

    fn handle_frame(&mut self, message: Message) {
        if let Some(text) = message.as_text() {
            self.app.metrics.frames_received.increment(1);
            self.conn.handle_text(now(), text);
        } else if message.is_binary() {
            self.app.metrics.frames_received.increment(1);
            self.conn.handle_binary(now());
        } else if message.is_pong() {
            self.conn.handle_pong(now(), message.as_payload());
        } else if message.is_close() {
            // The library answers the close; the stream then ends.
            self.conn.handle_socket_closed();
            self.close_deadline = Some(TokioInstant::now() + self.app.config.close_timeout);
        }
        // Pings are answered by the library and never count as liveness.
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
    fn poll_event(&mut self, cx: &mut Context<'_>, sleep: Pin<&mut Sleep>) -> Poll<Event> {
        self.outbox.register(cx.waker());
        if !self.overflow_reported && self.outbox.overflowed() {
            return Poll::Ready(Event::Overflow);
        }
        while self.close_deadline.is_none() {
            match Pin::new(&mut self.ws).poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Poll::Ready(Event::Gone),
                Poll::Pending => break,
            }
            if self.pending.is_empty() {
                // Take everything queued in one lock; the next batch only once this one is
                // written, so the outbox's byte limit still bounds what waits for this socket.
                self.outbox.drain_into(&mut self.pending);
            }
            let Some(frame) = self.pending.pop_front() else {
                break;
            };
            let (message, closing) = match frame {
                OutFrame::Text(bytes) => (Message::text(bytes), false),
                OutFrame::Ping(payload) => (Message::ping(Bytes::copy_from_slice(&payload)), false),
                OutFrame::Close(code, reason) => {
                    let code = CloseCode::try_from(code).unwrap_or(CloseCode::NORMAL_CLOSURE);
                    (Message::close(Some(code), truncate(&reason, 123)), true)
                }
            };
            if Pin::new(&mut self.ws).start_send(message).is_err() {
                return Poll::Ready(Event::Gone);
            }
            if closing {
                let _ = Pin::new(&mut self.ws).poll_flush(cx);
                return Poll::Ready(Event::ServerClosed);
            }
        }
        if let Poll::Ready(Err(_)) = Pin::new(&mut self.ws).poll_flush(cx) {
            return Poll::Ready(Event::Gone);
        }
        match Pin::new(&mut self.ws).poll_next(cx) {
            Poll::Ready(Some(Ok(message))) => return Poll::Ready(Event::Frame(message)),
            // A protocol error (e.g. a frame over the size limit): the library has queued
            // the matching close frame; keep polling until it is flushed and the stream ends.
            Poll::Ready(Some(Err(tokio_websockets::Error::Io(_)))) | Poll::Ready(None) => {
                return Poll::Ready(Event::Gone)
            }
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Event::Failed(e)),
            Poll::Pending => {}
        }
        if sleep.poll(cx).is_ready() {
            return Poll::Ready(Event::Timer);
        }
        Poll::Pending
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
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
