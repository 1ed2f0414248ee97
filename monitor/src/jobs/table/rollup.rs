//! One sample rolled up into the jobs: each job's live figures summed over
//! its cgroups, removed cgroups folded in for good (a job whose last one
//! goes has ended), and the empty cgroups of registered jobs found.
use std::time::{Instant, SystemTime};

use monitor_common::CgroupCounters;

use super::{EmptyCgroups, JobKey, JobTable, Origin, State};
use crate::system::{
    ids::{IdMap, IdSet, KeyMap, KeySet},
    memory::ShrinkSparse,
};

/// What [`JobTable::update_sample`] leaves to [`JobTable::retire`].
#[derive(Debug)]
pub struct Retiring<'r> {
    /// Removed cgroups due to be folded into their jobs, with their final
    /// values if read.
    pub cgroups: Vec<(u64, Option<&'r CgroupCounters>)>,
    /// Of those, the ones read: their map entries can be freed.
    pub freed: Vec<u64>,
}

/// One sample's figures of a job, summed over its live cgroups.
#[derive(Debug, Default)]
pub(super) struct JobSample {
    live: CgroupCounters,
    tasks: u64,
}

impl JobTable {
    /// Adds what cgroup `id` counted before its counters restarted from zero
    /// (programs reloaded) to its job. False when the cgroup is unknown.
    pub fn credit(&mut self, id: u64, counters: &CgroupCounters) -> bool {
        let State { cgroups, live, .. } = self.state.edit();
        let Some(job) = cgroups.get(&id).and_then(|entry| live.get_mut(&entry.job)) else {
            return false;
        };
        job.retired.add(counters);
        true
    }

    /// [`Self::update_sample`] and [`Self::retire`] in one: the tests' form
    /// of what the sampler does in several holds of the table.
    #[cfg(test)]
    pub fn apply_sample(
        &mut self,
        readings: &[(u64, CgroupCounters)],
        tasks: &IdMap<u64, u64>,
        now: Instant,
        wall_now: SystemTime,
    ) -> Vec<u64> {
        let Retiring { cgroups, freed } = self.update_sample(readings, tasks, now);
        self.retire(&cgroups, wall_now);
        freed
    }

    /// Applies one sample: `readings` has the summed counters of every
    /// known cgroup read this round; `tasks` the thread count per cgroup id.
    /// Sets each live job's figures; the finalizable cgroups, due to be
    /// folded into their jobs for good, are returned for [`Self::retire`],
    /// which the sampler calls in batches (each in a hold of the table of
    /// its own: a sample that ended 1,000 jobs held it, and every
    /// registration waiting on it, for 7-15 ms in one), with the ones whose
    /// map entries can be freed.
    pub fn update_sample<'r>(
        &mut self,
        readings: &'r [(u64, CgroupCounters)],
        tasks: &IdMap<u64, u64>,
        now: Instant,
    ) -> Retiring<'r> {
        // The live figures are not saved (the registry holds the retired
        // ones, changed below through `retire`).
        let finalized = update_live(
            self.state.edit_unsaved(),
            &mut self.sample_sums,
            readings,
            tasks,
            now,
        );
        // Room for a burst's jobs is not kept after it (the resident
        // memory goal holds with 10,000 finished jobs).
        self.sample_sums.shrink_if_sparse();
        // Removed cgroups whose map entry was never there (map full, or a
        // cgroup the walk raced): drop them too.
        let read: IdSet<u64> = readings.iter().map(|(id, _)| *id).collect();
        let stale = self
            .state
            .cgroups
            .iter()
            .filter(|(id, entry)| entry.finalizable(now) && !read.contains(*id))
            .map(|(id, _)| (*id, None));
        let cgroups = finalized
            .iter()
            .map(|(id, counters)| (*id, Some(*counters)))
            .chain(stale)
            .collect();
        Retiring {
            cgroups,
            freed: finalized.into_iter().map(|(id, _)| id).collect(),
        }
    }

    /// Folds each cgroup's final values (if read) into its job for good;
    /// a job ends with its last cgroup. In one batch: whether a job has a
    /// cgroup left is one pass over the table for all of them, where one
    /// pass per cgroup made a sample that ended 1,000 jobs hold the table
    /// (and every registration waiting on it) for tens of milliseconds.
    /// Between two batches the table may change (a registration adds a
    /// cgroup to a job): a job ends only if no cgroup of it is left when
    /// its last one in a batch is folded in.
    pub fn retire(&mut self, retiring: &[(u64, Option<&CgroupCounters>)], wall_now: SystemTime) {
        if retiring.is_empty() {
            return;
        }
        let state = self.state.edit();
        // The jobs that lost a cgroup, in the order they did.
        let mut touched: Vec<JobKey> = Vec::new();
        let mut seen: KeySet<JobKey> = KeySet::default();
        for (id, last_values) in retiring {
            let Some(entry) = state.cgroups.remove(id) else {
                continue;
            };
            if state.paths.get(&entry.path) == Some(id) {
                state.paths.remove(&entry.path);
            }
            if let Some(counters) = last_values
                && let Some(job) = state.live.get_mut(&entry.job)
            {
                job.retired.add(counters);
            }
            if seen.insert(entry.job.clone()) {
                touched.push(entry.job);
            }
        }
        // Of those, the jobs with a cgroup left or still expected.
        let kept: KeySet<&JobKey> = state
            .cgroups
            .values()
            .map(|e| &e.job)
            .chain(self.expected.values())
            .filter(|key| seen.contains(*key))
            .collect();
        let ending: Vec<JobKey> = touched
            .into_iter()
            .filter(|key| !kept.contains(key))
            .collect();
        for key in ending {
            let Some(mut job) = state.live.remove(&key) else {
                continue;
            };
            job.end = Some(wall_now);
            job.tasks = 0;
            job.live = CgroupCounters::default();
            if job.owner_pending || job.jobid_pending {
                // Never seen with a task of a user: shown as its
                // directory's owner's, under its directory's id, rather
                // than lost.
                job.owner_pending = false;
                job.jobid_pending = false;
                job.visible = true;
            }
            if job.visible {
                self.ended.push(job.clone());
                self.finished.ended(job);
            }
        }
    }

    /// Cgroups of registered jobs with no task left (per `tasks`, threads by
    /// cgroup id): the caller removes the ones the daemon made and stops
    /// counting adopted ones. A job ends when its last cgroup is gone, so
    /// "no task in any of its cgroups" ends it; a task that re-registers
    /// elsewhere leaves no empty cgroup behind. Cgroups still being filled
    /// (unarmed) or being removed, and jobs whose id is not settled yet,
    /// are left alone.
    pub fn empty_cgroups(&self, tasks: &IdMap<u64, u64>) -> EmptyCgroups {
        let mut empty = EmptyCgroups::default();
        for (id, entry) in &self.state.cgroups {
            // The job is looked up last: most cgroups have tasks.
            if !entry.armed
                || entry.removing
                || entry.removed_at.is_some()
                || tasks.get(id).copied().unwrap_or(0) > 0
            {
                continue;
            }
            let registered = self
                .state
                .live
                .get(&entry.job)
                .is_some_and(|job| job.origin == Origin::Registered && job.visible);
            if !registered {
                continue;
            }
            if entry.owned {
                empty.owned.push((*id, entry.path.clone()));
            } else {
                empty.adopted.push(*id);
            }
        }
        // Children before parents.
        empty
            .owned
            .sort_by_key(|(_, p)| std::cmp::Reverse(p.matches('/').count()));
        empty
    }
}

/// Sets each live job's figures to the sum over its live cgroups; returns
/// the readings of removed cgroups due for their final read (whose job is
/// live), left for the caller to fold in.
fn update_live<'r>(
    state: &mut State,
    sums: &mut Vec<JobSample>,
    readings: &'r [(u64, CgroupCounters)],
    tasks: &IdMap<u64, u64>,
    now: Instant,
) -> Vec<(u64, &'r CgroupCounters)> {
    let State { cgroups, live, .. } = state;
    // Summed per job into `sums` (kept between samples: at 1,000 jobs a
    // fresh one was a fresh mapping, page faults every sample). A job's
    // place there is found by one hash of its key per cgroup (a string
    // out of cache: the costly part), the readings then by cgroup id.
    // Searching the ordered job map by key instead was a string
    // comparison ten times over per cgroup.
    sums.clear();
    let mut job_index: KeyMap<&JobKey, usize> =
        KeyMap::with_capacity_and_hasher(live.len(), Default::default());
    let mut cgroup_index: IdMap<u64, usize> =
        IdMap::with_capacity_and_hasher(cgroups.len(), Default::default());
    for (id, entry) in cgroups.iter() {
        let index = *job_index.entry(&entry.job).or_insert_with(|| {
            sums.push(JobSample::default());
            sums.len() - 1
        });
        cgroup_index.insert(*id, index);
        let threads = tasks.get(id).copied().unwrap_or(0);
        if threads > 0 && entry.removed_at.is_none() {
            sums[index].tasks += threads;
        }
    }
    let mut finalized = Vec::new();
    for (id, counters) in readings {
        let (Some(entry), Some(&index)) = (cgroups.get(id), cgroup_index.get(id)) else {
            continue;
        };
        if entry.finalizable(now) {
            if live.contains_key(&entry.job) {
                finalized.push((*id, counters));
            }
        } else {
            sums[index].live.add(counters);
        }
    }
    for job in live.values_mut() {
        match job_index.get(&job.key) {
            Some(&index) => {
                job.live = sums[index].live;
                job.tasks = sums[index].tasks;
            }
            None => {
                job.live = CgroupCounters::default();
                job.tasks = 0;
            }
        }
    }
    finalized
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{
        super::{FINAL_READ_GRACE, JobMeta, test_util::*},
        *,
    };

    #[test]
    fn removed_cgroups_keep_their_final_values() {
        let mut table = JobTable::new("/monitor.slice");
        table.add_cgroup(10, "/monitor.slice/a", 0, T);
        table.add_cgroup(11, "/monitor.slice/a/step0", 0, T);
        let start = Instant::now();
        table.remove_cgroup(11, start);
        // Within the grace the removed cgroup still counts as live.
        let freed = table.apply_sample(
            &[(10, counters(1, 0)), (11, counters(9, 1))],
            &IdMap::default(),
            start,
            T,
        );
        assert!(freed.is_empty());
        let later = start + FINAL_READ_GRACE;
        let freed = table.apply_sample(
            &[(10, counters(2, 0)), (11, counters(10, 1))],
            &IdMap::default(),
            later,
            T,
        );
        assert_eq!(freed, vec![11]);
        table.apply_sample(&[(10, counters(3, 0))], &IdMap::default(), later, T);
        let a = table.live_jobs().next().unwrap();
        assert_eq!(a.totals(), counters(13, 1));
    }

    #[test]
    fn a_job_ends_with_its_last_cgroup_and_expires_after_retention() {
        let mut table = JobTable::new("/monitor.slice");
        let t0 = T + Duration::from_secs(1000);
        table.add_cgroup(10, "/monitor.slice/a", 0, t0);
        let now = Instant::now();
        table.remove_cgroup(10, now);
        table.apply_sample(
            &[(10, counters(4, 1))],
            &IdMap::default(),
            now + FINAL_READ_GRACE,
            t0,
        );
        assert_eq!(table.live_jobs().count(), 0);
        let done = table.finished_jobs().next().unwrap();
        assert_eq!((done.totals(), done.end), (counters(4, 1), Some(t0)));
        table.expire(Duration::from_secs(60), t0 + Duration::from_secs(60));
        assert_eq!(table.finished_jobs().count(), 1);
        table.expire(Duration::from_secs(60), t0 + Duration::from_secs(61));
        assert_eq!(table.finished_jobs().count(), 0);
    }

    /// The registry is saved when it changed: live figures are not in it,
    /// a removed cgroup's final values are.
    #[test]
    fn only_final_values_make_a_new_generation() {
        let mut table = JobTable::new("/monitor.slice");
        table.add_cgroup(10, "/monitor.slice/a", 0, T);
        table.add_cgroup(11, "/monitor.slice/a/step", 0, T);
        let generation = table.generation();
        let now = Instant::now();
        let busy = IdMap::from_iter([(10, 1)]);
        table.apply_sample(&[(10, counters(1, 0))], &busy, now, T);
        table.remove_cgroup(11, now);
        table.apply_sample(&[(11, counters(2, 0))], &busy, now, T);
        assert_eq!(table.generation(), generation);
        let freed = table.apply_sample(&[(11, counters(3, 0))], &busy, now + FINAL_READ_GRACE, T);
        assert_eq!(freed, [11]);
        assert_ne!(table.generation(), generation);
        assert_eq!(table.export().jobs[0].retired, counters(3, 0));
    }

    #[test]
    fn empty_cgroups_of_registered_jobs_go_but_not_while_moving_tasks() {
        let mut table = JobTable::new("/monitor.slice");
        let job = key(1000, "42");
        assert!(table.register_job(&job, JobMeta::default(), "/monitor.slice/task-1", T));
        table.expect_cgroup("/monitor.slice/task-1", &job);
        assert_eq!(table.task_cgroups_of(1000), 1);
        table.made_cgroup("/monitor.slice/task-1", Some(1));
        table.settle(1, &job, JobMeta::default());
        table.adopt_cgroup(7, "/system.slice/slurmstepd.scope/job_42/step_0", &job);
        assert_eq!(
            table.task_cgroups_of(1000),
            1,
            "adopted cgroups are not the daemon's"
        );
        let now = Instant::now();
        assert_eq!(
            table.empty_cgroups(&IdMap::default()),
            EmptyCgroups {
                owned: vec![],
                adopted: vec![7]
            },
            "task-1 is not armed yet"
        );
        table.arm(1);
        let busy = IdMap::from_iter([(1, 2), (7, 1)]);
        assert_eq!(
            table.empty_cgroups(&busy),
            EmptyCgroups::default(),
            "tasks are running"
        );
        assert_eq!(
            table.empty_cgroups(&IdMap::from_iter([(7, 1)])),
            EmptyCgroups {
                owned: vec![(1, "/monitor.slice/task-1".into())],
                adopted: vec![]
            },
            "one empty cgroup goes while the job lives on"
        );
        table.remove_cgroup(1, now);
        table.remove_cgroup(7, now);
        table.apply_sample(
            &[(1, counters(5, 1)), (7, counters(6, 0))],
            &IdMap::default(),
            now + FINAL_READ_GRACE,
            T,
        );
        let done = table.finished_jobs().next().unwrap();
        assert_eq!(done.totals(), counters(11, 1));
    }

    #[test]
    fn directory_jobs_are_not_ended_by_the_daemon() {
        let mut table = JobTable::new("/monitor.slice");
        table.add_cgroup(10, "/monitor.slice/a", 0, T);
        table.apply_sample(&[], &IdMap::default(), Instant::now(), T);
        assert_eq!(
            table.empty_cgroups(&IdMap::default()),
            EmptyCgroups::default()
        );
    }
}
