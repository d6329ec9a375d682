//! The state and handoff layer's metrics, read from `/metrics` after real frames: accepted
//! state changes, changes of host by reason, failed handoffs by reason. Alone in its binary,
//! so the process-wide counters start at zero and the values are exact.

mod common;

use common::*;
use serde_json::json;

/// The value of the sample `name` (with its labels, as Prometheus writes it); 0 if absent.
fn sample(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

async fn send(c: &mut Client, v: serde_json::Value) {
    c.send_text(&v.to_string()).await
}

/// The host (`clients[0]`) asks `target` (`clients[1]`) to take control; it answers `answer`.
async fn ask_and_answer(clients: &mut [Client], target: &str, answer: &str) {
    send(
        &mut clients[0],
        json!({"type": "handoff_request", "targetId": target}),
    )
    .await;
    let prompt = clients[1].recv_type("handoff_request").await;
    let id = prompt["handoffId"].as_str().unwrap().to_string();
    send(&mut clients[1], json!({"type": answer, "handoffId": id})).await;
}

#[tokio::test]
async fn state_changes_host_changes_and_failed_handoffs_are_counted() {
    let server = start().await;
    let (mut clients, ids) = party(server.local_addr(), "metrics", 1).await;
    send(
        &mut clients[0],
        json!({"type": "state_set", "state": {"a": 1}}),
    )
    .await;
    for c in clients.iter_mut() {
        c.recv_type("state").await;
    }
    // A decline, then an accepted handoff.
    ask_and_answer(&mut clients, &ids[1], "handoff_decline").await;
    clients[0].recv_until("handoff_failed").await;
    ask_and_answer(&mut clients, &ids[1], "handoff_accept").await;
    for c in clients.iter_mut() {
        c.recv_until("host_changed").await;
    }
    // A target nobody is: no candidate.
    send(
        &mut clients[1],
        json!({"type": "handoff_request", "targetId": "c_nobody"}),
    )
    .await;
    clients[1].recv_until("handoff_failed").await;

    let metrics = reqwest::get(format!("{}/metrics", http(&server)))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        sample(&metrics, "loudsync_state_changes_total"),
        1,
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, r#"loudsync_host_changes_total{reason="handoff"}"#),
        1,
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            r#"loudsync_handoffs_failed_total{reason="declined"}"#
        ),
        1,
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            r#"loudsync_handoffs_failed_total{reason="no_candidate"}"#
        ),
        1,
        "{metrics}"
    );
}
