//! Figures from /proc: a process's CPU time, and how many tasks the node has.
use std::fs;

use anyhow::Context as _;

/// utime + stime of process `pid` (all its threads), in seconds, from
/// /proc/PID/stat (clock ticks of `sysconf(_SC_CLK_TCK)`).
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let ticks = utime_plus_stime(&stat).with_context(|| format!("no utime/stime in {path}"))?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if per_second <= 0 {
        anyhow::bail!("sysconf(_SC_CLK_TCK) failed");
    }
    Ok(ticks as f64 / per_second as f64)
}

/// Fields 14 and 15 (utime, stime) of a /proc/PID/stat line. The command
/// name (field 2) may hold spaces and parentheses: fields are counted from
/// its last `)`.
fn utime_plus_stime(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // After the name: state is field 3, so utime (14) is the 12th here.
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Tasks (threads) on the node now: the total of /proc/loadavg's
/// `running/total` field.
pub fn node_tasks() -> anyhow::Result<u64> {
    let text = fs::read_to_string("/proc/loadavg").context("reading /proc/loadavg")?;
    loadavg_tasks(&text).with_context(|| format!("no task count in /proc/loadavg: {text:?}"))
}

fn loadavg_tasks(loadavg: &str) -> Option<u64> {
    loadavg
        .split_whitespace()
        .nth(3)?
        .split_once('/')?
        .1
        .parse()
        .ok()
}

/// Threads of process `pid` now.
pub fn threads(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/task")).map_or(0, Iterator::count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_after_an_awkward_name() {
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 37 0 0 20 0 3 0 1000 \
                    1000000 500 18446744073709551615";
        assert_eq!(utime_plus_stime(stat), Some(287));
        assert_eq!(utime_plus_stime("4242 (x) S 1"), None);
    }

    #[test]
    fn tasks_from_loadavg() {
        assert_eq!(loadavg_tasks("1.70 1.24 0.88 3/117 23273\n"), Some(117));
        assert_eq!(loadavg_tasks("garbage"), None);
    }
}
