//! Harness for the privileged end-to-end tests: start the real daemon on its
//! own cgroup root and port, run workloads inside job cgroups, read
//! `/metrics`, and compare with the kernel's own accounting.
//!
//! Every test owns its daemon and its cgroup root, so tests run in parallel;
//! the timing-sensitive ones take [`cpu_exclusive`] to have the machine to
//! themselves.
pub mod accuracy;
pub mod cgroup;
pub mod cgroup_options;
pub mod counter_map;
pub mod daemon;
pub mod grafana;
pub mod http;
pub mod jobs_api;
pub mod launcher;
pub mod memcg;
pub mod openmetrics;
pub mod policy;
pub mod process;
pub mod prometheus;
pub mod slurm;
pub mod starter;
pub mod tls;
pub mod workload;

pub use cgroup::JobCgroup;
pub use daemon::Daemon;
pub use openmetrics::Metrics;
pub use policy::{cpu_exclusive, cpu_shared, require_root_or_skip, skip_or_fail};
pub use process::ChildGuard;
