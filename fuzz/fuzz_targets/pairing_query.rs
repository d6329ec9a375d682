//! Fuzz target `pairing_query`: the query strings of the CRSocket-compatible HTTP endpoints
//! (issue 12, P15 to P17), from any UTF-8 text: [`parse_query`] as PHP's `$_GET`, then
//! [`eventsource_identity`] and [`parse_sendevent`] for an open app and an app with tokens;
//! and the SSE percent-encoding ([`rawurlencode`], [`percent_decode`]) on the same text.
//!
//! Beyond "no panic":
//!
//! - `percent_decode(rawurlencode(x))` is `x` (with `+` as a space or not), and `rawurlencode`
//!   writes only `A-Za-z0-9-_.~` and `%XX` with uppercase hex; text without `%` (and `+`)
//!   decodes to itself;
//! - a query built from the text reads back as the rules say: the last of repeated keys
//!   wins, `+` is a space, a key without `=` has the empty value, a missing key reads `""`;
//! - `eventsource/`'s identity is what P8 says ([`loudsync_fuzz::pairing::expected_identity`]
//!   with the parameters as given, a missing one `""`);
//! - `sendevent/` answers what P16 says, in its order (parameters 400, authorisation 403,
//!   `eventData` over 8192 characters 413, a malformed crEvent data string 400), and a
//!   refusal's status is one of 400, 403, 413; the same query with `eventData` replaced by an
//!   event 2 characters either side of the limit is 413 exactly when over it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loudsync_fuzz::pairing::{client_id_ok, expected_identity, open_app, token_app, Claim};
use loudsync_protocol::pairing::sse::{
    eventsource_identity, parse_query, parse_sendevent, percent_decode, rawurlencode, Query,
    SendEvent, SendEventBody, SendEventError,
};
use loudsync_protocol::pairing::{AppSpec, Event, MAX_EVENT_DATA_CHARS};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    encoding(text);
    built_query(text);
    let query = parse_query(text);
    for app in [open_app(), token_app()] {
        let expected = expected_identity(
            &app,
            Some(query.get("clientRole")),
            Claim::Given(query.get("clientId")),
            Some(query.get("accessToken")),
        );
        assert_eq!(
            eventsource_identity(&query, &app),
            expected,
            "{app:?} {text:?}"
        );
        let got = parse_sendevent(&query, &app);
        assert_eq!(got, expected_sendevent(&query, &app), "{app:?} {text:?}");
        if let Err(e) = &got {
            let status = e.status();
            assert!([400, 403, 413].contains(&status), "{e:?}: {status}");
            let documented = match e {
                SendEventError::NotAuthorized => 403,
                SendEventError::TooLarge => 413,
                _ => 400,
            };
            assert_eq!(status, documented, "{e:?}");
        }
    }
    at_the_limit(text, &query);
});

/// `rawurlencode` and `percent_decode` on the text.
fn encoding(text: &str) {
    let encoded = rawurlencode(text);
    let bytes = encoded.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex =
                |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b));
            assert!(
                hex(bytes.get(i + 1)) && hex(bytes.get(i + 2)),
                "{encoded:?}"
            );
            i += 3;
        } else {
            assert!(
                bytes[i].is_ascii_alphanumeric() || b"-_.~".contains(&bytes[i]),
                "{encoded:?} of {text:?}"
            );
            i += 1;
        }
    }
    assert_eq!(percent_decode(&encoded, false), text, "{encoded:?}");
    assert_eq!(percent_decode(&encoded, true), text, "{encoded:?}");
    for plus_is_space in [false, true] {
        let decoded = percent_decode(text, plus_is_space);
        let escapes = text.contains('%') || (plus_is_space && text.contains('+'));
        if !escapes {
            assert_eq!(decoded, text);
        }
    }
}

/// A query with the text as a key and as values, encoded as a browser would.
fn built_query(text: &str) {
    let encoded = rawurlencode(text);
    let plus = encoded.replace("%20", "+");
    let query = parse_query(&format!(
        "{encoded}={encoded}&k=first&&flag&k={encoded}&p={plus}"
    ));
    assert_eq!(query.get("k"), text, "last of repeated keys");
    assert_eq!(query.get("p"), text, "`+` as a space");
    assert_eq!(query.get("flag"), "", "a key without `=`");
    assert_eq!(query.get(text), if text == "flag" { "" } else { text });
    // Longer than `text` and none of `k`, `p`, `flag`: no key of this query.
    assert_eq!(query.get(&format!("{text}\u{0}")), "", "a missing key");
}

/// What P16 says `sendevent/` answers, its checks in their order.
fn expected_sendevent(query: &Query, app: &AppSpec) -> Result<SendEvent, SendEventError> {
    let token = query.get("accessToken");
    let identity = expected_identity(
        &open_app(),
        Some(query.get("clientRole")),
        Claim::Given(query.get("clientId")),
        Some(token),
    )
    .map_err(SendEventError::Credentials)?;
    let recipient = query.get("recipientClientId");
    if !client_id_ok(recipient) {
        return Err(SendEventError::Recipient);
    }
    let kind = query.get("eventType");
    if !["crEvent", "alive", "close"].contains(&kind) {
        return Err(SendEventError::EventType);
    }
    if let Some(tokens) = &app.tokens {
        if !tokens.iter().any(|t| t == token) {
            return Err(SendEventError::NotAuthorized);
        }
    }
    let data = query.get("eventData");
    if data.chars().count() > MAX_EVENT_DATA_CHARS {
        return Err(SendEventError::TooLarge);
    }
    let body = match kind {
        "crEvent" => SendEventBody::CrEvent(Event::parse_data(data).map_err(SendEventError::Data)?),
        "alive" => SendEventBody::Alive(data.to_string()),
        _ => SendEventBody::Close(data.to_string()),
    };
    Ok(SendEvent {
        role: identity.role,
        client_id: identity.client_id.expect("a given client id"),
        recipient: recipient.to_string(),
        body,
    })
}

/// When the query's parameters pass, the same query with a crEvent whose data string is 8190
/// to 8194 characters (1, 2 or 4 bytes each, so up to 74 KB encoded) appended as `eventData`
/// (the last `eventData` wins): 413 exactly when over 8192, else the event.
fn at_the_limit(text: &str, query: &Query) {
    let app = open_app();
    let parameters_pass = !matches!(
        parse_sendevent(query, &app),
        Err(SendEventError::Credentials(_) | SendEventError::Recipient | SendEventError::EventType)
    );
    if !parameters_pass || query.get("eventType") != "crEvent" {
        return;
    }
    let head = "ping,,false,false,true,NaN,NaN,000000,";
    let length = MAX_EVENT_DATA_CHARS - 2 + text.len() % 5;
    let pad = ['x', 'é', '🎸'][text.len() % 3];
    let data: String = head
        .chars()
        .chain(std::iter::repeat(pad))
        .take(length)
        .collect();
    let grown = parse_query(&format!("{text}&eventData={}", rawurlencode(&data)));
    match parse_sendevent(&grown, &app) {
        Err(SendEventError::TooLarge) => assert!(length > MAX_EVENT_DATA_CHARS, "{length}"),
        Ok(SendEvent {
            body: SendEventBody::CrEvent(event),
            ..
        }) => {
            assert!(length <= MAX_EVENT_DATA_CHARS, "{length}");
            assert_eq!(Ok(event), Event::parse_data(&data));
        }
        other => panic!("{text:?} with {length} characters of eventData: {other:?}"),
    }
}
