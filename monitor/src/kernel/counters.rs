//! The per-cgroup counters as the daemon sees them: every access to the
//! `CGROUP_INDEX` and `CGROUP_COUNTERS` arrays goes through [`CounterSlots`].
//!
//! The kernel side finds a cgroup's slot by open addressing (see
//! `monitor_common::CGROUP_PROBES`); this side uses the same functions, and
//! keeps its own id -> slot table so a sample reads only the slots it knows.
//!
//! Who claims slots, and when:
//! - the cgroup_mkdir program, for every cgroup made under the monitored
//!   root while it is attached; it reports the slot in its ring buffer event;
//! - the daemon, at start only ([`CounterSlots::track`] while claiming), for
//!   the cgroups that already exist. It walks the root and claims *before*
//!   attaching cgroup_mkdir, so the two never claim at the same time for
//!   those.
//!
//! A cgroup made while cgroup_mkdir is being attached is seen by neither: a
//! second walk right after the attach claims it. That walk never claims
//! twice for one cgroup: cgroup_mkdir fires before the new directory becomes
//! visible, so a cgroup the walk sees was either claimed by the kernel
//! already (and is found) or made before the attach. It can race with a
//! concurrent mkdir of *another* cgroup for the same free slot, though: the
//! daemon's array write is no compare-and-swap, and closing the window would
//! take atomics on both sides (an mmapped index) for a few milliseconds once
//! per start. A lost race is detected when the mkdir event arrives
//! ([`CounterSlots::adopt`]): the cgroup whose id is not in the slot is
//! logged and counted as `cgroup_map_full`. After start
//! ([`CounterSlots::stop_claiming`]) only the kernel claims.
//!
//! Freeing is the daemon's alone, after a removed cgroup's final read: its
//! per-CPU counters are zeroed first, then the slot is marked free, so a
//! cgroup that claims the slot next starts from zero.

use aya::{
    maps::{Array, MapData, MapError, PerCpuArray, PerCpuValues},
    util::nr_cpus,
};
use monitor_common::{CgroupCounters, Claim, FREE_SLOT, claimable_cgroup_slot};
use thiserror::Error;

use super::changed_flags::ChangedFlags;
use crate::system::ids::IdMap;

#[derive(Debug, Error)]
pub enum CountersError {
    #[error("{map}[{slot}]: {source}")]
    Map {
        map: &'static str,
        slot: u32,
        #[source]
        source: MapError,
    },
    #[error("counting the possible CPUs: {0}")]
    Cpus(#[source] std::io::Error),
    #[error(
        "CGROUP_INDEX has {index} slots and CGROUP_COUNTERS {counters}: they must be the same power of two"
    )]
    Sizes { index: u32, counters: u32 },
}

const INDEX: &str = "CGROUP_INDEX";
const COUNTERS: &str = "CGROUP_COUNTERS";
const RSS: &str = "CGROUP_RSS";

/// The two arrays, behind a seam so the bookkeeping is testable without
/// loading anything into the kernel.
pub trait SlotMaps {
    fn len(&self) -> u32;
    /// `CGROUP_INDEX[slot]`.
    fn id_at(&self, slot: u32) -> Result<u64, CountersError>;
    fn set_id(&mut self, slot: u32, id: u64) -> Result<(), CountersError>;
    /// `CGROUP_COUNTERS[slot]` summed over CPUs.
    fn counters(&self, slot: u32) -> Result<CgroupCounters, CountersError>;
    /// Zeroes `CGROUP_COUNTERS[slot]` on every CPU.
    fn zero_counters(&mut self, slot: u32) -> Result<(), CountersError>;
    /// Whether `CGROUP_COUNTERS[slot]` may have changed since this was
    /// last asked (and from now on, not): true when unknown.
    fn take_changed(&self, _slot: u32) -> bool {
        true
    }
}

/// The kernel maps.
pub struct KernelMaps {
    index: Array<MapData, u64>,
    counters: PerCpuArray<MapData, CgroupCounters>,
    /// The shared running RSS total per slot (for the kernel's peak).
    rss: Array<MapData, i64>,
    /// Possible CPUs: one counter copy each.
    cpus: usize,
    /// The programs' change flags; None for a set of an older build,
    /// which has none (every slot is then read).
    changed: Option<ChangedFlags>,
}

impl KernelMaps {
    pub fn new(
        index: Array<MapData, u64>,
        counters: PerCpuArray<MapData, CgroupCounters>,
        rss: Array<MapData, i64>,
    ) -> Result<Self, CountersError> {
        if index.len() != counters.len() || index.len() != rss.len() {
            return Err(CountersError::Sizes {
                index: index.len(),
                counters: counters.len(),
            });
        }
        let cpus = nr_cpus().map_err(|(_, e)| CountersError::Cpus(e))?;
        Ok(Self {
            index,
            counters,
            rss,
            cpus,
            changed: None,
        })
    }
}

impl SlotMaps for KernelMaps {
    fn len(&self) -> u32 {
        self.index.len()
    }

    fn id_at(&self, slot: u32) -> Result<u64, CountersError> {
        self.index
            .get(&slot, 0)
            .map_err(|source| map_error(INDEX, slot, source))
    }

    fn set_id(&mut self, slot: u32, id: u64) -> Result<(), CountersError> {
        self.index
            .set(slot, id, 0)
            .map_err(|source| map_error(INDEX, slot, source))
    }

    fn counters(&self, slot: u32) -> Result<CgroupCounters, CountersError> {
        let per_cpu = self
            .counters
            .get(&slot, 0)
            .map_err(|source| map_error(COUNTERS, slot, source))?;
        let mut sum = CgroupCounters::default();
        for value in per_cpu.iter() {
            sum.add(value);
        }
        Ok(sum)
    }

    fn take_changed(&self, slot: u32) -> bool {
        self.changed.as_ref().is_none_or(|flags| flags.take(slot))
    }

    fn zero_counters(&mut self, slot: u32) -> Result<(), CountersError> {
        let zeros = PerCpuValues::try_from(vec![CgroupCounters::default(); self.cpus])
            .map_err(CountersError::Cpus)?;
        self.counters
            .set(slot, zeros, 0)
            .map_err(|source| map_error(COUNTERS, slot, source))?;
        self.rss
            .set(slot, 0, 0)
            .map_err(|source| map_error(RSS, slot, source))
    }
}

fn map_error(map: &'static str, slot: u32, source: MapError) -> CountersError {
    CountersError::Map { map, slot, source }
}

pub struct CounterSlots<M = KernelMaps> {
    maps: M,
    mask: u32,
    /// Slot of every cgroup known to hold one, and the reverse.
    by_id: IdMap<u64, u32>,
    by_slot: IdMap<u32, u64>,
    /// Whether [`Self::track`] may claim free slots (only at start).
    claiming: bool,
    /// Cgroups this side left without a slot (see [`Self::refused`]).
    refused: u64,
    /// What [`Self::read_latest`] last read of each cgroup.
    latest: IdMap<u64, CgroupCounters>,
}

impl CounterSlots<KernelMaps> {
    /// From here on [`Self::read_latest`] reads only slots the programs
    /// marked changed.
    pub fn watch_changes(&mut self, flags: ChangedFlags) {
        self.maps.changed = Some(flags);
    }
}

impl<M: SlotMaps> CounterSlots<M> {
    pub fn new(maps: M) -> Result<Self, CountersError> {
        let len = maps.len();
        if !len.is_power_of_two() {
            return Err(CountersError::Sizes {
                index: len,
                counters: len,
            });
        }
        Ok(Self {
            maps,
            mask: len - 1,
            by_id: IdMap::default(),
            by_slot: IdMap::default(),
            claiming: true,
            refused: 0,
            latest: IdMap::default(),
        })
    }

    pub fn capacity(&self) -> u32 {
        self.mask + 1
    }

    /// Slots held by cgroups the daemon knows of.
    pub fn occupied(&self) -> usize {
        self.by_id.len()
    }

    /// Cgroups known to hold a slot.
    pub fn ids(&self) -> Vec<u64> {
        self.by_id.keys().copied().collect()
    }

    /// Cgroups left without a slot by this side: no free probed slot at
    /// start, or a lost race (see the module documentation). The kernel
    /// counts its own in `DROPS[CgroupMapFull]`; add the two.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// From here on only the cgroup_mkdir program claims slots (see the
    /// module documentation); [`Self::track`] only finds them.
    pub fn stop_claiming(&mut self) {
        self.claiming = false;
    }

    /// The slot of cgroup `id`: already known, found in the index, or (at
    /// start) claimed. None when it has none: every probed slot was taken
    /// (the kernel counts that as a drop when it claims).
    pub fn track(&mut self, id: u64) -> Result<Option<u32>, CountersError> {
        self.find_or_claim(id, self.claiming)
    }

    /// Like [`Self::track`], but claims even after start: for a cgroup the
    /// launcher side adopted outside the monitored root, which no kernel
    /// program will claim. It can race a concurrent kernel claim for the same
    /// slot like the start-up walk can; [`Self::adopt`] detects and counts it.
    pub fn claim(&mut self, id: u64) -> Result<Option<u32>, CountersError> {
        self.find_or_claim(id, true)
    }

    fn find_or_claim(&mut self, id: u64, claiming: bool) -> Result<Option<u32>, CountersError> {
        if let Some(&slot) = self.by_id.get(&id) {
            return Ok(Some(slot));
        }
        let slot = match claimable_cgroup_slot(id, self.mask, |slot| self.maps.id_at(slot))? {
            Claim::Held(slot) => slot,
            // After start only the kernel claims (and counts a full window).
            Claim::Free(_) | Claim::Full if !claiming => return Ok(None),
            Claim::Free(slot) => {
                // Free slots have zero counters (zeroed before being freed).
                self.maps.set_id(slot, id)?;
                slot
            }
            Claim::Full => {
                self.refused += 1;
                log::warn!(
                    "cgroup {id}: no free counter slot among its probes; not counted (raise --bpf.max-cgroups)"
                );
                return Ok(None);
            }
        };
        self.record(id, slot);
        Ok(Some(slot))
    }

    /// Takes note of the slot the cgroup_mkdir program gave cgroup `id`
    /// (None: it found none, and counted a drop). Returns whether `id` is
    /// counted; false also when a claim of the daemon's at start raced it.
    pub fn adopt(&mut self, id: u64, slot: Option<u32>) -> Result<bool, CountersError> {
        let Some(slot) = slot else {
            return Ok(false);
        };
        let Some(&held) = self.by_slot.get(&slot) else {
            self.record(id, slot);
            return Ok(true);
        };
        if held == id {
            return Ok(true);
        }
        // The daemon claimed this slot for `held` while the kernel claimed
        // it for `id`: the last write won.
        let won = self.maps.id_at(slot)? == id;
        let lost = if won { held } else { id };
        log::warn!(
            "cgroup {lost} lost its counter slot {slot} to a concurrent claim at start; not counted"
        );
        self.refused += 1;
        if won {
            self.forget(held);
            self.record(id, slot);
        }
        Ok(won)
    }

    /// Counters of cgroup `id` summed over CPUs; None when it has no slot.
    pub fn read(&self, id: u64) -> Result<Option<CgroupCounters>, CountersError> {
        self.by_id
            .get(&id)
            .map(|&slot| self.maps.counters(slot))
            .transpose()
    }

    /// Like [`Self::read`], but a slot the programs did not change since
    /// its last read here is not read again: its last reading is returned.
    pub fn read_latest(&mut self, id: u64) -> Result<Option<CgroupCounters>, CountersError> {
        let Some(&slot) = self.by_id.get(&id) else {
            return Ok(None);
        };
        // Flag first, then read: see the changed_flags module.
        let changed = self.maps.take_changed(slot);
        if !changed && let Some(latest) = self.latest.get(&id) {
            return Ok(Some(*latest));
        }
        let counters = self.maps.counters(slot)?;
        self.latest.insert(id, counters);
        Ok(Some(counters))
    }

    /// Frees the slot of cgroup `id` after its final read: zeroes its
    /// counters on every CPU, *then* marks it free. The other order would let
    /// a new cgroup claim the slot and count on top of the old values, or
    /// have its first counts wiped. On error the slot stays known, so a
    /// later call can finish the job.
    pub fn release(&mut self, id: u64) -> Result<(), CountersError> {
        let Some(&slot) = self.by_id.get(&id) else {
            return Ok(());
        };
        self.maps.zero_counters(slot)?;
        self.maps.set_id(slot, FREE_SLOT)?;
        self.forget(id);
        Ok(())
    }

    /// Rebuilds the id -> slot table from the whole index, for when cgroup
    /// events were lost. Returns the cgroups found that were not known (made
    /// while events were lost); known ones no longer there are forgotten.
    pub fn resync(&mut self) -> Result<Vec<u64>, CountersError> {
        // Read everything afresh after events were lost.
        self.latest.clear();
        let mut found = IdMap::default();
        for slot in 0..self.capacity() {
            let id = self.maps.id_at(slot)?;
            if id != FREE_SLOT {
                found.insert(id, slot);
            }
        }
        let new = found
            .keys()
            .filter(|id| !self.by_id.contains_key(id))
            .copied()
            .collect();
        self.by_slot = found.iter().map(|(&id, &slot)| (slot, id)).collect();
        self.by_id = found;
        Ok(new)
    }

    fn record(&mut self, id: u64, slot: u32) {
        if let Some(old) = self.by_id.insert(id, slot) {
            self.by_slot.remove(&old);
            self.latest.remove(&id);
        }
        self.by_slot.insert(slot, id);
    }

    fn forget(&mut self, id: u64) {
        if let Some(slot) = self.by_id.remove(&id) {
            self.by_slot.remove(&slot);
        }
        self.latest.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use monitor_common::{CGROUP_PROBES, cgroup_slot_index};

    use super::*;

    /// The arrays in memory, with a log of writes to check their order.
    #[derive(Default)]
    struct FakeMaps {
        ids: Vec<u64>,
        counters: Vec<CgroupCounters>,
        writes: Vec<String>,
        /// Slots marked changed, as the programs mark them.
        changed: std::cell::RefCell<std::collections::HashSet<u32>>,
    }

    impl FakeMaps {
        fn new(len: usize) -> Self {
            Self {
                ids: vec![FREE_SLOT; len],
                counters: vec![CgroupCounters::default(); len],
                writes: Vec::new(),
                changed: Default::default(),
            }
        }

        /// A program's update: the counters, then the flag.
        fn update(&mut self, slot: u32, counters: CgroupCounters) {
            self.counters[slot as usize] = counters;
            self.changed.borrow_mut().insert(slot);
        }
    }

    impl SlotMaps for FakeMaps {
        fn len(&self) -> u32 {
            self.ids.len() as u32
        }
        fn id_at(&self, slot: u32) -> Result<u64, CountersError> {
            Ok(self.ids[slot as usize])
        }
        fn set_id(&mut self, slot: u32, id: u64) -> Result<(), CountersError> {
            self.writes.push(format!("index[{slot}]={id}"));
            self.ids[slot as usize] = id;
            Ok(())
        }
        fn counters(&self, slot: u32) -> Result<CgroupCounters, CountersError> {
            Ok(self.counters[slot as usize])
        }
        fn zero_counters(&mut self, slot: u32) -> Result<(), CountersError> {
            self.writes.push(format!("counters[{slot}]=0"));
            self.counters[slot as usize] = CgroupCounters::default();
            Ok(())
        }
        fn take_changed(&self, slot: u32) -> bool {
            self.changed.borrow_mut().remove(&slot)
        }
    }

    #[test]
    fn unchanged_slots_are_not_read_again() {
        let mut slots = slots(64);
        let slot = slots.track(7).unwrap().unwrap();
        // Never read: read even though not marked.
        assert_eq!(
            slots.read_latest(7).unwrap(),
            Some(CgroupCounters::default())
        );
        slots.maps.update(slot, busy(5));
        assert_eq!(slots.read_latest(7).unwrap(), Some(busy(5)));
        // A change the flag does not show (impossible in the kernel) is not
        // read: proof that an unmarked slot costs no read.
        slots.maps.counters[slot as usize] = busy(9);
        assert_eq!(slots.read_latest(7).unwrap(), Some(busy(5)));
        slots.maps.update(slot, busy(11));
        assert_eq!(slots.read_latest(7).unwrap(), Some(busy(11)));
        // Freed and claimed again by another cgroup: nothing stale is kept.
        slots.release(7).unwrap();
        assert_eq!(slots.read_latest(7).unwrap(), None);
        assert!(slots.latest.is_empty());
    }

    fn slots(len: usize) -> CounterSlots<FakeMaps> {
        CounterSlots::new(FakeMaps::new(len)).unwrap()
    }

    fn busy(cpu_ns: u64) -> CgroupCounters {
        CgroupCounters {
            cpu_ns,
            ..Default::default()
        }
    }

    /// What the cgroup_mkdir program does, on the same arrays.
    fn kernel_claim(slots: &mut CounterSlots<FakeMaps>, id: u64) -> Option<u32> {
        match claimable_cgroup_slot(id, slots.mask, |s| slots.maps.id_at(s)).unwrap() {
            Claim::Held(slot) => Some(slot),
            Claim::Free(slot) => {
                slots.maps.ids[slot as usize] = id;
                Some(slot)
            }
            Claim::Full => None,
        }
    }

    #[test]
    fn sizes_must_be_a_power_of_two() {
        assert!(CounterSlots::new(FakeMaps::new(48)).is_err());
        assert_eq!(slots(64).capacity(), 64);
    }

    #[test]
    fn tracks_reads_and_releases_zeroing_before_freeing() {
        let mut slots = slots(64);
        let slot = slots.track(42).unwrap().unwrap();
        assert_eq!(slot, cgroup_slot_index(42, 0, 63));
        assert_eq!(slots.track(42).unwrap(), Some(slot));
        assert_eq!(slots.occupied(), 1);
        slots.maps.counters[slot as usize] = busy(7);
        assert_eq!(slots.read(42).unwrap(), Some(busy(7)));
        assert_eq!(slots.read(43).unwrap(), None);

        slots.maps.writes.clear();
        slots.release(42).unwrap();
        assert_eq!(
            slots.maps.writes,
            [format!("counters[{slot}]=0"), format!("index[{slot}]=0")]
        );
        assert_eq!((slots.occupied(), slots.read(42).unwrap()), (0, None));
        // Releasing again touches nothing.
        slots.maps.writes.clear();
        slots.release(42).unwrap();
        assert!(slots.maps.writes.is_empty());
    }

    #[test]
    fn after_start_only_the_kernel_claims() {
        let mut slots = slots(64);
        slots.stop_claiming();
        assert_eq!(slots.track(42).unwrap(), None);
        assert!(slots.maps.ids.iter().all(|&id| id == FREE_SLOT));
        // One the kernel claimed (its event not drained yet) is found.
        let slot = kernel_claim(&mut slots, 42);
        assert_eq!(slots.track(42).unwrap(), slot);
    }

    #[test]
    fn a_full_window_gives_no_slot() {
        let mut slots = slots(64);
        let home = cgroup_slot_index(1, 0, 63);
        let same_home: Vec<u64> = (1..)
            .filter(|&id| cgroup_slot_index(id, 0, 63) == home)
            .take(CGROUP_PROBES as usize + 1)
            .collect();
        for &id in &same_home[..CGROUP_PROBES as usize] {
            assert!(slots.track(id).unwrap().is_some());
        }
        assert_eq!(
            slots.track(same_home[CGROUP_PROBES as usize]).unwrap(),
            None
        );
        assert_eq!(slots.refused(), 1);
        // After start the kernel counted it already, when it found none.
        slots.stop_claiming();
        assert_eq!(
            slots.track(same_home[CGROUP_PROBES as usize]).unwrap(),
            None
        );
        assert_eq!(slots.refused(), 1);
    }

    #[test]
    fn mkdir_events_are_adopted() {
        let mut slots = slots(64);
        slots.stop_claiming();
        let slot = kernel_claim(&mut slots, 42);
        assert!(slots.adopt(42, slot).unwrap());
        assert!(slots.adopt(42, slot).unwrap());
        assert!(!slots.adopt(43, None).unwrap());
        assert_eq!(slots.ids(), [42]);
    }

    #[test]
    fn a_race_at_start_keeps_the_last_writer() {
        // The daemon's claim for 10 and the kernel's for 11 took one slot.
        for kernel_wrote_last in [false, true] {
            let mut slots = slots(64);
            let slot = slots.track(10).unwrap().unwrap();
            if kernel_wrote_last {
                slots.maps.ids[slot as usize] = 11;
            }
            assert_eq!(slots.adopt(11, Some(slot)).unwrap(), kernel_wrote_last);
            let (winner, loser) = if kernel_wrote_last {
                (11, 10)
            } else {
                (10, 11)
            };
            assert_eq!(slots.ids(), [winner]);
            assert_eq!(slots.read(loser).unwrap(), None);
            assert_eq!(slots.refused(), 1);
        }
    }

    #[test]
    fn resync_rebuilds_from_the_index() {
        let mut slots = slots(64);
        let kept = slots.track(10).unwrap().unwrap();
        slots.track(11).unwrap().unwrap();
        slots.stop_claiming();
        // Events lost: the kernel claimed 12 and 13 unheard of; and 11 is no
        // longer in the index (as after a lost race at start).
        let new12 = kernel_claim(&mut slots, 12).unwrap();
        let new13 = kernel_claim(&mut slots, 13).unwrap();
        let slot11 = slots.by_id[&11];
        slots.maps.ids[slot11 as usize] = FREE_SLOT;
        let mut new = slots.resync().unwrap();
        new.sort();
        assert_eq!(new, [12, 13]);
        let mut ids = slots.ids();
        ids.sort();
        assert_eq!(ids, [10, 12, 13]);
        assert_eq!(slots.by_id[&10], kept);
        assert_eq!((slots.by_slot[&new12], slots.by_slot[&new13]), (12, 13));
    }
}
