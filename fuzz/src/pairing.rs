//! What the pairing targets (issue 12) check: the field rules of P5 and the credential checks
//! of P8, written from the issue's wording ("exactly 6 ASCII digits", "1 to 256 characters of
//! `!` to `~`", "the first failing one is the reason") rather than from the protocol crate's
//! code, so the targets catch a check the code gets wrong, and the two apps every target
//! checks against.

use loudsync_protocol::pairing::{AbortReason, AppSpec, Identity, Role};

/// The tokens of [`token_app`].
pub const TOKENS: [&str; 2] = ["tokA", "tokB"];

/// An open app, `--app alpha`: any well-formed token is authorised.
pub fn open_app() -> AppSpec {
    AppSpec::parse("alpha").expect("a valid app spec")
}

/// An app with tokens, `--app secret:tokA,tokB`: only those two are authorised.
pub fn token_app() -> AppSpec {
    AppSpec::parse("secret:tokA,tokB").expect("a valid app spec")
}

/// P5: a client id is exactly six of `0` to `9` (leading zeros allowed, no other digits).
pub fn client_id_ok(id: &str) -> bool {
    id.chars().count() == 6 && id.chars().all(|c| c.is_ascii_digit())
}

/// P5: an access token is 1 to 256 characters, each of `!` to `~`.
pub fn token_ok(token: &str) -> bool {
    (1..=256).contains(&token.chars().count()) && token.chars().all(|c| ('!'..='~').contains(&c))
}

/// P5: an `eventType` is one or more of `A-Z a-z 0-9`.
pub fn event_type_ok(kind: &str) -> bool {
    !kind.is_empty() && event_sub_type_ok(kind)
}

/// P5: an `eventSubType` is any number (none included) of `A-Z a-z 0-9`.
pub fn event_sub_type_ok(sub_type: &str) -> bool {
    sub_type.chars().all(|c| c.is_ascii_alphanumeric())
}

/// The client id a client claimed, as the transports carry it.
#[derive(Debug, Clone, Copy)]
pub enum Claim<'a> {
    /// None (WebSocket: `clientId` absent or `null`): the server assigns one.
    Assign,
    /// A string.
    Given(&'a str),
    /// Another JSON type (WebSocket only).
    Invalid,
}

/// What P8 says the credential check gives for `app`: role (`invalidRole`), client id
/// (`invalidClientId`), token syntax (`invalidAccessToken`), token authorisation
/// (`notAuthorized`: in an app with tokens, a token that is not one of them), the first
/// failing one the reason. `None` is a missing (or, on WebSocket, non-string) role or token.
pub fn expected_identity(
    app: &AppSpec,
    role: Option<&str>,
    id: Claim<'_>,
    token: Option<&str>,
) -> Result<Identity, AbortReason> {
    let role = match role {
        Some("controller") => Role::Controller,
        Some("responder") => Role::Responder,
        _ => return Err(AbortReason::InvalidRole),
    };
    let client_id = match id {
        Claim::Assign => None,
        Claim::Given(id) if client_id_ok(id) => Some(id.to_string()),
        Claim::Given(_) | Claim::Invalid => return Err(AbortReason::InvalidClientId),
    };
    let Some(token) = token.filter(|t| token_ok(t)) else {
        return Err(AbortReason::InvalidAccessToken);
    };
    if let Some(tokens) = &app.tokens {
        if !tokens.iter().any(|t| t == token) {
            return Err(AbortReason::NotAuthorized);
        }
    }
    Ok(Identity { role, client_id })
}
