//! The README's quickstart, compiled by `cargo test`: join session `party` on a local server,
//! send one message, print who joins and what they send, until the session ends.

use loudsync_client::{Client, ClientConfig, Event};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = ClientConfig::member("ws://127.0.0.1:8080/", "party", "phone-7", "Sara's phone");
    let (client, mut events) = Client::connect(config).await?; // returns after `welcome`
    client.send(serde_json::json!({"track": "Blue in Green"}))?;
    while let Some(event) = events.recv().await {
        match event {
            Event::MemberJoined(m) => println!("{} joined", m.name),
            Event::Message { from, data } => println!("{from}: {data}"),
            Event::Kicked { .. } | Event::SessionClosed { .. } => break,
            _ => {}
        }
    }
    client.leave().await;
    Ok(())
}
