//! The admin event stream's history (`GET /v1/events`): a ring of the last events with their
//! server-wide sequence numbers, and the rule that answers a reconnecting client's
//! `Last-Event-ID`.
//!
//! Every event gets the next number (1, 2, 3, ...) of one stream; a stream is named by an id
//! chosen once per process, and the id a client sees is `<stream>-<n>`, so an id from before a
//! restart (another stream) is told apart from a current one. A `Last-Event-ID` resolves to:
//! - [`Resolution::Replay`]: every kept event after it (possibly none), then live events;
//! - [`Resolution::Reset`]: the client cannot be brought up to date from the ring (an id of
//!   another stream, malformed, ahead of the stream, older than the ring, or from before a
//!   stretch the server did not record); it must reload its lists, then follow live events.
//!
//! History can also be broken on purpose ([`EventRing::forget`]): while nobody listens the
//! server records nothing, and a client that comes back after that must reset even if its id
//! is the last one given.

use std::collections::VecDeque;

/// Why a `Last-Event-ID` cannot be replayed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetReason {
    /// Not `<stream>-<n>`.
    Malformed,
    /// Another stream's id (another process, e.g. before a restart).
    OtherStream,
    /// Ahead of the last event given.
    Ahead,
    /// Events after it are no longer kept (the ring moved past it, or the server stopped
    /// recording for a while).
    TooOld,
}

impl ResetReason {
    /// The snake_case word the `reset` event carries.
    pub fn as_str(self) -> &'static str {
        match self {
            ResetReason::Malformed => "malformed",
            ResetReason::OtherStream => "other_stream",
            ResetReason::Ahead => "ahead",
            ResetReason::TooOld => "too_old",
        }
    }
}

/// What a subscriber with a given `Last-Event-ID` is sent before live events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution<T> {
    /// No `Last-Event-ID`: live events only.
    Live,
    /// These kept events (in order, all after the client's id), then live ones.
    Replay(Vec<T>),
    /// A `reset`, then live events.
    Reset(ResetReason),
}

/// The last `capacity` events of one stream, numbered from 1.
#[derive(Debug, Clone)]
pub struct EventRing<T> {
    stream: String,
    capacity: usize,
    kept: VecDeque<(u64, T)>,
    /// The number of the last event given (0 before the first).
    last: u64,
    /// The smallest id a client may hold and still be replayed to: events after any id at
    /// or above it are all kept or were all seen.
    complete_from: u64,
}

impl<T: Clone> EventRing<T> {
    /// An empty ring for stream `stream` (no `-` in it) keeping `capacity` events (at least 1).
    pub fn new(stream: impl Into<String>, capacity: usize) -> Self {
        EventRing {
            stream: stream.into(),
            capacity: capacity.max(1),
            kept: VecDeque::new(),
            last: 0,
            complete_from: 0,
        }
    }

    /// The stream's id.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The number of the last event given (0 before the first).
    pub fn last(&self) -> u64 {
        self.last
    }

    /// The id a client holds after event `n`: `<stream>-<n>`.
    pub fn id_of(&self, n: u64) -> String {
        format!("{}-{n}", self.stream)
    }

    /// How many events are kept.
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    /// Whether no event is kept.
    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    /// Keeps `event` as the next one, dropping the oldest over capacity; returns its number.
    pub fn push(&mut self, event: T) -> u64 {
        self.last += 1;
        if self.kept.len() == self.capacity {
            self.kept.pop_front();
        }
        self.kept.push_back((self.last, event));
        self.last
    }

    /// Breaks history: every kept event is dropped and every id given so far resolves to
    /// [`ResetReason::TooOld`] (the server stops recording; what happens next is not kept).
    /// Numbering goes on.
    pub fn forget(&mut self) {
        self.kept.clear();
        self.complete_from = self.last + 1;
    }

    /// What a client whose `Last-Event-ID` header is `last_event_id` gets before live events.
    pub fn resolve(&self, last_event_id: Option<&str>) -> Resolution<T> {
        let Some(given) = last_event_id else {
            return Resolution::Live;
        };
        let Some((stream, n)) = parse_id(given.trim()) else {
            return Resolution::Reset(ResetReason::Malformed);
        };
        if stream != self.stream {
            return Resolution::Reset(ResetReason::OtherStream);
        }
        if n > self.last {
            return Resolution::Reset(ResetReason::Ahead);
        }
        if n < self.complete_from {
            return Resolution::Reset(ResetReason::TooOld);
        }
        if n == self.last {
            return Resolution::Replay(Vec::new());
        }
        // Events n+1 ..= last must all be kept.
        match self.kept.front() {
            Some((oldest, _)) if *oldest <= n + 1 => Resolution::Replay(
                self.kept
                    .iter()
                    .filter(|(id, _)| *id > n)
                    .map(|(_, e)| e.clone())
                    .collect(),
            ),
            _ => Resolution::Reset(ResetReason::TooOld),
        }
    }
}

/// Splits `<stream>-<n>` (the stream id has no `-`; `n` is decimal).
pub fn parse_id(id: &str) -> Option<(&str, u64)> {
    let (stream, n) = id.rsplit_once('-')?;
    if stream.is_empty()
        || stream.contains('-')
        || n.is_empty()
        || !n.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some((stream, n.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(capacity: usize, events: u64) -> EventRing<u64> {
        let mut r = EventRing::new("s1", capacity);
        for e in 1..=events {
            assert_eq!(r.push(e * 10), e);
        }
        r
    }

    #[test]
    fn ids_are_stream_dash_number() {
        let r = ring(4, 2);
        assert_eq!(r.id_of(2), "s1-2");
        assert_eq!(parse_id("s1-2"), Some(("s1", 2)));
        assert_eq!(parse_id("ab12-0"), Some(("ab12", 0)));
        for bad in [
            "",
            "s1",
            "-3",
            "s1-",
            "s1-x",
            "s1-+3",
            "s1--3",
            "s1-99999999999999999999",
        ] {
            assert_eq!(parse_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn no_header_is_live_only() {
        assert_eq!(ring(4, 3).resolve(None), Resolution::Live);
    }

    #[test]
    fn an_id_in_the_ring_replays_every_later_event() {
        let r = ring(4, 6); // keeps 3..=6
        assert_eq!(
            r.resolve(Some("s1-2")),
            Resolution::Replay(vec![30, 40, 50, 60])
        );
        assert_eq!(r.resolve(Some("s1-4")), Resolution::Replay(vec![50, 60]));
        assert_eq!(r.resolve(Some(" s1-5 ")), Resolution::Replay(vec![60]));
        assert_eq!(r.resolve(Some("s1-6")), Resolution::Replay(vec![]));
    }

    #[test]
    fn an_id_older_than_the_ring_resets() {
        let r = ring(4, 6);
        assert_eq!(
            r.resolve(Some("s1-1")),
            Resolution::Reset(ResetReason::TooOld)
        );
        assert_eq!(
            r.resolve(Some("s1-0")),
            Resolution::Reset(ResetReason::TooOld)
        );
        // A fresh stream: 0 is the id before the first event, and it is up to date.
        let empty: EventRing<u64> = EventRing::new("s1", 4);
        assert_eq!(empty.resolve(Some("s1-0")), Resolution::Replay(vec![]));
        assert_eq!(
            ring(4, 2).resolve(Some("s1-0")),
            Resolution::Replay(vec![10, 20])
        );
    }

    #[test]
    fn another_stream_a_future_or_a_malformed_id_resets() {
        let r = ring(4, 3);
        assert_eq!(
            r.resolve(Some("s0-2")),
            Resolution::Reset(ResetReason::OtherStream)
        );
        assert_eq!(
            r.resolve(Some("s1-4")),
            Resolution::Reset(ResetReason::Ahead)
        );
        assert_eq!(
            r.resolve(Some("2")),
            Resolution::Reset(ResetReason::Malformed)
        );
    }

    #[test]
    fn forgetting_resets_every_id_given_so_far_and_numbering_goes_on() {
        let mut r = ring(4, 3);
        r.forget();
        assert!(r.is_empty());
        for id in ["s1-0", "s1-2", "s1-3"] {
            assert_eq!(
                r.resolve(Some(id)),
                Resolution::Reset(ResetReason::TooOld),
                "{id}"
            );
        }
        assert_eq!(r.push(40), 4);
        assert_eq!(r.push(50), 5);
        assert_eq!(r.resolve(Some("s1-4")), Resolution::Replay(vec![50]));
        assert_eq!(
            r.resolve(Some("s1-3")),
            Resolution::Reset(ResetReason::TooOld)
        );
    }

    #[test]
    fn capacity_is_at_least_one() {
        let r = ring(0, 3);
        assert_eq!(r.len(), 1);
        assert_eq!(r.resolve(Some("s1-2")), Resolution::Replay(vec![30]));
        assert_eq!(
            r.resolve(Some("s1-1")),
            Resolution::Reset(ResetReason::TooOld)
        );
    }
}
