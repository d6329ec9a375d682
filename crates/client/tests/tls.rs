//! `wss://`: the SDK checks the server's certificate against a private CA made here with
//! rcgen, refuses a server its roots do not vouch for, and says which step failed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use loudsync_client::{Client, ClientConfig, ClientError, ConnectionState, TlsRoots};
use loudsync_protocol::{server::SessionInfo, ClientMessage, ServerMessage, Stamp};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_websockets::{Message, ServerBuilder};

/// A private CA and a server certificate it signed.
struct Pki {
    ca_pem: String,
    cert: CertificateDer<'static>,
    cert_pem: String,
    key_der: Vec<u8>,
    key_pem: String,
}

/// A new CA, and a certificate for `names` (DNS names or IP addresses) it signed.
fn pki(names: &[&str]) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(
        DnType::CommonName,
        format!("LoudSync test CA {}", fastrand::u64(..)),
    );
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .unwrap()
        .signed_by(&key, &ca_cert, &ca_key)
        .unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        cert: leaf.der().clone(),
        cert_pem: leaf.pem(),
        key_der: key.serialize_der(),
        key_pem: key.serialize_pem(),
    }
}

/// A stand-in `wss://` server on loopback presenting `pki`'s certificate: it welcomes each
/// client whose `join` decodes, then answers nothing more (the socket stays open).
async fn stand_in(pki: &Pki) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![pki.cert.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.key_der.clone())),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return; // the client refused our certificate
                };
                let (_, mut ws) = ServerBuilder::new().accept(tls).await.unwrap();
                let join = ws.next().await.unwrap().unwrap();
                let join = loudsync_protocol::decode(join.as_text().unwrap()).unwrap();
                assert!(matches!(join, ClientMessage::Join(_)), "{join:?}");
                let welcome = ServerMessage::Welcome {
                    client_id: "c_tls".into(),
                    session_info: Box::new(SessionInfo {
                        id: "s".into(),
                        name: "Secure".into(),
                        host_id: None,
                        host: None,
                    }),
                    device: Default::default(),
                    joined_at: 0,
                    resumable: false,
                    state: None,
                };
                let list = ServerMessage::MemberList { members: vec![] };
                for m in [welcome, list] {
                    let frame = loudsync_protocol::encode(&m, &Stamp::Now(1));
                    ws.send(Message::text(frame)).await.unwrap();
                }
                while let Some(Ok(_)) = ws.next().await {}
            });
        }
    });
    addr
}

fn member(url: String, roots: TlsRoots) -> ClientConfig {
    let mut c = ClientConfig::member(url, "s", "d", "d");
    // The stand-in speaks the plain protocol (`join` first, no resume handshake).
    c.resume = false;
    c.tls_roots = roots;
    c.join_timeout = Duration::from_secs(2);
    c
}

#[tokio::test]
async fn wss_with_a_private_ca_joins_by_name_and_by_address() {
    let pki = pki(&["localhost", "127.0.0.1"]);
    let addr = stand_in(&pki).await;
    for url in [
        format!("wss://localhost:{}/", addr.port()),
        format!("wss://127.0.0.1:{}/", addr.port()),
    ] {
        let roots = TlsRoots::Pem(pki.ca_pem.clone().into_bytes());
        let (client, _events) = Client::connect(member(url.clone(), roots))
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(client.state(), ConnectionState::Connected);
        assert_eq!(client.client_id().as_deref(), Some("c_tls"));
        drop(client); // the stand-in never closes: no waiting out the leave timeout
    }
}

#[tokio::test]
async fn a_ca_file_is_read_from_disk() {
    let pki = pki(&["localhost", "127.0.0.1"]);
    let addr = stand_in(&pki).await;
    let dir = std::env::temp_dir().join(format!("loudsync-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ca.pem");
    std::fs::write(&file, &pki.ca_pem).unwrap();
    let roots = TlsRoots::pem_file(&file).unwrap();
    let url = format!("wss://localhost:{}/", addr.port());
    let (client, _events) = Client::connect(member(url, roots)).await.unwrap();
    assert_eq!(client.state(), ConnectionState::Connected);
    let missing = TlsRoots::pem_file(dir.join("nope.pem")).unwrap_err();
    assert!(missing.to_string().contains("nope.pem"), "{missing}");
}

#[tokio::test]
async fn a_server_the_roots_do_not_vouch_for_is_refused() {
    let pki = pki(&["localhost", "127.0.0.1"]);
    let addr = stand_in(&pki).await;
    let url = format!("wss://localhost:{}/", addr.port());
    // Another CA entirely.
    let other = self::pki(&["localhost", "127.0.0.1"]);
    let err = Client::connect(member(
        url.clone(),
        TlsRoots::Pem(other.ca_pem.into_bytes()),
    ))
    .await
    .err()
    .expect("refused");
    let ClientError::Connect(reason) = &err else {
        panic!("{err:?}")
    };
    assert!(
        reason.starts_with("could not connect: TLS with localhost:")
            && reason.contains("invalid peer certificate: UnknownIssuer"),
        "{reason}"
    );
    // The system's roots do not know a private CA either (or there are none here at all).
    let err = Client::connect(member(url, TlsRoots::System)).await.err();
    assert!(
        matches!(&err, Some(ClientError::Connect(r)) if r.contains("UnknownIssuer"))
            || matches!(&err, Some(ClientError::Config(r)) if r.contains("no system root")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused() {
    let pki = pki(&["localhost"]);
    let addr = stand_in(&pki).await;
    let roots = || TlsRoots::Pem(pki.ca_pem.clone().into_bytes());
    let by_address = format!("wss://127.0.0.1:{}/", addr.port());
    let err = Client::connect(member(by_address, roots())).await.err();
    assert!(
        matches!(&err, Some(ClientError::Connect(r)) if r.contains("certificate not valid for name")),
        "{err:?}"
    );
    let by_name = format!("wss://localhost:{}/", addr.port());
    assert!(Client::connect(member(by_name, roots())).await.is_ok());
}

#[tokio::test]
async fn bad_urls_are_configuration_errors_not_dns_failures() {
    for url in ["notaurl", "http://127.0.0.1:8080/", "127.0.0.1:8080"] {
        let err = Client::connect(ClientConfig::member(url, "s", "d", "d"))
            .await
            .err()
            .expect(url);
        assert_eq!(
            err,
            ClientError::Config(format!(
                "`{url}` is not a ws:// or wss:// URL (write e.g. ws://127.0.0.1:8080/)"
            ))
        );
    }
    let err = Client::connect(ClientConfig::member("ws://127.0.0.1:1/", "s", "d", "d"))
        .await
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(
        text.starts_with("could not connect: 127.0.0.1:1: ")
            && text.matches("could not connect").count() == 1,
        "{text}"
    );
}

/// The real server with `tls-cert` / `tls-key` (PEM files written here), and the SDK joining
/// it over `wss://` with the private CA: host and member see each other and exchange data.
#[tokio::test]
async fn the_sdk_hosts_and_joins_a_tls_loudsync_server_end_to_end() {
    let pki = pki(&["localhost", "127.0.0.1"]);
    let dir = std::env::temp_dir().join(format!("loudsync-tls-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, &pki.cert_pem).unwrap();
    std::fs::write(&key, &pki.key_pem).unwrap();
    let server = loudsync_server::Server::bind(loudsync_server::ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls_cert: Some(cert),
        tls_key: Some(key),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(server.is_tls());
    let url = format!("wss://localhost:{}/", server.local_addr().port());
    let roots = || TlsRoots::Pem(pki.ca_pem.clone().into_bytes());
    let mut host = ClientConfig::host(&url, "s", "Secure", "mac", "Mac");
    host.tls_roots = roots();
    let (host, mut host_events) = Client::connect(host).await.expect("host over wss");
    let (member, mut member_events) = Client::connect(member(url.clone(), roots()))
        .await
        .expect("member over wss");
    assert_eq!(member.members().len(), 2);
    assert!(member.members()[0].is_host);
    member
        .send(serde_json::json!({"track": "Blue in Green"}))
        .unwrap();
    let from_member = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match host_events.recv().await {
                Some(loudsync_client::Event::Message { data, .. }) => return data,
                Some(_) => {}
                None => panic!("host events ended"),
            }
        }
    })
    .await
    .expect("the host hears the member");
    assert_eq!(from_member["track"], "Blue in Green");
    // A plain ws:// client on the TLS port gets no session.
    let plain = format!("ws://127.0.0.1:{}/", server.local_addr().port());
    let err = Client::connect(ClientConfig::member(plain, "s", "p", "p"))
        .await
        .err();
    assert!(matches!(&err, Some(ClientError::Connect(_))), "{err:?}");
    host.leave().await;
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match member_events.recv().await {
                Some(loudsync_client::Event::SessionClosed { reason }) => return reason,
                Some(_) => {}
                None => panic!("member events ended"),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(closed, "Host ended the session");
}
