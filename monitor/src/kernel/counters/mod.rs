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

mod maps;
#[cfg(test)]
mod tests;

use aya::maps::MapError;
use monitor_common::{CgroupCounters, Claim, FREE_SLOT, claimable_cgroup_slot};
use thiserror::Error;

pub use self::maps::{KernelMaps, SlotMaps};
use super::changed_flags::ChangedFlags;
use crate::system::{ids::IdMap, memory::ShrinkSparse};

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
        "CGROUP_INDEX has {index} slots and CGROUP_COUNTERS {counters}: they must be the same \
         power of two"
    )]
    Sizes { index: u32, counters: u32 },
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
                    "cgroup {id}: no free counter slot among its probes; not counted \
                     (raise --bpf.max-cgroups)"
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

    /// Gives back the room of tables emptied by cgroups that went (see
    /// [`ShrinkSparse`]).
    pub fn shrink_if_sparse(&mut self) {
        self.by_id.shrink_if_sparse();
        self.by_slot.shrink_if_sparse();
        self.latest.shrink_if_sparse();
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
