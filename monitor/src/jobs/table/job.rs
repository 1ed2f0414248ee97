//! A job as the table keeps it: who it is, what its launcher said, and its
//! counters (those of its removed cgroups, and the latest of its live ones).
use std::{collections::BTreeMap, time::SystemTime};

use monitor_common::CgroupCounters;

/// Jobs are per uid: two users' job "42" are two jobs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobKey {
    pub uid: u32,
    pub jobid: String,
}

/// What a launcher said about its job (all optional).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobMeta {
    pub name: String,
    /// The user name, when a root launcher set it.
    pub user: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Basename of the executable that registered the job.
    pub launcher: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A directory made under the monitored root by someone else, or a
    /// resource manager's job directory (see [`crate::jobs::discovery`]).
    Directory,
    /// Registered over the launcher socket.
    Registered,
}

#[derive(Debug, Clone)]
pub struct Job {
    pub key: JobKey,
    pub meta: JobMeta,
    pub origin: Origin,
    /// Path of the job's first cgroup.
    pub cgroup: String,
    pub start: SystemTime,
    pub end: Option<SystemTime>,
    /// Shown in /metrics: a registration is hidden until its id is settled.
    pub visible: bool,
    /// Final values of the job's cgroups already removed.
    pub(super) retired: CgroupCounters,
    /// Latest values of the job's live cgroups.
    pub(super) live: CgroupCounters,
    pub tasks: u64,
    /// A resource manager's job whose layout names no owner: hidden until
    /// one of its tasks' uid does (see [`super::JobTable::resolve_identity`]).
    pub owner_pending: bool,
    /// Its directory is named by a SLUID: hidden until one of its tasks'
    /// `SLURM_JOB_ID` names it.
    pub jobid_pending: bool,
}

impl Job {
    pub(super) fn new(key: JobKey, origin: Origin, cgroup: &str, start: SystemTime) -> Self {
        Self {
            key,
            meta: JobMeta::default(),
            origin,
            cgroup: cgroup.to_string(),
            start,
            end: None,
            visible: origin == Origin::Directory,
            retired: CgroupCounters::default(),
            live: CgroupCounters::default(),
            tasks: 0,
            owner_pending: false,
            jobid_pending: false,
        }
    }

    /// A job that finished before a restart, as its stored profile says
    /// (see [`super::JobTable::restore_finished`]). How it began is not
    /// stored, and no longer matters.
    pub fn restored(
        key: JobKey,
        meta: JobMeta,
        cgroup: &str,
        start: SystemTime,
        end: Option<SystemTime>,
        totals: CgroupCounters,
    ) -> Self {
        Self {
            meta,
            end,
            visible: true,
            retired: totals,
            ..Self::new(key, Origin::Registered, cgroup, start)
        }
    }

    pub fn totals(&self) -> CgroupCounters {
        let mut total = self.retired;
        total.add(&self.live);
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_are_the_retired_and_the_live_counters() {
        let key = JobKey {
            uid: 1000,
            jobid: "42".into(),
        };
        let mut job = Job::new(key, Origin::Directory, "/m/a", SystemTime::UNIX_EPOCH);
        job.retired.cpu_ns = 3;
        job.live.cpu_ns = 4;
        job.live.rss_peak_bytes = 9;
        let totals = job.totals();
        assert_eq!((totals.cpu_ns, totals.rss_peak_bytes), (7, 9));
    }

    #[test]
    fn a_restored_job_is_shown_with_its_stored_totals() {
        let key = JobKey {
            uid: 1000,
            jobid: "42".into(),
        };
        let totals = CgroupCounters {
            cpu_ns: 5,
            rss_delta_bytes: 4096,
            ..Default::default()
        };
        let end = Some(SystemTime::UNIX_EPOCH);
        let job = Job::restored(
            key,
            JobMeta::default(),
            "/m/a",
            SystemTime::UNIX_EPOCH,
            end,
            totals,
        );
        assert_eq!((job.totals(), job.end, job.visible), (totals, end, true));
    }
}
