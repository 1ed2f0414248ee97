//! The sample loop: drains cgroup events as they come, and every
//! `--sample.interval` reads the kernel maps, rolls cgroups up into jobs,
//! ends registered jobs that have no task left, and publishes a snapshot for
//! `/metrics`. One thread owns the maps; the launcher side shares the job
//! table (under a mutex held only for table operations, never for I/O) and
//! wakes this thread when an adopted cgroup needs counting.
use std::{
    collections::{HashMap, HashSet},
    os::fd::AsFd,
    path::PathBuf,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use monitor_common::{CgroupCounters, CgroupEventKind, DROP_REASONS, DropReason, V1_TAG};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::{
    finished_cap::FinishedCap,
    snapshot::{CgroupFileStats, Health, JobView, MapFill, SharedSnapshot, Snapshot},
    users::UserNames,
};
use crate::{
    jobs::{
        JobKey, JobTable,
        allocation::{Allocation, AllocationReader},
        discovery::{self, Discovery},
        registry::Registry,
        table::{Added, EmptyCgroups, Job},
        task_cgroup,
    },
    kernel::{
        events,
        probes::{Probes, Walk},
        program_stats,
        task_iter::IterRun,
    },
    profile::JobJson,
    store::{Batch, Profile, StoreHandle},
    system::{
        cgroupfs::{self, RootControllers},
        time::unix_seconds,
        wake::Wake,
    },
};

/// Finished jobs whose views are built per hold of the job table's lock
/// (see [`Sampler::publish`]): about 1 ms of holding.
const FINISHED_PER_LOCK: usize = 1000;

/// Freed memory is returned to the kernel every this many samples.
const TRIM_EVERY: u64 = 10;

/// The cgroup-file cross-checks are read every this many samples.
const CROSS_CHECK_EVERY: u64 = 10;

/// Longest the loop sleeps, so a stop request is seen promptly.
const MAX_POLL: Duration = Duration::from_millis(200);

/// Longest a cgroup read for the last time keeps its counter slot waiting
/// for the store. A healthy commit takes milliseconds and a failed one hands
/// the slots back at once (a locked database after its 5 s busy timeout);
/// past this the disk hangs, and the slot serves the next jobs better than
/// as a backup of this one's final values.
const MAX_SLOT_HOLD: Duration = Duration::from_secs(10);

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
    users: UserNames,
    health: Health,
    /// Cgroup-file cross-checks per job, from the last sample.
    files: HashMap<JobKey, CgroupFileStats>,
    /// The state store's writer; None runs without one (profiles are then
    /// kept in memory for the retention only).
    store: Option<StoreHandle>,
    /// Cgroups read for the last time whose slots are freed once the store
    /// has their job's profile (or registry) on disk, or has failed to put
    /// it there, or at the latest [`MAX_SLOT_HOLD`] after they were handed
    /// over (when): a store that cannot write never fills the counter map.
    pending_release: HashMap<u64, Instant>,
    /// The job table's generation when the registry was last handed to the store.
    saved_generation: Option<u64>,
    /// The next sample walks every task of the node, not only the tracked
    /// ones: some job task may not be tracked (see [`Walk::EveryTask`]).
    walk_every_task: bool,
    allocation: AllocationReader,
    /// What the v2 root hands down, reread with the cross-checks.
    controllers: RootControllers,
    /// What each job was given (read when it is first seen, then with the
    /// cross-checks); kept for its finished jobs' profiles.
    allocations: HashMap<JobKey, Allocation>,
    /// The known cgroups' counters, refilled every sample: kept, so the
    /// sample does not map and fault in a fresh block each time (184 KB
    /// at 1,000 cgroups, over glibc's mmap threshold).
    readings: Vec<(u64, CgroupCounters)>,
    /// Each shown job's view as last published, and the sample that last
    /// published it: a job whose figures did not change (a finished job,
    /// a sleeping one) keeps its view instead of being copied anew.
    views: HashMap<JobKey, (Arc<JobView>, u64)>,
    finished_cap: FinishedCap,
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
        Self {
            finished_cap,
            allocation,
            controllers,
            probes,
            table,
            wake,
            config,
            shared,
            users: UserNames::default(),
            health: Health::default(),
            files: HashMap::new(),
            store: None,
            pending_release: HashMap::new(),
            saved_generation: None,
            // Tasks may have entered jobs before the programs were attached.
            walk_every_task: true,
            allocations: HashMap::new(),
            readings: Vec::new(),
            views: HashMap::new(),
        }
    }

    /// Serves `jobs` (finished before a restart) for the rest of their retention.
    pub fn with_recently_finished(self, jobs: Vec<Job>) -> Self {
        self.table().restore_finished(jobs);
        self
    }

    /// Hands finished jobs' profiles and the registry to `store`'s writer.
    pub fn with_store(mut self, store: StoreHandle) -> Self {
        self.store = Some(store);
        self
    }

    pub fn probes_mut(&mut self) -> &mut Probes {
        &mut self.probes
    }

    fn table(&self) -> MutexGuard<'_, JobTable> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
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
        if let Some(store) = self.store.take() {
            // Profiles handed over are written before the daemon goes; the
            // slots stay claimed and are found orphaned (and freed) at the next start.
            if let Err(e) = store.shutdown() {
                log::error!("state store: {e}");
            }
        }
    }

    /// Frees the counter slots of cgroups whose final values are on disk
    /// (or that the store failed to write, or held too long).
    fn release_stored(&mut self) {
        let Some(store) = &self.store else {
            return;
        };
        let mut ids = store.released();
        let now = Instant::now();
        ids.extend(
            self.pending_release
                .iter()
                .filter(|(_, handed)| now.duration_since(**handed) >= MAX_SLOT_HOLD)
                .map(|(id, _)| *id),
        );
        for id in ids {
            if self.pending_release.remove(&id).is_none() {
                continue; // freed already (held too long, then released)
            }
            if let Err(e) = self.probes.counters.release(id) {
                log::debug!("freeing counters of cgroup {id}: {e}");
            }
        }
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

    /// Resource managers' job directories already there (and those made
    /// while cgroup events were lost): taken in as jobs, counted in place.
    fn find_discovered(&mut self) -> anyhow::Result<()> {
        let roots = self.config.discovery.roots(&self.config.mount);
        for root in roots {
            let dirs = match cgroupfs::walk(&root.dir) {
                Ok(dirs) => dirs,
                // No such resource manager here (yet).
                Err(e) => {
                    log::debug!("no job layout's directory at {}: {e}", root.dir.display());
                    continue;
                }
            };
            for dir in dirs {
                let Some(path) = root.table_path(&dir.path) else {
                    continue;
                };
                let id = match root.controller {
                    Some(_) => dir.id | V1_TAG,
                    None => dir.id,
                };
                let mut table = self.table();
                if table.knows(id) {
                    continue;
                }
                if table.add_cgroup(id, &path, dir.uid, dir.created) == Added::NotAJob {
                    continue;
                }
                drop(table);
                // Claimed by the daemon at start; found (claimed by the
                // kernel at mkdir) or claimed now after lost events.
                if self.probes.counters.claim(id)?.is_some() {
                    self.walk_every_task = true;
                }
            }
        }
        Ok(())
    }

    /// Starts counting cgroups the launcher side adopted. Their tasks were
    /// running already: the task iterator runs at once, so each is counted
    /// from now rather than from the next sample.
    fn track_adopted(&mut self) {
        if self.claim_adopted()
            && let Err(e) = self.probes.credit_tasks(Walk::EveryTask)
        {
            log::warn!("crediting the tasks of adopted cgroups: {e}");
        }
    }

    /// Claims counter slots for the cgroups the launcher side adopted;
    /// whether there were any.
    fn claim_adopted(&mut self) -> bool {
        let ids = self.table().take_untracked();
        let any = !ids.is_empty();
        for id in ids {
            if let Err(e) = self.probes.counters.claim(id) {
                log::warn!("counting adopted cgroup {id}: {e}");
            }
        }
        any
    }

    fn drain_events(&mut self) {
        let mut changes = Vec::new();
        while let Some(item) = self.probes.events.next() {
            if let Some(mut change) = events::decode(&item) {
                if change.id & V1_TAG != 0 {
                    // A cgroup of the watched v1 hierarchy: its table path.
                    let Some(v1) = self.config.discovery.v1() else {
                        continue;
                    };
                    change.path = discovery::v1_table_path(&v1.controller, &change.path);
                }
                changes.push(change);
            }
        }
        if changes.is_empty() {
            return;
        }
        self.health.cgroup_events += changes.len() as u64;
        let owners: Vec<u32> = changes
            .iter()
            .map(|c| match c.kind {
                CgroupEventKind::Mkdir => owner(&JobTable::dir(&self.config.mount, &c.path)),
                CgroupEventKind::Rmdir => 0,
            })
            .collect();
        let tasks: Vec<Option<JobKey>> = changes
            .iter()
            .map(|c| match c.kind {
                CgroupEventKind::Mkdir => self.task_cgroup_job(&c.path),
                CgroupEventKind::Rmdir => None,
            })
            .collect();
        for change in changes.iter().filter(|c| c.kind == CgroupEventKind::Mkdir) {
            if let Err(e) = self.probes.counters.adopt(change.id, change.slot) {
                log::warn!("cgroup {}: {e}", change.path);
            }
        }
        let now = Instant::now();
        let wall_now = SystemTime::now();
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let mut not_jobs = Vec::new();
        for ((change, uid), task) in changes.iter().zip(owners).zip(tasks) {
            match change.kind {
                CgroupEventKind::Mkdir => {
                    let added = match task {
                        Some(key) => table.add_task_cgroup(change.id, &change.path, key, wall_now),
                        None => table.add_cgroup(change.id, &change.path, uid, wall_now),
                    };
                    if added == Added::NotAJob && self.config.discovery.may_hold_jobs(&change.path)
                    {
                        // Given a slot for being under a job layout's
                        // prefix, but no job: the slot goes back.
                        not_jobs.push(change.id);
                    }
                }
                CgroupEventKind::Rmdir => table.remove_cgroup(change.id, now),
            }
        }
        drop(table);
        for id in not_jobs {
            if let Err(e) = self.probes.counters.release(id) {
                log::debug!("freeing the slot of cgroup {id}, no job: {e}");
            }
        }
    }

    fn sample(&mut self) {
        let started = Instant::now();
        let result = self.sample_once();
        self.health.samples += 1;
        self.health.sample_success = result.is_ok();
        if let Err(e) = result {
            self.health.sample_errors += 1;
            log::warn!("sample failed: {e:#}");
        }
        self.health.sample_duration = started.elapsed();
        self.publish();
        // The previous snapshots and the scrapes of them are freed by now.
        // Not every sample: trimming gives the pages back and the next
        // sample faults them in again (a few ms a sample at 1,000 jobs).
        if self.health.samples.is_multiple_of(TRIM_EVERY) {
            crate::system::memory::release_free_memory();
        }
    }

    fn sample_once(&mut self) -> anyhow::Result<()> {
        self.drain_events();
        // The sample's own walk below credits them from now.
        if self.claim_adopted() {
            self.walk_every_task = true;
        }
        let drops = self.read_drops()?;
        let more = |reason: DropReason| drops[reason as usize] > self.health.drops[reason as usize];
        if more(DropReason::ThreadWalkTruncated) || more(DropReason::TaskMapFull) {
            // Threads of a moved process the move did not reach, or tasks
            // with no room in TASK_STATE then: taken in by a walk of all.
            self.walk_every_task = true;
        }
        if more(DropReason::RingBufferFull) {
            self.walk_every_task = true;
            // Events were lost: the directories and the slot index are the truth.
            self.probes
                .counters
                .resync()
                .context("rereading the cgroup slot index")?;
            self.reconcile()?;
        }
        self.health.drops = drops;

        // The kernel's per-task counters into the cgroup counters first.
        let walk = if self.walk_every_task {
            Walk::EveryTask
        } else {
            Walk::JobTasks
        };
        // Read once: it decides the walk and is shown as the map's fill.
        let tracked = self.probes.tracked_task_count();
        let walks_tracked = walk == Walk::JobTasks && self.probes.walks_tracked_tasks();
        let run = if walks_tracked && tracked == Some(0) {
            // No job task anywhere (an idle node): nothing to credit, and
            // the walk would still visit each of the map's 16,384 empty
            // buckets. A task tracked just after the read is credited at
            // its exit or by the next sample.
            IterRun::default()
        } else {
            self.probes
                .credit_tasks(walk)
                .context("crediting the jobs' tasks")?
        };
        self.walk_every_task = false;
        self.health.task_iter_duration = run.duration;
        let job_tasks = run.job_tasks;
        let mut readings = std::mem::take(&mut self.readings);
        let unknown = self.read_counters(&mut readings)?;
        if !unknown.is_empty() {
            self.drain_events();
            self.reconcile()?;
            for (id, counters) in unknown {
                if self.table().knows(id) {
                    readings.push((id, counters));
                } else {
                    // Outside the root, or made and removed unseen: nothing to credit.
                    self.health.orphaned_cgroups += 1;
                    if let Err(e) = self.probes.counters.release(id) {
                        log::debug!("freeing counters of orphaned cgroup {id}: {e}");
                    }
                }
            }
        }

        if self.health.samples.is_multiple_of(CROSS_CHECK_EVERY) {
            // Once for both below (a site may enable one while we run).
            self.controllers = RootControllers::read(&self.config.mount);
        }
        self.read_cgroup_files();
        self.read_allocations();
        self.resolve_identities();
        let now = Instant::now();
        let wall_now = SystemTime::now();
        let (freed, empty, ended) = {
            let table = self.table.clone();
            let mut table = table.lock().unwrap_or_else(|e| e.into_inner());
            // Threads per cgroup as the sample's walk saw them (no cgroup
            // file read: at 1,000 jobs that was 1,000 opens a sample).
            let freed = table.apply_sample(&readings, &job_tasks, now, wall_now);
            table.expire(self.config.retention, wall_now);
            self.finished_cap.apply(&mut table);
            self.health.jobs_evicted = self.finished_cap.evicted();
            (freed, table.empty_cgroups(&job_tasks), table.take_ended())
        };
        self.readings = readings;
        self.save(freed, &ended);
        self.end_empty(empty);

        self.health.maps = vec![
            MapFill {
                name: "CGROUP_COUNTERS",
                entries: self.probes.counters.occupied() as u64,
                capacity: u64::from(self.probes.counters.capacity()),
            },
            MapFill {
                name: "TASK_STATE",
                entries: tracked.unwrap_or(0),
                capacity: u64::from(self.probes.sizes.tasks),
            },
        ];
        self.health.bpf_stats_enabled = self.config.bpf_stats_held || program_stats::enabled();
        self.health.programs = program_stats::read(&self.probes);
        Ok(())
    }

    /// Hands the ended jobs' profiles and the registry (when it changed) to
    /// the store, with the cgroups read for the last time: their slots are
    /// freed once the batch is durable (so a daemon killed meanwhile finds
    /// their final values at its restart), or its commit failed, or after
    /// [`MAX_SLOT_HOLD`]. Without a store they are freed now.
    fn save(&mut self, freed: Vec<u64>, ended: &[Job]) {
        if self.store.is_none() {
            self.release(freed);
            return;
        }
        let generation = self.table().generation();
        let changed = self.saved_generation != Some(generation);
        if ended.is_empty() && freed.is_empty() && !changed {
            return;
        }
        let registry = if changed {
            match serde_json::to_string(&self.table().export()) {
                Ok(text) => Some(text),
                Err(e) => {
                    log::error!("serializing the job registry: {e}");
                    None
                }
            }
        } else {
            None
        };
        // A registry that failed to serialize is tried again next time.
        let saved = if changed && registry.is_none() {
            self.saved_generation
        } else {
            Some(generation)
        };
        let profiles = ended.iter().filter_map(|job| self.profile(job)).collect();
        let batch = Batch {
            profiles,
            registry,
            release: freed.clone(),
        };
        let Some(store) = &self.store else {
            return;
        };
        match store.send(batch) {
            Ok(()) => {
                self.saved_generation = saved;
                let now = Instant::now();
                self.pending_release
                    .extend(freed.into_iter().map(|id| (id, now)));
            }
            Err(e) => {
                log::error!("state store: {e}; finished jobs are kept in memory only");
                self.store = None;
                self.release(freed);
            }
        }
    }

    fn release(&mut self, ids: Vec<u64>) {
        for id in ids {
            if let Err(e) = self.probes.counters.release(id) {
                log::debug!("freeing counters of cgroup {id}: {e}");
            }
        }
    }

    /// A finished job's frozen profile.
    fn profile(&mut self, job: &Job) -> Option<Profile> {
        let view = self.view(job);
        let json = match serde_json::to_string(&JobJson::from(&view)) {
            Ok(json) => json,
            Err(e) => {
                log::error!("serializing the profile of job {}: {e}", view.jobid);
                return None;
            }
        };
        Some(Profile {
            jobid: view.jobid,
            uid: view.uid,
            user: view.user,
            start_time: unix_seconds(view.start),
            end_time: unix_seconds(view.end.unwrap_or(view.start)),
            json,
        })
    }

    /// Removes the empty cgroups the daemon made for registered jobs (their
    /// final values are read after the grace) and stops counting empty
    /// adopted ones, which stay where their manager put them. A job whose
    /// last cgroup goes is finished.
    fn end_empty(&mut self, empty: EmptyCgroups) {
        let mut removed = Vec::new();
        for (id, path) in &empty.owned {
            let dir = JobTable::dir(&self.config.mount, path);
            match std::fs::remove_dir(&dir) {
                Ok(()) => removed.push(*id),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => removed.push(*id),
                // A task arrived since the count: it lives on.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => log::warn!("removing {}: {e}", dir.display()),
            }
        }
        let now = Instant::now();
        let mut table = self.table();
        for id in removed.iter().chain(&empty.adopted) {
            table.remove_cgroup(*id, now);
        }
    }

    /// Summed counters of every cgroup with a known slot: those the job
    /// table knows into `known` (emptied first), the others returned.
    fn read_counters(
        &mut self,
        known: &mut Vec<(u64, CgroupCounters)>,
    ) -> anyhow::Result<Vec<(u64, CgroupCounters)>> {
        known.clear();
        let mut unknown = Vec::new();
        let table = self.table.clone();
        let table = table.lock().unwrap_or_else(|e| e.into_inner());
        for id in self.probes.counters.ids() {
            // Read for the last time already; freed once their job is stored.
            if self.pending_release.contains_key(&id) {
                continue;
            }
            let Some(sum) = self
                .probes
                .counters
                .read_latest(id)
                .context("reading cgroup counters")?
            else {
                continue;
            };
            if table.knows(id) {
                known.push((id, sum));
            } else {
                unknown.push((id, sum));
            }
        }
        Ok(unknown)
    }

    fn read_drops(&self) -> anyhow::Result<[u64; DROP_REASONS]> {
        let mut drops = [0; DROP_REASONS];
        for reason in DropReason::ALL {
            let per_cpu = self
                .probes
                .drops
                .get(&(reason as u32), 0)
                .context("reading drop counters")?;
            drops[reason as usize] = per_cpu.iter().sum();
        }
        drops[DropReason::CgroupMapFull as usize] += self.probes.counters.refused();
        Ok(drops)
    }

    /// The cgroup files that cross-check the kernel programs where they
    /// exist (memory and io controllers: pure cgroup v2 hosts), every
    /// [`CROSS_CHECK_EVERY`] samples: three opens per cgroup.
    fn read_cgroup_files(&mut self) {
        if !self.health.samples.is_multiple_of(CROSS_CHECK_EVERY) {
            return;
        }
        // Job cgroups may be adopted from anywhere in the v2 hierarchy, so
        // the root's controllers decide, not only the monitored root's.
        if !(self.controllers.has("memory") || self.controllers.has("io")) {
            // Hybrid hosts (their controllers are all on v1): the job
            // cgroups have none of the files, only failed opens to pay for.
            self.files.clear();
            return;
        }
        let cgroups: Vec<(String, JobKey)> = self
            .table()
            .live_cgroups()
            .map(|(_, path, job)| (path.to_string(), job.clone()))
            .collect();
        let mut files: HashMap<JobKey, CgroupFileStats> = HashMap::new();
        for (path, job) in cgroups {
            let dir = JobTable::dir(&self.config.mount, &path);
            let stats = files.entry(job).or_default();
            add(
                &mut stats.memory_current,
                cgroupfs::read_number(&dir, "memory.current"),
            );
            if let Some(peak) = cgroupfs::read_number(&dir, "memory.peak") {
                stats.memory_peak = Some(stats.memory_peak.unwrap_or(0).max(peak));
            }
            if let Some((read, written)) = cgroupfs::read_io_stat(&dir) {
                add(&mut stats.io_read_bytes, Some(read));
                add(&mut stats.io_write_bytes, Some(written));
            }
        }
        self.files = files;
    }

    /// Owners (and ids) of resource managers' jobs whose layout names
    /// none: the first process in the job's cgroups with a non-root uid
    /// tells both (its uid, its `SLURM_JOB_ID`).
    fn resolve_identities(&mut self) {
        /// Processes looked at per job and sample, at most.
        const MAX_PIDS: usize = 16;
        let pending = self.table().pending_identities();
        for job in pending {
            let pids: String = job
                .cgroups
                .iter()
                .map(|path| {
                    let procs = JobTable::dir(&self.config.mount, path).join("cgroup.procs");
                    std::fs::read_to_string(procs).unwrap_or_default()
                })
                .collect();
            let found = pids
                .lines()
                .filter_map(|pid| pid.trim().parse::<u32>().ok())
                .take(MAX_PIDS)
                .find_map(|pid| {
                    let uid = uid_of_process(pid).filter(|&uid| uid != 0)?;
                    let jobid = if job.jobid {
                        slurm_job_id_of_process(pid)?
                    } else {
                        job.key.jobid.clone()
                    };
                    Some((if job.owner { uid } else { job.key.uid }, jobid))
                });
            if let Some((uid, jobid)) = found {
                self.table().resolve_identity(&job.key, uid, jobid);
            }
        }
    }

    /// What each live job was given: read for a job not seen before, and
    /// again with the cross-checks (a resource manager may change it).
    fn read_allocations(&mut self) {
        let refresh = self.health.samples.is_multiple_of(CROSS_CHECK_EVERY);
        let table = self.table.clone();
        let table = table.lock().unwrap_or_else(|e| e.into_inner());
        let due: Vec<(JobKey, String)> = table
            .live_jobs()
            .filter(|job| refresh || !self.allocations.contains_key(&job.key))
            .filter(|job| !job.cgroup.is_empty())
            .map(|job| (job.key.clone(), job.cgroup.clone()))
            .collect();
        if refresh {
            let known: HashSet<&JobKey> = table
                .live_jobs()
                .chain(table.finished_jobs())
                .map(|job| &job.key)
                .collect();
            self.allocations.retain(|key, _| known.contains(key));
        }
        drop(table);
        for (key, cgroup) in due {
            let allocation = self.allocation.read(&cgroup, &self.controllers);
            // A job ending as it is reread (its cgroup removed meanwhile)
            // read nothing: it keeps what it was given, its profile and
            // its last series say that.
            let gone = !JobTable::dir(&self.config.mount, &cgroup).exists();
            if gone && self.allocations.contains_key(&key) {
                continue;
            }
            self.allocations.insert(key, allocation);
        }
    }

    fn publish(&mut self) {
        let table = self.table.clone();
        let sample = self.health.samples;
        let mut jobs: Vec<Arc<JobView>> = {
            let table = table.lock().unwrap_or_else(|e| e.into_inner());
            let shown = table.live_jobs().filter(|job| job.visible);
            shown.map(|job| self.current_view(job, sample)).collect()
        };
        // Finished jobs (10,000 and more on a busy node) a chunk at a time,
        // the job table's lock let go between chunks: registrations wait
        // for it, and one hold over every view took several ms. A job
        // enters the finished set only in this thread (at a sample), so
        // none can appear twice; one re-registered meanwhile is shown once
        // or, for this sample, not at all.
        let mut after: Option<JobKey> = None;
        loop {
            let table = table.lock().unwrap_or_else(|e| e.into_inner());
            let mut taken = 0;
            let mut last = None;
            for job in table.finished_after(after.as_ref()).take(FINISHED_PER_LOCK) {
                taken += 1;
                if job.visible {
                    jobs.push(self.current_view(job, sample));
                }
                last = Some(&job.key);
            }
            if taken < FINISHED_PER_LOCK {
                break;
            }
            after = last.cloned();
        }
        self.views.retain(|_, (_, published)| *published == sample);
        if let Some(store) = &self.store {
            self.health.store = Some(store.stats().figures());
        }
        self.shared.publish(Snapshot {
            jobs,
            health: self.health.clone(),
        });
    }

    /// `job`'s view: the one last published if nothing in it changed
    /// (compared in place, nothing copied), else a new one; remembered as
    /// published at `sample`.
    fn current_view(&mut self, job: &Job, sample: u64) -> Arc<JobView> {
        let counters = job.totals();
        let files = self.files_of(job);
        let users = &mut self.users;
        // One lookup for the usual case, a job whose view is unchanged.
        if let Some((view, published)) = self.views.get_mut(&job.key) {
            let user = match &job.meta.user {
                Some(user) => user.as_str(),
                None => users.name(job.key.uid),
            };
            let unchanged = view.counters == counters
                && view.files == files
                && view.tasks == job.tasks
                && view.end == job.end
                && view.start == job.start
                && view.user == user
                && view.name == job.meta.name
                && view.launcher == job.meta.launcher
                && view.labels == job.meta.labels
                && view.cgroup == job.cgroup;
            if unchanged {
                *published = sample;
                return view.clone();
            }
        }
        let view = Arc::new(self.view_with(job, counters, files));
        match self.views.get_mut(&job.key) {
            Some(entry) => *entry = (view.clone(), sample),
            None => {
                self.views.insert(job.key.clone(), (view.clone(), sample));
            }
        }
        view
    }

    fn view(&mut self, job: &Job) -> JobView {
        let files = self.files_of(job);
        self.view_with(job, job.totals(), files)
    }

    /// What the cgroup files and the allocation say of `job`.
    fn files_of(&self, job: &Job) -> CgroupFileStats {
        let mut files = self.files.get(&job.key).cloned().unwrap_or_default();
        if let Some(allocation) = self.allocations.get(&job.key) {
            files.cpus_allocated = allocation.cpus;
            files.memory_limit_bytes = allocation.memory_limit_bytes;
        }
        files
    }

    fn view_with(
        &mut self,
        job: &Job,
        counters: CgroupCounters,
        files: CgroupFileStats,
    ) -> JobView {
        let user = job
            .meta
            .user
            .clone()
            .unwrap_or_else(|| self.users.name(job.key.uid).to_string());
        JobView {
            counters,
            files,
            jobid: job.key.jobid.clone(),
            uid: job.key.uid,
            user,
            name: job.meta.name.clone(),
            launcher: job.meta.launcher.clone(),
            labels: job.meta.labels.clone(),
            cgroup: job.cgroup.clone(),
            tasks: job.tasks,
            start: job.start,
            end: job.end,
            series: Default::default(),
        }
    }
}

/// Adds an optional reading to an optional total (absent stays absent).
fn add(total: &mut Option<u64>, value: Option<u64>) {
    if let Some(value) = value {
        *total = Some(total.unwrap_or(0) + value);
    }
}

fn owner(dir: &std::path::Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).map(|m| m.uid()).unwrap_or(0)
}

/// The real uid of process `pid` (/proc/PID/status `Uid:`), if it still runs.
fn uid_of_process(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `SLURM_JOB_ID` in the environment process `pid` started with.
fn slurm_job_id_of_process(pid: u32) -> Option<String> {
    /// Environments are read up to this much.
    const MAX_ENVIRON: u64 = 256 * 1024;
    use std::io::Read as _;
    let mut environ = Vec::new();
    std::fs::File::open(format!("/proc/{pid}/environ"))
        .ok()?
        .take(MAX_ENVIRON)
        .read_to_end(&mut environ)
        .ok()?;
    environ
        .split(|&b| b == 0)
        .find_map(|var| var.strip_prefix(b"SLURM_JOB_ID="))
        .map(|id| String::from_utf8_lossy(id).into_owned())
        .filter(|id| {
            !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}
