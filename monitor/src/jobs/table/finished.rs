//! Finished jobs kept for /metrics until their retention ends: those that
//! ended in this run and those a restart took up from the state store, in
//! one set with one expiry rule. Their profiles are in the store already.
use std::{
    collections::BTreeMap,
    ops::Bound::{Excluded, Unbounded},
    time::{Duration, SystemTime},
};

use super::job::{Job, JobKey};

#[derive(Debug, Default)]
pub struct FinishedJobs {
    /// Boxed: a tree node has room for eleven entries and is rarely full,
    /// and a job (two sets of counters) is about 600 bytes, so inline the
    /// empty room was a third of it; a box is one block of exactly a job
    /// (10,000 finished jobs: 6.2 MB, not 8.8).
    jobs: BTreeMap<JobKey, Box<Job>>,
}

impl FinishedJobs {
    /// A job that ended just now; it replaces an older one of its key.
    pub(super) fn ended(&mut self, job: Job) {
        self.jobs.insert(job.key.clone(), Box::new(job));
    }

    /// A job that ended before a restart: of two of one key, the later
    /// ended stays (one series per job).
    pub(super) fn restored(&mut self, job: Job) {
        match self.jobs.get(&job.key) {
            Some(kept) if kept.end >= job.end => {}
            _ => self.ended(job),
        }
    }

    /// A live job of the same key leaves the retention: one series per job.
    pub(super) fn replaced(&mut self, key: &JobKey) {
        self.jobs.remove(key);
    }

    /// Forgets the jobs that ended more than `retention` ago.
    pub fn expire(&mut self, retention: Duration, wall_now: SystemTime) {
        self.jobs.retain(|_, job| {
            job.end
                .and_then(|end| wall_now.duration_since(end).ok())
                .is_none_or(|age| age <= retention)
        });
    }

    /// Takes a job out before its time (its profile went to the store).
    pub fn forget(&mut self, key: &JobKey) {
        self.jobs.remove(key);
    }

    pub fn iter(&self) -> impl Iterator<Item = &Job> {
        self.jobs.values().map(|job| &**job)
    }

    /// The jobs after `key` (all of them for None), in key order.
    pub fn after(&self, key: Option<&JobKey>) -> impl Iterator<Item = &Job> {
        let start = key.map_or(Unbounded, Excluded);
        self.jobs.range((start, Unbounded)).map(|(_, job)| &**job)
    }
}

#[cfg(test)]
mod tests {
    use super::{
        super::{job::JobMeta, test_util::key},
        *,
    };

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn done(jobid: &str, end: u64) -> Job {
        let counters = Default::default();
        Job::restored(
            key(0, jobid),
            JobMeta::default(),
            "",
            at(0),
            Some(at(end)),
            counters,
        )
    }

    fn ids(jobs: &FinishedJobs) -> Vec<&str> {
        jobs.iter().map(|job| job.key.jobid.as_str()).collect()
    }

    #[test]
    fn restored_and_ended_jobs_expire_alike() {
        let mut jobs = FinishedJobs::default();
        jobs.restored(done("old", 100));
        jobs.ended(done("new", 110));
        jobs.expire(Duration::from_secs(60), at(160));
        assert_eq!(ids(&jobs), ["new", "old"]);
        jobs.expire(Duration::from_secs(60), at(161));
        assert_eq!(ids(&jobs), ["new"]);
        jobs.expire(Duration::from_secs(60), at(171));
        assert!(ids(&jobs).is_empty());
    }

    #[test]
    fn of_one_key_the_later_ended_stays() {
        let mut jobs = FinishedJobs::default();
        jobs.restored(done("a", 20));
        jobs.restored(done("a", 10));
        assert_eq!(
            jobs.iter().map(|job| job.end).collect::<Vec<_>>(),
            [Some(at(20))]
        );
        jobs.ended(done("a", 5));
        assert_eq!(
            jobs.iter().map(|job| job.end).collect::<Vec<_>>(),
            [Some(at(5))],
            "a job that ends now replaces the one before"
        );
        jobs.replaced(&key(0, "a"));
        assert!(ids(&jobs).is_empty());
    }
}
