//! Cgroups coming and going: the kernel's cgroup events, resource managers'
//! job directories found by a walk, and the cgroups the launcher side
//! adopted, each taken into the job table with its counter slot.
use std::{
    sync::Mutex,
    time::{Instant, SystemTime},
};

use monitor_common::{CgroupEventKind, V1_TAG};

use super::{Sampler, lock, slots::Slots};
use crate::{
    jobs::{
        JobKey, JobTable,
        discovery::{self, Discovery},
        table::Added,
    },
    kernel::{
        counters::CountersError,
        events::{self, CgroupChange},
        probes::Walk,
    },
    system::cgroupfs,
};

/// A cgroup event with what is read of its directory before the job
/// table is locked.
pub(super) struct Seen {
    pub change: CgroupChange,
    /// The directory's owner (mkdir; 0 for rmdir).
    pub owner: u32,
    /// For one of the daemon's task cgroups the table may not know, the
    /// job it records (see [`crate::jobs::task_cgroup`]).
    pub task: Option<JobKey>,
}

/// A directory found under a job layout's root.
pub(super) struct FoundDir {
    pub id: u64,
    /// In table form (`controller:/x/y` in v1).
    pub path: String,
    pub uid: u32,
    pub created: SystemTime,
}

impl Sampler {
    pub(super) fn drain_events(&mut self) {
        let mut changes = Vec::new();
        while let Some(item) = self.probes.events.next() {
            if let Some(mut change) = events::decode(&item) {
                if change.id & V1_TAG != 0 {
                    // A cgroup of the watched v1 hierarchy: its table path.
                    let Some(v1) = self.config.discovery.v1() else {
                        continue;
                    };
                    change.path = discovery::v1_table_path(&v1.controller, &change.path);
                }
                changes.push(change);
            }
        }
        if changes.is_empty() {
            return;
        }
        self.health.cgroup_events += changes.len() as u64;
        let seen: Vec<Seen> = changes
            .into_iter()
            .map(|change| {
                let (owner, task) = match change.kind {
                    CgroupEventKind::Mkdir => (
                        owner(&JobTable::dir(&self.config.mount, &change.path)),
                        self.task_cgroup_job(&change.path),
                    ),
                    CgroupEventKind::Rmdir => (0, None),
                };
                Seen {
                    change,
                    owner,
                    task,
                }
            })
            .collect();
        apply_changes(
            seen,
            &self.table,
            &self.config.discovery,
            &mut self.probes.counters,
        );
    }

    /// Resource managers' job directories already there (and those made
    /// while cgroup events were lost): taken in as jobs, counted in place.
    pub(super) fn find_discovered(&mut self) -> anyhow::Result<()> {
        let roots = self.config.discovery.roots(&self.config.mount);
        for root in roots {
            let dirs = match cgroupfs::walk(&root.dir) {
                Ok(dirs) => dirs,
                // No such resource manager here (yet).
                Err(e) => {
                    log::debug!("no job layout's directory at {}: {e}", root.dir.display());
                    continue;
                }
            };
            for dir in dirs {
                let Some(path) = root.table_path(&dir.path) else {
                    continue;
                };
                let id = match root.controller {
                    Some(_) => dir.id | V1_TAG,
                    None => dir.id,
                };
                let found = FoundDir {
                    id,
                    path,
                    uid: dir.uid,
                    created: dir.created,
                };
                if take_in_discovered(found, &self.table, &mut self.probes.counters)? {
                    self.walk_every_task = true;
                }
            }
        }
        Ok(())
    }

    /// Starts counting cgroups the launcher side adopted. Their tasks were
    /// running already: the task iterator runs at once, so each is counted
    /// from now rather than from the next sample.
    pub(super) fn track_adopted(&mut self) {
        if self.claim_adopted()
            && let Err(e) = self.probes.credit_tasks(Walk::EveryTask)
        {
            log::warn!("crediting the tasks of adopted cgroups: {e}");
        }
    }

    /// Claims counter slots for the cgroups the launcher side adopted;
    /// whether there were any.
    pub(super) fn claim_adopted(&mut self) -> bool {
        claim_adopted(&self.table, &mut self.probes.counters)
    }
}

/// Takes cgroup events into the table: a made cgroup keeps the slot the
/// kernel gave it, a removed one is marked so. A cgroup given a slot only
/// for being under a job layout's prefix, but no job, gives it back.
pub(super) fn apply_changes(
    seen: Vec<Seen>,
    table: &Mutex<JobTable>,
    discovery: &Discovery,
    slots: &mut impl Slots,
) {
    for Seen { change, .. } in seen
        .iter()
        .filter(|s| s.change.kind == CgroupEventKind::Mkdir)
    {
        if let Err(e) = slots.adopt(change.id, change.slot) {
            log::warn!("cgroup {}: {e}", change.path);
        }
    }
    let now = Instant::now();
    let wall_now = SystemTime::now();
    let mut table = lock(table);
    let mut not_jobs = Vec::new();
    for Seen {
        change,
        owner,
        task,
    } in seen
    {
        match change.kind {
            CgroupEventKind::Mkdir => {
                let added = match task {
                    Some(key) => table.add_task_cgroup(change.id, &change.path, key, wall_now),
                    None => table.add_cgroup(change.id, &change.path, owner, wall_now),
                };
                if added == Added::NotAJob && discovery.may_hold_jobs(&change.path) {
                    // Given a slot for being under a job layout's
                    // prefix, but no job: the slot goes back.
                    not_jobs.push(change.id);
                }
            }
            CgroupEventKind::Rmdir => table.remove_cgroup(change.id, now),
        }
    }
    drop(table);
    for id in not_jobs {
        if let Err(e) = slots.release(id) {
            log::debug!("freeing the slot of cgroup {id}, no job: {e}");
        }
    }
}

/// Takes in a directory found under a job layout's root if the table does
/// not know it and it is a job, with its counter slot: claimed by the
/// daemon at start; found (claimed by the kernel at mkdir) or claimed now
/// after lost events. Whether the slot was claimed now (its tasks are to
/// be taken in by a walk of every task).
pub(super) fn take_in_discovered(
    found: FoundDir,
    table: &Mutex<JobTable>,
    slots: &mut impl Slots,
) -> Result<bool, CountersError> {
    let mut table = lock(table);
    if table.knows(found.id) {
        return Ok(false);
    }
    if table.add_cgroup(found.id, &found.path, found.uid, found.created) == Added::NotAJob {
        return Ok(false);
    }
    drop(table);
    Ok(slots.claim(found.id)?.is_some())
}

/// Claims counter slots for the cgroups the launcher side adopted;
/// whether there were any.
pub(super) fn claim_adopted(table: &Mutex<JobTable>, slots: &mut impl Slots) -> bool {
    let ids = lock(table).take_untracked();
    let any = !ids.is_empty();
    for id in ids {
        if let Err(e) = slots.claim(id) {
            log::warn!("counting adopted cgroup {id}: {e}");
        }
    }
    any
}

fn owner(dir: &std::path::Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).map(|m| m.uid()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{daemon::sampler::slots::FakeSlots, jobs::discovery::SLURM_V2};

    const JOB: &str = "/system.slice/slurmstepd.scope/job_5";

    fn table() -> Mutex<JobTable> {
        let discovery = Discovery::new(&[SLURM_V2.into()]).unwrap();
        Mutex::new(JobTable::new("/monitor.slice").with_discovery(discovery.into()))
    }

    fn seen(kind: CgroupEventKind, id: u64, slot: Option<u32>, path: &str) -> Seen {
        Seen {
            change: CgroupChange {
                kind,
                id,
                level: 3,
                slot,
                path: path.into(),
            },
            owner: 0,
            task: None,
        }
    }

    fn mkdir(id: u64, slot: u32, path: &str) -> Seen {
        seen(CgroupEventKind::Mkdir, id, Some(slot), path)
    }

    #[test]
    fn a_cgroup_under_a_discovery_prefix_that_is_no_job_frees_its_slot() {
        let table = table();
        let discovery = Discovery::new(&[SLURM_V2.into()]).unwrap();
        let mut slots = FakeSlots::default();
        let events = vec![
            mkdir(1, 10, JOB),
            mkdir(2, 11, "/system.slice/cron.service"),
            mkdir(3, 12, "/monitor.slice/job7"),
            // Given a slot for the monitored root, but none of its jobs.
            mkdir(4, 13, "/monitor.slice/job7x/deep/child"),
        ];
        apply_changes(events, &table, &discovery, &mut slots);
        assert_eq!(
            slots.adopted,
            [(1, Some(10)), (2, Some(11)), (3, Some(12)), (4, Some(13))]
        );
        assert_eq!(slots.released, [2], "only the non-job under the prefix");
        let table = lock(&table);
        assert!(table.knows(1) && table.knows(3));
        assert!(!table.knows(2) && !table.knows(4));
    }

    #[test]
    fn a_removed_cgroup_is_marked_and_keeps_its_slot_until_read() {
        let table = table();
        let discovery = Discovery::new(&[SLURM_V2.into()]).unwrap();
        let mut slots = FakeSlots::default();
        apply_changes(vec![mkdir(1, 10, JOB)], &table, &discovery, &mut slots);
        let rmdir = seen(CgroupEventKind::Rmdir, 1, None, JOB);
        apply_changes(vec![rmdir], &table, &discovery, &mut slots);
        assert_eq!(slots.adopted, [(1, Some(10))], "an rmdir adopts nothing");
        assert!(slots.released.is_empty(), "freed after its last read");
        assert_eq!(lock(&table).live_cgroups().count(), 0);
    }

    #[test]
    fn discovered_jobs_are_taken_in_once_with_their_slot() {
        let table = table();
        let mut slots = FakeSlots::default();
        let found = |id, path: &str| FoundDir {
            id,
            path: path.into(),
            uid: 0,
            created: SystemTime::UNIX_EPOCH,
        };
        assert!(take_in_discovered(found(1, JOB), &table, &mut slots).unwrap());
        assert!(!take_in_discovered(found(1, JOB), &table, &mut slots).unwrap());
        let not_a_job = found(2, "/system.slice/cron.service");
        assert!(!take_in_discovered(not_a_job, &table, &mut slots).unwrap());
        assert_eq!(slots.claimed, [1]);
        assert!(lock(&table).knows(1));
    }

    #[test]
    fn adopted_cgroups_get_their_slots_claimed() {
        let table = table();
        let mut slots = FakeSlots::default();
        assert!(!claim_adopted(&table, &mut slots));
        let key = JobKey {
            uid: 1000,
            jobid: "5".into(),
        };
        lock(&table).adopt_cgroup(7, JOB, &key);
        assert!(claim_adopted(&table, &mut slots));
        assert_eq!(slots.claimed, [7]);
        assert!(!claim_adopted(&table, &mut slots), "claimed once");
    }
}
