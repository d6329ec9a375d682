//! LAN discovery's record formats, as the LOUDSYNC app reads them (§11 of `docs/PROTOCOL.md`):
//! the `LOUDSYNC_DISCOVER` query, the `LOUDSYNC_RESPONSE:` advertisement datagram, and the mDNS
//! `_loudsync._tcp` instance name and TXT records.
//!
//! Pure format and parse functions, no I/O: the UDP socket and the mDNS daemon belong to the
//! server (`crates/server/src/discovery.rs`, which advertises) and to `loudsync discover`
//! (`crates/cli/src/discover.rs`, which asks).

use serde::{Deserialize, Serialize};

pub use crate::app::APP_VERSION;

/// The query datagram: exactly these 17 ASCII bytes.
pub const DISCOVER: &[u8] = b"LOUDSYNC_DISCOVER";
/// The prefix of an advertisement datagram, followed at once by the advertisement's JSON.
pub const RESPONSE_PREFIX: &str = "LOUDSYNC_RESPONSE:";
/// The mDNS service type.
pub const MDNS_SERVICE: &str = "_loudsync._tcp.local.";
/// The prefix of a session's mDNS instance name (`loudsync-<sessionId>`).
pub const MDNS_INSTANCE_PREFIX: &str = "loudsync-";

/// Whether a datagram is the discovery query (exactly [`DISCOVER`], nothing more or less).
pub fn is_discover(datagram: &[u8]) -> bool {
    datagram == DISCOVER
}

/// One session's advertisement, with the app's fields (§11.2).
///
/// Serialised with its keys in alphabetical order (the field order below), as the server sends
/// it. Reading is lenient the way a client must be: only `sessionId` is required, a missing
/// field takes its default, and unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Advertisement {
    /// Where the server's HTTP and WebSocket port is reached. Always set by the server;
    /// `None` (written `null`) for an mDNS answer without a resolved address.
    #[serde(default)]
    pub host_address: Option<String>,
    /// The host's device id (`deviceInfo.id`), `""` while there is no host.
    #[serde(default)]
    pub host_id: String,
    /// The host's name, `""` while there is no host.
    #[serde(default)]
    pub host_name: String,
    /// Always `false` from LoudSync.
    #[serde(default)]
    pub is_password_protected: bool,
    /// The session's capacity.
    #[serde(default)]
    pub max_members: u64,
    /// Current members, host included.
    #[serde(default)]
    pub member_count: u64,
    /// The server's HTTP and WebSocket port.
    #[serde(default)]
    pub port: u16,
    /// The session id.
    pub session_id: String,
    /// The session's display name.
    #[serde(default)]
    pub session_name: String,
    /// When the advertisement was built, ms since the Unix epoch; `None` (left out) when it
    /// was rebuilt from mDNS TXT records (see [`from_mdns_txt`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<u64>,
    /// The app's version, [`APP_VERSION`] from LoudSync.
    #[serde(default)]
    pub version: String,
}

/// The advertisement datagram: [`RESPONSE_PREFIX`] followed by the advertisement's JSON.
pub fn response_datagram(ad: &Advertisement) -> Vec<u8> {
    let json = serde_json::to_string(ad).expect("an advertisement serialises");
    format!("{RESPONSE_PREFIX}{json}").into_bytes()
}

/// Reads an advertisement datagram; `None` for anything else (another prefix, not UTF-8, not
/// JSON, no string `sessionId`, a field of the wrong type).
pub fn parse_response(datagram: &[u8]) -> Option<Advertisement> {
    let text = std::str::from_utf8(datagram).ok()?;
    serde_json::from_str(text.strip_prefix(RESPONSE_PREFIX)?).ok()
}

/// A session's mDNS instance name, `loudsync-<sessionId>`.
pub fn mdns_instance(session_id: &str) -> String {
    format!("{MDNS_INSTANCE_PREFIX}{session_id}")
}

/// A session's full mDNS service name, `loudsync-<sessionId>._loudsync._tcp.local.`.
pub fn mdns_fullname(session_id: &str) -> String {
    format!("{}.{MDNS_SERVICE}", mdns_instance(session_id))
}

/// The session id in a full mDNS service name, if it is one of ours
/// (`loudsync-<sessionId>._loudsync._tcp.local.`).
pub fn session_id_from_mdns_fullname(fullname: &str) -> Option<&str> {
    fullname
        .strip_prefix(MDNS_INSTANCE_PREFIX)?
        .strip_suffix(MDNS_SERVICE)?
        .strip_suffix('.')
        .filter(|id| !id.is_empty())
}

/// The app's TXT keys, in the order they are registered.
pub const MDNS_TXT_KEYS: [&str; 8] = [
    "session_name",
    "host_id",
    "host_name",
    "member_count",
    "max_members",
    "password_protected",
    "version",
    "timestamp",
];

/// The app's mDNS TXT records for an advertisement (§11.3): every value a string, in the order
/// of [`MDNS_TXT_KEYS`]. `timestamp` is left out when the advertisement has none.
pub fn mdns_txt(ad: &Advertisement) -> Vec<(&'static str, String)> {
    let mut txt = vec![
        ("session_name", ad.session_name.clone()),
        ("host_id", ad.host_id.clone()),
        ("host_name", ad.host_name.clone()),
        ("member_count", ad.member_count.to_string()),
        ("max_members", ad.max_members.to_string()),
        ("password_protected", ad.is_password_protected.to_string()),
        ("version", ad.version.clone()),
    ];
    if let Some(ts) = ad.timestamp {
        txt.push(("timestamp", ts.to_string()));
    }
    txt
}

/// Rebuilds an advertisement from a resolved mDNS service: its session id (see
/// [`session_id_from_mdns_fullname`]), its TXT records (`txt(key)`), its first address and its
/// SRV port. A missing or unreadable record takes its default (`""`, `0`, `false`).
/// `timestamp` is left out: over mDNS it is the time of the last registration, not of an
/// answer.
pub fn from_mdns_txt<'a>(
    session_id: &str,
    txt: impl Fn(&str) -> Option<&'a str>,
    host_address: Option<String>,
    port: u16,
) -> Advertisement {
    let text = |k: &str| txt(k).unwrap_or_default().to_string();
    let number = |k: &str| txt(k).and_then(|v| v.parse().ok()).unwrap_or(0);
    Advertisement {
        host_address,
        host_id: text("host_id"),
        host_name: text("host_name"),
        is_password_protected: txt("password_protected") == Some("true"),
        max_members: number("max_members"),
        member_count: number("member_count"),
        port,
        session_id: session_id.to_string(),
        session_name: text("session_name"),
        timestamp: None,
        version: text("version"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn example() -> Advertisement {
        Advertisement {
            host_address: Some("192.168.1.100".into()),
            host_id: "host-dev".into(),
            host_name: "Device 7".into(),
            is_password_protected: false,
            max_members: 10,
            member_count: 2,
            port: 8080,
            session_id: "K7P-3XQ".into(),
            session_name: "Friday Jam".into(),
            timestamp: Some(1738930100000),
            version: APP_VERSION.into(),
        }
    }

    #[test]
    fn the_datagram_is_the_documents_byte_for_byte() {
        let datagram = response_datagram(&example());
        assert_eq!(
            std::str::from_utf8(&datagram).unwrap(),
            r#"LOUDSYNC_RESPONSE:{"hostAddress":"192.168.1.100","hostId":"host-dev","hostName":"Device 7","isPasswordProtected":false,"maxMembers":10,"memberCount":2,"port":8080,"sessionId":"K7P-3XQ","sessionName":"Friday Jam","timestamp":1738930100000,"version":"1.0.0"}"#
        );
        assert_eq!(parse_response(&datagram), Some(example()));
    }

    #[test]
    fn parsing_is_lenient_but_needs_a_session_id() {
        let ad =
            parse_response(br#"LOUDSYNC_RESPONSE:{"sessionId":"s","extra":[1],"port":9}"#).unwrap();
        assert_eq!(ad.session_id, "s");
        assert_eq!(ad.port, 9);
        assert_eq!(ad.host_address, None);
        assert_eq!(ad.timestamp, None);
        for bad in [
            &b"LOUDSYNC_RESPONSE:not json"[..],
            b"LOUDSYNC_RESPONSE:{\"port\":1}",
            b"LOUDSYNC_RESPONSE:{\"sessionId\":7}",
            b"LOUDSYNC_RESPONSE:{\"sessionId\":\"s\",\"port\":\"x\"}",
            b"something else",
            b"LOUDSYNC_RESPONSE:\xff",
        ] {
            assert_eq!(parse_response(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn only_the_exact_query_is_a_query() {
        assert!(is_discover(b"LOUDSYNC_DISCOVER"));
        assert!(!is_discover(b"LOUDSYNC_DISCOVER\n"));
        assert!(!is_discover(b"HELLO"));
        assert_eq!(DISCOVER.len(), 17);
    }

    #[test]
    fn mdns_names_and_txt_records_are_the_apps() {
        assert_eq!(mdns_instance("K7P-3XQ"), "loudsync-K7P-3XQ");
        assert_eq!(
            mdns_fullname("K7P-3XQ"),
            "loudsync-K7P-3XQ._loudsync._tcp.local."
        );
        assert_eq!(
            session_id_from_mdns_fullname("loudsync-K7P-3XQ._loudsync._tcp.local."),
            Some("K7P-3XQ")
        );
        assert_eq!(
            session_id_from_mdns_fullname("other-K7P._loudsync._tcp.local."),
            None
        );
        assert_eq!(
            session_id_from_mdns_fullname("loudsync-._loudsync._tcp.local."),
            None
        );

        let txt = mdns_txt(&example());
        let keys: Vec<_> = txt.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, MDNS_TXT_KEYS);
        let map: HashMap<_, _> = txt.into_iter().collect();
        assert_eq!(map["session_name"], "Friday Jam");
        assert_eq!(map["host_id"], "host-dev");
        assert_eq!(map["host_name"], "Device 7");
        assert_eq!(map["member_count"], "2");
        assert_eq!(map["max_members"], "10");
        assert_eq!(map["password_protected"], "false");
        assert_eq!(map["version"], "1.0.0");
        assert_eq!(map["timestamp"], "1738930100000");

        // Read back as `loudsync discover` does: everything but the timestamp.
        let back = from_mdns_txt(
            "K7P-3XQ",
            |k| map.get(k).map(String::as_str),
            Some("192.168.1.100".into()),
            8080,
        );
        assert_eq!(
            back,
            Advertisement {
                timestamp: None,
                ..example()
            }
        );
        let empty = from_mdns_txt("s", |_| None, None, 1);
        assert_eq!(empty.member_count, 0);
        assert_eq!(empty.session_name, "");
        assert!(!empty.is_password_protected);
    }
}
