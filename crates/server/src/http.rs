//! The HTTP surface: WebSocket upgrades (`/`, `/ws`), `/healthz`, `/metrics`, the
//! `/v1/sessions` admin API, the `/v1/events` admin event stream and the `/v1/pairing` and
//! `/v1/media` views ([`crate::admin_read`]) with their access rule (bearer token or the
//! dashboard's login cookie, or loopback only: [`admin_request_access`]), the dashboard
//! ([`crate::dashboard`]) and the pairing routes under `/crsocket/` ([`crate::pairing::routes`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::ws::WsStream;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use hyper_util::rt::TokioIo;
use loudsync_protocol::client::{valid_session_id, MAX_NAME_BYTES};
use loudsync_protocol::close_code;
use serde::Deserialize;
use serde_json::json;

use crate::admission::ClientAddr;
use crate::listener::{AfterUpgrade, UpgradeSlot};
use crate::member::Peer;
use crate::sessions::SessionInput;
use crate::state::ServerState;
use crate::ws_pump;
use loudsync_core::directory::JoinError;

/// Builds the router for one server.
pub fn router(app: Arc<ServerState>) -> Router {
    let admin = Router::new()
        .route("/v1/sessions", get(list_sessions).post(create_session))
        .route("/v1/sessions/{id}", get(get_session).delete(delete_session))
        .route(
            "/v1/sessions/{id}/members/{member}/kick",
            axum::routing::post(kick_member),
        )
        .route("/v1/sessions/{id}/handoff", axum::routing::post(hand_off))
        .route("/v1/events", get(events))
        .route("/v1/pairing", get(crate::admin_read::pairing))
        .route("/v1/media", get(crate::admin_read::media))
        .layer(middleware::from_fn_with_state(app.clone(), require_admin));
    let mut router = Router::new()
        .route("/", get(websocket))
        .route("/ws", get(websocket))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .merge(admin)
        .merge(crate::dashboard::router(&app));
    if let Some(pairing) = crate::pairing::routes::router(&app) {
        router = router.merge(pairing);
    }
    router.with_state(app)
}

/// A JSON error body `{code, message}`, like the WebSocket `error`.
pub(crate) fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"code": code, "message": message.into()})),
    )
        .into_response()
}

/// `200 ok`; in cluster mode `503` while this node is not part of the cluster (Redis
/// unreachable, or its lease not renewed), so a load balancer sends clients elsewhere.
async fn healthz(State(app): State<Arc<ServerState>>) -> Response {
    match &app.cluster {
        Some(cluster) if !cluster.is_healthy() => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not in the cluster: Redis unreachable\n",
        )
            .into_response(),
        _ => "ok\n".into_response(),
    }
}

async fn metrics() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::prometheus().render(),
    )
        .into_response()
}

const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The `Sec-WebSocket-Accept` value for a client's `Sec-WebSocket-Key` (RFC 6455 4.2.2).
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key);
    sha.update(WEBSOCKET_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.digest().bytes())
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// Whether a `Sec-WebSocket-Key` is valid: the base64 of exactly 16 bytes (RFC 6455 4.1).
pub fn valid_websocket_key(key: &[u8]) -> bool {
    key.len() == 24
        && base64::engine::general_purpose::STANDARD
            .decode(key)
            .is_ok_and(|k| k.len() == 16)
}

/// The client's address: what the edge worked out (behind trusted proxies), or, for a router
/// served by something else, the same rule applied here.
pub(crate) fn client_address(app: &ServerState, req: &Request, peer: SocketAddr) -> IpAddr {
    match req.extensions().get::<ClientAddr>() {
        Some(ClientAddr(ip)) => *ip,
        None => app.admission.client_address(peer.ip(), req.headers()),
    }
}

/// The RFC 6455 handshake, then the WebSocket on the upgraded stream: in the connection's
/// own task when the edge serves it ([`UpgradeSlot`]), otherwise in a task of its own.
async fn websocket(
    State(app): State<Arc<ServerState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    upgrade(app, peer, req, ws_pump::run)
}

/// The upgraded stream a WebSocket runs on.
pub type Upgraded = TokioIo<hyper::upgrade::Upgraded>;

/// The RFC 6455 handshake of `req` (426 if it is no upgrade, 400 for a bad version or key, 503
/// once shutdown began, 429 over the per-address cap of unjoined sockets), then `run` on the
/// upgraded stream: in the connection's own task when the edge serves it ([`UpgradeSlot`]),
/// otherwise in a task of its own.
pub fn upgrade<F, Fut>(
    app: Arc<ServerState>,
    peer: SocketAddr,
    mut req: Request,
    run: F,
) -> Response
where
    F: FnOnce(Arc<ServerState>, WsStream<Upgraded>, Peer) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let headers = req.headers();
    if !header_has_token(headers, header::UPGRADE, "websocket")
        || !header_has_token(headers, header::CONNECTION, "upgrade")
    {
        return (
            StatusCode::UPGRADE_REQUIRED,
            [(header::UPGRADE, "websocket")],
            "loudsync: this endpoint speaks the LoudSync protocol over WebSocket; \
             see /healthz, /metrics and /v1/sessions for HTTP\n",
        )
            .into_response();
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        return (
            StatusCode::BAD_REQUEST,
            [(header::SEC_WEBSOCKET_VERSION, "13")],
            "unsupported WebSocket version; use 13\n",
        )
            .into_response();
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return (StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n").into_response();
    };
    if !valid_websocket_key(key.as_bytes()) {
        return (
            StatusCode::BAD_REQUEST,
            "invalid Sec-WebSocket-Key: it must be the base64 of 16 random bytes \
             (RFC 6455 section 4.1)\n",
        )
            .into_response();
    }
    if app.is_shutting_down() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down",
        );
    }
    let accept = accept_key(key.as_bytes());
    let client = client_address(&app, &req, peer);
    let unjoined = match app.admission.try_unjoined(client) {
        Ok(permit) => permit,
        Err(_) => {
            app.metrics.refused_unjoined.increment(1);
            return error(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_connections",
                format!(
                    "{} WebSocket connections from this address have not joined yet; \
                     join or close one first",
                    app.admission.caps().max_unjoined_per_address
                ),
            );
        }
    };
    let slot = req.extensions().get::<UpgradeSlot>().cloned();
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "connection cannot be upgraded\n",
        )
            .into_response();
    };
    let max_message_bytes = app.config.max_message_bytes;
    let peer = Peer {
        socket: peer,
        client,
        unjoined: Some(unjoined),
    };
    let after_upgrade: AfterUpgrade = Box::pin(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws = WsStream::new(TokioIo::new(upgraded), max_message_bytes);
                run(app, ws, peer).await;
            }
            Err(e) => tracing::debug!(peer = %peer.socket, error = %e, "upgrade failed"),
        }
    });
    match slot {
        Some(slot) => slot.put(after_upgrade),
        None => {
            tokio::spawn(after_upgrade);
        }
    }
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    switching_protocols(response.headers_mut(), &accept);
    response
}

/// The headers of a `101 Switching Protocols` answer to a WebSocket upgrade.
pub fn switching_protocols(h: &mut HeaderMap, accept: &str) {
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(accept).expect("base64 is a valid header value"),
    );
}

/// `/v1/*` access: [`admin_request_access`] with what the request carries (the client address
/// behind trusted proxies, see [`crate::admission::client_address`]).
async fn require_admin(
    State(app): State<Arc<ServerState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let client = client_address(&app, &req, peer);
    let headers = req.headers();
    let cookie = crate::dashboard::cookie_token(headers);
    let own_origin = crate::dashboard::request_origin(&app, peer, headers);
    let access = admin_request_access(&AdminRequest {
        token: app.config.admin_token.as_deref(),
        client,
        authorization: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
        cookie: cookie.as_deref(),
        method: req.method(),
        origin: headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        own_origin: own_origin.as_deref(),
    });
    match access {
        Ok(_) => next.run(req).await,
        Err((status, code, message)) => error(status, code, message),
    }
}

/// What the admin rule looks at in one request.
#[derive(Debug, Clone, Copy)]
pub struct AdminRequest<'a> {
    /// The server's `--admin-token`.
    pub token: Option<&'a str>,
    /// The client's address (behind trusted proxies).
    pub client: IpAddr,
    /// The `Authorization` header.
    pub authorization: Option<&'a str>,
    /// The admin token in the dashboard's cookie ([`crate::dashboard::COOKIE`]), decoded.
    pub cookie: Option<&'a str>,
    /// The request's method.
    pub method: &'a axum::http::Method,
    /// The `Origin` header.
    pub origin: Option<&'a str>,
    /// The request's own origin, `scheme://host` ([`crate::dashboard::request_origin`]).
    pub own_origin: Option<&'a str>,
}

/// How a request passed the admin rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminVia {
    /// No token is configured and the client is on loopback.
    Loopback,
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// The dashboard's login cookie.
    Cookie,
}

/// Why a request was refused: status, `code`, message.
pub type Refusal = (StatusCode, &'static str, &'static str);

/// The admin rule of `/v1/*`. With a token: a request with a Bearer credential is judged on
/// it alone ([`admin_access`]); otherwise the dashboard's cookie, compared the same way (in
/// constant time), and a cookie request that changes something (any method but GET and HEAD)
/// must carry an `Origin` equal to its own origin, else 403 `forbidden_origin` (CSRF: a
/// browser sends the cookie with a cross-site form too, never the bearer header). Without a
/// token: loopback clients only, addressed to an IP address or a local name (else 403
/// `forbidden_host`: [`crate::dashboard::local_host`], against DNS rebinding), and a browser
/// request that changes something from another origin (an `Origin` header naming another
/// site) is refused the same way as a cookie's, so a web page cannot drive a local server's
/// admin API; scripts send no `Origin` and are unaffected.
pub fn admin_request_access(r: &AdminRequest<'_>) -> Result<AdminVia, Refusal> {
    use axum::http::Method;
    let changes = !(r.method == Method::GET || r.method == Method::HEAD);
    let same_origin = || crate::dashboard::same_origin(r.origin, r.own_origin);
    let forbidden = (
        StatusCode::FORBIDDEN,
        "forbidden_origin",
        crate::dashboard::FORBIDDEN_ORIGIN_MESSAGE,
    );
    match r.token {
        Some(token) => {
            if r.authorization.and_then(bearer_token).is_some() {
                return admin_access(Some(token), r.client, r.authorization)
                    .map(|()| AdminVia::Bearer);
            }
            match r.cookie {
                Some(given) if loudsync_core::directory::Password::new(token).matches(given) => {
                    if changes && !same_origin() {
                        Err(forbidden)
                    } else {
                        Ok(AdminVia::Cookie)
                    }
                }
                Some(_) => Err((
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "wrong admin token in the dashboard's cookie: log in again",
                )),
                None => {
                    admin_access(Some(token), r.client, r.authorization).map(|()| AdminVia::Bearer)
                }
            }
        }
        None => {
            admin_access(None, r.client, None)?;
            crate::dashboard::local_host(r.own_origin)?;
            if changes && r.origin.is_some() && !same_origin() {
                return Err(forbidden);
            }
            Ok(AdminVia::Loopback)
        }
    }
}

/// The admin access rule, on its own so it can be tested for any client address: with a
/// token, `Authorization: Bearer <token>` (the scheme in any case, RFC 9110 11.1), compared
/// without leaking the token or its length; without one, loopback clients only.
pub fn admin_access(
    token: Option<&str>,
    client: IpAddr,
    authorization: Option<&str>,
) -> Result<(), (StatusCode, &'static str, &'static str)> {
    match token {
        Some(token) => match authorization.and_then(bearer_token) {
            // Compared as digests in constant time, like session passwords.
            Some(given) if loudsync_core::directory::Password::new(token).matches(given) => Ok(()),
            Some(_) => Err((
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "wrong admin token",
            )),
            None => Err((
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this API needs `Authorization: Bearer <admin token>`",
            )),
        },
        None if client.to_canonical().is_loopback() => Ok(()),
        None => Err((
            StatusCode::FORBIDDEN,
            "forbidden",
            "without --admin-token the admin API answers loopback clients only",
        )),
    }
}

/// The credentials of an `Authorization` value with the `Bearer` scheme, in any case, and one
/// or more spaces after it (RFC 9110 11.4); `None` for another scheme or no credentials.
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, rest) = authorization.trim().split_once(' ')?;
    let token = rest.trim_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The body of `POST /v1/sessions`, as [`parse_create_session`] reads it (camelCase JSON,
/// unknown fields refused). `Debug` shows no password.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateSession {
    /// The display name: not blank, at most 256 bytes, no control characters.
    pub name: String,
    /// The session id (else a fresh 6-character code).
    #[serde(default)]
    pub id: Option<String>,
    /// The capacity, host included (else the server's `max-members`).
    #[serde(default)]
    pub max_members: Option<usize>,
    /// The only `deviceInfo.id` that may join as host (without a host token).
    #[serde(default)]
    pub host_device_id: Option<String>,
    /// The host's name as the app shows it while no host has joined.
    #[serde(default)]
    pub host_name: Option<String>,
    /// Answer with a host join token (`hostToken` in the 201 body); needs a signing key.
    #[serde(default)]
    pub host_token: bool,
    /// How long that token is valid (humantime, e.g. `"2h"`; default 24 h, at most 365 days).
    #[serde(default, with = "humantime_serde")]
    pub host_token_ttl: Option<std::time::Duration>,
    /// The password every join must carry (1 to 256 bytes).
    #[serde(default)]
    pub password: Option<crate::access::Secret>,
}

/// Largest `maxMembers` a session may be created with.
pub const MAX_SESSION_CAPACITY: usize = 100_000;

/// How long a host token from `POST /v1/sessions` is valid unless `hostTokenTtl` says.
pub const DEFAULT_HOST_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Parses and checks the body of `POST /v1/sessions`; the error is the `400`'s message.
/// Every rule that needs no server state is here (the default capacity and the token key are
/// the handler's).
pub fn parse_create_session(body: &[u8]) -> Result<CreateSession, String> {
    use loudsync_protocol::client::{has_control, MAX_PASSWORD_BYTES};
    let req: CreateSession = serde_json::from_slice(body).map_err(|e| format!("body: {e}"))?;
    let text = |field: &str, value: Option<&str>| -> Result<(), String> {
        let Some(value) = value else { return Ok(()) };
        if value.trim().is_empty() || value.len() > MAX_NAME_BYTES {
            return Err(format!("`{field}` must be 1 to {MAX_NAME_BYTES} bytes"));
        }
        if has_control(value) {
            return Err(format!("`{field}` must not contain control characters"));
        }
        Ok(())
    };
    text("name", Some(&req.name))?;
    text("hostDeviceId", req.host_device_id.as_deref())?;
    text("hostName", req.host_name.as_deref())?;
    if req.id.as_deref().is_some_and(|id| !valid_session_id(id)) {
        return Err("`id` must be 1 to 64 characters of A-Z, a-z, 0-9, `-` and `_`".into());
    }
    if req
        .max_members
        .is_some_and(|n| !(1..=MAX_SESSION_CAPACITY).contains(&n))
    {
        return Err(format!(
            "`maxMembers` must be between 1 and {MAX_SESSION_CAPACITY}"
        ));
    }
    if let Some(password) = &req.password {
        if password.0.is_empty() || password.0.len() > MAX_PASSWORD_BYTES {
            return Err(format!(
                "`password` must be 1 to {MAX_PASSWORD_BYTES} bytes"
            ));
        }
    }
    match req.host_token_ttl {
        Some(_) if !req.host_token => {
            return Err("`hostTokenTtl` goes with `\"hostToken\": true`".into())
        }
        Some(ttl) if ttl.is_zero() || ttl.as_secs() > 365 * 24 * 3600 => {
            return Err("`hostTokenTtl` must be more than 0 and at most 365 days".into())
        }
        _ => {}
    }
    Ok(req)
}

async fn create_session(State(app): State<Arc<ServerState>>, body: Bytes) -> Response {
    use loudsync_core::directory::{Access, HostRule, Password};
    let bad = |message: String| error(StatusCode::BAD_REQUEST, "invalid_request", message);
    let req = match parse_create_session(&body) {
        Ok(r) => r,
        Err(message) => return bad(message),
    };
    let max_members = req.max_members.unwrap_or(app.config.max_members);
    if !(1..=MAX_SESSION_CAPACITY).contains(&max_members) {
        return bad(format!(
            "`maxMembers` must be between 1 and {MAX_SESSION_CAPACITY}"
        ));
    }
    let signer = match (&app.token_key, req.host_token) {
        (_, false) => None,
        (Some(key), true) if key.can_sign() => Some(key),
        (Some(_), true) => {
            return bad(
                "`hostToken` needs a signing key: this server verifies tokens with a \
                 public key and cannot sign; mint one with `loudsync token` and the private key"
                    .into(),
            )
        }
        (None, true) => {
            return bad(
                "`hostToken` needs a token key: start the server with --token-key or \
                 --token-key-file (an HS256 secret)"
                    .into(),
            )
        }
    };
    let access = Access {
        host: match &req.host_device_id {
            Some(device) => HostRule::Device(device.clone()),
            None => HostRule::TokenOnly,
        },
        password: req.password.as_ref().map(|p| Password::new(&p.0)),
        host_name: req.host_name.clone(),
    };
    let asked = req.id.clone();
    if let (Some(cluster), Some(id)) = (&app.cluster, &asked) {
        match cluster
            .store
            .session_spec(&loudsync_core::ids::session_key(id))
            .await
        {
            Ok(None) => {}
            Ok(Some(_)) => {
                return error(
                    StatusCode::CONFLICT,
                    "session_exists",
                    format!("session `{id}` already exists"),
                )
            }
            Err(_) => return cluster_timeout(id),
        }
    }
    let password_protected = access.password.is_some();
    let created = app
        .registry
        .create(&app, req.id, req.name.clone(), Some(max_members), access);
    let view = |id: &str, handle: crate::sessions::SessionHandle| {
        let app = app.clone();
        let id = id.to_string();
        let name = req.name.clone();
        async move {
            if app.cluster.is_none() {
                return handle.view().await;
            }
            // Cluster mode: the new session as its spec says (its owner starts it).
            Some(crate::sessions::SessionView {
                id,
                name,
                max_members,
                host_id: None,
                password_protected,
                host_device: None,
                members: Vec::new(),
                dialects: Vec::new(),
                state: None,
            })
        }
    };
    if let (Some(cluster), Ok((id, _))) = (&app.cluster, &created) {
        // The forwarder creates the session in Redis: answer once it exists cluster-wide, so a
        // join on any node right after the answer finds it (and a host's join cannot open a
        // session of its own under the id first).
        let key = loudsync_core::ids::session_key(id);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
        loop {
            match cluster.store.session_spec(&key).await {
                Ok(Some(_)) => break,
                _ if tokio::time::Instant::now() >= deadline => return cluster_timeout(id),
                _ => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
            }
        }
    }
    match created {
        Ok((id, handle)) => match view(&id, handle).await {
            Some(view) => {
                let mut body = serde_json::to_value(&view).expect("a view serialises");
                if let Some(key) = signer {
                    let now = crate::clock::now().unix_ms / 1000;
                    let ttl = req.host_token_ttl.unwrap_or(DEFAULT_HOST_TOKEN_TTL);
                    let claims = crate::access::Claims {
                        sid: id,
                        role: loudsync_protocol::DeviceType::Host,
                        sub: req.host_device_id,
                        name: None,
                        exp: now + ttl.as_secs(),
                        nbf: None,
                        iat: Some(now),
                    };
                    match crate::access::mint(&claims, key) {
                        Ok(token) => body["hostToken"] = token.into(),
                        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.0),
                    }
                }
                (StatusCode::CREATED, Json(body)).into_response()
            }
            None => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the session ended as it was created",
            ),
        },
        Err(_) => error(
            StatusCode::CONFLICT,
            "session_exists",
            format!("session `{}` already exists", asked.unwrap_or_default()),
        ),
    }
}

/// `GET /v1/events`: the admin event stream ([`crate::events`]), from the client's
/// `Last-Event-ID` when it sends one.
async fn events(State(app): State<Arc<ServerState>>, headers: HeaderMap) -> Response {
    if app.is_shutting_down() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down",
        );
    }
    // A value that is not visible ASCII is malformed (a `reset`), not absent: taken as none,
    // the client would be told nothing and believe itself up to date.
    let last = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("\u{fffd}"))
        .filter(|v| !v.is_empty());
    let subscription = app.events.subscribe(last);
    let mut response = Response::new(crate::events::body(app.clone(), subscription));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

async fn list_sessions(State(app): State<Arc<ServerState>>) -> Response {
    if let Some(cluster) = &app.cluster {
        let ids = match cluster.store.session_ids().await {
            Ok(ids) => ids,
            Err(_) => return cluster_timeout("*"),
        };
        let Some(mut views) = cluster_views(cluster, &ids).await else {
            return cluster_timeout("*");
        };
        views.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        return Json(json!({ "sessions": views })).into_response();
    }
    let mut sessions = Vec::new();
    for handle in app.registry.all() {
        if let Some(view) = handle.view().await {
            sessions.push(view);
        }
    }
    sessions.sort_by(|a, b| a.id.cmp(&b.id));
    Json(json!({ "sessions": sessions })).into_response()
}

fn not_found(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "session_not_found",
        JoinError::NotFound {
            session: id.to_string(),
        }
        .text(),
    )
}

async fn get_session(State(app): State<Arc<ServerState>>, Path(id): Path<String>) -> Response {
    if let Some(cluster) = &app.cluster {
        let key = loudsync_core::ids::session_key(&id);
        return match cluster_views(cluster, &[key]).await {
            Some(mut views) if !views.is_empty() => Json(views.remove(0)).into_response(),
            Some(_) => not_found(&id),
            None => cluster_timeout(&id),
        };
    }
    match app.registry.get(&id) {
        Some(handle) => match handle.view().await {
            Some(view) => Json(session_detail(&view)).into_response(),
            None => not_found(&id),
        },
        None => not_found(&id),
    }
}

/// One session as `GET /v1/sessions/{id}` shows it: the list's object, with each member's
/// `deviceId` and `dialect`, and the state document with its `version` and `term`.
pub fn session_detail(view: &crate::sessions::SessionView) -> serde_json::Value {
    use loudsync_protocol::app::Dialect;
    let mut body = serde_json::to_value(view).expect("a view serialises");
    if let Some(members) = body["members"].as_array_mut() {
        for ((m, info), dialect) in members.iter_mut().zip(&view.members).zip(&view.dialects) {
            m["deviceId"] = info.device_id.clone().into();
            m["dialect"] = match dialect {
                Dialect::LoudSync => "loudsync",
                Dialect::App => "app",
            }
            .into();
        }
    }
    if let Some(state) = &view.state {
        body["state"] = serde_json::from_str(state.state.0.get()).unwrap_or_default();
        body["version"] = state.version.into();
        body["term"] = state.term.into();
    }
    body
}

/// The body of `POST /v1/sessions/{id}/members/{member}/kick` (optional).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KickBody {
    #[serde(default)]
    reason: Option<String>,
}

/// The body of `POST /v1/sessions/{id}/handoff`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct HandoffBody {
    target_id: String,
}

/// Largest `reason` of an admin kick.
pub const MAX_KICK_REASON_BYTES: usize = 1024;

fn member_not_found(session: &str, member: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "member_not_found",
        format!("no member `{member}` in session `{session}`"),
    )
}

/// Sends `action` to session `id` and answers with its result (or the error response).
#[allow(clippy::result_large_err)] // a response, built once per admin request
async fn admin_action(
    app: &Arc<ServerState>,
    id: &str,
    action: crate::sessions::AdminAction,
) -> Result<Option<String>, Response> {
    use loudsync_core::session::AdminRefusal;
    let member = match &action {
        crate::sessions::AdminAction::Kick { member_id, .. } => member_id.clone(),
        crate::sessions::AdminAction::Handoff { target_id } => target_id.clone(),
    };
    let Some(handle) = app.registry.resolve(app, id).await else {
        return Err(not_found(id));
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    if !handle.send(SessionInput::Admin(Box::new((action, reply)))) {
        return Err(not_found(id));
    }
    let conflict = |code: &str, message: String| Err(error(StatusCode::CONFLICT, code, message));
    let Some(answer) = cluster_wait(app, answer).await else {
        return Err(cluster_timeout(id));
    };
    match answer {
        Err(_) => Err(not_found(id)),
        Ok(Ok(done)) => Ok(done),
        Ok(Err(AdminRefusal::NoSuchMember)) => Err(member_not_found(id, &member)),
        Ok(Err(AdminRefusal::IsHost)) => conflict(
            "is_host",
            format!(
                "`{member}` is the host of `{id}`: close the session or hand control to \
                 another member first"
            ),
        ),
        Ok(Err(AdminRefusal::NoHost)) => conflict(
            "no_host",
            format!("session `{id}` has no host to hand control from"),
        ),
        Ok(Err(AdminRefusal::Busy)) => conflict(
            "busy",
            format!("a handoff is already pending in session `{id}`"),
        ),
        Ok(Err(AdminRefusal::NotEligible)) => conflict(
            "not_eligible",
            format!(
                "`{member}` cannot take control now: it must be connected (not away in a \
                 resume window) and speak the LoudSync dialect"
            ),
        ),
    }
}

/// `POST /v1/sessions/{id}/members/{member}/kick`: the member gets `kicked` (with the body's
/// `reason`), the others `member_left` `kicked`. `204`.
async fn kick_member(
    State(app): State<Arc<ServerState>>,
    Path((id, member)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let body: KickBody = if body.iter().all(u8::is_ascii_whitespace) {
        KickBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    format!("body: {e}"),
                )
            }
        }
    };
    if let Some(reason) = &body.reason {
        if reason.len() > MAX_KICK_REASON_BYTES || loudsync_protocol::client::has_control(reason) {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!(
                    "`reason` must be at most {MAX_KICK_REASON_BYTES} bytes, without control \
                     characters"
                ),
            );
        }
    }
    let action = crate::sessions::AdminAction::Kick {
        member_id: member,
        reason: body.reason,
    };
    match admin_action(&app, &id, action).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(response) => response,
    }
}

/// `POST /v1/sessions/{id}/handoff` `{targetId}`: the host is asked to hand control to the
/// member, as by its own `handoff_request`; `202` `{handoffId, targetId}` once the request is
/// on its way (the candidate's answer decides: watch `/v1/events` or the session).
async fn hand_off(
    State(app): State<Arc<ServerState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let body: HandoffBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("body: {e}"),
            )
        }
    };
    let target = body.target_id.clone();
    let action = crate::sessions::AdminAction::Handoff {
        target_id: body.target_id,
    };
    match admin_action(&app, &id, action).await {
        Ok(handoff_id) => (
            StatusCode::ACCEPTED,
            Json(json!({"handoffId": handoff_id, "targetId": target})),
        )
            .into_response(),
        Err(response) => response,
    }
}

async fn delete_session(State(app): State<Arc<ServerState>>, Path(id): Path<String>) -> Response {
    let Some(handle) = app.registry.resolve(&app, &id).await else {
        return not_found(&id);
    };
    let (done, ack) = tokio::sync::oneshot::channel();
    if !handle.send(SessionInput::Close {
        reason: "Session closed by the server administrator".into(),
        code: close_code::NORMAL,
        done: Some(done),
    }) {
        return not_found(&id);
    }
    if cluster_wait(&app, ack).await.is_none() {
        return cluster_timeout(&id);
    }
    StatusCode::NO_CONTENT.into_response()
}

/// Waits for a session's answer; in cluster mode at most two leases (a takeover holds a
/// request for at most a lease and a second), `None` past that.
async fn cluster_wait<T>(
    app: &ServerState,
    answer: tokio::sync::oneshot::Receiver<T>,
) -> Option<Result<T, tokio::sync::oneshot::error::RecvError>> {
    match &app.cluster {
        None => Some(answer.await),
        Some(cluster) => tokio::time::timeout(
            cluster.lease * 2 + std::time::Duration::from_secs(1),
            answer,
        )
        .await
        .ok(),
    }
}

fn cluster_timeout(id: &str) -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "cluster_unavailable",
        format!("session `{id}`: its owner did not answer in time (cluster unavailable); retry"),
    )
}

/// Cluster mode: the admin views of sessions, as their owners last wrote them to Redis.
async fn cluster_views(
    cluster: &crate::cluster::Cluster,
    ids: &[String],
) -> Option<Vec<serde_json::Value>> {
    let views = cluster.store.views(ids).await.ok()?;
    Some(
        views
            .into_iter()
            .flatten()
            .filter_map(|v| serde_json::from_str::<serde_json::Value>(&v).ok())
            .filter(|v| v["ended"] != serde_json::Value::Bool(true))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_access_rule() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let lo6: IpAddr = "::1".parse().unwrap();
        let lan: IpAddr = "192.168.1.20".parse().unwrap();
        assert!(admin_access(None, lo, None).is_ok());
        assert!(admin_access(None, lo6, None).is_ok());
        assert_eq!(
            admin_access(None, lan, None).unwrap_err().0,
            StatusCode::FORBIDDEN
        );
        assert!(admin_access(Some("s3cret"), lan, Some("Bearer s3cret")).is_ok());
        assert_eq!(
            admin_access(Some("s3cret"), lo, None).unwrap_err().0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            admin_access(Some("s3cret"), lan, Some("Bearer nope"))
                .unwrap_err()
                .0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            admin_access(Some("s3cret"), lan, Some("s3cret"))
                .unwrap_err()
                .0,
            StatusCode::UNAUTHORIZED
        );
        // Neither a prefix nor an extension of the token passes (compared as digests).
        for near in ["Bearer s3cre", "Bearer s3crett", "Bearer S3cret"] {
            assert_eq!(
                admin_access(Some("s3cret"), lan, Some(near)).unwrap_err().0,
                StatusCode::UNAUTHORIZED,
                "{near}"
            );
        }
        // A loopback client written as a mapped IPv4 address is loopback.
        assert!(admin_access(None, "::ffff:127.0.0.1".parse().unwrap(), None).is_ok());
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_the_token_is_not() {
        let lan: IpAddr = "192.168.1.20".parse().unwrap();
        for ok in [
            "Bearer s3cret",
            "bearer s3cret",
            "BEARER s3cret",
            "bEaReR   s3cret",
            " Bearer s3cret ",
        ] {
            assert!(
                admin_access(Some("s3cret"), lan, Some(ok)).is_ok(),
                "{ok:?}"
            );
        }
        for (refused, message) in [
            ("Bearer S3CRET", "wrong admin token"),
            ("Bearer s3cre", "wrong admin token"),
            ("Bearer s3cret2", "wrong admin token"),
            (
                "Bearer",
                "this API needs `Authorization: Bearer <admin token>`",
            ),
            (
                "Bearers3cret",
                "this API needs `Authorization: Bearer <admin token>`",
            ),
            (
                "Basic s3cret",
                "this API needs `Authorization: Bearer <admin token>`",
            ),
        ] {
            let err = admin_access(Some("s3cret"), lan, Some(refused)).unwrap_err();
            assert_eq!(
                (err.0, err.2),
                (StatusCode::UNAUTHORIZED, message),
                "{refused:?}"
            );
        }
        assert_eq!(bearer_token("bearer  abc.def "), Some("abc.def"));
    }

    #[test]
    fn the_cookie_counts_as_the_token_and_writes_need_the_own_origin() {
        use axum::http::Method;
        let lan: IpAddr = "192.168.1.20".parse().unwrap();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let own = Some("http://127.0.0.1:8080");
        let req = |token, client, authorization, cookie, method, origin| AdminRequest {
            token,
            client,
            authorization,
            cookie,
            method,
            origin,
            own_origin: own,
        };
        let get = &Method::GET;
        let del = &Method::DELETE;
        let t = Some("s3cret");
        let code = |r: AdminRequest<'_>| admin_request_access(&r).map_err(|e| (e.0, e.1));
        assert_eq!(
            code(req(t, lan, None, Some("s3cret"), get, None)),
            Ok(AdminVia::Cookie)
        );
        assert_eq!(
            code(req(
                t,
                lan,
                None,
                Some("s3cret"),
                &Method::HEAD,
                Some("http://evil")
            )),
            Ok(AdminVia::Cookie)
        );
        assert_eq!(
            code(req(t, lan, None, Some("s3cre"), get, None)),
            Err((StatusCode::UNAUTHORIZED, "unauthorized"))
        );
        assert_eq!(
            code(req(t, lan, None, None, get, None)),
            Err((StatusCode::UNAUTHORIZED, "unauthorized"))
        );
        for origin in [
            None,
            Some("http://evil.example"),
            Some("null"),
            Some("https://127.0.0.1:8080"),
        ] {
            assert_eq!(
                code(req(t, lan, None, Some("s3cret"), del, origin)),
                Err((StatusCode::FORBIDDEN, "forbidden_origin")),
                "{origin:?}"
            );
        }
        assert_eq!(
            code(req(
                t,
                lan,
                None,
                Some("s3cret"),
                &Method::POST,
                Some("http://127.0.0.1:8080")
            )),
            Ok(AdminVia::Cookie)
        );
        // Bearer requests: judged on the bearer alone, no Origin needed.
        assert_eq!(
            code(req(
                t,
                lan,
                Some("Bearer s3cret"),
                None,
                del,
                Some("http://evil")
            )),
            Ok(AdminVia::Bearer)
        );
        assert_eq!(
            code(req(t, lan, Some("Bearer nope"), Some("s3cret"), get, None)),
            Err((StatusCode::UNAUTHORIZED, "unauthorized"))
        );
        // Without a token: loopback only; a foreign Origin may not write.
        assert_eq!(
            code(req(None, lo, None, None, del, None)),
            Ok(AdminVia::Loopback)
        );
        assert_eq!(
            code(req(
                None,
                lo,
                None,
                None,
                del,
                Some("http://127.0.0.1:8080")
            )),
            Ok(AdminVia::Loopback)
        );
        assert_eq!(
            code(req(None, lo, None, None, get, Some("http://evil"))),
            Ok(AdminVia::Loopback)
        );
        assert_eq!(
            code(req(None, lo, None, None, del, Some("http://evil"))),
            Err((StatusCode::FORBIDDEN, "forbidden_origin"))
        );
        assert_eq!(
            code(req(None, lan, None, Some("x"), get, None)),
            Err((StatusCode::FORBIDDEN, "forbidden"))
        );
        // Without a token, a loopback request addressed to another name (DNS rebinding).
        let rebound = AdminRequest {
            own_origin: Some("http://evil.example:8080"),
            ..req(None, lo, None, None, get, None)
        };
        assert_eq!(
            code(rebound),
            Err((StatusCode::FORBIDDEN, "forbidden_host"))
        );
        let with_token = AdminRequest {
            own_origin: Some("http://dash.example"),
            ..req(t, lan, Some("Bearer s3cret"), None, get, None)
        };
        assert_eq!(
            code(with_token),
            Ok(AdminVia::Bearer),
            "names are fine with a token"
        );
    }

    #[test]
    fn a_websocket_key_is_the_base64_of_16_bytes() {
        // RFC 6455's example key.
        assert!(valid_websocket_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        for bad in [
            &b""[..],
            b"abc",
            b"dGhlIHNhbXBsZSBub25jZQ",     // unpadded
            b"dGhlIHNhbXBsZSBub25j",       // 15 bytes
            b"dGhlIHNhbXBsZSBub25jZXg=",   // 17 bytes
            b"dGhlIHNhbXBsZSBub25jZQ==\n", // trailing byte
            b"!!!!!!!!!!!!!!!!!!!!!!==",
            b"dGhlIHNhbXBsZSBub25jZR==", // non-canonical trailing bits
        ] {
            assert!(
                !valid_websocket_key(bad),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn session_ids_and_codes() {
        assert!(valid_session_id("A1B2C3"));
        assert!(valid_session_id("party_1-x"));
        assert!(!valid_session_id(""));
        assert!(!valid_session_id("has space"));
        assert!(!valid_session_id(&"x".repeat(65)));
        let code = loudsync_core::ids::IdSource::session_code(&loudsync_core::ids::RandomIds);
        assert!(valid_session_id(&code));
    }
}
