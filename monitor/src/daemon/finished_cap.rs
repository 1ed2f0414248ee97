//! Finished jobs kept in /metrics per user: within `--job.retention` each
//! non-root uid keeps its `--job.retention.max-per-user` most recent; its
//! older ones leave /metrics early. Their profiles were handed to the state
//! store when they ended, so the store and the job API keep every one.
//! Root is exempt: its jobs are the resource manager's and the site's.
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use crate::{
    jobs::{JobKey, JobTable},
    snapshot::JobView,
    system::log_every::LogEvery,
};

/// How often evictions are logged (with their count).
const LOG_EVERY: Duration = Duration::from_secs(60);

pub struct FinishedCap {
    per_user: usize,
    evicted: u64,
    log: LogEvery,
}

/// Where a finished job is held.
enum Held {
    Table(JobKey),
    /// Index in the jobs restored from the store after a restart.
    Restored(usize),
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
    /// of `table` and `restored` (jobs finished before a restart).
    pub fn apply(&mut self, table: &mut JobTable, restored: &mut Vec<Arc<JobView>>) {
        // Counted first, so the usual case (nobody over) clones no key.
        let mut counts: HashMap<u32, usize> = HashMap::new();
        let uids = table
            .finished_jobs()
            .map(|job| job.key.uid)
            .chain(restored.iter().map(|job| job.uid));
        for uid in uids.filter(|uid| *uid != 0) {
            *counts.entry(uid).or_default() += 1;
        }
        counts.retain(|_, count| *count > self.per_user);
        if counts.is_empty() {
            return;
        }
        let over = |uid: &u32| counts.contains_key(uid);
        let in_table = table
            .finished_jobs()
            .filter(|job| over(&job.key.uid))
            .map(|job| {
                let end = job.end.unwrap_or(job.start);
                (job.key.uid, end, Held::Table(job.key.clone()))
            });
        let in_restored = restored
            .iter()
            .enumerate()
            .filter(|(_, job)| over(&job.uid))
            .map(|(index, job)| (job.uid, job.end.unwrap_or(job.start), Held::Restored(index)));
        let gone = oldest_beyond(in_table.chain(in_restored), self.per_user);
        let count = gone.len() as u64;
        let mut gone_restored = HashSet::new();
        for held in gone {
            match held {
                Held::Table(key) => table.forget_finished(&key),
                Held::Restored(index) => {
                    gone_restored.insert(index);
                }
            }
        }
        if !gone_restored.is_empty() {
            let mut index = 0;
            restored.retain(|_| {
                index += 1;
                !gone_restored.contains(&(index - 1))
            });
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

    fn view(uid: u32, jobid: &str, end: u64) -> Arc<JobView> {
        Arc::new(JobView {
            jobid: jobid.into(),
            user: String::new(),
            uid,
            name: String::new(),
            launcher: String::new(),
            labels: Default::default(),
            cgroup: String::new(),
            counters: Default::default(),
            files: Default::default(),
            tasks: 0,
            start: at(0),
            end: Some(at(end)),
            series: Default::default(),
        })
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
        let mut restored = vec![
            view(1000, "old1", 1),
            view(1000, "old2", 2),
            view(7, "x", 1),
        ];
        let mut cap = FinishedCap::new(2);
        cap.apply(&mut table, &mut restored);
        let mut left: Vec<&str> = table
            .finished_jobs()
            .map(|job| job.key.jobid.as_str())
            .collect();
        left.sort_unstable();
        assert_eq!(left, ["new2", "new3", "r1", "r2", "r3", "r4"]);
        let restored: Vec<&str> = restored.iter().map(|job| job.jobid.as_str()).collect();
        assert_eq!(restored, ["x"]);
        assert_eq!(cap.evicted(), 3);
    }
}
