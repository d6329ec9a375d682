//! Join a session and print what happens in it; every line typed on stdin is sent to the
//! other members as an application message.
//!
//! ```sh
//! cargo run -p loudsync-client --example follow -- ws://127.0.0.1:8080/ party "My laptop"
//! ```

use loudsync_client::{Client, ClientConfig, Event};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "ws://127.0.0.1:8080/".into());
    let session = args.next().unwrap_or_else(|| "party".into());
    let name = args.next().unwrap_or_else(|| "example".into());
    let device_id = format!("example-{}", std::process::id());
    let (client, mut events) =
        Client::connect(ClientConfig::member(url, session, device_id, name)).await?;
    println!("joined as {}", client.client_id().unwrap_or_default());
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(Event::MemberJoined(m)) => println!("+ {} ({})", m.name, m.id),
                Some(Event::MemberLeft { member_id, reason }) => println!("- {member_id} ({reason:?})"),
                Some(Event::Message { from, data }) => println!("{from}: {data}"),
                Some(Event::StateChanged(s)) => println!("[{}]", s.as_str()),
                Some(Event::Kicked { reason }) | Some(Event::SessionClosed { reason }) => {
                    println!("session over: {reason}");
                    break;
                }
                Some(_) => {}
                None => break,
            },
            line = lines.next_line() => match line? {
                Some(text) => {
                    if let Err(e) = client.send(serde_json::json!(text)) {
                        eprintln!("not sent: {e}");
                    }
                }
                None => break,
            },
        }
    }
    client.leave().await;
    Ok(())
}
