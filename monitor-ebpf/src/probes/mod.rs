//! One module per kernel hook.
mod block_io;
mod cgroup_events;
mod cpu_flush;
mod floor;
mod network;
mod oom;
mod page_fault;
mod process_exec;
mod process_exit;
mod rss_stat;
mod sched_switch;
mod sched_wakeup;
mod task_newtask;
mod tracepoint_head;
mod vfs_io;
