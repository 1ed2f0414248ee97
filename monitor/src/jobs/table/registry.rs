//! The table's running jobs to and from the registry the state store keeps
//! (see [`crate::jobs::registry`]), so a restarted daemon takes them up.
use std::collections::HashMap;

use super::{Job, JobKey, JobMeta, JobTable, Origin};
use crate::{
    jobs::registry::{Registry, SavedCgroup, SavedJob},
    system::time::{from_unix_seconds, unix_seconds},
};

impl JobTable {
    /// The running jobs and their cgroups, for the state store.
    pub fn export(&self) -> Registry {
        let mut cgroups: HashMap<&JobKey, Vec<SavedCgroup>> = HashMap::new();
        for (id, entry) in &self.state.cgroups {
            cgroups.entry(&entry.job).or_default().push(SavedCgroup {
                id: *id,
                path: entry.path.clone(),
                owned: entry.owned,
            });
        }
        let jobs = self
            .state
            .live
            .values()
            .map(|job| {
                let mut cgroups = cgroups.remove(&job.key).unwrap_or_default();
                cgroups.sort_by_key(|c| c.id);
                SavedJob {
                    uid: job.key.uid,
                    jobid: job.key.jobid.clone(),
                    name: job.meta.name.clone(),
                    user: job.meta.user.clone(),
                    labels: job.meta.labels.clone(),
                    launcher: job.meta.launcher.clone(),
                    registered: job.origin == Origin::Registered,
                    cgroup: job.cgroup.clone(),
                    start: unix_seconds(job.start),
                    visible: job.visible,
                    owner_pending: job.owner_pending,
                    jobid_pending: job.jobid_pending,
                    retired: job.retired,
                    cgroups,
                }
            })
            .collect();
        Registry { jobs }
    }

    /// Takes up the running jobs an earlier run saved (before the walk of
    /// the root, so their cgroups keep their jobs). Returns the cgroup ids,
    /// for the caller to find their counter slots.
    pub fn import(&mut self, registry: Registry) -> Vec<u64> {
        let state = self.state.edit();
        let mut ids = Vec::new();
        for saved in registry.jobs {
            let key = JobKey {
                uid: saved.uid,
                jobid: saved.jobid,
            };
            let origin = if saved.registered {
                Origin::Registered
            } else {
                Origin::Directory
            };
            let start = from_unix_seconds(saved.start);
            let mut job = Job::new(key.clone(), origin, &saved.cgroup, start);
            job.meta = JobMeta {
                name: saved.name,
                user: saved.user,
                labels: saved.labels,
                launcher: saved.launcher,
            };
            // A registration in flight when the earlier run stopped (saved
            // before its id was settled): its launcher's connection went
            // with that run, so it is settled now under the id it had, as
            // a silent launcher's job, and ends when its cgroups empty.
            job.visible = saved.visible || saved.registered;
            job.owner_pending = saved.owner_pending;
            job.jobid_pending = saved.jobid_pending;
            job.retired = saved.retired;
            if saved.registered && saved.cgroups.is_empty() {
                // Saved between its registration and its cgroup's making:
                // nothing ran in it, nothing would ever end it.
                continue;
            }
            // A job that finished before the restart under the same key
            // leaves: one series per job.
            self.finished.replaced(&key);
            state.live.insert(key.clone(), job);
            for cgroup in saved.cgroups {
                if state.cgroups.contains_key(&cgroup.id) {
                    continue;
                }
                state.insert_cgroup(cgroup.id, &cgroup.path, key.clone(), true, cgroup.owned);
                ids.push(cgroup.id);
            }
        }
        ids
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Instant, SystemTime};

    use super::{
        super::{Added, FINAL_READ_GRACE, test_util::*},
        *,
    };
    use crate::system::ids::IdMap;

    /// A saved start no `SystemTime` holds panicked in import, as it did
    /// for stored profiles: it is taken as the epoch.
    #[test]
    fn a_saved_start_past_what_system_time_holds_is_the_epoch() {
        let mut table = JobTable::new("/monitor.slice");
        table.add_cgroup(2, "/monitor.slice/dir", 0, T);
        let mut saved = table.export();
        saved.jobs[0].start = 1e19;
        let mut restarted = JobTable::new("/monitor.slice");
        assert_eq!(restarted.import(saved), vec![2]);
        let job = restarted.live_jobs().next().unwrap();
        assert_eq!(job.start, SystemTime::UNIX_EPOCH);
    }

    #[test]
    fn the_registry_round_trips_running_jobs_and_ended_jobs_are_reported_once() {
        let mut table = JobTable::new("/monitor.slice");
        register(&mut table, 1, "/monitor.slice/task-1", &key(1000, "run_1"));
        let meta = JobMeta {
            name: "lammps".into(),
            ..Default::default()
        };
        table.settle(1, &key(1000, "42"), meta);
        table.add_cgroup(2, "/monitor.slice/dir", 0, T);
        let now = Instant::now();
        table.add_cgroup(3, "/monitor.slice/dir/step", 0, T);
        table.remove_cgroup(3, now);
        table.apply_sample(
            &[(3, counters(7, 1))],
            &IdMap::default(),
            now + FINAL_READ_GRACE,
            T,
        );
        let saved = table.export();
        let json = serde_json::to_string(&saved).unwrap();
        let generation = table.generation();
        table.arm(1);
        table.remove_cgroup(2, now);
        assert_eq!(table.generation(), generation, "nothing exported changed");
        table.credit(1, &counters(1, 0));
        assert_ne!(
            table.generation(),
            generation,
            "a job's retired values changed"
        );

        let mut restarted = JobTable::new("/monitor.slice");
        let mut ids = restarted.import(serde_json::from_str(&json).unwrap());
        ids.sort();
        assert_eq!(ids, vec![1, 2]);
        assert_eq!(restarted.export(), saved);
        assert_eq!(
            restarted.add_cgroup(1, "/monitor.slice/task-1", 1000, T),
            Added::AlreadyKnown
        );
        let dir = restarted
            .live_jobs()
            .find(|j| j.key.jobid == "dir")
            .unwrap();
        assert_eq!(
            dir.totals(),
            counters(7, 1),
            "a removed cgroup's values survive the restart"
        );
        let job = restarted.live_jobs().find(|j| j.key.jobid == "42").unwrap();
        assert_eq!(
            (job.meta.name.as_str(), job.origin, job.visible),
            ("lammps", Origin::Registered, true)
        );

        restarted.remove_cgroup(1, now);
        restarted.apply_sample(
            &[(1, counters(5, 1))],
            &IdMap::default(),
            now + FINAL_READ_GRACE,
            T,
        );
        let ended = restarted.take_ended();
        assert_eq!(ended.len(), 1);
        assert_eq!(
            (ended[0].key.jobid.as_str(), ended[0].totals()),
            ("42", counters(5, 1))
        );
        assert!(restarted.take_ended().is_empty());
    }

    #[test]
    fn registrations_in_flight_at_a_restart_are_settled_or_dropped() {
        let mut table = JobTable::new("/monitor.slice");
        // Placed, its hello not in yet.
        register(
            &mut table,
            1,
            "/monitor.slice/task-1-1",
            &key(1000, "run_1"),
        );
        // Registered, its cgroup not made yet.
        assert!(table.register_job(&key(1000, "run_2"), JobMeta::default(), "", T));
        let json = serde_json::to_string(&table.export()).unwrap();

        let mut restarted = JobTable::new("/monitor.slice");
        assert_eq!(
            restarted.import(serde_json::from_str(&json).unwrap()),
            vec![1]
        );
        let jobs: Vec<(&JobKey, bool)> =
            restarted.live_jobs().map(|j| (&j.key, j.visible)).collect();
        assert_eq!(jobs, vec![(&key(1000, "run_1"), true)]);
        assert_eq!(
            restarted.empty_cgroups(&IdMap::default()).owned,
            vec![(1, "/monitor.slice/task-1-1".to_string())],
            "removed once empty, ending its job"
        );
    }
}
