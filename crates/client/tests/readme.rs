//! The README's Rust snippets are code that compiles and works: the first (the quickstart) is
//! `examples/quickstart.rs`, word for word (`cargo test` builds the examples); the second (the
//! media stream through the session relay) is the code between the markers below, word for
//! word, compiled here and run against a real server with its relay on loopback.

use std::time::Duration;

use loudsync_client::ClientConfig;
use loudsync_core::media::initiator::Outcome;
use loudsync_server::{Server, ServerConfig};

/// The text of the `n`th (from 0) ```rust block of the README.
fn readme_rust_block(n: usize) -> &'static str {
    let readme = include_str!("../../../README.md");
    let block = readme
        .split("```rust\n")
        .nth(n + 1)
        .unwrap_or_else(|| panic!("README.md has a ```rust block number {n}"));
    &block[..block.find("```").expect("the block ends")]
}

#[test]
fn the_readme_snippet_is_the_compiled_quickstart_example() {
    assert_eq!(
        readme_rust_block(0),
        include_str!("../examples/quickstart.rs"),
        "README.md's first ```rust block must be crates/client/examples/quickstart.rs as it is"
    );
}

#[test]
fn the_readme_media_snippet_is_the_code_compiled_here() {
    let this_file = include_str!("readme.rs");
    let start = this_file
        .find("// README media snippet: begin\n")
        .expect("the begin marker")
        + "// README media snippet: begin\n".len();
    let len = this_file[start..]
        .find("// README media snippet: end\n")
        .expect("the end marker");
    assert_eq!(
        readme_rust_block(1),
        &this_file[start..start + len],
        "README.md's second ```rust block must be the media snippet of crates/client/tests/readme.rs"
    );
}

// README media snippet: begin
use loudsync_client::media::publisher::{publish, Published};
use loudsync_client::media::receiver::{receive, InitiatorConfig, Summary};
use loudsync_client::Client;
use loudsync_core::media::publisher::PublisherConfig;
use loudsync_protocol::media::StreamParams;

type Error = Box<dyn std::error::Error>;

/// Agreed by both ends, not carried in the handshake: 808 kbps at 50 fps in datagrams of at
/// most 1000 bytes (2020-byte frames, each sent as 1000 + 993 + 27 bytes).
fn params() -> StreamParams {
    StreamParams::new(808_000, 50, 1000).expect("valid settings")
}

/// A member (not the host): receive `frames` frames of the session's stream from the relay.
async fn subscribe(member: &Client, frames: u64) -> Result<Summary, Error> {
    let grant = member.media_token().await?; // role Subscribe: a member's token
    let relay = member.relay_address(&grant).await?; // the server's IP, the grant's port
    let stream = grant.stream().ok_or("no stream id")?; // the session id
    let mut config = InitiatorConfig::new(stream, params(), 50, Some(frames));
    config.media_token = grant.media_token();
    let received = receive(relay, config, |frame| println!("{}", frame.csv_row())).await?;
    Ok(received.summary)
}

/// The host: publish `frames` frames of the synthetic pattern, paced at 50 a second.
async fn publish_synthetic(host: &Client, frames: u64) -> Result<Published, Error> {
    let grant = host.media_token().await?; // role Publish: the host's token
    let relay = host.relay_address(&grant).await?;
    let stream = grant.stream().ok_or("no stream id")?;
    let token = grant.media_token().ok_or("no token")?;
    let config = PublisherConfig::new(stream, token, params(), 50, Some(frames));
    Ok(publish(relay, config).await?.finished().await?)
}
// README media snippet: end

#[tokio::test]
async fn the_readme_media_snippet_streams_from_the_host_through_the_relay_to_a_member() {
    const WAIT: Duration = Duration::from_secs(10);
    const FRAMES: u64 = 25; // half a second at 50 fps
    let server = Server::bind(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        media_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let url = format!("ws://{}/", server.local_addr());
    let (host, _host_events) =
        Client::connect(ClientConfig::host(&url, "party", "Party", "mac", "Mac"))
            .await
            .unwrap();
    let (member, _member_events) =
        Client::connect(ClientConfig::member(&url, "party", "phone", "Phone"))
            .await
            .unwrap();
    let relay = server.state().media.clone().expect("the relay is on");

    // The member subscribes first (a subscriber sees the stream from the moment it
    // confirmed); the host publishes once it has.
    let (summary, published) = tokio::time::timeout(WAIT, async {
        tokio::join!(subscribe(&member, FRAMES), async {
            while relay.subscribers("party") < 1 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            publish_synthetic(&host, FRAMES).await
        })
    })
    .await
    .expect("the stream ends in time");
    let (summary, published) = (summary.unwrap(), published.unwrap());
    assert_eq!(
        published,
        Published {
            outcome: Some(Outcome::Finished),
            sent_frames: FRAMES
        }
    );
    assert_eq!(
        (
            summary.expected,
            summary.success,
            summary.dropped,
            summary.duplicate
        ),
        (FRAMES, FRAMES, 0, 0),
        "{summary:?}"
    );
    host.leave().await;
    member.leave().await;
    server.shutdown().await;
}
