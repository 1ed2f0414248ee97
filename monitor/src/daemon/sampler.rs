//! The sample loop: drains cgroup events as they come, and every
//! `--sample.interval` reads the kernel maps, rolls cgroups up into jobs and
//! publishes a snapshot for `/metrics`. One thread owns the maps; the HTTP
//! side only ever reads the published snapshot.
use std::{
    collections::HashMap,
    os::fd::AsFd,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use monitor_common::{CgroupCounters, CgroupEventKind, DROP_REASONS, DropReason};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::{
    snapshot::{Health, JobView, MapFill, SharedSnapshot, Snapshot},
    users::UserNames,
};
use crate::{
    jobs::{Job, JobTable},
    kernel::{events, probes::Probes, program_stats},
    system::cgroupfs,
};

/// Longest the loop sleeps, so a stop request is seen promptly.
const MAX_POLL: Duration = Duration::from_millis(200);

pub struct SamplerConfig {
    pub mount: PathBuf,
    pub root_dir: PathBuf,
    pub interval: Duration,
    pub retention: Duration,
    /// The daemon holds a BPF_ENABLE_STATS fd (`--bpf.stats`); the sysctl
    /// file does not show that.
    pub bpf_stats_held: bool,
}

pub struct Sampler {
    probes: Probes,
    table: JobTable,
    config: SamplerConfig,
    shared: Arc<SharedSnapshot>,
    users: UserNames,
    health: Health,
}

impl Sampler {
    pub fn new(probes: Probes, root_in_hierarchy: &str, config: SamplerConfig, shared: Arc<SharedSnapshot>) -> Self {
        Self {
            probes,
            table: JobTable::new(root_in_hierarchy),
            config,
            shared,
            users: UserNames::default(),
            health: Health::default(),
        }
    }

    pub fn probes_mut(&mut self) -> &mut Probes {
        &mut self.probes
    }

    /// Brings the table in line with the directories under the root: new
    /// ones are tracked, vanished ones marked removed.
    pub fn reconcile(&mut self) -> anyhow::Result<()> {
        self.health.rescans += 1;
        for dir in cgroupfs::walk(&self.config.root_dir)? {
            if self.table.knows(dir.id) {
                continue;
            }
            let path = cgroupfs::path_in_hierarchy(&self.config.mount, &dir.path)?;
            self.probes.counters.track(dir.id)?;
            self.table.add_cgroup(dir.id, &path, dir.uid, dir.created);
        }
        let mount = self.config.mount.clone();
        let now = Instant::now();
        for id in self.table.vanished(|path| JobTable::dir(&mount, path).is_dir()) {
            self.table.remove_cgroup(id, now);
        }
        Ok(())
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
            let wait = next_sample.saturating_duration_since(Instant::now()).min(MAX_POLL);
            self.wait_for_events(wait);
            self.drain_events();
        }
    }

    fn wait_for_events(&self, wait: Duration) {
        let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::NONE);
        let mut fds = [PollFd::new(self.probes.events.as_fd(), PollFlags::POLLIN)];
        // EINTR and friends: the loop simply comes round again.
        let _ = poll(&mut fds, timeout);
    }

    fn drain_events(&mut self) {
        let mut changes = Vec::new();
        while let Some(item) = self.probes.events.next() {
            if let Some(change) = events::decode(&item) {
                changes.push(change);
            }
        }
        for change in changes {
            self.health.cgroup_events += 1;
            match change.kind {
                CgroupEventKind::Mkdir => {
                    let dir = JobTable::dir(&self.config.mount, &change.path);
                    let uid = owner(&dir);
                    if let Err(e) = self.probes.counters.adopt(change.id, change.slot) {
                        log::warn!("cgroup {}: {e}", change.path);
                    }
                    self.table.add_cgroup(change.id, &change.path, uid, SystemTime::now());
                }
                CgroupEventKind::Rmdir => self.table.remove_cgroup(change.id, Instant::now()),
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
    }

    fn sample_once(&mut self) -> anyhow::Result<()> {
        self.drain_events();
        let drops = self.read_drops()?;
        if drops[DropReason::RingBufferFull as usize] > self.health.drops[DropReason::RingBufferFull as usize] {
            // Events were lost: the directories and the slot index are the truth.
            self.probes.counters.resync().context("rereading the cgroup slot index")?;
            self.reconcile()?;
        }
        self.health.drops = drops;

        let (mut readings, unknown) = self.read_counters()?;
        if !unknown.is_empty() {
            self.drain_events();
            self.reconcile()?;
            for (id, counters) in unknown {
                if self.table.knows(id) {
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

        let tasks = self.count_tasks();
        let now = Instant::now();
        let wall_now = SystemTime::now();
        let freed = self.table.apply_sample(&readings, &tasks, now, wall_now);
        for id in &freed {
            if let Err(e) = self.probes.counters.release(*id) {
                log::debug!("freeing counters of cgroup {id}: {e}");
            }
        }
        self.table.expire(self.config.retention, wall_now);

        self.health.maps = vec![
            MapFill {
                name: "CGROUP_COUNTERS",
                entries: self.probes.counters.occupied() as u64,
                capacity: u64::from(self.probes.counters.capacity()),
            },
            // An array: always "full"; collisions are counted as drops instead.
            MapFill {
                name: "TASK_SLOTS",
                entries: u64::from(self.probes.sizes.task_slots),
                capacity: u64::from(self.probes.sizes.task_slots),
            },
        ];
        self.health.bpf_stats_enabled = self.config.bpf_stats_held || program_stats::enabled();
        self.health.programs = program_stats::read(&self.probes);
        Ok(())
    }

    /// Summed counters of every cgroup with a known slot, split into known
    /// and unknown to the job table.
    #[allow(clippy::type_complexity)]
    fn read_counters(&self) -> anyhow::Result<(Vec<(u64, CgroupCounters)>, Vec<(u64, CgroupCounters)>)> {
        let ids = self.probes.counters.ids();
        let mut known = Vec::with_capacity(ids.len());
        let mut unknown = Vec::new();
        for id in ids {
            let Some(sum) = self.probes.counters.read(id).context("reading cgroup counters")? else {
                continue;
            };
            if self.table.knows(id) {
                known.push((id, sum));
            } else {
                unknown.push((id, sum));
            }
        }
        Ok((known, unknown))
    }

    fn read_drops(&self) -> anyhow::Result<[u64; DROP_REASONS]> {
        let mut drops = [0; DROP_REASONS];
        for reason in DropReason::ALL {
            let per_cpu = self.probes.drops.get(&(reason as u32), 0).context("reading drop counters")?;
            drops[reason as usize] = per_cpu.iter().sum();
        }
        drops[DropReason::CgroupMapFull as usize] += self.probes.counters.refused();
        Ok(drops)
    }

    /// Threads per job, from cgroup.threads of each live cgroup.
    fn count_tasks(&self) -> HashMap<String, u64> {
        let mut tasks: HashMap<String, u64> = HashMap::new();
        for (_, path, job) in self.table.live_cgroups() {
            // A cgroup removed since the last event drain counts nothing.
            let count = cgroupfs::thread_count(&JobTable::dir(&self.config.mount, path)).unwrap_or(0);
            *tasks.entry(job.to_string()).or_default() += count;
        }
        tasks
    }

    fn publish(&mut self) {
        let live: Vec<Job> = self.table.live_jobs().cloned().collect();
        let finished: Vec<Job> = self.table.finished_jobs().cloned().collect();
        let jobs = live
            .iter()
            .chain(&finished)
            .map(|job| JobView {
                jobid: job.name.clone(),
                user: self.users.name(job.uid).to_string(),
                uid: job.uid,
                cgroup: job.cgroup.clone(),
                counters: job.totals(),
                tasks: job.tasks,
                start: job.start,
                end: job.end,
            })
            .collect();
        self.shared.publish(Snapshot {
            jobs,
            health: self.health.clone(),
        });
    }
}

fn owner(dir: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).map(|m| m.uid()).unwrap_or(0)
}
