//! Signed join tokens (JWTs, as Centrifugo's connection tokens and LiveKit's access tokens):
//! the key ([`TokenKey`]: an HS256 secret, or an Ed25519 / RSA key in PEM), [`verify`] (a pure
//! function of the token, the key and the time) and [`mint`] (what `loudsync token` and
//! `POST /v1/sessions {"hostToken": true}` use). The crypto is the `jsonwebtoken` crate's (on
//! ring); what the claims must say about the join is the core's
//! ([`loudsync_core::directory::admit`]).
//!
//! Claims: `sid` (the session id, compared in any case and with or without dashes), `role`
//! (`host` or `client`), optionally `sub` (the device id) and `name` (the device name), `exp`
//! (required) and optionally `nbf` and `iat`, in seconds since the Unix epoch. `exp` and `nbf`
//! are checked with [`LEEWAY_SECS`] of leeway for clocks that differ a little.

use std::path::Path;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use loudsync_core::directory::TokenGrant;
use loudsync_protocol::DeviceType;
use serde::{Deserialize, Serialize};

/// Seconds a token's `exp` and `nbf` may be off (clocks of the minting machine and of the
/// server that differ a little).
pub const LEEWAY_SECS: u64 = 30;

/// Shortest HS256 secret accepted, in bytes (32 random bytes are recommended).
pub const MIN_SECRET_BYTES: usize = 16;

/// A secret setting (the HS256 token key): serialised as the plain string, never shown by
/// `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The claims of a LoudSync join token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The session id.
    pub sid: String,
    /// The role it grants (`host` or `client`); the join's `deviceInfo.type` must be this.
    pub role: DeviceType,
    /// The device id it is for (`deviceInfo.id`), if it names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// The device name it is for (`deviceInfo.name`), if it names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Not valid before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, seconds since the Unix epoch (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

impl Claims {
    /// What the claims grant, for the core to check against the join.
    pub fn grant(&self) -> TokenGrant {
        TokenGrant {
            session: self.sid.clone(),
            role: self.role,
            device: self.sub.clone(),
            name: self.name.clone(),
        }
    }
}

/// The key join tokens are verified (and, if it can, signed) with.
#[derive(Clone)]
pub struct TokenKey {
    algorithm: Algorithm,
    decoding: Option<DecodingKey>,
    encoding: Option<EncodingKey>,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey")
            .field("algorithm", &self.algorithm)
            .field("verifies", &self.decoding.is_some())
            .field("signs", &self.encoding.is_some())
            .finish()
    }
}

/// Why a key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

impl TokenKey {
    /// An HS256 secret: signs and verifies. At least [`MIN_SECRET_BYTES`].
    pub fn hs256(secret: &[u8]) -> Result<TokenKey, KeyError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(KeyError(format!(
                "the HS256 token key must be at least {MIN_SECRET_BYTES} bytes (32 random bytes are recommended)"
            )));
        }
        Ok(TokenKey {
            algorithm: Algorithm::HS256,
            decoding: Some(DecodingKey::from_secret(secret)),
            encoding: Some(EncodingKey::from_secret(secret)),
        })
    }

    /// A PEM key: a public key verifies (Ed25519 gives EdDSA, RSA gives RS256); a private key
    /// (PKCS#8, or PKCS#1 for RSA) signs, for `loudsync token`.
    pub fn from_pem(pem: &[u8]) -> Result<TokenKey, KeyError> {
        let text = String::from_utf8_lossy(pem);
        let private = text.contains("PRIVATE KEY-----");
        let key = |algorithm, decoding, encoding| TokenKey {
            algorithm,
            decoding,
            encoding,
        };
        let found = if private {
            EncodingKey::from_ed_pem(pem)
                .map(|k| key(Algorithm::EdDSA, None, Some(k)))
                .or_else(|_| {
                    EncodingKey::from_rsa_pem(pem).map(|k| key(Algorithm::RS256, None, Some(k)))
                })
        } else {
            DecodingKey::from_ed_pem(pem)
                .map(|k| key(Algorithm::EdDSA, Some(k), None))
                .or_else(|_| {
                    DecodingKey::from_rsa_pem(pem).map(|k| key(Algorithm::RS256, Some(k), None))
                })
        };
        found.map_err(|e| {
            KeyError(format!(
                "not an Ed25519 or RSA {} key in PEM: {e}",
                if private { "private" } else { "public" }
            ))
        })
    }

    /// A key file's contents: PEM (it starts with `-----BEGIN`) as [`TokenKey::from_pem`],
    /// anything else an HS256 secret (one trailing newline is not part of it).
    pub fn from_file_contents(bytes: &[u8]) -> Result<TokenKey, KeyError> {
        let trimmed = bytes.trim_ascii_start();
        if trimmed.starts_with(b"-----BEGIN") {
            return TokenKey::from_pem(trimmed);
        }
        let secret = bytes
            .strip_suffix(b"\n")
            .map(|s| s.strip_suffix(b"\r").unwrap_or(s))
            .unwrap_or(bytes);
        TokenKey::hs256(secret)
    }

    /// The key of the settings: `secret` (`--token-key`) or the file (`--token-key-file`),
    /// not both; `None` if neither is given.
    pub fn load(secret: Option<&str>, file: Option<&Path>) -> Result<Option<TokenKey>, KeyError> {
        match (secret, file) {
            (Some(_), Some(_)) => Err(KeyError(
                "token-key and token-key-file are two ways to give one key: give one".into(),
            )),
            (Some(secret), None) => TokenKey::hs256(secret.as_bytes()).map(Some),
            (None, Some(path)) => {
                let bytes = std::fs::read(path).map_err(|e| {
                    KeyError(format!(
                        "cannot read token key file {}: {e}",
                        path.display()
                    ))
                })?;
                TokenKey::from_file_contents(&bytes)
                    .map(Some)
                    .map_err(|e| KeyError(format!("token key file {}: {e}", path.display())))
            }
            (None, None) => Ok(None),
        }
    }

    /// The key of `config` ([`TokenKey::load`]). A key that cannot be loaded is reported by
    /// [`check_config`] (run by [`crate::ServerConfig::validate`], so a server does not start
    /// with it); here it is logged and the server goes on without a key, refusing every token.
    pub fn from_config(config: &crate::ServerConfig) -> Option<TokenKey> {
        let secret = config.token_key.as_ref().map(|s| s.0.as_str());
        TokenKey::load(secret, config.token_key_file.as_deref()).unwrap_or_else(|e| {
            tracing::error!(error = %e, "no join-token key: every token is refused");
            None
        })
    }

    /// The algorithm tokens are signed with: `HS256`, `EdDSA` or `RS256`.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Whether this key can sign tokens (a secret or a private key).
    pub fn can_sign(&self) -> bool {
        self.encoding.is_some()
    }

    /// Whether this key can verify tokens (a secret or a public key).
    pub fn can_verify(&self) -> bool {
        self.decoding.is_some()
    }
}

/// The token settings' checks: the key loads and can verify, and `require-token` has a key.
pub fn check_config(config: &crate::ServerConfig) -> Result<(), String> {
    let secret = config.token_key.as_ref().map(|s| s.0.as_str());
    let key = TokenKey::load(secret, config.token_key_file.as_deref()).map_err(|e| e.0)?;
    match key {
        Some(key) if !key.can_verify() => Err(
            "the token key file holds a private key: give the server the public key (it only verifies)"
                .into(),
        ),
        None if config.require_token => {
            Err("require-token needs a key: token-key or token-key-file".into())
        }
        _ => Ok(()),
    }
}

/// Why a join token was refused; the text completes `invalid join token: …` and never holds
/// the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts with a JSON header.
    #[error("it is not a well-formed JWT")]
    Malformed,
    /// Its header names another algorithm than the server's key.
    #[error("it is signed with another algorithm than this server's {0:?}")]
    WrongAlgorithm(Algorithm),
    /// Its signature does not match (another key, or altered).
    #[error("its signature does not match (signed with another key, or altered)")]
    BadSignature,
    /// Signed right, but its claims are not a LoudSync join token's.
    #[error("its claims are not a LoudSync join token's: {0}")]
    BadClaims(String),
    /// `exp` has passed.
    #[error("it has expired")]
    Expired,
    /// `nbf` has not come yet.
    #[error("it is not valid yet (nbf)")]
    NotYetValid,
    /// The server has no key that verifies tokens.
    #[error("this server has no key to verify join tokens with")]
    NoKey,
}

/// Verifies `token` with `key` at `now_secs` (seconds since the Unix epoch): the signature
/// (with the key's one algorithm, whatever the token's header says), then the claims' shape,
/// then `exp` and `nbf` with [`LEEWAY_SECS`]. Pure: the time is an input.
pub fn verify(token: &str, key: &TokenKey, now_secs: u64) -> Result<Claims, TokenError> {
    let Some(decoding) = &key.decoding else {
        return Err(TokenError::NoKey);
    };
    let mut validation = Validation::new(key.algorithm);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = match jsonwebtoken::decode::<Claims>(token, decoding, &validation) {
        Ok(data) => data.claims,
        Err(e) => {
            return Err(match e.kind() {
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::InvalidAlgorithm => TokenError::WrongAlgorithm(key.algorithm),
                ErrorKind::Json(inner) if inner.is_data() => {
                    TokenError::BadClaims(inner.to_string())
                }
                _ => TokenError::Malformed,
            })
        }
    };
    if now_secs >= claims.exp.saturating_add(LEEWAY_SECS) {
        return Err(TokenError::Expired);
    }
    if claims
        .nbf
        .is_some_and(|nbf| now_secs.saturating_add(LEEWAY_SECS) < nbf)
    {
        return Err(TokenError::NotYetValid);
    }
    Ok(claims)
}

/// Signs `claims` with `key` (which must be able to: a secret or a private key).
pub fn mint(claims: &Claims, key: &TokenKey) -> Result<String, KeyError> {
    let Some(encoding) = &key.encoding else {
        return Err(KeyError(
            "this key cannot sign: a public key only verifies; sign with its private key".into(),
        ));
    };
    jsonwebtoken::encode(&Header::new(key.algorithm), claims, encoding)
        .map_err(|e| KeyError(format!("cannot sign the token: {e}")))
}

/// The server's reading of a join's token, for [`loudsync_core::directory::admit`]: the
/// grant, or why not (worded by [`TokenError`]).
pub fn check(token: &str, key: Option<&TokenKey>, now_secs: u64) -> Result<TokenGrant, String> {
    let key = key.ok_or(TokenError::NoKey).map_err(|e| e.to_string())?;
    verify(token, key, now_secs)
        .map(|claims| claims.grant())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Test keys made with `openssl genpkey -algorithm ed25519` and `-algorithm rsa`.
    pub(crate) const ED25519_PRIVATE: &str = include_str!("../tests/keys/ed25519-private.pem");
    pub(crate) const ED25519_PUBLIC: &str = include_str!("../tests/keys/ed25519-public.pem");
    pub(crate) const RSA_PRIVATE: &str = include_str!("../tests/keys/rsa-private.pem");
    pub(crate) const RSA_PUBLIC: &str = include_str!("../tests/keys/rsa-public.pem");
    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_800_000_000;

    fn claims() -> Claims {
        Claims {
            sid: "K7P-3XQ".into(),
            role: DeviceType::Client,
            sub: Some("dev-1".into()),
            name: None,
            exp: NOW + 3600,
            nbf: None,
            iat: Some(NOW),
        }
    }

    #[test]
    fn hs256_tokens_verify_and_their_times_are_checked() {
        let key = TokenKey::hs256(SECRET).unwrap();
        assert!(key.can_sign() && key.can_verify());
        let token = mint(&claims(), &key).unwrap();
        assert_eq!(verify(&token, &key, NOW), Ok(claims()));
        let expired = Claims {
            exp: NOW - 60,
            ..claims()
        };
        let token = mint(&expired, &key).unwrap();
        assert_eq!(verify(&token, &key, NOW), Err(TokenError::Expired));
        assert!(
            verify(&token, &key, NOW - 60 - LEEWAY_SECS).is_ok(),
            "within the leeway"
        );
        let early = Claims {
            nbf: Some(NOW + 600),
            ..claims()
        };
        let token = mint(&early, &key).unwrap();
        assert_eq!(verify(&token, &key, NOW), Err(TokenError::NotYetValid));
        assert!(verify(&token, &key, NOW + 600).is_ok());
    }

    #[test]
    fn another_key_an_altered_token_or_garbage_is_refused() {
        let key = TokenKey::hs256(SECRET).unwrap();
        let other = TokenKey::hs256(b"another secret of 32 bytes......").unwrap();
        let token = mint(&claims(), &other).unwrap();
        assert_eq!(verify(&token, &key, NOW), Err(TokenError::BadSignature));
        // A payload swapped for one that names the host role: the signature no longer fits.
        let forged = mint(
            &Claims {
                role: DeviceType::Host,
                ..claims()
            },
            &other,
        )
        .unwrap();
        let mine = mint(&claims(), &key).unwrap();
        let parts: Vec<&str> = mine.split('.').collect();
        let forged_payload = forged.split('.').nth(1).unwrap();
        let altered = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        assert_eq!(verify(&altered, &key, NOW), Err(TokenError::BadSignature));
        for garbage in ["", "abc", "a.b.c", "....", "eyJ.eyJ.x"] {
            assert_eq!(
                verify(garbage, &key, NOW),
                Err(TokenError::Malformed),
                "{garbage:?}"
            );
        }
        assert_eq!(
            TokenError::BadSignature.to_string(),
            "its signature does not match (signed with another key, or altered)"
        );
    }

    #[test]
    fn the_algorithm_is_the_keys_not_the_tokens() {
        // An EdDSA-signed token offered to an HS256 server, and an HS256 token signed with the
        // Ed25519 *public* key's bytes offered to an EdDSA server (the classic confusion).
        let hs = TokenKey::hs256(SECRET).unwrap();
        let ed = TokenKey::from_pem(ED25519_PRIVATE.as_bytes()).unwrap();
        let ed_token = mint(&claims(), &ed).unwrap();
        assert_eq!(
            verify(&ed_token, &hs, NOW),
            Err(TokenError::WrongAlgorithm(Algorithm::HS256))
        );
        let ed_public = TokenKey::from_pem(ED25519_PUBLIC.as_bytes()).unwrap();
        let confused = mint(
            &claims(),
            &TokenKey::hs256(ED25519_PUBLIC.as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(
            verify(&confused, &ed_public, NOW),
            Err(TokenError::WrongAlgorithm(Algorithm::EdDSA))
        );
    }

    #[test]
    fn ed25519_and_rsa_public_keys_verify_what_their_private_keys_sign() {
        for (private, public, alg) in [
            (ED25519_PRIVATE, ED25519_PUBLIC, Algorithm::EdDSA),
            (RSA_PRIVATE, RSA_PUBLIC, Algorithm::RS256),
        ] {
            let signer = TokenKey::from_file_contents(private.as_bytes()).unwrap();
            let verifier = TokenKey::from_file_contents(public.as_bytes()).unwrap();
            assert_eq!((signer.algorithm(), verifier.algorithm()), (alg, alg));
            assert!(signer.can_sign() && !signer.can_verify());
            assert!(verifier.can_verify() && !verifier.can_sign());
            let token = mint(&claims(), &signer).unwrap();
            assert_eq!(verify(&token, &verifier, NOW), Ok(claims()), "{alg:?}");
            assert!(
                mint(&claims(), &verifier).is_err(),
                "a public key cannot sign"
            );
            assert_eq!(verify(&token, &signer, NOW), Err(TokenError::NoKey));
        }
    }

    #[test]
    fn claims_must_be_ours() {
        let key = TokenKey::hs256(SECRET).unwrap();
        #[derive(Serialize)]
        struct Foreign {
            sub: &'static str,
            exp: u64,
        }
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Foreign {
                sub: "x",
                exp: NOW + 60,
            },
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        let Err(TokenError::BadClaims(why)) = verify(&token, &key, NOW) else {
            panic!()
        };
        assert!(why.contains("missing field `sid`"), "{why}");
    }

    #[test]
    fn key_settings() {
        assert!(TokenKey::hs256(b"short").is_err());
        assert!(TokenKey::load(Some("0123456789abcdef"), None)
            .unwrap()
            .is_some());
        assert!(TokenKey::load(None, None).unwrap().is_none());
        assert!(TokenKey::load(Some("0123456789abcdef"), Some(Path::new("/x"))).is_err());
        let err = TokenKey::load(None, Some(Path::new("/nonexistent/key"))).unwrap_err();
        assert!(err.0.contains("cannot read token key file"), "{err}");
        // A secret in a file: the trailing newline is not part of it.
        let from_file =
            TokenKey::from_file_contents(b"0123456789abcdef0123456789abcdef\n").unwrap();
        let token = mint(&claims(), &TokenKey::hs256(SECRET).unwrap()).unwrap();
        assert!(verify(&token, &from_file, NOW).is_ok());
        assert!(TokenKey::from_pem(
            b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
        )
        .is_err());
        assert_eq!(format!("{:?}", Secret("hunter2".into())), "<redacted>");
    }
}
