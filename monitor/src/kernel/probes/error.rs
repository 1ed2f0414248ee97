//! What can go wrong loading, attaching, pinning and running the programs.
use std::path::PathBuf;

use monitor_common::{CGROUP_PROBES, ROOT_PREFIX_MAX};
use thiserror::Error;

use crate::kernel::{
    changed_flags::ChangedFlagsError, counters::CountersError, pins, task_iter::IterError,
};

#[derive(Debug, Error)]
pub enum ProbeError {
    #[error(transparent)]
    ChangedFlags(#[from] ChangedFlagsError),
    #[error(
        "the daemon was built without its kernel programs (the eBPF toolchain was missing). \
         Rebuild with `cargo xtask build-ebpf` (or `cargo xtask run`)"
    )]
    EmptyObject,
    #[error("the monitored cgroup root's path is longer than {ROOT_PREFIX_MAX} bytes: {0}")]
    RootTooLong(String),
    #[error("loading the kernel programs: {0}")]
    Load(#[source] aya::EbpfError),
    #[error("kernel program {0} is missing from the object")]
    MissingProgram(&'static str),
    #[error("map {0} is missing from the object")]
    MissingMap(&'static str),
    #[error("loading program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("at least one task must be tracked (--bpf.max-tasks), not {0}")]
    TaskMap(u32),
    #[error("the number of cgroup slots must be a power of two, at least {CGROUP_PROBES}, not {0}")]
    CgroupSlots(u32),
    #[error(transparent)]
    Counters(#[from] CountersError),
    #[error(
        "attaching {program} to the raw tracepoint {tracepoint}: {source} \
         (the scheduler programs need Linux 5.18 or newer)"
    )]
    RawTracepoint {
        program: &'static str,
        tracepoint: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("opening the cgroup v2 root {path} for the network programs: {source}")]
    CgroupRoot {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pinning {what} at {path}")]
    Pin {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error(
        "the link of {program} cannot be pinned: this kernel has no BPF links for it \
         (Linux 5.15 or newer has); run with --bpf.pin-path= to keep the programs in the daemon"
    )]
    Link {
        program: &'static str,
        #[source]
        source: aya::programs::links::LinkError,
    },
    #[error("reattaching to the pinned map {path}")]
    Reattach {
        path: PathBuf,
        #[source]
        source: aya::maps::MapError,
    },
    #[error(transparent)]
    Pins(#[from] pins::PinError),
    #[error("the programs were reattached from pins: nothing is left to attach")]
    NotLoaded,
    #[error("reading the kernel's BTF for the task iterator: {0}")]
    KernelBtf(#[source] aya::BtfError),
    #[error(transparent)]
    Iter(#[from] IterError),
}
