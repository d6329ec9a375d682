//! LAN discovery the LOUDSYNC app understands, off by default (`--discovery`): answers
//! `LOUDSYNC_DISCOVER` datagrams, broadcasts each open session's `LOUDSYNC_RESPONSE:`
//! advertisement every few seconds, and advertises each session over mDNS
//! (`_loudsync._tcp`, instance `loudsync-<sessionId>`, the app's TXT records).
//!
//! The record formats are the protocol crate's ([`loudsync_protocol::discovery`]); this module
//! builds each session's [`Advertisement`] ([`advertisement`]) and its mDNS service record
//! ([`mdns_service`]), both tested without putting a packet on the network, and the task
//! ([`spawn`]) only sends them.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::Arc;

use loudsync_protocol::discovery::{is_discover, mdns_fullname};
pub use loudsync_protocol::discovery::{
    mdns_instance, mdns_txt, parse_response, response_datagram, Advertisement, APP_VERSION,
    DISCOVER, MDNS_SERVICE, RESPONSE_PREFIX,
};
use tokio::net::UdpSocket;

use crate::clock::now;
use crate::sessions::SessionView;
use crate::state::ServerState;

/// One session's advertisement, with the app's fields.
pub fn advertisement(
    view: &SessionView,
    host_address: IpAddr,
    port: u16,
    now_ms: u64,
) -> Advertisement {
    let host = view.host_device.clone().unwrap_or_default();
    Advertisement {
        host_address: Some(host_address.to_string()),
        host_id: host.device_id,
        host_name: host.name,
        is_password_protected: view.password_protected,
        max_members: view.max_members as u64,
        member_count: view.members.len() as u64,
        port,
        session_id: view.id.clone(),
        session_name: view.name.clone(),
        timestamp: Some(now_ms),
        version: APP_VERSION.to_string(),
    }
}

/// The mDNS service record of an advertisement: our WebSocket port, the host address.
pub fn mdns_service(
    ad: &Advertisement,
    host_name: &str,
) -> Result<mdns_sd::ServiceInfo, mdns_sd::Error> {
    let ip = ad
        .host_address
        .as_deref()
        .unwrap_or("127.0.0.1")
        .to_string();
    let txt: HashMap<String, String> = mdns_txt(ad)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    mdns_sd::ServiceInfo::new(
        MDNS_SERVICE,
        &mdns_instance(&ad.session_id),
        &format!("{host_name}.local."),
        ip,
        ad.port,
        txt,
    )
}

/// The address to advertise: the configured one, the listen address if it is specific, or
/// the address of the interface the default route uses (found without sending anything).
pub fn host_address(configured: Option<IpAddr>, listen: SocketAddr) -> IpAddr {
    if let Some(ip) = configured {
        return ip;
    }
    if !listen.ip().is_unspecified() {
        return listen.ip();
    }
    StdUdpSocket::bind(("0.0.0.0", 0))
        .and_then(|s| {
            s.connect(("192.0.2.1", 9))?; // TEST-NET-1: a connect() picks a route, sends nothing
            s.local_addr()
        })
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// Starts discovery: binds the UDP port now (so a bad port fails `bind`), then answers,
/// broadcasts and keeps mDNS current in a task. Returns the task.
pub async fn spawn(
    app: Arc<ServerState>,
    local: SocketAddr,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let cfg = &app.config;
    let socket = UdpSocket::bind(("0.0.0.0", cfg.discovery_port)).await?;
    socket.set_broadcast(true)?;
    let host_ip = host_address(cfg.advertise_address, local);
    let mdns = if cfg.mdns {
        let daemon = mdns_sd::ServiceDaemon::new().map_err(std::io::Error::other)?;
        if !cfg.mdns_interfaces.is_empty() {
            let _ = daemon.disable_interface(mdns_sd::IfKind::All);
            for name in &cfg.mdns_interfaces {
                let _ = daemon.enable_interface(mdns_sd::IfKind::Name(name.clone()));
            }
        }
        Some(daemon)
    } else {
        None
    };
    tracing::info!(port = cfg.discovery_port, broadcast = %cfg.discovery_broadcast, mdns = cfg.mdns, "LAN discovery on");
    Ok(tokio::spawn(run(app, socket, host_ip, local.port(), mdns)))
}

async fn ads(app: &ServerState, host_ip: IpAddr, port: u16) -> Vec<Advertisement> {
    let now_ms = now().unix_ms;
    let mut ads = Vec::new();
    for handle in app.registry.all() {
        if let Some(view) = handle.view().await {
            ads.push(advertisement(&view, host_ip, port, now_ms));
        }
    }
    ads
}

async fn run(
    app: Arc<ServerState>,
    socket: UdpSocket,
    host_ip: IpAddr,
    port: u16,
    mdns: Option<mdns_sd::ServiceDaemon>,
) {
    let cfg = app.config.clone();
    let mut tick = tokio::time::interval(cfg.discovery_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let host_name = hostname();
    // Session id -> the TXT records last registered.
    let mut registered: HashMap<String, Vec<(&'static str, String)>> = HashMap::new();
    let mut buf = [0u8; 512];
    loop {
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                let Ok((n, from)) = received else { continue };
                if !is_discover(&buf[..n]) {
                    continue;
                }
                let answers = [SocketAddr::new(from.ip(), cfg.discovery_port), from];
                for ad in ads(&app, host_ip, port).await {
                    let datagram = response_datagram(&ad);
                    for to in answers.iter().take(if from.port() == cfg.discovery_port { 1 } else { 2 }) {
                        let _ = socket.send_to(&datagram, to).await;
                    }
                }
            }
            _ = tick.tick() => {
                let ads = ads(&app, host_ip, port).await;
                for ad in &ads {
                    let _ = socket.send_to(&response_datagram(ad), cfg.discovery_broadcast).await;
                }
                if let Some(daemon) = &mdns {
                    sync_mdns(daemon, &ads, &host_name, &mut registered);
                }
            }
        }
    }
}

/// Registers new sessions, re-registers changed ones, unregisters ended ones.
fn sync_mdns(
    daemon: &mdns_sd::ServiceDaemon,
    ads: &[Advertisement],
    host_name: &str,
    registered: &mut HashMap<String, Vec<(&'static str, String)>>,
) {
    let mut live = HashMap::new();
    for ad in ads {
        let id = ad.session_id.clone();
        // The timestamp changes every time; compare the rest.
        let txt: Vec<_> = mdns_txt(ad)
            .into_iter()
            .filter(|(k, _)| *k != "timestamp")
            .collect();
        if registered.get(&id) != Some(&txt) {
            match mdns_service(ad, host_name) {
                Ok(info) => {
                    if let Err(e) = daemon.register(info) {
                        tracing::warn!(session = id, error = %e, "mDNS register failed");
                    }
                }
                Err(e) => tracing::warn!(session = id, error = %e, "mDNS record invalid"),
            }
        }
        live.insert(id, txt);
    }
    for id in registered.keys() {
        if !live.contains_key(id) {
            let _ = daemon.unregister(&mdns_fullname(id));
        }
    }
    *registered = live;
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "loudsync".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use loudsync_protocol::{ConnectionStatus, MemberInfo};

    fn view() -> SessionView {
        let m = |id: &str, dev: &str, name: &str, host: bool| MemberInfo {
            id: id.into(),
            name: name.into(),
            is_host: host,
            connection_status: ConnectionStatus::Connected,
            joined_at: 1,
            latency: None,
            handoff_ready: false,
            device_id: dev.into(),
        };
        SessionView {
            id: "K7P-3XQ".into(),
            name: "Friday Jam".into(),
            max_members: 10,
            host_id: Some("c_h".into()),
            password_protected: false,
            host_device: Some(loudsync_protocol::DeviceRef {
                device_id: "host-dev".into(),
                name: "Device 7".into(),
            }),
            members: vec![
                m("c_h", "host-dev", "Device 7", true),
                m("c_g", "guest-dev", "Device 42", false),
            ],
            dialects: Vec::new(),
            state: None,
        }
    }

    #[test]
    fn advertisement_has_the_apps_fields() {
        let ad = advertisement(
            &view(),
            "192.168.1.100".parse().unwrap(),
            8080,
            1738930100000,
        );
        let datagram = String::from_utf8(response_datagram(&ad)).unwrap();
        assert_eq!(
            datagram,
            r#"LOUDSYNC_RESPONSE:{"hostAddress":"192.168.1.100","hostId":"host-dev","hostName":"Device 7","isPasswordProtected":false,"maxMembers":10,"memberCount":2,"port":8080,"sessionId":"K7P-3XQ","sessionName":"Friday Jam","timestamp":1738930100000,"version":"1.0.0"}"#
        );
        assert_eq!(parse_response(datagram.as_bytes()), Some(ad));
    }

    #[test]
    fn a_session_with_a_password_is_advertised_as_protected() {
        let mut v = view();
        v.password_protected = true;
        let ad = advertisement(&v, "10.0.0.1".parse().unwrap(), 1, 2);
        assert!(ad.is_password_protected);
        assert_eq!(
            mdns_txt(&ad)
                .into_iter()
                .find(|(k, _)| *k == "password_protected")
                .unwrap()
                .1,
            "true"
        );
    }

    #[test]
    fn a_session_without_a_host_advertises_empty_host_fields() {
        let mut v = view();
        v.host_id = None;
        v.host_device = None;
        let ad = advertisement(&v, "10.0.0.1".parse().unwrap(), 1, 2);
        assert_eq!((ad.host_id.as_str(), ad.host_name.as_str()), ("", ""));
        // Created over HTTP with a host name: that name, until a host joins.
        v.host_device = Some(loudsync_protocol::DeviceRef {
            device_id: String::new(),
            name: "Front desk".into(),
        });
        let ad = advertisement(&v, "10.0.0.1".parse().unwrap(), 1, 2);
        assert_eq!(
            (ad.host_id.as_str(), ad.host_name.as_str()),
            ("", "Front desk")
        );
        assert_eq!(ad.member_count, 2);
    }

    #[test]
    fn mdns_records_are_the_apps() {
        let ad = advertisement(&view(), "192.168.1.100".parse().unwrap(), 8080, 42);
        let txt: HashMap<_, _> = mdns_txt(&ad).into_iter().collect();
        assert_eq!(txt["session_name"], "Friday Jam");
        assert_eq!(txt["host_id"], "host-dev");
        assert_eq!(txt["host_name"], "Device 7");
        assert_eq!(txt["member_count"], "2");
        assert_eq!(txt["max_members"], "10");
        assert_eq!(txt["password_protected"], "false");
        assert_eq!(txt["version"], "1.0.0");
        assert_eq!(txt["timestamp"], "42");
        assert_eq!(txt.len(), 8);
        let info = mdns_service(&ad, "box").unwrap();
        assert_eq!(
            info.get_fullname(),
            "loudsync-K7P-3XQ._loudsync._tcp.local."
        );
        assert_eq!(info.get_port(), 8080);
        assert_eq!(info.get_hostname(), "box.local.");
        assert_eq!(info.get_property_val_str("member_count"), Some("2"));
        assert!(info
            .get_addresses()
            .contains(&"192.168.1.100".parse::<IpAddr>().unwrap()));
    }

    #[test]
    fn host_address_prefers_configuration_then_listen_address() {
        let listen: SocketAddr = "10.0.0.5:8080".parse().unwrap();
        assert_eq!(
            host_address(Some("192.168.1.7".parse().unwrap()), listen),
            "192.168.1.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            host_address(None, listen),
            "10.0.0.5".parse::<IpAddr>().unwrap()
        );
    }
}
