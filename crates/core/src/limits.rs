//! The per-connection message rate limit, driven by the time passed in.
//!
//! Two parts:
//! - [`TokenBucket`] decides whether one frame is admitted: `rate` frames per second on
//!   average, bursts of up to `burst`.
//! - [`RateLimiter`] wraps the bucket with what happens to frames it drops. A dropped frame
//!   gets a `rate_limited` error at most once per [`ERROR_INTERVAL`], however fast the client
//!   sends (the errors themselves must not become a flood the other way). Drops are counted in
//!   a window of [`DROP_WINDOW`] that opens at the first drop: more than `burst` drops within
//!   one window mean the client keeps sending faster than the limit, and the socket is closed
//!   (1008). An admitted frame does not reset the count, so a client sending at 1.5 times the
//!   limit (every third frame dropped) is closed within a few seconds, while one that strays
//!   over the limit for a moment is only told.

use std::time::{Duration, Instant};

/// At most one `rate_limited` error per this interval.
pub const ERROR_INTERVAL: Duration = Duration::from_secs(1);

/// Drops are counted over windows this long; more than `burst` in one window closes the socket.
pub const DROP_WINDOW: Duration = Duration::from_secs(10);

/// Allows `rate` events per second on average, with bursts of up to `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`. A `rate` of 0 disables the limit.
    pub fn new(rate: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate: f64::from(rate),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token if there is one; `false` means the event is over the limit.
    pub fn try_take(&mut self, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What to do with one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Handle it.
    Admit,
    /// Drop it; `notify` says whether to send the client a `rate_limited` error now.
    Drop {
        /// Send `rate_limited` (at most once per [`ERROR_INTERVAL`]).
        notify: bool,
    },
    /// Drop it and close the socket with 1008: more than `burst` drops in one [`DROP_WINDOW`].
    Close,
}

/// A [`TokenBucket`] plus the rules for what it drops (see the module comment).
#[derive(Debug, Clone)]
pub struct RateLimiter {
    bucket: TokenBucket,
    max_drops: u32,
    window_start: Option<Instant>,
    drops: u32,
    last_error: Option<Instant>,
}

impl RateLimiter {
    /// A limiter at `now` admitting `rate` frames per second with bursts of `burst`; `rate` 0
    /// admits everything.
    pub fn new(rate: u32, burst: u32, now: Instant) -> Self {
        RateLimiter {
            bucket: TokenBucket::new(rate, burst, now),
            max_drops: burst.max(1),
            window_start: None,
            drops: 0,
            last_error: None,
        }
    }

    /// The verdict on one frame arriving at `now`.
    pub fn check(&mut self, now: Instant) -> Verdict {
        if self.bucket.try_take(now) {
            return Verdict::Admit;
        }
        let window_open = self
            .window_start
            .is_some_and(|start| now.saturating_duration_since(start) < DROP_WINDOW);
        if !window_open {
            self.window_start = Some(now);
            self.drops = 0;
        }
        self.drops += 1;
        if self.drops > self.max_drops {
            return Verdict::Close;
        }
        let notify = self
            .last_error
            .is_none_or(|last| now.saturating_duration_since(last) >= ERROR_INTERVAL);
        if notify {
            self.last_error = Some(now);
        }
        Verdict::Drop { notify }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100, 200, t0);
        assert!((0..200).all(|_| b.try_take(t0)));
        assert!(!b.try_take(t0));
        // 100 ms later, 10 more tokens.
        let t1 = t0 + Duration::from_millis(100);
        assert!((0..10).all(|_| b.try_take(t1)));
        assert!(!b.try_take(t1));
    }

    #[test]
    fn zero_rate_means_unlimited() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0, 1, t0);
        assert!((0..10_000).all(|_| b.try_take(t0)));
        let mut l = RateLimiter::new(0, 1, t0);
        assert!((0..10_000).all(|_| l.check(t0) == Verdict::Admit));
    }

    /// Sends `per_sec` frames a second, evenly spaced, for up to `secs` seconds; returns the
    /// errors sent per second and when (in ms) the limiter closed, if it did.
    fn send_at(per_sec: u32, secs: u32, rate: u32, burst: u32) -> (Vec<u32>, Option<u64>) {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(rate, burst, t0);
        let mut errors = vec![0; secs as usize];
        let step = Duration::from_secs(1) / per_sec;
        for i in 0..per_sec * secs {
            let now = t0 + step * i;
            let second = (step * i).as_secs() as usize;
            match l.check(now) {
                Verdict::Admit | Verdict::Drop { notify: false } => {}
                Verdict::Drop { notify: true } => errors[second] += 1,
                Verdict::Close => return (errors, Some((step * i).as_millis() as u64)),
            }
        }
        (errors, None)
    }

    #[test]
    fn a_client_at_one_and_a_half_times_the_limit_gets_one_error_a_second_then_is_closed() {
        // The case: 150 frames/s against 100/s (burst 200). The burst lasts 4 s, then
        // every third frame is dropped; 201 drops take another ~4 s.
        let (errors, closed) = send_at(150, 20, 100, 200);
        let closed = closed.expect("a sustained flooder is closed");
        assert!((7_000..10_000).contains(&closed), "closed at {closed} ms");
        assert!(errors.iter().all(|&n| n <= 1), "{errors:?}");
        assert!(errors.iter().sum::<u32>() >= 3, "{errors:?}");
    }

    #[test]
    fn a_client_just_over_the_limit_is_told_once_a_second_and_never_closed() {
        // 110/s against 100/s: 10 drops a second, 100 per window, under the burst of 200.
        let (errors, closed) = send_at(110, 60, 100, 200);
        assert_eq!(closed, None);
        assert!(errors.iter().all(|&n| n <= 1), "{errors:?}");
        // Once the burst is spent (20 s), the client keeps hearing about it: an error at least
        // every other second (the 1 s spacing drifts across second boundaries).
        assert!(
            errors[21..].windows(2).all(|w| w[0] + w[1] >= 1),
            "{errors:?}"
        );
    }

    #[test]
    fn a_flood_closes_after_burst_plus_one_drops() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(10, 5, t0);
        assert!((0..5).all(|_| l.check(t0) == Verdict::Admit));
        assert_eq!(l.check(t0), Verdict::Drop { notify: true });
        for _ in 0..4 {
            assert_eq!(l.check(t0), Verdict::Drop { notify: false });
        }
        assert_eq!(l.check(t0), Verdict::Close);
    }

    #[test]
    fn drops_in_an_old_window_are_forgotten() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(10, 5, t0);
        (0..5).for_each(|_| assert_eq!(l.check(t0), Verdict::Admit));
        (0..5).for_each(|_| assert!(matches!(l.check(t0), Verdict::Drop { .. })));
        // A window later the bucket is full again; a new run of drops starts from zero.
        let t1 = t0 + DROP_WINDOW;
        (0..5).for_each(|_| assert_eq!(l.check(t1), Verdict::Admit));
        assert_eq!(l.check(t1), Verdict::Drop { notify: true });
        (0..4).for_each(|_| assert_eq!(l.check(t1), Verdict::Drop { notify: false }));
        assert_eq!(l.check(t1), Verdict::Close);
    }
}
