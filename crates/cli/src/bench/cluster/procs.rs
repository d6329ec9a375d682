//! The processes of `bench cluster`: a `redis-server` of its own on a free loopback port (no
//! persistence, removed at the end) and `loudsync serve` nodes in cluster mode on it, plus the
//! one Redis command the bench needs (`INFO`), spoken in RESP over a plain TCP socket.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::super::{probe, spawn_server, SpawnedServer};

/// A `redis-server` started for the run; killed and its folder removed on drop.
pub struct Redis {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Redis {
    /// Starts `binary` on 127.0.0.1 and a free port, without persistence; returns once it
    /// answers `PING`.
    pub fn start(binary: &str) -> anyhow::Result<Redis> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = std::env::temp_dir().join(format!(
            "loudsync-bench-redis-{}-{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir)?;
        let child = Command::new(binary)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| {
                format!("start `{binary}` (install redis-server, or --redis-server PATH)")
            })?;
        let redis = Redis { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while command(port, &["PING"])
            .map(|r| r != "PONG")
            .unwrap_or(true)
        {
            if Instant::now() > deadline {
                bail!("redis-server on port {port} did not answer PING within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(redis)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its CPU time so far (from `/proc`).
    pub fn cpu(&self) -> Duration {
        probe::sample(self.child.id()).map_or(Duration::ZERO, |s| s.cpu)
    }

    /// `INFO stats`' `total_commands_processed`.
    pub fn commands(&self) -> anyhow::Result<u64> {
        let info = command(self.port, &["INFO", "stats"])?;
        info.lines()
            .find_map(|l| l.strip_prefix("total_commands_processed:"))
            .and_then(|v| v.trim().parse().ok())
            .context("INFO stats without total_commands_processed")
    }
}

impl Redis {
    /// Sessions the cluster lists (`SCARD ls:sessions`), 0 if unknown.
    pub fn sessions(&self) -> u64 {
        command(self.port, &["SCARD", "ls:sessions"])
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// `INFO commandstats`: calls so far by command (lowercase), counting the commands that
    /// scripts run as well as the scripts' own `evalsha`.
    pub fn calls(&self) -> BTreeMap<String, u64> {
        let Ok(info) = command(self.port, &["INFO", "commandstats"]) else {
            return BTreeMap::new();
        };
        info.lines()
            .filter_map(|l| {
                let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = rest
                    .strip_prefix("calls=")?
                    .split(',')
                    .next()?
                    .parse()
                    .ok()?;
                Some((name.to_string(), calls))
            })
            .collect()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One command on a fresh connection; the answer of a simple (`+`) or bulk (`$`) reply.
fn command(port: u16, args: &[&str]) -> anyhow::Result<String> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request = format!("*{}\r\n", args.len());
    for a in args {
        request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    tcp.write_all(request.as_bytes())?;
    let mut reader = BufReader::new(tcp);
    let mut first = String::new();
    reader.read_line(&mut first)?;
    let first = first.trim_end();
    match first.as_bytes().first() {
        Some(b'+' | b':') => Ok(first[1..].to_string()),
        Some(b'$') => {
            let len: usize = first[1..].parse().context("bulk length")?;
            let mut body = vec![0; len];
            reader.read_exact(&mut body)?;
            Ok(String::from_utf8_lossy(&body).into_owned())
        }
        _ => bail!("redis answered {first:?}"),
    }
}

/// A `loudsync serve` node in cluster mode.
pub struct Node {
    /// Its node id.
    pub id: String,
    server: SpawnedServer,
}

impl Node {
    /// Starts this binary as node `id` on `redis_url` with the given lease and poll, and the
    /// bench's usual server settings plus `extra`.
    pub fn start(
        id: &str,
        redis_url: &str,
        lease: Duration,
        poll: Duration,
        extra: &[String],
    ) -> anyhow::Result<Node> {
        let mut args: Vec<String> = [
            "--redis",
            redis_url,
            "--node-id",
            id,
            "--lease",
            &humantime::format_duration(lease).to_string(),
            "--cluster-poll",
            &humantime::format_duration(poll).to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().cloned());
        let server = spawn_server(&args).with_context(|| format!("start node {id}"))?;
        Ok(Node {
            id: id.to_string(),
            server,
        })
    }

    /// A plain server (no Redis), for the single-node column.
    pub fn single(extra: &[String]) -> anyhow::Result<Node> {
        Ok(Node {
            id: "single".into(),
            server: spawn_server(extra)?,
        })
    }

    /// Its listening address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// Its CPU time so far.
    pub fn cpu(&self) -> Duration {
        probe::sample(self.server.child.id()).map_or(Duration::ZERO, |s| s.cpu)
    }

    /// `SIGKILL`, as a crash; reaps the process.
    pub fn kill9(mut self) {
        let _ = self.server.child.kill();
        let _ = self.server.child.wait();
    }
}
