//! One module per kernel hook.
mod cgroup_attach;
mod cgroup_events;
mod floor;
mod network;
mod oom;
mod process_exec;
mod rss_stat;
mod task_exit;
mod task_free;
mod task_iter;
mod task_newtask;
mod tracked_tasks;
