//! `loudsync serve`: merges flags > environment > config file > defaults, runs the server
//! until SIGTERM or Ctrl-C, then shuts it down gracefully.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use loudsync_server::{Server, ServerConfig};
use serde::Serialize;

/// Flags of `loudsync serve`. Every flag is optional: unset ones fall through to the
/// environment, the config file, then the default.
#[derive(Args, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub struct ServeArgs {
    /// TOML config file (keys as the flag names, e.g. `max-members = 20`).
    #[arg(long, env = "LOUDSYNC_CONFIG")]
    #[serde(skip)]
    config: Option<PathBuf>,

    /// Address to listen on; loopback unless told, e.g. 0.0.0.0:8080 for the network
    /// [default: 127.0.0.1:8080].
    #[arg(long, env = "LOUDSYNC_LISTEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<SocketAddr>,

    /// TLS certificate chain (PEM); with --tls-key the port speaks TLS only (https://,
    /// wss://) [default: none].
    #[arg(
        long,
        env = "LOUDSYNC_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_cert: Option<PathBuf>,

    /// TLS private key (PEM: PKCS#8, PKCS#1 or SEC1) for --tls-cert [default: none].
    #[arg(
        long,
        env = "LOUDSYNC_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_key: Option<PathBuf>,

    /// A connection must finish its TLS handshake and request headers within this; an idle
    /// keep-alive connection is closed after it; a request's handling gets as long (then 408)
    /// [default: 10s].
    #[arg(long, env = "LOUDSYNC_REQUEST_TIMEOUT", value_parser = duration)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    request_timeout: Option<Duration>,

    /// Open TCP connections in all; lowered to fit the open-file limit (less a reserve)
    /// [default: 10000].
    #[arg(long, env = "LOUDSYNC_MAX_CONNECTIONS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_connections: Option<usize>,

    /// Open TCP connections from one address (IPv6: one /64); at most half of
    /// --max-connections; a trusted proxy is held to --max-connections only [default: 256].
    #[arg(long, env = "LOUDSYNC_MAX_CONNECTIONS_PER_ADDRESS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_connections_per_address: Option<usize>,

    /// Upgraded WebSockets from one client address that have not joined yet; more get 429
    /// [default: 32].
    #[arg(long, env = "LOUDSYNC_MAX_UNJOINED_PER_ADDRESS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_unjoined_per_address: Option<usize>,

    /// Join attempts per second per client address, on average; over it a join gets
    /// `too_many_attempts`; 0 disables [default: 10].
    #[arg(long, env = "LOUDSYNC_JOIN_RATE_PER_ADDRESS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    join_rate_per_address: Option<u32>,

    /// Join attempts per client address allowed in a burst [default: 30].
    #[arg(long, env = "LOUDSYNC_JOIN_BURST_PER_ADDRESS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    join_burst_per_address: Option<u32>,

    /// Reverse proxy whose X-Forwarded-For names the client: an address or a CIDR range
    /// (repeat or comma-separate); from anybody else the header is ignored [default: none].
    #[arg(
        long = "trusted-proxy",
        env = "LOUDSYNC_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_name = "ADDRESS|CIDR"
    )]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    trusted_proxies: Vec<loudsync_server::admission::AddressRange>,

    /// Threads running the server: 0 is one per core; 1 runs everything on one thread (no
    /// wake-ups between threads; the cheapest for a mostly idle server) [default: 0].
    #[arg(long, env = "LOUDSYNC_WORKER_THREADS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    worker_threads: Option<usize>,

    /// Default session capacity, the host included [default: 10].
    #[arg(long, env = "LOUDSYNC_MAX_MEMBERS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_members: Option<usize>,

    /// Remove a member silent this long [default: 15s].
    #[arg(long, env = "LOUDSYNC_HEARTBEAT_TIMEOUT", value_parser = duration)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    heartbeat_timeout: Option<Duration>,

    /// How often liveness is checked [default: 5s].
    #[arg(long, env = "LOUDSYNC_HEARTBEAT_CHECK_INTERVAL", value_parser = duration)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    heartbeat_check_interval: Option<Duration>,

    /// How often each member's round-trip time is measured with a WebSocket ping [default: 5s].
    #[arg(long, env = "LOUDSYNC_LATENCY_INTERVAL", value_parser = duration)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    latency_interval: Option<Duration>,

    /// Largest WebSocket message accepted; larger closes the socket with 1009 [default: 65536].
    #[arg(long, env = "LOUDSYNC_MAX_MESSAGE_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_message_bytes: Option<usize>,

    /// Largest `message` frame (whole JSON text) relayed; larger gets an `error` too_large [default: 16384].
    #[arg(long, env = "LOUDSYNC_MAX_DATA_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_data_bytes: Option<usize>,

    /// Messages per second per connection, on average; 0 disables [default: 100].
    #[arg(long, env = "LOUDSYNC_RATE_LIMIT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    rate_limit: Option<u32>,

    /// Messages per connection allowed in a burst [default: 200].
    #[arg(long, env = "LOUDSYNC_RATE_BURST")]
    #[serde(skip_serializing_if = "Option::is_none")]
    rate_burst: Option<u32>,

    /// Bytes a member's outbound queue may hold without question; over it for longer than
    /// --slow-consumer-grace, the member is dropped as too slow [default: 262144].
    #[arg(long, env = "LOUDSYNC_OUTBOUND_QUEUE_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    outbound_queue_bytes: Option<usize>,

    /// Bytes a member's outbound queue may never exceed: the memory bound per member
    /// [default: 4194304].
    #[arg(long, env = "LOUDSYNC_OUTBOUND_QUEUE_MAX_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    outbound_queue_max_bytes: Option<usize>,

    /// How long a member's queue may stay over --outbound-queue-bytes (a burst it is
    /// reading through) before the member is dropped as too slow [default: 5s].
    #[arg(long, env = "LOUDSYNC_SLOW_CONSUMER_GRACE", value_parser = duration)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    slow_consumer_grace: Option<Duration>,

    /// Require `Authorization: Bearer TOKEN` on /v1/*; without it /v1/* answers loopback only.
    /// A command line is visible to every user in `ps`: prefer --admin-token-file.
    #[arg(long, env = "LOUDSYNC_ADMIN_TOKEN", hide_env_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    admin_token: Option<String>,

    /// Read the admin token from this file (its trailing newline removed; an empty file is an
    /// error). TOML key `admin-token-file`. Not together with --admin-token.
    #[arg(
        long,
        env = "LOUDSYNC_ADMIN_TOKEN_FILE",
        value_name = "FILE",
        conflicts_with = "admin_token"
    )]
    #[serde(skip)]
    admin_token_file: Option<PathBuf>,

    /// HS256 secret for signed join tokens (at least 16 bytes; 32 random bytes recommended).
    /// A command line is visible in `ps`: prefer LOUDSYNC_TOKEN_KEY or --token-key-file.
    #[arg(
        long,
        env = "LOUDSYNC_TOKEN_KEY",
        hide_env_values = true,
        conflicts_with = "token_key_file"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    token_key: Option<String>,

    /// Join-token key file: a PEM public key (Ed25519: EdDSA tokens; RSA: RS256), or an HS256
    /// secret (the file's bytes, one trailing newline ignored).
    #[arg(long, env = "LOUDSYNC_TOKEN_KEY_FILE", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    token_key_file: Option<PathBuf>,

    /// Every join must carry a valid join token (needs --token-key or --token-key-file).
    #[arg(long, env = "LOUDSYNC_REQUIRE_TOKEN")]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    require_token: bool,

    /// Wrong session passwords one address may give per session within
    /// --password-failure-window before its joins get `too_many_attempts`; 0: no limit
    /// [default: 5].
    #[arg(long, env = "LOUDSYNC_PASSWORD_MAX_FAILURES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    password_max_failures: Option<u32>,

    /// The window of --password-max-failures, from an address's first wrong password
    /// [default: 1m].
    #[arg(long, env = "LOUDSYNC_PASSWORD_FAILURE_WINDOW", value_parser = duration)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    password_failure_window: Option<Duration>,

    /// How long a resumable member's place is held after its socket drops, for a resume on
    /// a new socket; then the others get `member_left` (`timeout`) [default: 30s].
    #[arg(long, env = "LOUDSYNC_RESUME_WINDOW", value_parser = duration)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    resume_window: Option<Duration>,

    /// Unacknowledged messages a resumable member's replay buffer holds at most; more ends
    /// its place (`buffer_overflow`) [default: 1000].
    #[arg(long, env = "LOUDSYNC_RESUME_BUFFER_MESSAGES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    resume_buffer_messages: Option<usize>,

    /// Unacknowledged bytes (of the frames' JSON text) a resumable member's replay buffer
    /// holds at most [default: 1048576].
    #[arg(long, env = "LOUDSYNC_RESUME_BUFFER_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    resume_buffer_bytes: Option<usize>,

    /// On a resumable connection, acknowledge client messages at the latest this long after
    /// the first unacknowledged one [default: 5s] ...
    #[arg(long, env = "LOUDSYNC_ACK_INTERVAL", value_parser = duration)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    ack_interval: Option<Duration>,

    /// ... or after this many [default: 100].
    #[arg(long, env = "LOUDSYNC_ACK_EVERY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    ack_every: Option<u64>,

    /// Largest session state document, as compact JSON; must be below
    /// --max-message-bytes [default: 32768].
    #[arg(long, env = "LOUDSYNC_MAX_STATE_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_state_bytes: Option<usize>,

    /// How long a handoff candidate has to accept or decline [default: 10s].
    #[arg(long, env = "LOUDSYNC_HANDOFF_TIMEOUT", value_parser = duration)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    handoff_timeout: Option<Duration>,

    /// When a host is gone for good: `close` the session, or `handoff` it to the member that
    /// declared itself ready first, else the longest present [default: close].
    #[arg(long, env = "LOUDSYNC_ON_HOST_LOSS", value_parser = ["handoff", "close"])]
    #[serde(skip_serializing_if = "Option::is_none")]
    on_host_loss: Option<String>,

    /// On shutdown, wait at most this long for sockets to close [default: 5s].
    #[arg(long, env = "LOUDSYNC_DRAIN_TIMEOUT", value_parser = duration)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    drain_timeout: Option<Duration>,

    /// After sending a close frame, wait at most this long for the client's [default: 1s].
    #[arg(long, env = "LOUDSYNC_CLOSE_TIMEOUT", value_parser = duration)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    close_timeout: Option<Duration>,

    /// LAN discovery for the LOUDSYNC app: answer LOUDSYNC_DISCOVER on UDP, broadcast each
    /// session's advertisement, and advertise it over mDNS. Off by default.
    #[arg(long, env = "LOUDSYNC_DISCOVERY")]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    discovery: bool,

    /// UDP port for LOUDSYNC_DISCOVER and advertisements [default: 9876].
    #[arg(long, env = "LOUDSYNC_DISCOVERY_PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    discovery_port: Option<u16>,

    /// Where advertisements are broadcast [default: 255.255.255.255:9876].
    #[arg(long, env = "LOUDSYNC_DISCOVERY_BROADCAST")]
    #[serde(skip_serializing_if = "Option::is_none")]
    discovery_broadcast: Option<SocketAddr>,

    /// How often advertisements are broadcast [default: 3s].
    #[arg(long, env = "LOUDSYNC_DISCOVERY_INTERVAL", value_parser = duration)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    discovery_interval: Option<Duration>,

    /// With --discovery: UDP only, no mDNS.
    #[arg(long, env = "LOUDSYNC_NO_MDNS")]
    #[serde(skip)]
    no_mdns: bool,

    /// Network interfaces for mDNS (repeat or comma-separate) [default: all].
    #[arg(
        long = "mdns-interface",
        env = "LOUDSYNC_MDNS_INTERFACES",
        value_delimiter = ','
    )]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    mdns_interfaces: Vec<String>,

    /// Address advertised to LAN clients [default: the listen address, or the default
    /// route's interface address].
    #[arg(long, env = "LOUDSYNC_ADVERTISE_ADDRESS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    advertise_address: Option<std::net::IpAddr>,

    /// Configure a pairing app (CRSocket controller/responder pairing), as NAME for an open
    /// app or NAME:TOKEN[,TOKEN...] for one that accepts those access tokens only; repeat for
    /// more apps (environment: LOUDSYNC_APPS, apps separated by `;`). With no app configured,
    /// pairing is off and every /crsocket/... path answers 404 [default: none].
    ///
    /// Each app is reached under /crsocket/NAME/ (ws, clientid/, eventsource/, sendevent/).
    /// NAME is 1 to 64 characters of A-Z, a-z, 0-9, `_` and `-`, starting with a letter or
    /// digit. A token is 1 to 256 printable ASCII characters (`!` to `~`, no space) without
    /// `,` or `;`; it is valid for both roles. In an open app any well-formed token is
    /// accepted, but one is still required. A name given twice, or a spec breaking these
    /// rules, stops the server from starting (exit 1).
    ///
    /// Example: --app commtest --app lab:s3cret,0ther
    ///
    /// TOML: apps = ["commtest", "lab:s3cret,0ther"]. Environment: LOUDSYNC_APPS, the apps
    /// separated by `;` (the one list variable that is not comma-separated, because `,`
    /// separates tokens), e.g. LOUDSYNC_APPS="commtest;lab:s3cret,0ther"; it is read only when
    /// no --app is given. A command line is visible to every user in `ps`: put tokens in the
    /// config file or the environment.
    #[arg(long = "app", value_name = "NAME[:TOKEN,...]")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    apps: Vec<String>,

    /// Abort a pairing connection (WebSocket or SSE stream) silent this long, reason
    /// `clientNotAlive` [default: 25s].
    ///
    /// Pairing connections are checked every --heartbeat-check-interval, so one is aborted no
    /// earlier than this after its last sign of life and no later than this plus one check
    /// interval. A pairing WebSocket that has not identified (`cr_identify`) this long after
    /// opening is closed. Must be greater than zero; written like 500ms, 25s, 2m.
    ///
    /// Example: --pairing-alive-timeout 40s (TOML: pairing-alive-timeout = "40s").
    #[arg(long, env = "LOUDSYNC_PAIRING_ALIVE_TIMEOUT", value_parser = duration)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pairing_alive_timeout: Option<Duration>,

    /// Serve the static pages in DIR under /crsocket/, so CRSocket pages reach their app's
    /// endpoints by relative paths from the same origin [default: none: those paths answer 404].
    ///
    /// Any GET under /crsocket/ that is not an app endpoint is the file of DIR at the same
    /// relative path (index.html for a folder; no directory listing; nothing outside DIR), so
    /// CRSocket's own layout works unchanged: DIR/commtest/controller/index.html is
    /// /crsocket/commtest/controller/, and its `../eventsource/` is the commtest app's stream.
    /// DIR must be an existing directory, or the server does not start (exit 1).
    ///
    /// Example: --pairing-pages /srv/crsocket-pages (TOML: pairing-pages = "/srv/crsocket-pages").
    #[arg(long, env = "LOUDSYNC_PAIRING_PAGES", value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pairing_pages: Option<PathBuf>,

    /// Answer CORS for the pairing endpoints to pages served from ORIGIN (scheme, host and
    /// port, e.g. https://lab.example.org), for CRSocket pages not served by --pairing-pages;
    /// `*` allows any origin; repeat or comma-separate [default: none: no CORS headers].
    ///
    /// Example: --pairing-cors-origin https://lab.example.org --pairing-cors-origin
    /// http://localhost:3000 (TOML: pairing-cors-origins = ["https://lab.example.org"];
    /// environment: LOUDSYNC_PAIRING_CORS_ORIGINS=https://a.example,https://b.example).
    #[arg(
        long = "pairing-cors-origin",
        env = "LOUDSYNC_PAIRING_CORS_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGIN"
    )]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pairing_cors_origins: Vec<String>,

    /// Run the session media relay on this UDP address (issue 13): the host of a session
    /// publishes a stream to it and members subscribe, each with a token from a `media_token`
    /// request over its WebSocket. Off by default: no UDP socket is bound and `media_token`
    /// gets `media_unavailable`. A bad or busy address stops the server at start (exit 1).
    ///
    /// Example: --media-listen 0.0.0.0:4444 (TOML: media-listen = "0.0.0.0:4444").
    #[arg(long, env = "LOUDSYNC_MEDIA_LISTEN", value_name = "ADDR:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    media_listen: Option<SocketAddr>,

    /// How long a media token may be claimed by its first START; a claimed tuple then lives as
    /// long as the member's place in the session [default: 30s]. Must be greater than zero;
    /// written like 500ms, 30s, 2m.
    ///
    /// Example: --media-token-ttl 1m (TOML: media-token-ttl = "1m").
    #[arg(long, env = "LOUDSYNC_MEDIA_TOKEN_TTL", value_parser = duration)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    media_token_ttl: Option<Duration>,

    /// How often the admin event stream (`GET /v1/events`) writes a keep-alive comment, so
    /// proxies and browsers keep an idle stream open [default: 15s]. Must be greater than zero.
    ///
    /// Example: --events-keepalive 30s (TOML: events-keepalive = "30s").
    #[arg(long, env = "LOUDSYNC_EVENTS_KEEPALIVE", value_parser = duration)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    events_keepalive: Option<Duration>,

    /// How often the admin event stream writes a `stats` event (the dashboard's charts)
    /// [default: 1s]. Must be greater than zero.
    ///
    /// Example: --events-stats-interval 5s (TOML: events-stats-interval = "5s").
    #[arg(long, env = "LOUDSYNC_EVENTS_STATS_INTERVAL", value_parser = duration)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    events_stats_interval: Option<Duration>,

    /// Events the admin event stream keeps for a client that reconnects with
    /// `Last-Event-ID`; one further back gets `reset` [default: 1024]. At least 1.
    ///
    /// Example: --events-history 4096 (TOML: events-history = 4096).
    #[arg(long, env = "LOUDSYNC_EVENTS_HISTORY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    events_history: Option<usize>,

    /// Events a subscriber of the admin event stream may fall behind by before it is cut off
    /// with `overflow` (the memory bound per subscriber) [default: 256]. At least 1.
    ///
    /// Example: --events-buffer 1024 (TOML: events-buffer = 1024).
    #[arg(long, env = "LOUDSYNC_EVENTS_BUFFER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    events_buffer: Option<usize>,

    /// How long events are still recorded after the last subscriber of the admin event
    /// stream left, so one that reconnects within it misses nothing; after it sessions pay
    /// nothing for the stream [default: 60s]. Written like 500ms, 60s, 5m.
    ///
    /// Example: --events-linger 5m (TOML: events-linger = "5m").
    #[arg(long, env = "LOUDSYNC_EVENTS_LINGER", value_parser = duration)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    events_linger: Option<Duration>,

    /// Cluster mode (issue 16): several `loudsync serve` processes share one Redis, and any
    /// member may join or resume on any node. Off unless given; without it nothing is written
    /// to Redis and a single node pays nothing. See docs/ARCHITECTURE.md "The cluster".
    ///
    /// Example: --redis redis://127.0.0.1:6379 (TOML: redis = "redis://127.0.0.1:6379").
    #[arg(long, env = "LOUDSYNC_REDIS", value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    redis: Option<String>,

    /// This node's id in the cluster [default: random]. Must be unique among live nodes.
    ///
    /// Example: --node-id eu-1 (TOML: node-id = "eu-1").
    #[arg(long, env = "LOUDSYNC_NODE_ID", value_name = "ID")]
    #[serde(skip_serializing_if = "Option::is_none")]
    node_id: Option<String>,

    /// How clients reach this node, shown in the admin API's node list (cluster mode).
    ///
    /// Example: --advertise-url wss://eu-1.example.org (TOML: advertise-url = "...").
    #[arg(long, env = "LOUDSYNC_ADVERTISE_URL", value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    advertise_url: Option<String>,

    /// Cluster mode: a node or a session owner that has not renewed its lease in Redis for
    /// this long is dead, and its sessions are taken over [default: 10s]; renewals go every
    /// third of it. At least 300ms.
    ///
    /// Example: --lease 5s (TOML: lease = "5s").
    #[arg(long, env = "LOUDSYNC_LEASE", value_parser = duration)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    lease: Option<Duration>,

    /// Cluster mode: how often a node reads its sessions' streams even without a wake-up
    /// (pub/sub may lose one) [default: 250ms].
    ///
    /// Example: --cluster-poll 100ms (TOML: cluster-poll = "100ms").
    #[arg(long, env = "LOUDSYNC_CLUSTER_POLL", value_parser = duration)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    cluster_poll: Option<Duration>,

    /// Log filter, e.g. `info` or `loudsync_server=debug`.
    #[arg(long, env = "LOUDSYNC_LOG", default_value = "info")]
    #[serde(skip)]
    log: String,
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (write e.g. 500ms, 15s, 2m)"))
}

mod opt_duration {
    use serde::Serializer;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }
}

impl ServeArgs {
    /// Merges defaults < config file < environment < flags.
    pub fn resolve(&self) -> anyhow::Result<ServerConfig> {
        let mut figment = Figment::from(Serialized::defaults(ServerConfig::default()));
        if let Some(path) = &self.config {
            anyhow::ensure!(
                path.exists(),
                "config file {} does not exist",
                path.display()
            );
            figment = figment.merge(Toml::file(path));
        }
        // `LOUDSYNC_APPS` is read here, not by clap: it is split on `;`, and only when no
        // `--app` is given (so a flag's value is never split).
        if self.apps.is_empty() {
            if let Some(apps) = env_apps(std::env::var_os(APPS_ENV))? {
                figment = figment.merge(Serialized::default("apps", apps));
            }
        }
        // Clap has already put each flag over its `LOUDSYNC_*` variable.
        figment = figment.merge(Serialized::defaults(self));
        let (figment, token_file) = admin_token_file(figment, self.admin_token_file.as_ref())?;
        let mut config: ServerConfig = figment.extract().context("invalid settings")?;
        if let Some(path) = token_file {
            anyhow::ensure!(
                config.admin_token.is_none(),
                "give the admin token directly (--admin-token, LOUDSYNC_ADMIN_TOKEN, \
                 admin-token) or in a file (--admin-token-file, LOUDSYNC_ADMIN_TOKEN_FILE, \
                 admin-token-file), not both"
            );
            config.admin_token = Some(read_admin_token(&path)?);
        }
        if self.no_mdns {
            config.mdns = false;
        }
        config.validate().map_err(anyhow::Error::msg)?;
        Ok(config)
    }
}

/// The environment variable of `--app`.
const APPS_ENV: &str = "LOUDSYNC_APPS";

/// The app specs of `LOUDSYNC_APPS` (`alpha;secret:tokA,tokB`), or `None` when it is unset.
/// The value is split as `loudsync_protocol::pairing::parse_env_apps` does: on `;`, an empty
/// value is no app, an empty item is an error; each item is kept as the raw spec that
/// `ServerConfig::validate` checks with the others.
fn env_apps(value: Option<std::ffi::OsString>) -> anyhow::Result<Option<Vec<String>>> {
    let Some(value) = value else {
        return Ok(None);
    };
    let value = value
        .into_string()
        .map_err(|_| anyhow::anyhow!("{APPS_ENV} is not valid UTF-8"))?;
    loudsync_protocol::pairing::parse_env_apps(&value)
        .map_err(|e| anyhow::anyhow!("{APPS_ENV}: {e}"))?;
    if value.is_empty() {
        return Ok(Some(Vec::new()));
    }
    Ok(Some(value.split(';').map(str::to_string).collect()))
}

/// The admin token file named by the flag (or its variable), else by the TOML key
/// `admin-token-file`, which is taken out of the settings (it is the CLI's, not the server's).
fn admin_token_file(
    figment: Figment,
    flag: Option<&PathBuf>,
) -> anyhow::Result<(Figment, Option<PathBuf>)> {
    let Ok(value) = figment.find_value("admin-token-file") else {
        return Ok((figment, flag.cloned()));
    };
    let from_file: PathBuf = value
        .deserialize()
        .context("invalid settings: `admin-token-file` must be a path")?;
    let mut dict: figment::value::Dict = figment.extract().context("invalid settings")?;
    dict.remove("admin-token-file");
    let rest = Figment::from(Serialized::defaults(dict));
    Ok((rest, Some(flag.cloned().unwrap_or(from_file))))
}

/// The token in `path`, without its trailing newline; an empty or blank file is refused.
fn read_admin_token(path: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the admin token file {}", path.display()))?;
    let token = text.trim_end_matches(['\n', '\r']);
    anyhow::ensure!(
        !token.trim().is_empty(),
        "the admin token file {} is empty",
        path.display()
    );
    Ok(token.to_string())
}

/// Runs the server until a shutdown signal.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log))
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in a log file or journal.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let config = args.resolve()?;
    let runtime = runtime(config.worker_threads)?;
    runtime.block_on(async move {
        let signalled = shutdown_signal()?;
        let listen = config.listen;
        let server = Server::bind(config).await.map_err(|e| {
            // A media relay failure names its own address (`--media-listen`).
            if loudsync_server::media::relay::MediaBindError::is(&e) {
                anyhow::Error::new(e)
            } else {
                anyhow::Error::new(e).context(format!("cannot listen on {listen}"))
            }
        })?;
        let scheme = if server.is_tls() { "https" } else { "http" };
        println!("loudsync listening on {scheme}://{}", server.local_addr());
        signalled.await;
        tracing::info!("shutting down");
        server.shutdown().await;
        Ok(())
    })
}

/// The runtime for `worker_threads` (0: one worker per core; 1: everything on this thread).
pub fn runtime(worker_threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = match worker_threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if n > 1 {
                b.worker_threads(n);
            }
            b
        }
    };
    Ok(builder.enable_all().build()?)
}

/// Installs the SIGINT (Ctrl-C) and SIGTERM handlers at once, so a signal that arrives as soon
/// as the server is up is never missed; the returned future completes on the first signal.
/// `media serve` uses it too, installed before its socket is bound.
#[cfg(unix)]
pub(crate) fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}

#[cfg(not(unix))]
pub(crate) fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        args: ServeArgs,
    }

    #[test]
    fn flags_beat_the_file_which_beats_defaults() {
        let dir = std::env::temp_dir().join(format!("loudsync-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("loudsync.toml");
        std::fs::write(
            &file,
            "max-members = 20\nheartbeat-timeout = \"30s\"\nrate-limit = 7\n",
        )
        .unwrap();
        let t = T::parse_from([
            "x",
            "--config",
            file.to_str().unwrap(),
            "--heartbeat-timeout",
            "500ms",
        ]);
        let c = t.args.resolve().unwrap();
        assert_eq!(c.max_members, 20);
        assert_eq!(c.rate_limit, 7);
        assert_eq!(c.heartbeat_timeout, Duration::from_millis(500));
        assert_eq!(c.heartbeat_check_interval, Duration::from_secs(5));
    }

    #[test]
    fn the_admin_token_comes_from_a_file_by_flag_or_toml_key_never_both() {
        let dir = std::env::temp_dir().join(format!("loudsync-tok-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let token = dir.join("token");
        std::fs::write(&token, "s3cret\n").unwrap();
        let path = token.to_str().unwrap();
        let c = T::parse_from(["x", "--admin-token-file", path])
            .args
            .resolve()
            .unwrap();
        assert_eq!(c.admin_token.as_deref(), Some("s3cret"));

        let toml = dir.join("with-file.toml");
        std::fs::write(
            &toml,
            format!("admin-token-file = {path:?}\nmax-members = 3\n"),
        )
        .unwrap();
        let c = T::parse_from(["x", "--config", toml.to_str().unwrap()])
            .args
            .resolve()
            .unwrap();
        assert_eq!(c.admin_token.as_deref(), Some("s3cret"));
        assert_eq!(c.max_members, 3, "the other keys still apply");

        let both = T::parse_from([
            "x",
            "--config",
            toml.to_str().unwrap(),
            "--admin-token",
            "t",
        ]);
        let err = format!("{:#}", both.args.resolve().unwrap_err());
        assert!(err.contains("not both"), "{err}");
        assert!(
            T::try_parse_from(["x", "--admin-token", "t", "--admin-token-file", path]).is_err(),
            "both flags"
        );

        let empty = dir.join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let t = T::parse_from(["x", "--admin-token-file", empty.to_str().unwrap()]);
        let err = format!("{:#}", t.args.resolve().unwrap_err());
        assert!(err.contains("is empty"), "{err}");
        let t = T::parse_from(["x", "--admin-token-file", "/nonexistent/token"]);
        let err = format!("{:#}", t.args.resolve().unwrap_err());
        assert!(err.contains("cannot read the admin token file"), "{err}");
    }

    #[test]
    fn unknown_file_keys_are_errors() {
        let dir = std::env::temp_dir().join(format!("loudsync-cfg2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bad.toml");
        std::fs::write(&file, "max-memberz = 20\n").unwrap();
        let t = T::parse_from(["x", "--config", file.to_str().unwrap()]);
        let err = format!("{:#}", t.args.resolve().unwrap_err());
        assert!(err.contains("max-memberz"), "{err}");
    }
    #[test]
    fn edge_flags_beat_the_file_and_bad_ones_are_refused() {
        let dir = std::env::temp_dir().join(format!("loudsync-cfg3-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("edge.toml");
        std::fs::write(
            &file,
            "trusted-proxies = [\"10.0.0.0/8\"]\nrequest-timeout = \"3s\"\nmax-connections = 50\n",
        )
        .unwrap();
        let from_file = T::parse_from(["x", "--config", file.to_str().unwrap()]);
        let c = from_file.args.resolve().unwrap();
        assert_eq!(c.trusted_proxies, vec!["10.0.0.0/8".parse().unwrap()]);
        assert_eq!(c.request_timeout, Duration::from_secs(3));
        assert_eq!(c.max_connections, 50);
        let t = T::parse_from([
            "x",
            "--config",
            file.to_str().unwrap(),
            "--trusted-proxy",
            "127.0.0.1,fd00::/8",
            "--max-connections-per-address",
            "7",
            "--join-rate-per-address",
            "0",
        ]);
        let c = t.args.resolve().unwrap();
        let proxies: Vec<String> = c.trusted_proxies.iter().map(|p| p.to_string()).collect();
        assert_eq!(proxies, ["127.0.0.1", "fd00::/8"]);
        assert_eq!(c.max_connections_per_address, 7);
        assert_eq!(c.join_rate_per_address, 0);
        assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
        assert!(T::try_parse_from(["x", "--trusted-proxy", "proxy.local"]).is_err());
        assert!(
            T::try_parse_from(["x", "--tls-cert", "cert.pem"]).is_err(),
            "--tls-cert needs --tls-key"
        );
        let t = T::parse_from(["x", "--tls-cert", "c.pem", "--tls-key", "k.pem"]);
        let c = t.args.resolve().unwrap();
        assert_eq!(c.tls_cert, Some("c.pem".into()));
        assert_eq!(c.tls_key, Some("k.pem".into()));
    }

    #[test]
    fn pairing_settings_come_from_the_file_and_flags_replace_its_lists() {
        let dir = std::env::temp_dir().join(format!("loudsync-cfg5-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pairing.toml");
        std::fs::write(
            &file,
            format!(
                "apps = [\"alpha\", \"secret:tokA,tokB\"]\npairing-alive-timeout = \"40s\"\n\
                 pairing-pages = {:?}\npairing-cors-origins = [\"https://a.example\"]\n",
                dir.to_str().unwrap()
            ),
        )
        .unwrap();
        let cfg = file.to_str().unwrap();
        let c = T::parse_from(["x", "--config", cfg])
            .args
            .resolve()
            .unwrap();
        assert_eq!(c.apps, ["alpha", "secret:tokA,tokB"]);
        assert_eq!(c.pairing_alive_timeout, Duration::from_secs(40));
        assert_eq!(c.pairing_pages.as_deref(), Some(dir.as_path()));
        assert_eq!(c.pairing_cors_origins, ["https://a.example"]);
        let c = T::parse_from([
            "x",
            "--config",
            cfg,
            "--app",
            "beta:t1",
            "--app",
            "gamma",
            "--pairing-alive-timeout",
            "2s",
            "--pairing-cors-origin",
            "http://localhost:3000,https://b.example",
            "--pairing-cors-origin",
            "*",
        ])
        .args
        .resolve()
        .unwrap();
        assert_eq!(
            c.apps,
            ["beta:t1", "gamma"],
            "the flags replace the file's list"
        );
        assert_eq!(c.pairing_alive_timeout, Duration::from_secs(2));
        assert_eq!(
            c.pairing_cors_origins,
            ["http://localhost:3000", "https://b.example", "*"]
        );
        let defaults = T::parse_from(["x"]).args.resolve().unwrap();
        assert!(defaults.apps.is_empty(), "pairing is off unless asked");
        assert_eq!(defaults.pairing_alive_timeout, Duration::from_secs(25));
        assert_eq!(defaults.pairing_pages, None);
    }

    #[test]
    fn a_flag_value_is_one_spec_never_split_on_semicolons() {
        let e = T::parse_from(["x", "--app", "a:t;b"])
            .args
            .resolve()
            .unwrap_err();
        assert!(e.to_string().contains("invalid app `a`: token 1"), "{e}");
    }

    #[test]
    fn the_apps_variable_splits_on_semicolons() {
        assert_eq!(env_apps(None).unwrap(), None, "unset: the file's apps stay");
        assert_eq!(
            env_apps(Some("alpha;secret:tokA,tokB".into())).unwrap(),
            Some(vec!["alpha".to_string(), "secret:tokA,tokB".to_string()])
        );
        assert_eq!(env_apps(Some("".into())).unwrap(), Some(vec![]));
        for (bad, says) in [
            ("a;;b", "invalid app ``"),
            ("a;", "invalid app ``"),
            ("a;b:t;a", "app `a` is configured twice"),
            ("a:to,,k", "invalid app `a`: token 2"),
        ] {
            let e = env_apps(Some(bad.into())).unwrap_err().to_string();
            assert!(e.starts_with("LOUDSYNC_APPS: "), "{bad:?}: {e}");
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn resume_settings_come_from_flags_and_the_file_and_zero_is_refused() {
        let dir = std::env::temp_dir().join(format!("loudsync-cfg4-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("resume.toml");
        std::fs::write(&file, "resume-window = \"2m\"\nack-every = 10\n").unwrap();
        let c = T::parse_from(["x", "--config", file.to_str().unwrap()])
            .args
            .resolve()
            .unwrap();
        assert_eq!(c.resume_window, Duration::from_secs(120));
        assert_eq!(c.ack_every, 10);
        assert_eq!(c.resume_buffer_messages, 1000, "the default");
        let c = T::parse_from([
            "x",
            "--resume-window",
            "45s",
            "--resume-buffer-messages",
            "50",
            "--resume-buffer-bytes",
            "4096",
            "--ack-interval",
            "250ms",
            "--ack-every",
            "3",
        ])
        .args
        .resolve()
        .unwrap();
        assert_eq!(c.resume_window, Duration::from_secs(45));
        assert_eq!(c.resume_buffer_messages, 50);
        assert_eq!(c.resume_buffer_bytes, 4096);
        assert_eq!(c.ack_interval, Duration::from_millis(250));
        assert_eq!(c.ack_every, 3);
        for bad in [
            ["--resume-window", "0s"],
            ["--ack-interval", "0s"],
            ["--ack-every", "0"],
            ["--resume-buffer-messages", "0"],
            ["--resume-buffer-bytes", "0"],
        ] {
            let e = T::parse_from(["x", bad[0], bad[1]])
                .args
                .resolve()
                .unwrap_err();
            let name = bad[0].trim_start_matches("--");
            assert!(e.to_string().contains(name), "{bad:?}: {e}");
        }
    }

    #[test]
    fn media_settings_come_from_flags_and_the_file_and_a_zero_ttl_is_refused() {
        let c = T::parse_from(["x"]).args.resolve().unwrap();
        assert_eq!(c.media_listen, None, "the relay is off unless asked");
        assert_eq!(c.media_token_ttl, Duration::from_secs(30));
        let dir = std::env::temp_dir().join(format!("loudsync-cfg5-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("media.toml");
        std::fs::write(
            &file,
            "media-listen = \"127.0.0.1:4444\"\nmedia-token-ttl = \"1m\"\n",
        )
        .unwrap();
        let c = T::parse_from(["x", "--config", file.to_str().unwrap()])
            .args
            .resolve()
            .unwrap();
        assert_eq!(c.media_listen, Some("127.0.0.1:4444".parse().unwrap()));
        assert_eq!(c.media_token_ttl, Duration::from_secs(60));
        let c = T::parse_from([
            "x",
            "--config",
            file.to_str().unwrap(),
            "--media-listen",
            "127.0.0.1:0",
            "--media-token-ttl",
            "1500ms",
        ])
        .args
        .resolve()
        .unwrap();
        assert_eq!(c.media_listen, Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(c.media_token_ttl, Duration::from_millis(1500));
        let e = T::parse_from(["x", "--media-token-ttl", "0s"])
            .args
            .resolve()
            .unwrap_err();
        assert!(e.to_string().contains("media-token-ttl"), "{e}");
        assert!(T::try_parse_from(["x", "--media-token-ttl", "30"]).is_err());
        assert!(T::try_parse_from(["x", "--media-listen", "nowhere"]).is_err());
    }

    #[test]
    fn event_stream_settings_come_from_flags_and_the_file_and_zero_is_refused() {
        let c = T::parse_from(["x"]).args.resolve().unwrap();
        assert_eq!(c.events_keepalive, Duration::from_secs(15));
        assert_eq!(c.events_stats_interval, Duration::from_secs(1));
        assert_eq!(c.events_history, 1024);
        assert_eq!(c.events_buffer, 256);
        assert_eq!(c.events_linger, Duration::from_secs(60));
        let dir = std::env::temp_dir().join(format!("loudsync-cfg6-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("events.toml");
        std::fs::write(
            &file,
            "events-keepalive = \"30s\"\nevents-stats-interval = \"2s\"\n\
             events-history = 10\nevents-buffer = 20\nevents-linger = \"5m\"\n",
        )
        .unwrap();
        let c = T::parse_from(["x", "--config", file.to_str().unwrap()])
            .args
            .resolve()
            .unwrap();
        assert_eq!(c.events_keepalive, Duration::from_secs(30));
        assert_eq!(c.events_stats_interval, Duration::from_secs(2));
        assert_eq!(c.events_history, 10);
        assert_eq!(c.events_buffer, 20);
        assert_eq!(c.events_linger, Duration::from_secs(300));
        let c = T::parse_from([
            "x",
            "--config",
            file.to_str().unwrap(),
            "--events-keepalive",
            "500ms",
            "--events-stats-interval",
            "250ms",
            "--events-history",
            "7",
            "--events-buffer",
            "8",
            "--events-linger",
            "0s",
        ])
        .args
        .resolve()
        .unwrap();
        assert_eq!(c.events_keepalive, Duration::from_millis(500));
        assert_eq!(c.events_stats_interval, Duration::from_millis(250));
        assert_eq!(c.events_history, 7);
        assert_eq!(c.events_buffer, 8);
        assert_eq!(c.events_linger, Duration::ZERO);
        for bad in [
            ["--events-keepalive", "0s"],
            ["--events-stats-interval", "0s"],
            ["--events-history", "0"],
            ["--events-buffer", "0"],
        ] {
            let e = T::parse_from(["x", bad[0], bad[1]])
                .args
                .resolve()
                .unwrap_err();
            let name = bad[0].trim_start_matches("--");
            assert!(e.to_string().contains(name), "{bad:?}: {e}");
        }
        assert!(T::try_parse_from(["x", "--events-linger", "60"]).is_err());
    }
}
