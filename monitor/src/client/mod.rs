//! Client commands: `run` registers over the launcher socket, `jobs` reads
//! the job API socket next to it.
pub mod jobs;
pub mod run;
