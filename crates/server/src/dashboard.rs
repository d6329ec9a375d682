//! The operator dashboard (issue 15) as the server serves it: `GET /dashboard` (302 to
//! `/dashboard/`), the page and its two assets, and the cookie login that lets a browser use
//! the admin API when the server has an `--admin-token`.
//!
//! **The assets.** `index.html`, `app.js` and `app.css` are built from the TypeScript sources
//! in `dashboard/` at the repository root (`npm run build` there, esbuild, deterministic) into
//! `crates/server/assets/dashboard/`, and those built files are committed: the binary embeds
//! them with `include_bytes!`, so `cargo build` on a fresh clone needs no npm and the server
//! fetches nothing at run time. CI rebuilds them and fails if they differ from the committed
//! ones.
//!
//! **Headers.** Every answer of these routes carries `Cache-Control: no-cache`,
//! `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer` and [`CSP`] (scripts,
//! styles and connections from the server itself only; no framing).
//!
//! **Access.** Without `--admin-token` these routes follow the admin rule of `/v1/*`: loopback
//! clients only (others get 403). With a token the page and its assets are served to anyone
//! (they hold no data; the page asks for the token when `/v1/sessions` answers 401), and
//! `POST /dashboard/login` with the right token (form field `token`, or JSON `{"token"}`)
//! sets the cookie [`COOKIE`] (`HttpOnly; SameSite=Strict; Path=/`, and `Secure` when the
//! request came over TLS); the admin rule ([`crate::http::admin_request_access`]) then accepts
//! that cookie as it accepts `Authorization: Bearer`, and asks a cookie-authenticated request
//! that changes something (not GET or HEAD) for an `Origin` equal to the request's own
//! (CSRF). `POST /dashboard/logout` clears the cookie.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::http::error;
use crate::state::ServerState;

/// The largest login body read.
pub const MAX_LOGIN_BODY: usize = 16 * 1024;

/// The name of the cookie that carries the admin token for the dashboard.
pub const COOKIE: &str = "loudsync_admin";

/// The `Content-Security-Policy` of every dashboard answer.
pub const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; \
                       script-src 'self'; connect-src 'self'; frame-ancestors 'none'";

/// The built page (see the module comment).
pub const INDEX_HTML: &[u8] = include_bytes!("../assets/dashboard/index.html");
/// The built script.
pub const APP_JS: &[u8] = include_bytes!("../assets/dashboard/app.js");
/// The built stylesheet.
pub const APP_CSS: &[u8] = include_bytes!("../assets/dashboard/app.css");

/// Login attempts allowed per client address and second, on average ([`LOGIN_BURST`] at once):
/// enough for a person, slow for a guesser.
pub const LOGIN_RATE: u32 = 1;
/// Login attempts per client address allowed in a burst.
pub const LOGIN_BURST: u32 = 10;

/// The login attempts of one server's clients, per address (the core's token bucket table).
type LoginAttempts = Arc<std::sync::Mutex<loudsync_core::admission::JoinRate>>;

/// The dashboard's routes, with their access rule and headers.
pub fn router(app: &Arc<ServerState>) -> Router<Arc<ServerState>> {
    let attempts: LoginAttempts = Arc::new(std::sync::Mutex::new(
        loudsync_core::admission::JoinRate::new(LOGIN_RATE, LOGIN_BURST),
    ));
    Router::new()
        .route("/dashboard", get(redirect))
        .route("/dashboard/", get(index))
        .route("/dashboard/app.js", get(app_js))
        .route("/dashboard/app.css", get(app_css))
        .route("/dashboard/login", post(login))
        .route("/dashboard/logout", post(logout))
        .layer(axum::Extension(attempts))
        .layer(middleware::from_fn_with_state(app.clone(), access))
        .layer(middleware::from_fn(security_headers))
}

async fn redirect() -> Response {
    (StatusCode::FOUND, [(header::LOCATION, "/dashboard/")]).into_response()
}

fn asset(content_type: &'static str, bytes: &'static [u8]) -> Response {
    ([(header::CONTENT_TYPE, content_type)], bytes).into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

/// Without an admin token, loopback clients only (as `/v1/*`); with one, anybody (the page
/// holds no data, and login is how a browser gets in).
async fn access(
    State(app): State<Arc<ServerState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    if app.config.admin_token.is_none() {
        let client = crate::http::client_address(&app, &req, peer);
        let own = request_origin(&app, peer, req.headers());
        let refused =
            crate::http::admin_access(None, client, None).and_then(|()| local_host(own.as_deref()));
        if let Err((status, code, message)) = refused {
            return error(status, code, message);
        }
    }
    next.run(req).await
}

/// The headers every dashboard answer carries (see the module comment).
async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// The body of a JSON login.
#[derive(serde::Deserialize)]
struct LoginBody {
    token: String,
}

/// `POST /dashboard/login`: the right token (form field `token` or JSON `{"token"}`) sets
/// the cookie, 204; a wrong one 401; none 400; a server without `--admin-token` 409
/// `no_admin_token`; an `Origin` other than the request's own 403 `forbidden_origin`; more
/// than [`LOGIN_BURST`] attempts from one address at [`LOGIN_RATE`] a second 429
/// `too_many_attempts` with `Retry-After`.
async fn login(
    State(app): State<Arc<ServerState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::Extension(attempts): axum::Extension<LoginAttempts>,
    req: Request,
) -> Response {
    let client = crate::http::client_address(&app, &req, peer);
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    let Ok(body) = axum::body::to_bytes(body, MAX_LOGIN_BODY).await else {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            format!("a login body is at most {MAX_LOGIN_BODY} bytes"),
        );
    };
    if let Err(refused) = foreign_origin(&app, peer, &headers) {
        return refused;
    }
    let Some(token) = app.config.admin_token.as_deref() else {
        return error(
            StatusCode::CONFLICT,
            "no_admin_token",
            "this server has no --admin-token: the dashboard needs no login (it answers \
             loopback clients only)",
        );
    };
    let limited = attempts
        .lock()
        .expect("login attempts")
        .try_join(std::time::Instant::now(), client);
    if let Err(wait) = limited {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut response = error(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            format!("too many login attempts from this address: try again in {seconds} s"),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        return response;
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        });
    let given = if json {
        serde_json::from_slice::<LoginBody>(&body)
            .ok()
            .map(|b| b.token)
    } else {
        form_field(&body, "token")
    };
    let Some(given) = given.filter(|g| !g.is_empty()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "send the admin token as the form field `token` or as JSON `{\"token\": \"...\"}`",
        );
    };
    if !loudsync_core::directory::Password::new(token).matches(&given) {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "wrong admin token",
        );
    }
    let secure = request_scheme(&app, peer, &headers) == "https";
    let cookie = set_cookie(&percent_encode(&given), secure, false);
    (StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response()
}

/// `POST /dashboard/logout`: clears the cookie, 204 (an `Origin` other than the request's own
/// 403 `forbidden_origin`).
async fn logout(
    State(app): State<Arc<ServerState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = foreign_origin(&app, peer, &headers) {
        return refused;
    }
    let secure = request_scheme(&app, peer, &headers) == "https";
    (
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, set_cookie("", secure, true))],
    )
        .into_response()
}

/// The 403 for a request whose `Origin` header (if any) is not the request's own.
#[allow(clippy::result_large_err)] // a response, built once per refused request
fn foreign_origin(
    app: &ServerState,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<(), Response> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let own = request_origin(app, peer, headers);
    if same_origin(origin.to_str().ok(), own.as_deref()) {
        Ok(())
    } else {
        Err(forbidden_origin())
    }
}

/// The 403 `forbidden_origin` answer.
pub fn forbidden_origin() -> Response {
    error(
        StatusCode::FORBIDDEN,
        "forbidden_origin",
        FORBIDDEN_ORIGIN_MESSAGE,
    )
}

/// The message of a `forbidden_origin` refusal.
pub const FORBIDDEN_ORIGIN_MESSAGE: &str =
    "a request authenticated by the dashboard's cookie that changes something must come from \
     the dashboard's own origin (its Origin header)";

/// A `Set-Cookie` value for [`COOKIE`]: `value` (already cookie-safe), or an expired empty
/// one when `clear`.
pub fn set_cookie(value: &str, secure: bool, clear: bool) -> HeaderValue {
    let mut cookie = format!("{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/");
    if clear {
        cookie.push_str("; Max-Age=0");
    }
    if secure {
        cookie.push_str("; Secure");
    }
    HeaderValue::from_str(&cookie).expect("a percent-encoded cookie is a valid header value")
}

/// The admin token a request's `Cookie` headers carry in [`COOKIE`] (the first one;
/// percent-decoded), if any.
pub fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .and_then(|(_, value)| percent_decode(value.trim_matches('"')))
        .filter(|token| !token.is_empty())
}

/// The scheme the client used: `https` over TLS, or when a trusted proxy says so in
/// `X-Forwarded-Proto`; else `http`.
pub fn request_scheme(app: &ServerState, peer: SocketAddr, headers: &HeaderMap) -> &'static str {
    if app.config.tls_cert.is_some() && app.config.tls_key.is_some() {
        return "https";
    }
    let forwarded = app
        .admission
        .is_trusted_proxy(peer.ip().to_canonical())
        .then(|| first_value(headers, "x-forwarded-proto"))
        .flatten();
    match forwarded {
        Some(proto) if proto.eq_ignore_ascii_case("https") => "https",
        _ => "http",
    }
}

/// The request's own origin, `scheme://host`: the `Host` header (or, from a trusted proxy,
/// `X-Forwarded-Host`) with [`request_scheme`]; `None` without a host.
pub fn request_origin(app: &ServerState, peer: SocketAddr, headers: &HeaderMap) -> Option<String> {
    let forwarded = app
        .admission
        .is_trusted_proxy(peer.ip().to_canonical())
        .then(|| first_value(headers, "x-forwarded-host"))
        .flatten();
    let host = match forwarded {
        Some(host) => host,
        None => headers.get(header::HOST)?.to_str().ok()?.trim().to_string(),
    };
    if host.is_empty() {
        return None;
    }
    Some(format!("{}://{host}", request_scheme(app, peer, headers)))
}

/// The first comma-separated value of header `name`, trimmed.
fn first_value(headers: &HeaderMap, name: &str) -> Option<String> {
    let value = headers.get(name)?.to_str().ok()?;
    let first = value.split(',').next()?.trim();
    (!first.is_empty()).then(|| first.to_string())
}

/// Without an admin token, the request must be addressed to an IP address, `localhost` or a
/// name under `.localhost`, or a single-label name (`mybox` from `/etc/hosts`): a dotted name
/// on a loopback connection is what a DNS-rebinding page sends (its own public name,
/// re-pointed at 127.0.0.1), which would make the page same-origin with the server. `own` is
/// [`request_origin`]; a request without a host passes (browsers always send one).
pub fn local_host(own: Option<&str>) -> Result<(), crate::http::Refusal> {
    let Some(own) = own else { return Ok(()) };
    let authority = own.split_once("://").map_or(own, |(_, rest)| rest);
    let host = if let Some(rest) = authority.strip_prefix('[') {
        rest.split_once(']').map_or(rest, |(h, _)| h)
    } else {
        match authority.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => authority,
        }
    };
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    if name.parse::<std::net::IpAddr>().is_ok()
        || !name.contains('.')
        || name.ends_with(".localhost")
    {
        return Ok(());
    }
    Err((
        StatusCode::FORBIDDEN,
        "forbidden_host",
        FORBIDDEN_HOST_MESSAGE,
    ))
}

/// The message of a `forbidden_host` refusal.
pub const FORBIDDEN_HOST_MESSAGE: &str =
    "without --admin-token the admin API and the dashboard answer requests addressed to an \
     IP address, localhost or a single-label name only (a public name may be a DNS-rebinding \
     page): use http://127.0.0.1:PORT/, or set --admin-token";

/// Whether `origin` (an `Origin` header) is `own` (scheme and host in any case). A missing
/// origin, `null`, or a request without a host is not.
pub fn same_origin(origin: Option<&str>, own: Option<&str>) -> bool {
    match (origin, own) {
        (Some(origin), Some(own)) => origin.trim().eq_ignore_ascii_case(own),
        _ => false,
    }
}

/// `s` with every byte but `A-Z a-z 0-9 - . _ ~` written `%XX`: safe in a cookie value
/// whatever the admin token holds.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The inverse of [`percent_encode`] (any `%XX`; `None` for a bad escape or non-UTF-8).
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            // Two hex digits exactly (`from_str_radix` alone would take a sign: `%+A`).
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Field `name` of an `application/x-www-form-urlencoded` body (`+` is a space), if present.
pub fn form_field(body: &[u8], name: &str) -> Option<String> {
    let body = std::str::from_utf8(body).ok()?;
    body.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(&key.replace('+', " "))?;
        (key == name)
            .then(|| percent_decode(&value.replace('+', " ")))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_values_round_trip_whatever_the_token_holds() {
        for token in ["s3cret", "a b;c,d\"e\\f", "ünï=cödé+/", "%41", ""] {
            let encoded = percent_encode(token);
            assert!(encoded
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)));
            assert_eq!(percent_decode(&encoded).as_deref(), Some(token));
            HeaderValue::from_str(&encoded).unwrap();
        }
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%+A"), None, "a sign is no hex digit");
        assert_eq!(percent_decode("%+"), None);
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; b=2"));
        assert_eq!(cookie_token(&h), None);
        h.append(
            header::COOKIE,
            HeaderValue::from_static("x=y; loudsync_admin=s%3Bcret; z=w"),
        );
        assert_eq!(cookie_token(&h).as_deref(), Some("s;cret"));
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("loudsync_admin="));
        assert_eq!(cookie_token(&h), None, "an empty cookie is no credential");
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("xloudsync_admin=t"),
        );
        assert_eq!(cookie_token(&h), None);
    }

    #[test]
    fn form_fields_are_decoded() {
        assert_eq!(
            form_field(b"token=a+b%26c", "token").as_deref(),
            Some("a b&c")
        );
        assert_eq!(form_field(b"x=1&token=t&y", "token").as_deref(), Some("t"));
        assert_eq!(form_field(b"tokens=t", "token"), None);
        assert_eq!(form_field(b"token", "token").as_deref(), Some(""));
    }

    #[test]
    fn origins_compare_scheme_and_host() {
        let own = Some("http://127.0.0.1:8080");
        assert!(same_origin(Some("http://127.0.0.1:8080"), own));
        assert!(same_origin(Some("HTTP://127.0.0.1:8080"), own));
        assert!(!same_origin(Some("https://127.0.0.1:8080"), own));
        assert!(!same_origin(Some("http://127.0.0.1:8081"), own));
        assert!(!same_origin(Some("http://evil.example"), own));
        assert!(!same_origin(Some("null"), own));
        assert!(!same_origin(None, own));
        assert!(!same_origin(Some("http://127.0.0.1:8080"), None));
    }

    #[test]
    fn without_a_token_only_local_names_and_addresses_are_served() {
        for ok in [
            None,
            Some("http://127.0.0.1:8080"),
            Some("http://127.0.0.1"),
            Some("http://[::1]:8080"),
            Some("http://[::1]"),
            Some("http://localhost:3000"),
            Some("http://LocalHost."),
            Some("https://app.localhost:1"),
            Some("http://10.0.0.5:80"),
            Some("http://mybox:8080"),
            Some("http://x"),
        ] {
            assert!(local_host(ok).is_ok(), "{ok:?}");
        }
        for refused in [
            Some("http://evil.example:8080"),
            Some("http://evil.example"),
            Some("http://localhost.evil.example"),
            Some("http://127.0.0.1.nip.io:8080"),
        ] {
            assert_eq!(
                local_host(refused).unwrap_err().1,
                "forbidden_host",
                "{refused:?}"
            );
        }
    }

    #[test]
    fn set_cookie_has_its_attributes() {
        assert_eq!(
            set_cookie("t", false, false),
            "loudsync_admin=t; HttpOnly; SameSite=Strict; Path=/"
        );
        assert_eq!(
            set_cookie("", true, true),
            "loudsync_admin=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0; Secure"
        );
    }
}
