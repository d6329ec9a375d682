//! The `loudsync` binary: parses the command line and runs the chosen command.

mod bench;
mod discover;
mod live;
mod media;
mod pair;
mod serve;
mod token;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// LoudSync: a real-time session server for apps that span several devices.
///
/// Hosts open sessions over WebSocket (JSON), members join, everybody sees who is there and
/// how well connected they are. One binary, in-memory by default.
#[derive(Parser)]
#[command(name = "loudsync", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (WebSocket on `/` and `/ws`, HTTP API beside it).
    ///
    /// Settings come from flags, then `LOUDSYNC_*` environment variables, then the TOML file
    /// given by --config (keys as the flag names, e.g. `heartbeat-timeout = "15s"`), then the
    /// defaults shown below.
    Serve(Box<serve::ServeArgs>),
    /// Open a session as its host and watch it live (Ctrl-C ends the session).
    ///
    /// Without --session the server opens a new session with a fresh code (printed as e.g.
    /// A1B-2C3; others join with `loudsync join --session A1B-2C3`). The view shows who
    /// controls the session, the term, the state and its version, and who is ready to take
    /// control. Commands on stdin, a letter then Enter: `h` hand off (to the member ready
    /// first), `h <name or id>` hand off to that member, `s <json>` set the state, `p <json>`
    /// merge-patch it, `q` end the session.
    ///
    /// Exit codes: 0 left, 2 unusable command line (not a ws:// or wss:// URL, unreadable
    /// --ca file), 3 kicked, 4 session closed (for a host also: its connection was lost, which
    /// ended the session), 5 could not connect (or reconnection failed), 6 join rejected (the
    /// code is printed, with what to do about it).
    Host(live::HostArgs),
    /// Join a session and watch it live (Ctrl-C leaves).
    ///
    /// --session takes a code as shown (A1B-2C3) or typed (a1b2c3). The view shows who
    /// controls the session, the term, the state and its version, and who is ready. Commands
    /// on stdin, a letter then Enter: `r` declare (or withdraw) readiness to take control,
    /// `a` / `d` accept or decline when the host asks you to take control, `q` leave; once in
    /// control, the host's commands (`h`, `s`, `p`).
    ///
    /// Exit codes: 0 left, 2 unusable command line (not a ws:// or wss:// URL, unreadable
    /// --ca file), 3 kicked, 4 session closed (for a host also: its connection was lost, which
    /// ended the session), 5 could not connect (or reconnection failed), 6 join rejected (the
    /// code is printed, with what to do about it).
    Join(live::JoinArgs),
    /// Pair as a controller or a responder (CRSocket pairing) and watch the state machine.
    ///
    /// Connects to /crsocket/APP/ws on the server of --url (LOUDSYNC_URL, default
    /// ws://127.0.0.1:8080/). The view shows this client's id, the state (passive ...
    /// interacting) and metastates, the partner and the events. Commands on stdin, then
    /// Enter: `e TYPE[:SUBTYPE] [PARAM...]` send an event to the partner, `p ID` assign the
    /// partner, `u` unassign it, `a` / `i` active / passive, `r` retry after an abort, `q` quit.
    /// Without --token the token `open` is sent, which an open app accepts.
    ///
    /// Exit codes: 0 quit (q or Ctrl-C), 2 unusable command line, 5 could not connect, 6 the
    /// identify was refused or the server aborted the connection (the reason is printed).
    Pair(pair::PairArgs),
    /// Find sessions on the LAN (LOUDSYNC_DISCOVER over UDP, and mDNS), as the app does.
    Discover(discover::DiscoverArgs),
    /// Mint a signed join token (for scripts and tests); prints it on stdout.
    ///
    /// Sign with the server's HS256 secret (--key, LOUDSYNC_TOKEN_KEY, or --key-file), or with
    /// the private key whose public half the server has in --token-key-file.
    Token(token::TokenArgs),
    /// Stream UDP media for network testing: `media serve` sends, `media recv` measures.
    ///
    /// A synthetic stream at --bitrate and --fps after a 3-way handshake; the receiver
    /// counts each frame as received, dropped or duplicated and reports jitter and time in
    /// flight (per frame with --csv). Standalone: no session server is involved.
    Media(media::MediaArgs),
    /// Load-test a server with many real WebSocket members and report the figures.
    Bench(bench::BenchArgs),
    /// Internal: one worker process of `loudsync bench`.
    #[command(hide = true)]
    BenchWorker,
    /// Internal: the bare echo floor `loudsync bench idle --floor` measures against (answers
    /// `join` and `ping`, nothing else). A measuring instrument, not a server.
    #[command(hide = true)]
    BenchFloor {
        /// Address to listen on (loopback).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// Threads, as `serve --worker-threads` (0: one per core; 1: one thread).
        #[arg(long, default_value_t = 0)]
        worker_threads: usize,
    },
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve::run(*args).map(|()| ExitCode::SUCCESS),
        Command::Host(args) => live::host(args),
        Command::Join(args) => live::join(args),
        Command::Pair(args) => pair::run(args),
        Command::Discover(args) => discover::run(args).map(|()| ExitCode::SUCCESS),
        Command::Token(args) => token::run(args).map(|()| ExitCode::SUCCESS),
        Command::Media(args) => media::run(args),
        Command::Bench(args) => bench::run(args).map(|()| ExitCode::SUCCESS),
        Command::BenchWorker => bench::worker::run().map(|()| ExitCode::SUCCESS),
        Command::BenchFloor {
            listen,
            worker_threads,
        } => bench_floor(listen, worker_threads).map(|()| ExitCode::SUCCESS),
    }
}

/// Runs the echo floor on `listen` until killed, on the same kind of runtime as `serve`.
fn bench_floor(listen: std::net::SocketAddr, worker_threads: usize) -> anyhow::Result<()> {
    let runtime = serve::runtime(worker_threads)?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        println!(
            "loudsync floor listening on http://{}",
            listener.local_addr()?
        );
        loudsync_server::floor::serve(listener).await?;
        Ok(())
    })
}
