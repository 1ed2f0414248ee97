//! The sample loop: drains cgroup events as they come, and every
//! `--sample.interval` reads the kernel maps, rolls cgroups up into jobs,
//! ends registered jobs that have no task left, and publishes a snapshot for
//! `/metrics`. One thread owns the maps; the launcher side shares the job
//! table (under a mutex held only for table operations, never for I/O) and
//! wakes this thread when an adopted cgroup needs counting.
//!
//! By job: [`events`] takes cgroups coming and going into the job table
//! with their counter slots, [`sample`] runs one sample with the reads of
//! [`reads`], [`persistence`] hands what ended to the state store and frees
//! slots once it is durable, and [`publish`] makes the snapshot.
mod events;
mod persistence;
mod publish;
mod reads;
mod removal;
mod sample;
mod slots;

use std::{
    ops::{Deref, DerefMut},
    os::fd::AsFd,
    path::PathBuf,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use monitor_common::CgroupCounters;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use self::{persistence::Persistence, publish::JobViews, removal::Remover};
use super::finished_cap::FinishedCap;
use crate::{
    jobs::{
        JobKey, JobTable, allocation::AllocationReader, discovery::Discovery, registry::Registry,
        table::Job, task_cgroup,
    },
    kernel::probes::Probes,
    snapshot::{Health, SharedSnapshot},
    store::StoreHandle,
    system::{
        cgroupfs,
        cgroupfs::RootControllers,
        priority::{self, Foreground},
        wake::Wake,
    },
};

/// The cgroup-file cross-checks are read every this many samples.
const CROSS_CHECK_EVERY: u64 = 10;

/// Longest the loop sleeps, so a stop request is seen promptly.
const MAX_POLL: Duration = Duration::from_millis(200);

pub struct SamplerConfig {
    pub mount: PathBuf,
    pub root_dir: PathBuf,
    pub interval: Duration,
    pub retention: Duration,
    /// Finished jobs of one non-root uid kept in /metrics (see [`FinishedCap`]).
    pub max_finished_per_user: usize,
    /// The daemon holds a BPF_ENABLE_STATS fd (`--bpf.stats`); the sysctl
    /// file does not show that.
    pub bpf_stats_held: bool,
    /// Resource managers' job layouts.
    pub discovery: Arc<Discovery>,
}

pub struct Sampler {
    probes: Probes,
    table: Arc<Mutex<JobTable>>,
    wake: Arc<Wake>,
    config: SamplerConfig,
    shared: Arc<SharedSnapshot>,
    health: Health,
    /// The job views and what they are made of besides the table.
    views: JobViews,
    /// The state store's writer, and the slots waiting for it.
    persistence: Persistence,
    /// The next sample walks every task of the node, not only the tracked
    /// ones: some job task may not be tracked (see
    /// [`crate::kernel::probes::Walk::EveryTask`]).
    walk_every_task: bool,
    allocation: AllocationReader,
    /// What the v2 root hands down, reread with the cross-checks.
    controllers: RootControllers,
    /// The known cgroups' counters, refilled every sample: kept, so the
    /// sample does not map and fault in a fresh block each time (184 KB
    /// at 1,000 cgroups, over glibc's mmap threshold).
    readings: Vec<(u64, CgroupCounters)>,
    finished_cap: FinishedCap,
    /// Removes the empty task cgroups found, spread over the interval.
    remover: Remover,
}

impl Sampler {
    pub fn new(
        probes: Probes,
        table: Arc<Mutex<JobTable>>,
        wake: Arc<Wake>,
        config: SamplerConfig,
        shared: Arc<SharedSnapshot>,
    ) -> Self {
        let allocation = AllocationReader::new(&config.mount);
        let controllers = RootControllers::read(&config.mount);
        let finished_cap = FinishedCap::new(config.max_finished_per_user);
        // Started here, at the caller's default priority (see Remover::start).
        let remover = Remover::start(table.clone(), config.interval);
        Self {
            remover,
            finished_cap,
            allocation,
            controllers,
            probes,
            table,
            wake,
            config,
            shared,
            health: Health::default(),
            views: JobViews::default(),
            persistence: Persistence::default(),
            // Tasks may have entered jobs before the programs were attached.
            walk_every_task: true,
            readings: Vec::new(),
        }
    }

    /// Serves `jobs` (finished before a restart) for the rest of their retention.
    pub fn with_recently_finished(self, jobs: Vec<Job>) -> Self {
        self.table().restore_finished(jobs);
        self
    }

    /// Hands finished jobs' profiles and the registry to `store`'s writer.
    pub fn with_store(mut self, store: StoreHandle) -> Self {
        self.persistence.set_store(store);
        self
    }

    pub fn probes_mut(&mut self) -> &mut Probes {
        &mut self.probes
    }

    fn table(&self) -> Held<'_> {
        lock(&self.table)
    }

    /// Takes up the running jobs an earlier run saved: their cgroups keep
    /// their jobs (and find their counter slots) before the root is walked.
    pub fn restore(&mut self, registry: Registry) -> anyhow::Result<()> {
        let jobs = registry.jobs.len();
        let ids = self.table().import(registry);
        for id in &ids {
            self.probes
                .counters
                .track(*id)
                .context("finding the counter slots of saved cgroups")?;
        }
        log::info!(
            "took up {jobs} running jobs ({} cgroups) from the state store",
            ids.len()
        );
        Ok(())
    }

    /// Credits what cgroups counted under programs an upgrade unloaded to
    /// their jobs. Not their resident memory: the new programs measure each
    /// address space afresh at its next change (carrying it would count it
    /// twice); the peak is kept.
    pub fn carry_over(&mut self, carried: &[(u64, CgroupCounters)]) {
        let credited = carried
            .iter()
            .filter(|(id, counters)| {
                let counters = CgroupCounters {
                    rss_delta_bytes: 0,
                    ..*counters
                };
                self.table().credit(*id, &counters)
            })
            .count();
        if credited > 0 {
            log::info!("carried over the counts of {credited} cgroups from the unloaded programs");
        }
    }

    /// After reattaching to pinned programs: the cgroup events they queued
    /// while the daemon was away, then a walk for what the events missed.
    pub fn catch_up(&mut self) -> anyhow::Result<()> {
        self.drain_events();
        self.reconcile()
    }

    /// Brings the table in line with the directories under the root: new
    /// ones are tracked, vanished ones marked removed.
    pub fn reconcile(&mut self) -> anyhow::Result<()> {
        self.health.rescans += 1;
        for dir in cgroupfs::walk(&self.config.root_dir)? {
            if self.table().knows(dir.id) {
                continue;
            }
            let path = cgroupfs::path_in_hierarchy(&self.config.mount, &dir.path)?;
            self.probes.counters.track(dir.id)?;
            let task = self.task_cgroup_job(&path);
            let mut table = self.table();
            match task {
                Some(key) => table.add_task_cgroup(dir.id, &path, key, dir.created),
                None => table.add_cgroup(dir.id, &path, dir.uid, dir.created),
            };
        }
        self.find_discovered()?;
        let mount = self.config.mount.clone();
        let now = Instant::now();
        let mut table = self.table();
        for id in table.vanished(|path| JobTable::dir(&mount, path).is_dir()) {
            table.remove_cgroup(id, now);
        }
        Ok(())
    }

    /// For one of the daemon's task cgroups (by its name and place), the
    /// job it records, should the table not know it (see
    /// [`crate::jobs::task_cgroup`]). Read before the table is locked.
    fn task_cgroup_job(&self, path: &str) -> Option<JobKey> {
        let root = self.table().root().to_string();
        let name = task_cgroup::name_under(&root, path)?;
        Some(task_cgroup::found(
            &JobTable::dir(&self.config.mount, path),
            name,
        ))
    }

    pub fn run(mut self, stop: &AtomicBool) {
        let mut next_sample = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= next_sample {
                self.sample();
                next_sample += self.config.interval;
                if next_sample < now {
                    next_sample = now + self.config.interval;
                }
            }
            let wait = next_sample
                .saturating_duration_since(Instant::now())
                .min(MAX_POLL);
            self.wait_for_events(wait);
            self.drain_events();
            self.track_adopted();
            self.release_stored();
        }
        // Profiles handed over are written before the daemon goes; the
        // slots stay claimed and are found orphaned (and freed) at the next start.
        self.persistence.shutdown();
    }

    fn wait_for_events(&self, wait: Duration) {
        let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::NONE);
        let mut fds = [
            PollFd::new(self.probes.events.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.wake.fd(), PollFlags::POLLIN),
        ];
        // EINTR and friends: the loop simply comes round again.
        let _ = poll(&mut fds, timeout);
        self.wake.drain();
    }
}

/// The job table, also after a panic elsewhere while it was held (the
/// table stays usable). Held at the default priority: registrations wait
/// for it (see [`crate::system::priority`]).
fn lock(table: &Mutex<JobTable>) -> Held<'_> {
    let foreground = priority::foreground();
    Held {
        table: table.lock().unwrap_or_else(|e| e.into_inner()),
        _foreground: foreground,
    }
}

/// The job table locked by the sampler; the lock goes before the priority.
struct Held<'a> {
    table: MutexGuard<'a, JobTable>,
    _foreground: Foreground,
}

impl Deref for Held<'_> {
    type Target = JobTable;

    fn deref(&self) -> &JobTable {
        &self.table
    }
}

impl DerefMut for Held<'_> {
    fn deref_mut(&mut self) -> &mut JobTable {
        &mut self.table
    }
}
