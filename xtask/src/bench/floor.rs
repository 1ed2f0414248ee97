//! The floor: the empty `bench_floor` program from the daemon's own object,
//! attached to the sched_switch raw tracepoint next to the daemon's
//! programs: a reference for what a program run costs at the least (the
//! hook and bpf_stats' own clock reads), and, by its runs, a count of the
//! context switches in a window. Dropping it detaches it.
use std::{os::fd::OwnedFd, path::Path};

use anyhow::Context as _;
use aya::{Ebpf, EbpfLoader, programs::RawTracePoint};

use super::bpf_stats::RunStats;

pub const PROGRAM: &str = "bench_floor";
pub const HOOK: &str = "sched_switch";

pub struct Floor {
    ebpf: Ebpf,
    // Keeps bpf_stats counting for as long as the floor is measured, whatever
    // the daemon does with its own switch.
    _stats: OwnedFd,
}

impl Floor {
    pub fn attach(object: &Path) -> anyhow::Result<Self> {
        let stats =
            aya::sys::enable_stats(aya::sys::Stats::RunTime).context("enabling bpf_stats")?;
        // The object's globals keep their placeholder values: the floor reads none.
        let mut ebpf = EbpfLoader::new()
            .load_file(object)
            .with_context(|| format!("loading {}", object.display()))?;
        let program: &mut RawTracePoint = ebpf
            .program_mut(PROGRAM)
            .with_context(|| format!("{PROGRAM} missing from {}", object.display()))?
            .try_into()
            .with_context(|| format!("{PROGRAM} is not a raw tracepoint program"))?;
        program
            .load()
            .with_context(|| format!("loading {PROGRAM}"))?;
        program
            .attach(HOOK)
            .with_context(|| format!("attaching {PROGRAM} to the raw tracepoint {HOOK}"))?;
        Ok(Self {
            ebpf,
            _stats: stats,
        })
    }

    /// Every program in the object (the daemon's and this one).
    pub fn object_programs(&self) -> Vec<String> {
        self.ebpf
            .programs()
            .map(|(name, _)| name.to_string())
            .collect()
    }

    pub fn stats(&self) -> anyhow::Result<RunStats> {
        RunStats::of(&self.ebpf, PROGRAM)
    }
}
