//! Open a session as its host, list who joins, and kick anyone named "troll".
//!
//! ```sh
//! cargo run -p loudsync-client --example host -- ws://127.0.0.1:8080/ party "Friday night"
//! ```

use loudsync_client::{Client, ClientConfig, Event};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "ws://127.0.0.1:8080/".into());
    let session = args.next().unwrap_or_else(|| "party".into());
    let name = args.next().unwrap_or_else(|| "Example party".into());
    let config = ClientConfig::host(url, session, name, "example-host", "Example host");
    let (client, mut events) = Client::connect(config).await?;
    println!("hosting; press Ctrl-C to end the session");
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            event = events.recv() => match event {
                Some(Event::MemberJoined(m)) if m.name == "troll" => {
                    client.kick(&m.id, Some("no trolls"))?;
                }
                Some(Event::MemberJoined(m)) => println!("{} joined; {} here", m.name, client.members().len()),
                Some(Event::MemberLeft { member_id, .. }) => println!("{member_id} left"),
                Some(_) => {}
                None => return Ok(()),
            },
        }
    }
    client.close_session().await;
    Ok(())
}
