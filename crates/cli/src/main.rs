//! The `loudsync` binary: parses the command line and runs the chosen command.

mod bench;
mod serve;

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
    Serve(serve::ServeArgs),
    /// Load-test a server with many real WebSocket members and report the figures.
    Bench(bench::BenchArgs),
    /// Internal: one worker process of `loudsync bench`.
    #[command(hide = true)]
    BenchWorker,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Bench(args) => bench::run(args),
        Command::BenchWorker => bench::worker::run(),
    }
}
