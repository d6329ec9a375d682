//! Client settings, with the protocol document's defaults (heartbeat and ping every 5 s,
//! 3 reconnection attempts 2 s apart), the resume layer's (handshake on, a 30 s resume
//! window, acks every 5 s or 100 messages, sends paced under the server's rate limit), the
//! session's access credentials (password, join token) and the certificate authorities a
//! `wss://` server is checked against.

use std::path::Path;
use std::time::Duration;

use loudsync_protocol::{DeviceInfo, DeviceType};

/// How to reconnect after the connection is lost.
///
/// On a plain connection `attempts` bounds the reconnection. On a resumable one (see
/// [`ClientConfig::resume`]) the attempts to resume go on, `delay` and `backoff` apart, until
/// [`ClientConfig::resume_window`] has passed since the drop; `attempts` then only bounds the
/// fresh joins that follow a refused resume (0 still disables reconnection altogether).
#[derive(Debug, Clone, PartialEq)]
pub struct ReconnectPolicy {
    /// Attempts before giving up (the state becomes `failed`). 0 disables reconnection.
    pub attempts: u32,
    /// Wait before each attempt (the first, with backoff).
    pub delay: Duration,
    /// Optional exponential backoff with jitter.
    pub backoff: Option<Backoff>,
}

/// Exponential backoff: attempt `n` waits `delay * factor^(n-1)`, at most `max_delay`,
/// then randomised by up to `jitter` of itself either way.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    /// Growth per attempt (e.g. 2.0).
    pub factor: f64,
    /// Upper bound on the wait.
    pub max_delay: Duration,
    /// Fraction of the wait to randomise, 0.0 to 1.0.
    pub jitter: f64,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            attempts: 3,
            delay: Duration::from_secs(2),
            backoff: None,
        }
    }
}

impl ReconnectPolicy {
    /// The wait before attempt `attempt` (1-based).
    pub fn delay_before(&self, attempt: u32, rng: &mut fastrand::Rng) -> Duration {
        let Some(b) = &self.backoff else {
            return self.delay;
        };
        let grown =
            self.delay.as_secs_f64() * b.factor.max(1.0).powi(attempt.saturating_sub(1) as i32);
        let capped = grown.min(b.max_delay.as_secs_f64());
        let jitter = b.jitter.clamp(0.0, 1.0);
        let spread = capped * jitter * (rng.f64() * 2.0 - 1.0);
        Duration::from_secs_f64((capped + spread).max(0.0))
    }
}

/// A credential (a session password, a join token): never shown by `Debug`, so it stays out
/// of logs and panic messages.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, to put on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_string())
    }
}

/// The certificate authorities a `wss://` server's certificate must chain to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TlsRoots {
    /// The operating system's trust store (read with `rustls-native-certs`: on Linux the
    /// `ca-certificates` bundle, `SSL_CERT_FILE` / `SSL_CERT_DIR` if set). Chosen over a
    /// compiled-in list (`webpki-roots`) so that an authority the machine's administrator
    /// installed, or removed, counts, and the list is updated with the system's.
    #[default]
    System,
    /// Only these CA certificates, PEM-encoded (one or more `CERTIFICATE` blocks): a private
    /// CA. The system's authorities are not trusted then, as with `curl --cacert`.
    Pem(Vec<u8>),
}

impl TlsRoots {
    /// The CA certificates in the PEM file at `path`.
    pub fn pem_file(path: impl AsRef<Path>) -> std::io::Result<TlsRoots> {
        let path = path.as_ref();
        std::fs::read(path)
            .map(TlsRoots::Pem)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
    }
}

/// Everything a client needs to connect.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientConfig {
    /// WebSocket URL: `ws://host:port/` or, over TLS, `wss://host:port/`.
    pub url: String,
    /// For `wss://`: which certificate authorities to trust (the system's by default).
    pub tls_roots: TlsRoots,
    /// The session's password, sent in `join` (for a session that has one).
    pub password: Option<Secret>,
    /// A signed join token, sent in `join` (for a server or session that requires one).
    pub token: Option<Secret>,
    /// The session to join (a host opens it if it does not exist). Empty, for a host only:
    /// open a new session with a fresh code the server chooses (decision 25,
    /// [`ClientConfig::new_session`]); the code arrives in `welcome`
    /// ([`crate::Client::session_id`]) and reconnections rejoin it.
    pub session_id: String,
    /// This device.
    pub device: DeviceInfo,
    /// For a host: the name of the session it opens.
    pub session_name: Option<String>,
    /// How often to send `heartbeat` and `ping` (document: 5 s).
    pub heartbeat_interval: Duration,
    /// Hearing nothing from the server (not even a control frame) this long counts as a lost
    /// connection (document: 15 s, three missed intervals).
    pub silence_timeout: Duration,
    /// How long to wait for `welcome` after sending `join`.
    pub join_timeout: Duration,
    /// How long to wait for the server to close the socket after `leave`.
    pub leave_timeout: Duration,
    /// Reconnection.
    pub reconnect: ReconnectPolicy,
    /// Seed for backoff jitter (fixed in tests; random by default).
    pub jitter_seed: u64,
    /// Do the resume handshake (seed 003's `token` frames) before `join`, so that an unclean
    /// drop is resumed on a new socket with nothing lost or doubled either way (default
    /// `true`). `false` joins as the landed first layer did: no numbering, no resume, a
    /// reconnection is a fresh join with a new id. A server that refuses the handshake gets
    /// the plain `join` on the same socket.
    pub resume: bool,
    /// How long after a drop a resume is attempted (default 30 s, the server's default
    /// `--resume-window`). Should not exceed the server's window: later, its answer is
    /// `expired`.
    pub resume_window: Duration,
    /// Acknowledge received numbered messages at the latest this long after the first one
    /// not yet acknowledged (default 5 s, the server's `--ack-interval`).
    pub ack_interval: Duration,
    /// ... and at the latest every this many (default 100, the server's `--ack-every`).
    pub ack_every: u64,
    /// On a resumable connection, numbered frames (application messages, `kick`,
    /// `member_list`, `leave`) go out at most this many per second on average (default 80),
    /// the resend after a resume or a gap and the flush of what was queued while away
    /// included. Below the server's rate limit (100 frames/s, burst 200), leaving room for
    /// heartbeats, pings and acks.
    pub send_rate: u32,
    /// ... with bursts of up to this many (default 150).
    pub send_burst: u32,
    /// On a resumable connection: how many numbered frames may wait, unacknowledged or
    /// queued while disconnected, before sends are refused ([`crate::ClientError::QueueFull`])
    /// (default 1000, the server's `--resume-buffer-messages`).
    pub queue_limit: usize,
}

impl ClientConfig {
    /// A configuration with the document's defaults.
    pub fn new(url: impl Into<String>, session_id: impl Into<String>, device: DeviceInfo) -> Self {
        ClientConfig {
            url: url.into(),
            tls_roots: TlsRoots::System,
            password: None,
            token: None,
            session_id: session_id.into(),
            device,
            session_name: None,
            heartbeat_interval: Duration::from_secs(5),
            silence_timeout: Duration::from_secs(15),
            join_timeout: Duration::from_secs(10),
            leave_timeout: Duration::from_secs(2),
            reconnect: ReconnectPolicy::default(),
            jitter_seed: fastrand::u64(..),
            resume: true,
            resume_window: Duration::from_secs(30),
            ack_interval: Duration::from_secs(5),
            ack_every: 100,
            send_rate: 80,
            send_burst: 150,
            queue_limit: 1000,
        }
    }

    /// A host of `session_id` named `session_name`.
    pub fn host(
        url: impl Into<String>,
        session_id: impl Into<String>,
        session_name: impl Into<String>,
        device_id: impl Into<String>,
        device_name: impl Into<String>,
    ) -> Self {
        let mut c = Self::new(
            url,
            session_id,
            DeviceInfo {
                id: device_id.into(),
                name: device_name.into(),
                kind: DeviceType::Host,
            },
        );
        c.session_name = Some(session_name.into());
        c
    }

    /// A host that opens a new session named `session_name`, with a fresh 6-character code
    /// the server assigns (e.g. `A1B2C3`, shown `A1B-2C3` by
    /// [`loudsync_protocol::handoff::display_code`]): `join` goes without `sessionId`.
    pub fn new_session(
        url: impl Into<String>,
        session_name: impl Into<String>,
        device_id: impl Into<String>,
        device_name: impl Into<String>,
    ) -> Self {
        Self::host(url, "", session_name, device_id, device_name)
    }

    /// Whether this configuration opens a new session (no session id given).
    pub fn opens_new_session(&self) -> bool {
        self.session_id.is_empty()
    }

    /// A member (`client`) of `session_id`.
    pub fn member(
        url: impl Into<String>,
        session_id: impl Into<String>,
        device_id: impl Into<String>,
        device_name: impl Into<String>,
    ) -> Self {
        Self::new(
            url,
            session_id,
            DeviceInfo {
                id: device_id.into(),
                name: device_name.into(),
                kind: DeviceType::Client,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_show_in_debug_output() {
        let mut c = ClientConfig::member("ws://x/", "s", "d", "n");
        c.password = Some("hunter2".into());
        c.token = Some("eyJhbGciOi.secret".into());
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("secret"),
            "{shown}"
        );
        assert_eq!(c.password.as_ref().map(Secret::expose), Some("hunter2"));
    }

    #[test]
    fn fixed_delay_by_default() {
        let p = ReconnectPolicy::default();
        let mut rng = fastrand::Rng::with_seed(1);
        assert_eq!(p.attempts, 3);
        for n in 1..=3 {
            assert_eq!(p.delay_before(n, &mut rng), Duration::from_secs(2));
        }
    }

    #[test]
    fn backoff_grows_caps_and_jitters_within_bounds() {
        let p = ReconnectPolicy {
            attempts: 10,
            delay: Duration::from_millis(100),
            backoff: Some(Backoff {
                factor: 2.0,
                max_delay: Duration::from_secs(1),
                jitter: 0.2,
            }),
        };
        let mut rng = fastrand::Rng::with_seed(7);
        for (n, base) in [
            (1, 100.0),
            (2, 200.0),
            (3, 400.0),
            (4, 800.0),
            (5, 1000.0),
            (9, 1000.0),
        ] {
            let d = p.delay_before(n, &mut rng).as_secs_f64() * 1000.0;
            assert!(
                d >= base * 0.8 - 0.001 && d <= base * 1.2 + 0.001,
                "attempt {n}: {d}"
            );
        }
    }
}
