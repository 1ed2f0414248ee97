//! The walk's floor: the empty task iterator `bench_task_iter_floor` from the
//! daemon's own object, run from xtask over every task of the node. What it
//! costs is the walk itself (the kernel's iteration and one empty program run
//! per task, with bpf_stats' clock reads), against which the daemon's
//! iterator (a visit that reads the task's cgroup, and credits job tasks)
//! is measured.
use std::{
    io::{self, Read as _},
    os::fd::OwnedFd,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::{Btf, Ebpf, EbpfLoader, programs::Iter};

use super::bpf_stats::RunStats;

const PROGRAM: &str = "bench_task_iter_floor";

pub struct WalkFloor {
    ebpf: Ebpf,
    // Keeps bpf_stats counting while the floor is measured.
    _stats: OwnedFd,
}

impl WalkFloor {
    pub fn load(object: &Path) -> anyhow::Result<Self> {
        let stats =
            aya::sys::enable_stats(aya::sys::Stats::RunTime).context("enabling bpf_stats")?;
        let btf = Btf::from_sys_fs().context("reading the kernel's BTF")?;
        // The object's globals keep their placeholder values: the floor reads none.
        let mut ebpf = EbpfLoader::new()
            .load_file(object)
            .with_context(|| format!("loading {}", object.display()))?;
        let program: &mut Iter = ebpf
            .program_mut(PROGRAM)
            .with_context(|| format!("{PROGRAM} missing from {}", object.display()))?
            .try_into()
            .with_context(|| format!("{PROGRAM} is not an iterator program"))?;
        program
            .load("task", &btf)
            .with_context(|| format!("loading {PROGRAM}"))?;
        Ok(Self {
            ebpf,
            _stats: stats,
        })
    }

    /// One walk over every task; how long reading the iterator took.
    pub fn walk(&mut self) -> anyhow::Result<Duration> {
        let program: &mut Iter = self
            .ebpf
            .program_mut(PROGRAM)
            .with_context(|| format!("{PROGRAM} vanished"))?
            .try_into()
            .with_context(|| format!("{PROGRAM} is not an iterator program"))?;
        let id = program
            .attach()
            .with_context(|| format!("attaching {PROGRAM}"))?;
        let link = program
            .take_link(id)
            .with_context(|| format!("taking the link of {PROGRAM}"))?;
        let start = Instant::now();
        let mut file = link
            .into_file()
            .with_context(|| format!("creating an iterator of {PROGRAM}"))?;
        let mut buffer = [0u8; 256];
        loop {
            match file.read(&mut buffer) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).with_context(|| format!("running {PROGRAM}")),
            }
        }
        Ok(start.elapsed())
    }

    pub fn stats(&self) -> anyhow::Result<RunStats> {
        RunStats::of(&self.ebpf, PROGRAM)
    }
}
