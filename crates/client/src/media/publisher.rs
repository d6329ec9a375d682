//! Publishing a session's media stream to the server's relay (issue 13 §9, R7): the tokio
//! driver around the sans-IO publisher of `loudsync_core::media::publisher`.
//!
//! [`relay_address`] finds the relay: the server URL's host with the port of the member's
//! [`crate::MediaGrant`] ([`crate::Client::relay_address`] prefers the address the client's
//! WebSocket actually reached).

use std::io;
use std::net::SocketAddr;

use http::Uri;

/// The relay's UDP address for a server at `server_url` (`ws://HOST:PORT/...` or `wss://...`)
/// whose `media_token` reply named `port`: the URL's host (an IP address as written, a name
/// resolved, its first address taken) with `port`. An error of kind `InvalidInput` for a URL
/// that is not `ws://` or `wss://` with a host; DNS errors as the resolver gives them.
pub async fn relay_address(server_url: &str, port: u16) -> io::Result<SocketAddr> {
    let not_a_url = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{server_url}` is not a ws:// or wss:// URL with a host"),
        )
    };
    let uri: Uri = server_url.parse().map_err(|_| not_a_url())?;
    if !matches!(uri.scheme_str(), Some("ws" | "wss")) {
        return Err(not_a_url());
    }
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(not_a_url)?
        .trim_start_matches('[')
        .trim_end_matches(']');
    let first = tokio::net::lookup_host((host, port)).await?.next();
    first.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("`{host}` resolved to no address"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_relay_is_the_urls_host_with_the_grants_port() {
        for (url, want) in [
            ("ws://127.0.0.1:8080/", "127.0.0.1:40001"),
            ("wss://127.0.0.1/ws", "127.0.0.1:40001"),
            ("ws://[::1]:8080/", "[::1]:40001"),
        ] {
            let got = relay_address(url, 40001).await.unwrap();
            assert_eq!(got, want.parse::<SocketAddr>().unwrap(), "{url}");
        }
        let localhost = relay_address("ws://localhost:8080/", 40001).await.unwrap();
        assert!(localhost.ip().is_loopback() && localhost.port() == 40001);
    }

    #[tokio::test]
    async fn a_url_that_is_not_a_websocket_url_is_invalid_input() {
        for url in [
            "http://127.0.0.1:8080/",
            "127.0.0.1:8080",
            "ws:///path",
            "not a url",
        ] {
            let error = relay_address(url, 1).await.unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{url}");
        }
    }
}
