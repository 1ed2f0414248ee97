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
