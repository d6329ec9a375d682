//! Opening a socket to the server: the URL checked once, then for each connection DNS, TCP,
//! TLS for `wss://` (rustls with the ring provider, checked against [`TlsRoots`]) and the
//! WebSocket upgrade, each failure worded for a person.

use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio::net::TcpStream;
use tokio_websockets::{ClientBuilder, Connector, MaybeTlsStream, WebSocketStream};

use crate::config::TlsRoots;

/// The socket the driver reads and writes.
pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long one connection (DNS, TCP, TLS and upgrade together) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A checked server address: where to connect and how.
pub(crate) struct Target {
    uri: Uri,
    host: String,
    port: u16,
    /// `Some` for `wss://`.
    tls: Option<Connector>,
}

impl Target {
    /// Checks `url` and, for `wss://`, loads the trusted authorities. The error is a sentence
    /// for the user: nothing here is worth retrying.
    pub(crate) fn new(url: &str, roots: &TlsRoots) -> Result<Target, String> {
        let not_a_url =
            || format!("`{url}` is not a ws:// or wss:// URL (write e.g. ws://127.0.0.1:8080/)");
        let uri: Uri = url.parse().map_err(|_| not_a_url())?;
        let secure = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            _ => return Err(not_a_url()),
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(not_a_url)?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let tls = if secure {
            Some(Connector::Rustls(tls_connector(roots)?))
        } else {
            None
        };
        Ok(Target {
            uri,
            host,
            port,
            tls,
        })
    }

    /// One connection, upgraded; the error says which step failed.
    pub(crate) async fn connect(&self) -> Result<Ws, String> {
        match tokio::time::timeout(CONNECT_TIMEOUT, self.connect_now()).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "no connection to {}:{} within {CONNECT_TIMEOUT:?}",
                self.host, self.port
            )),
        }
    }

    async fn connect_now(&self) -> Result<Ws, String> {
        let (host, port) = (self.host.as_str(), self.port);
        let addrs: Vec<_> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("cannot resolve `{host}`: {e}"))?
            .collect();
        let mut last = format!("`{host}` resolved to no address");
        let mut tcp = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        let tcp = tcp.ok_or(last)?;
        let _ = tcp.set_nodelay(true);
        let stream = match &self.tls {
            None => MaybeTlsStream::Plain(tcp),
            Some(connector) => connector
                .wrap(host, tcp)
                .await
                .map_err(|e| format!("TLS with {host}:{port} failed: {e}"))?,
        };
        let (ws, _) = ClientBuilder::from_uri(self.uri.clone())
            .connect_on(stream)
            .await
            .map_err(|e| format!("WebSocket upgrade at {} failed: {e}", self.uri))?;
        Ok(ws)
    }
}

/// A rustls connector trusting `roots`, with the ring provider named explicitly (so the choice
/// never depends on which provider features other crates in the build enable).
fn tls_connector(roots: &TlsRoots) -> Result<tokio_rustls::TlsConnector, String> {
    let mut store = rustls::RootCertStore::empty();
    match roots {
        TlsRoots::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default();
                return Err(format!(
                    "no system root certificates found{why}: install the ca-certificates \
                     package, or give the server's CA as a PEM file"
                ));
            }
        }
        TlsRoots::Pem(pem) => {
            let certs = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("the CA file is not PEM certificates: {e}"))?;
            if certs.is_empty() {
                return Err("the CA file holds no PEM CERTIFICATE block".into());
            }
            for cert in certs {
                store
                    .add(cert)
                    .map_err(|e| format!("the CA file holds an unusable certificate: {e}"))?;
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(store)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ws_and_wss_urls_with_a_host_are_accepted() {
        for bad in [
            "notaurl",
            "http://x/",
            "127.0.0.1:8080",
            "ws:///",
            "",
            "ws://",
        ] {
            let err = Target::new(bad, &TlsRoots::System).err().expect(bad);
            assert!(err.contains("is not a ws:// or wss:// URL"), "{bad}: {err}");
        }
        let t = Target::new("ws://127.0.0.1:9/", &TlsRoots::System).unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.tls.is_none()),
            ("127.0.0.1", 9, true)
        );
        let t = Target::new("ws://[::1]/ws", &TlsRoots::System).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 80));
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused_up_front() {
        let err = Target::new("wss://x/", &TlsRoots::Pem(b"hello".to_vec()))
            .err()
            .unwrap();
        assert!(err.contains("no PEM CERTIFICATE"), "{err}");
        let garbled = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let err = Target::new("wss://x/", &TlsRoots::Pem(garbled.to_vec()))
            .err()
            .unwrap();
        assert!(err.contains("CA file"), "{err}");
        // A ws:// URL never reads the roots.
        assert!(Target::new("ws://x/", &TlsRoots::Pem(Vec::new())).is_ok());
    }
}
