//! Cgroups seen in the tree (by event or walk), and which job each is: a
//! directory under the monitored root, a cgroup below a known one, one of
//! the daemon's task cgroups, or a resource manager's job directory, whose
//! owner and id its tasks may have to tell.
use std::time::{Instant, SystemTime};

use super::{Added, Job, JobKey, JobTable, Origin, PendingIdentity};
use crate::system::cgroupfs::job_of;

impl JobTable {
    /// Records a cgroup seen under the root (event or walk).
    pub fn add_cgroup(&mut self, id: u64, path: &str, uid: u32, created: SystemTime) -> Added {
        if self.knows(id) || self.spares.seen(id, path) {
            return Added::AlreadyKnown;
        }
        if let Some(key) = self.expected.remove(path) {
            self.state.edit().insert_cgroup(id, path, key, false, true);
            return Added::JoinedJob;
        }
        // Below a known cgroup: the same job.
        if let Some(parent) = path.rsplit_once('/').map(|(parent, _)| parent)
            && let Some(key) = self
                .state
                .paths
                .get(parent)
                .and_then(|p| self.state.cgroups.get(p))
                .map(|e| e.job.clone())
        {
            self.state.edit().insert_cgroup(id, path, key, true, false);
            return Added::JoinedJob;
        }
        if let Some(found) = self.discovery.job_of(path) {
            // A resource manager's job, counted in place; it ends when the
            // resource manager removes its directory.
            let key = JobKey {
                uid: found.uid.unwrap_or(uid),
                jobid: found.jobid,
            };
            let state = self.state.edit();
            let added = if state.live.contains_key(&key) {
                Added::JoinedJob
            } else {
                self.finished.replaced(&key);
                let mut job = Job::new(key.clone(), Origin::Directory, path, created);
                // The directory's owner is the resource manager's (root).
                job.owner_pending = found.uid.is_none();
                job.jobid_pending = found.jobid_from_tasks;
                job.visible = !job.owner_pending && !job.jobid_pending;
                state.live.insert(key.clone(), job);
                Added::NewJob
            };
            state.insert_cgroup(id, path, key, true, false);
            return added;
        }
        let Some(dir) = job_of(&self.root, path) else {
            return Added::NotAJob;
        };
        let is_top = path
            .rsplit_once('/')
            .is_some_and(|(parent, _)| parent == self.root);
        if !is_top {
            // A child seen before its parent (a walk of a half-made tree):
            // its parent's job will be made; count it there if we can.
            log::debug!("cgroup {path} seen before its parent");
            return Added::NotAJob;
        }
        let key = JobKey {
            uid,
            jobid: dir.to_string(),
        };
        // A job of the same key in retention leaves: one series per job.
        self.finished.replaced(&key);
        let state = self.state.edit();
        state.live.insert(
            key.clone(),
            Job::new(key.clone(), Origin::Directory, path, created),
        );
        state.insert_cgroup(id, path, key, true, false);
        Added::NewJob
    }

    /// Records a task cgroup of the daemon's (see [`crate::jobs::task_cgroup`])
    /// found under the root: unless the registrar is making it now or it
    /// is known, it was made for a registration no saved registry holds
    /// (the earlier run stopped before saving it), and is `key`'s
    /// registered job again, removed and ended when it empties.
    pub fn add_task_cgroup(
        &mut self,
        id: u64,
        path: &str,
        key: JobKey,
        created: SystemTime,
    ) -> Added {
        if self.knows(id) || self.expected.contains_key(path) || self.spares.seen(id, path) {
            return self.add_cgroup(id, path, key.uid, created);
        }
        let state = self.state.edit();
        let added = if state.live.contains_key(&key) {
            Added::JoinedJob
        } else {
            self.finished.replaced(&key);
            let mut job = Job::new(key.clone(), Origin::Registered, path, created);
            job.visible = true;
            state.live.insert(key.clone(), job);
            Added::NewJob
        };
        state.insert_cgroup(id, path, key, true, true);
        added
    }

    /// Empty cgroup `id` is being removed (see [`JobTable::empty_cgroups`]).
    pub fn removing(&mut self, id: u64) {
        if let Some(entry) = self.state.edit_unsaved().cgroups.get_mut(&id) {
            entry.removing = true;
        }
    }

    /// Removing cgroup `id` failed (a task arrived since it was found
    /// empty, say): the next sample looks at it again.
    pub fn kept(&mut self, id: u64) {
        if let Some(entry) = self.state.edit_unsaved().cgroups.get_mut(&id) {
            entry.removing = false;
        }
    }

    /// Marks a cgroup removed; its final values are read after the grace.
    pub fn remove_cgroup(&mut self, id: u64, now: Instant) {
        self.spares.removed(id);
        // The removal time is not saved: a restart finds the directory gone.
        if let Some(entry) = self.state.edit_unsaved().cgroups.get_mut(&id) {
            entry.removed_at.get_or_insert(now);
        }
    }

    /// The discovered job (a resource manager's) whose cgroup `path` is or
    /// is below: the deepest known cgroup on the way up, with its path and
    /// job.
    pub fn discovered_job_containing(&self, path: &str) -> Option<(u64, String, JobKey)> {
        let mut at = path;
        loop {
            if let Some(&id) = self.state.paths.get(at)
                && let Some(entry) = self.state.cgroups.get(&id)
                && entry.removed_at.is_none()
                && let Some(job) = self.state.live.get(&entry.job)
                && self.discovery.job_of(&job.cgroup).is_some()
            {
                return Some((id, at.to_string(), entry.job.clone()));
            }
            match at.rsplit_once('/') {
                Some((parent, _)) if !parent.is_empty() && !parent.ends_with(':') => at = parent,
                _ => return None,
            }
        }
    }

    /// Live jobs whose owner or id is still to be found, with their
    /// cgroups.
    pub fn pending_identities(&self) -> Vec<PendingIdentity> {
        self.state
            .live
            .values()
            .filter(|job| job.owner_pending || job.jobid_pending)
            .map(|job| PendingIdentity {
                key: job.key.clone(),
                owner: job.owner_pending,
                jobid: job.jobid_pending,
                cgroups: self
                    .state
                    .cgroups
                    .values()
                    .filter(|e| e.job == job.key && e.removed_at.is_none())
                    .map(|e| e.path.clone())
                    .collect(),
            })
            .collect()
    }

    /// Job `key`'s owner is `uid` and its id `jobid` (as one of its tasks
    /// says, where its layout did not): it is keyed and shown so from now on.
    pub fn resolve_identity(&mut self, key: &JobKey, uid: u32, jobid: String) {
        if !self.state.live.contains_key(key) {
            return;
        }
        let state = self.state.edit();
        let Some(mut job) = state.live.remove(key) else {
            return;
        };
        let new = JobKey { uid, jobid };
        for entry in state.cgroups.values_mut() {
            if entry.job == *key {
                entry.job = new.clone();
            }
        }
        job.key = new.clone();
        job.owner_pending = false;
        job.jobid_pending = false;
        job.visible = true;
        self.finished.replaced(&new);
        match state.live.get_mut(&new) {
            Some(existing) => {
                existing.retired.add(&job.retired);
                existing.start = existing.start.min(job.start);
            }
            None => {
                state.live.insert(new, job);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::{super::test_util::*, *};
    use crate::system::ids::IdMap;

    #[test]
    fn descendants_roll_up_into_their_job() {
        let mut table = JobTable::new("/monitor.slice");
        assert_eq!(
            table.add_cgroup(10, "/monitor.slice/a", 0, T),
            Added::NewJob
        );
        assert_eq!(
            table.add_cgroup(11, "/monitor.slice/a/step0", 0, T),
            Added::JoinedJob
        );
        assert_eq!(
            table.add_cgroup(12, "/monitor.slice/b", 0, T),
            Added::NewJob
        );
        assert_eq!(
            table.add_cgroup(13, "/system.slice/x", 0, T),
            Added::NotAJob
        );
        assert_eq!(
            table.add_cgroup(10, "/monitor.slice/a", 0, T),
            Added::AlreadyKnown
        );
        table.apply_sample(
            &[
                (10, counters(5, 1)),
                (11, counters(7, 2)),
                (12, counters(1, 0)),
            ],
            &IdMap::from_iter([(10, 1), (11, 2)]),
            Instant::now(),
            T,
        );
        let a = table.live_jobs().find(|j| j.key.jobid == "a").unwrap();
        assert_eq!(a.totals(), counters(12, 3));
        assert_eq!(a.tasks, 3);
    }

    #[test]
    fn a_job_retired_in_batches_ends_with_its_last_cgroup_and_not_before() {
        let mut table = JobTable::new("/monitor.slice");
        table.add_cgroup(10, "/monitor.slice/a", 0, T);
        table.add_cgroup(11, "/monitor.slice/a/step0", 0, T);
        table.add_cgroup(20, "/monitor.slice/b", 0, T);
        let now = Instant::now();
        for id in [10, 11, 20] {
            table.remove_cgroup(id, now);
        }
        let readings = [
            (10, counters(5, 1)),
            (11, counters(7, 2)),
            (20, counters(1, 0)),
        ];
        let later = now + super::super::FINAL_READ_GRACE;
        let retiring = table.update_sample(&readings, &IdMap::default(), later);
        assert_eq!(retiring.freed.len(), 3);
        let (first, rest): (Vec<_>, Vec<_>) =
            retiring.cgroups.iter().partition(|(id, _)| *id == 10);
        table.retire(&first, T);
        assert!(
            table.live_jobs().any(|j| j.key.jobid == "a"),
            "a ended with a cgroup left"
        );
        // A registration between two batches: b gets a new cgroup.
        table.add_cgroup(21, "/monitor.slice/b", 0, T);
        table.retire(&rest, T);
        let a = table.finished_jobs().find(|j| j.key.jobid == "a").unwrap();
        assert_eq!(a.totals(), counters(12, 3), "both cgroups' final values");
        assert!(
            table.live_jobs().any(|j| j.key.jobid == "b"),
            "b ended though it has a cgroup again"
        );
    }

    #[test]
    fn a_new_job_replaces_a_finished_one_of_the_same_key() {
        let mut table = JobTable::new("/monitor.slice");
        table.add_cgroup(10, "/monitor.slice/a", 0, T);
        let now = Instant::now();
        table.remove_cgroup(10, now);
        table.apply_sample(
            &[],
            &IdMap::default(),
            now + super::super::FINAL_READ_GRACE,
            T,
        );
        assert_eq!(table.finished_jobs().count(), 1);
        table.add_cgroup(20, "/monitor.slice/a", 0, T);
        assert_eq!(
            (table.finished_jobs().count(), table.live_jobs().count()),
            (0, 1)
        );
    }

    #[test]
    fn a_task_cgroup_no_registry_holds_is_its_recorded_job_again() {
        let mut table = JobTable::new("/monitor.slice");
        let path = "/monitor.slice/task-7-1";
        assert_eq!(
            table.add_task_cgroup(2, path, key(1000, "42"), T),
            Added::NewJob
        );
        let job = table.live_jobs().next().unwrap();
        assert_eq!(
            (&job.key, job.origin, job.visible),
            (&key(1000, "42"), Origin::Registered, true)
        );
        assert_eq!(
            table.task_cgroups_of(1000),
            1,
            "the daemon's, under the cap"
        );
        assert_eq!(
            table.empty_cgroups(&IdMap::default()).owned,
            vec![(2, path.to_string())]
        );
        // One the registrar is making now is its registration's.
        let making = "/monitor.slice/task-8-1";
        assert!(table.register_job(&key(1000, "run_8"), super::super::JobMeta::default(), "", T));
        table.expect_cgroup(making, &key(1000, "run_8"));
        assert_eq!(
            table.add_task_cgroup(3, making, key(0, "task-8-1"), T),
            Added::JoinedJob
        );
        assert!(table.live_jobs().all(|j| j.key.jobid != "task-8-1"));
    }

    /// A job found by its directory alone, shown once a task tells whose
    /// it is; a live job of the key it takes absorbs it.
    #[test]
    fn a_pending_identity_is_resolved_by_its_tasks() {
        let mut table = JobTable::new("/monitor.slice");
        let pending = key(0, "sluid");
        table.add_cgroup(1, "/monitor.slice/sluid", 0, T);
        table.add_cgroup(2, "/monitor.slice/sluid/step", 0, T);
        let job = table.state.edit().live.get_mut(&pending).unwrap();
        (job.owner_pending, job.jobid_pending, job.visible) = (true, true, false);
        let found = table.pending_identities();
        assert_eq!(found.len(), 1);
        assert_eq!(
            (&found[0].key, found[0].owner, found[0].jobid),
            (&pending, true, true)
        );
        assert_eq!(found[0].cgroups.len(), 2);

        let generation = table.generation();
        table.resolve_identity(&pending, 1000, "42".into());
        assert_ne!(table.generation(), generation);
        assert!(table.pending_identities().is_empty());
        let job = table.live_jobs().next().unwrap();
        assert_eq!((&job.key, job.visible), (&key(1000, "42"), true));
        assert_eq!(
            table.job_of_cgroup(2),
            Some(key(1000, "42")),
            "its cgroups follow it"
        );
        let generation = table.generation();
        table.resolve_identity(&pending, 1000, "43".into());
        assert_eq!(
            table.generation(),
            generation,
            "no such job: nothing changed"
        );
    }
}
