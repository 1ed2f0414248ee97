//! The job table: cgroup ids to jobs, live and finished jobs, and how
//! per-cgroup counters roll up into a job.
//!
//! A job is either registered by a launcher over the socket (identified by
//! the peer's uid and the job id it claims, one cgroup per registering task,
//! or the resource manager's cgroup it was adopted in), or a directory made
//! by hand directly under the monitored root (named by the directory, owned
//! by the directory's owner), or a resource manager's job directory a
//! discovery layout matches (named and owned as the layout says). Cgroups
//! below a known cgroup join its job.
//! A removed cgroup keeps its entry until its final values are read (see
//! [`JobTable::finalizable`]); a job is finished when its last cgroup is.
//!
//! Here the table and its queries; cgroups seen in the tree
//! ([`cgroups`]), the registration handshake ([`handshake`]), spare task
//! cgroups ([`spares`]), samples rolled up into jobs ([`rollup`]) and the
//! saved registry ([`registry`]) each in their own module.
mod cgroups;
mod finished;
mod handshake;
mod job;
mod registry;
mod rollup;
mod spares;
#[cfg(test)]
mod test_util;
mod versioned;

use std::{
    collections::{BTreeMap, HashMap},
    ops::Bound::{Excluded, Unbounded},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use self::versioned::Versioned;
pub use self::{
    finished::FinishedJobs,
    job::{Job, JobKey, JobMeta, Origin},
    rollup::Retiring,
};
use super::discovery::{self, Discovery};
use crate::system::{ids::IdMap, memory::ShrinkSparse};

/// How long after a cgroup's removal its counters are read for the last
/// time: the last task's final switch-out can come just after the rmdir.
pub const FINAL_READ_GRACE: Duration = Duration::from_millis(50);

#[derive(Debug, Clone)]
struct CgroupEntry {
    job: JobKey,
    /// Path in the hierarchy, e.g. `/monitor.slice/task-42`.
    path: String,
    removed_at: Option<Instant>,
    /// False while the registrar is still moving tasks in: an empty cgroup
    /// then does not end its job.
    armed: bool,
    /// Made by the daemon, so removed by it when the job ends.
    owned: bool,
    /// Found empty and handed to be removed: not found empty again
    /// meanwhile. Not saved: a restart finds it empty again.
    removing: bool,
}

impl CgroupEntry {
    /// Removed long enough ago to read its final values.
    fn finalizable(&self, now: Instant) -> bool {
        self.removed_at
            .is_some_and(|at| now.duration_since(at) >= FINAL_READ_GRACE)
    }
}

/// A discovered job whose owner or id its tasks are to tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingIdentity {
    pub key: JobKey,
    /// The owner is to be found (else it is `key.uid`).
    pub owner: bool,
    /// The id is to be found (else it is `key.jobid`).
    pub jobid: bool,
    pub cgroups: Vec<String>,
}

/// What [`JobTable::add_cgroup`] made of a cgroup.
#[derive(Debug, PartialEq, Eq)]
pub enum Added {
    NewJob,
    JoinedJob,
    AlreadyKnown,
    NotAJob,
}

/// Cgroups of registered jobs the sampler found empty.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EmptyCgroups {
    /// Cgroups the daemon made (to rmdir), deepest first.
    pub owned: Vec<(u64, String)>,
    /// Adopted cgroups (left in place; only their counting ends).
    pub adopted: Vec<u64>,
}

/// What [`JobTable::export`] saves: the cgroups and the live jobs.
#[derive(Debug, Default)]
struct State {
    cgroups: IdMap<u64, CgroupEntry>,
    paths: HashMap<String, u64>,
    live: BTreeMap<JobKey, Job>,
}

impl State {
    fn insert_cgroup(&mut self, id: u64, path: &str, job: JobKey, armed: bool, owned: bool) {
        if let Some(live) = self.live.get_mut(&job)
            && live.cgroup.is_empty()
        {
            live.cgroup = path.to_string();
        }
        self.paths.insert(path.to_string(), id);
        self.cgroups.insert(
            id,
            CgroupEntry {
                job,
                path: path.to_string(),
                removed_at: None,
                armed,
                owned,
                removing: false,
            },
        );
    }

    /// Whether any cgroup counts for job `key`.
    fn has_cgroups(&self, key: &JobKey) -> bool {
        self.cgroups.values().any(|e| e.job == *key)
    }
}

#[derive(Debug)]
pub struct JobTable {
    root: String,
    /// Versioned: every change is a new generation, so the registry is
    /// saved only when it changed.
    state: Versioned<State>,
    /// Paths the registrar is about to make, and the job each is for.
    expected: HashMap<String, JobKey>,
    /// Spare task cgroups being made or made and free.
    spares: spares::Spares,
    finished: FinishedJobs,
    /// Adopted cgroups the kernel side does not count yet (the sampler,
    /// which owns the maps, starts counting them).
    untracked: Vec<u64>,
    /// Jobs finished since [`JobTable::take_ended`] was last called: their
    /// profiles are due.
    ended: Vec<Job>,
    /// Resource managers' job layouts.
    discovery: Arc<Discovery>,
    /// The sample's per-job sums, kept for their room (see
    /// [`JobTable::update_sample`]).
    sample_sums: Vec<rollup::JobSample>,
}

impl JobTable {
    /// `root` is the monitored root in hierarchy form (`/monitor.slice`).
    pub fn new(root: &str) -> Self {
        Self {
            root: root.trim_end_matches('/').to_string(),
            state: Versioned::default(),
            expected: HashMap::new(),
            spares: spares::Spares::default(),
            finished: FinishedJobs::default(),
            untracked: Vec::new(),
            ended: Vec::new(),
            discovery: Arc::default(),
            sample_sums: Vec::new(),
        }
    }

    /// Takes resource managers' job directories that `discovery` describes
    /// as jobs.
    pub fn with_discovery(mut self, discovery: Arc<Discovery>) -> Self {
        self.discovery = discovery;
        self
    }

    /// The monitored root in hierarchy form.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// Changes with every change to the exported registry.
    pub fn generation(&self) -> u64 {
        self.state.generation()
    }

    /// Jobs finished since the last call, with their final values.
    pub fn take_ended(&mut self) -> Vec<Job> {
        std::mem::take(&mut self.ended)
    }

    /// Adopted cgroups to start counting (emptied by the call).
    pub fn take_untracked(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.untracked)
    }

    /// Whether cgroup `id` is a job's or a spare one.
    pub fn knows(&self, id: u64) -> bool {
        self.state.cgroups.contains_key(&id) || self.spares.knows(id)
    }

    /// Ids of live cgroups, with their paths and jobs, for task counting.
    pub fn live_cgroups(&self) -> impl Iterator<Item = (u64, &str, &JobKey)> {
        self.state
            .cgroups
            .iter()
            .filter(|(_, e)| e.removed_at.is_none())
            .map(|(id, e)| (*id, e.path.as_str(), &e.job))
    }

    /// Known cgroups whose directories no longer exist, per `exists`.
    pub fn vanished(&self, exists: impl Fn(&str) -> bool) -> Vec<u64> {
        self.state
            .cgroups
            .iter()
            .filter(|(_, e)| e.removed_at.is_none() && !exists(&e.path))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Is this cgroup removed long enough ago to read its final values?
    pub fn finalizable(&self, id: u64, now: Instant) -> bool {
        self.state
            .cgroups
            .get(&id)
            .is_some_and(|e| e.finalizable(now))
    }

    pub fn live_jobs(&self) -> impl Iterator<Item = &Job> {
        self.state.live.values()
    }

    /// The live jobs after `key` (all of them for None), in key order.
    pub fn live_after<'a>(
        &'a self,
        key: Option<&'a JobKey>,
    ) -> Box<dyn Iterator<Item = &'a Job> + 'a> {
        let start = key.map_or(Unbounded, Excluded);
        Box::new(
            self.state
                .live
                .range((start, Unbounded))
                .map(|(_, job)| job),
        )
    }

    pub fn finished_jobs(&self) -> impl Iterator<Item = &Job> {
        self.finished.iter()
    }

    /// The finished jobs after `key` (all of them for None), in key order.
    pub fn finished_after<'a>(
        &'a self,
        key: Option<&'a JobKey>,
    ) -> Box<dyn Iterator<Item = &'a Job> + 'a> {
        Box::new(self.finished.after(key))
    }

    /// Serves `jobs`, finished before a restart (their profiles are in the
    /// store), as the jobs finished since: until their retention ends, or
    /// a job of the same key replaces them.
    pub fn restore_finished(&mut self, jobs: impl IntoIterator<Item = Job>) {
        for job in jobs {
            if !self.state.live.contains_key(&job.key) {
                self.finished.restored(job);
            }
        }
    }

    /// Gives back the room of tables emptied by cgroups that went (see
    /// [`ShrinkSparse`]).
    pub fn shrink_if_sparse(&mut self) {
        // Room is not what the saved registry holds.
        let state = self.state.edit_unsaved();
        state.cgroups.shrink_if_sparse();
        state.paths.shrink_if_sparse();
        self.expected.shrink_if_sparse();
    }

    /// Forgets finished jobs that ended more than `retention` ago.
    pub fn expire(&mut self, retention: Duration, wall_now: SystemTime) {
        self.finished.expire(retention, wall_now);
    }

    /// Takes a finished job out of the retention before its time (its
    /// profile went to the store when it ended).
    pub fn forget_finished(&mut self, key: &JobKey) {
        self.finished.forget(key);
    }

    /// The directory of a cgroup path: under `mount` (the v2 mount), or in
    /// the watched v1 hierarchy for a v1 path (`freezer:/slurm/...`).
    pub fn dir(mount: &Path, path: &str) -> PathBuf {
        discovery::dir(mount, path)
    }
}

#[cfg(test)]
mod tests {
    use super::{test_util::*, *};

    #[test]
    fn finished_jobs_are_taken_in_key_order_after_a_cursor() {
        let mut table = JobTable::new("/monitor.slice");
        let now = Instant::now();
        for (id, name) in [(10, "c"), (11, "a"), (12, "b")] {
            table.add_cgroup(id, &format!("/monitor.slice/{name}"), 0, T);
            table.remove_cgroup(id, now);
        }
        table.apply_sample(&[], &IdMap::default(), now + FINAL_READ_GRACE, T);
        let ids = |after: Option<&JobKey>| -> Vec<String> {
            table
                .finished_after(after)
                .map(|job| job.key.jobid.clone())
                .collect()
        };
        assert_eq!(ids(None), ["a", "b", "c"]);
        assert_eq!(ids(Some(&key(0, "a"))), ["b", "c"]);
        assert_eq!(ids(Some(&key(0, "c"))), Vec::<String>::new());
        // A cursor that is no longer a key (its job went meanwhile) still
        // resumes after it.
        assert_eq!(ids(Some(&key(0, "ab"))), ["b", "c"]);
    }

    #[test]
    fn restored_jobs_are_served_until_a_job_of_their_key_replaces_them() {
        let mut table = JobTable::new("/monitor.slice");
        table.add_cgroup(10, "/monitor.slice/running", 0, T);
        let restored = |jobid: &str| {
            let end = Some(T + Duration::from_secs(100));
            Job::restored(
                key(0, jobid),
                JobMeta::default(),
                "",
                T,
                end,
                counters(1, 1),
            )
        };
        table.restore_finished([restored("running"), restored("a"), restored("b")]);
        let finished = |table: &JobTable| -> Vec<String> {
            table.finished_jobs().map(|j| j.key.jobid.clone()).collect()
        };
        assert_eq!(finished(&table), ["a", "b"], "a live job keeps its key");
        assert_eq!(
            table.add_cgroup(11, "/monitor.slice/a", 0, T),
            Added::NewJob
        );
        assert_eq!(finished(&table), ["b"]);
        table.expire(Duration::from_secs(60), T + Duration::from_secs(161));
        assert!(finished(&table).is_empty(), "expired as the others");
        assert!(table.take_ended().is_empty(), "their profiles are stored");
    }
}
