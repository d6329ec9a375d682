//! `loudsync token`: mints a signed join token for scripts and tests, with the key the server
//! verifies (an HS256 secret) or the private half of its public key (Ed25519 or RSA, PEM).
//! The token is printed on stdout, followed by a newline, and nothing else.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use loudsync_protocol::DeviceType;
use loudsync_server::access::{mint, Claims, TokenKey};

/// The role a token grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Join as the session's host (`deviceInfo.type: "host"`).
    Host,
    /// Join as a member (`deviceInfo.type: "client"`).
    Client,
}

/// Flags of `loudsync token`.
#[derive(Args, Debug)]
pub struct TokenArgs {
    /// HS256 secret (the server's --token-key). Prefer --key-file or the environment: a flag
    /// shows in `ps`.
    #[arg(
        long,
        env = "LOUDSYNC_TOKEN_KEY",
        hide_env_values = true,
        conflicts_with = "key_file"
    )]
    key: Option<String>,

    /// Key file: an HS256 secret (its bytes, one trailing newline ignored), or a PEM private
    /// key (Ed25519: EdDSA; RSA: RS256) whose public key the server has in --token-key-file.
    #[arg(long, env = "LOUDSYNC_TOKEN_KEY_FILE")]
    key_file: Option<PathBuf>,

    /// The session the token is for (`sid`; case and dashes do not matter).
    #[arg(long)]
    session: String,

    /// The role it grants (`role`).
    #[arg(long, value_enum)]
    role: Role,

    /// The only device id (`deviceInfo.id`) that may use it (`sub`).
    #[arg(long)]
    device: Option<String>,

    /// The only device name (`deviceInfo.name`) that may use it (`name`).
    #[arg(long)]
    name: Option<String>,

    /// How long it is valid from now (`exp`), e.g. 10m, 1h, 7d.
    #[arg(long, default_value = "1h", value_parser = duration)]
    ttl: Duration,

    /// Not valid until this long from now (`nbf`), e.g. 5m [default: valid at once].
    #[arg(long, value_parser = duration)]
    not_before: Option<Duration>,
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (write e.g. 30s, 10m, 1h)"))
}

/// The claims `args` ask for, at `now_secs`.
fn claims(args: &TokenArgs, now_secs: u64) -> Claims {
    Claims {
        sid: args.session.clone(),
        role: match args.role {
            Role::Host => DeviceType::Host,
            Role::Client => DeviceType::Client,
        },
        sub: args.device.clone(),
        name: args.name.clone(),
        exp: now_secs + args.ttl.as_secs(),
        nbf: args.not_before.map(|d| now_secs + d.as_secs()),
        iat: Some(now_secs),
    }
}

/// Mints the token `args` describe and prints it.
pub fn run(args: TokenArgs) -> anyhow::Result<()> {
    let key = TokenKey::load(args.key.as_deref(), args.key_file.as_deref())?
        .context("give the signing key: --key SECRET, --key-file PATH, or LOUDSYNC_TOKEN_KEY")?;
    anyhow::ensure!(
        key.can_sign(),
        "the key file holds a public key, which only verifies: sign with its private key"
    );
    anyhow::ensure!(!args.ttl.is_zero(), "--ttl must be more than 0");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs();
    println!("{}", mint(&claims(&args, now), &key)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use loudsync_server::access::verify;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        args: TokenArgs,
    }

    #[test]
    fn the_flags_become_the_claims_and_the_server_verifies_them() {
        let t = T::parse_from([
            "x",
            "--key",
            "0123456789abcdef0123456789abcdef",
            "--session",
            "K7P-3XQ",
            "--role",
            "host",
            "--device",
            "desk",
            "--name",
            "Front desk",
            "--ttl",
            "2h",
            "--not-before",
            "1m",
        ]);
        let c = claims(&t.args, 1_000);
        assert_eq!(
            c,
            Claims {
                sid: "K7P-3XQ".into(),
                role: DeviceType::Host,
                sub: Some("desk".into()),
                name: Some("Front desk".into()),
                exp: 1_000 + 7200,
                nbf: Some(1_060),
                iat: Some(1_000),
            }
        );
        let key = TokenKey::hs256(b"0123456789abcdef0123456789abcdef").unwrap();
        let token = mint(&c, &key).unwrap();
        assert_eq!(verify(&token, &key, 1_100), Ok(c));
    }

    /// `loudsync serve`'s access flags land in the server's settings.
    #[test]
    fn serve_takes_the_access_settings() {
        #[derive(Parser)]
        struct S {
            #[command(flatten)]
            args: crate::serve::ServeArgs,
        }
        let s = S::parse_from([
            "x",
            "--token-key",
            "0123456789abcdef0123456789abcdef",
            "--require-token",
            "--password-max-failures",
            "3",
            "--password-failure-window",
            "30s",
        ]);
        let c = s.args.resolve().unwrap();
        assert_eq!(
            c.token_key.as_ref().map(|k| k.0.as_str()),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert!(c.require_token);
        assert_eq!(c.password_max_failures, 3);
        assert_eq!(c.password_failure_window, Duration::from_secs(30));
        let s = S::parse_from(["x", "--require-token"]);
        let err = format!("{:#}", s.args.resolve().unwrap_err());
        assert!(err.contains("require-token needs a key"), "{err}");
    }

    #[test]
    fn one_key_only() {
        let both = T::try_parse_from([
            "x",
            "--key",
            "k",
            "--key-file",
            "f",
            "--session",
            "s",
            "--role",
            "client",
        ]);
        assert!(both.is_err());
    }
}
