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

/// Why the kernel side dropped something; index into the `DROPS` array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The cgroup event ring buffer was full.
    RingBufferFull = 0,
    /// No room left in the per-cgroup counter map.
    CgroupMapFull = 1,
    /// No room left in the per-task wakeup map.
    TaskMapFull = 2,
}
pub const DROP_REASONS: usize = 3;

impl DropReason {
    pub const ALL: [DropReason; DROP_REASONS] = [
        DropReason::RingBufferFull,
        DropReason::CgroupMapFull,
        DropReason::TaskMapFull,
    ];

    pub const fn label(self) -> &'static str {
        match self {
            DropReason::RingBufferFull => "cgroup_event_ring_full",
            DropReason::CgroupMapFull => "cgroup_map_full",
            DropReason::TaskMapFull => "task_map_full",
        }
    }
}

/// Offsets of the tracepoint fields the programs read, taken from
/// `/sys/kernel/tracing/events/<cat>/<name>/format` at load time and handed
/// to the programs as a read-only global (the verifier sees them as constants).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FieldOffsets {
    pub switch_prev_pid: u32,
    pub switch_prev_state: u32,
    pub switch_next_pid: u32,
    pub wakeup_pid: u32,
    pub wakeup_new_pid: u32,
    pub newtask_pid: u32,
    pub newtask_clone_flags: u32,
    pub exit_pid: u32,
    pub exit_group_dead: u32,
    pub cgroup_root: u32,
    pub cgroup_level: u32,
    pub cgroup_id: u32,
    pub cgroup_path: u32,
    /// Keeps the size a multiple of 8.
    pub _pad: u32,
}
const _: () = assert!(size_of::<FieldOffsets>() == 56);

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
    unsafe impl aya::Pod for super::CgroupEvent {}
    unsafe impl aya::Pod for super::FieldOffsets {}
    unsafe impl aya::Pod for super::RootPrefix {}
}

/// How many bytes of a tracepoint record the programs copy in one read
/// (one helper call instead of one per field). Every field the programs use
/// must end within this length; the daemon checks that at load time.
pub const TRACEPOINT_RECORD_LEN: usize = 64;
