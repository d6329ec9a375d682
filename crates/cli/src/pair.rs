//! `loudsync pair`: one controller's or responder's side of a pairing (issue 12), for trying
//! pairing by hand: a terminal view of the crSocket state machine and its events.
//!
//! It runs the SDK's [`PairingClient`] against `/crsocket/APP/ws` on the server of `--url`
//! (`LOUDSYNC_URL`, default `ws://127.0.0.1:8080/`, as `host` and `join`). On a terminal (or
//! with `--live`) a view that redraws in place: the app, the role, this client's id, the
//! state and metastates, the partner, the last events. On a pipe, or with `--json`, one JSON
//! object per update per line. Commands come from stdin, one per line (see
//! [`parse_command`]): `e TYPE[:SUBTYPE] [PARAM...]` sends an application event to the
//! partner, `p ID` assigns the partner, `u` unassigns it, `a` / `i` make the client active or
//! passive (passive sends `inactive` to the partner and closes the connection), `r` retries
//! after an abort, `q` quits. A closed stdin just means no commands (Ctrl-C still quits).
//!
//! Nothing a peer or the server sent reaches the terminal as it was sent: event types,
//! parameters, ids, reasons and error texts go through [`terminal_safe`] (the view) or
//! [`json_line`] (JSON lines).
//!
//! Exit codes, as `host`/`join`'s ([`Exit`]): 0 after Ctrl-C or `q`, 2 unusable command line,
//! 5 could not connect, 6 the identify was refused (or the server later aborted the
//! connection: another connection took this client id, say); the `cr_aborted` reason is
//! printed. A connection lost later is reconnected for as long as it takes (CRSocket's pages
//! do the same), the view showing `connecting`.

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use loudsync_client::pairing::State;
use loudsync_client::{
    PairingClient, PairingClientConfig, PairingError, PairingRole, PairingSnapshot, PairingUpdate,
    TlsRoots,
};
use loudsync_protocol::pairing::{valid_client_id, AbortReason};
use serde_json::{json, Value};

use crate::live::{json_line, next_line, print_line, stdin_lines, terminal_safe, Exit};

/// Where `pair` connects unless told (`--url`, `LOUDSYNC_URL`), as `host` and `join`.
const DEFAULT_URL: &str = "ws://127.0.0.1:8080/";

/// The token sent without `--token`: well formed, so an open app accepts it (P2: an open app
/// takes any syntactically valid token, but one is required).
pub const DEFAULT_TOKEN: &str = "open";

/// `--role`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// Picks its partner (`--partner`, or `p ID`) and pings it.
    Controller,
    /// Pairs with the first controller that pings it.
    Responder,
}

/// `loudsync pair`.
#[derive(Args)]
pub struct PairArgs {
    /// The app's name, as configured on the server (`serve --app NAME`).
    #[arg(long)]
    app: String,
    /// This client's role.
    #[arg(long, value_enum)]
    role: RoleArg,
    /// The partner to pair with (6 digits), assigned at once; a controller pings it. Also
    /// later with the command `p ID`.
    #[arg(long, value_name = "ID")]
    partner: Option<String>,
    /// This client's id (6 digits) [default: the server assigns one, shown once connected].
    #[arg(long, value_name = "ID")]
    client_id: Option<String>,
    /// The app's access token. An open app (`--app NAME` on the server) accepts any
    /// well-formed token, so the default suits it; an app with tokens (`--app NAME:TOKEN,...`)
    /// needs one of them.
    #[arg(long, default_value = DEFAULT_TOKEN)]
    token: String,
    /// Server URL: ws://HOST:PORT/, or wss://HOST:PORT/ for a server with TLS; the command
    /// connects to /crsocket/APP/ws on it.
    #[arg(long, env = "LOUDSYNC_URL", default_value = DEFAULT_URL)]
    url: String,
    /// For wss://: trust only the CA certificates in this PEM file (a private CA) instead of
    /// the system's [default: the system's root certificates].
    #[arg(long, env = "LOUDSYNC_CA", value_name = "FILE")]
    ca: Option<std::path::PathBuf>,
    /// How often to tell the server this client is alive (`cr_alive`); keep it well under
    /// the server's --pairing-alive-timeout.
    #[arg(long, default_value = "12s", value_parser = positive_duration)]
    alive_interval: Duration,
    /// One JSON update per line instead of the live view (the default on a pipe).
    #[arg(long, conflicts_with = "live")]
    json: bool,
    /// The live view even when stdout is not a terminal.
    #[arg(long)]
    live: bool,
}

fn positive_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be greater than zero".into()),
        Err(e) => Err(format!("{e} (write e.g. 500ms, 5s)")),
    }
}

impl PairArgs {
    fn json_mode(&self) -> bool {
        self.json || (!self.live && !std::io::stdout().is_terminal())
    }

    /// The SDK's settings for these flags; an error is the user's to fix (exit 2).
    fn config(&self) -> Result<PairingClientConfig, String> {
        let role = match self.role {
            RoleArg::Controller => PairingRole::Controller,
            RoleArg::Responder => PairingRole::Responder,
        };
        if let Some(id) = &self.partner {
            if !valid_client_id(id) {
                return Err(format!("--partner `{id}`: expected 6 digits"));
            }
        }
        let mut config = PairingClientConfig::new(&self.url, &self.app, role, &self.token);
        config.pairing.client_id = self.client_id.clone();
        config.alive_interval = self.alive_interval;
        config.silence_timeout = self.alive_interval * 5 / 2;
        if let Some(path) = &self.ca {
            config.tls_roots =
                TlsRoots::pem_file(path).map_err(|e| format!("cannot read the CA file {e}"))?;
        }
        config.endpoint()?;
        Ok(config)
    }
}

/// Runs `loudsync pair`.
pub fn run(args: PairArgs) -> anyhow::Result<ExitCode> {
    let mut out = Output::new(args.json_mode(), &args);
    let config = match args.config() {
        Ok(config) => config,
        Err(e) => {
            out.final_line(json!({"event": "failed", "reason": e}), &e);
            return Ok(ExitCode::from(Exit::Usage as u8));
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let exit = runtime.block_on(pair(config, args.partner.clone(), out))?;
    Ok(ExitCode::from(exit as u8))
}

/// What a person should read when the server refused or aborted: the reason, with what to
/// do about it.
pub fn abort_text(reason: AbortReason, app: &str) -> String {
    let advice = match reason {
        AbortReason::NotAuthorized => {
            format!("app `{app}` needs one of its tokens: give --token")
        }
        AbortReason::InvalidAccessToken => {
            "the token must be 1 to 256 characters of ! to ~ (no spaces)".to_string()
        }
        AbortReason::InvalidClientId => "--client-id must be 6 digits".to_string(),
        AbortReason::InvalidRole => "the role must be controller or responder".to_string(),
        AbortReason::ClientIdInUse => {
            "this client id is connected in another app: give another --client-id".to_string()
        }
        AbortReason::ReleasedByOther => "another connection took this client id".to_string(),
        AbortReason::ClientNotAlive => "the server heard nothing from this client in time \
             (is --alive-interval under the server's --pairing-alive-timeout?)"
            .to_string(),
    };
    format!("{advice} ({reason})")
}

async fn pair(
    config: PairingClientConfig,
    partner: Option<String>,
    mut out: Output,
) -> anyhow::Result<Exit> {
    // Installed before connecting so an early Ctrl-C is a clean quit, not a kill.
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let app = config.app.clone();
    let (client, mut events) = match PairingClient::connect(config).await {
        Ok(c) => c,
        Err(PairingError::Refused(reason)) => {
            out.final_line(
                json!({"event": "refused", "reason": reason.as_str()}),
                &format!("identify refused: {}", abort_text(reason, &app)),
            );
            return Ok(Exit::Rejected);
        }
        Err(e @ PairingError::Config(_)) => {
            out.final_line(
                json!({"event": "failed", "reason": e.to_string()}),
                &e.to_string(),
            );
            return Ok(Exit::Usage);
        }
        Err(e) => {
            out.final_line(
                json!({"event": "failed", "reason": e.to_string()}),
                &format!("could not connect: {e}"),
            );
            return Ok(Exit::CouldNotConnect);
        }
    };
    if let Some(partner) = &partner {
        let outcome = client
            .assign_partner(Some(partner))
            .map(|()| format!("partner {partner} assigned"))
            .map_err(|e| e.to_string());
        out.command(&client.snapshot(), &format!("p {partner}"), outcome);
    }
    let mut input = Some(stdin_lines());
    let mut ending = None;
    loop {
        tokio::select! {
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            line = next_line(&mut input) => match line {
                None => input = None,
                Some(line) => match parse_command(&line) {
                    Ok(None) => out.redraw(&client.snapshot()),
                    Ok(Some(Command::Quit)) => break,
                    Ok(Some(command)) => {
                        let outcome = execute(&client, &command).await;
                        // Give the SDK's task a moment, so the view shows what it changed.
                        tokio::time::sleep(Duration::from_millis(30)).await;
                        out.command(&client.snapshot(), &line, outcome);
                    }
                    Err(e) => out.command(&client.snapshot(), &line, Err(e)),
                },
            },
            update = events.recv() => {
                let Some(update) = update else { break };
                if let PairingUpdate::Aborted { reason } = &update {
                    ending = Some(*reason);
                }
                out.update(&client.snapshot(), &update);
                if ending.is_some() {
                    break;
                }
            }
        }
    }
    if let Some(reason) = ending {
        client.close().await;
        out.final_line(
            json!({"event": "ended", "reason": reason.as_str()}),
            &format!("aborted by the server: {}", abort_text(reason, &app)),
        );
        return Ok(Exit::Rejected);
    }
    client.close().await;
    out.final_line(
        json!({"event": "left"}),
        "left (a partner was told: inactive)",
    );
    Ok(Exit::Left)
}

/// A command typed on stdin (one per line; see [`parse_command`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `e TYPE[:SUBTYPE] [PARAM...]`: an application event for the partner.
    Send {
        /// The event type.
        event_type: String,
        /// The subtype (`""` if none).
        sub_type: String,
        /// The parameters, split at whitespace.
        params: Vec<String>,
    },
    /// `p ID`: assign the partner.
    Partner(String),
    /// `u`: unassign the partner.
    Unassign,
    /// `a`: active.
    Active,
    /// `i`: passive (inactive).
    Passive,
    /// `r`: connect again after an abort.
    Retry,
    /// `q`: quit.
    Quit,
}

/// One line of stdin as a command: `Ok(None)` for a blank line, `Err` with a short text for
/// anything else that is not a command.
pub fn parse_command(line: &str) -> Result<Option<Command>, String> {
    let line = line.trim();
    if line.is_empty() {
        return Ok(None);
    }
    let mut words = line.split_whitespace();
    let word = words.next().unwrap_or_default();
    let rest: Vec<&str> = words.collect();
    let bare = |c: Command| {
        if rest.is_empty() {
            Ok(Some(c))
        } else {
            Err(format!("`{word}` takes nothing after it"))
        }
    };
    match word {
        "e" => {
            let Some((head, params)) = rest.split_first() else {
                return Err("`e` needs an event type: e.g. e tap left 1".into());
            };
            let (event_type, sub_type) = head.split_once(':').unwrap_or((head, ""));
            Ok(Some(Command::Send {
                event_type: event_type.to_string(),
                sub_type: sub_type.to_string(),
                params: params.iter().map(|p| p.to_string()).collect(),
            }))
        }
        "p" => match rest.as_slice() {
            [id] => Ok(Some(Command::Partner(id.to_string()))),
            _ => Err("`p` needs the partner's id: e.g. p 123456".into()),
        },
        "u" => bare(Command::Unassign),
        "a" => bare(Command::Active),
        "i" => bare(Command::Passive),
        "r" => bare(Command::Retry),
        "q" => bare(Command::Quit),
        _ => Err(format!(
            "unknown command `{}` (e, p, u, a, i, r or q, then Enter)",
            clip(word, 20)
        )),
    }
}

/// Carries out `command` (not [`Command::Quit`]): what was done, or why nothing was.
pub async fn execute(client: &PairingClient, command: &Command) -> Result<String, String> {
    let err = |e: PairingError| e.to_string();
    match command {
        Command::Send {
            event_type,
            sub_type,
            params,
        } => {
            client
                .send_event(event_type, sub_type, params.clone())
                .await
                .map_err(err)?;
            Ok(format!("{event_type} queued for the partner"))
        }
        Command::Partner(id) => {
            client.assign_partner(Some(id)).map_err(err)?;
            Ok(format!("partner {id} assigned"))
        }
        Command::Unassign => {
            client.assign_partner(None).map_err(err)?;
            Ok("partner unassigned".into())
        }
        Command::Active => {
            client.set_active(true).map_err(err)?;
            Ok("active".into())
        }
        Command::Passive => {
            client.set_active(false).map_err(err)?;
            Ok("passive".into())
        }
        Command::Retry => {
            client.retry().map_err(err)?;
            Ok("retrying".into())
        }
        Command::Quit => Ok("quitting".into()),
    }
}

/// One update as a JSON object (print it with [`json_line`]).
pub fn update_json(u: &PairingUpdate) -> Value {
    match u {
        PairingUpdate::StateChanged(s) => json!({"event": "state", "state": s.as_str()}),
        PairingUpdate::MetastatesChanged(m) => json!({"event": "metastates",
            "active": m.active, "connected": m.connected, "paired": m.paired}),
        PairingUpdate::PartnerChanged(p) => json!({"event": "partner", "partner": p}),
        PairingUpdate::Rejected { partner, sub_type } => {
            json!({"event": "rejected", "partner": partner, "subType": sub_type})
        }
        PairingUpdate::ClientIdChanged(id) => json!({"event": "client_id", "clientId": id}),
        PairingUpdate::AppEvent(e) => json!({"event": "app_event", "sender": e.sender,
            "eventType": e.event_type, "subType": e.sub_type, "params": e.params,
            "sendCt": e.send_ct, "receiveCt": e.receive_ct}),
        PairingUpdate::Welcome { app_id, client_id } => {
            json!({"event": "welcome", "appId": app_id, "clientId": client_id})
        }
        PairingUpdate::Aborted { reason } => {
            json!({"event": "aborted", "reason": reason.as_str()})
        }
        PairingUpdate::ConnectFailed { reason } => {
            json!({"event": "connect_failed", "reason": reason})
        }
        PairingUpdate::Disconnected { reason } => {
            json!({"event": "disconnected", "reason": reason})
        }
        PairingUpdate::Error(e) => {
            json!({"event": "error", "code": e.code.as_str(), "message": e.message})
        }
    }
}

/// One line for the view's recent events, made [`terminal_safe`] as a whole.
pub fn describe(u: &PairingUpdate) -> String {
    let line = match u {
        PairingUpdate::StateChanged(s) => format!("state: {}", s.as_str()),
        PairingUpdate::MetastatesChanged(m) => format!("metastates: {}", metastates(m)),
        PairingUpdate::PartnerChanged(Some(p)) => format!("partner: {p}"),
        PairingUpdate::PartnerChanged(None) => "partner: none".to_string(),
        PairingUpdate::Rejected { partner, sub_type } => {
            format!("rejected by {partner}: {sub_type}")
        }
        PairingUpdate::ClientIdChanged(id) => format!("your id: {id}"),
        PairingUpdate::AppEvent(e) => {
            let kind = if e.sub_type.is_empty() {
                e.event_type.clone()
            } else {
                format!("{}:{}", e.event_type, e.sub_type)
            };
            // Parameters may hold spaces: quoted, so the line says where each ends.
            let params: Vec<String> = e.params.iter().map(|p| format!("{p:?}")).collect();
            format!("{} sent {kind} {}", e.sender, params.join(" "))
                .trim_end()
                .to_string()
        }
        PairingUpdate::Welcome { app_id, client_id } => {
            format!("welcome to {app_id} as {client_id}")
        }
        PairingUpdate::Aborted { reason } => format!("aborted: {reason}"),
        PairingUpdate::ConnectFailed { reason } => format!("connect failed: {reason}"),
        PairingUpdate::Disconnected { reason } => format!("disconnected: {reason}"),
        PairingUpdate::Error(e) => format!("error {}: {}", e.code, e.message),
    };
    terminal_safe(&line).into_owned()
}

fn metastates(m: &loudsync_client::Metastates) -> String {
    let names: Vec<&str> = [
        (m.active, "active"),
        (m.connected, "connected"),
        (m.paired, "paired"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// The live view as text: app, role and id, state and metastates, partner, the recent
/// events and the commands. Every id and name is shown through [`terminal_safe`].
pub fn render(app: &str, role: RoleArg, s: &PairingSnapshot, recent: &VecDeque<String>) -> String {
    let state = s.state.unwrap_or(State::Passive);
    let role = match role {
        RoleArg::Controller => "controller",
        RoleArg::Responder => "responder",
    };
    let mut v = format!(
        "pairing app {}   role: {role}   you are {}",
        terminal_safe(app),
        terminal_safe(s.client_id.as_deref().unwrap_or("(no id yet)"))
    );
    v.push_str(&format!(
        "\nstate: {}   metastates: {}",
        state.as_str(),
        metastates(&state.metastates())
    ));
    let partner = match (&s.partner, &s.rejected) {
        (Some(p), Some(why)) => format!("{} (rejected: {})", terminal_safe(p), terminal_safe(why)),
        (Some(p), None) => terminal_safe(p).into_owned(),
        (None, _) => "none".to_string(),
    };
    v.push_str(&format!("\npartner: {partner}"));
    if let Some(reason) = s.aborted {
        v.push_str(&format!("\naborted: {reason} (r retries)"));
    }
    v.push_str("\n\nrecent:\n");
    for line in recent {
        v.push_str(&format!("  {}\n", terminal_safe(line)));
    }
    v.push_str(
        "\ncommands (type one, then Enter; Ctrl-C quits too):\n  \
         e TYPE[:SUB] [PARAM...] send | p ID partner | u unassign\n  \
         a active | i passive | r retry | q quit\n> ",
    );
    v
}

/// Where updates go: the live view or JSON lines.
struct Output {
    json: bool,
    app: String,
    role: RoleArg,
    recent: VecDeque<String>,
}

impl Output {
    fn new(json: bool, args: &PairArgs) -> Self {
        Output {
            json,
            app: args.app.clone(),
            role: args.role,
            recent: VecDeque::new(),
        }
    }

    fn update(&mut self, s: &PairingSnapshot, u: &PairingUpdate) {
        if self.json {
            print_line(&json_line(&update_json(u)));
            return;
        }
        self.push_recent(describe(u));
        self.redraw(s);
    }

    fn push_recent(&mut self, line: String) {
        self.recent.push_back(line);
        while self.recent.len() > 10 {
            self.recent.pop_front();
        }
    }

    fn command(&mut self, s: &PairingSnapshot, line: &str, outcome: Result<String, String>) {
        let input = line.trim();
        if self.json {
            let value = match &outcome {
                Ok(done) => json!({"event": "command", "input": input, "result": done}),
                Err(e) => json!({"event": "command_error", "input": input, "message": e}),
            };
            print_line(&json_line(&value));
            return;
        }
        let text = match outcome {
            Ok(done) => format!("> {}: {done}", clip(input, 40)),
            Err(e) => format!("> {}: {e}", clip(input, 40)),
        };
        self.push_recent(terminal_safe(&text).into_owned());
        self.redraw(s);
    }

    fn redraw(&mut self, s: &PairingSnapshot) {
        if self.json {
            return;
        }
        let mut stdout = std::io::stdout().lock();
        let _ = write!(
            stdout,
            "\x1b[H\x1b[2J{}",
            render(&self.app, self.role, s, &self.recent)
        );
        let _ = stdout.flush();
    }

    fn final_line(&mut self, value: Value, human: &str) {
        if self.json {
            print_line(&json_line(&value));
        } else {
            eprintln!("\n{}", terminal_safe(human));
        }
    }
}

/// At most `max` characters of `text`, with `…` when cut.
fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loudsync_client::ReceivedEvent;

    #[test]
    fn commands_parse() {
        assert_eq!(parse_command("  "), Ok(None));
        assert_eq!(
            parse_command("e tap:left 1 two"),
            Ok(Some(Command::Send {
                event_type: "tap".into(),
                sub_type: "left".into(),
                params: vec!["1".into(), "two".into()],
            }))
        );
        assert_eq!(
            parse_command("e score"),
            Ok(Some(Command::Send {
                event_type: "score".into(),
                sub_type: "".into(),
                params: vec![],
            }))
        );
        assert_eq!(
            parse_command("p 123456"),
            Ok(Some(Command::Partner("123456".into())))
        );
        assert_eq!(parse_command("q"), Ok(Some(Command::Quit)));
        assert_eq!(parse_command("i"), Ok(Some(Command::Passive)));
        assert!(parse_command("e").unwrap_err().contains("event type"));
        assert!(parse_command("p").unwrap_err().contains("partner's id"));
        assert!(parse_command("q now")
            .unwrap_err()
            .contains("takes nothing"));
        assert!(parse_command("zz").unwrap_err().contains("unknown command"));
    }

    fn hostile_event() -> PairingUpdate {
        PairingUpdate::AppEvent(ReceivedEvent {
            sender: "123456".into(),
            event_type: "tap".into(),
            sub_type: "".into(),
            params: vec!["\x1b[2J\u{202e}x".into(), "\u{9b}31m".into()],
            buffered: false,
            logged: false,
            interceptable: true,
            send_ct: Some(1),
            receive_ct: 2,
        })
    }

    #[test]
    fn what_a_peer_sends_is_escaped_in_the_view_and_in_json() {
        let u = hostile_event();
        let line = describe(&u);
        assert!(!line.contains('\x1b') && !line.contains('\u{202e}') && !line.contains('\u{9b}'));
        assert!(line.starts_with("123456 sent tap "), "{line}");
        let mut recent = VecDeque::new();
        recent.push_back(line);
        let view = render(
            "alpha",
            RoleArg::Responder,
            &PairingSnapshot::default(),
            &recent,
        );
        assert!(!view.contains('\u{202e}') && !view.contains('\u{9b}'));
        let json = json_line(&update_json(&u));
        assert!(!json.contains('\x1b') && !json.contains('\u{202e}') && !json.contains('\u{9b}'));
        let back: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            back["params"][0], "\x1b[2J\u{202e}x",
            "the same JSON, only escaped"
        );
    }

    #[test]
    fn the_view_shows_state_metastates_partner_and_abort() {
        let s = PairingSnapshot {
            state: Some(State::ReadyToPair),
            client_id: Some("111111".into()),
            partner: Some("222222".into()),
            rejected: Some("assignedToOther".into()),
            aborted: None,
        };
        let view = render("alpha", RoleArg::Controller, &s, &VecDeque::new());
        assert!(view.contains("pairing app alpha   role: controller   you are 111111"));
        assert!(view.contains("state: readyToPair   metastates: active, connected"));
        assert!(view.contains("partner: 222222 (rejected: assignedToOther)"));
        let s = PairingSnapshot {
            state: Some(State::ReadyToConnect),
            aborted: Some(AbortReason::ReleasedByOther),
            ..PairingSnapshot::default()
        };
        let view = render("alpha", RoleArg::Responder, &s, &VecDeque::new());
        assert!(view.contains("you are (no id yet)"));
        assert!(view.contains("aborted: releasedByOther (r retries)"));
    }

    #[test]
    fn an_abort_says_what_to_do() {
        let text = abort_text(AbortReason::NotAuthorized, "secret");
        assert_eq!(
            text,
            "app `secret` needs one of its tokens: give --token (notAuthorized)"
        );
    }
}
