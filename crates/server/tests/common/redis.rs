//! A real `redis-server` for tests: its own process on a free loopback port, in its own
//! temporary directory, never the machine's Redis (6379) nor one shared with another test.
//!
//! [`RedisServer::start`] picks a port (binds `127.0.0.1:0`, reads the port, lets it go),
//! starts `redis-server --port P --bind 127.0.0.1 --dir D --save ""` (no RDB snapshots;
//! `--appendonly yes` if asked) and returns once it answers `PING`. A test can then
//! [`RedisServer::stop`] it (`SHUTDOWN NOSAVE`, which still flushes the append-only file),
//! [`RedisServer::kill`] it (`SIGKILL`: whatever was not yet fsynced is lost), and
//! [`RedisServer::start_again`] on the same port and directory, which is what a Redis restart
//! looks like to its clients. Dropping it kills the process and removes the directory.
//!
//! Everything here is blocking (std process and sockets) and quick, so it may be called from
//! async tests; the longest wait is a start (a few tens of milliseconds).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a start may take before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a stop may take before the process is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// How a test Redis runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct RedisOptions {
    /// `--appendonly yes` (fsync every second, Redis's default): what a stop leaves in the
    /// directory is there again after [`RedisServer::start_again`]. Off: a restart is empty.
    pub appendonly: bool,
}

/// One `redis-server` process owned by a test.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    options: RedisOptions,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a Redis on a free loopback port in a fresh directory; returns once it answers.
    /// Panics (failing the test) if `redis-server` is missing or does not come up.
    pub fn start(options: RedisOptions) -> RedisServer {
        let dir = fresh_dir();
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut server = RedisServer {
                port,
                dir: dir.clone(),
                options,
                child: None,
            };
            match server.spawn() {
                Ok(()) => return server,
                // Someone took the port between our probe and Redis's bind: pick another.
                Err(error) => last_error = error,
            }
        }
        panic!("redis-server did not start: {last_error}");
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The port it listens on (the same after [`RedisServer::start_again`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its working directory (the append-only file is in there).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the process is running (as far as this handle knows).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Stops it cleanly: `SHUTDOWN NOSAVE` (no RDB; the append-only file, if on, is flushed),
    /// and waits for the process to end (killing it if it does not).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // The connection is closed by the shutdown itself, so no reply is expected.
        let _ = send_command(self.port, "SHUTDOWN NOSAVE\r\n");
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Kills it at once (`SIGKILL`), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory (after [`RedisServer::stop`] or
    /// [`RedisServer::kill`]); returns once it answers.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "start_again while it is running");
        // The old listening socket is gone with the process; a fresh bind can race only with
        // another program taking the port, which would fail loudly here.
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(error) if Instant::now() >= deadline => {
                    panic!(
                        "redis-server did not start again on port {}: {error}",
                        self.port
                    )
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Starts the process and waits until it answers `PING`.
    fn spawn(&mut self) -> Result<(), String> {
        let log = self.dir.join("redis.log");
        let mut command = Command::new("redis-server");
        command
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg(if self.options.appendonly { "yes" } else { "no" })
            .arg("--daemonize")
            .arg("no")
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot run redis-server (is it installed?): {e}"))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!(
                    "redis-server exited with {status}; its log:\n{log}"
                ));
            }
            if send_command(self.port, "PING\r\n").is_ok_and(|reply| reply.starts_with("+PONG")) {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "no PONG on port {} within {START_TIMEOUT:?}",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends one inline command and reads what comes back (up to 256 bytes).
fn send_command(port: u16, command: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.write_all(command.as_bytes())?;
    let mut reply = [0u8; 256];
    let read = stream.read(&mut reply)?;
    Ok(String::from_utf8_lossy(&reply[..read]).into_owned())
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("its address").port()
}

/// A new empty directory under the system's temp dir, unique to this process and call.
fn fresh_dir() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "loudsync-redis-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("create the Redis directory");
    dir
}
