//! TLS on the server's port: a CA and a server certificate made here with rcgen, an HTTPS
//! `/healthz` and a WebSocket join over TLS (tokio-rustls trusting the test CA only), plain
//! HTTP refused on the TLS port, and the TLS handshake held to the request deadline.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{join_msg, test_config, unix_ms, WAIT};
use futures_util::{SinkExt, StreamExt};
use loudsync_protocol::encode_client;
use loudsync_server::{Server, ServerConfig};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_websockets::{ClientBuilder, Message};

/// A test CA and a server certificate it signed for `localhost` and `127.0.0.1`, written to
/// files as the server reads them.
struct Pki {
    ca: CertificateDer<'static>,
    cert: PathBuf,
    key: PathBuf,
    dir: PathBuf,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn pki(name: &str) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "LoudSync test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let dir = std::env::temp_dir().join(format!("loudsync-tls-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_path, key_path) = (dir.join("server.pem"), dir.join("server.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    Pki {
        ca: ca.der().clone(),
        cert: cert_path,
        key: key_path,
        dir,
    }
}

fn tls_config(pki: &Pki) -> ServerConfig {
    ServerConfig {
        tls_cert: Some(pki.cert.clone()),
        tls_key: Some(pki.key.clone()),
        ..test_config()
    }
}

/// A client that trusts the test CA only.
fn connector(pki: &Pki) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

async fn tls_connect(pki: &Pki, addr: SocketAddr) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(WAIT, connector(pki).connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("the server's certificate is valid for the test CA")
}

/// Reads until the server closes, within [`WAIT`].
async fn read_to_end<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("the server closes in time");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn https_healthz_with_a_certificate_from_a_test_ca() {
    let pki = pki("healthz");
    let server = Server::bind(tls_config(&pki)).await.unwrap();
    assert!(server.is_tls());
    let mut tls = tls_connect(&pki, server.local_addr()).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let response = read_to_end(&mut tls).await;
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.ends_with("\r\n\r\nok\n"), "{response}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_websocket_joins_over_tls() {
    let pki = pki("wss");
    let server = Server::bind(tls_config(&pki)).await.unwrap();
    let addr = server.local_addr();
    let tls = tls_connect(&pki, addr).await;
    let uri = format!("wss://localhost:{}/", addr.port());
    let (mut ws, _) = ClientBuilder::new()
        .uri(&uri)
        .unwrap()
        .connect_on(tls)
        .await
        .expect("WebSocket upgrade over TLS");
    let join = encode_client(&join_msg("tls-party", "host-dev", "host"), unix_ms()).unwrap();
    ws.send(Message::text(join)).await.unwrap();
    let mut types = Vec::new();
    while types.len() < 2 {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("an answer in time")
            .expect("open")
            .expect("valid frame");
        if let Some(text) = m.as_text() {
            let v: serde_json::Value = serde_json::from_str(text).unwrap();
            types.push(v["type"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(types, ["welcome", "member_list"]);
    // The session is there, as over clear text.
    assert!(server.state().registry.get("tls-party").is_some());
    server.shutdown().await;
}

#[tokio::test]
async fn plain_http_on_the_tls_port_gets_no_answer_in_clear_text() {
    let pki = pki("plain");
    let server = Server::bind(tls_config(&pki)).await.unwrap();
    let mut tcp = TcpStream::connect(server.local_addr()).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let response = read_to_end(&mut tcp).await;
    assert!(
        !response.contains("ok\n") && !response.starts_with("HTTP/1.1 200"),
        "served in clear text: {response:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_tls_handshake_that_never_starts_is_closed_at_the_request_timeout() {
    let pki = pki("slow");
    let config = ServerConfig {
        request_timeout: Duration::from_millis(300),
        ..tls_config(&pki)
    };
    let server = Server::bind(config).await.unwrap();
    let started = Instant::now();
    let mut tcp = TcpStream::connect(server.local_addr()).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(WAIT, tcp.read(&mut buf))
        .await
        .expect("closed by the server")
        .unwrap_or(0);
    let elapsed = started.elapsed();
    assert_eq!(n, 0, "closed without a word");
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_millis(1500),
        "closed after {elapsed:?}, not at the 300 ms request timeout"
    );
    // A good client right after is served.
    let mut tls = tls_connect(&pki, server.local_addr()).await;
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert!(read_to_end(&mut tls).await.ends_with("ok\n"));
    server.shutdown().await;
}
