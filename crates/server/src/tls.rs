//! TLS on the listening port: the certificate chain and key read from PEM files at bind, and
//! the rustls acceptor (ring provider, TLS 1.2 and 1.3, ALPN `http/1.1`, since WebSocket
//! upgrades are HTTP/1.1). With TLS configured the port speaks TLS only: `https://` and
//! `wss://`.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// Reads the certificate chain and the private key, and builds the acceptor. Errors name
/// the file and what is wrong with it.
pub fn acceptor(cert: &Path, key: &Path) -> io::Result<TlsAcceptor> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| invalid(format!("tls-cert {}: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(format!("tls-cert {}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(invalid(format!(
            "tls-cert {}: no PEM certificate in the file",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| invalid(format!("tls-key {}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| invalid(format!("tls-cert / tls-key: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_or_mismatched_files_are_named_in_the_error() {
        let dir = std::env::temp_dir().join(format!("loudsync-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let err = acceptor(&missing, &missing).err().unwrap().to_string();
        assert!(
            err.starts_with("tls-cert ") && err.contains("missing.pem"),
            "{err}"
        );
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = acceptor(&empty, &empty).err().unwrap().to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
        // A certificate with another certificate's key.
        let a = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (cert, key) = (dir.join("a.pem"), dir.join("b.key"));
        std::fs::write(&cert, a.cert.pem()).unwrap();
        std::fs::write(&key, b.key_pair.serialize_pem()).unwrap();
        let err = acceptor(&cert, &key).err().unwrap().to_string();
        assert!(err.starts_with("tls-cert / tls-key"), "{err}");
        std::fs::write(&key, a.key_pair.serialize_pem()).unwrap();
        assert!(acceptor(&cert, &key).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
