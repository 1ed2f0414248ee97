//! Client commands: `run` registers over the launcher socket; `jobs` and
//! `report` read the job API socket next to it (`report` also Prometheus).
pub(crate) mod http;
pub mod jobs;
mod printable;
pub mod report;
pub mod run;
