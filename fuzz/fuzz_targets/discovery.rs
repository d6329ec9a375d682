//! Fuzz target `discovery`: the LAN discovery records a neighbour on the network sends
//! ([`loudsync_protocol::discovery`]): the `LOUDSYNC_RESPONSE:` advertisement datagram that
//! `loudsync discover` reads, the query check the server's UDP socket applies, and the mDNS
//! instance name and TXT records of a resolved service.
//!
//! Input: the first byte picks which; the rest is the datagram, the name, or the TXT records
//! (`key=value` lines). Beyond "no panic", each is a round trip: an advertisement that parses
//! is written by `response_datagram` into one that parses to the same; a name read as ours is
//! the name `mdns_fullname` writes for that id; an advertisement rebuilt from TXT records is
//! rebuilt the same from the TXT records `mdns_txt` writes for it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loudsync_protocol::discovery::{
    from_mdns_txt, is_discover, mdns_fullname, mdns_txt, parse_response, response_datagram,
    session_id_from_mdns_fullname, DISCOVER,
};

fuzz_target!(|data: &[u8]| {
    let [which, ref rest @ ..] = *data else {
        return;
    };
    match which % 3 {
        0 => {
            assert_eq!(is_discover(rest), rest == DISCOVER);
            if let Some(ad) = parse_response(rest) {
                let written = response_datagram(&ad);
                assert_eq!(parse_response(&written), Some(ad), "{rest:?}");
            }
        }
        1 => {
            let Ok(name) = std::str::from_utf8(rest) else {
                return;
            };
            if let Some(id) = session_id_from_mdns_fullname(name) {
                assert!(!id.is_empty());
                assert_eq!(mdns_fullname(id), name);
            }
        }
        _ => {
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            let records: Vec<(&str, &str)> =
                text.lines().filter_map(|l| l.split_once('=')).collect();
            // A TXT lookup answers with the first record of a key, as mdns-sd does.
            let lookup = |k: &str| records.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
            let ad = from_mdns_txt("K7P-3XQ", lookup, Some("192.0.2.7".into()), 8080);
            let txt = mdns_txt(&ad);
            let again = from_mdns_txt(
                "K7P-3XQ",
                |k| {
                    txt.iter()
                        .find(|(key, _)| *key == k)
                        .map(|(_, v)| v.as_str())
                },
                Some("192.0.2.7".into()),
                8080,
            );
            assert_eq!(again, ad, "{text:?}");
        }
    }
});
