//! The edge: the accept loop and each connection's life, from the TCP accept to the end of
//! its HTTP requests or of its WebSocket.
//!
//! - Every accepted socket takes a connection permit first (a place in the total and in its
//!   address's count, [`crate::admission`]); a socket refused by a cap is closed at once, with
//!   a `503` when it is plain HTTP. The permit lives inside the socket's I/O type
//!   ([`Counted`]), so it is held exactly as long as the socket, upgraded or not.
//! - Running out of files never stops or spins the loop: one file is kept in reserve; when
//!   `accept` fails for lack of files, the reserve is given up for a moment to take the
//!   waiting connection and close it, then taken back.
//! - Each connection is one task: the TLS handshake (when configured), HTTP/1.1 (hyper,
//!   serving the router), then, after an upgrade, the WebSocket in the same task. A connection
//!   with no request in progress (TLS handshake or headers not complete, or idle keep-alive)
//!   is closed at `request-timeout` (the rule is the core's `RequestDeadline`); a request's
//!   handling gets as long, then `408`.
//! - Shutdown sends the drain's deadline to every task: HTTP connections finish the request
//!   in progress and close (idle ones at once), WebSockets are closed by the server's
//!   shutdown with 1001, and whatever is still open at the deadline is dropped.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use futures_util::FutureExt;
use http::{header, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use loudsync_core::admission::{Refusal, RequestDeadline};
use metrics::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinSet;
use tokio::time::{sleep_until, timeout_at, Instant};
use tokio_rustls::TlsAcceptor;
use tower_service::Service;

use crate::admission::{ClientAddr, Permit};
use crate::state::ServerState;

/// `None` while the server runs; the drain's deadline once shutdown has begun.
pub(crate) type Stop = watch::Receiver<Option<Instant>>;

/// Largest buffer hyper may hold for one connection's request head (and reads).
const MAX_HTTP_BUFFER: usize = 64 * 1024;

/// How long the loop rests when it has no reserve file left to shed a connection with.
const OUT_OF_FILES_PAUSE: Duration = Duration::from_millis(100);

/// How long the loop rests after an unexpected accept error.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(20);

/// A socket that holds its connection permit (and counts itself in the TCP gauge): both go
/// when the socket is dropped, whoever holds it then (hyper, TLS, an upgraded WebSocket).
pub struct Counted<T> {
    io: T,
    _permit: Permit,
    gauge: Gauge,
}

impl<T> Counted<T> {
    fn new(io: T, permit: Permit, gauge: Gauge) -> Self {
        gauge.increment(1.0);
        Counted {
            io,
            _permit: permit,
            gauge,
        }
    }
}

impl<T> Drop for Counted<T> {
    fn drop(&mut self) {
        self.gauge.decrement(1.0);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// What runs on a connection after its upgrade (the WebSocket), left by the handler that
/// answered `101`; the connection's task runs it once hyper hands the socket over.
pub type AfterUpgrade = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Where a request's handler leaves [`AfterUpgrade`] (a request extension).
#[derive(Clone, Default)]
pub struct UpgradeSlot(Arc<Mutex<Option<AfterUpgrade>>>);

impl UpgradeSlot {
    /// Leaves what runs after the upgrade.
    pub fn put(&self, after: AfterUpgrade) {
        *self.0.lock().expect("upgrade slot") = Some(after);
    }

    fn take(&self) -> Option<AfterUpgrade> {
        self.0.lock().expect("upgrade slot").take()
    }
}

/// The answer to a plain-HTTP socket refused by a cap, written if the socket takes it at once.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
Content-Length: 21\r\nConnection: close\r\n\r\ntoo many connections\n";

/// Whether an accept error means the process (`EMFILE`) or the system (`ENFILE`) is out of
/// files.
fn out_of_files(e: &io::Error) -> bool {
    #[cfg(unix)]
    {
        matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
    }
    #[cfg(not(unix))]
    {
        let _ = e;
        false
    }
}

/// The file kept in reserve for the moment the process runs out (taken at bind, before
/// [`run`] starts, so it is held once the server is up).
pub(crate) fn reserve_file() -> Option<std::fs::File> {
    #[cfg(unix)]
    {
        std::fs::File::open("/dev/null").ok()
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Serves `listener` until `stop` carries the drain's deadline; returns once every
/// connection has ended, or at the deadline after dropping those still open.
pub(crate) async fn run(
    state: Arc<ServerState>,
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    mut reserve: Option<std::fs::File>,
    mut stop: Stop,
) {
    let mut tasks = JoinSet::new();
    // Upgraded WebSockets come back here to run as tasks of their own (in the same set, so
    // the drain's deadline reaches them), and their connection's task ends.
    let (upgraded, mut upgrades) = mpsc::unbounded_channel::<AfterUpgrade>();
    let mut warned = [false; 3];
    let deadline = loop {
        tokio::select! {
            biased;
            changed = stop.changed() => {
                match (changed, *stop.borrow()) {
                    (_, Some(deadline)) => break deadline,
                    (Err(_), None) => break Instant::now(),
                    (Ok(()), None) => {}
                }
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            Some(websocket) = upgrades.recv() => {
                tasks.spawn(websocket);
            }
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let accepted_at = Instant::now();
                    let permit = match state.admission.try_connection(peer.ip()) {
                        Ok(permit) => permit,
                        Err(refusal) => {
                            refuse(&state, tcp, peer, refusal, tls.is_none(), &mut warned);
                            continue;
                        }
                    };
                    // Small frames both ways: without TCP_NODELAY, Nagle plus delayed ACKs
                    // add ~40 ms.
                    let _ = tcp.set_nodelay(true);
                    let io = Counted::new(tcp, permit, state.metrics.tcp_connections.clone());
                    tasks.spawn(connection(
                        state.clone(),
                        Accepted { io, peer, at: accepted_at },
                        router.clone(),
                        tls.clone(),
                        stop.clone(),
                        upgraded.clone(),
                    ));
                }
                Err(e) if out_of_files(&e) => {
                    state.metrics.refused_out_of_files.increment(1);
                    if !std::mem::replace(&mut warned[2], true) {
                        tracing::warn!(
                            error = %e,
                            "out of open files: connections are accepted and closed at once \
                             until files are free (raise the limit with `ulimit -n`, or lower \
                             --max-connections)"
                        );
                    }
                    if reserve.take().is_some() {
                        // One file is free now: take the waiting connection and close it, so
                        // the listening socket is no longer ready, then take the file back.
                        if let Some(Ok((tcp, _))) = listener.accept().now_or_never() {
                            drop(tcp);
                        }
                        reserve = reserve_file();
                    }
                    if reserve.is_none() {
                        // No file to shed with: rest instead of spinning.
                        tokio::time::sleep(OUT_OF_FILES_PAUSE).await;
                        reserve = reserve_file();
                    }
                }
                Err(e) if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::Interrupted
                ) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
        }
    };
    drop(listener);
    let drained = timeout_at(deadline, async {
        loop {
            tokio::select! {
                Some(websocket) = upgrades.recv() => {
                    tasks.spawn(websocket);
                }
                joined = tasks.join_next() => {
                    if joined.is_none() {
                        match upgrades.try_recv() {
                            Ok(websocket) => {
                                tasks.spawn(websocket);
                            }
                            Err(_) => break,
                        }
                    }
                }
            }
        }
    })
    .await;
    if drained.is_err() {
        let open = tasks.len();
        state.metrics.drain_aborted.increment(open as u64);
        tracing::warn!(open, "drain timeout: dropping the connections still open");
        tasks.shutdown().await;
    }
}

/// Closes a socket refused by a cap (with a `503` when it is plain HTTP and takes it now).
fn refuse(
    state: &ServerState,
    tcp: TcpStream,
    peer: SocketAddr,
    refusal: Refusal,
    plain: bool,
    warned: &mut [bool; 3],
) {
    let (counter, index) = match refusal {
        Refusal::Total => (&state.metrics.refused_max_connections, 0),
        Refusal::PerAddress => (&state.metrics.refused_per_address, 1),
    };
    counter.increment(1);
    let caps = state.admission.caps();
    if !std::mem::replace(&mut warned[index], true) {
        tracing::warn!(
            %peer,
            max_connections = caps.max_connections,
            max_connections_per_address = caps.max_connections_per_address,
            "connection refused: {} reached (logged once; see loudsync_connections_refused_total)",
            refusal.as_str()
        );
    } else {
        tracing::debug!(%peer, reason = refusal.as_str(), "connection refused");
    }
    if plain {
        let _ = tcp.try_write(REFUSED);
    }
}

/// Waits until shutdown has begun (or the server is gone).
async fn stopped(stop: &mut Stop) {
    let _ = stop.wait_for(Option::is_some).await;
}

/// A socket just accepted: its I/O (with its permit), its peer, when.
struct Accepted {
    io: Counted<TcpStream>,
    peer: SocketAddr,
    at: Instant,
}

/// One connection: TLS (when configured) and HTTP, each bounded by the request deadline.
async fn connection(
    state: Arc<ServerState>,
    accepted: Accepted,
    router: Router,
    tls: Option<TlsAcceptor>,
    mut stop: Stop,
    upgraded: mpsc::UnboundedSender<AfterUpgrade>,
) {
    let Accepted {
        io,
        peer,
        at: accepted_at,
    } = accepted;
    // The HTTP part and the TLS handshake are boxed, so their state (hyper's connection, the
    // handshake's buffers) is freed as soon as they end. An upgraded WebSocket goes back to
    // the accept loop to run as a task of its own, and this task ends: an idle member costs
    // only what its WebSocket needs (measured: 8.5 KiB per member when the WebSocket ran in
    // this task, 5.7 KiB as its own; docs/BENCHMARKS.md).
    let Some(acceptor) = tls else {
        let after_upgrade = Box::pin(serve_http(state, io, peer, router, stop, accepted_at)).await;
        if let Some(after_upgrade) = after_upgrade {
            run_upgraded(&upgraded, after_upgrade).await;
        }
        return;
    };
    // The handshake counts inside the first request's deadline.
    let deadline = accepted_at + state.config.request_timeout;
    let handshake = Box::pin(async {
        tokio::select! {
            r = timeout_at(deadline, acceptor.accept(io)) => Some(r),
            _ = stopped(&mut stop) => None,
        }
    })
    .await;
    let Some(handshake) = handshake else {
        return;
    };
    match handshake {
        Ok(Ok(tls)) => {
            let after_upgrade =
                Box::pin(serve_http(state, tls, peer, router, stop, accepted_at)).await;
            if let Some(after_upgrade) = after_upgrade {
                run_upgraded(&upgraded, after_upgrade).await;
            }
        }
        Ok(Err(e)) => {
            state.metrics.tls_handshake_failures.increment(1);
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
        }
        Err(_) => {
            state.metrics.tls_handshake_failures.increment(1);
            state.metrics.request_timeouts.increment(1);
            tracing::debug!(%peer, "TLS handshake not finished within the request timeout");
        }
    }
}

/// Hands an upgraded WebSocket to the accept loop (which spawns it), or runs it here if the
/// loop is gone.
async fn run_upgraded(loop_: &mpsc::UnboundedSender<AfterUpgrade>, websocket: AfterUpgrade) {
    if let Err(mpsc::error::SendError(websocket)) = loop_.send(websocket) {
        websocket.await;
    }
}

/// The connection's request deadline, shared by its task and its requests.
struct Activity {
    deadline: Mutex<RequestDeadline>,
    ended: Notify,
}

impl Activity {
    fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
            .lock()
            .expect("activity")
            .poll_timeout()
            .map(Instant::from_std)
    }
}

/// Marks a request as in progress until it is answered or abandoned.
struct InProgress(Arc<Activity>);

impl InProgress {
    fn start(activity: &Arc<Activity>) -> Self {
        activity
            .deadline
            .lock()
            .expect("activity")
            .request_started();
        InProgress(activity.clone())
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0
            .deadline
            .lock()
            .expect("activity")
            .request_ended(std::time::Instant::now());
        self.0.ended.notify_one();
    }
}

/// A response body that holds its request's [`InProgress`] until it is sent or dropped, so
/// a connection streaming a long response is not idle.
struct UntilSent {
    body: Body,
    _in_progress: InProgress,
}

impl hyper::body::Body for UntilSent {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// The `408` for a request whose handling took longer than the request timeout.
fn request_timeout_response() -> Response<Body> {
    let mut response = Response::new(Body::from(
        r#"{"code":"request_timeout","message":"the request took longer than the request timeout"}"#,
    ));
    *response.status_mut() = StatusCode::REQUEST_TIMEOUT;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    response
}

/// HTTP/1.1 on one connection; returns what runs next if a request upgraded it (the
/// WebSocket), for the connection's task to run once this state is gone.
async fn serve_http<I>(
    state: Arc<ServerState>,
    io: I,
    peer: SocketAddr,
    router: Router,
    mut stop: Stop,
    accepted_at: Instant,
) -> Option<AfterUpgrade>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let request_timeout = state.config.request_timeout;
    let activity = Arc::new(Activity {
        deadline: Mutex::new(RequestDeadline::new(
            accepted_at.into_std(),
            request_timeout,
        )),
        ended: Notify::new(),
    });
    let slot = UpgradeSlot::default();
    let service = {
        let state = state.clone();
        let activity = activity.clone();
        let slot = slot.clone();
        service_fn(move |req: Request<Incoming>| {
            let in_progress = InProgress::start(&activity);
            let mut req = req.map(Body::new);
            let client = state.admission.client_address(peer.ip(), req.headers());
            let extensions = req.extensions_mut();
            extensions.insert(ConnectInfo(peer));
            extensions.insert(ClientAddr(client));
            extensions.insert(slot.clone());
            let handled = router.clone().call(req);
            let state = state.clone();
            async move {
                match tokio::time::timeout(request_timeout, handled).await {
                    // In progress until its body is sent (a stream of server-sent events
                    // lasts as long as the stream), not only until it is handled.
                    Ok(Ok(response)) => Ok::<_, Infallible>(response.map(|body| {
                        Body::new(UntilSent {
                            body,
                            _in_progress: in_progress,
                        })
                    })),
                    Ok(Err(never)) => match never {},
                    Err(_) => {
                        state.metrics.request_timeouts.increment(1);
                        Ok(request_timeout_response())
                    }
                }
            }
        })
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(request_timeout)
        .max_buf_size(MAX_HTTP_BUFFER)
        .keep_alive(true);
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        let deadline = activity.poll_timeout();
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
                }
                break;
            }
            _ = activity.ended.notified() => {}
            _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                let expired = activity
                    .deadline
                    .lock()
                    .expect("activity")
                    .is_expired(std::time::Instant::now());
                if expired {
                    state.metrics.request_timeouts.increment(1);
                    tracing::debug!(%peer, "no request within the request timeout: closed");
                    return None;
                }
            }
            _ = stopped(&mut stop), if !draining => {
                // Idle connections close at once; a request in progress is answered first.
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
        }
    }
    slot.take()
}
