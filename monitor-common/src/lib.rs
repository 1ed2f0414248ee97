//! `#[repr(C)]` types shared by the kernel programs (`monitor-ebpf`) and the
//! daemon (`monitor`). Every type has a size assertion: both sides must agree
//! byte for byte, and a silent layout change would corrupt every reading.
#![no_std]

use core::mem::size_of;

/// Longest cgroup path (relative to the v2 mount) carried in an event.
pub const CGROUP_PATH_MAX: usize = 256;
/// Longest monitored-root prefix the kernel side can compare against.
pub const ROOT_PREFIX_MAX: usize = 256;

/// Counters per cgroup, one copy per CPU (summed in userspace).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
}
const _: () = assert!(size_of::<CgroupCounters>() == 64);

impl CgroupCounters {
    /// Field-wise sum, used to fold per-CPU copies and child cgroups.
    pub fn add(&mut self, other: &Self) {
        self.cpu_ns += other.cpu_ns;
        self.runqueue_wait_ns += other.runqueue_wait_ns;
        self.voluntary_switches += other.voluntary_switches;
        self.involuntary_switches += other.involuntary_switches;
        self.processes_started += other.processes_started;
        self.threads_started += other.threads_started;
        self.execs += other.execs;
        self.process_exits += other.process_exits;
    }
}

/// Per-CPU scheduler bookkeeping of the sched_switch program.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuState {
    /// When the task now on this CPU was switched in (or last flushed).
    pub last_switch_ns: u64,
    /// Run-queue wait of the task now on this CPU, credited at its switch-out.
    pub pending_wait_ns: u64,
}
const _: () = assert!(size_of::<CpuState>() == 16);

/// What happened to a cgroup.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupEventKind {
    Mkdir = 1,
    Rmdir = 2,
}

/// A cgroup created or removed under the monitored root, sent through the
/// ring buffer. `path` is relative to the cgroup v2 mount, NUL-terminated.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CgroupEvent {
    /// A [`CgroupEventKind`] value.
    pub kind: u32,
    /// Depth below the v2 root (the root is level 0).
    pub level: u32,
    /// The v2 cgroup id (inode number of the cgroup directory).
    pub id: u64,
    pub path: [u8; CGROUP_PATH_MAX],
}
const _: () = assert!(size_of::<CgroupEvent>() == 16 + CGROUP_PATH_MAX);

/// When a task became runnable (woken or preempted), in a direct-mapped
/// slot chosen by hashing its task pointer: an inlined array access instead
/// of a hash map lookup on the hottest path. A slot holds one task; a second
/// waiting task that hashes to it replaces the first (counted as a drop).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TaskSlot {
    /// The task_struct pointer, used only as an identity.
    pub task: u64,
    /// bpf_ktime_get_ns when it became runnable; 0 while it runs or sleeps.
    pub runnable_since: u64,
}
const _: () = assert!(size_of::<TaskSlot>() == 16);

/// The slot of a task: a multiplicative hash of its pointer, masked to the
/// (power-of-two) number of slots.
#[inline(always)]
pub fn task_slot_index(task: u64, mask: u32) -> u32 {
    ((task.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32) & mask
}

/// Why the kernel side dropped something; index into the `DROPS` array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The cgroup event ring buffer was full.
    RingBufferFull = 0,
    /// No room left in the per-cgroup counter map.
    CgroupMapFull = 1,
    /// A waiting task's slot was taken by another waiting task: one
    /// run-queue wait lost.
    TaskSlotCollision = 2,
}
pub const DROP_REASONS: usize = 3;

impl DropReason {
    pub const ALL: [DropReason; DROP_REASONS] = [
        DropReason::RingBufferFull,
        DropReason::CgroupMapFull,
        DropReason::TaskSlotCollision,
    ];

    pub const fn label(self) -> &'static str {
        match self {
            DropReason::RingBufferFull => "cgroup_event_ring_full",
            DropReason::CgroupMapFull => "cgroup_map_full",
            DropReason::TaskSlotCollision => "task_slot_collision",
        }
    }
}

/// Load-time constants: offsets of the tracepoint fields the programs read, taken from
/// `/sys/kernel/tracing/events/<cat>/<name>/format` at load time and handed
/// to the programs as a read-only global (the verifier sees them as constants).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FieldOffsets {
    pub newtask_clone_flags: u32,
    pub exit_group_dead: u32,
    pub cgroup_root: u32,
    pub cgroup_level: u32,
    pub cgroup_id: u32,
    pub cgroup_path: u32,
    /// Number of task slots minus one (a power of two minus one).
    pub task_slot_mask: u32,
    /// Keeps the size a multiple of 8.
    pub _pad: u32,
}
const _: () = assert!(size_of::<FieldOffsets>() == 32);

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

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` integers and byte arrays, no padding holes
    // (the size assertions above pin the layouts).
    unsafe impl aya::Pod for super::CgroupCounters {}
    unsafe impl aya::Pod for super::CpuState {}
    unsafe impl aya::Pod for super::TaskSlot {}
    unsafe impl aya::Pod for super::CgroupEvent {}
    unsafe impl aya::Pod for super::FieldOffsets {}
    unsafe impl aya::Pod for super::RootPrefix {}
}
