//! The pairing event, independent of its transport, and its CRSocket SSE data string.
//!
//! An [`Event`] is what one pairing client sends another: a type (`ping`, `reject`, an app's
//! own), a subtype, string parameters, three flags and the sender's send time. On WebSocket it
//! is a `cr_event` JSON frame ([`super::ws`]); on SSE + HTTP it is the **data string** of
//! decision P18, the comma-joined
//!
//! ```text
//! eventType,eventSubType,buffered,logged,interceptable,sendCt,receiveCt,senderClientId[,param...]
//! ```
//!
//! with flags `true`/`false` and `sendCt` an integer or `NaN`. [`Event::parse_data`] reads what
//! `sendevent/` receives; [`Event::to_data`] writes what `eventsource/` delivers, with field 8
//! overwritten by the sender's id and field 7 by `NaN`. Everything else goes through unchanged,
//! byte for byte: the parameters are split on `,` and joined again (which loses nothing), and
//! a `sendCt` written in a non-canonical way (`007`) is kept as written. Translation between the
//! transports (P19) is therefore just decoding from one and encoding to the other.
//!
//! A data string may be at most [`MAX_EVENT_DATA_CHARS`] characters as delivered (P13, P16);
//! the server answers a `reject` of its own to a blocked `ping` ([`Event::server_reject`], P22).

use std::fmt;

use super::{valid_event_sub_type, valid_event_type, RejectSubtype};

/// Longest data string, in characters (Unicode scalar values), as delivered: with the server's
/// `senderClientId` and `NaN` as `receiveCt`.
pub const MAX_EVENT_DATA_CHARS: usize = 8192;

/// The fixed fields of a data string; the parameters follow them.
pub const DATA_FIELDS: usize = 8;

/// One pairing event, as sent by a client (the sender and receive time are not part of it:
/// the server sets the sender, the receiving SDK stamps the receive time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `eventType`: `^[0-9A-Za-z]+$` (`ping`, `unassign`, `inactive`, `reject`, or the app's).
    pub event_type: String,
    /// `eventSubType`: `^[0-9A-Za-z]*$` (a reject's reason, say), often empty.
    pub sub_type: String,
    /// `eventParams`: strings without `,`.
    pub params: Vec<String>,
    /// `buffered` flag (meaning is the SDK's; the server relays it).
    pub buffered: bool,
    /// `logged` flag.
    pub logged: bool,
    /// `interceptable` flag.
    pub interceptable: bool,
    /// `sendCt`: the sender's clock when it sent the event, in ms; `None` is null / `NaN`.
    pub send_ct: Option<i64>,
    /// The `sendCt` field as an SSE sender wrote it, when that is not how `send_ct` is written
    /// canonically (`007`, `-0`): delivered as written. `None` for canonical text and WS events.
    send_ct_text: Option<Box<str>>,
}

/// Why a crEvent data string is malformed (`sendevent/` answers 400, P16/P18).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventDataError {
    /// Fewer than the 8 fixed fields.
    #[error("crEvent data has {0} fields, fewer than the 8 of eventType,eventSubType,buffered,logged,interceptable,sendCt,receiveCt,senderClientId")]
    TooFewFields(usize),
    /// Field 1 breaks `^[0-9A-Za-z]+$`.
    #[error("crEvent data: eventType must be one or more of A-Z, a-z, 0-9")]
    InvalidType,
    /// Field 2 breaks `^[0-9A-Za-z]*$`.
    #[error("crEvent data: eventSubType must be A-Z, a-z, 0-9 only")]
    InvalidSubType,
    /// A flag (fields 3 to 5) other than `true` or `false`.
    #[error("crEvent data: {0} must be `true` or `false`")]
    InvalidFlag(&'static str),
    /// Field 6 is neither an integer nor `NaN`.
    #[error("crEvent data: sendCt must be an integer or `NaN`")]
    InvalidSendCt,
}

impl Event {
    /// An event of `event_type` with the defaults of a WebSocket `cr_event` that gives nothing
    /// else: empty subtype, no parameters, `buffered` and `logged` false, `interceptable`
    /// true, no `sendCt`.
    pub fn new(event_type: impl Into<String>) -> Event {
        Event {
            event_type: event_type.into(),
            sub_type: String::new(),
            params: Vec::new(),
            buffered: false,
            logged: false,
            interceptable: true,
            send_ct: None,
            send_ct_text: None,
        }
    }

    /// The `reject` the server sends S when it blocks S's `ping` (P22): subtype the reason,
    /// no parameters, `buffered` and `logged` false, `interceptable` true, no `sendCt`. It is
    /// delivered with the pinged id as its sender.
    pub fn server_reject(reason: RejectSubtype) -> Event {
        Event {
            sub_type: reason.as_str().to_string(),
            ..Event::new("reject")
        }
    }

    /// Reads the data string of a `sendevent/` crEvent (already URL-decoded). Fields 7 and 8
    /// (`receiveCt`, `senderClientId`) may hold anything: they are overwritten on delivery.
    pub fn parse_data(data: &str) -> Result<Event, EventDataError> {
        Event::parse_delivered(data).map(|(event, _)| event)
    }

    /// Reads a data string as `eventSource/` delivers it, with its `senderClientId` (field 8,
    /// returned as written; the receiver checks it if it cares).
    pub fn parse_delivered(data: &str) -> Result<(Event, String), EventDataError> {
        let mut fields = data.splitn(DATA_FIELDS + 1, ',');
        let mut head: [&str; DATA_FIELDS] = [""; DATA_FIELDS];
        for (i, slot) in head.iter_mut().enumerate() {
            *slot = fields.next().ok_or(EventDataError::TooFewFields(i))?;
        }
        let [event_type, sub_type, buffered, logged, interceptable, send_ct, _receive_ct, sender] =
            head;
        if !valid_event_type(event_type) {
            return Err(EventDataError::InvalidType);
        }
        if !valid_event_sub_type(sub_type) {
            return Err(EventDataError::InvalidSubType);
        }
        let flag = |text: &str, name: &'static str| match text {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(EventDataError::InvalidFlag(name)),
        };
        let (value, text) = parse_send_ct(send_ct)?;
        let event = Event {
            event_type: event_type.to_string(),
            sub_type: sub_type.to_string(),
            // `splitn` left the parameters joined; splitting them again on `,` is lossless.
            params: fields
                .next()
                .map(|rest| rest.split(',').map(str::to_string).collect())
                .unwrap_or_default(),
            buffered: flag(buffered, "buffered")?,
            logged: flag(logged, "logged")?,
            interceptable: flag(interceptable, "interceptable")?,
            send_ct: value,
            send_ct_text: text,
        };
        Ok((event, sender.to_string()))
    }

    /// The data string delivered to an SSE recipient: field 7 `NaN`, field 8 `sender`, the
    /// rest as the sender gave it. No parameters means exactly 8 fields, no trailing comma.
    pub fn to_data(&self, sender: &str) -> String {
        let flag = |b: bool| if b { "true" } else { "false" };
        // The sender's text is kept only while it still says `send_ct` (a caller may have
        // changed the field since).
        let send_ct = match (&self.send_ct_text, self.send_ct) {
            (Some(text), Some(ms)) if text.parse::<i64>().ok() == Some(ms) => text.to_string(),
            (_, Some(ms)) => ms.to_string(),
            (_, None) => "NaN".to_string(),
        };
        let mut data = format!(
            "{},{},{},{},{},{send_ct},NaN,{sender}",
            self.event_type,
            self.sub_type,
            flag(self.buffered),
            flag(self.logged),
            flag(self.interceptable),
        );
        for param in &self.params {
            data.push(',');
            data.push_str(param);
        }
        data
    }

    /// Whether the event, delivered from `sender`, is over the size rule: its data string
    /// ([`Event::to_data`]) longer than [`MAX_EVENT_DATA_CHARS`] characters. Such an event is
    /// refused on either transport (`too_large` on WebSocket, 413 on `sendevent/`).
    pub fn too_large(&self, sender: &str) -> bool {
        data_too_large(&self.to_data(sender))
    }
}

/// Whether a data string is longer than [`MAX_EVENT_DATA_CHARS`] characters.
pub fn data_too_large(data: &str) -> bool {
    // Counting stops at the first character over the limit.
    data.chars().nth(MAX_EVENT_DATA_CHARS).is_some()
}

/// `sendCt` of a data string: `NaN`, or an integer (`-?[0-9]+` within i64); with the text
/// when it is not the canonical form of its value, so it is delivered as written.
fn parse_send_ct(text: &str) -> Result<(Option<i64>, Option<Box<str>>), EventDataError> {
    if text == "NaN" {
        return Ok((None, None));
    }
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(EventDataError::InvalidSendCt);
    }
    let value: i64 = text.parse().map_err(|_| EventDataError::InvalidSendCt)?;
    let kept = (value.to_string() != text).then(|| text.into());
    Ok((Some(value), kept))
}

impl fmt::Display for Event {
    /// The event as a data string without a sender, for logs and the CLI.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_data(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn defaults_and_the_server_reject() {
        let ping = Event::new("ping");
        assert_eq!(
            ping.to_data("123456"),
            "ping,,false,false,true,NaN,NaN,123456"
        );
        let reject = Event::server_reject(RejectSubtype::AppIdMismatch);
        // P22's example, exactly.
        assert_eq!(
            reject.to_data("654321"),
            "reject,appIdMismatch,false,false,true,NaN,NaN,654321"
        );
        assert_eq!(
            Event::server_reject(RejectSubtype::InvalidPartnerRole).sub_type,
            "invalidPartnerRole"
        );
    }

    #[test]
    fn parse_data_reads_every_field() {
        let e =
            Event::parse_data("move,left,true,false,false,1700000000000,42,999999,3,x y,").unwrap();
        assert_eq!(e.event_type, "move");
        assert_eq!(e.sub_type, "left");
        assert!(e.buffered && !e.logged && !e.interceptable);
        assert_eq!(e.send_ct, Some(1700000000000));
        assert_eq!(e.params, ["3", "x y", ""]);
        let (_, sender) = Event::parse_delivered("a,,true,true,true,NaN,NaN,000007").unwrap();
        assert_eq!(sender, "000007");
        assert_eq!(
            Event::parse_data("a,,true,true,true,-5,,").unwrap().send_ct,
            Some(-5)
        );
    }

    #[test]
    fn eight_fields_mean_no_params_and_no_trailing_comma() {
        let e = Event::parse_data("ping,,false,false,true,NaN,x,y").unwrap();
        assert!(e.params.is_empty());
        assert_eq!(e.to_data("111111"), "ping,,false,false,true,NaN,NaN,111111");
        let one_empty = Event::parse_data("ping,,false,false,true,NaN,x,y,").unwrap();
        assert_eq!(one_empty.params, [""]);
        assert!(one_empty.to_data("1").ends_with(",1,"));
    }

    #[test]
    fn delivery_overwrites_fields_7_and_8_and_keeps_the_rest_byte_for_byte() {
        let sent = "tap,A1,false,true,false,007,12345,forged,é%,,a b,\u{1F600}";
        let e = Event::parse_data(sent).unwrap();
        assert_eq!(e.send_ct, Some(7));
        assert_eq!(
            e.to_data("222222"),
            "tap,A1,false,true,false,007,NaN,222222,é%,,a b,\u{1F600}"
        );
        let mut changed = e.clone();
        changed.send_ct = Some(8);
        assert!(changed.to_data("2").contains(",8,NaN,2,"));
        changed.send_ct = None;
        assert!(changed.to_data("2").contains(",NaN,NaN,2,"));
        let minus_zero = Event::parse_data("t,,true,true,true,-0,,").unwrap();
        assert_eq!(minus_zero.send_ct, Some(0));
        assert_eq!(minus_zero.to_data("1"), "t,,true,true,true,-0,NaN,1");
    }

    #[test]
    fn malformed_data_strings() {
        use EventDataError::*;
        let cases: &[(&str, EventDataError)] = &[
            ("", TooFewFields(1)),
            ("ping,,false,false,true,NaN,NaN", TooFewFields(7)),
            (",,false,false,true,NaN,NaN,1", InvalidType),
            ("pi ng,,false,false,true,NaN,NaN,1", InvalidType),
            ("ping,not_ok,false,false,true,NaN,NaN,1", InvalidSubType),
            ("ping,,TRUE,false,true,NaN,NaN,1", InvalidFlag("buffered")),
            ("ping,,false,1,true,NaN,NaN,1", InvalidFlag("logged")),
            ("ping,,false,false,,NaN,NaN,1", InvalidFlag("interceptable")),
            ("ping,,false,false,true,,NaN,1", InvalidSendCt),
            ("ping,,false,false,true,nan,NaN,1", InvalidSendCt),
            ("ping,,false,false,true,1.5,NaN,1", InvalidSendCt),
            ("ping,,false,false,true,+1,NaN,1", InvalidSendCt),
            ("ping,,false,false,true,1e3,NaN,1", InvalidSendCt),
            ("ping,,false,false,true,-,NaN,1", InvalidSendCt),
            (
                "ping,,false,false,true,99999999999999999999,NaN,1",
                InvalidSendCt,
            ),
        ];
        for (data, want) in cases {
            assert_eq!(Event::parse_data(data).as_ref(), Err(want), "{data:?}");
        }
        assert_eq!(
            TooFewFields(3).to_string(),
            "crEvent data has 3 fields, fewer than the 8 of eventType,eventSubType,buffered,logged,interceptable,sendCt,receiveCt,senderClientId"
        );
        assert_eq!(
            InvalidFlag("logged").to_string(),
            "crEvent data: logged must be `true` or `false`"
        );
    }

    #[test]
    fn the_8192_character_rule_counts_characters_as_delivered() {
        assert!(!data_too_large(&"x".repeat(8192)));
        assert!(data_too_large(&"x".repeat(8193)));
        // Characters, not bytes: 8192 three-byte characters are fine.
        assert!(!data_too_large(&"€".repeat(8192)));
        assert!(data_too_large(&"€".repeat(8193)));
        // The delivered form counts: "ping,,false,false,true,NaN,NaN,123456," is 38.
        let mut e = Event::new("ping");
        e.params = vec!["x".repeat(8192 - 38)];
        assert_eq!(e.to_data("123456").chars().count(), 8192);
        assert!(!e.too_large("123456"));
        e.params[0].push('x');
        assert!(e.too_large("123456"));
        // A forged long sender or receiveCt in the sent data does not count against it.
        let sent = format!("ping,,false,false,true,NaN,{},y", "9".repeat(9000));
        assert!(!Event::parse_data(&sent).unwrap().too_large("123456"));
    }

    fn token() -> impl Strategy<Value = String> {
        "[0-9A-Za-z]{1,8}"
    }

    /// Any valid event.
    fn any_event() -> impl Strategy<Value = Event> {
        (
            token(),
            "[0-9A-Za-z]{0,8}",
            proptest::collection::vec("[^,]{0,6}", 0..5),
            any::<(bool, bool, bool)>(),
            proptest::option::of(any::<i64>()),
        )
            .prop_map(|(t, s, params, (b, l, i), send_ct)| Event {
                event_type: t,
                sub_type: s,
                params,
                buffered: b,
                logged: l,
                interceptable: i,
                send_ct,
                send_ct_text: None,
            })
    }

    proptest! {
        #[test]
        fn parse_data_of_to_data_is_the_event(e in any_event(), sender in "[0-9]{6}") {
            let data = e.to_data(&sender);
            let (back, got_sender) = Event::parse_delivered(&data).unwrap();
            prop_assert_eq!(back, e);
            prop_assert_eq!(got_sender, sender);
        }

        #[test]
        fn delivery_is_byte_for_byte_but_for_fields_7_and_8(
            head in "[0-9A-Za-z]{1,4},[0-9A-Za-z]{0,4},(true|false),(true|false),(true|false),(NaN|-?[0-9]{1,12})",
            receive in "[^,]{0,5}", forged in "[^,]{0,5}", tail in proptest::option::of(".{0,20}"),
        ) {
            let tail = tail.map(|t| format!(",{t}")).unwrap_or_default();
            let sent = format!("{head},{receive},{forged}{tail}");
            let e = Event::parse_data(&sent).unwrap();
            prop_assert_eq!(e.to_data("123456"), format!("{head},NaN,123456{tail}"));
        }

        #[test]
        fn parse_data_never_panics(data in ".{0,80}") {
            let _ = Event::parse_data(&data);
        }
    }
}
