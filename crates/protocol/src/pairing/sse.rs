//! The CRSocket-compatible SSE + HTTP wire (decisions P15 to P17): the framing of the
//! `eventsource/` stream, its control events, and the query strings of `eventsource/` and
//! `sendevent/`.
//!
//! Every SSE event is exactly `event: TYPE\n`, `data: ENC\n`, `\n`, where `ENC` is the data
//! string percent-encoded as PHP's `rawurlencode` does ([`rawurlencode`]: every UTF-8 byte
//! except `A-Za-z0-9-_.~` as `%XX`, uppercase hex), which is what CRSocket's JavaScript
//! `decodeURIComponent`s. [`sse_event`] writes one; the control events' data strings are built
//! by [`hello`], [`alive`], [`closed`], [`shutdown`] and [`aborted`], and a relayed event's by
//! [`Event::to_data`](super::event::Event::to_data) under the name [`CR_EVENT`].
//!
//! Query strings are read as PHP fills `$_GET` ([`parse_query`]): `application/x-www-form-
//! urlencoded`, `+` is a space, the last of repeated keys wins, and a missing key reads as the
//! empty string ([`Query::get`]).

use std::collections::HashMap;

use super::AbortReason;

/// The SSE event name of a relayed pairing event.
pub const CR_EVENT: &str = "crEvent";

/// Percent-encodes `text` as PHP's `rawurlencode`: each UTF-8 byte other than `A-Z a-z 0-9
/// - _ . ~` becomes `%XX` with uppercase hex digits (so `,` is `%2C`, a space `%20`).
pub fn rawurlencode(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
    out
}

/// Decodes `%XX` escapes (either case of hex) and, if `plus_is_space`, `+` as a space; a `%`
/// not followed by two hex digits stays as it is (as PHP's `urldecode`). Bytes that are not
/// UTF-8 after decoding become U+FFFD.
pub fn percent_decode(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |j: usize| bytes.get(j).and_then(|&b| (b as char).to_digit(16));
        match bytes[i] {
            b'%' => match (hex(i + 1), hex(i + 2)) {
                (Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// One SSE event, exactly `event: {name}\ndata: {rawurlencode(data)}\n\n`.
pub fn sse_event(name: &str, data: &str) -> String {
    format!("event: {name}\ndata: {}\n\n", rawurlencode(data))
}

/// Data of `hello`, the first event of a valid stream: its stream id.
pub fn hello(stream_id: u64) -> String {
    stream_id.to_string()
}

/// Data of `alive`, the echo of the client's `alive` with the current stream id.
pub fn alive(stream_id: u64) -> String {
    stream_id.to_string()
}

/// Data of `closed`, the answer to the client's `close`; the stream then ends.
pub fn closed(stream_id: u64) -> String {
    stream_id.to_string()
}

/// Data of `shutdown`: the server is stopping; the stream then ends.
pub fn shutdown(stream_id: u64) -> String {
    stream_id.to_string()
}

/// Data of `aborted`: `SID,REASON,RELEASER`, where `releaser` is the new connection's stream
/// id for `releasedByOther` and `0` otherwise (`None`). For an invalid request it is the
/// stream's first and only event.
pub fn aborted(stream_id: u64, reason: AbortReason, releaser: Option<u64>) -> String {
    format!("{stream_id},{reason},{}", releaser.unwrap_or(0))
}

/// A decoded query string, read as PHP's `$_GET`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query(pub HashMap<String, String>);

impl Query {
    /// The value of `key`, or `""` if the query has none (PHP code reads a missing parameter
    /// as the empty string, which then fails its check).
    pub fn get(&self, key: &str) -> &str {
        self.0.get(key).map(String::as_str).unwrap_or("")
    }
}

/// Decodes a query string (without the `?`) as `application/x-www-form-urlencoded`, with the
/// rules of PHP's `$_GET`: pairs split on `&`, key and value on the first `=` (a pair without
/// one is a key with an empty value), `+` is a space, `%XX` escapes decoded, empty pairs
/// skipped, the last of repeated keys wins.
pub fn parse_query(query: &str) -> Query {
    let mut map = HashMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        map.insert(percent_decode(key, true), percent_decode(value, true));
    }
    Query(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pairing::event::Event;
    use proptest::prelude::*;

    #[test]
    fn rawurlencode_is_phps() {
        assert_eq!(rawurlencode("AZaz09-_.~"), "AZaz09-_.~");
        assert_eq!(rawurlencode("a b,c+d/%"), "a%20b%2Cc%2Bd%2F%25");
        assert_eq!(rawurlencode("é"), "%C3%A9");
        assert_eq!(rawurlencode("\n*'()!"), "%0A%2A%27%28%29%21");
    }

    #[test]
    fn sse_events_are_exactly_three_lines() {
        assert_eq!(sse_event("hello", &hello(17)), "event: hello\ndata: 17\n\n");
        assert_eq!(
            sse_event(
                "aborted",
                &aborted(5, AbortReason::ReleasedByOther, Some(9))
            ),
            "event: aborted\ndata: 5%2CreleasedByOther%2C9\n\n"
        );
        assert_eq!(
            aborted(5, AbortReason::InvalidAccessToken, None),
            "5,invalidAccessToken,0"
        );
        assert_eq!(alive(3), "3");
        assert_eq!(closed(4), "4");
        assert_eq!(shutdown(6), "6");
        let reject = Event::server_reject(crate::pairing::RejectSubtype::AppIdMismatch);
        assert_eq!(
            sse_event(CR_EVENT, &reject.to_data("654321")),
            "event: crEvent\ndata: reject%2CappIdMismatch%2Cfalse%2Cfalse%2Ctrue%2CNaN%2CNaN%2C654321\n\n"
        );
    }

    #[test]
    fn query_strings_follow_php_get() {
        let q = parse_query(
            "clientId=123456&clientRole=controller&accessToken=a+b%2Bc&x=1&x=2&flag&&=v",
        );
        assert_eq!(q.get("clientId"), "123456");
        assert_eq!(q.get("clientRole"), "controller");
        assert_eq!(q.get("accessToken"), "a b+c");
        assert_eq!(q.get("x"), "2", "the last repeated key wins");
        assert_eq!(q.get("flag"), "");
        assert_eq!(q.get("missing"), "");
        assert_eq!(q.get(""), "v");
        // `=` inside a value, malformed escapes kept, non-UTF-8 replaced.
        let q = parse_query("eventData=a%3Db=c&p=100%&h=%zz&u=%FF");
        assert_eq!(q.get("eventData"), "a=b=c");
        assert_eq!(q.get("p"), "100%");
        assert_eq!(q.get("h"), "%zz");
        assert_eq!(q.get("u"), "\u{FFFD}");
        assert_eq!(parse_query(""), Query::default());
        // An encoded crEvent data string survives the trip.
        let data = "tap,,false,false,true,NaN,NaN,1,é,x y";
        let q = parse_query(&format!(
            "eventType=crEvent&eventData={}",
            rawurlencode(data)
        ));
        assert_eq!(q.get("eventData"), data);
        assert_eq!(percent_decode("a+b", false), "a+b");
    }

    proptest! {
        #[test]
        fn rawurlencode_round_trips(text in "\\PC{0,40}|.{0,40}") {
            let enc = rawurlencode(&text);
            prop_assert!(enc.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~%".contains(&b)));
            prop_assert_eq!(percent_decode(&enc, true), text.clone());
            prop_assert_eq!(percent_decode(&enc, false), text);
        }

        #[test]
        fn queries_round_trip(pairs in proptest::collection::vec((".{0,8}", ".{0,8}"), 0..6)) {
            let query: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{}={}", rawurlencode(k), rawurlencode(v)))
                .collect();
            let q = parse_query(&query.join("&"));
            let mut want = HashMap::new();
            for (k, v) in pairs {
                want.insert(k, v);
            }
            prop_assert_eq!(q.0, want);
        }

        #[test]
        fn parse_query_never_panics(text in ".{0,60}") {
            let _ = parse_query(&text);
        }
    }
}
