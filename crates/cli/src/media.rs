//! `loudsync media serve` and `loudsync media recv` (issue 13 §7, D29-D32): a UDP media
//! stream for network testing, like ctsTraffic's media stream.
//!
//! `serve` binds a UDP socket and runs the standalone responder
//! ([`loudsync_server::media::standalone`]) until SIGINT or SIGTERM: every receiver that
//! completes the 3-way handshake (START, START_ACK, START_CONFIRM) gets a synthetic stream
//! paced at `--fps` frames of `--bitrate / 8 / --fps` bytes for `--duration`.
//!
//! `recv` is the initiator ([`loudsync_client::media::receiver`]): it does the handshake,
//! classifies every frame at its render time (success, dropped, duplicate), optionally writes
//! the per-frame CSV (D30), and prints the summary line (D32) last. Both ends must be given the
//! same `--bitrate`, `--fps`, `--datagram-size` and `--duration` (they are not negotiated).
//!
//! Exit codes of `recv`, as `loudsync join`'s: 0 received (loss included), 5 no answer
//! (`media recv: no answer` on stderr), 6 refused (`media recv: error CODE NAME`); for both
//! commands 1 for an invalid setting (`Error: ...`) and 2 for a command line clap cannot parse.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use loudsync_client::media::host_monotonic_origin;
use loudsync_client::media::receiver::{receive_with, StartMode};
use loudsync_core::media::initiator::{InitiatorConfig, Outcome, Summary, CSV_HEADER};
use loudsync_core::media::responder::{frame_count, DEFAULT_MAX_STREAMS};
use loudsync_protocol::media::{ErrorCode, StreamId, StreamParams, MAX_STREAM_ID_LEN};
use loudsync_server::media::standalone::{StandaloneConfig, StandaloneServer};
use loudsync_server::media::udp::Batching;

/// `loudsync media`.
#[derive(Args)]
pub struct MediaArgs {
    #[command(subcommand)]
    command: MediaCommand,
}

#[derive(Subcommand)]
enum MediaCommand {
    /// Stream a synthetic pattern to every receiver that completes the handshake.
    ///
    /// Runs until SIGINT (Ctrl-C) or SIGTERM; each receiver gets its own stream of
    /// --duration. Prints `loudsync media listening on udp://IP:PORT` once bound.
    ///
    /// Exit codes: 0 stopped by a signal, 1 invalid setting or the address cannot be bound,
    /// 2 unusable command line.
    ///
    /// Datagrams are sent and received in batches (sendmmsg/recvmmsg on Linux); set
    /// LOUDSYNC_MEDIA_BATCHING=off for one system call per datagram (to measure the
    /// difference).
    Serve(ServeArgs),
    /// Receive a stream from `media serve`, measure it, and print a summary.
    ///
    /// Give it the same --bitrate, --fps, --datagram-size and --duration as the server. The
    /// last line on stdout is `summary expected=N success=S dropped=D duplicate=U jitter_ms=J
    /// tif_ms=T handshake_ms=H`.
    ///
    /// Exit codes: 0 the stream was received (loss included), 1 invalid setting, 2 unusable
    /// command line, 5 no answer (no START_ACK after the retries, or no data by the end of
    /// --buffer-depth), 6 refused by the server (the error code and name are printed).
    Recv(RecvArgs),
}

/// The stream's shape: both ends must be given the same values.
#[derive(Args)]
struct StreamArgs {
    /// Bits per second of the stream, headers included (a frame is bitrate / 8 / fps bytes,
    /// at least 40).
    #[arg(long, value_name = "BPS")]
    bitrate: u64,
    /// Frames per second (at least 1); frame n is due n/fps seconds after the first.
    #[arg(long, value_name = "N")]
    fps: u32,
    /// Largest UDP datagram, bytes (64..65507); a larger frame is split into several.
    #[arg(long, value_name = "B", default_value_t = 1400)]
    datagram_size: usize,
    /// Length of each stream, e.g. `2s` or `1500ms` (round(duration x fps) frames).
    #[arg(long, value_name = "DUR", value_parser = duration)]
    duration: Duration,
    /// The stream's name (1 to 64 printable ASCII characters, no spaces); a receiver asking
    /// for another is refused with error 3 UNKNOWN_STREAM.
    #[arg(long, value_name = "ID", default_value = "synthetic")]
    stream_id: String,
    /// Use upstream ctsTraffic's one-way 5-byte START: `serve` also accepts it (it
    /// amplifies: for compatibility tests only), `recv` sends it instead of the handshake.
    #[arg(long)]
    legacy_start: bool,
    /// Log filter, e.g. `info` or `loudsync_server=debug` (logs go to stderr).
    #[arg(
        long,
        env = "LOUDSYNC_LOG",
        default_value = "info",
        value_name = "FILTER"
    )]
    log: String,
}

/// `loudsync media serve`.
#[derive(Args)]
struct ServeArgs {
    /// UDP address to listen on.
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:4444")]
    listen: SocketAddr,
    #[command(flatten)]
    stream: StreamArgs,
    /// Receivers handshaking or streaming at once; one more is refused with error 5
    /// REFUSED.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_STREAMS)]
    max_streams: usize,
    /// How long a receiver's place is held between its START and its START_CONFIRM.
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = duration)]
    confirm_timeout: Duration,
}

/// `loudsync media recv`.
#[derive(Args)]
struct RecvArgs {
    /// The server's UDP address (a host name is resolved; the first address is used).
    #[arg(long, value_name = "HOST:PORT")]
    connect: String,
    #[command(flatten)]
    stream: StreamArgs,
    /// Play-out delay: each frame is judged this long after it was due, and the stream is
    /// given up when no data arrived this long after the handshake.
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = duration)]
    buffer_depth: Duration,
    /// Write one CSV row per expected frame to FILE (seq, sender and receiver counters,
    /// time in flight, jitter).
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// Wait this long for an answer before the first resend (doubling after each).
    #[arg(long, value_name = "DUR", default_value = "500ms", value_parser = duration)]
    retry_initial: Duration,
    /// The longest wait between resends.
    #[arg(long, value_name = "DUR", default_value = "2s", value_parser = duration)]
    retry_max: Duration,
    /// How many times START (and START_CONFIRM) is sent before giving up.
    #[arg(long, value_name = "N", default_value_t = 3)]
    retry_attempts: u32,
}

/// A humantime duration (`2s`, `1500ms`); a bare number is refused.
fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (write e.g. 500ms, 2s)"))
}

/// Runs `loudsync media ...`.
pub fn run(args: MediaArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        MediaCommand::Serve(args) => serve(args).map(|()| ExitCode::SUCCESS),
        MediaCommand::Recv(args) => recv(args),
    }
}

/// Logs on stderr, colour codes only for a person at a terminal (as `serve`).
fn init_logging(filter: &str) {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(&args.stream.log);
    let config = StandaloneConfig {
        listen: args.listen,
        bitrate: args.stream.bitrate,
        fps: args.stream.fps,
        datagram_size: args.stream.datagram_size,
        duration: args.stream.duration,
        stream_id: args.stream.stream_id,
        max_streams: args.max_streams,
        confirm_timeout: args.confirm_timeout,
        legacy_start: args.stream.legacy_start,
        batching: Batching::from_env(),
        clock_origin: Some(host_monotonic_origin()),
    };
    config.validate().map_err(anyhow::Error::msg)?;
    let runtime = crate::serve::runtime(1)?;
    runtime.block_on(async move {
        let signalled = crate::serve::shutdown_signal()?;
        let server = StandaloneServer::bind(&config)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        println!("loudsync media listening on udp://{}", server.local_addr()?);
        server.run(signalled).await?;
        Ok(())
    })
}

fn recv(args: RecvArgs) -> anyhow::Result<ExitCode> {
    init_logging(&args.stream.log);
    let stream = &args.stream;
    let params = StreamParams::new(stream.bitrate, stream.fps, stream.datagram_size)
        .map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        !stream.duration.is_zero(),
        "--duration must be more than 0 (write e.g. 2s or 1500ms)"
    );
    let stream_id = StreamId::new(stream.stream_id.clone()).with_context(|| {
        format!("--stream-id must be 1 to {MAX_STREAM_ID_LEN} printable ASCII characters without spaces")
    })?;
    anyhow::ensure!(
        !args.retry_initial.is_zero(),
        "--retry-initial must be more than 0"
    );
    anyhow::ensure!(
        args.retry_max >= args.retry_initial,
        "--retry-max must be at least --retry-initial"
    );
    anyhow::ensure!(
        args.retry_attempts >= 1,
        "--retry-attempts must be at least 1"
    );
    let frames = frame_count(stream.duration, stream.fps);
    let mut config = InitiatorConfig::new(stream_id, params, stream.fps, Some(frames));
    config.retry_initial = args.retry_initial;
    config.retry_max = args.retry_max;
    config.retry_attempts = args.retry_attempts;
    config.buffer_depth = args.buffer_depth;
    // The receiver's counter defaults to the host's monotonic clock, as the sender's (D22, D30).
    let mut csv = match &args.csv {
        Some(path) => {
            let file = File::create(path)
                .with_context(|| format!("cannot write --csv {}", path.display()))?;
            let mut w = BufWriter::new(file);
            writeln!(w, "{CSV_HEADER}")?;
            Some(w)
        }
        None => None,
    };
    let mode = if stream.legacy_start {
        StartMode::Legacy
    } else {
        StartMode::Handshake
    };
    let runtime = crate::serve::runtime(1)?;
    let mut write_error = None;
    let received = runtime.block_on(async {
        let server = tokio::net::lookup_host(&args.connect)
            .await
            .with_context(|| format!("cannot resolve --connect {}", args.connect))?
            .next()
            .with_context(|| format!("--connect {} has no address", args.connect))?;
        let on_frame = |frame: loudsync_core::media::initiator::FrameRecord| {
            if let Some(w) = csv.as_mut() {
                if let Err(e) = writeln!(w, "{}", frame.csv_row()) {
                    write_error.get_or_insert(e);
                }
            }
        };
        receive_with(server, config, mode, on_frame, std::future::pending())
            .await
            .context("media recv: socket error")
    })?;
    if let Some(w) = csv.as_mut() {
        let flushed = w.flush();
        if let Some(e) = write_error.take().map(Err).unwrap_or(flushed).err() {
            return Err(e).context("cannot write the --csv file");
        }
    }
    let outcome = received.outcome.unwrap_or(Outcome::NoStartAck);
    match outcome {
        Outcome::Finished => println!("{}", summary_line(&received.summary)),
        Outcome::NoStartAck | Outcome::NoData => eprintln!("media recv: no answer"),
        Outcome::Refused(code) => {
            let name = ErrorCode::from_code(code).map_or("UNKNOWN", ErrorCode::name);
            eprintln!("media recv: error {code} {name}");
        }
    }
    Ok(ExitCode::from(outcome.exit_code() as u8))
}

/// The D32 summary line.
fn summary_line(s: &Summary) -> String {
    format!(
        "summary expected={} success={} dropped={} duplicate={} jitter_ms={:.3} tif_ms={:.3} handshake_ms={:.3}",
        s.expected,
        s.success,
        s.dropped,
        s.duplicate,
        s.jitter_ms,
        s.tif_ms,
        s.handshake_ms.unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_line_has_three_decimals_and_the_d32_order() {
        let s = Summary {
            expected: 100,
            success: 98,
            dropped: 1,
            duplicate: 1,
            jitter_ms: 0.12345,
            tif_ms: 0.5,
            handshake_ms: Some(1.0),
            ..Summary::default()
        };
        assert_eq!(
            summary_line(&s),
            "summary expected=100 success=98 dropped=1 duplicate=1 jitter_ms=0.123 tif_ms=0.500 handshake_ms=1.000"
        );
    }
}
