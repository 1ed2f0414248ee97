//! Per-program run time and run count, from the kernel's bpf_stats.
//!
//! The kernel only counts while bpf_stats is enabled (sysctl
//! kernel.bpf_stats_enabled=1, or a BPF_ENABLE_STATS fd held open, which
//! `--bpf.stats` does). Counting costs two clock reads per program run.
use std::{fs, os::fd::OwnedFd, time::Duration};

use super::probes::{Probes, program_names};

#[derive(Debug, Clone, Default)]
pub struct ProgramStats {
    pub name: &'static str,
    pub run_time: Duration,
    pub run_count: u64,
}

/// Keeps bpf_stats enabled while alive.
pub struct StatsGuard(#[allow(dead_code)] OwnedFd);

pub fn enable() -> Result<StatsGuard, aya::sys::SyscallError> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime).map(StatsGuard)
}

/// Whether the sysctl kernel.bpf_stats_enabled is on (an fd held by some
/// process also makes the kernel count, but does not show here).
pub fn enabled() -> bool {
    fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|v| v.trim() == "1")
}

pub fn read(probes: &Probes) -> Vec<ProgramStats> {
    program_names()
        .filter_map(|name| {
            let info = probes.program_info(name)?;
            Some(ProgramStats {
                name,
                run_time: info.run_time(),
                run_count: info.run_count(),
            })
        })
        .collect()
}
