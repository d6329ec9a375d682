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
//! texts, application data, the session state and unknown messages are shown through
//! [`terminal_safe`] (the live view) or [`json_line`] (JSON lines), so no escape sequence or
//! control character gets through.
//!
//! # Session state and handoff (issue 11)
//!
//! `host` without `--session` opens a new session: the server assigns a code (`A1B2C3`),
//! shown as people read it (`A1B-2C3`, [`display_code`]); `join --session` takes it either
//! way ([`typed_code`]). The view shows who controls the session and the term, the state
//! document and its version, this device's role and each member's readiness, and a pending
//! handoff. Commands come from stdin, one per line (a letter, then Enter: no raw mode, so a
//! plain terminal and `tmux send-keys 'h' Enter` both work; see [`parse_command`]): `h` hand
//! off, `a` / `d` accept or decline, `r` declare (or withdraw) readiness, `s` / `p` set or
//! patch the state, `q` leave. In JSON mode they work the same and their outcome is a JSON
//! line too. A closed stdin just means no commands (Ctrl-C still leaves).

use std::borrow::Cow;
use std::collections::VecDeque;
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use loudsync_client::{
    display_code, typed_code, Client, ClientConfig, ClientError, ErrorCode, Event, HandoffFailure,
    HostChange, PendingHandoff, Role, ServerError, Snapshot, TlsRoots,
};
use loudsync_protocol::MemberInfo;
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

/// Where `host` and `join` connect unless told (`--url`, `LOUDSYNC_URL`).
const DEFAULT_URL: &str = "ws://127.0.0.1:8080/";

/// `loudsync host`.
#[derive(Args)]
pub struct HostArgs {
    /// Session id to open (1-64 of A-Z a-z 0-9 - _) [default: a new session, with a code
    /// the server assigns, shown as e.g. A1B-2C3].
    #[arg(long)]
    session: Option<String>,
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
    /// Session id to join; a code shown as A1B-2C3 may be typed so, or as a1b2c3.
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
    #[arg(long, env = "LOUDSYNC_URL", default_value = DEFAULT_URL)]
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
    let config = match &args.session {
        Some(session) => ClientConfig::host(
            &args.common.url,
            session,
            name,
            device_id(&args.common.device_id),
            device_name,
        ),
        None => ClientConfig::new_session(
            &args.common.url,
            name,
            device_id(&args.common.device_id),
            device_name,
        ),
    };
    run(config, &args.common)
}

/// Runs `loudsync join`.
pub fn join(args: JoinArgs) -> anyhow::Result<ExitCode> {
    let config = ClientConfig::member(
        &args.common.url,
        typed_code(&args.session),
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
    out.url = (config.url != DEFAULT_URL).then(|| config.url.clone());
    let session_id = match config.session_id.as_str() {
        "" => "(new)".to_string(),
        id => display_code(id),
    };
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
    // A pending prompt counts down on screen: redraw once a second while there is one.
    let mut countdown = tokio::time::interval(Duration::from_secs(1));
    countdown.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut input = Some(stdin_lines());
    let mut ending = None;
    loop {
        let prompt_shown = !json_mode && ending.is_none() && out.offer_deadline.is_some();
        tokio::select! {
            _ = refresh.tick() => {
                let _ = client.request_member_list();
            }
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            _ = countdown.tick(), if prompt_shown => out.redraw(&client.snapshot()),
            line = next_line(&mut input) => match line {
                // Closed or unreadable stdin: no more commands; Ctrl-C still leaves.
                None => input = None,
                Some(_) if ending.is_some() => {}
                Some(line) => match parse_command(&line) {
                    Ok(None) => out.redraw(&client.snapshot()),
                    Ok(Some(Command::Quit)) => break,
                    Ok(Some(command)) => {
                        let outcome = execute(&client, &client.snapshot(), &command);
                        // Give the SDK's task a moment to take the command, so the view
                        // shows what it changed (an answered prompt is gone, say).
                        tokio::time::sleep(Duration::from_millis(30)).await;
                        out.command(&client.snapshot(), &line, outcome);
                    }
                    Err(e) => out.command(&client.snapshot(), &line, Err(e)),
                },
            },
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
    /// The prompt to take control this member was given, and when it expires (for the
    /// countdown; the SDK's offer has the timeout, not when it arrived).
    offer_deadline: Option<(String, Instant)>,
    /// The server's URL when it is not the default, for the "others join with" line.
    url: Option<String>,
}

impl Output {
    fn new(json: bool) -> Self {
        Output {
            json,
            recent: VecDeque::new(),
            last: None,
            ended: None,
            offer_deadline: None,
            url: None,
        }
    }

    fn event(&mut self, snapshot: &Snapshot, event: &Event) {
        if let Event::HandoffRequested {
            handoff_id,
            timeout_ms,
            ..
        } = event
        {
            self.offer_deadline = Some((
                handoff_id.clone(),
                Instant::now() + Duration::from_millis(*timeout_ms),
            ));
        }
        if self.json {
            print_line(&json_line(&event_json(event)));
            return;
        }
        // Latency updates and the periodic member-list refresh only redraw the table.
        // ... and so do the resume link's own steps (its state shows in the other events).
        // ... and so does the role going to Connecting or Disconnected: the connection's
        // state says that already, one line above.
        if !matches!(
            event,
            Event::Latency { .. }
                | Event::MemberList(_)
                | Event::LinkChanged(_)
                | Event::RoleChanged(Role::Idle | Role::Connecting | Role::Disconnected)
        ) {
            let me = snapshot.client_id.as_deref();
            self.push_recent(describe_in(event, &snapshot.members, me));
        }
        if matches!(
            event,
            Event::Kicked { .. } | Event::SessionClosed { .. } | Event::Failed { .. }
        ) {
            self.ended = Some(describe(event));
        }
        self.redraw(snapshot);
    }

    fn push_recent(&mut self, line: String) {
        self.recent.push_back(line);
        while self.recent.len() > 8 {
            self.recent.pop_front();
        }
    }

    /// The outcome of a command typed as `line`: a JSON line, or a line in the view's events.
    fn command(&mut self, snapshot: &Snapshot, line: &str, outcome: Result<String, String>) {
        let input = line.trim();
        if self.json {
            let value = match &outcome {
                Ok(done) => json!({"event": "command", "input": input, "result": done}),
                Err(e) => json!({"event": "command_error", "input": input, "message": e}),
            };
            print_line(&json_line(&value));
            return;
        }
        let shown = clip(input, 40);
        let text = match outcome {
            Ok(done) => format!("> {shown}: {done}"),
            Err(e) => format!("> {shown}: {e}"),
        };
        self.push_recent(terminal_safe(&text).into_owned());
        self.redraw(snapshot);
    }

    /// Draws the view again (the live view only).
    fn redraw(&mut self, snapshot: &Snapshot) {
        if self.json {
            return;
        }
        let mut shown = snapshot.clone();
        match (&snapshot.session, &self.last) {
            (Some(_), _) => self.last = Some(snapshot.clone()),
            (None, Some(last)) => {
                shown.session = last.session.clone();
                shown.client_id = last.client_id.clone();
                if shown.host_id.is_none() {
                    shown.host_id = last.host_id.clone();
                }
                if self.ended.is_some() {
                    shown.members = last.members.clone();
                }
            }
            (None, None) => {}
        }
        let offer_left = match (&snapshot.pending_handoff, &self.offer_deadline) {
            (Some(PendingHandoff::Offered(offer)), Some((id, deadline)))
                if *id == offer.handoff_id =>
            {
                Some(deadline.saturating_duration_since(Instant::now()))
            }
            _ => None,
        };
        if offer_left.is_none() {
            self.offer_deadline = None;
        }
        let mut stdout = std::io::stdout().lock();
        // Home, clear screen, then the view.
        let _ = write!(
            stdout,
            "\x1b[H\x1b[2J{}",
            render_for(
                &shown,
                &self.recent,
                self.ended.as_deref(),
                offer_left,
                self.url.as_deref()
            )
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

/// [`render_for`] for the default server (the tests' shorthand).
#[cfg(test)]
pub fn render(
    s: &Snapshot,
    recent: &VecDeque<String>,
    ended: Option<&str>,
    offer_left: Option<Duration>,
) -> String {
    render_for(s, recent, ended, offer_left, None)
}

/// The live view as text: the session line, `ended` (why the session ended, if it has) on the
/// line under it, who this device is and its role, who controls the session and the term,
/// the state document and its version, the line telling others how to join (naming `url`
/// unless it is the default server), a pending handoff (with `offer_left` of this member's
/// prompt to take control), the member table with readiness, the recent events, and the
/// commands available now. Every name, id and the state are shown through [`terminal_safe`].
pub fn render_for(
    s: &Snapshot,
    recent: &VecDeque<String>,
    ended: Option<&str>,
    offer_left: Option<Duration>,
    url: Option<&str>,
) -> String {
    let mut v = String::new();
    let me = s.client_id.as_deref();
    let (sid, sname) = s
        .session
        .as_ref()
        .map(|x| (display_code(&x.id), terminal_safe(&x.name).into_owned()))
        .unwrap_or(("-".into(), "-".into()));
    v.push_str(&format!(
        "session {sname} ({})   state: {}",
        terminal_safe(&sid),
        s.state.as_str()
    ));
    if let Some(ms) = s.latency {
        v.push_str(&format!("   my latency: {ms} ms"));
    }
    if let Some(why) = ended {
        v.push_str(&format!("\nended: {}", terminal_safe(why)));
    }
    let my_name = me
        .and_then(|id| s.members.iter().find(|m| m.id == id))
        .map(|m| format!(" ({})", terminal_safe(&m.name)))
        .unwrap_or_default();
    v.push_str(&format!(
        "\nyou are {}{my_name}   role: {}",
        terminal_safe(me.unwrap_or("-")),
        role_label(s.role)
    ));
    let host = match s.host_id.as_deref() {
        Some(id) if Some(id) == me => format!("{}, that is you", who(&s.members, id)),
        Some(id) => who(&s.members, id),
        None => "none yet".to_string(),
    };
    v.push_str(&format!("\nhost: {host}   term: {}", s.term));
    v.push_str(&format!(
        "\nstate v{}: {}",
        s.state_version,
        state_line(&s.session_state, 70)
    ));
    if ended.is_none() && s.is_host && s.session.as_ref().is_some_and(|x| is_code(&x.id)) {
        let url = url
            .map(|u| format!(" --url {}", terminal_safe(u)))
            .unwrap_or_default();
        v.push_str(&format!(
            "\nothers join with: loudsync join{url} --session {}",
            terminal_safe(&sid)
        ));
    }
    v.push_str(&format!(
        "\n\n  {:<2}{:<24} {:<16} {:<13} {:>8}  {}\n",
        "", "NAME", "ID", "STATUS", "LATENCY", "READY"
    ));
    for m in &s.members {
        let mark = if m.is_host { "*" } else { "" };
        let you = if Some(m.id.as_str()) == me {
            " (you)"
        } else {
            ""
        };
        let latency = m
            .latency
            .map(|l| format!("{l} ms"))
            .unwrap_or_else(|| "-".into());
        let status = format!("{:?}", m.connection_status).to_lowercase();
        let ready = if m.handoff_ready && !m.is_host {
            "ready"
        } else {
            ""
        };
        v.push_str(
            format!(
                "  {mark:<2}{:<24} {:<16} {:<13} {latency:>8}  {ready}",
                format!("{}{you}", terminal_safe(&m.name)),
                terminal_safe(&m.id),
                status
            )
            .trim_end(),
        );
        v.push('\n');
    }
    let count = match s.members.len() {
        1 => "1 member".to_string(),
        n => format!("{n} members"),
    };
    if ended.is_some() {
        v.push_str(&format!("\n{count} when it ended\n"));
    } else {
        v.push_str(&format!(
            "\n{count}   * = host   ready = ready to take control\n"
        ));
        if let Some(line) = pending_line(s, offer_left) {
            v.push_str(&format!("\n>> {line}\n"));
        }
    }
    v.push_str("\nrecent:\n");
    for line in recent {
        v.push_str(&format!("  {}\n", terminal_safe(line)));
    }
    if ended.is_none() {
        v.push_str("\ncommands (type one, then Enter; Ctrl-C leaves too):\n");
        for line in wrap(&commands_now(s), " | ", 76) {
            v.push_str(&format!("  {line}\n"));
        }
        v.push_str("> ");
    }
    v
}

/// `items` joined by `sep` into lines of at most `width` characters (an item longer than
/// that gets a line of its own).
fn wrap(items: &[&str], sep: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for item in items {
        match lines.last_mut() {
            Some(line) if line.chars().count() + sep.len() + item.chars().count() <= width => {
                line.push_str(sep);
                line.push_str(item);
            }
            _ => lines.push(item.to_string()),
        }
    }
    lines
}

/// A role as the issue names it: Idle, Connecting, Assigned, Handoff-Ready, Disconnected.
pub fn role_label(role: Role) -> &'static str {
    match role {
        Role::Idle => "Idle",
        Role::Connecting => "Connecting",
        Role::Assigned => "Assigned",
        Role::HandoffReady => "Handoff-Ready",
        Role::Disconnected => "Disconnected",
    }
}

/// Whether `id` is a generated session code (shown with a dash).
fn is_code(id: &str) -> bool {
    display_code(id) != id
}

/// A member as people read it: `Name (id)`, or the id alone if it is not in the table.
/// Made [`terminal_safe`].
fn who(members: &[MemberInfo], id: &str) -> String {
    match members.iter().find(|m| m.id == id) {
        Some(m) => format!("{} ({})", terminal_safe(&m.name), terminal_safe(id)),
        None => terminal_safe(id).into_owned(),
    }
}

/// The session state on one line: compact JSON, at most `max` characters, terminal-safe.
pub fn state_line(state: &Value, max: usize) -> String {
    let text = state.to_string();
    terminal_safe(&clip(&text, max)).into_owned()
}

/// The handoff this member is part of, as a line of the view.
fn pending_line(s: &Snapshot, offer_left: Option<Duration>) -> Option<String> {
    Some(match s.pending_handoff.as_ref()? {
        PendingHandoff::Requested { target_id: None } => {
            "asking the server to hand off to the member ready first...".to_string()
        }
        PendingHandoff::Requested {
            target_id: Some(target),
        } => format!("asking to hand off to {}...", who(&s.members, target)),
        PendingHandoff::Started { target_id, .. } => format!(
            "handing off to {}... waiting for its answer",
            who(&s.members, target_id)
        ),
        PendingHandoff::Offered(offer) => {
            let left = match offer_left {
                Some(left) => format!(" ({}s)", left.as_millis().div_ceil(1000)),
                None => String::new(),
            };
            format!(
                "{} asks you to take control: a accept, d decline{left}",
                who(&s.members, &offer.from_id)
            )
        }
    })
}

/// The commands that make sense now, for the view's footer.
pub fn commands_now(s: &Snapshot) -> Vec<&'static str> {
    let mut c = Vec::new();
    let joined = s.client_id.is_some() && s.session.is_some();
    if joined && s.is_host {
        if s.pending_handoff.is_none() {
            c.push("h hand off");
            c.push("h <name> hand off to");
        }
        c.push("s <json> set state");
        c.push("p <json> patch state");
        c.push("q end the session");
    } else if joined {
        if matches!(s.pending_handoff, Some(PendingHandoff::Offered(_))) {
            c.push("a accept");
            c.push("d decline");
        }
        if s.role == Role::HandoffReady {
            c.push("r not ready");
        } else {
            c.push("r ready to take control");
        }
        c.push("q leave");
    } else {
        c.push("q leave");
    }
    c
}

/// One line for the live view's recent events, made [`terminal_safe`] as a whole.
pub fn describe(e: &Event) -> String {
    describe_in(e, &[], None)
}

/// [`describe`], naming members by the `members` table where it can (`Mac (c_..)`), and
/// `me` (this client's id) as "you".
pub fn describe_in(e: &Event, members: &[MemberInfo], me: Option<&str>) -> String {
    terminal_safe(&describe_raw(e, members, me)).into_owned()
}

fn describe_raw(e: &Event, members: &[MemberInfo], me: Option<&str>) -> String {
    // Names go through `terminal_safe` again with the whole line: escaping is idempotent
    // on what it already escaped (a backslash is printable).
    let name = |id: &str| {
        if Some(id) == me {
            "you".to_string()
        } else {
            who(members, id)
        }
    };
    match e {
        Event::StateChanged(s) => format!("state: {}", s.as_str()),
        Event::Welcome { client_id, session } => {
            format!("joined {} as {client_id}", display_code(&session.id))
        }
        Event::MemberList(m) => format!("member list: {} members", m.len()),
        Event::MediaToken(g) => format!(
            "media token: {} stream {} on udp port {}",
            g.role.as_str(),
            g.stream_id,
            g.port
        ),
        Event::MemberJoined(m) => format!("{} joined", m.name),
        Event::MemberLeft { member_id, reason } => {
            format!("{member_id} left ({reason:?})").to_lowercase()
        }
        Event::Kicked { reason } => format!("kicked: {reason}"),
        Event::SessionClosed { reason } => format!("session closed: {reason}"),
        Event::Error(e) => {
            let mut line = format!("error {}: {}", e.code, e.message);
            // The fencing refusals say who the host is (decision 21).
            if let Some(d) = &e.details {
                if let (Some(host), Some(term)) = (d.get("hostId"), d.get("term")) {
                    let host = host.as_str().map(&name).unwrap_or_else(|| "none".into());
                    line.push_str(&format!(" (host: {host}, term {term})"));
                }
            }
            line
        }
        Event::Latency { ms } => format!("latency {ms} ms"),
        Event::Message { from, data } => format!("{from}: {data}"),
        Event::ConnectionLost { reason } => format!("connection lost: {reason}"),
        Event::Reconnecting { attempt, of } => format!("reconnecting ({attempt}/{of})"),
        Event::Failed { reason } => format!("failed: {reason}"),
        Event::LinkChanged(l) => format!("link: {}", l.as_str()),
        Event::MemberUpdated(m) => {
            format!(
                "{} is {}, {}",
                m.name,
                format!("{:?}", m.connection_status).to_lowercase(),
                if m.handoff_ready {
                    "ready to take control"
                } else {
                    "not ready"
                }
            )
        }
        Event::RoleChanged(role) => format!("your role: {}", role_label(*role)),
        Event::SessionState {
            state,
            version,
            updated_by,
            ..
        } => match updated_by {
            Some(by) => format!(
                "state v{version} by {}: {}",
                name(by),
                state_line(state, 60)
            ),
            None => format!("state v{version}: {}", state_line(state, 60)),
        },
        Event::HostChanged {
            host_id,
            previous_host_id,
            term,
            reason,
        } => {
            let (new, old) = (name(host_id), name(previous_host_id));
            let has = if Some(host_id.as_str()) == me {
                "have"
            } else {
                "has"
            };
            match reason {
                HostChange::Handoff => {
                    format!("host changed: {new} {has} control, from {old} (term {term})")
                }
                HostChange::HostLost => {
                    format!("host changed: {old} was lost; {new} {has} control (term {term})")
                }
            }
        }
        Event::HandoffRequested {
            from_id,
            timeout_ms,
            ..
        } => format!(
            "{} asks you to take control (a accept, d decline; {} s)",
            name(from_id),
            timeout_ms.div_ceil(1000)
        ),
        Event::HandoffStarted { target_id, .. } => {
            format!("handing off to {}: waiting for its answer", name(target_id))
        }
        Event::HandoffAcknowledged { host_id, term, .. } => {
            format!("{} accepted the handoff (term {term})", name(host_id))
        }
        Event::HandoffFailed {
            reason, target_id, ..
        } => {
            let target = target_id
                .as_deref()
                .map(&name)
                .unwrap_or_else(|| "the candidate".into());
            let why = match reason {
                HandoffFailure::NoCandidate => {
                    "nobody can take control (a member gets ready with r)".to_string()
                }
                HandoffFailure::Declined => format!("{target} declined"),
                HandoffFailure::Timeout if target_id.is_some() => {
                    format!("{target} did not answer in time")
                }
                HandoffFailure::Timeout => "the request to take control expired".to_string(),
                HandoffFailure::CandidateLeft => format!("{target} left before answering"),
                HandoffFailure::HostLeft => "the host left before you answered".to_string(),
                HandoffFailure::Busy => "another handoff is in progress".to_string(),
            };
            format!("handoff failed ({}): {why}", reason.as_str())
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
            json!({"event": "welcome", "clientId": client_id, "session": session,
                "code": display_code(&session.id)})
        }
        Event::MemberList(m) => json!({"event": "member_list", "members": m}),
        // The token is a credential: not printed.
        Event::MediaToken(g) => json!({"event": "media_token", "role": g.role,
            "streamId": g.stream_id, "port": g.port, "expiresAt": g.expires_at}),
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
        Event::RoleChanged(role) => json!({"event": "role", "role": role.as_str()}),
        Event::SessionState {
            state,
            version,
            term,
            updated_by,
        } => json!({"event": "session_state", "state": state, "version": version,
            "term": term, "updatedBy": updated_by}),
        Event::HostChanged {
            host_id,
            previous_host_id,
            term,
            reason,
        } => json!({"event": "host_changed", "hostId": host_id,
            "previousHostId": previous_host_id, "term": term, "reason": reason}),
        Event::HandoffRequested {
            handoff_id,
            from_id,
            state,
            version,
            term,
            timeout_ms,
        } => json!({"event": "handoff_requested", "handoffId": handoff_id, "fromId": from_id,
            "state": state, "version": version, "term": term, "timeoutMs": timeout_ms}),
        Event::HandoffStarted {
            handoff_id,
            target_id,
        } => json!({"event": "handoff_started", "handoffId": handoff_id, "targetId": target_id}),
        Event::HandoffAcknowledged {
            handoff_id,
            host_id,
            term,
        } => json!({"event": "handoff_acknowledged", "handoffId": handoff_id,
            "hostId": host_id, "term": term}),
        Event::HandoffFailed {
            reason,
            handoff_id,
            target_id,
        } => json!({"event": "handoff_failed", "reason": reason.as_str(),
            "handoffId": handoff_id, "targetId": target_id}),
    }
}

/// A command typed on stdin (one per line; see [`parse_command`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `h`: hand control off to the member ready first; `h <member>`: to that member (an id,
    /// or a name from the table).
    HandOff(Option<String>),
    /// `a`: accept the pending request to take control.
    Accept,
    /// `d`: decline it.
    Decline,
    /// `r`: declare this member ready to take control, or withdraw that if it is.
    ToggleReady,
    /// `s <json object>`: set the whole session state (host).
    SetState(Value),
    /// `p <json object>`: merge-patch the session state (host; `null` removes a key).
    PatchState(Value),
    /// `q`: leave (for the host: end the session).
    Quit,
}

/// One line of stdin as a command: `Ok(None)` for a blank line, `Err` with a short text
/// for anything else that is not a command.
pub fn parse_command(line: &str) -> Result<Option<Command>, String> {
    let line = line.trim();
    if line.is_empty() {
        return Ok(None);
    }
    let (word, rest) = match line.split_once(char::is_whitespace) {
        Some((w, r)) => (w, r.trim()),
        None => (line, ""),
    };
    let bare = |c: Command| {
        if rest.is_empty() {
            Ok(Some(c))
        } else {
            Err(format!("`{word}` takes nothing after it"))
        }
    };
    let object = |kind: &str| -> Result<Value, String> {
        let example = format!("e.g. {word} {{\"track\":\"Song 2\"}}");
        if rest.is_empty() {
            return Err(format!("`{word}` needs a JSON object to {kind}: {example}"));
        }
        match serde_json::from_str::<Value>(rest) {
            Ok(v @ Value::Object(_)) => Ok(v),
            Ok(_) => Err(format!("the state is a JSON object: {example}")),
            Err(e) => Err(format!("not JSON ({e}): {example}")),
        }
    };
    match word {
        "h" => Ok(Some(Command::HandOff(
            (!rest.is_empty()).then(|| rest.to_string()),
        ))),
        "a" => bare(Command::Accept),
        "d" => bare(Command::Decline),
        "r" => bare(Command::ToggleReady),
        "q" => bare(Command::Quit),
        "s" => object("set").map(|v| Some(Command::SetState(v))),
        "p" => object("merge").map(|v| Some(Command::PatchState(v))),
        _ => Err(format!(
            "unknown command `{}` (h, a, d, r, s, p or q, then Enter)",
            clip(word, 20)
        )),
    }
}

/// The member `who` names: an id, or else a name (ignoring case) of exactly one member.
pub fn find_member(s: &Snapshot, who: &str) -> Result<String, String> {
    if let Some(m) = s.members.iter().find(|m| m.id == who) {
        return Ok(m.id.clone());
    }
    let named: Vec<_> = s
        .members
        .iter()
        .filter(|m| m.name.to_lowercase() == who.to_lowercase())
        .collect();
    match named.as_slice() {
        [m] => Ok(m.id.clone()),
        [] => Err(format!(
            "no member `{who}` (give a name or an id from the table)"
        )),
        _ => Err(format!(
            "{} members are named `{who}`: give the id",
            named.len()
        )),
    }
}

/// Carries out `command` (not [`Command::Quit`]) as the snapshot `s` allows: what was done,
/// or why nothing was. Refusals from the server (`unauthorized`, `no_candidate`, ...) come
/// back later as events.
pub fn execute(client: &Client, s: &Snapshot, command: &Command) -> Result<String, String> {
    let sent = |r: Result<(), ClientError>| r.map_err(|e| format!("cannot send now: {e}"));
    let offer = match &s.pending_handoff {
        Some(PendingHandoff::Offered(offer)) => Some(offer),
        _ => None,
    };
    match command {
        Command::HandOff(None) => {
            sent(client.request_handoff(None))?;
            Ok("asked to hand off to the member ready first".into())
        }
        Command::HandOff(Some(target)) => {
            let id = find_member(s, target)?;
            if Some(id.as_str()) == s.client_id.as_deref() {
                return Err("that is you".into());
            }
            sent(client.request_handoff(Some(&id)))?;
            Ok(format!("asked to hand off to {}", who(&s.members, &id)))
        }
        Command::Accept => {
            let offer = offer.ok_or("nothing to accept: nobody asked you to take control")?;
            sent(client.accept_handoff(&offer.handoff_id))?;
            Ok("accepted: taking control".into())
        }
        Command::Decline => {
            let offer = offer.ok_or("nothing to decline: nobody asked you to take control")?;
            sent(client.decline_handoff(&offer.handoff_id, None))?;
            Ok("declined".into())
        }
        Command::ToggleReady => {
            if s.is_host {
                return Err("you are the host: h hands control to a member that is ready".into());
            }
            let ready = s.role != Role::HandoffReady;
            sent(client.set_ready(ready))?;
            Ok(if ready {
                "ready to take control".into()
            } else {
                "no longer ready".into()
            })
        }
        Command::SetState(v) => {
            sent(client.set_state(v.clone(), None))?;
            Ok(sent_note("state", s.is_host))
        }
        Command::PatchState(v) => {
            sent(client.patch_state(v.clone(), None))?;
            Ok(sent_note("patch", s.is_host))
        }
        Command::Quit => Ok("leaving".into()),
    }
}

/// What was done with a state change: sent; from a member that is not the host, the server
/// refuses it (and the refusal is shown when it comes).
fn sent_note(what: &str, is_host: bool) -> String {
    if is_host {
        format!("{what} sent")
    } else {
        format!("{what} sent, but only the host sets the state: expect a refusal")
    }
}

/// Lines of stdin, read on a thread of their own (a blocking read); the channel closes at
/// EOF or on a read error.
pub(crate) fn stdin_lines() -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next line of stdin; `None` once it is closed; never, after that (`input` is `None`).
pub(crate) async fn next_line(
    input: &mut Option<tokio::sync::mpsc::UnboundedReceiver<String>>,
) -> Option<String> {
    match input.as_mut() {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
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
            ..Snapshot::default()
        };
        let recent: VecDeque<String> = ["Phone joined".to_string()].into();
        let view = render(&s, &recent, None, None);
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
            ..Snapshot::default()
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
        let view = render(&s, &recent, None, None);
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
            ..Snapshot::default()
        };
        let view = render(
            &s,
            &VecDeque::new(),
            Some("session closed: Host ended the session"),
            None,
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
            None,
        );
        assert!(
            live.contains("\n1 member   * = host   ready = ready to take control\n"),
            "{live}"
        );
        assert!(
            live.contains("\ncommands (type one, then Enter; Ctrl-C leaves too):\n")
                && live.ends_with("q leave\n> "),
            "{live}"
        );
        let hostile = render(
            &s,
            &VecDeque::new(),
            Some("kicked: \u{1b}]0;PWNED\u{7}"),
            None,
        );
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

    fn ready(mut m: MemberInfo) -> MemberInfo {
        m.handoff_ready = true;
        m
    }

    fn handoff_session(me: &str, host: &str) -> Snapshot {
        Snapshot {
            state: ConnectionState::Connected,
            client_id: Some(me.into()),
            session: Some(SessionInfo {
                id: "A1B2C3".into(),
                name: "Friday".into(),
                host_id: Some(host.into()),
                host: None,
            }),
            members: vec![
                member("c_h", "Mac", host == "c_h", None),
                ready(member("c_p", "Phone", host == "c_p", None)),
                member("c_t", "Tablet", false, None),
            ],
            role: if me == host {
                Role::Assigned
            } else {
                Role::HandoffReady
            },
            session_id: Some("A1B2C3".into()),
            host_id: Some(host.into()),
            is_host: me == host,
            term: 3,
            session_state: json!({"track": "Song 2", "position": 12}),
            state_version: 7,
            ..Snapshot::default()
        }
    }

    #[test]
    fn the_hosts_view_shows_control_term_state_readiness_and_its_commands() {
        let s = handoff_session("c_h", "c_h");
        let view = render(&s, &VecDeque::new(), None, None);
        assert!(view.starts_with("session Friday (A1B-2C3)"), "{view}");
        assert!(
            view.contains("\nyou are c_h (Mac)   role: Assigned\n"),
            "{view}"
        );
        assert!(
            view.contains("\nhost: Mac (c_h), that is you   term: 3\n"),
            "{view}"
        );
        assert!(
            view.contains("\nstate v7: {\"position\":12,\"track\":\"Song 2\"}\n"),
            "{view}"
        );
        assert!(view.contains("others join with: loudsync join --session A1B-2C3"));
        let elsewhere = render_for(
            &s,
            &VecDeque::new(),
            None,
            None,
            Some("ws://10.0.0.5:9000/"),
        );
        assert!(
            elsewhere.contains(
                "others join with: loudsync join --url ws://10.0.0.5:9000/ --session A1B-2C3"
            ),
            "{elsewhere}"
        );
        let phone = view.lines().find(|l| l.contains("Phone")).unwrap();
        assert!(phone.ends_with("  ready"), "{phone:?}");
        let tablet = view.lines().find(|l| l.contains("Tablet")).unwrap();
        assert!(!tablet.contains("ready"), "{tablet:?}");
        let footer = view.split("\ncommands (").nth(1).unwrap();
        for c in [
            "h hand off",
            "h <name> hand off to",
            "s <json>",
            "p <json>",
            "q end",
        ] {
            assert!(footer.contains(c), "{footer}");
        }
        assert!(!footer.contains("a accept") && !footer.contains("r ready"));
        // While its request is pending: said so, and no second `h` offered.
        let asking = Snapshot {
            pending_handoff: Some(PendingHandoff::Started {
                handoff_id: "h1".into(),
                target_id: "c_p".into(),
            }),
            ..s.clone()
        };
        let view = render(&asking, &VecDeque::new(), None, None);
        assert!(
            view.contains("\n>> handing off to Phone (c_p)... waiting for its answer\n"),
            "{view}"
        );
        let footer = view.split("\ncommands (").nth(1).unwrap();
        assert!(!footer.contains("h hand off"), "{footer}");
    }

    #[test]
    fn the_candidates_view_prompts_with_a_countdown_and_offers_accept_and_decline() {
        let mut s = handoff_session("c_p", "c_h");
        let view = render(&s, &VecDeque::new(), None, None);
        assert!(view.contains("you are c_p (Phone)   role: Handoff-Ready"));
        assert!(view.contains("\nhost: Mac (c_h)   term: 3\n"), "{view}");
        assert!(!view.contains("others join with"));
        let footer = view.split("\ncommands (").nth(1).unwrap();
        assert!(footer.contains("r not ready") && footer.contains("q leave"));
        assert!(!footer.contains("a accept") && !footer.contains("s <json>"));
        s.pending_handoff = Some(PendingHandoff::Offered(loudsync_client::HandoffOffer {
            handoff_id: "h1".into(),
            from_id: "c_h".into(),
            state: json!({}),
            version: 7,
            term: 3,
            timeout_ms: 10_000,
        }));
        let view = render(
            &s,
            &VecDeque::new(),
            None,
            Some(Duration::from_millis(8_200)),
        );
        assert!(
            view.contains("\n>> Mac (c_h) asks you to take control: a accept, d decline (9s)\n"),
            "{view}"
        );
        let footer = view.split("\ncommands (").nth(1).unwrap();
        assert!(footer.contains("a accept") && footer.contains("d decline"));
        // A member not ready is offered `r` to become so.
        let plain = Snapshot {
            role: Role::Assigned,
            pending_handoff: None,
            ..s
        };
        let view = render(&plain, &VecDeque::new(), None, None);
        assert!(view.contains("r ready to take control"), "{view}");
    }

    #[test]
    fn the_state_document_is_one_clipped_terminal_safe_line() {
        let hostile = "\u{1b}[2J\u{9b}31m\u{7f}\u{202e}\nnext";
        let s = Snapshot {
            session_state: json!({"title": hostile, "long": "x".repeat(500)}),
            ..handoff_session("c_p", "c_h")
        };
        let view = render(&s, &VecDeque::new(), None, None);
        let line = view.lines().find(|l| l.starts_with("state v7: ")).unwrap();
        assert!(line.chars().count() < 120, "{line}");
        assert!(line.ends_with('…'), "{line}");
        assert!(!view.contains('\u{1b}') && !view.contains('\u{9b}') && !view.contains('\u{202e}'));
        let shown = state_line(&json!({"title": hostile}), 200);
        assert_eq!(
            shown,
            r#"{"title":"\u001b[2J\u{9b}31m\u{7f}\u{202e}\nnext"}"#,
        );
        let event = Event::SessionState {
            state: json!({"title": hostile}),
            version: 8,
            term: 3,
            updated_by: Some("c_h".into()),
        };
        let line = describe_in(&event, &s.members, Some("c_p"));
        assert!(line.starts_with("state v8 by Mac (c_h): "), "{line}");
        assert!(
            !line.contains('\u{9b}') && !line.contains('\u{7f}'),
            "{line}"
        );
        let json = json_line(&event_json(&event));
        assert!(
            !json.contains('\u{9b}') && !json.contains('\u{202e}'),
            "{json}"
        );
        assert_eq!(
            serde_json::from_str::<Value>(&json).unwrap(),
            event_json(&event)
        );
    }

    #[test]
    fn the_handoff_events_as_json_lines() {
        assert_eq!(
            event_json(&Event::RoleChanged(Role::HandoffReady)),
            json!({"event": "role", "role": "handoff_ready"})
        );
        assert_eq!(
            event_json(&Event::SessionState {
                state: json!({"a": 1}),
                version: 2,
                term: 1,
                updated_by: None
            }),
            json!({"event": "session_state", "state": {"a": 1}, "version": 2, "term": 1,
                   "updatedBy": null})
        );
        assert_eq!(
            event_json(&Event::HostChanged {
                host_id: "c_p".into(),
                previous_host_id: "c_h".into(),
                term: 2,
                reason: HostChange::Handoff
            }),
            json!({"event": "host_changed", "hostId": "c_p", "previousHostId": "c_h",
                   "term": 2, "reason": "handoff"})
        );
        assert_eq!(
            event_json(&Event::HostChanged {
                host_id: "c_p".into(),
                previous_host_id: "c_h".into(),
                term: 5,
                reason: HostChange::HostLost
            })["reason"],
            "host_lost"
        );
        assert_eq!(
            event_json(&Event::HandoffRequested {
                handoff_id: "h1".into(),
                from_id: "c_h".into(),
                state: json!({"x": true}),
                version: 4,
                term: 1,
                timeout_ms: 10_000
            }),
            json!({"event": "handoff_requested", "handoffId": "h1", "fromId": "c_h",
                   "state": {"x": true}, "version": 4, "term": 1, "timeoutMs": 10000})
        );
        assert_eq!(
            event_json(&Event::HandoffStarted {
                handoff_id: "h1".into(),
                target_id: "c_p".into()
            }),
            json!({"event": "handoff_started", "handoffId": "h1", "targetId": "c_p"})
        );
        assert_eq!(
            event_json(&Event::HandoffAcknowledged {
                handoff_id: "h1".into(),
                host_id: "c_p".into(),
                term: 2
            }),
            json!({"event": "handoff_acknowledged", "handoffId": "h1", "hostId": "c_p",
                   "term": 2})
        );
        assert_eq!(
            event_json(&Event::HandoffFailed {
                reason: HandoffFailure::NoCandidate,
                handoff_id: None,
                target_id: None
            }),
            json!({"event": "handoff_failed", "reason": "no_candidate", "handoffId": null,
                   "targetId": null})
        );
        let welcome = Event::Welcome {
            client_id: "c_h".into(),
            session: SessionInfo {
                id: "A1B2C3".into(),
                name: "S".into(),
                host_id: Some("c_h".into()),
                host: None,
            },
        };
        assert_eq!(event_json(&welcome)["code"], "A1B-2C3");
        assert_eq!(event_json(&welcome)["session"]["id"], "A1B2C3");
    }

    #[test]
    fn the_handoff_events_read_well_with_names() {
        let s = handoff_session("c_h", "c_h");
        let say = |e: Event| describe_in(&e, &s.members, Some("c_h"));
        assert_eq!(
            say(Event::HostChanged {
                host_id: "c_p".into(),
                previous_host_id: "c_h".into(),
                term: 4,
                reason: HostChange::Handoff
            }),
            "host changed: Phone (c_p) has control, from you (term 4)"
        );
        assert_eq!(
            say(Event::HandoffFailed {
                reason: HandoffFailure::Declined,
                handoff_id: Some("h1".into()),
                target_id: Some("c_p".into())
            }),
            "handoff failed (declined): Phone (c_p) declined"
        );
        assert!(say(Event::HandoffFailed {
            reason: HandoffFailure::NoCandidate,
            handoff_id: None,
            target_id: None
        })
        .starts_with("handoff failed (no_candidate): nobody can take control"));
        let fenced = Event::Error(ServerError {
            code: ErrorCode::Unauthorized.into(),
            message: "state_set: only the host may set the session state".into(),
            details: Some(json!({"hostId": "c_p", "term": 4})),
        });
        assert_eq!(
            say(fenced),
            "error unauthorized: state_set: only the host may set the session state \
             (host: Phone (c_p), term 4)"
        );
        assert_eq!(
            say(Event::RoleChanged(Role::HandoffReady)),
            "your role: Handoff-Ready"
        );
    }

    #[test]
    fn commands_are_a_letter_then_enter() {
        assert_eq!(parse_command("h\n"), Ok(Some(Command::HandOff(None))));
        assert_eq!(
            parse_command("  h  Phone "),
            Ok(Some(Command::HandOff(Some("Phone".into()))))
        );
        assert_eq!(parse_command("a"), Ok(Some(Command::Accept)));
        assert_eq!(parse_command("d"), Ok(Some(Command::Decline)));
        assert_eq!(parse_command("r"), Ok(Some(Command::ToggleReady)));
        assert_eq!(parse_command("q"), Ok(Some(Command::Quit)));
        assert_eq!(parse_command(""), Ok(None));
        assert_eq!(
            parse_command(r#"s {"track": "Song 2"}"#),
            Ok(Some(Command::SetState(json!({"track": "Song 2"}))))
        );
        assert_eq!(
            parse_command(r#"p {"position": null}"#),
            Ok(Some(Command::PatchState(json!({"position": null}))))
        );
        assert!(parse_command("s [1]").unwrap_err().contains("JSON object"));
        assert!(parse_command("s {oops")
            .unwrap_err()
            .starts_with("not JSON"));
        assert!(parse_command("s")
            .unwrap_err()
            .contains("needs a JSON object"));
        assert!(parse_command("a now")
            .unwrap_err()
            .contains("takes nothing"));
        let unknown = parse_command("x").unwrap_err();
        assert!(unknown.starts_with("unknown command `x`"), "{unknown}");
    }

    #[test]
    fn a_handoff_target_is_an_id_or_a_unique_name() {
        let mut s = handoff_session("c_h", "c_h");
        assert_eq!(find_member(&s, "c_t"), Ok("c_t".into()));
        assert_eq!(find_member(&s, "phone"), Ok("c_p".into()));
        assert!(find_member(&s, "Fridge")
            .unwrap_err()
            .starts_with("no member `Fridge`"));
        s.members.push(member("c_p2", "Phone", false, None));
        assert!(find_member(&s, "Phone")
            .unwrap_err()
            .contains("give the id"));
    }
}
