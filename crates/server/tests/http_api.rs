//! The HTTP surface against the real server: health, metrics, the session admin API, its
//! access rule, and the WebSocket endpoints' answers to plain HTTP.

mod common;

use common::*;
use loudsync_protocol::close_code;
use serde_json::{json, Value};

#[tokio::test]
async fn healthz_and_metrics() {
    let server = start().await;
    let base = http(&server);
    let r = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(r.status(), 200);
    let (_c, _, _) = join(server.local_addr(), "m", "h", "host").await;
    let r = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    for name in [
        "loudsync_connections",
        "loudsync_sessions",
        "loudsync_joins_total",
        "loudsync_frames_received_total",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
}

#[tokio::test]
async fn create_get_list_and_join_a_session_created_over_http() {
    let server = start().await;
    let base = http(&server);
    let (status, created) = post(
        &base,
        json!({"name": "Friday", "id": "fri-1", "maxMembers": 3, "hostDeviceId": "h"}),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(
        created,
        json!({"id": "fri-1", "name": "Friday", "maxMembers": 3, "hostId": null,
               "passwordProtected": false, "members": []})
    );

    // A generated id when none is given.
    let (status, generated) = post(&base, json!({"name": "Auto"})).await;
    assert_eq!(status, 201);
    assert_eq!(generated["id"].as_str().unwrap().len(), 6);
    assert_eq!(generated["maxMembers"], 10);

    // The host joins it; it keeps the HTTP name and capacity.
    let (mut host, w, _) = join(server.local_addr(), "fri-1", "h", "host").await;
    assert_eq!(w["sessionInfo"]["name"], "Friday");
    let host_id = w["clientId"].as_str().unwrap().to_string();
    let (_guest, gw, _) = join(server.local_addr(), "fri-1", "g", "client").await;
    host.recv_type("member_joined").await;

    let got: Value = reqwest::get(format!("{base}/v1/sessions/fri-1"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["hostId"], host_id);
    assert_eq!(got["maxMembers"], 3);
    let ids: Vec<_> = got["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    assert_eq!(ids, vec![json!(host_id), gw["clientId"].clone()]);
    assert_eq!(got["members"][0]["isHost"], true);

    let list: Value = reqwest::get(format!("{base}/v1/sessions"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<_> = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&"fri-1".to_string()));

    let r = reqwest::get(format!("{base}/v1/sessions/nope"))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "session_not_found"
    );
}

#[tokio::test]
async fn members_may_wait_in_an_http_session_before_the_host() {
    let server = start().await;
    let base = http(&server);
    post(
        &base,
        json!({"name": "Lobby", "id": "lobby", "hostDeviceId": "h"}),
    )
    .await;
    let (mut early, w, _) = join(server.local_addr(), "lobby", "early", "client").await;
    assert_eq!(w["sessionInfo"]["hostId"], Value::Null);
    let (_host, hw, hl) = join(server.local_addr(), "lobby", "h", "host").await;
    assert_eq!(hl["members"][0]["id"], hw["clientId"], "host listed first");
    let joined = early.recv_type("member_joined").await;
    assert_eq!(joined["member"]["isHost"], true);
}

#[tokio::test]
async fn create_errors() {
    let server = start().await;
    let base = http(&server);
    post(&base, json!({"name": "A", "id": "dup"})).await;
    let (status, body) = post(&base, json!({"name": "B", "id": "dup"})).await;
    assert_eq!(status, 409);
    assert_eq!(body["code"], "session_exists");
    for bad in [
        json!({"id": "x"}),
        json!({"name": ""}),
        json!({"name": "x", "maxMembers": 0}),
        json!({"name": "x", "id": "has space"}),
        json!({"name": "x", "colour": "red"}),
    ] {
        let (status, body) = post(&base, bad.clone()).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(body["code"], "invalid_request");
        assert!(body["message"].as_str().unwrap().len() > 5);
    }
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/sessions"))
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn delete_closes_the_session_for_every_member() {
    let server = start().await;
    let base = http(&server);
    let (mut clients, _) = party(server.local_addr(), "doomed", 2).await;
    let r = reqwest::Client::new()
        .delete(format!("{base}/v1/sessions/doomed"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    for c in clients.iter_mut() {
        let (msgs, end) = c.recv_end().await;
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        assert_eq!(msgs[0]["type"], "session_closed");
        assert!(msgs[0]["reason"]
            .as_str()
            .unwrap()
            .contains("administrator"));
        assert!(matches!(end, Ended::Close(close_code::NORMAL, _)));
    }
    let r = reqwest::get(format!("{base}/v1/sessions/doomed"))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = reqwest::Client::new()
        .delete(format!("{base}/v1/sessions/doomed"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn admin_token_is_required_when_configured() {
    let mut config = test_config();
    config.admin_token = Some("s3cret".into());
    let server = start_with(config).await;
    let base = http(&server);
    let client = reqwest::Client::new();
    let r = client
        .get(format!("{base}/v1/sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client
        .get(format!("{base}/v1/sessions"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client
        .get(format!("{base}/v1/sessions"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Health and metrics stay open.
    assert_eq!(
        client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn websocket_paths_answer_plain_http_with_426() {
    let server = start().await;
    let base = http(&server);
    for path in ["/", "/ws"] {
        let r = reqwest::get(format!("{base}{path}")).await.unwrap();
        assert_eq!(r.status(), 426, "{path}");
    }
}
