//! `#[repr(C)]` types shared by the kernel programs (`monitor-ebpf`) and the
//! daemon (`monitor`). Every type has a size assertion: both sides must agree
//! byte for byte, and a silent layout change would corrupt every reading.
#![cfg_attr(not(test), no_std)]

use core::mem::size_of;

/// Longest cgroup path (relative to the v2 mount) carried in an event.
pub const CGROUP_PATH_MAX: usize = 256;
/// Longest monitored-root prefix the kernel side can compare against.
pub const ROOT_PREFIX_MAX: usize = 256;

/// Counters per cgroup, one copy per CPU (summed in userspace).
///
/// The one list of per-job counters: the daemon saves it by field name
/// (serde, with the `user` feature; a field an older daemon did not save
/// reads as 0), and [`CgroupCounters::add`] names every field, so a field
/// added here does not compile until it is merged.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(
    feature = "user",
    derive(serde::Serialize, serde::Deserialize),
    serde(default)
)]
pub struct CgroupCounters {
    /// Nanoseconds on CPU.
    pub cpu_ns: u64,
    /// Nanoseconds runnable but waiting for a CPU.
    pub runqueue_wait_ns: u64,
    /// Switches where the outgoing task blocked (sleep, IO, lock).
    pub voluntary_switches: u64,
    /// Switches where the outgoing task was still runnable (preempted, yielded).
    pub involuntary_switches: u64,
    /// New processes (clone without CLONE_THREAD).
    pub processes_started: u64,
    /// New threads (clone with CLONE_THREAD).
    pub threads_started: u64,
    /// Successful execve/execveat.
    pub execs: u64,
    /// Whole processes that exited (last thread of the group).
    pub process_exits: u64,
    /// User-space page faults (minor and major).
    pub page_faults: u64,
    /// Tasks killed by the OOM killer.
    pub oom_kills: u64,
    /// Bytes read and written through read/write-family calls: what
    /// /proc/PID/io calls rchar and wchar.
    pub io_read_bytes: u64,
    pub io_write_bytes: u64,
    /// Read and write calls (syscr and syscw).
    pub io_read_calls: u64,
    pub io_write_calls: u64,
    /// Bytes submitted to block devices by the job's own tasks (buffered
    /// writes are submitted later by the kernel's flusher, not counted here).
    pub block_read_bytes: u64,
    pub block_write_bytes: u64,
    /// Network bytes and packets of the job's sockets (IP headers included).
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
    pub net_rx_packets: u64,
    pub net_tx_packets: u64,
    /// Change of resident memory (file + anon + shmem pages of the job's
    /// processes) seen on this CPU: the sum over CPUs is the current RSS.
    pub rss_delta_bytes: i64,
    /// Highest RSS of the cgroup when an event on this CPU changed it: the
    /// maximum over CPUs is the peak, at event granularity.
    pub rss_peak_bytes: u64,
}
const _: () = assert!(size_of::<CgroupCounters>() == 176);

impl CgroupCounters {
    /// Folds per-CPU copies and child cgroups: sums, but the peak is a
    /// maximum (for several cgroups of one job a lower bound of the job's
    /// peak: their peaks need not coincide).
    pub fn add(&mut self, other: &Self) {
        // Every field named: a new one does not compile until merged here.
        let Self {
            cpu_ns,
            runqueue_wait_ns,
            voluntary_switches,
            involuntary_switches,
            processes_started,
            threads_started,
            execs,
            process_exits,
            page_faults,
            oom_kills,
            io_read_bytes,
            io_write_bytes,
            io_read_calls,
            io_write_calls,
            block_read_bytes,
            block_write_bytes,
            net_rx_bytes,
            net_tx_bytes,
            net_rx_packets,
            net_tx_packets,
            rss_delta_bytes,
            rss_peak_bytes,
        } = *other;
        self.cpu_ns += cpu_ns;
        self.runqueue_wait_ns += runqueue_wait_ns;
        self.voluntary_switches += voluntary_switches;
        self.involuntary_switches += involuntary_switches;
        self.processes_started += processes_started;
        self.threads_started += threads_started;
        self.execs += execs;
        self.process_exits += process_exits;
        self.page_faults += page_faults;
        self.oom_kills += oom_kills;
        self.io_read_bytes += io_read_bytes;
        self.io_write_bytes += io_write_bytes;
        self.io_read_calls += io_read_calls;
        self.io_write_calls += io_write_calls;
        self.block_read_bytes += block_read_bytes;
        self.block_write_bytes += block_write_bytes;
        self.net_rx_bytes += net_rx_bytes;
        self.net_tx_bytes += net_tx_bytes;
        self.net_rx_packets += net_rx_packets;
        self.net_tx_packets += net_tx_packets;
        self.rss_delta_bytes += rss_delta_bytes;
        self.rss_peak_bytes = self.rss_peak_bytes.max(rss_peak_bytes);
    }

    /// Resident memory now: the summed rss_stat deltas. A job's sum can
    /// dip below zero (pages its tasks mapped before they were counted,
    /// freed since), which reads as 0.
    pub fn rss_bytes(&self) -> u64 {
        self.rss_delta_bytes.max(0) as u64
    }

    /// Highest resident memory: the peak seen at rss_stat events, never
    /// below the memory resident now.
    pub fn rss_peak(&self) -> u64 {
        self.rss_peak_bytes.max(self.rss_bytes())
    }
}

/// What happened to a cgroup.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupEventKind {
    Mkdir = 1,
    Rmdir = 2,
}

/// A cgroup created or removed under the monitored root, sent through the
/// ring buffer. `path` is relative to the cgroup v2 mount, NUL-terminated.
/// A record ends with the path's NUL (at least [`CGROUP_EVENT_HEADER`]
/// bytes; the whole struct only for a path that fills `path`): a typical
/// record is a third of the struct, so the ring holds three times as many.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CgroupEvent {
    /// A [`CgroupEventKind`] value.
    pub kind: u32,
    /// Depth below the v2 root (the root is level 0).
    pub level: u32,
    /// The v2 cgroup id (inode number of the cgroup directory).
    pub id: u64,
    /// Mkdir: the counter slot the kernel gave the cgroup, so the daemon
    /// reads only known slots; [`NO_SLOT`] when none was free (or on rmdir).
    pub slot: u32,
    pub _pad: u32,
    pub path: [u8; CGROUP_PATH_MAX],
}
const _: () = assert!(size_of::<CgroupEvent>() == 24 + CGROUP_PATH_MAX);

/// The bytes of a [`CgroupEvent`] before its path: the least a record holds.
pub const CGROUP_EVENT_HEADER: usize = 24;
const _: () = assert!(core::mem::offset_of!(CgroupEvent, path) == CGROUP_EVENT_HEADER);

/// The resident memory of one mm (address space) of a job's process as
/// the rss_stat tracepoint last reported it, and the cgroup it is counted
/// in; one entry of the MM_SLOTS table (open addressing by mm pointer).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MmState {
    /// The mm_struct pointer, used only as an identity; 0: a free entry.
    pub mm: u64,
    pub cgroup: u64,
    /// Bytes by resident mm counter: MM_FILEPAGES, MM_ANONPAGES, MM_SHMEMPAGES.
    pub bytes: [i64; 3],
}
const _: () = assert!(size_of::<MmState>() == 40);

/// Entries of the MM_SLOTS table an mm may occupy, from its home slot on.
pub const MM_PROBES: u32 = 4;

/// What the kernel itself counts for one task (thread), as the programs
/// read it from its `task_struct`: every field only grows over the task's
/// life, so a job is credited the difference since the last reading.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskCounters {
    /// `se.sum_exec_runtime`: nanoseconds on CPU.
    pub cpu_ns: u64,
    /// `sched_info.run_delay`: nanoseconds runnable but waiting for a CPU.
    pub run_delay_ns: u64,
    /// `nvcsw` and `nivcsw`: voluntary and involuntary context switches.
    pub nvcsw: u64,
    pub nivcsw: u64,
    /// `min_flt + maj_flt`: page faults.
    pub faults: u64,
    /// `ioac`: what /proc/PID/io shows (rchar, wchar, syscr, syscw,
    /// read_bytes, write_bytes).
    pub rchar: u64,
    pub wchar: u64,
    pub syscr: u64,
    pub syscw: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
}
const _: () = assert!(size_of::<TaskCounters>() == 88);

/// Per-task state of a job's task, keyed by its task_struct pointer: the
/// cgroup it was last credited to and its counters at that moment.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskState {
    /// v2 cgroup id the task's usage so far was credited to.
    pub cgroup: u64,
    /// The task's `start_time`: an entry whose task was freed unseen (its
    /// free not run, see [`DropReason::TaskFreeMissed`]) is told from the
    /// later task that got the same address.
    pub start_ns: u64,
    /// Non-zero once the task is being freed: set before its final credit,
    /// so a walk of this map that read the task's memory and then finds it
    /// still zero knows the memory was the live task's.
    pub freed: u64,
    /// When the task exited (boot-clock ns, set by the exit program; 0
    /// while it lives): no longer one of its job's live tasks. An entry
    /// exited long ago whose free never came is dropped by the walk.
    pub exited: u64,
    /// The task's counters when it was last credited. The fields a walk
    /// reads for a sleeping task (the three above and `credited.cpu_ns`)
    /// come first: one cache line of the map element.
    pub credited: TaskCounters,
}
const _: () = assert!(size_of::<TaskState>() == 120);

/// The slot of a value: a multiplicative hash, masked to the
/// (power-of-two) number of slots.
#[inline(always)]
pub fn hash_slot_index(value: u64, mask: u32) -> u32 {
    ((value.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32) & mask
}

/// Counter slots of cgroups: open addressing over two arrays of the same
/// (power-of-two) length, `CGROUP_INDEX` (slot -> cgroup id, shared) and
/// `CGROUP_COUNTERS` (slot -> per-CPU [`CgroupCounters`]). Array lookups are
/// inlined by the verifier; a hash map lookup on sched_switch cost ~35-40 ns.
///
/// A cgroup lives in one of the [`CGROUP_PROBES`] consecutive slots (mod the
/// length) that follow its home slot, [`cgroup_slot_index`]. Slots are freed
/// in the middle of chains, so a lookup never stops at a free slot: it
/// compares every probed slot, and is always right without tombstones.
pub const CGROUP_PROBES: u32 = 8;
/// `CGROUP_INDEX` value of a free slot (no cgroup has id 0; the root is 1).
pub const FREE_SLOT: u64 = 0;
/// [`CgroupEvent::slot`] when the cgroup got no slot.
pub const NO_SLOT: u32 = u32::MAX;

/// The `probe`-th slot of a cgroup: a multiplicative hash of its id (ids are
/// inode numbers, often consecutive), plus `probe`, masked to the length.
#[inline(always)]
pub fn cgroup_slot_index(id: u64, probe: u32, mask: u32) -> u32 {
    hash_slot_index(id, mask).wrapping_add(probe) & mask
}

/// The slot holding cgroup `id`, if any. `id_at(slot)` reads
/// `CGROUP_INDEX[slot]` (an inlined array access in the kernel, a syscall in
/// the daemon, hence the error type).
#[inline(always)]
pub fn find_cgroup_slot<E>(
    id: u64,
    mask: u32,
    mut id_at: impl FnMut(u32) -> Result<u64, E>,
) -> Result<Option<u32>, E> {
    if id == FREE_SLOT {
        return Ok(None);
    }
    for probe in 0..CGROUP_PROBES {
        let slot = cgroup_slot_index(id, probe, mask);
        if id_at(slot)? == id {
            return Ok(Some(slot));
        }
    }
    Ok(None)
}

/// Where a cgroup goes, found by [`claimable_cgroup_slot`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The cgroup already has this slot.
    Held(u32),
    /// The first free probed slot: write the id there to claim it.
    Free(u32),
    /// Every probed slot is taken by other cgroups.
    Full,
}

/// The slot already holding `id`, else the first free probed one. The whole
/// window is searched first: the id may sit after a freed slot.
#[inline(always)]
pub fn claimable_cgroup_slot<E>(
    id: u64,
    mask: u32,
    mut id_at: impl FnMut(u32) -> Result<u64, E>,
) -> Result<Claim, E> {
    if id == FREE_SLOT {
        return Ok(Claim::Full);
    }
    let mut free = None;
    for probe in 0..CGROUP_PROBES {
        let slot = cgroup_slot_index(id, probe, mask);
        let held_by = id_at(slot)?;
        if held_by == id {
            return Ok(Claim::Held(slot));
        }
        if held_by == FREE_SLOT && free.is_none() {
            free = Some(slot);
        }
    }
    Ok(free.map_or(Claim::Full, Claim::Free))
}

/// Why the kernel side dropped something; index into the `DROPS` array.
/// Indices are stable across versions (dashboards and old pins).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The cgroup event ring buffer was full.
    RingBufferFull = 0,
    /// No free cgroup counter slot among the probed ones.
    CgroupMapFull = 1,
    /// No room left in the task map: a job's task is not counted.
    TaskMapFull = 2,
    /// No room left for an address space in the memory map: its RSS is
    /// not counted.
    MmMapFull = 3,
    /// A process moved between cgroups had more threads than the move
    /// program walks: the rest are credited at the next sample instead,
    /// to the cgroup they left.
    ThreadWalkTruncated = 4,
    /// No room left in the map of v1 jobs' sockets: that socket's traffic
    /// is not counted.
    SocketMapFull = 5,
    /// A job task's entry in the task map outlived the task (its free went
    /// unseen) and was found when another task took its address: what the
    /// first task used between its exit and its free is not counted. The
    /// entry is then the new task's, from its own counters.
    TaskFreeMissed = 6,
}
pub const DROP_REASONS: usize = 7;

impl DropReason {
    pub const ALL: [DropReason; DROP_REASONS] = [
        DropReason::RingBufferFull,
        DropReason::CgroupMapFull,
        DropReason::TaskMapFull,
        DropReason::MmMapFull,
        DropReason::ThreadWalkTruncated,
        DropReason::SocketMapFull,
        DropReason::TaskFreeMissed,
    ];

    pub const fn label(self) -> &'static str {
        match self {
            DropReason::RingBufferFull => "cgroup_event_ring_full",
            DropReason::CgroupMapFull => "cgroup_map_full",
            DropReason::TaskMapFull => "task_map_full",
            DropReason::MmMapFull => "mm_map_full",
            DropReason::ThreadWalkTruncated => "thread_walk_truncated",
            DropReason::SocketMapFull => "socket_map_full",
            DropReason::TaskFreeMissed => "task_free_missed",
        }
    }
}

/// Load-time constants: offsets of the tracepoint fields the programs read, taken from
/// `/sys/kernel/tracing/events/<cat>/<name>/format` at load time and handed
/// to the programs as a read-only global (the verifier sees them as constants).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FieldOffsets {
    pub cgroup_root: u32,
    pub cgroup_level: u32,
    pub cgroup_id: u32,
    pub cgroup_path: u32,
    /// Number of cgroup counter slots minus one (a power of two minus one).
    pub cgroup_slot_mask: u32,
    pub oom_victim_pid: u32,
    /// Number of MM_SLOTS entries minus one (a power of two minus one).
    pub mm_slot_mask: u32,
    /// Keeps the size a multiple of 8.
    pub _pad: u32,
}
const _: () = assert!(size_of::<FieldOffsets>() == 32);

/// Load-time constants: byte offsets of the kernel struct members the task
/// and memory programs read, from the kernel's BTF (Rust eBPF has no CO-RE
/// relocations). Every member is read with `bpf_probe_read_kernel`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelLayout {
    /// `task_struct.flags` (PF_EXITING).
    pub task_flags: u32,
    /// `task_struct.cgroups` -> `css_set.dfl_cgrp` -> `cgroup.kn` ->
    /// `kernfs_node.id`: the task's cgroup v2 id.
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    pub cgroup_kn: u32,
    pub kernfs_node_id: u32,
    /// `task_struct.se.sum_exec_runtime`.
    pub task_sum_exec_runtime: u32,
    /// `task_struct.sched_info.run_delay`.
    pub task_run_delay: u32,
    pub task_nvcsw: u32,
    pub task_nivcsw: u32,
    pub task_min_flt: u32,
    pub task_maj_flt: u32,
    /// `task_struct.ioac`, a `struct task_io_accounting` whose first six
    /// members are rchar, wchar, syscr, syscw, read_bytes, write_bytes
    /// (checked at load time).
    pub task_ioac: u32,
    /// `task_struct.signal` -> `signal_struct.thread_head`, the list of a
    /// process's threads through `task_struct.thread_node`.
    pub task_signal: u32,
    pub signal_thread_head: u32,
    pub task_thread_node: u32,
    /// `signal_struct.live`: the process's live threads (0 once its last
    /// thread is exiting).
    pub signal_live: u32,
    /// `task_struct.mm`, and in `mm_struct` its resident-memory counters
    /// `rss_stat[]` (a `percpu_counter` each, whose global `count` the
    /// rss_stat tracepoint reports).
    pub task_mm: u32,
    pub mm_rss_stat: u32,
    pub percpu_counter_size: u32,
    pub percpu_counter_count: u32,
    /// `mm_struct.mm_users`: tasks using the address space.
    pub mm_users: u32,
    /// log2 of the page size (the counters count pages).
    pub page_shift: u32,
    /// 1 when sched_process_exit passes `group_dead` as an argument (newer
    /// kernels); else the program reads `signal_live`.
    pub exit_group_dead_arg: u32,
    /// `css_set.subsys[]` (a task's css per controller) and
    /// `cgroup_subsys_state.cgroup`: the task's cgroup in a v1 hierarchy.
    pub css_set_subsys: u32,
    pub css_cgroup: u32,
    /// `task_struct.start_time`: with the task's address, who a task is
    /// (an address is reused by a later task once the first is freed).
    pub task_start_time: u32,
}
const _: () = assert!(size_of::<KernelLayout>() == 104);

/// Which cgroups the programs count: strict descendants of the monitored
/// root, matched by path prefix (`/monitor.slice/`) when they are created.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RootPrefix {
    pub len: u32,
    pub _pad: u32,
    pub bytes: [u8; ROOT_PREFIX_MAX],
}
const _: () = assert!(size_of::<RootPrefix>() == 8 + ROOT_PREFIX_MAX);

impl RootPrefix {
    pub const EMPTY: RootPrefix = RootPrefix {
        len: 0,
        _pad: 0,
        bytes: [0; ROOT_PREFIX_MAX],
    };
}

/// Marks a v1 cgroup's id (its kernfs node id, unique only within its own
/// hierarchy) where v1 and v2 ids share a table: kernfs ids are an inode
/// number and a small generation, so bit 63 is never set in either.
pub const V1_TAG: u64 = 1 << 63;
/// Path prefixes the kernel side checks at cgroup creation for discovery.
pub const DISCOVERY_PREFIXES: usize = 4;
/// Longest discovery prefix.
pub const DISCOVERY_PREFIX_MAX: usize = 64;
/// No v1 hierarchy is watched.
pub const NO_V1: u32 = u32::MAX;

/// One literal path prefix under which new cgroups may be a resource
/// manager's jobs: they get a counter slot as they are made, so a job is
/// counted from its first task; the daemon frees the slots of those its
/// full patterns do not take.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiscoveryPrefix {
    /// 1: in the watched v1 hierarchy; 0: in the v2 hierarchy.
    pub v1: u32,
    pub len: u32,
    pub bytes: [u8; DISCOVERY_PREFIX_MAX],
}
const _: () = assert!(size_of::<DiscoveryPrefix>() == 8 + DISCOVERY_PREFIX_MAX);

/// Where the kernel side looks for resource managers' job cgroups.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Discovery {
    /// The watched v1 hierarchy's id (the `root` of the cgroup tracepoints,
    /// the second column of /proc/cgroups), or [`NO_V1`].
    pub v1_hierarchy: u32,
    /// Its controller's index in `css_set.subsys[]` (its line in
    /// /proc/cgroups), or [`NO_V1`].
    pub v1_subsys: u32,
    /// How many of `prefixes` are set.
    pub count: u32,
    pub _pad: u32,
    pub prefixes: [DiscoveryPrefix; DISCOVERY_PREFIXES],
}
const _: () =
    assert!(size_of::<Discovery>() == 16 + DISCOVERY_PREFIXES * (8 + DISCOVERY_PREFIX_MAX));

impl Discovery {
    pub const OFF: Discovery = Discovery {
        v1_hierarchy: NO_V1,
        v1_subsys: NO_V1,
        count: 0,
        _pad: 0,
        prefixes: [DiscoveryPrefix {
            v1: 0,
            len: 0,
            bytes: [0; DISCOVERY_PREFIX_MAX],
        }; DISCOVERY_PREFIXES],
    };
}

#[cfg(feature = "user")]
mod pod {
    /// Each one: plain `#[repr(C)]` integers and byte arrays, no padding
    /// holes (the size assertions above pin the layouts).
    macro_rules! pod {
        ($($name:ident),*) => {$(
            // SAFETY: see above.
            unsafe impl aya::Pod for super::$name {}
        )*};
    }
    pod!(
        CgroupCounters,
        TaskCounters,
        TaskState,
        KernelLayout,
        MmState,
        CgroupEvent,
        FieldOffsets,
        RootPrefix,
        Discovery
    );
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, convert::Infallible};

    use super::*;

    /// CGROUP_INDEX in memory, driven by the shared functions like the
    /// kernel (claims) and the daemon (claims at start, frees) drive it.
    struct Index {
        ids: Vec<u64>,
        mask: u32,
    }

    impl Index {
        fn new(len: u32) -> Self {
            Self {
                ids: vec![FREE_SLOT; len as usize],
                mask: len - 1,
            }
        }
        fn find(&self, id: u64) -> Option<u32> {
            find_cgroup_slot(id, self.mask, |s| Ok::<_, Infallible>(self.ids[s as usize])).unwrap()
        }
        fn claim(&mut self, id: u64) -> Option<u32> {
            match claimable_cgroup_slot(id, self.mask, |s| {
                Ok::<_, Infallible>(self.ids[s as usize])
            })
            .unwrap()
            {
                Claim::Held(slot) => Some(slot),
                Claim::Free(slot) => {
                    self.ids[slot as usize] = id;
                    Some(slot)
                }
                Claim::Full => None,
            }
        }
        fn free(&mut self, id: u64) {
            let slot = self.find(id).unwrap();
            self.ids[slot as usize] = FREE_SLOT;
        }
    }

    #[test]
    fn probes_stay_in_range_and_are_consecutive() {
        let mask = 1023;
        for id in [1, 2, 4026531835, u64::MAX] {
            let home = cgroup_slot_index(id, 0, mask);
            for probe in 0..CGROUP_PROBES {
                assert_eq!(cgroup_slot_index(id, probe, mask), (home + probe) & mask);
            }
        }
        // Wraps around the end of the array.
        let id = (1..)
            .find(|&id| cgroup_slot_index(id, 0, mask) == mask)
            .unwrap();
        assert_eq!(cgroup_slot_index(id, 1, mask), 0);
    }

    #[test]
    fn consecutive_ids_spread_over_the_slots() {
        let mask = 16383;
        let mut per_slot: HashMap<u32, u32> = HashMap::new();
        for id in 10_000..14_096u64 {
            *per_slot.entry(cgroup_slot_index(id, 0, mask)).or_default() += 1;
        }
        assert!(
            per_slot.values().all(|&n| n <= 4),
            "{:?}",
            per_slot.values().max()
        );
    }

    #[test]
    fn claim_find_and_free_through_chains() {
        let mut index = Index::new(64);
        // Ids sharing one home slot form a chain of consecutive slots.
        let home = cgroup_slot_index(1, 0, index.mask);
        let same_home: Vec<u64> = (1..)
            .filter(|&id| cgroup_slot_index(id, 0, index.mask) == home)
            .take(CGROUP_PROBES as usize + 1)
            .collect();
        let mut slots = Vec::new();
        for &id in &same_home[..CGROUP_PROBES as usize] {
            slots.push(index.claim(id).unwrap());
        }
        let expected: Vec<u32> = (0..CGROUP_PROBES)
            .map(|p| (home + p) & index.mask)
            .collect();
        assert_eq!(slots, expected);
        // The window is full: the next one is refused, not put further away.
        let extra = same_home[CGROUP_PROBES as usize];
        assert_eq!(index.claim(extra), None);
        assert_eq!(index.find(extra), None);
        // Claiming again returns the slot held.
        assert_eq!(index.claim(same_home[3]), Some(slots[3]));
        // A slot freed in the middle of the chain does not hide what follows.
        index.free(same_home[1]);
        for (i, &id) in same_home[..CGROUP_PROBES as usize].iter().enumerate() {
            assert_eq!(index.find(id), (i != 1).then_some(slots[i]), "id {id}");
        }
        // And the freed slot is reused.
        assert_eq!(index.claim(extra), Some(slots[1]));
        assert_eq!(index.find(extra), Some(slots[1]));
    }

    #[test]
    fn a_held_slot_after_a_free_one_is_found_not_duplicated() {
        let mut index = Index::new(64);
        let home = cgroup_slot_index(7, 0, index.mask);
        let others: Vec<u64> = (8..)
            .filter(|&id| cgroup_slot_index(id, 0, index.mask) == home)
            .take(1)
            .collect();
        let first = index.claim(others[0]).unwrap();
        let second = index.claim(7).unwrap();
        index.free(others[0]);
        assert_eq!(index.claim(7), Some(second));
        assert_eq!(index.ids.iter().filter(|&&id| id == 7).count(), 1);
        assert_ne!(first, second);
    }

    #[test]
    fn id_zero_is_never_found_nor_claimed() {
        let mut index = Index::new(64);
        assert_eq!(index.find(FREE_SLOT), None);
        assert_eq!(index.claim(FREE_SLOT), None);
    }

    #[test]
    fn read_errors_propagate() {
        assert_eq!(find_cgroup_slot(5, 63, |_| Err("eio")), Err("eio"));
        assert_eq!(claimable_cgroup_slot(5, 63, |_| Err("eio")), Err("eio"));
    }
}
