//! What one sample saw, shared read-only with the HTTP side: the contract
//! between the sampler, which writes it, and the encoders (/metrics, the
//! job API, profiles), which read it. Plain figures taken at the sample;
//! the scrape encodes the latest snapshot and never touches the kernel or
//! the disk. Below the daemon and the encoders: it imports neither.
use std::{
    any::Any,
    fmt,
    sync::{Arc, OnceLock, RwLock},
    time::{Duration, SystemTime},
};

use monitor_common::{CgroupCounters, DROP_REASONS};

use crate::{kernel::program_stats::ProgramStats, store::StoreFigures};

#[derive(Debug, Clone)]
pub struct JobView {
    pub jobid: String,
    pub user: String,
    pub uid: u32,
    pub name: String,
    pub launcher: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub cgroup: String,
    pub counters: CgroupCounters,
    /// What the job's cgroup files say, where the host has them.
    pub files: CgroupFileStats,
    pub tasks: u64,
    pub start: SystemTime,
    pub end: Option<SystemTime>,
    /// Its series as /metrics serves them, encoded at the first scrape of
    /// this view (a view is never changed once published).
    pub series: SeriesCache,
}

/// Room for what the /metrics encoder makes of a view at its first scrape.
/// Held with the view, so it lives exactly as long as the figures it was
/// made from (a changed job gets a new view) and goes with the view when
/// the job leaves /metrics. A copy of a view starts without it: a copy may
/// be changed. Opaque here (the encoder's type is its own business), so the
/// snapshot need not know the encoders above it.
#[derive(Default)]
pub struct SeriesCache(OnceLock<Box<dyn Any + Send + Sync>>);

impl SeriesCache {
    /// What the cache holds, if it is a `T`.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.get()?.downcast_ref()
    }

    /// What the cache holds, made by `make` if it holds nothing yet; None
    /// if it holds something other than a `T`.
    pub fn get_or_init<T: Any + Send + Sync>(&self, make: impl FnOnce() -> T) -> Option<&T> {
        self.0.get_or_init(|| Box::new(make())).downcast_ref()
    }
}

impl Clone for SeriesCache {
    fn clone(&self) -> Self {
        SeriesCache::default()
    }
}

impl fmt::Debug for SeriesCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.get() {
            Some(_) => f.write_str("SeriesCache(filled)"),
            None => f.write_str("SeriesCache(empty)"),
        }
    }
}

/// The kernel's own per-cgroup accounting files, summed over a job's live
/// cgroups: cross-checks of the eBPF figures where the controllers are
/// enabled (pure cgroup v2 hosts); None where the files are absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupFileStats {
    pub memory_current: Option<u64>,
    /// The highest memory.peak among the job's cgroups.
    pub memory_peak: Option<u64>,
    pub io_read_bytes: Option<u64>,
    pub io_write_bytes: Option<u64>,
    /// CPUs in the job's cpuset, and its memory limit (see
    /// [`crate::jobs::allocation`]), where set.
    pub cpus_allocated: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
}

#[derive(Debug, Clone, Default)]
pub struct MapFill {
    pub name: &'static str,
    pub entries: u64,
    pub capacity: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Health {
    pub programs: Vec<ProgramStats>,
    pub bpf_stats_enabled: bool,
    pub maps: Vec<MapFill>,
    pub drops: [u64; DROP_REASONS],
    pub sample_duration: Duration,
    /// Of that, the walk of the job tasks (crediting every one).
    pub task_iter_duration: Duration,
    pub sample_success: bool,
    pub samples: u64,
    pub sample_errors: u64,
    pub cgroup_events: u64,
    pub rescans: u64,
    pub orphaned_cgroups: u64,
    /// Finished jobs taken out of /metrics before their retention ended,
    /// for their uid's `--job.retention.max-per-user`.
    pub jobs_evicted: u64,
    /// The state store writer's figures at the sample (None: running
    /// without a store).
    pub store: Option<StoreFigures>,
}

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Shared, not copied: each view is its own small block, so a sample
    /// with thousands of jobs reuses freed blocks instead of mapping one
    /// large array afresh.
    pub jobs: Vec<Arc<JobView>>,
    pub health: Health,
}

/// The latest snapshot, swapped whole after each sample.
#[derive(Debug, Default)]
pub struct SharedSnapshot(RwLock<Arc<Snapshot>>);

impl SharedSnapshot {
    pub fn latest(&self) -> Arc<Snapshot> {
        // A panic elsewhere while holding the lock leaves a usable value.
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn publish(&self, snapshot: Snapshot) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(snapshot);
    }
}
