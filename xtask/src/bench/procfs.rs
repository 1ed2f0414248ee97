//! Figures from /proc: how many tasks the node and a process have.
use std::fs;

use anyhow::Context as _;

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
    fn tasks_from_loadavg() {
        assert_eq!(loadavg_tasks("1.70 1.24 0.88 3/117 23273\n"), Some(117));
        assert_eq!(loadavg_tasks("garbage"), None);
    }
}
