//! The WebSocket transport: one task per upgraded socket that moves frames between the socket
//! and the member's driver, and nothing else.
//!
//! The same task serves the pairing WebSocket (`/crsocket/{NAME}/ws`) with another driver
//! ([`Driver`]).
//!
//! One poll loop does all of it, so reading, writing and timers progress together and nothing
//! blocks another: it writes what the member's outbox holds (several frames per write when
//! they pile up), reads frames and hands them to the [`MemberDriver`], stops reading while the
//! client owes itself too many unread bytes (a ping flood) or while a join is on its way,
//! and wakes the driver at its deadline. Every rule (what a frame means, liveness, when to
//! close, when to give up on a close) is the driver's and the core's.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{sleep_until, Instant as TokioInstant, Sleep};

use crate::member::{MemberDriver, Peer};
use crate::outbox::{OutFrame, Outbox};
use crate::state::ServerState;
use crate::ws::{Violation, WsError, WsMessage, WsStream};

/// Bytes queued on the socket beyond which the task writes before taking more from the outbox.
const FLUSH_THRESHOLD: usize = 16 * 1024;
/// Bytes owed to the client beyond which the task stops reading from it.
const READ_PAUSE_BYTES: usize = 64 * 1024;
/// Frames handled in a row before what they produced is written (frames that arrived together
/// are answered in one write, and a flood cannot hold writes and timers off).
const MAX_READS_BEFORE_WRITE: u8 = 16;
/// A timer that fires this late suggests the process was paused (SIGSTOP, a VM freeze, a
/// long stall): the pump lets the I/O driver catch up before acting on it.
const LATE_TIMER: Duration = Duration::from_millis(50);

/// A deadline far enough away to mean "none".
const NO_DEADLINE: Duration = Duration::from_secs(3600);

/// What woke the task.
enum Event {
    /// A message (text, binary, ping, pong, close) from the client.
    Frame(WsMessage),
    /// The stream ended or failed.
    Gone,
    /// The driver's timer is due.
    Timer,
    /// The outbox overflowed.
    Overflow,
    /// A close was queued on the outbox by the server side.
    Closing,
    /// The client broke the WebSocket protocol or a limit (the close is queued).
    Failed(Violation),
    /// The answer to a join arrived and was handled.
    Joined,
}

/// What a WebSocket's task drives: the member driver on `/` and `/ws`
/// ([`MemberDriver`]), the pairing driver on `/crsocket/{NAME}/ws`
/// ([`crate::pairing::ws::PairingDriver`]). The task hands it what arrived and asks it when to
/// wake; every rule is the driver's.
pub trait Driver {
    /// A text frame arrived.
    fn handle_text(&mut self, text: &str);
    /// A binary frame arrived.
    fn handle_binary(&mut self);
    /// A pong to one of the server's pings arrived.
    fn handle_pong(&mut self, payload: &[u8]);
    /// The stream ended or the client closed it.
    fn handle_transport_closed(&mut self);
    /// The client broke the WebSocket protocol or a limit (the stream queued the close).
    fn handle_transport_failed(&mut self);
    /// A close was queued on the outbox by the server side.
    fn handle_closed_by_server(&mut self);
    /// The outbox overflowed: the client is too slow.
    fn handle_overflow(&mut self);
    /// The driver's timer is due.
    fn handle_timeout(&mut self);
    /// When [`Driver::handle_timeout`] must next be called.
    fn poll_timeout(&self) -> Option<std::time::Instant>;
    /// Whether the task must hold off reading.
    fn reading_paused(&self) -> bool;
    /// Whether the socket must be dropped now.
    fn is_aborted(&self) -> bool;
    /// Polls an answer the driver awaits (a join or a resume); `Ready` once handled.
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<()>;
}

impl Driver for MemberDriver {
    fn handle_text(&mut self, text: &str) {
        MemberDriver::handle_text(self, text)
    }
    fn handle_binary(&mut self) {
        MemberDriver::handle_binary(self)
    }
    fn handle_pong(&mut self, payload: &[u8]) {
        MemberDriver::handle_pong(self, payload)
    }
    fn handle_transport_closed(&mut self) {
        MemberDriver::handle_transport_closed(self)
    }
    fn handle_transport_failed(&mut self) {
        MemberDriver::handle_transport_failed(self)
    }
    fn handle_closed_by_server(&mut self) {
        MemberDriver::handle_closed_by_server(self)
    }
    fn handle_overflow(&mut self) {
        MemberDriver::handle_overflow(self)
    }
    fn handle_timeout(&mut self) {
        MemberDriver::handle_timeout(self)
    }
    fn poll_timeout(&self) -> Option<std::time::Instant> {
        MemberDriver::poll_timeout(self)
    }
    fn reading_paused(&self) -> bool {
        MemberDriver::reading_paused(self)
    }
    fn is_aborted(&self) -> bool {
        MemberDriver::is_aborted(self)
    }
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        MemberDriver::poll_join(self, cx)
    }
}

/// Runs one upgraded WebSocket of a session member to its end.
pub async fn run<S>(state: Arc<ServerState>, ws: WsStream<S>, peer: Peer)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let client = peer.client;
    let socket = peer.socket;
    let driver_state = state.clone();
    run_with(state, ws, socket, client, move |outbox, transport_id| {
        MemberDriver::new(driver_state, outbox, transport_id, peer)
    })
    .await
}

/// Runs one upgraded WebSocket to its end with the driver `make` builds from the socket's
/// outbox and transport id.
pub async fn run_with<S, D, F>(
    state: Arc<ServerState>,
    ws: WsStream<S>,
    socket: std::net::SocketAddr,
    client: std::net::IpAddr,
    make: F,
) where
    S: AsyncRead + AsyncWrite + Unpin,
    D: Driver,
    F: FnOnce(Arc<Outbox>, u64) -> D,
{
    let (transport_id, outbox) = state.transports.open();
    state.metrics.connections.increment(1.0);
    tracing::debug!(peer = %socket, %client, transport_id, "websocket open");
    let mut pump = Pump {
        driver: make(outbox.clone(), transport_id),
        outbox,
        ws,
        pending: VecDeque::new(),
        overflow_reported: false,
        closing_reported: false,
        reads_in_a_row: 0,
        read_before_timer: false,
        yielded_for_late_timer: false,
    };
    pump.run().await;
    drop(pump);
    state.transports.close(transport_id);
    state.metrics.connections.decrement(1.0);
    tracing::debug!(%client, transport_id, "websocket closed");
}

struct Pump<S, D> {
    driver: D,
    /// The member's outbox (the driver's), drained here.
    outbox: Arc<Outbox>,
    ws: WsStream<S>,
    /// Frames taken from the outbox and not yet handed to the WebSocket.
    pending: VecDeque<OutFrame>,
    overflow_reported: bool,
    closing_reported: bool,
    /// Frames handled since the last write; while in `1..MAX_READS_BEFORE_WRITE`, the next
    /// poll reads first, so the replies to frames that arrived together go out together.
    reads_in_a_row: u8,
    /// Whether the due timer already let one frame be read first (see `poll_event`).
    read_before_timer: bool,
    /// Whether a timer that fired [`LATE_TIMER`] late already yielded to the I/O driver.
    yielded_for_late_timer: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin, D: Driver> Pump<S, D> {
    async fn run(&mut self) {
        let sleep = sleep_until(TokioInstant::now() + NO_DEADLINE);
        tokio::pin!(sleep);
        loop {
            if self.driver.is_aborted() {
                return;
            }
            let deadline = match self.driver.poll_timeout() {
                Some(t) => TokioInstant::from_std(t),
                None => TokioInstant::now() + NO_DEADLINE,
            };
            if sleep.deadline() != deadline {
                sleep.as_mut().reset(deadline);
            }
            match poll_fn(|cx| self.poll_event(cx, sleep.as_mut())).await {
                Event::Frame(message) => {
                    self.yielded_for_late_timer = false;
                    self.handle_frame(message)
                }
                Event::Gone => {
                    self.driver.handle_transport_closed();
                    return;
                }
                Event::Timer => {
                    let late = TokioInstant::now().saturating_duration_since(sleep.deadline());
                    if late >= LATE_TIMER && !self.yielded_for_late_timer {
                        // The process was most likely paused: let the runtime poll its I/O
                        // driver (`yield_now` wakes us only after it has), so the frames that
                        // arrived meanwhile are seen and one is read before the timer is
                        // acted on (`poll_event`).
                        self.yielded_for_late_timer = true;
                        tokio::task::yield_now().await;
                        continue;
                    }
                    self.yielded_for_late_timer = false;
                    self.driver.handle_timeout()
                }
                Event::Overflow => {
                    self.overflow_reported = true;
                    self.pending.clear();
                    self.driver.handle_overflow();
                }
                Event::Failed(violation) => {
                    tracing::debug!(
                        code = violation.code,
                        reason = violation.reason,
                        "websocket protocol violation"
                    );
                    // Resending the same bytes on a new socket would fail the same way.
                    self.driver.handle_transport_failed();
                }
                Event::Closing => self.driver.handle_closed_by_server(),
                Event::Joined => {}
            }
        }
    }

    fn handle_frame(&mut self, message: WsMessage) {
        match message {
            WsMessage::Text(text) => self.driver.handle_text(&text),
            WsMessage::Binary(_) => self.driver.handle_binary(),
            WsMessage::Pong(payload) => self.driver.handle_pong(&payload),
            // The stream echoes the close; then it ends.
            WsMessage::Close(_) => self.driver.handle_transport_closed(),
            // Answered by the stream; control frames never count as liveness.
            WsMessage::Ping(_) => {}
        }
    }

    /// One poll of everything the task waits on: write what the outbox holds, flush, the
    /// join's answer, the timer, then read.
    fn poll_event(&mut self, cx: &mut Context<'_>, mut sleep: Pin<&mut Sleep>) -> Poll<Event> {
        if (1..MAX_READS_BEFORE_WRITE).contains(&self.reads_in_a_row) {
            // Right after a frame: take the next one already here before writing.
            if let Poll::Ready(event) = self.poll_read(cx) {
                self.reads_in_a_row += 1;
                return Poll::Ready(event);
            }
        }
        self.reads_in_a_row = 0;
        let outbox = &self.outbox;
        outbox.register(cx.waker());
        let status = outbox.status();
        if !self.overflow_reported && status.overflowed {
            return Poll::Ready(Event::Overflow);
        }
        if !self.closing_reported && status.closed {
            // The close is decided: the driver starts its close deadline, so the socket goes
            // even if the client never reads what is still queued before the close frame.
            self.closing_reported = true;
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
                // handed to the socket, so the outbox's limits still bound the backlog.
                outbox.drain_into(&mut self.pending);
            }
            let Some(frame) = self.pending.pop_front() else {
                break;
            };
            match frame {
                OutFrame::Text(bytes) => self.ws.queue_text(&bytes),
                OutFrame::Numbered(seq, bytes) => self.ws.queue_numbered_text(seq, &bytes),
                OutFrame::Ping(payload) => self.ws.queue_ping(&payload),
                OutFrame::Close(code, reason) => self.ws.queue_close(code, &reason),
            }
        }
        if let Poll::Ready(Err(_)) = self.ws.poll_flush(cx) {
            return Poll::Ready(Event::Gone);
        }
        if self.driver.poll_answer(cx).is_ready() {
            return Poll::Ready(Event::Joined);
        }
        // Timers before reads, so a client sending without pause cannot hold them off; but a
        // due timer first lets one frame that is already here be read. A process that was
        // paused (SIGSTOP, a VM freeze) wakes with every liveness deadline passed and its
        // clients' heartbeats waiting in the sockets: they prove the clients alive, so the
        // pause must not be charged to them as a heartbeat timeout (in cluster mode the
        // node then closes them with 1012, for what it was: the node's absence).
        if sleep.as_mut().poll(cx).is_ready() {
            if !self.read_before_timer {
                self.read_before_timer = true;
                if let Poll::Ready(event) = self.poll_read(cx) {
                    return Poll::Ready(event);
                }
            }
            self.read_before_timer = false;
            return Poll::Ready(Event::Timer);
        }
        self.read_before_timer = false;
        let event = self.poll_read(cx);
        if event.is_ready() {
            self.reads_in_a_row = 1;
        }
        event
    }

    /// The next frame, unless reading is paused: while a join is on its way, or while the
    /// client sends but does not read (a ping flood), so frames keep their order and memory
    /// stays bounded.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        if self.driver.reading_paused() || self.ws.pending_bytes() >= READ_PAUSE_BYTES {
            return Poll::Pending;
        }
        match self.ws.poll_next(cx) {
            Poll::Ready(Some(Ok(message))) => Poll::Ready(Event::Frame(message)),
            Poll::Ready(Some(Err(WsError::Violation(v)))) => Poll::Ready(Event::Failed(v)),
            Poll::Ready(Some(Err(WsError::Io(_)))) | Poll::Ready(None) => Poll::Ready(Event::Gone),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    //! The pump over an in-memory stream, with the test playing the session's owner, so a
    //! join's answer can be held back.

    use super::*;
    use crate::config::ServerConfig;
    use crate::outbox::OutFrame;
    use crate::sessions::SessionInput;
    use bytes::Bytes;
    use futures_util::{SinkExt, StreamExt};
    use loudsync_core::ids::SequentialIds;
    use std::net::SocketAddr;
    use tokio::io::DuplexStream;
    use tokio_websockets::{ClientBuilder, Message, WebSocketStream};

    fn state() -> Arc<ServerState> {
        let config = ServerConfig {
            heartbeat_timeout: Duration::from_millis(400),
            heartbeat_check_interval: Duration::from_millis(50),
            close_timeout: Duration::from_millis(200),
            ..ServerConfig::default()
        };
        Arc::new(ServerState::new(config, Arc::new(SequentialIds::default())))
    }

    fn open(state: &Arc<ServerState>) -> WebSocketStream<DuplexStream> {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let ws = WsStream::new(server, 64 * 1024);
        tokio::spawn(run(
            state.clone(),
            ws,
            Peer::from("127.0.0.1:9".parse::<SocketAddr>().unwrap()),
        ));
        ClientBuilder::new().take_over(client)
    }

    const JOIN: &str =
        r#"{"type":"join","sessionId":"s","deviceInfo":{"id":"d","name":"n","type":"client"}}"#;

    async fn next_text(ws: &mut WebSocketStream<DuplexStream>) -> String {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(2), ws.next())
                .await
                .expect("a frame in time")
                .expect("open")
                .expect("valid");
            if let Some(t) = m.as_text() {
                return t.to_string();
            }
            assert!(m.as_close().is_none(), "closed: {m:?}");
        }
    }

    type Held = (
        WebSocketStream<DuplexStream>,
        tokio::sync::mpsc::UnboundedReceiver<SessionInput>,
        Box<crate::sessions::JoinRequest>,
        tokio::sync::oneshot::Sender<crate::sessions::JoinResult>,
    );

    /// A client that sends `join` then `ping`; the test holds the session's side of the join.
    async fn join_then_ping() -> Held {
        let state = state();
        let mut session = state.registry.insert_manual("s");
        let mut client = open(&state);
        client.send(Message::text(JOIN)).await.unwrap();
        client
            .send(Message::text(r#"{"type":"ping","timestamp":5}"#))
            .await
            .unwrap();
        let Some(SessionInput::Join { request, reply }) = session.recv().await else {
            panic!("no join")
        };
        (client, session, request, reply)
    }

    #[tokio::test]
    async fn a_join_on_its_way_stalls_neither_writes_nor_timers() {
        let (mut client, mut session, request, reply) = join_then_ping().await;
        // Writes go on while the answer is held back.
        request.outbox.push(
            OutFrame::Text(Bytes::from_static(b"{\"type\":\"early\"}")),
            std::time::Instant::now(),
        );
        assert_eq!(next_text(&mut client).await, r#"{"type":"early"}"#);
        // Frames after the join wait for its answer: the ping is not answered yet...
        assert!(
            tokio::time::timeout(Duration::from_millis(150), client.next())
                .await
                .is_err(),
            "nothing is read while the join is on its way"
        );
        // ...and timers run: the join deadline (the heartbeat timeout) closes the socket.
        let closed = loop {
            match tokio::time::timeout(Duration::from_secs(2), client.next()).await {
                Ok(Some(Ok(m))) if m.is_close() => break m,
                Ok(Some(Ok(_))) => continue,
                other => panic!("no close: {other:?}"),
            }
        };
        // (The join deadline and the silence deadline fall together here; either proves it.)
        let reason = closed.as_close().unwrap().1;
        assert!(
            ["no join within the heartbeat timeout", "heartbeat timeout"].contains(&reason),
            "{reason}"
        );
        // The member the session was asked to add is detached when the transport goes (the
        // session handles inputs in order: this follows the join it has not answered yet).
        let detach = tokio::time::timeout(Duration::from_secs(2), session.recv())
            .await
            .expect("detach in time");
        assert!(
            matches!(detach, Some(SessionInput::Detach { ref member_id, .. }) if *member_id == request.member_id),
            "the pending member is detached"
        );
        drop(reply);
    }

    /// A stream that counts the writes that moved bytes.
    struct CountingIo {
        inner: DuplexStream,
        writes: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl AsyncRead for CountingIo {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for CountingIo {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let r = Pin::new(&mut self.inner).poll_write(cx, buf);
            if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
                self.writes
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            r
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    #[tokio::test]
    async fn frames_that_arrive_together_are_answered_in_one_write() {
        let state = state();
        let (client, server) = tokio::io::duplex(64 * 1024);
        let writes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let io = CountingIo {
            inner: server,
            writes: writes.clone(),
        };
        tokio::spawn(run(
            state.clone(),
            WsStream::new(io, 64 * 1024),
            Peer::from("127.0.0.1:9".parse::<SocketAddr>().unwrap()),
        ));
        let mut client = ClientBuilder::new().take_over(client);
        // Three pings in one write of the client's: one read on the server's side.
        for ts in [1, 2, 3] {
            client
                .feed(Message::text(format!(
                    r#"{{"type":"ping","timestamp":{ts}}}"#
                )))
                .await
                .unwrap();
        }
        client.flush().await.unwrap();
        for ts in [1, 2, 3] {
            let pong = next_text(&mut client).await;
            assert!(pong.contains(&format!(r#""timestamp":{ts}"#)), "{pong}");
        }
        assert_eq!(
            writes.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "three pongs, one write"
        );
    }

    #[tokio::test]
    async fn frames_after_a_join_are_handled_once_it_is_answered() {
        let (mut client, _session, request, reply) = join_then_ping().await;
        request.outbox.push(
            OutFrame::Text(Bytes::from_static(b"{\"type\":\"welcome\"}")),
            std::time::Instant::now(),
        );
        reply.send(Ok(())).unwrap();
        assert_eq!(next_text(&mut client).await, r#"{"type":"welcome"}"#);
        let pong = next_text(&mut client).await;
        assert!(pong.starts_with(r#"{"type":"pong""#), "{pong}");
    }
}
