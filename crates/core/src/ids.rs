//! Where identifiers come from: member ids, session codes and the app dialect's message ids.
//!
//! Every id the server makes is a prefix plus random characters from one alphabet. The
//! randomness is behind [`IdSource`], which the caller injects, so tests get deterministic ids
//! ([`SequentialIds`]) and the server gets unpredictable ones ([`RandomIds`]).

use std::sync::atomic::{AtomicU64, Ordering};

/// Lower-case base 36, as member ids and the app's message ids use.
pub const BASE36_LOWER: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
/// Upper-case base 36, as session codes made over HTTP use.
pub const BASE36_UPPER: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// The key a session id is looked up by: ASCII letters in upper case, `-` left out. People
/// type session codes: `k7p3xq`, `K7P3XQ` and `k7p-3xq` all find the session `K7P-3XQ`, which
/// keeps the form it was created with everywhere it is shown. Two ids with one key are one
/// session.
pub fn session_key(id: &str) -> String {
    id.chars()
        .filter(|c| *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// Makes identifiers.
pub trait IdSource: Send + Sync {
    /// `len` characters drawn from `alphabet`.
    fn chars(&self, alphabet: &[u8], len: usize) -> String;

    /// A fresh `clientId`: `c_` and 12 base-36 characters (about 62 bits).
    fn member_id(&self) -> String {
        format!("c_{}", self.chars(BASE36_LOWER, 12))
    }

    /// A session code for a session created without an id: 6 upper-case base-36 characters.
    fn session_code(&self) -> String {
        self.chars(BASE36_UPPER, 6)
    }

    /// A `messageId` as the LOUDSYNC app makes them: `msg_<ms>_<7 base-36 characters>`.
    fn app_message_id(&self, now_ms: u64) -> String {
        format!("msg_{now_ms}_{}", self.chars(BASE36_LOWER, 7))
    }
}

/// `len` characters drawn uniformly from `alphabet` (at most 256 symbols) with the operating
/// system's CSPRNG (`getrandom`), by rejection sampling: bytes at or above the largest
/// multiple of the alphabet's size are dropped, so every character is equally likely.
pub fn secure_chars(alphabet: &[u8], len: usize) -> String {
    assert!(
        (1..=256).contains(&alphabet.len()),
        "an alphabet of 1 to 256 symbols"
    );
    let limit = 256 - 256 % alphabet.len();
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        getrandom::fill(&mut buf).expect("the operating system's random source");
        for b in buf.iter().filter(|b| usize::from(**b) < limit) {
            if out.len() == len {
                break;
            }
            out.push(alphabet[usize::from(*b) % alphabet.len()] as char);
        }
    }
    out
}

/// Random ids. Member ids and message ids come from a fast, non-cryptographic generator
/// (they are names, not secrets); session codes, which people share and type and which
/// are all a join needs in an open session, come from the OS CSPRNG ([`secure_chars`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct RandomIds;

impl IdSource for RandomIds {
    fn chars(&self, alphabet: &[u8], len: usize) -> String {
        (0..len)
            .map(|_| alphabet[fastrand::usize(..alphabet.len())] as char)
            .collect()
    }

    fn session_code(&self) -> String {
        secure_chars(BASE36_UPPER, 6)
    }
}

/// Deterministic ids for tests: the n-th call gives n written in `alphabet`, padded.
#[derive(Debug, Default)]
pub struct SequentialIds {
    next: AtomicU64,
}

impl IdSource for SequentialIds {
    fn chars(&self, alphabet: &[u8], len: usize) -> String {
        let mut n = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let base = alphabet.len() as u64;
        let mut out = vec![alphabet[0]; len];
        for slot in out.iter_mut().rev() {
            *slot = alphabet[(n % base) as usize];
            n /= base;
        }
        String::from_utf8(out).expect("alphabets are ASCII")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_codes_are_six_upper_case_base36_characters_from_the_csprng() {
        let codes: std::collections::HashSet<String> =
            (0..200).map(|_| RandomIds.session_code()).collect();
        assert!(codes.len() > 190, "random, not repeating: {}", codes.len());
        for code in &codes {
            assert!(loudsync_protocol::handoff::is_session_code(code), "{code}");
        }
        // Every symbol of a 36-letter alphabet turns up in 36 000 draws.
        let many = secure_chars(BASE36_UPPER, 36_000);
        for c in BASE36_UPPER {
            let n = many.bytes().filter(|b| b == c).count();
            assert!((700..1300).contains(&n), "{} drawn {n} times", *c as char);
        }
    }

    #[test]
    fn formats() {
        let ids = RandomIds;
        let id = ids.member_id();
        assert_eq!(id.len(), 14);
        assert!(id.starts_with("c_"));
        assert!(id[2..].bytes().all(|b| BASE36_LOWER.contains(&b)));
        let code = ids.session_code();
        assert_eq!(code.len(), 6);
        assert!(code.bytes().all(|b| BASE36_UPPER.contains(&b)));
        let m = ids.app_message_id(1738941234567);
        let rest = m.strip_prefix("msg_1738941234567_").unwrap();
        assert_eq!(rest.len(), 7);
    }

    #[test]
    fn session_keys_ignore_case_and_dashes() {
        assert_eq!(session_key("K7P-3XQ"), "K7P3XQ");
        assert_eq!(session_key("k7p3xq"), "K7P3XQ");
        assert_eq!(session_key("k7P-3x-q"), "K7P3XQ");
        assert_eq!(session_key("fri_1"), "FRI_1", "`_` is part of the id");
        assert_ne!(session_key("fri_1"), session_key("fri1"));
    }

    proptest::proptest! {
        /// Any spelling of an id (case changed, dashes added or removed) has the id's key, and
        /// ids with one key differ only in case and dashes.
        #[test]
        fn a_session_key_is_the_id_without_case_or_dashes(
            id in "[A-Za-z0-9_-]{1,64}",
            flips in proptest::collection::vec(proptest::prelude::any::<bool>(), 64),
            dashes in proptest::collection::vec(0usize..3, 64),
        ) {
            let mut typed = String::new();
            for (c, (flip, dash)) in id.chars().zip(flips.iter().zip(&dashes)) {
                if c == '-' {
                    continue;
                }
                typed.push_str(&"-".repeat(*dash));
                typed.push(if *flip { c.to_ascii_lowercase() } else { c.to_ascii_uppercase() });
            }
            proptest::prop_assert_eq!(session_key(&typed), session_key(&id));
            proptest::prop_assert_eq!(session_key(&session_key(&id)), session_key(&id));
        }

        #[test]
        fn ids_with_one_key_differ_only_in_case_and_dashes(
            a in "[A-Ca-c_-]{1,6}",
            b in "[A-Ca-c_-]{1,6}",
        ) {
            let plain = |s: &str| s.replace('-', "").to_ascii_lowercase();
            proptest::prop_assert_eq!(session_key(&a) == session_key(&b), plain(&a) == plain(&b));
        }
    }

    #[test]
    fn sequential_ids_are_deterministic_and_distinct() {
        let ids = SequentialIds::default();
        assert_eq!(ids.member_id(), "c_000000000001");
        assert_eq!(ids.member_id(), "c_000000000002");
        assert_eq!(ids.session_code(), "000003");
    }
}
