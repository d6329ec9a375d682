//! Where assigned pairing client ids come from (issue 12, P6).
//!
//! A pairing client id is six decimal digits, `000000` to `999999`, one namespace for the whole
//! server. An id the server hands out (`clientid/`, or a WebSocket identify without one) must
//! be neither connected now nor handed out before by this process, until all 10^6 have been
//! handed out; then a new round starts and only "not connected now" still holds.
//!
//! The allocator keeps one bit per id (125 KB) for "handed out this round". It draws candidates
//! from the injected [`IdSource`] (random in the server, scripted in tests), so ids are not
//! guessable from one another; a drawn id that is taken is drawn again a few times, and then
//! the ids are scanned in order from where the last scan stopped (wrapping, 64 handed-out ids
//! at a time), so allocation stays cheap even when nearly every id is used. 10^6 is exactly
//! 15 625 words of 64 bits.

use std::sync::Arc;

use crate::ids::IdSource;

/// How many pairing client ids there are: six decimal digits.
pub const CLIENT_ID_SPACE: u32 = 1_000_000;

/// Random draws tried before the allocator scans for a free id.
const DRAWS: usize = 16;

/// A client id as the wire writes it: six digits, leading zeros kept.
pub fn format_client_id(n: u32) -> String {
    format!("{n:06}")
}

/// Hands out client ids by the rule of the module comment.
pub struct ClientIdAllocator {
    source: Arc<dyn IdSource>,
    /// One bit per id: handed out in this round.
    handed: Vec<u64>,
    /// How many bits of `handed` are set.
    count: u32,
    /// Where the next scan starts (one past the last id a scan found).
    cursor: u32,
}

impl std::fmt::Debug for ClientIdAllocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdAllocator")
            .field("handed_out", &self.count)
            .finish_non_exhaustive()
    }
}

impl ClientIdAllocator {
    /// An allocator that has handed out nothing, drawing from `source`.
    pub fn new(source: Arc<dyn IdSource>) -> Self {
        ClientIdAllocator {
            source,
            handed: vec![0; CLIENT_ID_SPACE.div_ceil(64) as usize],
            count: 0,
            cursor: 0,
        }
    }

    /// How many ids this round has handed out.
    pub fn handed_out(&self) -> u32 {
        self.count
    }

    /// A fresh id for which `connected` is false, marked as handed out; `None` only if every
    /// one of the 10^6 ids is connected.
    pub fn allocate(&mut self, connected: impl Fn(u32) -> bool) -> Option<u32> {
        if self.count == CLIENT_ID_SPACE {
            self.new_round();
        }
        for _ in 0..DRAWS {
            let n = self.draw();
            if !self.is_handed(n) && !connected(n) {
                return Some(self.take(n));
            }
        }
        if let Some(n) = self.scan(&connected) {
            return Some(self.take(n));
        }
        // Every id not yet handed out this round is connected: the round is used up.
        self.new_round();
        let n = self.scan(&connected)?;
        Some(self.take(n))
    }

    /// The first id at or after the cursor (wrapping) that is neither handed out nor
    /// connected; full words of the bitmap are skipped 64 ids at a time.
    fn scan(&mut self, connected: &impl Fn(u32) -> bool) -> Option<u32> {
        let mut i = 0;
        while i < CLIENT_ID_SPACE {
            let n = (self.cursor + i) % CLIENT_ID_SPACE;
            if n.is_multiple_of(64) && self.handed[(n / 64) as usize] == u64::MAX {
                i += 64;
                continue;
            }
            if !self.is_handed(n) && !connected(n) {
                self.cursor = (n + 1) % CLIENT_ID_SPACE;
                return Some(n);
            }
            i += 1;
        }
        None
    }

    fn draw(&self) -> u32 {
        let digits = self.source.chars(b"0123456789", 6);
        digits.parse::<u32>().unwrap_or(0) % CLIENT_ID_SPACE
    }

    fn is_handed(&self, n: u32) -> bool {
        self.handed[(n / 64) as usize] & (1 << (n % 64)) != 0
    }

    fn take(&mut self, n: u32) -> u32 {
        self.handed[(n / 64) as usize] |= 1 << (n % 64);
        self.count += 1;
        n
    }

    fn new_round(&mut self) {
        self.handed.iter_mut().for_each(|w| *w = 0);
        self.count = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SequentialIds;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    /// Gives the scripted draws in order, then `000000` for ever.
    struct Script(Mutex<VecDeque<&'static str>>);

    impl IdSource for Script {
        fn chars(&self, _alphabet: &[u8], _len: usize) -> String {
            self.0
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or("000000")
                .to_string()
        }
    }

    fn script(draws: &[&'static str]) -> Arc<dyn IdSource> {
        Arc::new(Script(Mutex::new(draws.iter().copied().collect())))
    }

    #[test]
    fn ids_are_six_digits_with_leading_zeros() {
        assert_eq!(format_client_id(0), "000000");
        assert_eq!(format_client_id(42), "000042");
        assert_eq!(format_client_id(999_999), "999999");
        let mut a = ClientIdAllocator::new(Arc::new(SequentialIds::default()));
        assert_eq!(
            a.allocate(|_| false).map(format_client_id).unwrap(),
            "000001"
        );
        assert_eq!(
            a.allocate(|_| false).map(format_client_id).unwrap(),
            "000002"
        );
    }

    #[test]
    fn a_drawn_id_handed_out_before_or_connected_is_drawn_again() {
        let mut a = ClientIdAllocator::new(script(&["000007", "000007", "000009", "000011"]));
        assert_eq!(a.allocate(|_| false), Some(7));
        // 7 again is skipped (handed out), 9 is connected, 11 is free.
        assert_eq!(a.allocate(|n| n == 9), Some(11));
        assert_eq!(a.handed_out(), 2);
    }

    #[test]
    fn when_draws_keep_failing_the_ids_are_scanned_in_order() {
        // The script runs out, so every later draw is 000000, which is handed out first;
        // then the scan goes 1, 2, ... skipping the connected ones, and goes on from there.
        let mut a = ClientIdAllocator::new(script(&[]));
        assert_eq!(a.allocate(|_| false), Some(0));
        assert_eq!(a.allocate(|n| n == 1 || n == 2), Some(3));
        assert_eq!(a.allocate(|_| false), Some(4));
        // Past the end it wraps to the ids it skipped.
        a.cursor = CLIENT_ID_SPACE - 1;
        assert_eq!(a.allocate(|_| false), Some(CLIENT_ID_SPACE - 1));
        assert_eq!(a.allocate(|_| false), Some(1));
    }

    #[test]
    fn no_id_is_handed_out_twice_until_all_million_are_used_then_a_new_round_starts() {
        let mut a = ClientIdAllocator::new(Arc::new(SequentialIds::default()));
        let mut seen = vec![false; CLIENT_ID_SPACE as usize];
        for _ in 0..CLIENT_ID_SPACE - 1 {
            let n = a.allocate(|n| n == 500_000).unwrap();
            assert!(!seen[n as usize], "{n} handed out twice");
            seen[n as usize] = true;
        }
        // 500000 was connected the whole time, so it is the one id this round has left.
        assert!(!seen[500_000]);
        assert_eq!(a.handed_out(), CLIENT_ID_SPACE - 1);
        // Still connected: the round is used up, a new one starts, and an id that is not
        // connected comes back.
        let n = a.allocate(|n| n == 500_000).unwrap();
        assert_ne!(n, 500_000);
        assert_eq!(a.handed_out(), 1);
        // Disconnected at last, it is an id like any other of the new round.
        let mut b = ClientIdAllocator::new(script(&["500000"]));
        assert_eq!(b.allocate(|_| false), Some(500_000));
    }

    #[test]
    fn every_id_connected_means_none() {
        let mut a = ClientIdAllocator::new(script(&[]));
        assert_eq!(a.allocate(|_| true), None);
    }
}
