//! Spare task cgroups: made ahead of need (see [`crate::jobs::spares`]) so
//! that a registration takes one instead of waiting for a mkdir. The table
//! knows them from the moment they are asked for, so neither their cgroup
//! events nor their counter slots are taken for a job or an orphan, and a
//! registration takes one for its job in the same step as the per-user cap
//! check.
use std::collections::{HashMap, HashSet, VecDeque};

use super::{JobKey, JobTable};

#[derive(Debug, Default)]
pub(super) struct Spares {
    /// Paths being made, with the id their cgroup event gave (if it came
    /// first).
    making: HashMap<String, Option<u64>>,
    /// Made and free, oldest first.
    ready: VecDeque<(u64, String)>,
    /// The ids of both.
    ids: HashSet<u64>,
}

impl Spares {
    pub(super) fn knows(&self, id: u64) -> bool {
        self.ids.contains(&id)
    }

    /// A cgroup event (or walk) for `path`: whether it is a spare's.
    pub(super) fn seen(&mut self, id: u64, path: &str) -> bool {
        if self.ids.contains(&id) {
            return true;
        }
        match self.making.get_mut(path) {
            Some(made) => {
                *made = Some(id);
                self.ids.insert(id);
                true
            }
            None => false,
        }
    }

    /// Spare `id` was removed (by hand: the daemon removes only the ones
    /// it holds when it stops).
    pub(super) fn removed(&mut self, id: u64) {
        if self.ids.remove(&id) {
            self.ready.retain(|(ready, _)| *ready != id);
            self.making.retain(|_, made| *made != Some(id));
        }
    }
}

impl JobTable {
    /// The spare maker is about to make `path`.
    pub fn expect_spare(&mut self, path: &str) {
        self.spares.making.insert(path.to_string(), None);
    }

    /// The spare maker made `path` (id `id`), or gave up on it (`None`).
    pub fn made_spare(&mut self, path: &str, id: Option<u64>) {
        let Some(seen) = self.spares.making.remove(path) else {
            return;
        };
        match id {
            Some(id) => {
                self.spares.ids.insert(id);
                self.spares.ready.push_back((id, path.to_string()));
            }
            None => {
                if let Some(seen) = seen {
                    self.spares.ids.remove(&seen);
                }
            }
        }
    }

    /// Spare cgroups made and free.
    pub fn spares_ready(&self) -> usize {
        self.spares.ready.len()
    }

    /// Takes a spare task cgroup for `key`'s job (id and hierarchy path),
    /// if one is ready: from now on it is the job's, being filled.
    pub fn take_spare(&mut self, key: &JobKey) -> Option<(u64, String)> {
        let (id, path) = self.spares.ready.pop_front()?;
        self.spares.ids.remove(&id);
        self.state
            .edit()
            .insert_cgroup(id, &path, key.clone(), false, true);
        Some((id, path))
    }

    /// Every free spare, for the maker to remove as the daemon stops.
    pub fn take_all_spares(&mut self) -> Vec<(u64, String)> {
        let ready: Vec<_> = self.spares.ready.drain(..).collect();
        for (id, _) in &ready {
            self.spares.ids.remove(id);
        }
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::{
        super::{Added, JobMeta, test_util::*},
        *,
    };

    #[test]
    fn a_spare_is_neither_a_job_nor_an_orphan_until_taken() {
        let mut table = JobTable::new("/m");
        table.expect_spare("/m/task-7");
        // Its event may come before the maker hears back from mkdir.
        assert_eq!(table.add_cgroup(70, "/m/task-7", 0, T), Added::AlreadyKnown);
        assert!(table.knows(70));
        table.made_spare("/m/task-7", Some(70));
        assert_eq!(table.spares_ready(), 1);
        assert_eq!(table.live_jobs().count(), 0);

        let alice = key(1000, "alice-1");
        assert!(table.register_job(&alice, JobMeta::default(), "", T));
        assert_eq!(
            table.take_spare(&alice),
            Some((70, "/m/task-7".to_string()))
        );
        assert_eq!(table.job_of_cgroup(70), Some(alice.clone()));
        assert_eq!(table.task_cgroups_of(1000), 1);
        assert_eq!(table.spares_ready(), 0);
        assert_eq!(table.take_spare(&alice), None);
    }

    #[test]
    fn a_spare_that_failed_or_was_removed_is_forgotten() {
        let mut table = JobTable::new("/m");
        table.expect_spare("/m/task-8");
        assert_eq!(table.add_cgroup(80, "/m/task-8", 0, T), Added::AlreadyKnown);
        table.made_spare("/m/task-8", None);
        assert!(!table.knows(80));

        table.expect_spare("/m/task-9");
        table.made_spare("/m/task-9", Some(90));
        table.remove_cgroup(90, std::time::Instant::now());
        assert!(!table.knows(90));
        assert_eq!(table.spares_ready(), 0);

        table.expect_spare("/m/task-10");
        table.made_spare("/m/task-10", Some(100));
        assert_eq!(
            table.take_all_spares(),
            vec![(100, "/m/task-10".to_string())]
        );
        assert!(!table.knows(100));
    }
}
