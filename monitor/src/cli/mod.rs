//! The command line. Daemon flags follow the Prometheus exporter style.
//!
//! [`Cli`] and its subcommands are here; the daemon's flags are in
//! [`daemon`], the client commands' in [`clients`], and the value parsers
//! they share in [`values`].
mod clients;
mod daemon;
#[cfg(test)]
mod tests;
mod values;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub use self::{
    clients::{ColorChoice, JobsArgs, ReportArgs, RunArgs},
    daemon::DaemonArgs,
};

#[derive(Debug, Parser)]
#[command(
    name = "monitor",
    version,
    about = concat!(
        "Kernel-level job monitor: per-job CPU, scheduling, memory, IO and network from eBPF, ",
        "served to Prometheus.",
    ),
    long_about = None,
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node daemon (root): load the kernel programs, watch job
    /// cgroups, serve /metrics.
    Daemon(Box<DaemonArgs>),
    /// Register with the daemon as a job, then run CMD in it (the job's
    /// process is CMD itself).
    Run(RunArgs),
    /// List running and recently finished jobs (--all: every stored profile).
    Jobs(JobsArgs),
    /// One job's report: CPU efficiency, memory peak against the limit,
    /// run-queue wait, IO and network, with advice.
    Report(ReportArgs),
}

/// Where client commands find the daemon.
pub const DEFAULT_SOCKET: &str = "/run/monitor/monitor.sock";

/// The job API socket, next to the launcher socket: `monitor.sock` ->
/// `monitor.api.sock`. Queries never go through the launcher socket, which
/// moves every peer into a job.
pub fn api_socket(launcher_socket: &std::path::Path) -> PathBuf {
    launcher_socket.with_extension("api.sock")
}
