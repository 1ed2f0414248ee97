//! The counter slots as the sampler's event handling and persistence use
//! them: the seam their unit tests fake (the bookkeeping below it has its
//! own, [`crate::kernel::counters::SlotMaps`]).
use crate::kernel::counters::{CounterSlots, CountersError, SlotMaps};

pub(super) trait Slots {
    /// See [`CounterSlots::adopt`].
    fn adopt(&mut self, id: u64, slot: Option<u32>) -> Result<bool, CountersError>;
    /// See [`CounterSlots::claim`].
    fn claim(&mut self, id: u64) -> Result<Option<u32>, CountersError>;
    /// See [`CounterSlots::release`].
    fn release(&mut self, id: u64) -> Result<(), CountersError>;
}

impl<M: SlotMaps> Slots for CounterSlots<M> {
    fn adopt(&mut self, id: u64, slot: Option<u32>) -> Result<bool, CountersError> {
        CounterSlots::adopt(self, id, slot)
    }

    fn claim(&mut self, id: u64) -> Result<Option<u32>, CountersError> {
        CounterSlots::claim(self, id)
    }

    fn release(&mut self, id: u64) -> Result<(), CountersError> {
        CounterSlots::release(self, id)
    }
}

/// Records what was asked of the slots; claims always get a new slot.
#[cfg(test)]
#[derive(Debug, Default)]
pub(super) struct FakeSlots {
    pub adopted: Vec<(u64, Option<u32>)>,
    pub claimed: Vec<u64>,
    pub released: Vec<u64>,
}

#[cfg(test)]
impl Slots for FakeSlots {
    fn adopt(&mut self, id: u64, slot: Option<u32>) -> Result<bool, CountersError> {
        self.adopted.push((id, slot));
        Ok(slot.is_some())
    }

    fn claim(&mut self, id: u64) -> Result<Option<u32>, CountersError> {
        self.claimed.push(id);
        Ok(Some(self.claimed.len() as u32))
    }

    fn release(&mut self, id: u64) -> Result<(), CountersError> {
        self.released.push(id);
        Ok(())
    }
}
