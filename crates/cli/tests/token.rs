//! `loudsync token` as a script runs it: the token alone on stdout, signed with an HS256 secret
//! from the environment or a private key file, verified by the server's own `verify`.

use std::path::PathBuf;
use std::process::Command;

use loudsync_protocol::DeviceType;
use loudsync_server::access::{verify, TokenKey};

const SECRET: &str = "a secret for scripts, 32 bytes..";

fn keys() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../server/tests/keys")
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Runs `loudsync token ARGS` with `env`; its stdout, or its stderr if it failed.
fn token(args: &[&str], env: &[(&str, &str)]) -> Result<String, String> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loudsync"));
    cmd.arg("token")
        .args(args)
        .env_remove("LOUDSYNC_TOKEN_KEY")
        .env_remove("LOUDSYNC_TOKEN_KEY_FILE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8(out.stderr).unwrap())
    }
}

#[test]
fn an_hs256_token_from_the_environment_verifies_with_the_secret() {
    let out = token(
        &[
            "--session",
            "K7P-3XQ",
            "--role",
            "client",
            "--device",
            "d1",
            "--ttl",
            "10m",
        ],
        &[("LOUDSYNC_TOKEN_KEY", SECRET)],
    )
    .unwrap();
    assert!(out.ends_with('\n') && out.lines().count() == 1, "{out:?}");
    let key = TokenKey::hs256(SECRET.as_bytes()).unwrap();
    let claims = verify(out.trim_end(), &key, now()).unwrap();
    assert_eq!(claims.sid, "K7P-3XQ");
    assert_eq!(claims.role, DeviceType::Client);
    assert_eq!(claims.sub.as_deref(), Some("d1"));
    assert!(claims.exp >= now() + 590 && claims.exp <= now() + 600);
}

#[test]
fn an_ed25519_private_key_signs_what_the_public_key_verifies() {
    let private = keys().join("ed25519-private.pem");
    let out = token(
        &[
            "--key-file",
            private.to_str().unwrap(),
            "--session",
            "lobby",
            "--role",
            "host",
            "--name",
            "Front desk",
            "--not-before",
            "1h",
        ],
        &[],
    )
    .unwrap();
    let public = std::fs::read(keys().join("ed25519-public.pem")).unwrap();
    let key = TokenKey::from_pem(&public).unwrap();
    let claims = verify(out.trim_end(), &key, now() + 3600).unwrap();
    assert_eq!(
        (claims.role, claims.name.as_deref()),
        (DeviceType::Host, Some("Front desk"))
    );
    assert!(
        verify(out.trim_end(), &key, now()).is_err(),
        "not before an hour"
    );
}

#[test]
fn without_a_key_or_with_a_public_key_it_says_so() {
    let err = token(&["--session", "s", "--role", "host"], &[]).unwrap_err();
    assert!(err.contains("give the signing key"), "{err}");
    let public = keys().join("ed25519-public.pem");
    let err = token(
        &[
            "--key-file",
            public.to_str().unwrap(),
            "--session",
            "s",
            "--role",
            "host",
        ],
        &[],
    )
    .unwrap_err();
    assert!(
        err.contains("cannot sign") || err.contains("private key"),
        "{err}"
    );
}
