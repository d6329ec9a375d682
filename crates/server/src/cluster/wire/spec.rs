//! Session specs: what `ls:{s:ID}:spec` holds, written once when a session is created
//! cluster-wide (`SET NX`) and read by every node that routes a join to it or claims it.
//!
//! The password travels as its SHA-256 digest in hex ([`Password::digest`]), never as
//! the password: the digest stays on the servers' side (Redis, the admin API).

use loudsync_core::directory::{Access, HostRule, Password, SessionSpec};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{decode_json, encode_json, WireError};

/// The JSON of a session spec.
pub fn encode_spec(spec: &SessionSpec) -> String {
    encode_json(&SpecOut(spec))
}

/// Reads a session spec; the error names the field at fault.
pub fn decode_spec(text: &str) -> Result<SessionSpec, WireError> {
    decode_json::<SpecIn>("session spec", text).map(|spec| spec.0)
}

#[derive(Serialize)]
#[serde(transparent)]
struct SpecOut<'a>(#[serde(with = "SessionSpecDef")] &'a SessionSpec);

#[derive(Deserialize)]
#[serde(transparent)]
struct SpecIn(#[serde(with = "SessionSpecDef")] SessionSpec);

#[derive(Serialize, Deserialize)]
#[serde(remote = "SessionSpec", rename_all = "camelCase")]
struct SessionSpecDef {
    id: String,
    name: String,
    max_members: usize,
    #[serde(with = "AccessDef")]
    access: Access,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "Access", rename_all = "camelCase")]
struct AccessDef {
    #[serde(with = "HostRuleDef")]
    host: HostRule,
    #[serde(
        with = "password_hex",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    password: Option<Password>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    host_name: Option<String>,
}

/// `"open"`, `{"device":id}` or `"token_only"`.
#[derive(Serialize, Deserialize)]
#[serde(remote = "HostRule", rename_all = "snake_case")]
enum HostRuleDef {
    Open,
    Device(String),
    TokenOnly,
}

/// A password as its digest: 64 lowercase hex digits.
mod password_hex {
    use super::*;

    pub fn serialize<S: Serializer>(password: &Option<Password>, s: S) -> Result<S::Ok, S::Error> {
        password.as_ref().map(|p| hex(&p.digest())).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Password>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(text) => parse_digest(&text)
                .map(|digest| Some(Password::from_digest(digest)))
                .ok_or_else(|| {
                    serde::de::Error::custom("a password digest is 64 hex digits (SHA-256)")
                }),
        }
    }

    fn hex(bytes: &[u8; 32]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn parse_digest(text: &str) -> Option<[u8; 32]> {
        let digits = text.as_bytes();
        if digits.len() != 64 {
            return None;
        }
        let mut digest = [0u8; 32];
        for (byte, pair) in digest.iter_mut().zip(digits.chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).ok()?;
            if !pair.bytes().all(|c| c.is_ascii_hexdigit()) {
                return None;
            }
            *byte = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(digest)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn spec(host: HostRule, password: Option<Password>, host_name: Option<String>) -> SessionSpec {
        SessionSpec {
            id: "K7P3XQ".into(),
            name: "Friday \"gig\" \u{1F3B8}".into(),
            max_members: 8,
            access: Access {
                host,
                password,
                host_name,
            },
        }
    }

    fn round_trip(spec: &SessionSpec) -> String {
        let text = encode_spec(spec);
        assert_eq!(&decode_spec(&text).unwrap(), spec, "{text}");
        text
    }

    #[test]
    fn an_open_session_without_password_round_trips() {
        let text = round_trip(&spec(HostRule::Open, None, None));
        assert_eq!(
            text,
            r#"{"id":"K7P3XQ","name":"Friday \"gig\" 🎸","maxMembers":8,"access":{"host":"open"}}"#
        );
    }

    #[test]
    fn every_host_rule_and_a_password_round_trip() {
        round_trip(&spec(
            HostRule::Device("dev-1".into()),
            Some(Password::new("s3cret")),
            Some("Ana".into()),
        ));
        let text = round_trip(&spec(HostRule::TokenOnly, Some(Password::new("x")), None));
        assert!(text.contains(r#""host":"token_only""#), "{text}");
    }

    #[test]
    fn the_password_is_kept_as_its_digest_and_still_matches() {
        let text = encode_spec(&spec(HostRule::Open, Some(Password::new("s3cret")), None));
        assert!(!text.contains("s3cret"), "{text}");
        let back = decode_spec(&text).unwrap();
        let password = back.access.password.unwrap();
        assert!(password.matches("s3cret"));
        assert!(!password.matches("s3cret "));
    }

    #[test]
    fn a_bad_digest_is_an_error_naming_the_field() {
        for digest in ["abc", &"g".repeat(64), &"é".repeat(32)] {
            let text = format!(
                r#"{{"id":"A","name":"n","maxMembers":2,"access":{{"host":"open","password":"{digest}"}}}}"#
            );
            let e = decode_spec(&text).unwrap_err().to_string();
            assert!(
                e.starts_with("session spec: access.password: a password digest is 64 hex digits"),
                "{e}"
            );
        }
    }

    #[test]
    fn other_errors_name_the_field() {
        let e = decode_spec(r#"{"id":"A","name":"n","maxMembers":-1,"access":{"host":"open"}}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("session spec: maxMembers: invalid value"),
            "{e}"
        );
        let e = decode_spec(r#"{"id":"A","name":"n","maxMembers":1,"access":{"host":"boss"}}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("session spec: access.host: unknown variant `boss`"),
            "{e}"
        );
    }

    proptest! {
        #[test]
        fn specs_round_trip(
            id in any::<String>(), name in any::<String>(), max in any::<u32>(),
            device in proptest::option::of(any::<String>()),
            password in proptest::option::of(any::<[u8; 32]>()),
            host_name in proptest::option::of(any::<String>()),
        ) {
            let host = device.map_or(HostRule::Open, HostRule::Device);
            let mut spec = spec(host, password.map(Password::from_digest), host_name);
            spec.id = id;
            spec.name = name;
            spec.max_members = max as usize;
            let back = decode_spec(&encode_spec(&spec)).unwrap();
            prop_assert_eq!(back, spec);
        }

        #[test]
        fn decoding_any_text_never_panics(text in any::<String>()) {
            let _ = decode_spec(&text);
        }
    }
}
