//! One sample, step by step: the task walk credits the kernel's per-task
//! counters, the maps and files are read, the job table rolls the cgroups
//! up, ended jobs go to the store and empty cgroups are removed; then the
//! snapshot is published.
use std::time::{Instant, SystemTime};

use anyhow::Context as _;
use monitor_common::DropReason;

use super::{CROSS_CHECK_EVERY, Sampler, removal::Removal};
use crate::{
    jobs::{
        JobTable,
        table::{EmptyCgroups, Retiring},
    },
    kernel::{probes::Walk, task_iter::IterRun},
    system::{cgroupfs::RootControllers, memory::ShrinkSparse},
};

/// Removed cgroups folded into their jobs per hold of the job table (about
/// 7 µs each: a hold of 2 ms).
const RETIRE_BATCH: usize = 256;

/// Freed memory is returned to the kernel every this many samples.
const TRIM_EVERY: u64 = 10;

impl Sampler {
    pub(super) fn sample(&mut self) {
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
        self.shrink_if_sparse();
        // The previous snapshots and the scrapes of them are freed by now.
        // Not every sample: trimming gives the pages back and the next
        // sample faults them in again (a few ms a sample at 1,000 jobs).
        if self.health.samples.is_multiple_of(TRIM_EVERY) {
            crate::system::memory::release_free_memory();
        }
    }

    /// Gives back the room of the tables a burst of cgroups filled and
    /// emptied (10,000 made and removed at once: about 10 MB held for none).
    fn shrink_if_sparse(&mut self) {
        self.readings.shrink_if_sparse();
        self.probes.counters.shrink_if_sparse();
        self.table().shrink_if_sparse();
        self.persistence.shrink_if_sparse();
        self.views.shrink_if_sparse();
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
        let table = self.table.clone();
        // Threads per cgroup as the sample's walk saw them (no cgroup
        // file read: at 1,000 jobs that was 1,000 opens a sample).
        let Retiring { cgroups, freed } =
            super::lock(&table).update_sample(&readings, &job_tasks, now);
        // Ending jobs in batches, each in a hold of its own, so a
        // registration waits for one batch at most.
        for batch in cgroups.chunks(RETIRE_BATCH) {
            super::lock(&table).retire(batch, wall_now);
        }
        drop(cgroups);
        let (empty, ended) = {
            let mut table = super::lock(&table);
            (table.empty_cgroups(&job_tasks), table.take_ended())
        };
        // Each a pass over every finished job (10,000 and more): in holds
        // of their own, so a registration waits for one at most.
        super::lock(&table).expire(self.config.retention, wall_now);
        self.finished_cap.apply(&mut super::lock(&table));
        self.health.jobs_evicted = self.finished_cap.evicted();
        self.readings = readings;
        self.save(freed, &ended);
        self.end_empty(empty);
        self.read_kernel_health(tracked);
        Ok(())
    }

    /// Hands the empty cgroups the daemon made for registered jobs to the
    /// remover (their final values are read after the grace) and stops
    /// counting empty adopted ones, which stay where their manager put
    /// them. A job whose last cgroup goes is finished.
    fn end_empty(&mut self, empty: EmptyCgroups) {
        let batch = {
            let mut table = self.table();
            let now = Instant::now();
            for id in &empty.adopted {
                table.remove_cgroup(*id, now);
            }
            empty
                .owned
                .into_iter()
                .map(|(id, path)| {
                    table.removing(id);
                    Removal {
                        id,
                        dir: JobTable::dir(&self.config.mount, &path),
                    }
                })
                .collect()
        };
        self.remover.hand_over(batch, &self.table);
    }
}
