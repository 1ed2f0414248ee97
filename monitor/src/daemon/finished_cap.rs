//! Finished jobs kept in /metrics per user: within `--job.retention` each
//! non-root uid keeps its `--job.retention.max-per-user` most recent; its
//! older ones leave /metrics early. Their profiles were handed to the state
//! store when they ended, so the store and the job API keep every one.
//! Root is exempt: its jobs are the resource manager's and the site's.
use std::{
    collections::HashMap,
    time::{Duration, Instant, SystemTime},
};

use crate::{jobs::JobTable, system::log_every::LogEvery};

/// How often evictions are logged (with their count).
const LOG_EVERY: Duration = Duration::from_secs(60);

pub struct FinishedCap {
    per_user: usize,
    evicted: u64,
    log: LogEvery,
}

impl FinishedCap {
    pub fn new(per_user: usize) -> Self {
        Self {
            per_user,
            evicted: 0,
            log: LogEvery::new(LOG_EVERY),
        }
    }

    /// Finished jobs taken out of /metrics early so far.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Takes each non-root uid's oldest finished jobs beyond the limit out
    /// of `table` (which holds those finished before a restart too).
    pub fn apply(&mut self, table: &mut JobTable) {
        // Counted first, so the usual case (nobody over) clones no key.
        let mut counts: HashMap<u32, usize> = HashMap::new();
        let uids = table.finished_jobs().map(|job| job.key.uid);
        for uid in uids.filter(|uid| *uid != 0) {
            *counts.entry(uid).or_default() += 1;
        }
        counts.retain(|_, count| *count > self.per_user);
        if counts.is_empty() {
            return;
        }
        let over = table
            .finished_jobs()
            .filter(|job| counts.contains_key(&job.key.uid))
            .map(|job| (job.key.uid, job.end.unwrap_or(job.start), job.key.clone()));
        let gone = oldest_beyond(over, self.per_user);
        let count = gone.len() as u64;
        for key in &gone {
            table.forget_finished(key);
        }
        self.evicted += count;
        if let Some(since) = self.log.note(count, Instant::now()) {
            let mut uids: Vec<u32> = counts.into_keys().collect();
            uids.sort_unstable();
            log::warn!(
                "{since} finished jobs left /metrics before their retention since the last such line: uid {uids:?} over {} finished jobs (--job.retention.max-per-user); their profiles stay in the state store",
                self.per_user
            );
        }
    }
}

/// Of each uid's `(uid, end, item)`, the items beyond its `limit` most
/// recent by end time, oldest first.
fn oldest_beyond<T>(jobs: impl IntoIterator<Item = (u32, SystemTime, T)>, limit: usize) -> Vec<T> {
    let mut by_uid: HashMap<u32, Vec<(SystemTime, T)>> = HashMap::new();
    for (uid, end, item) in jobs {
        by_uid.entry(uid).or_default().push((end, item));
    }
    let mut beyond = Vec::new();
    for mut jobs in by_uid.into_values() {
        if jobs.len() <= limit {
            continue;
        }
        jobs.sort_by_key(|(end, _)| *end);
        let excess = jobs.len() - limit;
        beyond.extend(jobs.into_iter().take(excess).map(|(_, item)| item));
    }
    beyond
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::{JobKey, table::Job};

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn each_uid_keeps_its_most_recent() {
        let jobs = [
            (1, at(30), "a3"),
            (1, at(10), "a1"),
            (2, at(5), "b1"),
            (1, at(20), "a2"),
            (1, at(40), "a4"),
        ];
        let mut gone = oldest_beyond(jobs, 2);
        gone.sort_unstable();
        assert_eq!(gone, ["a1", "a2"]);
        assert!(oldest_beyond(jobs, 4).is_empty());
    }

    fn finished(table: &mut JobTable, id: u64, uid: u32, name: &str) {
        let path = format!("/m/{name}");
        assert_eq!(
            table.add_cgroup(id, &path, uid, at(id)),
            crate::jobs::table::Added::NewJob
        );
        let now = Instant::now();
        table.remove_cgroup(id, now);
        table.apply_sample(
            &[],
            &crate::system::ids::IdMap::default(),
            now + crate::jobs::table::FINAL_READ_GRACE,
            at(id),
        );
    }

    fn restored(uid: u32, jobid: &str, end: u64) -> Job {
        let key = JobKey {
            uid,
            jobid: jobid.into(),
        };
        let meta = Default::default();
        Job::restored(key, meta, "", at(0), Some(at(end)), Default::default())
    }

    #[test]
    fn the_oldest_leave_the_table_and_the_restored_jobs_first_and_root_is_exempt() {
        let mut table = JobTable::new("/m");
        for (id, name) in [(10, "new1"), (11, "new2"), (12, "new3")] {
            finished(&mut table, id, 1000, name);
        }
        for (id, name) in [(13, "r1"), (14, "r2"), (15, "r3"), (16, "r4")] {
            finished(&mut table, id, 0, name);
        }
        table.restore_finished([
            restored(1000, "old1", 1),
            restored(1000, "old2", 2),
            restored(7, "x", 1),
        ]);
        let mut cap = FinishedCap::new(2);
        cap.apply(&mut table);
        let mut left: Vec<&str> = table
            .finished_jobs()
            .map(|job| job.key.jobid.as_str())
            .collect();
        left.sort_unstable();
        assert_eq!(left, ["new2", "new3", "r1", "r2", "r3", "r4", "x"]);
        assert_eq!(cap.evicted(), 3);
    }
}
