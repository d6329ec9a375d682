//! Server settings, with the documents' defaults. The CLI layers flags, `LOUDSYNC_*`
//! environment variables and a TOML file over these.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use loudsync_core::connection::ConnectionConfig;
use loudsync_core::outbound::OutboundLimits;
use serde::{Deserialize, Serialize};

use crate::admission::AddressRange;

/// Everything the server can be configured with. Durations are written like `500ms` or `15s`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on (HTTP and WebSocket on one port). Loopback by default: the server
    /// is reachable from the network only when told, e.g. `0.0.0.0:8080`.
    pub listen: SocketAddr,
    /// TLS certificate chain (PEM). With `tls-key`, the port speaks TLS only (`https://`
    /// and `wss://`).
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM: PKCS#8, PKCS#1 or SEC1), for `tls-cert`.
    pub tls_key: Option<PathBuf>,
    /// A connection must complete its TLS handshake and its request headers within this, and
    /// an HTTP connection idle for this long between requests is closed; a request's handling
    /// gets as long (then `408`).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Open TCP connections in all (HTTP and WebSocket), fitted under the open-file limit.
    pub max_connections: usize,
    /// Open TCP connections from one address (an IPv6 address counts by its /64); at most
    /// half of `max-connections`. A trusted proxy is held to `max-connections` only.
    pub max_connections_per_address: usize,
    /// Upgraded WebSockets from one client address that have not joined yet.
    pub max_unjoined_per_address: usize,
    /// Join attempts per second per client address, on average (0 disables the limit).
    pub join_rate_per_address: u32,
    /// Join attempts per client address allowed in a burst.
    pub join_burst_per_address: u32,
    /// Reverse proxies whose `X-Forwarded-For` names the client (addresses or CIDR ranges);
    /// from anybody else the header is ignored.
    pub trusted_proxies: Vec<AddressRange>,
    /// Threads that run the server's tasks: 0 means one per core; 1 runs everything on one
    /// thread (no wake-ups between threads: the cheapest for a mostly idle server, and for a
    /// machine it shares with other work).
    pub worker_threads: usize,
    /// Default capacity of a session, host included.
    pub max_members: usize,
    /// A member silent this long is removed.
    #[serde(with = "humantime_serde")]
    pub heartbeat_timeout: Duration,
    /// How often liveness is checked.
    #[serde(with = "humantime_serde")]
    pub heartbeat_check_interval: Duration,
    /// How often the server measures each member's round-trip time with a WebSocket ping.
    #[serde(with = "humantime_serde")]
    pub latency_interval: Duration,
    /// Largest accepted WebSocket message; larger ones close the socket with 1009.
    pub max_message_bytes: usize,
    /// Largest application `message` frame relayed; larger ones get an `error` (`too_large`).
    pub max_data_bytes: usize,
    /// Messages per second allowed per connection on average (0 disables the limit).
    pub rate_limit: u32,
    /// Messages allowed in a burst per connection.
    pub rate_burst: u32,
    /// Bytes a member's outbound queue may hold without question; a queue over it for longer
    /// than `slow-consumer-grace` disconnects the member as too slow.
    pub outbound_queue_bytes: usize,
    /// Bytes a member's outbound queue may never exceed (the memory bound per member).
    pub outbound_queue_max_bytes: usize,
    /// How long a member's queue may stay over `outbound-queue-bytes` (a burst it is reading
    /// through) before the member is disconnected as too slow.
    #[serde(with = "humantime_serde")]
    pub slow_consumer_grace: Duration,
    /// Bearer token for `/v1/*`; without it only loopback clients may use `/v1/*`.
    pub admin_token: Option<String>,
    /// HS256 secret signing join tokens (at least 16 bytes; 32 random bytes recommended).
    /// Prefer `token-key-file` or `LOUDSYNC_TOKEN_KEY`: a flag shows in `ps`.
    pub token_key: Option<crate::access::Secret>,
    /// File holding the join-token key: a PEM public key (Ed25519: EdDSA tokens; RSA: RS256),
    /// or an HS256 secret (the file's bytes, one trailing newline ignored).
    pub token_key_file: Option<std::path::PathBuf>,
    /// Every `join` must carry a valid join token (`token_required` otherwise).
    pub require_token: bool,
    /// Wrong session passwords one address may give per session within
    /// `password-failure-window` before its joins get `too_many_attempts` (0: no limit).
    pub password_max_failures: u32,
    /// The window of `password-max-failures`, from an address's first wrong password.
    #[serde(with = "humantime_serde")]
    pub password_failure_window: Duration,
    /// How long a resumable member's place is held after its socket drops, for a resume on a
    /// new socket; then the others get `member_left` (`timeout`).
    #[serde(with = "humantime_serde")]
    pub resume_window: Duration,
    /// Unacknowledged messages a resumable member's replay buffer holds at most; more ends
    /// its place (`buffer_overflow`).
    pub resume_buffer_messages: usize,
    /// Unacknowledged bytes (of the frames' JSON text) a resumable member's replay buffer
    /// holds at most.
    pub resume_buffer_bytes: usize,
    /// On a resumable connection the server acknowledges client messages at the latest this
    /// long after the first unacknowledged one ...
    #[serde(with = "humantime_serde")]
    pub ack_interval: Duration,
    /// ... or after this many.
    pub ack_every: u64,
    /// Largest session state document, as compact JSON; below `max-message-bytes`, so a
    /// whole-document `state_set` of a maximal state fits in one frame.
    pub max_state_bytes: usize,
    /// How long a handoff candidate has to accept or decline.
    #[serde(with = "humantime_serde")]
    pub handoff_timeout: Duration,
    /// What the loss of a host does: `close` the session, or `handoff` it to a member.
    pub on_host_loss: OnHostLoss,
    /// On shutdown, how long to wait for sockets to close before exiting anyway.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// After the server sends a close frame, how long it waits for the client's.
    #[serde(with = "humantime_serde")]
    pub close_timeout: Duration,
    /// LAN discovery for the LOUDSYNC app (UDP and mDNS). Off by default: a server in a data
    /// centre must not broadcast.
    pub discovery: bool,
    /// The UDP port `LOUDSYNC_DISCOVER` is answered on (the app uses 9876).
    pub discovery_port: u16,
    /// Where advertisements are broadcast.
    pub discovery_broadcast: SocketAddr,
    /// How often advertisements are broadcast.
    #[serde(with = "humantime_serde")]
    pub discovery_interval: Duration,
    /// Advertise sessions over mDNS too (when discovery is on).
    pub mdns: bool,
    /// Network interfaces mDNS uses (names); empty means all.
    pub mdns_interfaces: Vec<String>,
    /// The address advertised to clients [default: the listen address, or the address of the
    /// default route's interface].
    pub advertise_address: Option<std::net::IpAddr>,
    /// Pairing apps (`--app NAME[:TOKEN,...]`, issue 12): `NAME` alone is an open app (any
    /// well-formed token), `NAME:TOKEN,TOKEN` accepts those tokens only. With none, pairing is
    /// off and every `/crsocket/...` path answers 404.
    pub apps: Vec<String>,
    /// A pairing connection silent this long is aborted `clientNotAlive` (checked every
    /// `heartbeat-check-interval`); a pairing WebSocket that has not identified this long after
    /// opening is closed.
    #[serde(with = "humantime_serde")]
    pub pairing_alive_timeout: Duration,
    /// A folder of static pages served under `/crsocket/` (CRSocket's own page layout works
    /// unchanged); without it those paths answer 404.
    pub pairing_pages: Option<PathBuf>,
    /// Origins allowed to call the pairing endpoints from pages served elsewhere (CORS), e.g.
    /// `https://example.org`; `*` allows any.
    pub pairing_cors_origins: Vec<String>,
    /// The session media relay's UDP address (issue 13 R1). Off (no socket bound, no relay;
    /// `media_token` gets `media_unavailable`) unless given, like discovery.
    pub media_listen: Option<SocketAddr>,
    /// How long a granted media token may be claimed by its first START (R1, R5).
    #[serde(with = "humantime_serde")]
    pub media_token_ttl: Duration,
    /// How often the admin event stream (`GET /v1/events`) writes a keep-alive comment.
    #[serde(with = "humantime_serde")]
    pub events_keepalive: Duration,
    /// How often the admin event stream writes a `stats` event.
    #[serde(with = "humantime_serde")]
    pub events_stats_interval: Duration,
    /// Events the admin event stream keeps for reconnecting clients (`Last-Event-ID`).
    pub events_history: usize,
    /// Events a subscriber of the admin event stream may fall behind by before it is cut off
    /// (`overflow`); the memory bound per subscriber, shared by all of them.
    pub events_buffer: usize,
    /// How long the server keeps recording events after its last subscriber left, so a
    /// client that reconnects within it gets what it missed; after it, nothing is recorded
    /// (sessions pay nothing) and a reconnecting client gets `reset`.
    #[serde(with = "humantime_serde")]
    pub events_linger: Duration,
    /// Cluster mode (issue 16): the Redis every node of the cluster shares, e.g.
    /// `redis://127.0.0.1:6379`. Off (one node, nothing in Redis) unless given.
    pub redis: Option<String>,
    /// This node's id in the cluster; a random one when not given.
    pub node_id: Option<String>,
    /// How clients reach this node (shown in the admin API's node list).
    pub advertise_url: Option<String>,
    /// A node (or a session's owner) that has not renewed its lease for this long is dead;
    /// renewals go every third of it.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// How often a node reads the streams of its sessions even without a wake-up (pub/sub is
    /// at most once; this bounds how long a lost wake-up can delay a frame).
    #[serde(with = "humantime_serde")]
    pub cluster_poll: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let conn = ConnectionConfig::default();
        let outbound = OutboundLimits::default();
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls_cert: None,
            tls_key: None,
            request_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            max_connections_per_address: 256,
            max_unjoined_per_address: 32,
            join_rate_per_address: 10,
            join_burst_per_address: 30,
            trusted_proxies: Vec::new(),
            worker_threads: 0,
            max_members: 10,
            heartbeat_timeout: conn.heartbeat_timeout,
            heartbeat_check_interval: conn.heartbeat_check_interval,
            latency_interval: conn.latency_interval,
            max_message_bytes: 64 * 1024,
            max_data_bytes: conn.max_data_bytes,
            rate_limit: conn.rate_per_sec,
            rate_burst: conn.rate_burst,
            outbound_queue_bytes: outbound.soft_bytes,
            outbound_queue_max_bytes: outbound.hard_bytes,
            slow_consumer_grace: outbound.grace,
            admin_token: None,
            token_key: None,
            token_key_file: None,
            require_token: false,
            password_max_failures: 5,
            password_failure_window: Duration::from_secs(60),
            resume_window: Duration::from_secs(30),
            resume_buffer_messages: 1000,
            resume_buffer_bytes: 1 << 20,
            ack_interval: conn.ack_interval,
            ack_every: conn.ack_every,
            max_state_bytes: 32 * 1024,
            handoff_timeout: Duration::from_secs(10),
            on_host_loss: OnHostLoss::Close,
            drain_timeout: Duration::from_secs(5),
            close_timeout: conn.close_timeout,
            discovery: false,
            discovery_port: 9876,
            discovery_broadcast: SocketAddr::from(([255, 255, 255, 255], 9876)),
            discovery_interval: Duration::from_secs(3),
            mdns: true,
            mdns_interfaces: Vec::new(),
            advertise_address: None,
            apps: Vec::new(),
            pairing_alive_timeout: Duration::from_secs(25),
            pairing_pages: None,
            pairing_cors_origins: Vec::new(),
            media_listen: None,
            media_token_ttl: loudsync_core::media::relay::DEFAULT_TOKEN_TTL,
            events_keepalive: Duration::from_secs(15),
            events_stats_interval: Duration::from_secs(1),
            events_history: 1024,
            events_buffer: 256,
            events_linger: Duration::from_secs(60),
            redis: None,
            node_id: None,
            advertise_url: None,
            lease: Duration::from_secs(10),
            cluster_poll: Duration::from_millis(250),
        }
    }
}

/// What a session does when its host is gone for good (`--on-host-loss`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnHostLoss {
    /// End the session, as seed 001 says.
    #[default]
    Close,
    /// Pass it to the oldest ready member, else the longest present, else end it.
    Handoff,
}

/// The longest `--media-token-ttl` (a token is a short-lived grant; far beyond this the
/// relay's clock arithmetic would overflow).
pub const MAX_MEDIA_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

impl ServerConfig {
    /// The settings of the state and handoff layer.
    pub fn handoff(&self) -> loudsync_core::session::handoff::HandoffConfig {
        use loudsync_core::session::handoff::{HandoffConfig, HostLoss};
        HandoffConfig {
            max_state_bytes: self.max_state_bytes,
            timeout: self.handoff_timeout,
            on_host_loss: match self.on_host_loss {
                OnHostLoss::Close => HostLoss::Close,
                OnHostLoss::Handoff => HostLoss::Handoff,
            },
        }
    }

    /// The part of the settings the connection state machine needs.
    pub fn connection(&self) -> ConnectionConfig {
        ConnectionConfig {
            heartbeat_timeout: self.heartbeat_timeout,
            heartbeat_check_interval: self.heartbeat_check_interval,
            latency_interval: self.latency_interval,
            rate_per_sec: self.rate_limit,
            rate_burst: self.rate_burst,
            max_data_bytes: self.max_data_bytes,
            close_timeout: self.close_timeout,
            ack_interval: self.ack_interval,
            ack_every: self.ack_every,
            local_token: loudsync_core::resume::random_token,
        }
    }

    /// The bounds of each resumable member's replay buffer.
    pub fn replay_limits(&self) -> loudsync_core::resume::ReplayLimits {
        loudsync_core::resume::ReplayLimits {
            messages: self.resume_buffer_messages,
            bytes: self.resume_buffer_bytes,
        }
    }

    /// The configured pairing apps, parsed (`validate` has checked them).
    pub fn pairing_apps(&self) -> Result<Vec<loudsync_protocol::pairing::AppSpec>, String> {
        loudsync_protocol::pairing::parse_apps(self.apps.iter().map(String::as_str))
            .map_err(|e| e.to_string())
    }

    /// The pairing relay's settings.
    pub fn relay(&self) -> Result<loudsync_core::pairing::RelayConfig, String> {
        Ok(loudsync_core::pairing::RelayConfig {
            apps: self.pairing_apps()?,
            alive_timeout: self.pairing_alive_timeout,
            check_interval: self.heartbeat_check_interval,
            rate_limit: self.rate_limit,
            rate_burst: self.rate_burst,
        })
    }

    /// The session media relay's settings (issue 13 §9).
    pub fn media_relay(&self) -> loudsync_core::media::relay::RelayConfig {
        loudsync_core::media::relay::RelayConfig {
            token_ttl: self.media_token_ttl,
            ..Default::default()
        }
    }

    /// The limits of each member's outbound queue.
    pub fn outbound_limits(&self) -> OutboundLimits {
        OutboundLimits {
            soft_bytes: self.outbound_queue_bytes,
            hard_bytes: self.outbound_queue_max_bytes,
            grace: self.slow_consumer_grace,
        }
    }

    /// Checks the cluster settings (issue 16): a `redis://` or `rediss://` URL, a node id
    /// that is safe inside Redis keys, a lease long enough for a third of it to be a renewal
    /// interval, a poll interval above zero.
    fn validate_cluster(&self) -> Result<(), String> {
        if let Some(url) = &self.redis {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(format!(
                    "redis must be a redis:// or rediss:// URL, not {:?}",
                    url.chars().take(64).collect::<String>()
                ));
            }
        }
        if let Some(id) = &self.node_id {
            let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
            if id.is_empty() || id.len() > 64 || !id.chars().all(safe) {
                return Err(
                    "node-id must be 1 to 64 of A-Z a-z 0-9 - _ . (it is part of Redis keys)"
                        .into(),
                );
            }
        }
        if self.lease < Duration::from_millis(300) {
            return Err("lease must be at least 300ms".into());
        }
        if self.cluster_poll.is_zero() {
            return Err("cluster-poll must be greater than zero".into());
        }
        Ok(())
    }

    /// Checks values that would make the server misbehave.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_members == 0 {
            return Err("max-members must be at least 1".into());
        }
        for (name, d) in [
            ("heartbeat-timeout", self.heartbeat_timeout),
            ("heartbeat-check-interval", self.heartbeat_check_interval),
            ("latency-interval", self.latency_interval),
            ("discovery-interval", self.discovery_interval),
            ("request-timeout", self.request_timeout),
            ("resume-window", self.resume_window),
            ("ack-interval", self.ack_interval),
            ("handoff-timeout", self.handoff_timeout),
            ("pairing-alive-timeout", self.pairing_alive_timeout),
            ("media-token-ttl", self.media_token_ttl),
            ("events-keepalive", self.events_keepalive),
            ("events-stats-interval", self.events_stats_interval),
        ] {
            if d.is_zero() {
                return Err(format!("{name} must be greater than zero"));
            }
        }
        self.validate_cluster()?;
        if self.media_token_ttl > MAX_MEDIA_TOKEN_TTL {
            return Err(
                "media-token-ttl must be at most 24h (a token is a short-lived grant)".into(),
            );
        }
        for (name, n) in [
            ("max-connections", self.max_connections),
            (
                "max-connections-per-address",
                self.max_connections_per_address,
            ),
            ("max-unjoined-per-address", self.max_unjoined_per_address),
            ("resume-buffer-messages", self.resume_buffer_messages),
            ("resume-buffer-bytes", self.resume_buffer_bytes),
            ("ack-every", self.ack_every as usize),
            ("events-history", self.events_history),
            ("events-buffer", self.events_buffer),
        ] {
            if n == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if self.join_rate_per_address > 0 && self.join_burst_per_address == 0 {
            return Err("join-burst-per-address must be at least 1".into());
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("tls-cert and tls-key go together: give both or neither".into());
        }
        crate::access::check_config(self)?;
        if self.max_message_bytes < 256 {
            return Err("max-message-bytes must be at least 256".into());
        }
        if self.max_state_bytes < 2 {
            return Err("max-state-bytes must be at least 2 (the empty state `{}`)".into());
        }
        if self.max_state_bytes >= self.max_message_bytes {
            return Err(format!(
                "max-state-bytes ({}) must be below max-message-bytes ({}): a `state_set` of the whole document must fit in one frame",
                self.max_state_bytes, self.max_message_bytes
            ));
        }
        if self.outbound_queue_bytes < self.max_message_bytes {
            return Err("outbound-queue-bytes must be at least max-message-bytes".into());
        }
        if self.outbound_queue_max_bytes < self.outbound_queue_bytes {
            return Err("outbound-queue-max-bytes must be at least outbound-queue-bytes".into());
        }
        self.pairing_apps()?;
        if let Some(dir) = &self.pairing_pages {
            if !dir.exists() {
                return Err(format!(
                    "pairing-pages `{}` does not exist (it must name a folder of pages)",
                    dir.display()
                ));
            }
            if !dir.is_dir() {
                return Err(format!(
                    "pairing-pages `{}` is not a directory (it must name a folder of pages)",
                    dir.display()
                ));
            }
        }
        for origin in &self.pairing_cors_origins {
            if !valid_origin(origin) {
                return Err(format!(
                    "pairing-cors-origin `{}` is not an origin: give `*` or SCHEME://HOST[:PORT], e.g. `https://example.org`",
                    origin.escape_debug()
                ));
            }
        }
        Ok(())
    }
}

/// Whether `origin` is `*` or looks like a web origin: `http(s)://HOST[:PORT]` (a trailing `/`
/// is allowed), printable ASCII without spaces, so it is also a valid header value.
fn valid_origin(origin: &str) -> bool {
    if origin == "*" {
        return true;
    }
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    let Some(host) = rest.map(|r| r.strip_suffix('/').unwrap_or(r)) else {
        return false;
    };
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"/?#@".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_document_and_the_issue() {
        let c = ServerConfig::default();
        assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
        assert!(
            c.listen.ip().is_loopback(),
            "reachable from the network only when told"
        );
        assert_eq!(c.request_timeout, Duration::from_secs(10));
        assert_eq!(
            (
                c.max_connections,
                c.max_connections_per_address,
                c.max_unjoined_per_address
            ),
            (10_000, 256, 32)
        );
        assert_eq!(
            (c.join_rate_per_address, c.join_burst_per_address),
            (10, 30)
        );
        assert!(
            c.trusted_proxies.is_empty(),
            "no X-Forwarded-For unless configured"
        );
        assert_eq!((c.tls_cert.clone(), c.tls_key.clone()), (None, None));
        assert_eq!(c.max_members, 10);
        assert_eq!(c.heartbeat_timeout, Duration::from_secs(15));
        assert_eq!(c.heartbeat_check_interval, Duration::from_secs(5));
        assert_eq!(c.latency_interval, Duration::from_secs(5));
        assert_eq!(c.max_message_bytes, 64 * 1024);
        assert_eq!((c.rate_limit, c.rate_burst), (100, 200));
        assert_eq!(c.admin_token, None);
        assert!(!c.discovery, "a server must not broadcast unless asked");
        assert!(c.validate().is_ok());
    }

    #[test]
    fn nonsense_is_rejected() {
        let c = ServerConfig {
            max_members: 0,
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("max-members"));
        let c = ServerConfig {
            heartbeat_timeout: Duration::ZERO,
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("heartbeat-timeout"));
        let c = ServerConfig {
            tls_cert: Some("cert.pem".into()),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("tls-key"));
        let c = ServerConfig {
            max_connections_per_address: 0,
            ..Default::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .contains("max-connections-per-address"));
        let c = ServerConfig {
            request_timeout: Duration::ZERO,
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("request-timeout"));
        let c = ServerConfig {
            max_state_bytes: 64 * 1024,
            ..Default::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .contains("max-state-bytes (65536) must be below max-message-bytes (65536)"));
        let c = ServerConfig {
            handoff_timeout: Duration::ZERO,
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("handoff-timeout"));
    }

    #[test]
    fn pairing_apps_are_checked_and_named_in_the_error() {
        let apps = |specs: &[&str]| ServerConfig {
            apps: specs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        assert_eq!(apps(&["alpha", "secret:tokA,tokB"]).validate(), Ok(()));
        let c = apps(&["alpha", "secret:tokA,tokB"]);
        let parsed = c.pairing_apps().unwrap();
        assert_eq!(parsed.len(), 2);
        assert!(parsed[0].is_open());
        assert_eq!(
            parsed[1].tokens.as_deref(),
            Some(&["tokA".to_string(), "tokB".to_string()][..])
        );
        assert_eq!(
            apps(&["alpha", "alpha:t"]).validate().unwrap_err(),
            "app `alpha` is configured twice"
        );
        for (spec, named) in [
            ("a:to,,k", "invalid app `a`: token 2"),
            ("a:to k", "invalid app `a`: token 1"),
            ("a:", "invalid app `a`: no token"),
            ("-a", "invalid app `-a`"),
            ("", "invalid app ``"),
        ] {
            let err = apps(&[spec]).validate().unwrap_err();
            assert!(err.starts_with(named), "{spec:?}: {err}");
        }
        let err = ServerConfig {
            pairing_alive_timeout: Duration::ZERO,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.contains("pairing-alive-timeout"), "{err}");
    }

    #[test]
    fn pairing_cors_origins_must_be_origins() {
        for good in [
            "*",
            "https://example.org",
            "http://127.0.0.1:8080",
            "https://a.b/",
        ] {
            let c = ServerConfig {
                pairing_cors_origins: vec![good.into()],
                ..Default::default()
            };
            assert!(c.validate().is_ok(), "{good}");
        }
        for bad in [
            "example.org",
            "https://",
            "https://a b",
            "ftp://x",
            "https://a/path",
        ] {
            let c = ServerConfig {
                pairing_cors_origins: vec![bad.into()],
                ..Default::default()
            };
            let err = c.validate().unwrap_err();
            assert!(err.contains("pairing-cors-origin"), "{bad}: {err}");
        }
    }

    #[test]
    fn pairing_pages_must_be_an_existing_directory() {
        let pages = |dir: PathBuf| ServerConfig {
            pairing_pages: Some(dir),
            ..Default::default()
        };
        let dir = std::env::temp_dir().join(format!("loudsync-pages-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(pages(dir.clone()).validate(), Ok(()));
        let missing = dir.join("missing");
        let err = pages(missing.clone()).validate().unwrap_err();
        assert!(err.contains("pairing-pages"), "{err}");
        assert!(err.contains("does not exist"), "{err}");
        assert!(err.contains(&missing.display().to_string()), "{err}");
        let file = dir.join("index.html");
        std::fs::write(&file, "<p>a file, not a folder</p>").unwrap();
        assert!(pages(file)
            .validate()
            .unwrap_err()
            .contains("not a directory"));
    }

    #[test]
    fn the_media_relay_is_off_by_default_and_its_token_ttl_must_be_positive() {
        let c = ServerConfig::default();
        assert_eq!(c.media_listen, None, "no UDP socket unless asked (R1)");
        assert_eq!(c.media_token_ttl, Duration::from_secs(30));
        assert_eq!(c.media_relay().token_ttl, Duration::from_secs(30));
        let err = ServerConfig {
            media_token_ttl: Duration::ZERO,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(err, "media-token-ttl must be greater than zero");
        let err = ServerConfig {
            media_token_ttl: Duration::from_secs(24 * 3600 + 1),
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(
            err.starts_with("media-token-ttl must be at most 24h"),
            "{err}"
        );
        assert!(ServerConfig {
            media_token_ttl: MAX_MEDIA_TOKEN_TTL,
            ..Default::default()
        }
        .validate()
        .is_ok());
        // The keys as a config file names them.
        let toml: ServerConfig = serde_json::from_value(serde_json::json!({
            "media-listen": "127.0.0.1:4500",
            "media-token-ttl": "2s",
        }))
        .unwrap();
        assert_eq!(toml.media_listen, Some("127.0.0.1:4500".parse().unwrap()));
        assert_eq!(toml.media_token_ttl, Duration::from_secs(2));
    }

    #[test]
    fn the_handoff_layers_defaults_are_the_issues() {
        let c = ServerConfig::default();
        assert_eq!(c.max_state_bytes, 32768);
        assert_eq!(c.handoff_timeout, Duration::from_secs(10));
        assert_eq!(c.on_host_loss, OnHostLoss::Close);
        let h = c.handoff();
        assert_eq!(
            h.on_host_loss,
            loudsync_core::session::handoff::HostLoss::Close
        );
    }
}
