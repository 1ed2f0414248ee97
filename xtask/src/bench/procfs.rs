//! Figures from /proc: a process's CPU time, and how many tasks the node has.
use std::{fs, path::Path};

use anyhow::Context as _;

/// CPU time of every task that ran in cgroup `dir` (v2), in seconds: its
/// `cpu.stat` `usage_usec`, which the kernel keeps for every cgroup from
/// each task's exact run time (microseconds, threads that exited included),
/// where /proc/PID/stat's utime + stime come in 10 ms clock ticks.
pub fn cgroup_cpu_seconds(dir: &Path) -> anyhow::Result<f64> {
    let path = dir.join("cpu.stat");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let usec = usage_usec(&text).with_context(|| format!("no usage_usec in {}", path.display()))?;
    Ok(usec as f64 / 1e6)
}

fn usage_usec(cpu_stat: &str) -> Option<u64> {
    cpu_stat.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == "usage_usec").then(|| value.trim().parse().ok())?
    })
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
    fn usage_from_cpu_stat() {
        let text = "usage_usec 1234567\nuser_usec 1000000\nsystem_usec 234567\n";
        assert_eq!(usage_usec(text), Some(1_234_567));
        assert_eq!(usage_usec("user_usec 5\n"), None);
    }

    #[test]
    fn tasks_from_loadavg() {
        assert_eq!(loadavg_tasks("1.70 1.24 0.88 3/117 23273\n"), Some(117));
        assert_eq!(loadavg_tasks("garbage"), None);
    }
}
