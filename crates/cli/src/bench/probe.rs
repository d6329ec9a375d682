//! Reads a process's resident memory and CPU time from `/proc` (Linux), for server-side figures.

use std::time::Duration;

/// One reading of a process.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Resident set size, bytes.
    pub rss_bytes: u64,
    /// User + system CPU time consumed so far.
    pub cpu: Duration,
}

/// Reads `/proc/PID/status` (VmRSS) and `/proc/PID/stat` (utime + stime).
pub fn sample(pid: u32) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let hz = clock_ticks_per_second();
    Some(Sample {
        rss_bytes: rss_kib * 1024,
        cpu: Duration::from_secs_f64(ticks as f64 / hz as f64),
    })
}

fn clock_ticks_per_second() -> u64 {
    // USER_HZ is 100 on every Linux architecture we run on.
    100
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_process() {
        let s = sample(std::process::id()).expect("sample self");
        assert!(s.rss_bytes > 100 * 1024);
    }
}
