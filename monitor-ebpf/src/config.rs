//! Read-only globals set by the daemon at load time. They live in `.rodata`,
//! which the kernel freezes, so the verifier treats their values as constants.
use monitor_common::{Discovery, FieldOffsets, KernelLayout, RootPrefix};

#[unsafe(no_mangle)]
pub(crate) static FIELD_OFFSETS: FieldOffsets = FieldOffsets {
    cgroup_root: 0,
    cgroup_level: 0,
    cgroup_id: 0,
    cgroup_path: 0,
    cgroup_slot_mask: 0,
    oom_victim_pid: 0,
    mm_slot_mask: 0,
    _pad: 0,
};

#[unsafe(no_mangle)]
pub(crate) static KERNEL_LAYOUT: KernelLayout = KernelLayout {
    task_flags: 0,
    task_cgroups: 0,
    css_set_dfl_cgrp: 0,
    cgroup_kn: 0,
    kernfs_node_id: 0,
    task_sum_exec_runtime: 0,
    task_run_delay: 0,
    task_nvcsw: 0,
    task_nivcsw: 0,
    task_min_flt: 0,
    task_maj_flt: 0,
    task_ioac: 0,
    task_signal: 0,
    signal_thread_head: 0,
    task_thread_node: 0,
    signal_live: 0,
    task_mm: 0,
    mm_rss_stat: 0,
    percpu_counter_size: 0,
    percpu_counter_count: 0,
    mm_users: 0,
    page_shift: 0,
    exit_group_dead_arg: 0,
    css_set_subsys: 0,
    css_cgroup: 0,
    task_start_time: 0,
};

#[unsafe(no_mangle)]
static ROOT_PREFIX: RootPrefix = RootPrefix::EMPTY;

#[unsafe(no_mangle)]
static DISCOVERY: Discovery = Discovery::OFF;

/// One field of [`FieldOffsets`]; volatile so the compiler cannot fold the
/// zero placeholder in.
macro_rules! offset {
    ($field:ident) => {
        unsafe { core::ptr::read_volatile(&raw const crate::config::FIELD_OFFSETS.$field) as usize }
    };
}
pub(crate) use offset;

/// One field of [`KernelLayout`], as a byte offset (volatile like `offset!`).
macro_rules! layout {
    ($field:ident) => {
        unsafe { core::ptr::read_volatile(&raw const crate::config::KERNEL_LAYOUT.$field) as u64 }
    };
}
pub(crate) use layout;

pub(crate) fn root_prefix() -> &'static RootPrefix {
    &ROOT_PREFIX
}

pub(crate) fn root_prefix_len() -> usize {
    // SAFETY: a static; volatile for the same reason as `offset!`.
    unsafe { core::ptr::read_volatile(&raw const ROOT_PREFIX.len) as usize }
}

pub(crate) fn discovery_filter() -> &'static Discovery {
    &DISCOVERY
}

/// One field of [`Discovery`] (volatile like `offset!`).
macro_rules! discovery {
    ($field:ident) => {
        unsafe { core::ptr::read_volatile(&raw const crate::config::discovery_filter().$field) }
    };
}
pub(crate) use discovery;
