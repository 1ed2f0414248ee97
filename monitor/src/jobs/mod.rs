//! Jobs: which cgroups make up which job, and each job's totals.
pub mod allocation;
pub mod discovery;
pub mod registry;
pub mod spares;
pub mod table;
pub mod task_cgroup;

pub use table::{JobKey, JobMeta, JobTable};
