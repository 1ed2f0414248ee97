//! The registration handshake, as the launcher side drives it: a job
//! registered under a provisional id, the task cgroup it is about to make
//! (expected, then made, then armed once its tasks are in) or the resource
//! manager's cgroup it adopts, and the id the launcher's hello settles.
use std::time::SystemTime;

use super::{Job, JobKey, JobMeta, JobTable, Origin};

/// Labels a discovered job takes from the launchers that join it, in all.
const MAX_JOINED_LABELS: usize = 32;

impl JobTable {
    /// Starts a registered job (or returns false when it is live already).
    pub fn register_job(
        &mut self,
        key: &JobKey,
        meta: JobMeta,
        cgroup: &str,
        start: SystemTime,
    ) -> bool {
        if self.state.live.contains_key(key) {
            return false;
        }
        self.finished.replaced(key);
        let mut job = Job::new(key.clone(), Origin::Registered, cgroup, start);
        job.meta = meta;
        self.state.edit().live.insert(key.clone(), job);
        true
    }

    /// The registrar is about to make `path` for `key`'s job.
    pub fn expect_cgroup(&mut self, path: &str, key: &JobKey) {
        self.expected.insert(path.to_string(), key.clone());
    }

    /// The registrar made `path` (id `id`), or gave up on it (`None`).
    pub fn made_cgroup(&mut self, path: &str, id: Option<u64>) {
        let Some(key) = self.expected.remove(path) else {
            return;
        };
        if let Some(id) = id
            && !self.knows(id)
        {
            self.state.edit().insert_cgroup(id, path, key, false, true);
        }
    }

    /// Counts a resource manager's cgroup for `key` without moving anything.
    pub fn adopt_cgroup(&mut self, id: u64, path: &str, key: &JobKey) {
        match self.state.cgroups.get(&id) {
            // Adopted again by a later task of the same job: nothing to do.
            Some(entry) if entry.job == *key && entry.removed_at.is_none() => {}
            _ => {
                self.state
                    .edit()
                    .insert_cgroup(id, path, key.clone(), true, false);
                self.untracked.push(id);
            }
        }
    }

    /// The live job counting cgroup `id`, if any.
    pub fn job_of_cgroup(&self, id: u64) -> Option<JobKey> {
        self.state
            .cgroups
            .get(&id)
            .filter(|entry| entry.removed_at.is_none() && self.state.live.contains_key(&entry.job))
            .map(|entry| entry.job.clone())
    }

    /// The registrar finished moving tasks into cgroup `id`.
    pub fn arm(&mut self, id: u64) {
        // Not saved: a registration the restart takes up is armed then.
        if let Some(entry) = self.state.edit_unsaved().cgroups.get_mut(&id) {
            entry.armed = true;
        }
    }

    /// Settles the id of the job that cgroup `id` was provisionally given:
    /// the cgroup joins `key`'s job (made if needed, with `meta`), and the
    /// provisional job goes if that was its only cgroup. Returns false when
    /// the cgroup is unknown.
    pub fn settle(&mut self, id: u64, key: &JobKey, meta: JobMeta) -> bool {
        if !self.knows(id) {
            return false;
        }
        let state = self.state.edit();
        let Some(entry) = state.cgroups.get_mut(&id) else {
            return false;
        };
        let provisional = std::mem::replace(&mut entry.job, key.clone());
        if provisional != *key {
            let old = if state.has_cgroups(&provisional) {
                None
            } else {
                state.live.remove(&provisional)
            };
            match state.live.get_mut(key) {
                Some(job) => {
                    if let Some(old) = old {
                        job.retired.add(&old.retired);
                        job.start = job.start.min(old.start);
                    }
                }
                None => {
                    self.finished.replaced(key);
                    let mut job = old.unwrap_or_else(|| {
                        let path = state
                            .cgroups
                            .get(&id)
                            .map(|e| e.path.clone())
                            .unwrap_or_default();
                        Job::new(key.clone(), Origin::Registered, &path, SystemTime::now())
                    });
                    job.key = key.clone();
                    job.meta = meta.clone();
                    state.live.insert(key.clone(), job);
                }
            }
        }
        if let Some(job) = state.live.get_mut(key) {
            if job.meta.name.is_empty() && job.meta.labels.is_empty() {
                job.meta = meta;
            }
            job.visible = true;
        }
        true
    }

    /// A launcher inside live job `key` (a resource manager's) adds its
    /// name and labels to it.
    pub fn join(&mut self, key: &JobKey, meta: JobMeta) {
        if !self.state.live.contains_key(key) {
            return;
        }
        let Some(job) = self.state.edit().live.get_mut(key) else {
            return;
        };
        if job.meta.name.is_empty() {
            job.meta.name = meta.name;
        }
        // Every task of the job may join it: the labels of all of them
        // together stay within what one hello may carry.
        for (name, value) in meta.labels {
            if job.meta.labels.len() >= MAX_JOINED_LABELS && !job.meta.labels.contains_key(&name) {
                break;
            }
            job.meta.labels.entry(name).or_insert(value);
        }
        if job.meta.launcher.is_empty() {
            job.meta.launcher = meta.launcher;
        }
    }

    /// Drops a registered job that never got a cgroup (its registration failed).
    pub fn abandon(&mut self, key: &JobKey) {
        let used = self.state.has_cgroups(key) || self.expected.values().any(|k| k == key);
        if !used && self.state.live.contains_key(key) {
            self.state.edit().live.remove(key);
        }
    }

    /// Task cgroups of a uid the daemon made and has not removed, those
    /// being made included: what the per-user cap bounds.
    pub fn task_cgroups_of(&self, uid: u32) -> usize {
        let made = self
            .state
            .cgroups
            .values()
            .filter(|e| e.owned && e.removed_at.is_none() && e.job.uid == uid)
            .count();
        made + self.expected.values().filter(|k| k.uid == uid).count()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::{super::test_util::*, *};
    use crate::system::ids::IdMap;

    #[test]
    fn tasks_of_one_user_and_job_id_join_one_job_and_users_are_apart() {
        let mut table = JobTable::new("/monitor.slice");
        register(&mut table, 1, "/monitor.slice/task-1", &key(1000, "run_1"));
        register(&mut table, 2, "/monitor.slice/task-2", &key(1000, "run_2"));
        register(&mut table, 3, "/monitor.slice/task-3", &key(2000, "run_3"));
        assert!(table.settle(1, &key(1000, "42"), JobMeta::default()));
        assert!(table.settle(2, &key(1000, "42"), JobMeta::default()));
        assert!(table.settle(3, &key(2000, "42"), JobMeta::default()));
        let keys: Vec<&JobKey> = table.live_jobs().map(|j| &j.key).collect();
        assert_eq!(keys, vec![&key(1000, "42"), &key(2000, "42")]);
        table.apply_sample(
            &[
                (1, counters(1, 1)),
                (2, counters(2, 1)),
                (3, counters(4, 1)),
            ],
            &IdMap::default(),
            Instant::now(),
            T,
        );
        let totals: Vec<u64> = table.live_jobs().map(|j| j.totals().cpu_ns).collect();
        assert_eq!(totals, vec![3, 4]);
    }

    /// Each step that changes what the registry saves is a new generation
    /// (so it is saved); the ones that change nothing saved are not.
    #[test]
    fn the_handshake_steps_the_registry_holds_are_new_generations() {
        let mut table = JobTable::new("/monitor.slice");
        let provisional = key(1000, "run_1");
        let path = "/monitor.slice/task-1";
        let mut generation = table.generation();
        let mut changed = |table: &JobTable| {
            let before = std::mem::replace(&mut generation, table.generation());
            before != generation
        };
        assert!(table.register_job(&provisional, JobMeta::default(), "", T));
        assert!(changed(&table), "register_job");
        table.expect_cgroup(path, &provisional);
        assert!(!changed(&table), "expect_cgroup: not saved");
        table.made_cgroup(path, Some(1));
        assert!(changed(&table), "made_cgroup");
        table.arm(1);
        assert!(!changed(&table), "arm: not saved");
        assert!(table.settle(1, &key(1000, "42"), JobMeta::default()));
        assert!(changed(&table), "settle");
        assert!(!table.settle(9, &key(1000, "42"), JobMeta::default()));
        assert!(!changed(&table), "settle of an unknown cgroup");
        table.adopt_cgroup(7, "/system.slice/job_42", &key(1000, "42"));
        assert!(changed(&table), "adopt_cgroup");
        table.adopt_cgroup(7, "/system.slice/job_42", &key(1000, "42"));
        assert!(!changed(&table), "adopted again");
    }

    #[test]
    fn registrations_are_hidden_until_settled() {
        let mut table = JobTable::new("/monitor.slice");
        register(&mut table, 1, "/monitor.slice/task-1", &key(0, "starter_1"));
        assert!(!table.live_jobs().next().unwrap().visible);
        table.settle(1, &key(0, "starter_1"), JobMeta::default());
        assert!(table.live_jobs().next().unwrap().visible);
    }

    #[test]
    fn joining_launchers_name_a_job_once_and_add_labels_up_to_the_cap() {
        let mut table = JobTable::new("/monitor.slice");
        table.add_cgroup(1, "/monitor.slice/a", 1000, T);
        let job = key(1000, "a");
        let meta = |name: &str, labels: std::ops::Range<usize>| JobMeta {
            name: name.into(),
            labels: labels
                .map(|i| (format!("l{i:02}"), name.to_string()))
                .collect(),
            launcher: "srun".into(),
            ..Default::default()
        };
        let generation = table.generation();
        table.join(&job, meta("first", 0..20));
        assert_ne!(
            table.generation(),
            generation,
            "the registry holds the labels"
        );
        table.join(&job, meta("second", 10..40));
        let joined = &table.live_jobs().next().unwrap().meta;
        assert_eq!(
            (joined.name.as_str(), joined.launcher.as_str()),
            ("first", "srun")
        );
        assert_eq!(joined.labels.len(), MAX_JOINED_LABELS);
        assert_eq!(joined.labels["l10"], "first", "the first say stays");
        let generation = table.generation();
        table.join(&key(1000, "gone"), meta("x", 0..1));
        assert_eq!(
            table.generation(),
            generation,
            "no such job: nothing changed"
        );
    }

    #[test]
    fn a_registration_that_never_got_a_cgroup_is_abandoned() {
        let mut table = JobTable::new("/monitor.slice");
        let job = key(1000, "run_1");
        assert!(table.register_job(&job, JobMeta::default(), "", T));
        assert!(
            !table.register_job(&job, JobMeta::default(), "", T),
            "live already"
        );
        table.expect_cgroup("/monitor.slice/task-1", &job);
        table.abandon(&job);
        assert_eq!(table.live_jobs().count(), 1, "its cgroup is being made");
        table.made_cgroup("/monitor.slice/task-1", None);
        let generation = table.generation();
        table.abandon(&job);
        assert_eq!(table.live_jobs().count(), 0);
        assert_ne!(table.generation(), generation);
    }
}
