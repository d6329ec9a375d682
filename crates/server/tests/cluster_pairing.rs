//! Controller/responder pairing (issue 12) across the nodes of a cluster (issue 16): three
//! in-process nodes `a`, `b`, `c` with the pairing test apps over one real `redis-server`.
//!
//! What is checked: a WebSocket controller on one node and a WebSocket responder on another
//! identify and exchange events both ways, in order; an SSE + `sendevent/` controller on one
//! node and a WebSocket responder on another do too; one connection per client id holds across
//! nodes (`releasedByOther` for the old connection on another node, `clientIdInUse` for the
//! same id in another app); a client that leaves on one node is simply gone for its partner on
//! another (events to it are dropped, its id is free again), as on one node; and when the node
//! running the cluster's pairing relay shuts down, the pairing connections on the other nodes
//! are closed 1012 (WebSocket) or ended (SSE), and clients that reconnect pair again through
//! the relay's new node; the same when its lease is lost (as when its node dies and the lease
//! expires), and when Redis comes back empty. Every node's `GET /v1/pairing` lists the relay's clients. `clientid/` answers from any node without handing out an id twice.
//!
//! Nodes use a 900 ms lease and a 50 ms poll; every wait is bounded, nothing sleeps to assert
//! timing.

mod common;
#[path = "common/redis.rs"]
mod redis_harness;

use std::time::Duration;

use common::pairing::*;
use common::*;
use loudsync_server::{Server, ServerConfig};
use redis_harness::{RedisOptions, RedisServer};
use serde_json::{json, Value};

/// The lease of every node in these tests.
const LEASE: Duration = Duration::from_millis(900);

/// Node `id` on the Redis at `url`, with the pairing test apps.
fn node_config(url: &str, id: &str) -> ServerConfig {
    ServerConfig {
        redis: Some(url.to_string()),
        node_id: Some(id.to_string()),
        lease: LEASE,
        cluster_poll: Duration::from_millis(50),
        ..pairing_config()
    }
}

/// A Redis and three nodes `a`, `b`, `c` on it; `a` binds first, so it runs the relay.
async fn cluster() -> (RedisServer, Vec<Server>) {
    let redis = RedisServer::start(RedisOptions::default());
    let mut nodes = Vec::new();
    for id in ["a", "b", "c"] {
        nodes.push(
            Server::bind(node_config(&redis.url(), id))
                .await
                .expect("a node binds"),
        );
    }
    (redis, nodes)
}

/// A `cr_event` frame with parameters.
fn event_with(recipient: &str, event_type: &str, param: &str) -> String {
    json!({
        "type": "cr_event",
        "recipientClientId": recipient,
        "eventType": event_type,
        "eventParams": [param],
    })
    .to_string()
}

#[tokio::test]
async fn a_controller_and_a_responder_on_two_nodes_pair_and_exchange_events_in_order() {
    let (_redis, nodes) = cluster().await;
    let (a, b) = (nodes[0].local_addr(), nodes[1].local_addr());
    // The responder on b, the controller on c (neither runs the relay).
    let mut rsp = ws_identified(b, "alpha", "responder", "111111").await;
    let mut ctl = ws_identified(nodes[2].local_addr(), "alpha", "controller", "222222").await;
    ctl.send_text(&event_frame("111111", "ping")).await;
    assert_eq!(
        recv_event(&mut rsp).await,
        server_event("ping", "", &[], false, false, true, None, "222222")
    );
    rsp.send_text(&event_frame("222222", "pong")).await;
    assert_eq!(
        recv_event(&mut ctl).await,
        server_event("pong", "", &[], false, false, true, None, "111111")
    );
    // A burst each way arrives whole and in order.
    for i in 0..20 {
        ctl.send_text(&event_with("111111", "step", &i.to_string()))
            .await;
        rsp.send_text(&event_with("222222", "back", &i.to_string()))
            .await;
    }
    for i in 0..20 {
        let n = i.to_string();
        assert_eq!(
            recv_event(&mut rsp).await,
            server_event("step", "", &[&n], false, false, true, None, "222222")
        );
        assert_eq!(
            recv_event(&mut ctl).await,
            server_event("back", "", &[&n], false, false, true, None, "111111")
        );
    }
    // A controller on the relay's own node pairs with the responder on b as well.
    let mut ctl2 = ws_identified(a, "alpha", "controller", "333333").await;
    ctl2.send_text(&event_frame("111111", "ping")).await;
    assert_eq!(
        recv_event(&mut rsp).await,
        server_event("ping", "", &[], false, false, true, None, "333333")
    );
    // Blocking is the relay's, whatever the nodes: a ping to the same role is answered by
    // the server's reject.
    ctl2.send_text(&event_frame("222222", "ping")).await;
    assert_eq!(
        recv_event(&mut ctl2).await,
        ws_reject("invalidPartnerRole", "222222")
    );
    rsp.expect_silence(Duration::from_millis(200)).await;
    ctl.expect_silence(Duration::from_millis(100)).await;
    // Every node's admin view shows the relay's clients (as its owner last wrote them).
    let expected = json!([
        {"clientId": "111111", "role": "responder", "transport": "ws", "connected": true, "partner": "333333", "active": true},
        {"clientId": "222222", "role": "controller", "transport": "ws", "connected": true, "partner": "111111", "active": true},
        {"clientId": "333333", "role": "controller", "transport": "ws", "connected": true, "partner": "111111", "active": true},
    ]);
    for node in &nodes {
        pairing_view_until(node, |alpha| Value::Array(alpha.clone()) == expected).await;
    }
}

/// Polls `GET /v1/pairing` of `node` until the clients of app `alpha` satisfy `ok`, within a
/// bound; returns them.
async fn pairing_view_until(node: &Server, ok: impl Fn(&Vec<Value>) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let view: Value = reqwest::get(format!("http://{}/v1/pairing", node.local_addr()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let alpha = view["apps"][0]["clients"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if ok(&alpha) {
            return Value::Array(alpha);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the admin view never showed it: {view}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_sse_controller_on_one_node_and_a_websocket_responder_on_another_pair() {
    let (_redis, nodes) = cluster().await;
    let (a, c) = (nodes[0].local_addr(), nodes[2].local_addr());
    let mut rsp = ws_identified(a, "alpha", "responder", "222222").await;
    let (mut ctl, sid) = Sse::identified(c, "alpha", "111111", "controller").await;
    assert_eq!(
        send_event(
            c,
            "alpha",
            "111111",
            "controller",
            "222222",
            "ping,,false,false,true,NaN,NaN,000000"
        )
        .await,
        204
    );
    assert_eq!(
        recv_event(&mut rsp).await,
        server_event("ping", "", &[], false, false, true, None, "111111")
    );
    rsp.send_text(&event_with("111111", "pong", "p1")).await;
    assert_eq!(
        ctl.next_block().await,
        sse_bytes("crEvent", "pong,,false,false,true,NaN,NaN,222222,p1")
    );
    // `alive` naming the stream is echoed, through the relay on another node.
    let alive = SendReq {
        app: "alpha",
        id: "111111",
        role: "controller",
        token: "tok",
        to: "111111",
        kind: "alive",
        data: &sid,
    };
    assert_eq!(alive.get(c).await, 204);
    assert_eq!(ctl.next_block().await, sse_bytes("alive", &sid));
    // The sendevent may go to any node: the relay is one.
    assert_eq!(
        send_event(
            nodes[1].local_addr(),
            "alpha",
            "111111",
            "controller",
            "222222",
            "go,,false,true,false,42,NaN,000000"
        )
        .await,
        204
    );
    assert_eq!(
        recv_event(&mut rsp).await,
        server_event("go", "", &[], false, true, false, Some(42), "111111")
    );
    // `close` ends the stream with `closed`.
    let close = SendReq {
        kind: "close",
        ..alive
    };
    assert_eq!(close.get(c).await, 204);
    assert_eq!(ctl.next_block().await, sse_bytes("closed", &sid));
    ctl.expect_end().await;
}

#[tokio::test]
async fn one_connection_per_client_id_holds_across_nodes() {
    let (_redis, nodes) = cluster().await;
    let (a, b, c) = (
        nodes[0].local_addr(),
        nodes[1].local_addr(),
        nodes[2].local_addr(),
    );
    let mut old = ws_identified(b, "alpha", "responder", "111111").await;
    // The same id in the same app on another node replaces it.
    let mut new = ws_identified(c, "alpha", "responder", "111111").await;
    let (seen, end) = old.recv_end().await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        without_timestamp(seen[0].clone()),
        json!({"type": "cr_aborted", "reason": "releasedByOther"})
    );
    assert_eq!(end, Ended::Close(1000, "releasedByOther".into()));
    // The same id in another app, on a third node, is refused; the live one is untouched.
    let mut other = ws_open(a, "beta").await;
    other
        .send_text(&identify_frame(
            Some("responder"),
            Some("111111"),
            Some("tok"),
        ))
        .await;
    let (seen, end) = other.recv_end().await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        without_timestamp(seen[0].clone()),
        json!({"type": "cr_aborted", "reason": "clientIdInUse"})
    );
    assert_eq!(end, Ended::Close(1000, "identify rejected".into()));
    let mut ctl = ws_identified(a, "alpha", "controller", "222222").await;
    ctl.send_text(&event_frame("111111", "hello")).await;
    assert_eq!(
        recv_event(&mut new).await,
        server_event("hello", "", &[], false, false, true, None, "222222")
    );
    // `clientid/` on any node hands out ids the relay never gave twice, and never a
    // connected one.
    let mut ids = std::collections::BTreeSet::new();
    for node in [a, b, c, a, b, c] {
        let body = reqwest::get(format!("http://{node}/crsocket/alpha/clientid/"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let id = body
            .strip_prefix("<clientId value='")
            .and_then(|rest| rest.strip_suffix("'/>\n"))
            .unwrap_or_else(|| panic!("{body:?}"))
            .to_string();
        assert!(
            id.len() == 6 && id.bytes().all(|b| b.is_ascii_digit()),
            "{body:?}"
        );
        assert!(id != "111111" && id != "222222");
        assert!(ids.insert(id), "an id handed out twice");
    }
}

#[tokio::test]
async fn a_client_leaving_on_one_node_is_gone_for_its_partner_on_another() {
    let (_redis, nodes) = cluster().await;
    let (b, c) = (nodes[1].local_addr(), nodes[2].local_addr());
    let mut ctl = ws_identified(b, "alpha", "controller", "222222").await;
    let mut rsp = ws_identified(c, "alpha", "responder", "111111").await;
    ctl.send_text(&event_frame("111111", "ping")).await;
    recv_event(&mut rsp).await;
    // The responder leaves: on one node its partner is told nothing, and events to it are
    // dropped (no reject either: the relay keeps no partner table).
    drop(rsp);
    // Once the relay has forgotten it (bounded wait), its id is free: a new responder of the
    // same id identifies on the controller's own node and gets no `releasedByOther` race.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut rsp2 = loop {
        ctl.send_text(&event_frame("111111", "ping")).await;
        ctl.expect_silence(Duration::from_millis(100)).await;
        let mut probe = ws_open(nodes[0].local_addr(), "beta").await;
        probe
            .send_text(&identify_frame(
                Some("responder"),
                Some("111111"),
                Some("tok"),
            ))
            .await;
        // In another app the id is refused while it is live, and welcomed once it is free.
        let first = probe.recv().await;
        if first["type"] == "cr_welcome" {
            break probe;
        }
        assert_eq!(first["reason"], "clientIdInUse", "{first}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the relay never forgot the responder that left"
        );
    };
    // The controller's ping to the id now live in another app is answered appIdMismatch.
    ctl.send_text(&event_frame("111111", "ping")).await;
    assert_eq!(
        recv_event(&mut ctl).await,
        ws_reject("appIdMismatch", "111111")
    );
    rsp2.expect_silence(Duration::from_millis(100)).await;
    // Nothing was ever sent to the controller about the leaving itself.
    ctl.expect_silence(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn the_relay_node_shutting_down_closes_pairing_connections_1012_and_pairing_resumes_elsewhere(
) {
    let (_redis, mut nodes) = cluster().await;
    let (b, c) = (nodes[1].local_addr(), nodes[2].local_addr());
    let mut ctl = ws_identified(b, "alpha", "controller", "222222").await;
    let mut rsp = ws_identified(c, "alpha", "responder", "111111").await;
    let (mut sse, _) = Sse::identified(c, "beta", "333333", "controller").await;
    ctl.send_text(&event_frame("111111", "ping")).await;
    recv_event(&mut rsp).await;
    // Node a runs the relay (it bound first); it shuts down and releases it.
    nodes.remove(0).shutdown().await;
    for client in [&mut ctl, &mut rsp] {
        let (_, end) = tokio::time::timeout(Duration::from_secs(5), client.recv_end())
            .await
            .expect("closed within the bound");
        assert_eq!(
            end,
            Ended::Close(1012, "pairing relay moved: reconnect".into())
        );
    }
    sse.expect_end().await;
    // Reconnected (to any node), they pair again through the relay's new node.
    let mut rsp = ws_identified(b, "alpha", "responder", "111111").await;
    let mut ctl = ws_identified(c, "alpha", "controller", "222222").await;
    ctl.send_text(&event_frame("111111", "ping")).await;
    assert_eq!(
        recv_event(&mut rsp).await,
        server_event("ping", "", &[], false, false, true, None, "222222")
    );
    rsp.send_text(&event_frame("222222", "pong")).await;
    assert_eq!(
        recv_event(&mut ctl).await,
        server_event("pong", "", &[], false, false, true, None, "111111")
    );
}

#[tokio::test]
async fn a_relay_lease_lost_as_when_its_node_dies_closes_pairing_connections_1012_everywhere() {
    let (redis, nodes) = cluster().await;
    let (a, b) = (nodes[0].local_addr(), nodes[1].local_addr());
    let mut ctl = ws_identified(a, "alpha", "controller", "222222").await;
    let mut rsp = ws_identified(b, "alpha", "responder", "111111").await;
    let mut raw = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let owner: String = redis::cmd("GET")
        .arg("ls:pairing:owner")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(
        owner.starts_with("a|1|"),
        "the first node to bind runs the relay: {owner}"
    );
    // The lease vanishes, as when its node stops renewing it and it expires: its node finds
    // its renewal refused and stops, some node claims the relay under a new epoch, and every
    // node closes the pairing connections of the old one.
    redis::cmd("DEL")
        .arg("ls:pairing:owner")
        .query_async::<()>(&mut raw)
        .await
        .unwrap();
    for client in [&mut ctl, &mut rsp] {
        let (_, end) = tokio::time::timeout(Duration::from_secs(5), client.recv_end())
            .await
            .expect("closed within the bound");
        assert_eq!(
            end,
            Ended::Close(1012, "pairing relay moved: reconnect".into())
        );
    }
    let owner: String = redis::cmd("GET")
        .arg("ls:pairing:owner")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(owner.split('|').nth(1), Some("2"), "a new epoch: {owner}");
    let mut rsp = ws_identified(a, "alpha", "responder", "111111").await;
    let mut ctl = ws_identified(nodes[2].local_addr(), "alpha", "controller", "222222").await;
    ctl.send_text(&event_frame("111111", "ping")).await;
    assert_eq!(
        recv_event(&mut rsp).await,
        server_event("ping", "", &[], false, false, true, None, "222222")
    );
}

#[tokio::test]
async fn redis_restarted_empty_closes_pairing_connections_1012_and_pairing_works_again() {
    let (mut redis, nodes) = cluster().await;
    let (b, c) = (nodes[1].local_addr(), nodes[2].local_addr());
    let mut ctl = ws_identified(b, "alpha", "controller", "222222").await;
    let mut rsp = ws_identified(c, "alpha", "responder", "111111").await;
    // Redis comes back with nothing: the relay's epochs count from 1 again, and the new
    // lease is still told apart from the old one.
    redis.stop();
    redis.start_again();
    for client in [&mut ctl, &mut rsp] {
        let (_, end) = tokio::time::timeout(Duration::from_secs(10), client.recv_end())
            .await
            .expect("closed within the bound");
        assert_eq!(
            end,
            Ended::Close(1012, "pairing relay moved: reconnect".into())
        );
    }
    let mut rsp = ws_identified(c, "alpha", "responder", "111111").await;
    let mut ctl = ws_identified(b, "alpha", "controller", "222222").await;
    ctl.send_text(&event_frame("111111", "ping")).await;
    assert_eq!(
        recv_event(&mut rsp).await,
        server_event("ping", "", &[], false, false, true, None, "222222")
    );
}
