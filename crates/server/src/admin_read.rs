//! Read-only views of the admin API for the dashboard and scripts (same access rule as the
//! rest of `/v1/*`): `GET /v1/pairing` (the pairing hub's identified clients and who each last
//! exchanged an event with) and `GET /v1/media` (the session media relay's streams). Both
//! read what the hub and the relay already hold, under their locks, and allocate only the
//! answer. Shapes: docs/PROTOCOL.md §8.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use loudsync_core::pairing::Transport;
use serde_json::{json, Value};

use crate::state::ServerState;

/// `GET /v1/pairing`: `{"apps": [{"app", "clients": [{clientId, role, transport, connected,
/// partner, active}]}]}`, every configured app (in the order given) with its identified
/// clients by client id; `{"apps": []}` without `--app`.
pub async fn pairing(State(app): State<Arc<ServerState>>) -> Response {
    Json(pairing_view(&app)).into_response()
}

/// The body of `GET /v1/pairing`.
pub fn pairing_view(app: &ServerState) -> Value {
    let Some(hub) = &app.pairing else {
        return json!({ "apps": [] });
    };
    let clients = hub.clients();
    let apps: Vec<Value> = hub
        .apps()
        .iter()
        .map(|spec| {
            let list: Vec<Value> = clients
                .iter()
                .filter(|c| c.app == spec.name)
                .map(|c| {
                    json!({
                        "clientId": c.client_id,
                        "role": c.role.as_str(),
                        "transport": match c.transport {
                            Transport::WebSocket => "ws",
                            Transport::Sse => "sse",
                        },
                        // The hub lists live connections only.
                        "connected": true,
                        "partner": c.partner,
                        "active": c.partner_live,
                    })
                })
                .collect();
            json!({ "app": spec.name, "clients": list })
        })
        .collect();
    json!({ "apps": apps })
}

/// `GET /v1/media`: `{"enabled": false}` without `--media-listen`; else `{"enabled": true,
/// "port", "streams": [{sessionId, publisher: {memberId, address} | null, subscribers:
/// [{memberId, address}], datagramsRelayed, framesLost, jitterMs: number | null}]}`, one
/// stream per open session, by session id.
pub async fn media(State(app): State<Arc<ServerState>>) -> Response {
    Json(media_view(&app)).into_response()
}

/// The body of `GET /v1/media`.
pub fn media_view(app: &ServerState) -> Value {
    let Some(relay) = &app.media else {
        return json!({ "enabled": false });
    };
    let endpoint = |(member, addr): &(String, std::net::SocketAddr)| json!({ "memberId": member, "address": addr.to_string() });
    let streams: Vec<Value> = relay
        .stream_stats()
        .iter()
        .map(|s| {
            json!({
                "sessionId": s.session_id,
                "publisher": s.publisher.as_ref().map(endpoint),
                "subscribers": s.subscribers.iter().map(endpoint).collect::<Vec<_>>(),
                "datagramsRelayed": s.datagrams_relayed,
                "framesLost": s.frames_lost,
                // Rounded to microseconds: what a person reads.
                "jitterMs": s.jitter_ms.map(|j| (j * 1000.0).round() / 1000.0),
            })
        })
        .collect();
    json!({ "enabled": true, "port": relay.port(), "streams": streams })
}
