//! `loudsync host` and `loudsync join`: a person (or a script) in a session.
//!
//! On a terminal (or with `--live`), a live view that redraws in place: the session, each
//! member with host mark, status and latency, and the last events; when the session ends, the
//! last screen keeps the session's name and id and says why. On a pipe, or with `--json`, one
//! JSON object per event per line. Ctrl-C leaves cleanly. The exit code says how it ended
//! (see [`Exit`]).
//!
//! Both commands name things the same way: `--device-name` / `--device-id` are this device,
//! `--session` the session's id, and `host --session-name` the name of the session it opens.
//! (`host --name` and `join --name`, the old spellings, are hidden aliases of `--session-name`
//! and `--device-name`.) Access credentials come from `--password` / `LOUDSYNC_PASSWORD` and
//! `--token` / `LOUDSYNC_TOKEN`; `--ca` names a private CA for `wss://`.
//!
//! Nothing another device sent reaches the terminal as it was sent: names, reasons, error
//! texts, application data and unknown messages are shown through [`terminal_safe`] (the live
//! view) or [`json_line`] (JSON lines), so no escape sequence or control character gets
//! through.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Args;
use loudsync_client::{
    Client, ClientConfig, ClientError, ErrorCode, Event, ServerError, Snapshot, TlsRoots,
};
use serde_json::{json, Value};

/// How a `host` or `join` run ended, as its process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Left on request (Ctrl-C): 0.
    Left = 0,
    /// The command line cannot work (not a ws:// or wss:// URL, an unreadable CA file): 2, as
    /// for any other usage error.
    Usage = 2,
    /// Removed by the host: 3.
    Kicked = 3,
    /// The session ended: 4.
    SessionClosed = 4,
    /// Could not connect, or the connection was lost and reconnection failed: 5.
    CouldNotConnect = 5,
    /// The server refused the join (the code is printed, and what to do about it): 6.
    Rejected = 6,
}

/// `loudsync host`.
#[derive(Args)]
pub struct HostArgs {
    /// Session id to open (1-64 of A-Z a-z 0-9 - _).
    #[arg(long)]
    session: String,
    /// The name of the session this opens, shown to everyone [default: "<device name>'s
    /// session"]. (Old spelling: --name.)
    #[arg(long, alias = "name")]
    session_name: Option<String>,
    /// This device's name, shown to the others [default: the host name of this machine].
    #[arg(long)]
    device_name: Option<String>,
    #[command(flatten)]
    common: CommonArgs,
}

/// `loudsync join`.
#[derive(Args)]
pub struct JoinArgs {
    /// Session id to join.
    #[arg(long)]
    session: String,
    /// This device's name, shown to the others [default: the host name of this machine].
    /// (Old spelling: --name.)
    #[arg(long, alias = "name")]
    device_name: Option<String>,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Args)]
struct CommonArgs {
    /// Server URL: ws://HOST:PORT/, or wss://HOST:PORT/ for a server with TLS.
    #[arg(long, env = "LOUDSYNC_URL", default_value = "ws://127.0.0.1:8080/")]
    url: String,
    /// For wss://: trust only the CA certificates in this PEM file (a private CA) instead of
    /// the system's [default: the system's root certificates].
    #[arg(long, env = "LOUDSYNC_CA", value_name = "FILE")]
    ca: Option<std::path::PathBuf>,
    /// This device's id [default: random]; the server rejects a second connection with the same id.
    #[arg(long)]
    device_id: Option<String>,
    /// The session's password, sent in `join` (for a session that has one). Prefer the
    /// environment variable: a command line is visible to every user in `ps`.
    #[arg(long, env = "LOUDSYNC_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// A signed join token (`loudsync token` mints one), sent in `join`. Prefer the
    /// environment variable: a command line is visible to every user in `ps`.
    #[arg(long, env = "LOUDSYNC_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// How often to send `heartbeat` and `ping`; hearing nothing from the server for three
    /// of these counts as a lost connection.
    #[arg(long, default_value = "5s", value_parser = positive_duration)]
    heartbeat_interval: std::time::Duration,
    /// One JSON event per line instead of the live view (the default on a pipe).
    #[arg(long, conflicts_with = "live")]
    json: bool,
    /// The live view even when stdout is not a terminal.
    #[arg(long)]
    live: bool,
}

impl CommonArgs {
    /// The SDK's settings for these flags; an unreadable CA file is the user's to fix.
    fn apply(&self, mut config: ClientConfig) -> Result<ClientConfig, String> {
        if let Some(path) = &self.ca {
            config.tls_roots =
                TlsRoots::pem_file(path).map_err(|e| format!("cannot read the CA file {e}"))?;
        }
        config.heartbeat_interval = self.heartbeat_interval;
        config.silence_timeout = self.heartbeat_interval * 3;
        config.password = self.password.clone().map(Into::into);
        config.token = self.token.clone().map(Into::into);
        Ok(config)
    }

    fn json_mode(&self) -> bool {
        self.json || (!self.live && !std::io::stdout().is_terminal())
    }
}

fn positive_duration(s: &str) -> Result<std::time::Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be greater than zero".into()),
        Err(e) => Err(format!("{e} (write e.g. 500ms, 5s)")),
    }
}

fn device_id(given: &Option<String>) -> String {
    given
        .clone()
        .unwrap_or_else(|| format!("cli-{:08x}", fastrand::u32(..)))
}

fn machine_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "loudsync-cli".into())
}

/// Runs `loudsync host`.
pub fn host(args: HostArgs) -> anyhow::Result<ExitCode> {
    let device_name = args.device_name.clone().unwrap_or_else(machine_name);
    let name = args
        .session_name
        .clone()
        .unwrap_or_else(|| format!("{device_name}'s session"));
    let config = ClientConfig::host(
        &args.common.url,
        &args.session,
        name,
        device_id(&args.common.device_id),
        device_name,
    );
    run(config, &args.common)
}

/// Runs `loudsync join`.
pub fn join(args: JoinArgs) -> anyhow::Result<ExitCode> {
    let config = ClientConfig::member(
        &args.common.url,
        &args.session,
        device_id(&args.common.device_id),
        args.device_name.clone().unwrap_or_else(machine_name),
    );
    run(config, &args.common)
}

fn run(config: ClientConfig, common: &CommonArgs) -> anyhow::Result<ExitCode> {
    let json_mode = common.json_mode();
    let config = match common.apply(config) {
        Ok(config) => config,
        Err(e) => {
            Output::new(json_mode).final_line(json!({"event": "failed", "reason": e}), &e);
            return Ok(ExitCode::from(Exit::Usage as u8));
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let exit = runtime.block_on(session(config, json_mode))?;
    Ok(ExitCode::from(exit as u8))
}

/// What a person should read when the server refused the join: the access refusals say what
/// to do about them, with the server's own words where they add something (why a token was
/// refused, say), and the code last. Printed through [`terminal_safe`] or [`json_line`].
pub fn refusal_text(e: &ServerError, session: &str) -> String {
    // (advice, whether it says all the server's message would)
    let advice = match e.code.known() {
        Some(ErrorCode::PasswordRequired) => Some((
            format!(
                "session `{session}` needs a password: give --password, or set LOUDSYNC_PASSWORD"
            ),
            true,
        )),
        Some(ErrorCode::WrongPassword) => {
            Some((format!("wrong password for session `{session}`"), true))
        }
        Some(ErrorCode::TokenRequired) => Some((
            "this server or session needs a join token: give --token, or set LOUDSYNC_TOKEN \
             (the server's operator mints one with `loudsync token`)"
                .to_string(),
            true,
        )),
        Some(ErrorCode::InvalidToken) => Some(("the join token was refused".to_string(), false)),
        Some(ErrorCode::HostNotAllowed) => Some((
            format!("you may not host session `{session}` (join it with `loudsync join`)"),
            false,
        )),
        Some(ErrorCode::TooManyAttempts) => Some((
            "too many join attempts from this address: wait a while, then retry".to_string(),
            true,
        )),
        _ => None,
    };
    match advice {
        Some((advice, true)) => format!("{advice} ({})", e.code),
        Some((advice, false)) => format!("{advice}: {} ({})", e.message, e.code),
        None => format!("{} ({})", e.message, e.code),
    }
}

async fn session(config: ClientConfig, json_mode: bool) -> anyhow::Result<Exit> {
    let mut out = Output::new(json_mode);
    let session_id = config.session_id.clone();
    // Installed before connecting so an early Ctrl-C is a clean leave, not a kill.
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let (client, mut events) = match Client::connect(config).await {
        Ok(c) => c,
        Err(ClientError::Rejected(e)) => {
            out.final_line(
                json!({"event": "rejected", "code": e.code.as_str(), "message": e.message}),
                &format!("join rejected: {}", refusal_text(&e, &session_id)),
            );
            return Ok(Exit::Rejected);
        }
        Err(e @ ClientError::Config(_)) => {
            out.final_line(
                json!({"event": "failed", "reason": e.to_string()}),
                &e.to_string(),
            );
            return Ok(Exit::Usage);
        }
        Err(e) => {
            out.final_line(
                json!({"event": "failed", "reason": e.to_string()}),
                &e.to_string(),
            );
            return Ok(Exit::CouldNotConnect);
        }
    };
    // Member latencies are measured by the server; refresh the list to show them, from one
    // period after joining on (the join itself brought a fresh list).
    let period = std::time::Duration::from_secs(5);
    let mut refresh = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ending = None;
    loop {
        tokio::select! {
            _ = refresh.tick() => {
                let _ = client.request_member_list();
            }
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            event = events.recv() => {
                let Some(event) = event else { break };
                match &event {
                    Event::Kicked { .. } => ending = Some(Exit::Kicked),
                    Event::SessionClosed { .. } => ending = Some(Exit::SessionClosed),
                    Event::Failed { .. } => ending = Some(Exit::CouldNotConnect),
                    _ => {}
                }
                out.event(&client.snapshot(), &event);
            }
        }
    }
    if let Some(exit) = ending {
        out.finish();
        return Ok(exit);
    }
    client.leave().await;
    out.final_line(json!({"event": "left"}), "left the session");
    Ok(Exit::Left)
}

/// Where events go: the live view or JSON lines.
struct Output {
    json: bool,
    recent: VecDeque<String>,
    /// What was last seen while joined: the view keeps showing the session and this member's
    /// id while reconnecting and after the end, and after the end the last member table.
    last: Option<Snapshot>,
    /// Why the session ended for this member, once it has.
    ended: Option<String>,
}

impl Output {
    fn new(json: bool) -> Self {
        Output {
            json,
            recent: VecDeque::new(),
            last: None,
            ended: None,
        }
    }

    fn event(&mut self, snapshot: &Snapshot, event: &Event) {
        if self.json {
            print_line(&json_line(&event_json(event)));
            return;
        }
        // Latency updates and the periodic member-list refresh only redraw the table.
        // ... and so do the resume link's own steps (its state shows in the other events).
        if !matches!(
            event,
            Event::Latency { .. } | Event::MemberList(_) | Event::LinkChanged(_)
        ) {
            self.recent.push_back(describe(event));
            while self.recent.len() > 8 {
                self.recent.pop_front();
            }
        }
        if matches!(
            event,
            Event::Kicked { .. } | Event::SessionClosed { .. } | Event::Failed { .. }
        ) {
            self.ended = Some(describe(event));
        }
        let mut shown = snapshot.clone();
        match (&snapshot.session, &self.last) {
            (Some(_), _) => self.last = Some(snapshot.clone()),
            (None, Some(last)) => {
                shown.session = last.session.clone();
                shown.client_id = last.client_id.clone();
                if self.ended.is_some() {
                    shown.members = last.members.clone();
                }
            }
            (None, None) => {}
        }
        let mut stdout = std::io::stdout().lock();
        // Home, clear screen, then the view.
        let _ = write!(
            stdout,
            "\x1b[H\x1b[2J{}",
            render(&shown, &self.recent, self.ended.as_deref())
        );
        let _ = stdout.flush();
    }

    fn final_line(&mut self, value: Value, human: &str) {
        if self.json {
            print_line(&json_line(&value));
        } else {
            eprintln!("{}", terminal_safe(human));
        }
    }

    fn finish(&mut self) {
        if !self.json {
            println!();
        }
    }
}

/// `text` made safe to print on a terminal: control characters (C0 including newline and
/// tab, DEL, C1) and the bidirectional-text controls are written as `\u{..}` escapes, so
/// nothing a client sent can move the cursor, clear the screen, change colours or reorder
/// what is shown. Everything else is unchanged (borrowed when nothing needs escaping).
pub fn terminal_safe(text: &str) -> Cow<'_, str> {
    escape_with(text, |c| format!("\\u{{{c:x}}}"))
}

/// `text` with every character [`needs_escape`] says so written by `escape` (borrowed when
/// nothing needs escaping).
fn escape_with(text: &str, escape: impl Fn(u32) -> String) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if needs_escape(c) {
            out.push_str(&escape(c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Prints one line to stdout. When the reader has gone (`loudsync join --json | head -3`),
/// the program ends quietly with status 0, as Unix tools do, instead of panicking as
/// `println!` would (Rust ignores SIGPIPE, so a write to a closed pipe is an error).
pub fn print_line(line: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}

/// One JSON line, safe on a terminal too: serde_json already escapes C0 control characters;
/// DEL, C1 and the bidirectional-text controls are escaped as `\uXXXX` as well (they can only
/// occur inside strings, so the line is still the same JSON).
pub fn json_line(value: &Value) -> String {
    // The escaped characters are all in the Basic Multilingual Plane: one `\uXXXX` each.
    escape_with(&value.to_string(), |c| format!("\\u{c:04x}")).into_owned()
}

/// At most `max` characters of `text`, with `…` when cut.
fn clip(text: &str, max: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max) {
        Some((at, _)) => Cow::Owned(format!("{}…", &text[..at])),
        None => Cow::Borrowed(text),
    }
}

/// The live view as text: the session line, `ended` (why the session ended, if it has) on the
/// line under it, the member table, the recent events. Every name and id is shown through
/// [`terminal_safe`].
pub fn render(s: &Snapshot, recent: &VecDeque<String>, ended: Option<&str>) -> String {
    let mut v = String::new();
    let (sid, sname) = s
        .session
        .as_ref()
        .map(|x| (terminal_safe(&x.id), terminal_safe(&x.name)))
        .unwrap_or(("-".into(), "-".into()));
    v.push_str(&format!(
        "session {sname} ({sid})   state: {}",
        s.state.as_str()
    ));
    if let Some(ms) = s.latency {
        v.push_str(&format!("   my latency: {ms} ms"));
    }
    if let Some(why) = ended {
        v.push_str(&format!("\nended: {}", terminal_safe(why)));
    }
    v.push_str(&format!(
        "\nyou are {}\n\n  {:<2}{:<24} {:<16} {:<13} {:>8}\n",
        terminal_safe(s.client_id.as_deref().unwrap_or("-")),
        "",
        "NAME",
        "ID",
        "STATUS",
        "LATENCY"
    ));
    for m in &s.members {
        let mark = if m.is_host { "*" } else { "" };
        let me = if Some(&m.id) == s.client_id.as_ref() {
            " (you)"
        } else {
            ""
        };
        let latency = m
            .latency
            .map(|l| format!("{l} ms"))
            .unwrap_or_else(|| "-".into());
        let status = format!("{:?}", m.connection_status).to_lowercase();
        v.push_str(&format!(
            "  {mark:<2}{:<24} {:<16} {:<13} {latency:>8}\n",
            format!("{}{me}", terminal_safe(&m.name)),
            terminal_safe(&m.id),
            status
        ));
    }
    let count = match s.members.len() {
        1 => "1 member".to_string(),
        n => format!("{n} members"),
    };
    if ended.is_some() {
        v.push_str(&format!("\n{count} when it ended\n\nrecent:\n"));
    } else {
        v.push_str(&format!(
            "\n{count}   * = host   Ctrl-C leaves\n\nrecent:\n"
        ));
    }
    for line in recent {
        v.push_str(&format!("  {}\n", terminal_safe(line)));
    }
    v
}

/// One line for the live view's recent events, made [`terminal_safe`] as a whole.
pub fn describe(e: &Event) -> String {
    terminal_safe(&describe_raw(e)).into_owned()
}

fn describe_raw(e: &Event) -> String {
    match e {
        Event::StateChanged(s) => format!("state: {}", s.as_str()),
        Event::Welcome { client_id, session } => format!("joined {} as {client_id}", session.id),
        Event::MemberList(m) => format!("member list: {} members", m.len()),
        Event::MemberJoined(m) => format!("{} joined", m.name),
        Event::MemberLeft { member_id, reason } => {
            format!("{member_id} left ({reason:?})").to_lowercase()
        }
        Event::Kicked { reason } => format!("kicked: {reason}"),
        Event::SessionClosed { reason } => format!("session closed: {reason}"),
        Event::Error(e) => format!("error {}: {}", e.code, e.message),
        Event::Latency { ms } => format!("latency {ms} ms"),
        Event::Message { from, data } => format!("{from}: {data}"),
        Event::ConnectionLost { reason } => format!("connection lost: {reason}"),
        Event::Reconnecting { attempt, of } => format!("reconnecting ({attempt}/{of})"),
        Event::Failed { reason } => format!("failed: {reason}"),
        Event::LinkChanged(l) => format!("link: {}", l.as_str()),
        Event::MemberUpdated(m) => {
            format!(
                "{} is {}",
                m.name,
                format!("{:?}", m.connection_status).to_lowercase()
            )
        }
        Event::Resuming {
            attempt,
            window_left,
        } => format!(
            "resuming (attempt {attempt}, {} s of the window left)",
            window_left.as_secs()
        ),
        Event::Resumed { replayed } => format!("resumed ({replayed} replayed)"),
        Event::ResumeFailed {
            reason, rejoining, ..
        } => {
            if *rejoining {
                format!("resume failed: {}; joining afresh", reason.as_str())
            } else {
                format!("resume failed: {}", reason.as_str())
            }
        }
        Event::Unknown { kind, raw } => {
            format!(
                "unknown message `{kind}` from a newer server: {}",
                clip(raw.get(), 200)
            )
        }
    }
}

/// One event as a JSON object (print it with [`json_line`]).
pub fn event_json(e: &Event) -> Value {
    match e {
        Event::StateChanged(s) => json!({"event": "state", "state": s.as_str()}),
        Event::Welcome { client_id, session } => {
            json!({"event": "welcome", "clientId": client_id, "session": session})
        }
        Event::MemberList(m) => json!({"event": "member_list", "members": m}),
        Event::MemberJoined(m) => json!({"event": "member_joined", "member": m}),
        Event::MemberLeft { member_id, reason } => {
            json!({"event": "member_left", "memberId": member_id, "reason": reason})
        }
        Event::Kicked { reason } => json!({"event": "kicked", "reason": reason}),
        Event::SessionClosed { reason } => json!({"event": "session_closed", "reason": reason}),
        Event::Error(e) => {
            json!({"event": "error", "code": e.code.as_str(), "message": e.message, "details": e.details})
        }
        Event::Latency { ms } => json!({"event": "latency", "ms": ms}),
        Event::Message { from, data } => json!({"event": "message", "from": from, "data": data}),
        Event::ConnectionLost { reason } => json!({"event": "connection_lost", "reason": reason}),
        Event::Reconnecting { attempt, of } => {
            json!({"event": "reconnecting", "attempt": attempt, "of": of})
        }
        Event::Failed { reason } => json!({"event": "failed", "reason": reason}),
        Event::LinkChanged(l) => json!({"event": "link", "state": l.as_str()}),
        Event::MemberUpdated(m) => json!({"event": "member_updated", "member": m}),
        Event::Resuming {
            attempt,
            window_left,
        } => json!({"event": "resuming", "attempt": attempt,
            "windowLeftMs": window_left.as_millis() as u64}),
        Event::Resumed { replayed } => json!({"event": "resumed", "replayed": replayed}),
        Event::ResumeFailed {
            reason,
            unconfirmed,
            rejoining,
        } => json!({"event": "resume_failed", "reason": reason.as_str(),
            "unconfirmed": unconfirmed, "rejoining": rejoining}),
        Event::Unknown { kind, raw } => {
            json!({"event": "unknown", "type": kind, "message": raw.to_value()})
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loudsync_client::{
        AnyErrorCode, ConnectionState, ConnectionStatus, ErrorCode, RawJson, ServerError,
    };
    use loudsync_protocol::{server::SessionInfo, MemberInfo};

    fn member(id: &str, name: &str, host: bool, latency: Option<u64>) -> MemberInfo {
        MemberInfo {
            id: id.into(),
            name: name.into(),
            is_host: host,
            connection_status: ConnectionStatus::Connected,
            joined_at: 1,
            latency,
            handoff_ready: false,
            device_id: format!("dev-{id}"),
        }
    }

    #[test]
    fn live_view_shows_session_members_host_mark_status_latency_and_events() {
        let s = Snapshot {
            state: ConnectionState::Connected,
            client_id: Some("c_me".into()),
            session: Some(SessionInfo {
                id: "party".into(),
                name: "Friday".into(),
                host_id: Some("c_h".into()),
                host: None,
            }),
            members: vec![
                member("c_h", "Mac", true, Some(12)),
                member("c_me", "Phone", false, None),
            ],
            latency: Some(3),
        };
        let recent: VecDeque<String> = ["Phone joined".to_string()].into();
        let view = render(&s, &recent, None);
        assert!(view.contains("session Friday (party)"));
        assert!(view.contains("state: connected"));
        assert!(view.contains("my latency: 3 ms"));
        let host_line = view.lines().find(|l| l.contains("Mac")).unwrap();
        assert!(host_line.trim_start().starts_with('*'), "{host_line}");
        assert!(host_line.contains("12 ms") && host_line.contains("connected"));
        let me_line = view.lines().find(|l| l.contains("Phone (you)")).unwrap();
        assert!(!me_line.trim_start().starts_with('*'));
        assert!(view.contains("Phone joined"));
    }

    #[test]
    fn events_as_json_lines() {
        assert_eq!(
            event_json(&Event::Kicked { reason: "r".into() }),
            json!({"event": "kicked", "reason": "r"})
        );
        let e = Event::Error(ServerError {
            code: ErrorCode::Unauthorized.into(),
            message: "m".into(),
            details: None,
        });
        assert_eq!(event_json(&e)["code"], "unauthorized");
        assert_eq!(
            event_json(&Event::StateChanged(ConnectionState::Reconnecting))["state"],
            "reconnecting"
        );
    }

    #[test]
    fn a_newer_servers_error_and_message_type_are_shown() {
        let quota = Event::Error(ServerError {
            code: AnyErrorCode::Unknown("quota_exceeded".into()),
            message: "over quota".into(),
            details: None,
        });
        assert_eq!(describe(&quota), "error quota_exceeded: over quota");
        assert_eq!(event_json(&quota)["code"], "quota_exceeded");
        let text = r#"{"type":"presence_diff","added":["c_1"],"timestamp":1}"#;
        let unknown = Event::Unknown {
            kind: "presence_diff".into(),
            raw: RawJson::from_text(text).unwrap(),
        };
        assert_eq!(
            event_json(&unknown),
            json!({"event": "unknown", "type": "presence_diff",
                   "message": {"type":"presence_diff","added":["c_1"],"timestamp":1}})
        );
        let line = describe(&unknown);
        assert!(
            line.contains("presence_diff") && line.contains(r#""added":["c_1"]"#),
            "{line}"
        );
        let long = Event::Unknown {
            kind: "big".into(),
            raw: RawJson::from_value(&json!({"type": "big", "x": "y".repeat(5000)})),
        };
        assert!(describe(&long).chars().count() < 300);
    }

    #[test]
    fn nothing_a_client_sent_reaches_the_terminal_unescaped() {
        let hostile = "Eve\u{1b}[2J\u{9b}31m\u{7f}\u{202e}\nline";
        let is_clean = |text: &str| {
            !text
                .chars()
                .any(|c| (c.is_control() && c != '\n') || matches!(c, '\u{202a}'..='\u{202e}'))
        };
        // In the view: member names, session name, event lines.
        let s = Snapshot {
            state: ConnectionState::Connected,
            client_id: Some("c_me".into()),
            session: Some(SessionInfo {
                id: "party".into(),
                name: hostile.into(),
                host_id: None,
                host: None,
            }),
            members: vec![member("c_h", hostile, true, None)],
            latency: None,
        };
        let events = [
            Event::MemberJoined(member("c_e", hostile, false, None)),
            Event::Kicked {
                reason: hostile.into(),
            },
            Event::Message {
                from: "c_e".into(),
                data: json!({"text": hostile}),
            },
            Event::Error(ServerError {
                code: AnyErrorCode::Unknown(hostile.into()),
                message: hostile.into(),
                details: None,
            }),
            Event::Unknown {
                kind: hostile.into(),
                raw: RawJson::from_value(&json!({"type": hostile})),
            },
        ];
        let recent: VecDeque<String> = events.iter().map(describe).collect();
        for line in &recent {
            assert!(is_clean(line) && !line.contains('\n'), "{line:?}");
        }
        let view = render(&s, &recent, None);
        assert!(is_clean(&view), "{view:?}");
        assert!(
            view.contains(r"Eve\u{1b}[2J\u{9b}31m\u{7f}\u{202e}\u{a}line"),
            "{view}"
        );
        // In JSON lines: still the same JSON, with every such character escaped.
        for e in &events {
            let value = event_json(e);
            let line = json_line(&value);
            assert!(is_clean(&line) && !line.contains('\n'), "{line:?}");
            assert_eq!(serde_json::from_str::<Value>(&line).unwrap(), value);
        }
        assert_eq!(terminal_safe("plain Ünïcode ✓"), "plain Ünïcode ✓");
    }

    #[test]
    fn the_last_screen_keeps_the_session_and_says_why_it_ended() {
        let s = Snapshot {
            state: ConnectionState::Disconnected,
            client_id: Some("c_me".into()),
            session: Some(SessionInfo {
                id: "party".into(),
                name: "Friday night".into(),
                host_id: None,
                host: None,
            }),
            members: vec![],
            latency: None,
        };
        let view = render(
            &s,
            &VecDeque::new(),
            Some("session closed: Host ended the session"),
        );
        let mut lines = view.lines();
        assert_eq!(
            lines.next(),
            Some("session Friday night (party)   state: disconnected")
        );
        assert_eq!(
            lines.next(),
            Some("ended: session closed: Host ended the session")
        );
        assert!(view.contains("\n0 members when it ended\n") && !view.contains("Ctrl-C"));
        let live = render(
            &Snapshot {
                members: vec![member("c_me", "Me", true, None)],
                ..s.clone()
            },
            &VecDeque::new(),
            None,
        );
        assert!(
            live.contains("\n1 member   * = host   Ctrl-C leaves\n"),
            "{live}"
        );
        let hostile = render(&s, &VecDeque::new(), Some("kicked: \u{1b}]0;PWNED\u{7}"));
        assert!(!hostile.contains('\u{1b}') && hostile.contains(r"\u{1b}]0;PWNED\u{7}"));
    }

    #[test]
    fn access_refusals_say_what_to_do() {
        let refusal = |code: ErrorCode| ServerError {
            code: code.into(),
            message: "msg\u{1b}[2J".into(),
            details: None,
        };
        for (code, words) in [
            (
                ErrorCode::PasswordRequired,
                "needs a password: give --password, or set LOUDSYNC_PASSWORD",
            ),
            (
                ErrorCode::WrongPassword,
                "wrong password for session `party`",
            ),
            (
                ErrorCode::TokenRequired,
                "give --token, or set LOUDSYNC_TOKEN",
            ),
            (ErrorCode::InvalidToken, "the join token was refused"),
            (
                ErrorCode::HostNotAllowed,
                "you may not host session `party`",
            ),
            (ErrorCode::TooManyAttempts, "wait a while, then retry"),
        ] {
            let text = refusal_text(&refusal(code), "party");
            assert!(text.contains(words), "{code}: {text}");
            assert!(text.ends_with(&format!(" ({code})")), "{text}");
            let says_why = matches!(code, ErrorCode::InvalidToken | ErrorCode::HostNotAllowed);
            assert_eq!(text.contains(": msg\u{1b}[2J ("), says_why, "{text}");
        }
    }
}
