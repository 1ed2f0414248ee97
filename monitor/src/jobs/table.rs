//! The job table: cgroup ids to jobs, live and finished jobs, and how
//! per-cgroup counters roll up into a job.
//!
//! For now a job is a direct child cgroup of the monitored root, named by its
//! directory; its descendants roll up into it. A removed cgroup keeps its
//! entry until its final values are read (see [`JobTable::finalizable`]).
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::PathBuf,
    time::{Duration, Instant, SystemTime},
};

use monitor_common::CgroupCounters;

use crate::system::cgroupfs::job_of;

/// How long after a cgroup's removal its counters are read for the last
/// time: the last task's final switch-out can come just after the rmdir.
pub const FINAL_READ_GRACE: Duration = Duration::from_millis(50);

#[derive(Debug, Clone)]
struct CgroupEntry {
    job: String,
    /// Path in the hierarchy, e.g. `/monitor.slice/job42/step0`.
    path: String,
    removed_at: Option<Instant>,
}

#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub top_cgroup: u64,
    /// Path of the job's cgroup in the hierarchy.
    pub cgroup: String,
    pub uid: u32,
    pub start: SystemTime,
    pub end: Option<SystemTime>,
    /// Final values of the job's cgroups already removed.
    retired: CgroupCounters,
    /// Latest values of the job's live cgroups.
    live: CgroupCounters,
    pub tasks: u64,
}

impl Job {
    pub fn totals(&self) -> CgroupCounters {
        let mut total = self.retired;
        total.add(&self.live);
        total
    }
}

#[derive(Debug)]
pub struct JobTable {
    root: String,
    cgroups: HashMap<u64, CgroupEntry>,
    live: BTreeMap<String, Job>,
    finished: BTreeMap<String, Job>,
}

/// What [`JobTable::add_cgroup`] made of a cgroup.
#[derive(Debug, PartialEq, Eq)]
pub enum Added {
    NewJob,
    JoinedJob,
    AlreadyKnown,
    NotAJob,
}

impl JobTable {
    /// `root` is the monitored root in hierarchy form (`/monitor.slice`).
    pub fn new(root: &str) -> Self {
        Self {
            root: root.trim_end_matches('/').to_string(),
            cgroups: HashMap::new(),
            live: BTreeMap::new(),
            finished: BTreeMap::new(),
        }
    }

    pub fn knows(&self, id: u64) -> bool {
        self.cgroups.contains_key(&id)
    }

    /// Records a cgroup below the root; creates its job if it is a job's top.
    pub fn add_cgroup(&mut self, id: u64, path: &str, uid: u32, created: SystemTime) -> Added {
        if self.cgroups.contains_key(&id) {
            return Added::AlreadyKnown;
        }
        let Some(job) = job_of(&self.root, path) else {
            return Added::NotAJob;
        };
        let job = job.to_string();
        let is_top = path.rsplit_once('/').is_some_and(|(parent, _)| parent == self.root || (parent.is_empty() && self.root == "/"));
        let mut added = Added::JoinedJob;
        if is_top {
            // A job of the same name in retention leaves: one series per jobid.
            self.finished.remove(&job);
            self.live.insert(
                job.clone(),
                Job {
                    name: job.clone(),
                    top_cgroup: id,
                    cgroup: path.to_string(),
                    uid,
                    start: created,
                    end: None,
                    retired: CgroupCounters::default(),
                    live: CgroupCounters::default(),
                    tasks: 0,
                },
            );
            added = Added::NewJob;
        } else if !self.live.contains_key(&job) {
            // A child seen before its job's top (events out of order): the
            // top will come; keep the cgroup so its counters are not lost.
            log::debug!("cgroup {path} seen before its job {job}");
        }
        self.cgroups.insert(
            id,
            CgroupEntry {
                job,
                path: path.to_string(),
                removed_at: None,
            },
        );
        added
    }

    /// Marks a cgroup removed; its final values are read after the grace.
    pub fn remove_cgroup(&mut self, id: u64, now: Instant) {
        if let Some(entry) = self.cgroups.get_mut(&id) {
            entry.removed_at.get_or_insert(now);
        }
    }

    /// Ids of live cgroups, with their paths, for task counting.
    pub fn live_cgroups(&self) -> impl Iterator<Item = (u64, &str, &str)> {
        self.cgroups
            .iter()
            .filter(|(_, e)| e.removed_at.is_none())
            .map(|(id, e)| (*id, e.path.as_str(), e.job.as_str()))
    }

    /// Known cgroups whose directories no longer exist, per `exists`.
    pub fn vanished(&self, exists: impl Fn(&str) -> bool) -> Vec<u64> {
        self.cgroups
            .iter()
            .filter(|(_, e)| e.removed_at.is_none() && !exists(&e.path))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Is this cgroup removed long enough ago to read its final values?
    pub fn finalizable(&self, id: u64, now: Instant) -> bool {
        self.cgroups
            .get(&id)
            .and_then(|e| e.removed_at)
            .is_some_and(|at| now.duration_since(at) >= FINAL_READ_GRACE)
    }

    /// Applies one sample: `readings` has the summed counters of every
    /// known cgroup read this round; `tasks` the thread count per job.
    /// Cgroups that are finalizable get folded into their job for good and
    /// are returned, so the caller can free their map entries.
    pub fn apply_sample(
        &mut self,
        readings: &[(u64, CgroupCounters)],
        tasks: &HashMap<String, u64>,
        now: Instant,
        wall_now: SystemTime,
    ) -> Vec<u64> {
        for job in self.live.values_mut() {
            job.live = CgroupCounters::default();
            job.tasks = tasks.get(&job.name).copied().unwrap_or(0);
        }
        let mut finalized = Vec::new();
        for (id, counters) in readings {
            let Some(entry) = self.cgroups.get(id) else {
                continue;
            };
            let finalize = self.finalizable(*id, now);
            let Some(job) = self.live.get_mut(&entry.job) else {
                continue;
            };
            if finalize {
                job.retired.add(counters);
                finalized.push(*id);
            } else {
                job.live.add(counters);
            }
        }
        for id in &finalized {
            self.retire(*id, wall_now);
        }
        // Removed cgroups whose map entry was never there (map full, or a
        // job made before the daemon that the walk raced): drop them too.
        let read: HashSet<u64> = readings.iter().map(|(id, _)| *id).collect();
        let stale: Vec<u64> = self
            .cgroups
            .keys()
            .filter(|id| self.finalizable(**id, now) && !read.contains(id))
            .copied()
            .collect();
        for id in stale {
            self.retire(id, wall_now);
        }
        finalized
    }

    fn retire(&mut self, id: u64, wall_now: SystemTime) {
        let Some(entry) = self.cgroups.remove(&id) else {
            return;
        };
        let is_top = self.live.get(&entry.job).is_some_and(|job| job.top_cgroup == id);
        if is_top && let Some(mut job) = self.live.remove(&entry.job) {
            job.end = Some(wall_now);
            job.tasks = 0;
            self.finished.insert(job.name.clone(), job);
        }
    }

    /// Forgets finished jobs that ended more than `retention` ago.
    pub fn expire(&mut self, retention: Duration, wall_now: SystemTime) {
        self.finished.retain(|_, job| {
            job.end
                .and_then(|end| wall_now.duration_since(end).ok())
                .is_none_or(|age| age <= retention)
        });
    }

    pub fn live_jobs(&self) -> impl Iterator<Item = &Job> {
        self.live.values()
    }

    pub fn finished_jobs(&self) -> impl Iterator<Item = &Job> {
        self.finished.values()
    }

    /// The directory of a cgroup path under `mount`.
    pub fn dir(mount: &std::path::Path, path: &str) -> PathBuf {
        mount.join(path.trim_start_matches('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(cpu_ns: u64, execs: u64) -> CgroupCounters {
        CgroupCounters {
            cpu_ns,
            execs,
            ..Default::default()
        }
    }

    #[test]
    fn descendants_roll_up_into_their_job() {
        let mut table = JobTable::new("/monitor.slice");
        let t = SystemTime::UNIX_EPOCH;
        assert_eq!(table.add_cgroup(10, "/monitor.slice/a", 0, t), Added::NewJob);
        assert_eq!(table.add_cgroup(11, "/monitor.slice/a/step0", 0, t), Added::JoinedJob);
        assert_eq!(table.add_cgroup(12, "/monitor.slice/b", 0, t), Added::NewJob);
        assert_eq!(table.add_cgroup(13, "/system.slice/x", 0, t), Added::NotAJob);
        assert_eq!(table.add_cgroup(10, "/monitor.slice/a", 0, t), Added::AlreadyKnown);
        let now = Instant::now();
        table.apply_sample(
            &[(10, counters(5, 1)), (11, counters(7, 2)), (12, counters(1, 0))],
            &HashMap::from([("a".to_string(), 3)]),
            now,
            t,
        );
        let a = table.live_jobs().find(|j| j.name == "a").unwrap();
        assert_eq!(a.totals(), counters(12, 3));
        assert_eq!(a.tasks, 3);
    }

    #[test]
    fn removed_cgroups_keep_their_final_values() {
        let mut table = JobTable::new("/monitor.slice");
        let t = SystemTime::UNIX_EPOCH;
        table.add_cgroup(10, "/monitor.slice/a", 0, t);
        table.add_cgroup(11, "/monitor.slice/a/step0", 0, t);
        let start = Instant::now();
        table.remove_cgroup(11, start);
        // Within the grace the removed cgroup still counts as live.
        let freed = table.apply_sample(&[(10, counters(1, 0)), (11, counters(9, 1))], &HashMap::new(), start, t);
        assert!(freed.is_empty());
        let later = start + FINAL_READ_GRACE;
        let freed = table.apply_sample(&[(10, counters(2, 0)), (11, counters(10, 1))], &HashMap::new(), later, t);
        assert_eq!(freed, vec![11]);
        // Its entry is gone from the map now; the job keeps its final values.
        table.apply_sample(&[(10, counters(3, 0))], &HashMap::new(), later, t);
        let a = table.live_jobs().next().unwrap();
        assert_eq!(a.totals(), counters(13, 1));
    }

    #[test]
    fn a_job_ends_when_its_top_cgroup_goes_and_expires_after_retention() {
        let mut table = JobTable::new("/monitor.slice");
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        table.add_cgroup(10, "/monitor.slice/a", 0, t0);
        let now = Instant::now();
        table.remove_cgroup(10, now);
        table.apply_sample(&[(10, counters(4, 1))], &HashMap::new(), now + FINAL_READ_GRACE, t0);
        assert_eq!(table.live_jobs().count(), 0);
        let done = table.finished_jobs().next().unwrap();
        assert_eq!((done.totals(), done.end), (counters(4, 1), Some(t0)));
        table.expire(Duration::from_secs(60), t0 + Duration::from_secs(60));
        assert_eq!(table.finished_jobs().count(), 1);
        table.expire(Duration::from_secs(60), t0 + Duration::from_secs(61));
        assert_eq!(table.finished_jobs().count(), 0);
    }

    #[test]
    fn a_new_job_replaces_a_finished_one_of_the_same_name() {
        let mut table = JobTable::new("/monitor.slice");
        let t = SystemTime::UNIX_EPOCH;
        table.add_cgroup(10, "/monitor.slice/a", 0, t);
        let now = Instant::now();
        table.remove_cgroup(10, now);
        table.apply_sample(&[], &HashMap::new(), now + FINAL_READ_GRACE, t);
        assert_eq!(table.finished_jobs().count(), 1);
        table.add_cgroup(20, "/monitor.slice/a", 0, t);
        assert_eq!((table.finished_jobs().count(), table.live_jobs().count()), (0, 1));
    }
}
