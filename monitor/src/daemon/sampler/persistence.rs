//! What outlives the daemon: ended jobs' profiles and the registry of
//! running jobs, handed to the state store's writer in batches, with the
//! cgroups read for the last time; their counter slots are freed only once
//! the store has their job on disk (or cannot put it there).
use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use super::{Sampler, lock, slots::Slots};
use crate::{
    jobs::{JobTable, table::Job},
    profile::JobJson,
    snapshot::JobView,
    store::{Batch, Profile, StoreError, StoreFigures, StoreHandle},
    system::{memory::ShrinkSparse, time::unix_seconds},
};

/// Longest a cgroup read for the last time keeps its counter slot waiting
/// for the store. A healthy commit takes milliseconds and a failed one hands
/// the slots back at once (a locked database after its 5 s busy timeout);
/// past this the disk hangs, and the slot serves the next jobs better than
/// as a backup of this one's final values.
const MAX_SLOT_HOLD: Duration = Duration::from_secs(10);

/// The state store's writer as the sampler uses it: the seam the unit
/// tests fake.
pub(super) trait StoreSink {
    fn send(&self, batch: Batch) -> Result<(), StoreError>;
    /// Cgroups whose batch is durable (or failed) since the last call.
    fn released(&self) -> Vec<u64>;
    fn figures(&self) -> StoreFigures;
    fn shutdown(self) -> Result<Vec<u64>, StoreError>;
}

impl StoreSink for StoreHandle {
    fn send(&self, batch: Batch) -> Result<(), StoreError> {
        StoreHandle::send(self, batch)
    }

    fn released(&self) -> Vec<u64> {
        StoreHandle::released(self)
    }

    fn figures(&self) -> StoreFigures {
        self.stats().figures()
    }

    fn shutdown(self) -> Result<Vec<u64>, StoreError> {
        StoreHandle::shutdown(self)
    }
}

pub(super) struct Persistence<S = StoreHandle> {
    /// The state store's writer; None runs without one (profiles are then
    /// kept in memory for the retention only).
    store: Option<S>,
    /// Cgroups read for the last time whose slots are freed once the store
    /// has their job's profile (or registry) on disk, or has failed to put
    /// it there, or at the latest [`MAX_SLOT_HOLD`] after they were handed
    /// over (when): a store that cannot write never fills the counter map.
    pending_release: HashMap<u64, Instant>,
    /// The job table's generation when the registry was last handed to the store.
    saved_generation: Option<u64>,
}

impl<S> Default for Persistence<S> {
    fn default() -> Self {
        Self {
            store: None,
            pending_release: HashMap::new(),
            saved_generation: None,
        }
    }
}

impl<S: StoreSink> Persistence<S> {
    /// Hands finished jobs' profiles and the registry to `store`.
    pub fn set_store(&mut self, store: S) {
        self.store = Some(store);
    }

    /// Whether cgroup `id` was read for the last time (its slot waits for
    /// the store).
    pub fn holds(&self, id: u64) -> bool {
        self.pending_release.contains_key(&id)
    }

    /// Gives back the room of slots released (see [`ShrinkSparse`]).
    pub fn shrink_if_sparse(&mut self) {
        self.pending_release.shrink_if_sparse();
    }

    /// The store writer's figures; None without a store.
    pub fn figures(&self) -> Option<StoreFigures> {
        self.store.as_ref().map(StoreSink::figures)
    }

    /// Hands the ended jobs' profiles (made by `profile`) and the registry
    /// (when it changed) to the store, with the cgroups read for the last
    /// time: their slots are freed once the batch is durable (so a daemon
    /// killed meanwhile finds their final values at its restart), or its
    /// commit failed, or after [`MAX_SLOT_HOLD`]. Without a store they are
    /// freed now.
    pub fn save(
        &mut self,
        freed: Vec<u64>,
        ended: &[Job],
        table: &Mutex<JobTable>,
        profile: impl FnMut(&Job) -> Option<Profile>,
        slots: &mut impl Slots,
    ) {
        if self.store.is_none() {
            release(slots, freed);
            return;
        }
        let generation = lock(table).generation();
        let changed = self.saved_generation != Some(generation);
        if ended.is_empty() && freed.is_empty() && !changed {
            return;
        }
        let registry = if changed {
            // Serialized with the table let go: registrations wait for it.
            let registry = lock(table).export();
            match serde_json::to_string(&registry) {
                Ok(text) => Some(text),
                Err(e) => {
                    log::error!("serializing the job registry: {e}");
                    None
                }
            }
        } else {
            None
        };
        // A registry that failed to serialize is tried again next time.
        let saved = if changed && registry.is_none() {
            self.saved_generation
        } else {
            Some(generation)
        };
        let profiles = ended.iter().filter_map(profile).collect();
        let batch = Batch {
            profiles,
            registry,
            release: freed.clone(),
        };
        let Some(store) = &self.store else {
            return;
        };
        match store.send(batch) {
            Ok(()) => {
                self.saved_generation = saved;
                let now = Instant::now();
                self.pending_release
                    .extend(freed.into_iter().map(|id| (id, now)));
            }
            Err(e) => {
                log::error!("state store: {e}; finished jobs are kept in memory only");
                self.store = None;
                release(slots, freed);
            }
        }
    }

    /// Frees the counter slots of cgroups whose final values are on disk
    /// (or that the store failed to write, or held too long by `now`).
    pub fn release_stored(&mut self, now: Instant, slots: &mut impl Slots) {
        let Some(store) = &self.store else {
            return;
        };
        let mut ids = store.released();
        ids.extend(
            self.pending_release
                .iter()
                .filter(|(_, handed)| now.duration_since(**handed) >= MAX_SLOT_HOLD)
                .map(|(id, _)| *id),
        );
        for id in ids {
            if self.pending_release.remove(&id).is_none() {
                continue; // freed already (held too long, then released)
            }
            if let Err(e) = slots.release(id) {
                log::debug!("freeing counters of cgroup {id}: {e}");
            }
        }
    }

    /// Waits for the profiles handed over to be written. The slots stay
    /// claimed and are found orphaned (and freed) at the next start.
    pub fn shutdown(&mut self) {
        if let Some(store) = self.store.take()
            && let Err(e) = store.shutdown()
        {
            log::error!("state store: {e}");
        }
    }
}

impl Sampler {
    /// See [`Persistence::save`].
    pub(super) fn save(&mut self, freed: Vec<u64>, ended: &[Job]) {
        let views = &mut self.views;
        let mut text = Vec::new();
        self.persistence.save(
            freed,
            ended,
            &self.table,
            |job| profile_of(views.view(job), &mut text),
            &mut self.probes.counters,
        );
    }

    /// See [`Persistence::release_stored`].
    pub(super) fn release_stored(&mut self) {
        let now = Instant::now();
        self.persistence
            .release_stored(now, &mut self.probes.counters);
    }
}

fn release(slots: &mut impl Slots, ids: Vec<u64>) {
    for id in ids {
        if let Err(e) = slots.release(id) {
            log::debug!("freeing counters of cgroup {id}: {e}");
        }
    }
}

/// A finished job's frozen profile, written in `text` (a buffer reused
/// from job to job) and copied out at its length. Written straight into
/// its own string, a profile (about 2.5 KB) took a 4 KB block after five
/// smaller ones, all freed around the blocks kept: after 10,000 jobs ended
/// at once the daemon held megabytes more than it used.
fn profile_of(view: JobView, text: &mut Vec<u8>) -> Option<Profile> {
    text.clear();
    let written = serde_json::to_writer(&mut *text, &JobJson::from(&view))
        .map_err(|e| e.to_string())
        .and_then(|()| std::str::from_utf8(text).map_err(|e| e.to_string()));
    let json = match written {
        Ok(json) => json.to_owned(),
        Err(e) => {
            log::error!("serializing the profile of job {}: {e}", view.jobid);
            return None;
        }
    };
    Some(Profile {
        jobid: view.jobid,
        uid: view.uid,
        user: view.user,
        start_time: unix_seconds(view.start),
        end_time: unix_seconds(view.end.unwrap_or(view.start)),
        json,
    })
}

#[cfg(test)]
mod tests {
    use std::{cell::RefCell, time::SystemTime};

    use super::*;
    use crate::{
        daemon::sampler::slots::FakeSlots,
        jobs::{JobKey, JobMeta},
    };

    /// Takes every batch; says a cgroup is released once told to.
    #[derive(Default)]
    struct FakeStore {
        batches: RefCell<Vec<Batch>>,
        durable: RefCell<Vec<u64>>,
        broken: bool,
    }

    impl StoreSink for FakeStore {
        fn send(&self, batch: Batch) -> Result<(), StoreError> {
            if self.broken {
                return Err(StoreError::WriterGone);
            }
            self.batches.borrow_mut().push(batch);
            Ok(())
        }

        fn released(&self) -> Vec<u64> {
            std::mem::take(&mut self.durable.borrow_mut())
        }

        fn figures(&self) -> StoreFigures {
            StoreFigures::default()
        }

        fn shutdown(self) -> Result<Vec<u64>, StoreError> {
            Ok(Vec::new())
        }
    }

    fn with_store(store: FakeStore) -> Persistence<FakeStore> {
        let mut persistence = Persistence::default();
        persistence.set_store(store);
        persistence
    }

    fn store(persistence: &Persistence<FakeStore>) -> &FakeStore {
        persistence.store.as_ref().unwrap()
    }

    /// A table with one job (cgroup 10): its registry changed once.
    fn table() -> Mutex<JobTable> {
        let mut table = JobTable::new("/monitor.slice");
        table.add_cgroup(10, "/monitor.slice/a", 1000, SystemTime::UNIX_EPOCH);
        Mutex::new(table)
    }

    fn profile(job: &Job) -> Option<Profile> {
        Some(Profile {
            jobid: job.key.jobid.clone(),
            uid: job.key.uid,
            user: "someone".into(),
            start_time: 0.0,
            end_time: 1.0,
            json: "{}".into(),
        })
    }

    #[test]
    fn a_cgroup_read_last_is_freed_once_its_batch_is_durable() {
        let table = table();
        let mut slots = FakeSlots::default();
        let mut persistence = with_store(FakeStore::default());
        let ended: Vec<Job> = lock(&table).live_jobs().cloned().collect();
        persistence.save(vec![10], &ended, &table, profile, &mut slots);
        let batches = store(&persistence).batches.take();
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].release, [10]);
        assert_eq!(batches[0].profiles.len(), 1);
        assert!(batches[0].registry.is_some());
        assert!(persistence.holds(10), "not read again meanwhile");

        persistence.release_stored(Instant::now(), &mut slots);
        assert!(slots.released.is_empty(), "the batch is not durable yet");

        store(&persistence).durable.borrow_mut().push(10);
        persistence.release_stored(Instant::now(), &mut slots);
        assert_eq!(slots.released, [10]);
        assert!(!persistence.holds(10));
    }

    #[test]
    fn a_store_that_never_commits_holds_a_slot_at_most_max_slot_hold() {
        let table = table();
        let mut slots = FakeSlots::default();
        let mut persistence = with_store(FakeStore::default());
        persistence.save(vec![10], &[], &table, profile, &mut slots);
        let handed = Instant::now();
        persistence.release_stored(handed + MAX_SLOT_HOLD / 2, &mut slots);
        assert!(slots.released.is_empty());
        persistence.release_stored(handed + MAX_SLOT_HOLD, &mut slots);
        assert_eq!(slots.released, [10]);
        // The store's late word frees nothing twice.
        store(&persistence).durable.borrow_mut().push(10);
        persistence.release_stored(handed + MAX_SLOT_HOLD, &mut slots);
        assert_eq!(slots.released, [10]);
    }

    #[test]
    fn without_a_store_or_after_it_failed_slots_are_freed_at_once() {
        let table = table();
        let mut slots = FakeSlots::default();
        let mut without = Persistence::<FakeStore>::default();
        without.save(vec![10], &[], &table, profile, &mut slots);
        assert_eq!(slots.released, [10]);
        assert!(!without.holds(10));

        let mut slots = FakeSlots::default();
        let mut broken = with_store(FakeStore {
            broken: true,
            ..FakeStore::default()
        });
        broken.save(vec![10], &[], &table, profile, &mut slots);
        assert_eq!(slots.released, [10]);
        assert!(broken.figures().is_none(), "the store is let go");
        broken.save(vec![11], &[], &table, profile, &mut slots);
        assert_eq!(slots.released, [10, 11]);
    }

    #[test]
    fn the_registry_is_sent_only_when_it_changed() {
        let table = table();
        let mut slots = FakeSlots::default();
        let mut persistence = with_store(FakeStore::default());
        persistence.save(Vec::new(), &[], &table, profile, &mut slots);
        persistence.save(Vec::new(), &[], &table, profile, &mut slots);
        assert_eq!(store(&persistence).batches.borrow().len(), 1, "nothing new");
        persistence.save(vec![10], &[], &table, profile, &mut slots);
        let key = JobKey {
            uid: 1000,
            jobid: "b".into(),
        };
        let meta = JobMeta::default();
        lock(&table).register_job(&key, meta, "/monitor.slice/b", SystemTime::UNIX_EPOCH);
        persistence.save(Vec::new(), &[], &table, profile, &mut slots);
        let registries: Vec<bool> = store(&persistence)
            .batches
            .borrow()
            .iter()
            .map(|batch| batch.registry.is_some())
            .collect();
        assert_eq!(registries, [true, false, true]);
    }
}
