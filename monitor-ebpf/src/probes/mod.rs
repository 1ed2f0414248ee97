//! One module per kernel hook.
mod cgroup_events;
mod cpu_flush;
mod floor;
mod process_exec;
mod process_exit;
mod sched_switch;
mod sched_wakeup;
mod task_newtask;
