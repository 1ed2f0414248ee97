//! The kernel's counter arrays behind [`SlotMaps`], the seam that lets the
//! slot bookkeeping ([`super::CounterSlots`]) be tested without loading
//! anything into the kernel.
use aya::{
    maps::{Array, MapData, MapError, PerCpuArray, PerCpuValues},
    util::nr_cpus,
};
use monitor_common::CgroupCounters;

use super::CountersError;
use crate::kernel::changed_flags::ChangedFlags;

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
    pub(super) changed: Option<ChangedFlags>,
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
