//! The wire of controller/responder pairing (issue 12, seed 004 "CRSocket"): who a pairing
//! client is, how its credentials are checked, and how apps are configured. Pure and I/O free;
//! the relay in `core` and the endpoints in `server` build on it.
//!
//! A pairing client belongs to an **app** (`/crsocket/{NAME}/`), plays a [`Role`] (a
//! `controller` or a `responder`), has a 6-digit **client id** and presents an **access
//! token**. An app is configured as `NAME` (open: any syntactically valid token) or
//! `NAME:TOKEN,TOKEN...` (one of those tokens), see [`AppSpec`]. At connect the server checks,
//! in this order (decision P8), the role, the client id, the token's syntax and the token's
//! authorisation; the first failing check is the [`AbortReason`] the client is told
//! ([`check_credentials`]). The server then enforces one connection per client id
//! (`releasedByOther`, `clientIdInUse`), which needs its state and so is not decided here.
//!
//! The names that CRSocket pages see (roles, abort reasons, reject subtypes) keep CRSocket's
//! spelling, camelCase; everything else follows the landed snake_case wire.
//!
//! The submodules hold the rest of the wire: [`ws`] the JSON frames of `/crsocket/{NAME}/ws`,
//! [`event`] the transport-neutral [`Event`] and its SSE data string (and so the translation
//! between the transports), [`sse`] the SSE framing and the query strings of the
//! CRSocket-compatible HTTP endpoints.

use std::fmt;

use serde::{Deserialize, Serialize};

pub mod event;
pub mod sse;
pub mod ws;

pub use event::{Event, EventDataError, MAX_EVENT_DATA_CHARS};
pub use ws::{check_identify, IdentifyFrame, IdentifyId, PairingClientFrame, PairingServerFrame};

/// The part a pairing client plays (`clientRole`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// `controller`: picks its partner (the app assigns it) and pings it.
    Controller,
    /// `responder`: pairs with the first controller that pings it.
    Responder,
}

impl Role {
    /// The wire name, `controller` or `responder`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Controller => "controller",
            Role::Responder => "responder",
        }
    }

    /// The role named exactly `name` (case-sensitive, as CRSocket's check), if any.
    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "controller" => Some(Role::Controller),
            "responder" => Some(Role::Responder),
            _ => None,
        }
    }

    /// The other role: the one a partner must have.
    pub fn opposite(self) -> Role {
        match self {
            Role::Controller => Role::Responder,
            Role::Responder => Role::Controller,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the server ends (or refuses) a pairing connection: `cr_aborted.reason` on WebSocket,
/// the second field of the SSE `aborted` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AbortReason {
    /// The role is not `controller` or `responder`.
    InvalidRole,
    /// The client id is not 6 ASCII digits (or, on WebSocket, not a string or null).
    InvalidClientId,
    /// The access token is missing or not 1 to 256 characters of `!` to `~`.
    InvalidAccessToken,
    /// The token is well formed but not one of the app's tokens.
    NotAuthorized,
    /// The client id is connected in another app (new in LoudSync; the new connection is
    /// refused, the old one is untouched).
    ClientIdInUse,
    /// A new connection of the same client id in the same app replaced this one.
    ReleasedByOther,
    /// Nothing was heard from the client within the alive timeout.
    ClientNotAlive,
}

impl AbortReason {
    /// Every reason, in the order of the checks that produce them.
    pub const ALL: [AbortReason; 7] = [
        AbortReason::InvalidRole,
        AbortReason::InvalidClientId,
        AbortReason::InvalidAccessToken,
        AbortReason::NotAuthorized,
        AbortReason::ClientIdInUse,
        AbortReason::ReleasedByOther,
        AbortReason::ClientNotAlive,
    ];

    /// The wire name, camelCase as CRSocket spells it (`invalidRole`).
    pub fn as_str(self) -> &'static str {
        match self {
            AbortReason::InvalidRole => "invalidRole",
            AbortReason::InvalidClientId => "invalidClientId",
            AbortReason::InvalidAccessToken => "invalidAccessToken",
            AbortReason::NotAuthorized => "notAuthorized",
            AbortReason::ClientIdInUse => "clientIdInUse",
            AbortReason::ReleasedByOther => "releasedByOther",
            AbortReason::ClientNotAlive => "clientNotAlive",
        }
    }

    /// The reason with the wire name `name`, if any (for clients reading `cr_aborted`).
    pub fn parse(name: &str) -> Option<AbortReason> {
        AbortReason::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

impl fmt::Display for AbortReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The subtype of a `reject` event. The first two are sent by clients (SDK rules), the last
/// two only by the server, in answer to a blocked `ping` (decision P21).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RejectSubtype {
    /// A responder paired with someone else was pinged.
    AssignedToOther,
    /// A controller was pinged by a client that is not its partner.
    NotPaired,
    /// Server: the pinged client belongs to another app.
    AppIdMismatch,
    /// Server: the pinged client has the sender's own role.
    InvalidPartnerRole,
}

impl RejectSubtype {
    /// Every subtype.
    pub const ALL: [RejectSubtype; 4] = [
        RejectSubtype::AssignedToOther,
        RejectSubtype::NotPaired,
        RejectSubtype::AppIdMismatch,
        RejectSubtype::InvalidPartnerRole,
    ];

    /// The wire name, camelCase (`assignedToOther`); also the `eventSubType` of the `reject`.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectSubtype::AssignedToOther => "assignedToOther",
            RejectSubtype::NotPaired => "notPaired",
            RejectSubtype::AppIdMismatch => "appIdMismatch",
            RejectSubtype::InvalidPartnerRole => "invalidPartnerRole",
        }
    }

    /// The subtype with the wire name `name`, if any.
    pub fn parse(name: &str) -> Option<RejectSubtype> {
        RejectSubtype::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

impl fmt::Display for RejectSubtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Length of a client id, in digits.
pub const CLIENT_ID_DIGITS: usize = 6;

/// Longest access token (and app token), in characters (all ASCII, so also bytes).
pub const MAX_ACCESS_TOKEN_CHARS: usize = 256;

/// Longest app name, in characters.
pub const MAX_APP_NAME_CHARS: usize = 64;

/// Whether `id` is a client id: exactly 6 ASCII digits (`^[0-9]{6}$`; leading zeros allowed).
pub fn valid_client_id(id: &str) -> bool {
    id.len() == CLIENT_ID_DIGITS && id.bytes().all(|b| b.is_ascii_digit())
}

/// Whether `token` is a well-formed access token: 1 to 256 printable ASCII characters other
/// than space (`^[!-~]{1,256}$`).
pub fn valid_access_token(token: &str) -> bool {
    (1..=MAX_ACCESS_TOKEN_CHARS).contains(&token.len())
        && token.bytes().all(|b| (b'!'..=b'~').contains(&b))
}

/// Whether `kind` is a valid `eventType`: one or more ASCII letters and digits.
pub fn valid_event_type(kind: &str) -> bool {
    !kind.is_empty() && valid_event_sub_type(kind)
}

/// Whether `sub_type` is a valid `eventSubType`: ASCII letters and digits, possibly none.
pub fn valid_event_sub_type(sub_type: &str) -> bool {
    sub_type.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Whether `param` is a valid event parameter: any string without `,` (the SSE data string
/// joins the parameters with commas).
pub fn valid_param(param: &str) -> bool {
    !param.contains(',')
}

/// Whether `name` is a valid app name: `^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`, so it is one URL
/// path segment as it is.
pub fn valid_app_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric())
        && name.len() <= MAX_APP_NAME_CHARS
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// One configured app: `--app NAME` (open) or `--app NAME:TOKEN[,TOKEN...]`.
#[derive(Clone, PartialEq, Eq)]
pub struct AppSpec {
    /// The app's name, its path segment in `/crsocket/{NAME}/`.
    pub name: String,
    /// The tokens that authorise a client; `None` for an open app (any well-formed token).
    pub tokens: Option<Vec<String>>,
}

impl fmt::Debug for AppSpec {
    // The tokens are secrets: shown as a count only, so logs of a config never leak them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppSpec")
            .field("name", &self.name)
            .field(
                "tokens",
                &self
                    .tokens
                    .as_ref()
                    .map(|t| format!("<{} redacted>", t.len())),
            )
            .finish()
    }
}

/// Why an app setting is invalid. The text is what `serve` prints after `Error: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppSpecError {
    /// An empty spec (`--app ""`, or `a;;b` in `LOUDSYNC_APPS`).
    #[error("invalid app ``: an app is NAME or NAME:TOKEN[,TOKEN...]")]
    Empty,
    /// The name breaks `^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`.
    #[error("invalid app `{0}`: the name must be 1 to 64 characters of A-Z, a-z, 0-9, `_` and `-`, starting with a letter or digit")]
    InvalidName(String),
    /// `NAME:` with nothing after the colon.
    #[error("invalid app `{0}`: no token after `:` (give NAME alone for an open app)")]
    NoTokens(String),
    /// A token that is empty (`a:,t`), too long, or holds a character outside `!`..`~` or
    /// `;` (the app separator of `LOUDSYNC_APPS`). The app's name is given, never the token.
    #[error("invalid app `{app}`: token {position} must be 1 to 256 characters of `!` to `~` without `,` or `;`")]
    InvalidToken {
        /// The app's name.
        app: String,
        /// The token's position in the list, from 1.
        position: usize,
    },
    /// The same name configured twice.
    #[error("app `{0}` is configured twice")]
    Duplicate(String),
}

impl AppSpec {
    /// Parses one `--app` value, `NAME` or `NAME:TOKEN[,TOKEN...]` (decision P1). The name is
    /// everything before the first `:`; tokens may contain `:` but not `,` (the token
    /// separator) or `;` (the app separator of `LOUDSYNC_APPS`).
    pub fn parse(spec: &str) -> Result<AppSpec, AppSpecError> {
        if spec.is_empty() {
            return Err(AppSpecError::Empty);
        }
        let (name, tokens) = match spec.split_once(':') {
            None => (spec, None),
            Some((name, tokens)) => (name, Some(tokens)),
        };
        if !valid_app_name(name) {
            return Err(AppSpecError::InvalidName(name.to_string()));
        }
        let tokens = match tokens {
            None => None,
            Some("") => return Err(AppSpecError::NoTokens(name.to_string())),
            Some(list) => Some(
                list.split(',')
                    .enumerate()
                    .map(|(i, token)| {
                        if valid_access_token(token) && !token.contains(';') {
                            Ok(token.to_string())
                        } else {
                            Err(AppSpecError::InvalidToken {
                                app: name.to_string(),
                                position: i + 1,
                            })
                        }
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        Ok(AppSpec {
            name: name.to_string(),
            tokens,
        })
    }

    /// Whether the app is open (configured without tokens).
    pub fn is_open(&self) -> bool {
        self.tokens.is_none()
    }

    /// Whether `token` authorises a client of this app, in either role (decision P2): it must
    /// be well formed ([`valid_access_token`]) even in an open app, and in an app with tokens
    /// be one of them (compared in constant time).
    pub fn authorizes(&self, token: &str) -> bool {
        if !valid_access_token(token) {
            return false;
        }
        match &self.tokens {
            None => true,
            // Every token is compared, so the time does not tell which one (nearly) matched.
            Some(tokens) => tokens
                .iter()
                .fold(false, |found, t| constant_time_eq(t, token) | found),
        }
    }
}

/// Equality whose time depends on the lengths only, not on where the bytes differ.
fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Parses a list of `--app` values (flags, or TOML `apps = [...]`) and refuses a name given
/// twice (names are case-sensitive, as URL paths are).
pub fn parse_apps<'a>(
    specs: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<AppSpec>, AppSpecError> {
    let mut apps: Vec<AppSpec> = Vec::new();
    for spec in specs {
        let app = AppSpec::parse(spec)?;
        if apps.iter().any(|a| a.name == app.name) {
            return Err(AppSpecError::Duplicate(app.name));
        }
        apps.push(app);
    }
    Ok(apps)
}

/// Parses `LOUDSYNC_APPS`: app specs separated by `;` (`alpha;secret:tokA,tokB`). An empty
/// value configures no app; an empty item (`a;;b`, a trailing `;`) is an error, like `--app ""`.
pub fn parse_env_apps(value: &str) -> Result<Vec<AppSpec>, AppSpecError> {
    if value.is_empty() {
        return Ok(Vec::new());
    }
    parse_apps(value.split(';'))
}

/// The client id a client claims at connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimedId<'a> {
    /// None given (WebSocket `clientId` absent or `null`): the server assigns one.
    Assign,
    /// A string, not yet checked.
    Given(&'a str),
    /// Something that cannot be an id (WebSocket: a `clientId` that is not a string or null).
    Invalid,
}

/// Who a client is once its credentials passed [`check_credentials`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Its role.
    pub role: Role,
    /// Its client id (valid per [`valid_client_id`]); `None` when the server is to assign one.
    pub client_id: Option<String>,
}

/// Checks a client's credentials for `app` in the order of decision P8: role
/// (`invalidRole`), client id (`invalidClientId`), token syntax (`invalidAccessToken`), token
/// authorisation (`notAuthorized`). `None` stands for a missing (or, on WebSocket, non-string)
/// role or token. The last check, one connection per id (`clientIdInUse`), is the server's.
pub fn check_credentials(
    app: &AppSpec,
    role: Option<&str>,
    client_id: ClaimedId<'_>,
    token: Option<&str>,
) -> Result<Identity, AbortReason> {
    let role = role.and_then(Role::parse).ok_or(AbortReason::InvalidRole)?;
    let client_id = match client_id {
        ClaimedId::Assign => None,
        ClaimedId::Given(id) if valid_client_id(id) => Some(id.to_string()),
        ClaimedId::Given(_) | ClaimedId::Invalid => return Err(AbortReason::InvalidClientId),
    };
    let token = token
        .filter(|t| valid_access_token(t))
        .ok_or(AbortReason::InvalidAccessToken)?;
    if !app.authorizes(token) {
        return Err(AbortReason::NotAuthorized);
    }
    Ok(Identity { role, client_id })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(name: &str) -> AppSpec {
        AppSpec::parse(name).unwrap()
    }

    #[test]
    fn roles_have_their_wire_names_both_ways() {
        for role in [Role::Controller, Role::Responder] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
            assert_eq!(
                serde_json::to_string(&role).unwrap(),
                format!("\"{}\"", role.as_str())
            );
            assert_eq!(role.opposite().opposite(), role);
            assert_ne!(role.opposite(), role);
        }
        assert_eq!(Role::Controller.as_str(), "controller");
        assert_eq!(Role::Responder.as_str(), "responder");
        for bad in ["Controller", "RESPONDER", "", " controller", "observer"] {
            assert_eq!(Role::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn abort_reasons_are_camel_case_and_serde_agrees() {
        let names: Vec<&str> = AbortReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            names,
            [
                "invalidRole",
                "invalidClientId",
                "invalidAccessToken",
                "notAuthorized",
                "clientIdInUse",
                "releasedByOther",
                "clientNotAlive"
            ]
        );
        for r in AbortReason::ALL {
            assert_eq!(AbortReason::parse(r.as_str()), Some(r));
            assert_eq!(serde_json::to_string(&r).unwrap(), format!("\"{r}\""));
        }
        assert_eq!(AbortReason::parse("invalid_role"), None);
    }

    #[test]
    fn reject_subtypes_are_camel_case_and_valid_sub_types() {
        let names: Vec<&str> = RejectSubtype::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            names,
            [
                "assignedToOther",
                "notPaired",
                "appIdMismatch",
                "invalidPartnerRole"
            ]
        );
        for r in RejectSubtype::ALL {
            assert_eq!(RejectSubtype::parse(r.as_str()), Some(r));
            assert_eq!(serde_json::to_string(&r).unwrap(), format!("\"{r}\""));
            assert!(valid_event_sub_type(r.as_str()));
        }
    }

    #[test]
    fn client_ids_are_exactly_six_ascii_digits() {
        for good in ["000000", "123456", "999999", "012345"] {
            assert!(valid_client_id(good), "{good}");
        }
        for bad in [
            "",
            "12345",
            "1234567",
            "12345a",
            " 12345",
            "12345\n",
            "١٢٣٤٥٦",
            "+12345",
            "-12345",
        ] {
            assert!(!valid_client_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn access_tokens_are_1_to_256_printable_ascii_without_space() {
        assert!(valid_access_token("!"));
        assert!(valid_access_token("~"));
        assert!(valid_access_token("tok:A,B;c\"'\\"));
        assert!(valid_access_token(&"x".repeat(256)));
        assert!(!valid_access_token(&"x".repeat(257)));
        for bad in ["", "a b", "tab\t", "é", "\u{7f}", "new\nline"] {
            assert!(!valid_access_token(bad), "{bad:?}");
        }
    }

    #[test]
    fn event_types_subtypes_and_params() {
        assert!(valid_event_type("ping"));
        assert!(valid_event_type("A1b2"));
        assert!(!valid_event_type(""));
        for bad in ["pi ng", "ping!", "é", "a_b", "a-b", "a,b"] {
            assert!(!valid_event_type(bad), "{bad:?}");
            assert!(!valid_event_sub_type(bad), "{bad:?}");
        }
        assert!(valid_event_sub_type(""));
        assert!(valid_event_sub_type("notPaired"));
        assert!(valid_param(""));
        assert!(valid_param("any text: é; %2C \n"));
        assert!(!valid_param("a,b"));
        assert!(!valid_param(","));
    }

    #[test]
    fn app_names() {
        for good in ["a", "alpha", "A-1_b", "0", &"n".repeat(64)] {
            assert!(valid_app_name(good), "{good}");
        }
        for bad in ["", "-a", "_a", "a b", "a/b", "a.b", "é", &"n".repeat(65)] {
            assert!(!valid_app_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn app_spec_parses_open_and_token_apps() {
        assert_eq!(
            AppSpec::parse("alpha"),
            Ok(AppSpec {
                name: "alpha".into(),
                tokens: None
            })
        );
        let secret = AppSpec::parse("secret:tokA,tokB").unwrap();
        assert_eq!(secret.name, "secret");
        assert_eq!(secret.tokens, Some(vec!["tokA".into(), "tokB".into()]));
        assert!(!secret.is_open());
        // Only the first colon separates: tokens may hold `:`.
        let colon = AppSpec::parse("x:a:b").unwrap();
        assert_eq!(colon.tokens, Some(vec!["a:b".into()]));
    }

    #[test]
    fn app_spec_errors_and_their_texts() {
        assert_eq!(AppSpec::parse(""), Err(AppSpecError::Empty));
        assert_eq!(
            AppSpec::parse("bad name"),
            Err(AppSpecError::InvalidName("bad name".into()))
        );
        assert_eq!(
            AppSpec::parse(":tok"),
            Err(AppSpecError::InvalidName("".into()))
        );
        assert_eq!(
            AppSpec::parse("a:"),
            Err(AppSpecError::NoTokens("a".into()))
        );
        let bad_token = |spec: &str, position| {
            assert_eq!(
                AppSpec::parse(spec),
                Err(AppSpecError::InvalidToken {
                    app: "a".into(),
                    position
                }),
                "{spec:?}"
            )
        };
        bad_token("a:,t", 1);
        bad_token("a:t,", 2);
        bad_token("a:t,x y", 2);
        bad_token("a:t;u", 1);
        bad_token(&format!("a:{}", "x".repeat(257)), 1);
        assert!(AppSpec::parse(&format!("a:{}", "x".repeat(256))).is_ok());

        assert_eq!(
            AppSpec::parse("a:").unwrap_err().to_string(),
            "invalid app `a`: no token after `:` (give NAME alone for an open app)"
        );
        let text = AppSpec::parse("a:ok,sec ret").unwrap_err().to_string();
        assert_eq!(
            text,
            "invalid app `a`: token 2 must be 1 to 256 characters of `!` to `~` without `,` or `;`"
        );
        assert!(!text.contains("sec"), "a token never appears in an error");
        assert!(AppSpec::parse("-x")
            .unwrap_err()
            .to_string()
            .starts_with("invalid app `-x`: the name must be"));
    }

    #[test]
    fn app_spec_debug_hides_tokens() {
        let shown = format!("{:?}", AppSpec::parse("s:hunter2,swordfish").unwrap());
        assert!(
            !shown.contains("hunter2") && !shown.contains("swordfish"),
            "{shown}"
        );
        assert!(shown.contains("<2 redacted>"), "{shown}");
    }

    #[test]
    fn open_app_accepts_any_well_formed_token_only() {
        let app = open("alpha");
        assert!(app.authorizes("anything"));
        assert!(app.authorizes("x"));
        assert!(!app.authorizes(""));
        assert!(!app.authorizes("has space"));
        assert!(!app.authorizes(&"x".repeat(257)));
    }

    #[test]
    fn token_app_accepts_its_tokens_only() {
        let app = AppSpec::parse("secret:tokA,tokB").unwrap();
        assert!(app.authorizes("tokA"));
        assert!(app.authorizes("tokB"));
        for bad in ["tokC", "toka", "tokA ", "tok", "tokAB", ""] {
            assert!(!app.authorizes(bad), "{bad:?}");
        }
    }

    #[test]
    fn app_lists_refuse_duplicates_and_env_splits_on_semicolons() {
        let apps = parse_env_apps("alpha;secret:tokA,tokB").unwrap();
        assert_eq!(apps.len(), 2);
        assert_eq!(apps[0], open("alpha"));
        assert_eq!(apps[1].tokens.as_ref().unwrap().len(), 2);
        assert_eq!(parse_env_apps(""), Ok(vec![]));
        assert_eq!(parse_env_apps("a;;b"), Err(AppSpecError::Empty));
        assert_eq!(parse_env_apps("a;"), Err(AppSpecError::Empty));
        assert_eq!(
            parse_env_apps("a;b:t;a"),
            Err(AppSpecError::Duplicate("a".into()))
        );
        assert_eq!(
            parse_apps(["a", "a:tok"]).unwrap_err().to_string(),
            "app `a` is configured twice"
        );
        // Names are case-sensitive, as the paths are.
        assert_eq!(parse_apps(["a", "A"]).unwrap().len(), 2);
    }

    #[test]
    fn credentials_are_checked_in_p8_order() {
        let app = AppSpec::parse("secret:tokA").unwrap();
        let check = |role, id, token| check_credentials(&app, role, id, token);
        // Everything wrong: the role is reported first.
        assert_eq!(
            check(Some("boss"), ClaimedId::Invalid, None),
            Err(AbortReason::InvalidRole)
        );
        assert_eq!(
            check(None, ClaimedId::Given("1"), Some("tokA")),
            Err(AbortReason::InvalidRole)
        );
        // Then the id, before the token.
        assert_eq!(
            check(Some("controller"), ClaimedId::Given("12345"), None),
            Err(AbortReason::InvalidClientId)
        );
        assert_eq!(
            check(Some("controller"), ClaimedId::Invalid, Some("tokA")),
            Err(AbortReason::InvalidClientId)
        );
        assert_eq!(
            check(Some("controller"), ClaimedId::Given(""), Some("tokA")),
            Err(AbortReason::InvalidClientId)
        );
        // Then the token's syntax, before its authorisation.
        assert_eq!(
            check(Some("responder"), ClaimedId::Assign, None),
            Err(AbortReason::InvalidAccessToken)
        );
        assert_eq!(
            check(Some("responder"), ClaimedId::Assign, Some("bad token")),
            Err(AbortReason::InvalidAccessToken)
        );
        assert_eq!(
            check(Some("responder"), ClaimedId::Assign, Some("tokB")),
            Err(AbortReason::NotAuthorized)
        );
        assert_eq!(
            check(Some("responder"), ClaimedId::Given("000042"), Some("tokA")),
            Ok(Identity {
                role: Role::Responder,
                client_id: Some("000042".into())
            })
        );
        assert_eq!(
            check(Some("controller"), ClaimedId::Assign, Some("tokA")),
            Ok(Identity {
                role: Role::Controller,
                client_id: None
            })
        );
        // An open app still needs a well-formed token (P2).
        let alpha = open("alpha");
        assert_eq!(
            check_credentials(&alpha, Some("controller"), ClaimedId::Assign, Some("")),
            Err(AbortReason::InvalidAccessToken)
        );
        assert!(
            check_credentials(&alpha, Some("controller"), ClaimedId::Assign, Some("any")).is_ok()
        );
    }
}
