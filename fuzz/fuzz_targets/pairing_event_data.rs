//! Fuzz target `pairing_event_data`: the crEvent data string an SSE client sends to
//! `sendevent/` (issue 12, P18), already URL-decoded, as [`Event::parse_data`] reads it, from
//! any UTF-8 text.
//!
//! Beyond "no panic", checked against P18's wording rather than the parser's code:
//!
//! - it is accepted exactly when it has at least 8 `,`-separated fields, an alphanumeric
//!   `eventType` (one or more) and `eventSubType`, flags `true`/`false` and a `sendCt` that is
//!   `NaN` or an integer within `i64`; a refusal names a rule the text really breaks;
//! - an accepted event holds the fields as written, the parameters being fields 9 on;
//! - delivered from any sender ([`Event::to_data`]) it is the text byte for byte, but for
//!   field 7 (`NaN`) and field 8 (the sender), and [`Event::parse_delivered`] reads back the
//!   same event and sender; its `Display` is the data string without a sender;
//! - once `sendCt` is changed, the sender's own spelling of it (`007`) is no longer delivered;
//! - [`Event::too_large`] agrees with the length of `to_data` in characters, checked also on
//!   the event grown by a parameter to 2 characters either side of the 8192 limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loudsync_fuzz::pairing::{event_sub_type_ok, event_type_ok};
use loudsync_protocol::pairing::event::data_too_large;
use loudsync_protocol::pairing::{Event, EventDataError, MAX_EVENT_DATA_CHARS};

/// The senders the event is delivered from: a client id, and field 8 as the text wrote it.
const SENDER: &str = "654321";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let fields: Vec<&str> = text.split(',').collect();
    let broken = broken_rules(&fields);
    let event = match Event::parse_data(text) {
        Ok(event) => {
            assert!(broken.is_empty(), "{text:?} breaks {broken:?} but parsed");
            event
        }
        Err(e) => {
            assert!(
                broken.contains(&e),
                "{text:?} refused as {e:?}, but breaks {broken:?}"
            );
            return;
        }
    };
    assert_eq!(event.event_type, fields[0]);
    assert_eq!(event.sub_type, fields[1]);
    assert_eq!(event.buffered, fields[2] == "true");
    assert_eq!(event.logged, fields[3] == "true");
    assert_eq!(event.interceptable, fields[4] == "true");
    assert_eq!(event.send_ct, fields[5].parse::<i64>().ok(), "{text:?}");
    assert_eq!(event.params, fields[8..], "{text:?}");
    for sender in [SENDER, fields[7]] {
        let delivered = event.to_data(sender);
        let mut expected = fields.clone();
        expected[6] = "NaN";
        expected[7] = sender;
        assert_eq!(delivered, expected.join(","), "{text:?} from {sender:?}");
        assert_eq!(
            Event::parse_delivered(&delivered),
            Ok((event.clone(), sender.to_string())),
            "{text:?} delivered as {delivered:?}"
        );
        let over = delivered.chars().count() > MAX_EVENT_DATA_CHARS;
        assert_eq!(event.too_large(sender), over, "{text:?} from {sender:?}");
        assert_eq!(data_too_large(&delivered), over, "{text:?} from {sender:?}");
    }
    assert_eq!(event.to_string(), event.to_data(""));

    let mut changed = event.clone();
    changed.send_ct = Some(event.send_ct.map_or(0, |ms| ms.wrapping_add(1)));
    let new = changed.send_ct.unwrap().to_string();
    assert_eq!(
        changed.to_data(SENDER).split(',').nth(5),
        Some(&*new),
        "{text:?}"
    );
    changed.send_ct = None;
    assert_eq!(
        changed.to_data(SENDER).split(',').nth(5),
        Some("NaN"),
        "{text:?}"
    );

    at_the_limit(&event, text);
});

/// Every rule of P18 that `fields` (the text split on `,`) breaks, as the error naming it.
fn broken_rules(fields: &[&str]) -> Vec<EventDataError> {
    if fields.len() < 8 {
        return vec![EventDataError::TooFewFields(fields.len())];
    }
    let mut broken = Vec::new();
    if !event_type_ok(fields[0]) {
        broken.push(EventDataError::InvalidType);
    }
    if !event_sub_type_ok(fields[1]) {
        broken.push(EventDataError::InvalidSubType);
    }
    for (field, name) in fields[2..5]
        .iter()
        .zip(["buffered", "logged", "interceptable"])
    {
        if !matches!(*field, "true" | "false") {
            broken.push(EventDataError::InvalidFlag(name));
        }
    }
    if fields[5] != "NaN" && !integer_in_i64(fields[5]) {
        broken.push(EventDataError::InvalidSendCt);
    }
    broken
}

/// Whether `text` is `-?[0-9]+` with a value from -2^63 to 2^63 - 1 (compared as digits, so
/// not by the parser under test).
fn integer_in_i64(text: &str) -> bool {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(digits) => (true, digits),
        None => (false, text),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let significant = digits.trim_start_matches('0');
    let limit = if negative {
        "9223372036854775808"
    } else {
        "9223372036854775807"
    };
    significant.len() < limit.len() || (significant.len() == limit.len() && significant <= limit)
}

/// The event with one more parameter, sized so its data string is 8190 to 8194 characters
/// (the text's length picks which, and whether the padding is 1, 2 or 4 bytes a character):
/// too large exactly when over 8192.
fn at_the_limit(event: &Event, text: &str) {
    let base = event.to_data(SENDER).chars().count();
    let Some(room) = (MAX_EVENT_DATA_CHARS - 2).checked_sub(base + 1) else {
        return;
    };
    let extra = text.len() % 5;
    let pad = ['x', 'é', '🎸'][text.len() % 3];
    let mut grown = event.clone();
    grown
        .params
        .push(std::iter::repeat_n(pad, room + extra).collect());
    let delivered = grown.to_data(SENDER);
    let length = delivered.chars().count();
    assert_eq!(length, MAX_EVENT_DATA_CHARS - 2 + extra, "{text:?}");
    assert_eq!(
        grown.too_large(SENDER),
        length > MAX_EVENT_DATA_CHARS,
        "{text:?} grown to {length} characters"
    );
}
