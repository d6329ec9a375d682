//! The HTTP surface of pairing, under `/crsocket/` (P4, P14..P17):
//!
//! ```text
//!   GET      /crsocket/{NAME}/ws            WebSocket, `cr_*` JSON frames
//!   GET      /crsocket/{NAME}/clientid/     200 `<clientId value='NNNNNN'/>`
//!   GET      /crsocket/{NAME}/eventsource/  200 text/event-stream, always
//!   GET|POST /crsocket/{NAME}/sendevent/    204, or 400 / 403 / 413 with an empty body
//!   GET      /crsocket/{path}               a file of --pairing-pages, else 404
//! ```
//!
//! Each HTTP endpoint answers the same with or without its trailing slash. An unknown app
//! answers 404 `app_not_found` on its endpoints (the WebSocket before the upgrade). With
//! `--pairing-cors-origin`, the pairing paths answer CORS for those origins. The routes are
//! public: the app's tokens are their only access control.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use loudsync_core::pairing::{IdentifyError, Sender, Transport};
use loudsync_protocol::pairing::sse::{self as wire, SendEventBody};
use loudsync_protocol::pairing::{AbortReason, ClaimedId};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::services::ServeDir;

use super::hub::{IdentifyAnswer, PairingHub, StreamRequest};
use super::sse::SseBody;
use super::ws::PairingDriver;
use crate::state::ServerState;

/// The pairing routes for `state`, or `None` when pairing is off (no `--app`).
pub fn router(state: &Arc<ServerState>) -> Option<Router<Arc<ServerState>>> {
    state.pairing.as_ref()?;
    let mut router = Router::new()
        .route("/crsocket/{app}/ws", get(websocket))
        .route("/crsocket/{app}/clientid", get(clientid))
        .route("/crsocket/{app}/clientid/", get(clientid))
        .route("/crsocket/{app}/eventsource", get(eventsource))
        .route("/crsocket/{app}/eventsource/", get(eventsource))
        .route("/crsocket/{app}/sendevent", any(sendevent))
        .route("/crsocket/{app}/sendevent/", any(sendevent));
    if state.config.pairing_pages.is_some() {
        router = router.fallback(page);
    }
    if let Some(cors) = cors(&state.config.pairing_cors_origins) {
        router = router.layer(cors);
    }
    Some(router)
}

/// The CORS layer of `--pairing-cors-origin` (none without it).
fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok()),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers(tower_http::cors::AllowHeaders::mirror_request()),
    )
}

/// A file of `--pairing-pages` for `GET /crsocket/{path}` (the router's fallback, so the
/// endpoints above win): no listing, nothing outside the folder, `index.html` for a folder.
/// Any other path answers 404 as without pages.
async fn page(State(state): State<Arc<ServerState>>, mut req: Request) -> Response {
    use tower_service::Service;
    let Some(dir) = &state.config.pairing_pages else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Some(rest) = req.uri().path().strip_prefix("/crsocket/") else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let target = match req.uri().query() {
        Some(q) => format!("/{rest}?{q}"),
        None => format!("/{rest}"),
    };
    let Ok(uri) = target.parse() else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    *req.uri_mut() = uri;
    let Ok(mut response) = ServeDir::new(dir).call(req).await;
    // A folder without its trailing slash is redirected: point back under `/crsocket`.
    if let Some(location) = response.headers().get(header::LOCATION) {
        if let Ok(l) = location.to_str() {
            if l.starts_with('/') {
                if let Ok(v) = HeaderValue::from_str(&format!("/crsocket{l}")) {
                    response.headers_mut().insert(header::LOCATION, v);
                }
            }
        }
    }
    response.map(Body::new)
}

/// The hub, if `name` is a configured app.
fn app_of(state: &ServerState, name: &str) -> Option<Arc<PairingHub>> {
    state.pairing.clone().filter(|hub| hub.app(name).is_some())
}

/// The 404 of an unknown app.
fn app_not_found(name: &str) -> Response {
    crate::http::error(
        StatusCode::NOT_FOUND,
        "app_not_found",
        format!("no pairing app `{name}`"),
    )
}

async fn websocket(
    State(state): State<Arc<ServerState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(app): Path<String>,
    req: Request,
) -> Response {
    let Some(hub) = app_of(&state, &app) else {
        return app_not_found(&app);
    };
    crate::http::upgrade(state, peer, req, move |state, ws, peer| async move {
        let (socket, client) = (peer.socket, peer.client);
        crate::ws_pump::run_with(state.clone(), ws, socket, client, move |outbox, _| {
            PairingDriver::new(state, hub, app, outbox, peer.unjoined)
        })
        .await
    })
}

async fn clientid(State(state): State<Arc<ServerState>>, Path(app): Path<String>) -> Response {
    let Some(hub) = app_of(&state, &app) else {
        return app_not_found(&app);
    };
    let Some(assigned) = hub.assign_client_id_answer().get().await else {
        return crate::http::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "pairing_relay_unreachable",
            "the cluster's pairing relay did not answer: try again",
        );
    };
    match assigned {
        Some(id) => (
            [(header::CONTENT_TYPE, wire::CLIENTID_CONTENT_TYPE)],
            wire::clientid_body(&id),
        )
            .into_response(),
        None => crate::http::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_client_ids",
            "every one of the 10^6 client ids is connected",
        ),
    }
}

/// `eventsource/`: always 200 under a configured app (a non-200 would make `EventSource`
/// give up silently); an invalid request gets `aborted` as its only event.
async fn eventsource(
    State(state): State<Arc<ServerState>>,
    Path(app): Path<String>,
    req: Request,
) -> Response {
    let Some(hub) = app_of(&state, &app) else {
        return app_not_found(&app);
    };
    if state.is_shutting_down() {
        return crate::http::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down",
        );
    }
    let query = wire::parse_query(req.uri().query().unwrap_or(""));
    let transport = state.transports.open();
    let (conn, _) = hub.open(Transport::Sse, transport.1.clone());
    let answer = hub
        .identify_answer(
            conn,
            &app,
            Some(query.get("clientRole")),
            ClaimedId::Given(query.get("clientId")),
            Some(query.get("accessToken")),
        )
        .get()
        .await;
    let stream_id = answer.as_ref().map_or(0, |a| a.stream_id);
    let unknown = matches!(
        answer,
        None | Some(IdentifyAnswer {
            result: Err(IdentifyError::NotAwaitingIdentify),
            ..
        })
    );
    if unknown {
        // Cluster mode, and the cluster's relay did not answer or never saw the stream open
        // (it is gone or moved): the stream ends at once, so `EventSource` reconnects.
        transport.1.force_close(
            loudsync_protocol::close_code::SERVICE_RESTART,
            super::ws::RELAY_MOVED.to_string(),
        );
    }
    if let Some(Err(IdentifyError::Aborted(reason))) = answer.map(|a| a.result) {
        // Refused: `aborted` is the first and only event.
        let event = wire::sse_event("aborted", &wire::aborted(stream_id, reason, None));
        transport.1.push(
            crate::outbox::OutFrame::Text(event.into()),
            std::time::Instant::now(),
        );
        transport.1.force_close(
            loudsync_protocol::close_code::NORMAL,
            reason.as_str().to_string(),
        );
    }
    let body = SseBody::new(state.clone(), hub, transport, conn, stream_id);
    (
        [
            (header::CONTENT_TYPE, wire::EVENT_STREAM_CONTENT_TYPE),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// `sendevent/` (GET or POST; parameters from the query string only): 204, or the status of
/// the first failing check (P16), always with an empty body.
async fn sendevent(
    State(state): State<Arc<ServerState>>,
    Path(app): Path<String>,
    method: Method,
    req: Request,
) -> Response {
    let Some(hub) = app_of(&state, &app) else {
        return app_not_found(&app);
    };
    if method != Method::GET && method != Method::POST {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, POST")],
        )
            .into_response();
    }
    let status = send(&hub, &app, req.uri().query().unwrap_or(""));
    status.into_response()
}

fn send(hub: &PairingHub, app: &str, query: &str) -> StatusCode {
    let query = wire::parse_query(query);
    let Some(spec) = hub.app(app) else {
        return StatusCode::NOT_FOUND;
    };
    let request = match wire::parse_sendevent(&query, spec) {
        Ok(request) => request,
        Err(e) => {
            return StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
        }
    };
    let credentials = match hub.check_credentials(
        app,
        Some(request.role.as_str()),
        &request.client_id,
        Some(query.get("accessToken")),
    ) {
        Ok(c) => c,
        Err(AbortReason::NotAuthorized) => return StatusCode::FORBIDDEN,
        Err(_) => return StatusCode::BAD_REQUEST,
    };
    // Cluster mode: the cluster's relay carries it out.
    if hub.send_remote(app, &request, query.get("accessToken")) {
        return StatusCode::NO_CONTENT;
    }
    match request.body {
        SendEventBody::CrEvent(event) => {
            hub.event(&Sender::Request(credentials), &request.recipient, event);
        }
        SendEventBody::Alive(sid) => {
            hub.stream_request(&credentials, StreamRequest::Alive, &sid);
        }
        SendEventBody::Close(sid) => {
            hub.stream_request(&credentials, StreamRequest::Close, &sid);
        }
    }
    StatusCode::NO_CONTENT
}
