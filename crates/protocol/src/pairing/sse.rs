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
//! empty string ([`Query::get`]). [`eventsource_identity`] and [`parse_sendevent`] apply the
//! endpoints' checks to them, in the order of P8 and P16.

use std::collections::HashMap;

use super::event::{data_too_large, Event, EventDataError};
use super::{check_credentials, valid_client_id, AbortReason, AppSpec, ClaimedId, Identity, Role};

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

/// `Content-Type` of the `clientid/` answer.
pub const CLIENTID_CONTENT_TYPE: &str = "text/xml; charset=UTF-8";

/// `Content-Type` of the `eventsource/` stream (sent with `Cache-Control: no-cache`).
pub const EVENT_STREAM_CONTENT_TYPE: &str = "text/event-stream";

/// The body of the `clientid/` answer (P14), exactly `<clientId value='NNNNNN'/>` and a newline.
pub fn clientid_body(client_id: &str) -> String {
    format!("<clientId value='{client_id}'/>\n")
}

/// A decoded query string, read as PHP's `$_GET`. Its `Debug` hides `accessToken`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Query(pub HashMap<String, String>);

impl std::fmt::Debug for Query {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut keys: Vec<&String> = self.0.keys().collect();
        keys.sort();
        let mut map = f.debug_map();
        for key in keys {
            let value = if key == "accessToken" {
                "<redacted>"
            } else {
                &self.0[key]
            };
            map.entry(key, &value);
        }
        map.finish()
    }
}

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

/// The credentials of an `eventsource/` request (`clientId`, `clientRole`, `accessToken`)
/// checked for `app` in P8 order; a missing parameter is the empty string and fails its check,
/// so the id is required (`invalidClientId`). The error is the reason of the stream's only
/// event, `aborted`. (`clientIdInUse` is the relay's.)
pub fn eventsource_identity(query: &Query, app: &AppSpec) -> Result<Identity, AbortReason> {
    check_credentials(
        app,
        Some(query.get("clientRole")),
        ClaimedId::Given(query.get("clientId")),
        Some(query.get("accessToken")),
    )
}

/// What a valid `sendevent/` request asks for (its `eventType`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendEventBody {
    /// `crEvent`: relay the event in `eventData`.
    CrEvent(Event),
    /// `alive`: echo `alive` on the stream whose id is `eventData` (ignored if it is not the
    /// sender's current stream, P17).
    Alive(String),
    /// `close`: answer `closed` on the stream whose id is `eventData` and end it.
    Close(String),
}

/// A valid `sendevent/` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendEvent {
    /// The sender's role.
    pub role: Role,
    /// The sender's client id.
    pub client_id: String,
    /// `recipientClientId` (for `alive` and `close`, CRSocket sends the sender's own).
    pub recipient: String,
    /// What it asks for.
    pub body: SendEventBody,
}

/// Why a `sendevent/` request is refused; [`SendEventError::status`] is the HTTP answer (with
/// an empty body). The text is for logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendEventError {
    /// 400: `clientRole`, `clientId` or the token's syntax is invalid (the reason says which).
    #[error("sendevent: {0}")]
    Credentials(AbortReason),
    /// 400: `recipientClientId` is not 6 ASCII digits.
    #[error("sendevent: `recipientClientId` must be 6 ASCII digits")]
    Recipient,
    /// 400: `eventType` is not `crEvent`, `alive` or `close`.
    #[error("sendevent: `eventType` must be crEvent, alive or close")]
    EventType,
    /// 403: the token is not authorised for the app.
    #[error("sendevent: notAuthorized")]
    NotAuthorized,
    /// 413: `eventData` is longer than 8192 characters.
    #[error("sendevent: `eventData` is longer than 8192 characters")]
    TooLarge,
    /// 400: the crEvent data string is malformed.
    #[error("sendevent: {0}")]
    Data(EventDataError),
}

impl SendEventError {
    /// The HTTP status: 400, 403 or 413.
    pub fn status(&self) -> u16 {
        match self {
            SendEventError::NotAuthorized => 403,
            SendEventError::TooLarge => 413,
            _ => 400,
        }
    }
}

/// Checks a `sendevent/` query for `app` in the order of P16: the parameters (credentials'
/// syntax in P8 order, `recipientClientId`, `eventType`) for 400, authorisation for 403, the
/// length of `eventData` for 413, then the crEvent data string for 400. The first failing
/// check answers. Rate limiting and routing (204 either way) are the relay's.
pub fn parse_sendevent(query: &Query, app: &AppSpec) -> Result<SendEvent, SendEventError> {
    // Syntax first: check against an open app, so authorisation cannot answer before the
    // remaining parameters are checked.
    let open = AppSpec {
        name: app.name.clone(),
        tokens: None,
    };
    let identity = eventsource_identity(query, &open).map_err(SendEventError::Credentials)?;
    let recipient = query.get("recipientClientId");
    if !valid_client_id(recipient) {
        return Err(SendEventError::Recipient);
    }
    let kind = query.get("eventType");
    if !matches!(kind, "crEvent" | "alive" | "close") {
        return Err(SendEventError::EventType);
    }
    if !app.authorizes(query.get("accessToken")) {
        return Err(SendEventError::NotAuthorized);
    }
    let data = query.get("eventData");
    if data_too_large(data) {
        return Err(SendEventError::TooLarge);
    }
    let body = match kind {
        "crEvent" => SendEventBody::CrEvent(Event::parse_data(data).map_err(SendEventError::Data)?),
        "alive" => SendEventBody::Alive(data.to_string()),
        _ => SendEventBody::Close(data.to_string()),
    };
    Ok(SendEvent {
        role: identity.role,
        client_id: identity.client_id.unwrap_or_default(),
        recipient: recipient.to_string(),
        body,
    })
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
    fn clientid_body_is_exact() {
        assert_eq!(clientid_body("001234"), "<clientId value='001234'/>\n");
    }

    #[test]
    fn query_debug_hides_the_token() {
        let shown = format!("{:?}", parse_query("accessToken=hunter2&clientId=1"));
        assert_eq!(shown, r#"{"accessToken": "<redacted>", "clientId": "1"}"#);
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

    fn send(query: &str) -> Result<SendEvent, u16> {
        let app = AppSpec::parse("secret:tokA").unwrap();
        parse_sendevent(&parse_query(query), &app).map_err(|e| e.status())
    }

    const OK: &str =
        "clientId=123456&clientRole=controller&accessToken=tokA&recipientClientId=654321";

    #[test]
    fn sendevent_accepts_the_three_event_types() {
        let e = send(&format!(
            "{OK}&eventType=crEvent&eventData=ping%2C%2Cfalse%2Cfalse%2Ctrue%2CNaN%2CNaN%2C0"
        ))
        .unwrap();
        assert_eq!(e.role, Role::Controller);
        assert_eq!(e.client_id, "123456");
        assert_eq!(e.recipient, "654321");
        assert_eq!(e.body, SendEventBody::CrEvent(Event::new("ping")));
        assert_eq!(
            send(&format!("{OK}&eventType=alive&eventData=17"))
                .unwrap()
                .body,
            SendEventBody::Alive("17".into())
        );
        assert_eq!(
            send(&format!("{OK}&eventType=close&eventData=x"))
                .unwrap()
                .body,
            SendEventBody::Close("x".into())
        );
    }

    #[test]
    fn sendevent_checks_run_in_p16_order() {
        let long = "x".repeat(8193);
        // Each case breaks its own check and every later one: the earliest answers.
        let cases = [
            ("clientId=123456&clientRole=boss&accessToken=tokB&recipientClientId=1&eventType=x", 400),
            ("clientId=12&clientRole=controller&accessToken=tokB&recipientClientId=1&eventType=x", 400),
            ("clientId=123456&clientRole=controller&accessToken=a+b&recipientClientId=1", 400),
            ("clientId=123456&clientRole=controller&accessToken=tokB&recipientClientId=1&eventType=crEvent", 400),
            ("clientId=123456&clientRole=controller&accessToken=tokB&recipientClientId=654321&eventType=ping", 400),
            ("clientId=123456&clientRole=controller&accessToken=tokB&recipientClientId=654321&eventType=crEvent&eventData=bad", 403),
        ];
        for (query, status) in cases {
            assert_eq!(send(query).map(|_| ()), Err(status), "{query}");
        }
        assert_eq!(
            send(&format!("{OK}&eventType=crEvent&eventData={long}")).map(|_| ()),
            Err(413)
        );
        assert_eq!(
            send(&format!("{OK}&eventType=alive&eventData={long}")).map(|_| ()),
            Err(413)
        );
        assert_eq!(
            send(&format!("{OK}&eventType=crEvent&eventData=bad")).map(|_| ()),
            Err(400)
        );
        assert_eq!(
            parse_sendevent(
                &parse_query(&format!("{OK}&eventType=crEvent")),
                &AppSpec::parse("secret:tokA").unwrap()
            ),
            Err(SendEventError::Data(EventDataError::TooFewFields(1)))
        );
        assert_eq!(
            parse_sendevent(
                &parse_query("clientRole=responder"),
                &AppSpec::parse("a").unwrap()
            ),
            Err(SendEventError::Credentials(AbortReason::InvalidClientId))
        );
        assert_eq!(
            SendEventError::Recipient.to_string(),
            "sendevent: `recipientClientId` must be 6 ASCII digits"
        );
    }

    #[test]
    fn eventsource_identity_requires_every_parameter() {
        let app = AppSpec::parse("alpha").unwrap();
        let check = |q: &str| eventsource_identity(&parse_query(q), &app);
        assert_eq!(check(""), Err(AbortReason::InvalidRole));
        assert_eq!(
            check("clientRole=responder"),
            Err(AbortReason::InvalidClientId)
        );
        assert_eq!(
            check("clientRole=responder&clientId=000001"),
            Err(AbortReason::InvalidAccessToken)
        );
        assert_eq!(
            check("clientRole=responder&clientId=000001&accessToken=t"),
            Ok(Identity {
                role: Role::Responder,
                client_id: Some("000001".into())
            })
        );
        let secret = AppSpec::parse("s:tokA").unwrap();
        assert_eq!(
            eventsource_identity(
                &parse_query("clientRole=controller&clientId=000001&accessToken=tokB"),
                &secret
            ),
            Err(AbortReason::NotAuthorized)
        );
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
