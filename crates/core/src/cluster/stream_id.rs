//! Redis stream entry ids (`"ms-seq"`), parsed into numbers so they can be compared.
//!
//! Redis names every stream entry `MS-SEQ`: `MS` is the Redis server's Unix time in
//! milliseconds when the entry was added, `SEQ` counts entries added in the same millisecond.
//! Ids only rise within one stream, and two ids compare by `MS` first, then `SEQ` — which
//! is *not* how their strings compare (`"9-0" > "10-0"` as text), so the cluster code never
//! compares them as strings: it parses them into a [`StreamId`] and compares that.
//!
//! The parser is strict, because a malformed id from Redis is a bug or a corruption, never
//! something to guess around: both parts must be present and made of ASCII digits only (no
//! sign, no spaces), and each must fit a `u64`. The error says which part is wrong.

use std::fmt;
use std::str::FromStr;

/// A Redis stream entry id: milliseconds of the Redis clock, then a sequence number within
/// that millisecond. Ordered by `(ms, seq)`, as Redis orders entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId {
    /// The Redis server's Unix time in milliseconds when the entry was added.
    pub ms: u64,
    /// The entry's number among those added in the same millisecond.
    pub seq: u64,
}

impl StreamId {
    /// `0-0`: smaller than every id Redis hands out, so "everything after `ZERO`" is the
    /// whole stream (an empty stream's tail and a fresh cursor are `ZERO`).
    pub const ZERO: StreamId = StreamId { ms: 0, seq: 0 };

    /// The id `ms-seq`.
    pub const fn new(ms: u64, seq: u64) -> StreamId {
        StreamId { ms, seq }
    }

    /// Parses `"ms-seq"`; see [`StreamIdError`] for what is refused.
    pub fn parse(text: &str) -> Result<StreamId, StreamIdError> {
        let Some((ms, seq)) = text.split_once('-') else {
            return Err(StreamIdError::MissingDash(text.to_owned()));
        };
        let ms = parse_part(ms).ok_or_else(|| StreamIdError::BadMs(text.to_owned()))?;
        let seq = parse_part(seq).ok_or_else(|| StreamIdError::BadSeq(text.to_owned()))?;
        Ok(StreamId { ms, seq })
    }

    /// The smallest id greater than this one (`None` past `u64::MAX-u64::MAX`).
    pub fn next(self) -> Option<StreamId> {
        match self.seq.checked_add(1) {
            Some(seq) => Some(StreamId { ms: self.ms, seq }),
            None => self.ms.checked_add(1).map(|ms| StreamId { ms, seq: 0 }),
        }
    }
}

/// One part of an id: ASCII digits only, at least one, fitting a `u64`.
fn parse_part(part: &str) -> Option<u64> {
    if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    part.parse().ok()
}

impl fmt::Display for StreamId {
    /// `ms-seq`, as Redis writes it (so `parse(id.to_string()) == id`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl FromStr for StreamId {
    type Err = StreamIdError;

    fn from_str(text: &str) -> Result<StreamId, StreamIdError> {
        StreamId::parse(text)
    }
}

/// Why a text is not a stream id. Each variant carries the whole text that was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamIdError {
    /// There is no `-` between the milliseconds and the sequence number.
    MissingDash(String),
    /// The part before the first `-` is empty, not all ASCII digits, or larger than `u64`.
    BadMs(String),
    /// The part after the first `-` is empty, not all ASCII digits (a second `-` counts),
    /// or larger than `u64`.
    BadSeq(String),
}

impl fmt::Display for StreamIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamIdError::MissingDash(text) => {
                write!(
                    f,
                    "stream id {text:?} has no '-' between milliseconds and sequence"
                )
            }
            StreamIdError::BadMs(text) => write!(
                f,
                "stream id {text:?}: the milliseconds before '-' are not a decimal u64"
            ),
            StreamIdError::BadSeq(text) => write!(
                f,
                "stream id {text:?}: the sequence after '-' is not a decimal u64"
            ),
        }
    }
}

impl std::error::Error for StreamIdError {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_displays_redis_ids() {
        let id = StreamId::parse("1700000000123-7").unwrap();
        assert_eq!(id, StreamId::new(1_700_000_000_123, 7));
        assert_eq!(id.to_string(), "1700000000123-7");
        assert_eq!("0-0".parse::<StreamId>().unwrap(), StreamId::ZERO);
        let max = format!("{}-{}", u64::MAX, u64::MAX);
        assert_eq!(
            StreamId::parse(&max).unwrap(),
            StreamId::new(u64::MAX, u64::MAX)
        );
    }

    #[test]
    fn names_the_part_that_is_wrong() {
        use StreamIdError::*;
        let cases = [
            ("", MissingDash(String::new())),
            ("123", MissingDash("123".into())),
            ("-1", BadMs("-1".into())),
            ("+1-2", BadMs("+1-2".into())),
            (" 1-2", BadMs(" 1-2".into())),
            ("x-2", BadMs("x-2".into())),
            (
                "18446744073709551616-0",
                BadMs("18446744073709551616-0".into()),
            ),
            ("1-", BadSeq("1-".into())),
            ("1-2-3", BadSeq("1-2-3".into())),
            ("1-+2", BadSeq("1-+2".into())),
            ("1-2 ", BadSeq("1-2 ".into())),
            ("1-*", BadSeq("1-*".into())),
            (
                "1-18446744073709551616",
                BadSeq("1-18446744073709551616".into()),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(StreamId::parse(text), Err(want), "{text:?}");
        }
        assert_eq!(
            StreamId::parse("1-x").unwrap_err().to_string(),
            "stream id \"1-x\": the sequence after '-' is not a decimal u64"
        );
    }

    #[test]
    fn orders_by_number_not_by_text() {
        let nine = StreamId::parse("9-5").unwrap();
        let ten = StreamId::parse("10-0").unwrap();
        assert!("9-5" > "10-0");
        assert!(nine < ten);
        assert!(StreamId::new(10, 1) > StreamId::new(10, 0));
        assert!(StreamId::ZERO < StreamId::new(0, 1));
    }

    #[test]
    fn next_is_the_smallest_greater_id() {
        assert_eq!(StreamId::new(5, 1).next(), Some(StreamId::new(5, 2)));
        assert_eq!(StreamId::new(5, u64::MAX).next(), Some(StreamId::new(6, 0)));
        assert_eq!(StreamId::new(u64::MAX, u64::MAX).next(), None);
    }

    proptest! {
        #[test]
        fn display_round_trips(ms in any::<u64>(), seq in any::<u64>()) {
            let id = StreamId::new(ms, seq);
            prop_assert_eq!(StreamId::parse(&id.to_string()), Ok(id));
        }

        #[test]
        fn order_is_lexicographic_on_the_pair(a in any::<(u64, u64)>(), b in any::<(u64, u64)>()) {
            let (x, y) = (StreamId::new(a.0, a.1), StreamId::new(b.0, b.1));
            prop_assert_eq!(x.cmp(&y), a.cmp(&b));
        }

        #[test]
        fn never_panics_on_any_text(text in ".{0,40}") {
            let _ = StreamId::parse(&text);
        }
    }
}
