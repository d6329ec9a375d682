//! `loudsync discover`: finds sessions on the LAN the way the LOUDSYNC app does, by a
//! `LOUDSYNC_DISCOVER` datagram and by browsing mDNS, and lists them.
//!
//! The records are read with `loudsync_protocol::discovery`; this module only does the I/O and
//! the output. Everything shown in the table comes from the network, so it is shown through
//! [`crate::live::terminal_safe`].
//!
//! Sending to the broadcast address puts a datagram on the local network: that only happens
//! when a person runs this command (tests use `--to 127.0.0.1:PORT --no-mdns`).

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use clap::Args;
use loudsync_protocol::discovery::{self, Advertisement, DISCOVER, MDNS_SERVICE};
use serde_json::{json, Value};

use crate::live::{json_line, terminal_safe};

/// `loudsync discover`.
#[derive(Args)]
pub struct DiscoverArgs {
    /// Where to send LOUDSYNC_DISCOVER (a server, or a broadcast address).
    #[arg(long, default_value = "255.255.255.255:9876")]
    to: SocketAddr,
    /// How long to listen for answers.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Do not browse mDNS (UDP only).
    #[arg(long)]
    no_mdns: bool,
    /// Print JSON (one object with a `sessions` array) instead of a table.
    #[arg(long)]
    json: bool,
}

/// A session found, and how: the advertisement's fields plus `via` (and `from` for UDP).
fn found(ad: &Advertisement, via: &str, from: Option<SocketAddr>) -> Value {
    let mut s = serde_json::to_value(ad).expect("an advertisement serialises");
    s["via"] = json!(via);
    if let Some(from) = from {
        s["from"] = json!(from.to_string());
    }
    s
}

/// Runs the command.
pub fn run(args: DiscoverArgs) -> anyhow::Result<()> {
    let mut sessions: BTreeMap<String, Value> = BTreeMap::new();
    let mdns = if args.no_mdns {
        None
    } else {
        match mdns_sd::ServiceDaemon::new() {
            Ok(d) => d.browse(MDNS_SERVICE).ok().map(|rx| (d, rx)),
            Err(e) => {
                eprintln!("note: mDNS unavailable ({e}); UDP only");
                None
            }
        }
    };
    let socket = UdpSocket::bind(("0.0.0.0", 0))?;
    socket.set_broadcast(true)?;
    socket.send_to(DISCOVER, args.to)?;
    let deadline = Instant::now() + args.timeout;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            if let Some(ad) = discovery::parse_response(&buf[..n]) {
                sessions
                    .entry(ad.session_id.clone())
                    .or_insert_with(|| found(&ad, "udp", Some(from)));
            }
        }
        if let Some((_, rx)) = &mdns {
            while let Ok(event) = rx.try_recv() {
                if let mdns_sd::ServiceEvent::ServiceResolved(info) = event {
                    let name = info.get_fullname();
                    let id = discovery::session_id_from_mdns_fullname(name).unwrap_or(name);
                    let address = info.get_addresses().iter().next().map(|a| a.to_string());
                    let ad = discovery::from_mdns_txt(
                        id,
                        |k| info.get_property_val_str(k),
                        address,
                        info.get_port(),
                    );
                    sessions
                        .entry(ad.session_id.clone())
                        .or_insert_with(|| found(&ad, "mdns", None));
                }
            }
        }
    }
    if let Some((daemon, _)) = mdns {
        let _ = daemon.shutdown();
    }
    let list: Vec<Value> = sessions.into_values().collect();
    if args.json {
        crate::live::print_line(&json_line(&json!({ "sessions": list })));
        return Ok(());
    }
    if list.is_empty() {
        println!(
            "no sessions found (asked {}{})",
            args.to,
            if args.no_mdns { "" } else { " and mDNS" }
        );
        return Ok(());
    }
    println!(
        "{:<24} {:<10} {:<20} {:>9}  {:<22} VIA",
        "NAME", "CODE", "HOST", "MEMBERS", "ADDRESS"
    );
    for s in &list {
        let str_of = |k: &str| terminal_safe(s[k].as_str().unwrap_or("")).into_owned();
        let address = match (s["hostAddress"].as_str(), s["port"].as_u64()) {
            (Some(a), Some(p)) => format!("{}:{p}", terminal_safe(a)),
            (Some(a), None) => terminal_safe(a).into_owned(),
            _ => "-".into(),
        };
        println!(
            "{:<24} {:<10} {:<20} {:>9}  {:<22} {}",
            str_of("sessionName"),
            code(&str_of("sessionId")),
            str_of("hostName"),
            format!("{}/{}", s["memberCount"], s["maxMembers"]),
            address,
            str_of("via")
        );
    }
    Ok(())
}

/// A session id shown as the app shows codes: six characters as `A1B-2C3`.
pub fn code(id: &str) -> String {
    if id.len() == 6 && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        format!("{}-{}", &id[..3], &id[3..])
    } else {
        id.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_shown_like_the_app() {
        assert_eq!(code("A1B2C3"), "A1B-2C3");
        assert_eq!(code("K7P-3XQ"), "K7P-3XQ");
        assert_eq!(code("party"), "party");
    }
}
