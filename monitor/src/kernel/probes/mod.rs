//! Loading the kernel programs, attaching them, and handing out their maps;
//! or reattaching to a set pinned by an earlier run (see [`super::pins`]).
//! Dropping [`Probes`] detaches what is not pinned.
//!
//! The modules: [`load`] loads (or reattaches), [`attach`] attaches,
//! [`pinning`] pins; here the program lists, the walks and what the
//! daemon reads of the loaded set.
mod attach;
mod error;
mod load;
mod pinning;

use std::path::PathBuf;

use aya::{
    Ebpf,
    maps::{Array, MapData, PerCpuArray, RingBuf},
    programs::{CgroupSkbAttachType, ProgramInfo},
};

use self::pinning::Pinning;
pub use self::{error::ProbeError, load::constants};
use super::{
    counters::CounterSlots,
    pins,
    task_iter::{IterRun, TaskIterator},
};

/// Classic tracepoints (fields at format-file offsets) and their programs.
const TRACEPOINTS: [(&str, &str, &str); 4] = [
    // Cgroup events first, so a cgroup made while the daemon starts is seen.
    ("cgroup_mkdir", "cgroup", "cgroup_mkdir"),
    ("cgroup_rmdir", "cgroup", "cgroup_rmdir"),
    ("sched_process_exec", "sched", "sched_process_exec"),
    ("oom_mark_victim", "oom", "mark_victim"),
];
/// cgroup_skb programs, attached to the cgroup v2 root.
const CGROUP_SKBS: [(&str, CgroupSkbAttachType); 2] = [
    ("net_ingress", CgroupSkbAttachType::Ingress),
    ("net_egress", CgroupSkbAttachType::Egress),
];
/// Socket creation and release on the cgroup v2 root: which v1 job a
/// socket is of (see `monitor-ebpf/src/probes/network.rs`).
const CGROUP_SOCKS: [&str; 2] = ["net_sock_create", "net_sock_release"];
/// Raw tracepoints (the kernel's TP_PROTO arguments: task pointers); the
/// program is named after its tracepoint. The task's own lifecycle (born,
/// moved, exited, freed): none is on a per-switch, per-syscall or
/// per-fault path.
const RAW_TRACEPOINTS: [&str; 4] = [
    "task_newtask",
    "cgroup_attach_task",
    "sched_process_exit",
    "sched_process_free",
];
/// BTF tracepoints (typed arguments: fields loaded directly): rss_stat, on
/// the page-fault path, for the memory peak.
const BTF_TRACEPOINTS: [&str; 1] = ["rss_stat"];
/// The walk of every task of the node: the daemon runs it when job tasks
/// may be untracked (see [`Walk::EveryTask`]).
pub const TASK_ITER: &str = "task_iter";
/// The walk of the tasks the programs track, run at every other sample.
pub const TRACKED_TASK_ITER: &str = "tracked_task_iter";

/// Which tasks a sample's credit walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walk {
    /// Every task of the node (10,000 tasks: ~6 ms of the kernel's own
    /// iteration before any work). Takes in job tasks the programs did not
    /// see enter their job: those there before the programs, in a cgroup
    /// adopted while running, or past a move's thread walk.
    EveryTask,
    /// Only the tasks the programs track: the jobs' tasks.
    JobTasks,
}

/// Every program name, for per-program metrics.
pub fn program_names() -> impl Iterator<Item = &'static str> {
    TRACEPOINTS
        .iter()
        .map(|(program, _, _)| *program)
        .chain(RAW_TRACEPOINTS)
        .chain(BTF_TRACEPOINTS)
        .chain(CGROUP_SKBS.iter().map(|(program, _)| *program))
        .chain(CGROUP_SOCKS)
        .chain([TASK_ITER, TRACKED_TASK_ITER])
}

/// Map sizes, from the daemon's flags.
#[derive(Debug, Clone, Copy)]
pub struct MapSizes {
    /// Cgroup counter slots; a power of two.
    pub cgroups: u32,
    /// Job tasks tracked at once (TASK_STATE entries).
    pub tasks: u32,
}

impl MapSizes {
    /// Entries of the jobs' address-space table: room for one per tracked
    /// task (processes are fewer), a power of two for open addressing.
    pub fn mm_slots(&self) -> u32 {
        self.tasks
            .max(1024)
            .checked_next_power_of_two()
            .unwrap_or(1 << 31)
    }
}

/// The maps the daemon itself reads and writes; every other map lives on
/// through the programs that use it.
const DAEMON_MAPS: [&str; 7] = [
    "CGROUP_INDEX",
    "CGROUP_COUNTERS",
    "CGROUP_RSS",
    "CGROUP_CHANGED",
    "CGROUP_EVENTS",
    "DROPS",
    "TASK_STATE_COUNT",
];
/// The maps an upgrade reads from the set it replaces (also in older builds).
const COUNTER_MAPS: usize = 3;

pub struct Probes {
    /// The loaded object; None when reattached to pins.
    ebpf: Option<Ebpf>,
    pinning: Pinning,
    pub counters: CounterSlots,
    pub events: RingBuf<MapData>,
    pub drops: PerCpuArray<MapData, u64>,
    /// How many tasks the programs track (TASK_STATE entries).
    pub tracked_tasks: Array<MapData, u64>,
    pub sizes: MapSizes,
    /// The walk of every task, once attached (or reattached).
    iterator: Option<TaskIterator>,
    /// The walk of the tracked tasks; None in a set pinned without it.
    tracked: Option<TaskIterator>,
}

impl Probes {
    /// Completes the pinned set (after every program is attached): from
    /// here on the programs outlive the daemon. Returns its directory.
    pub fn commit_pins(&mut self) -> Result<Option<PathBuf>, ProbeError> {
        if let Some(set) = self.pinning.staging.take() {
            self.pinning.dir = Some(set.commit()?);
        }
        Ok(self.pinning.dir.clone())
    }

    /// Whether the programs came from pins rather than this run's load.
    pub fn reattached(&self) -> bool {
        self.ebpf.is_none()
    }

    /// Whether [`Walk::JobTasks`] walks TASK_STATE (a set pinned by an
    /// older build walks every task instead).
    pub fn walks_tracked_tasks(&self) -> bool {
        self.tracked.is_some()
    }

    /// Entries in TASK_STATE (kept by the programs), if readable.
    pub fn tracked_task_count(&self) -> Option<u64> {
        self.tracked_tasks.get(&0, 0).ok()
    }

    /// Runs a walk: every job task's counters are credited to its cgroup
    /// up to now. A set pinned without the walk of tracked tasks walks
    /// every task.
    pub fn credit_tasks(&self, walk: Walk) -> Result<IterRun, ProbeError> {
        let iterator = match (walk, &self.tracked) {
            (Walk::JobTasks, Some(tracked)) => tracked,
            _ => self.iterator.as_ref().ok_or(ProbeError::NotLoaded)?,
        };
        Ok(iterator.run()?)
    }

    /// The kernel's information on program `name` (run time and count).
    pub fn program_info(&self, name: &str) -> Option<ProgramInfo> {
        match (&self.ebpf, &self.pinning.dir) {
            (Some(ebpf), _) => ebpf.program(name)?.info().ok(),
            (None, Some(dir)) => ProgramInfo::from_pin(pins::program_path(dir, name)).ok(),
            (None, None) => None,
        }
    }
}
