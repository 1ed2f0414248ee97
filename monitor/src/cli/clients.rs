//! The client commands' flags: `monitor jobs`, `monitor report` and
//! `monitor run`.
use std::{path::PathBuf, time::Duration};

use clap::{Args, ValueEnum};

use super::{
    DEFAULT_SOCKET,
    values::{parse_duration, parse_positive_duration},
};

#[derive(Debug, Args)]
#[command(after_help = "\
Reads the daemon's job API on its API socket (next to the launcher socket: \
monitor.sock -> monitor.api.sock). The same JSON is on the web port at /api/v1/jobs.")]
pub struct JobsArgs {
    /// Every finished job the state store keeps, not only recent ones.
    #[arg(long)]
    pub all: bool,

    /// Print the jobs as JSON (the API's objects) instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Only this user's jobs.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,

    /// Finished jobs shown without --all: those that ended within this long.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub since: Duration,

    /// The daemon's launcher socket (the API socket is found next to it).
    #[arg(
        long = "socket.path",
        value_name = "PATH",
        env = "MONITOR_SOCKET",
        default_value = DEFAULT_SOCKET
    )]
    pub socket_path: PathBuf,
}

#[derive(Debug, Args)]
#[command(after_help = "\
What the figures are:
  CPU efficiency   CPU time over elapsed time x CPUs allocated (the job's cpuset; without
                   one, the node's CPUs, and the report says so). Over several nodes: CPU
                   time over the sum of each node's CPUs x its elapsed time.
  Memory peak      the highest resident memory of the job's processes (every page-fault
                   event counts, not only samples) against its memory limit (without one,
                   the node's MemTotal, and the report says so).
  Run-queue wait   time the job's threads were ready to run but waited for a CPU, as a
                   share of its CPU time: high when it runs more threads than cores.
Notes flag efficiency under 25%, a peak over 90% of the limit, a wait over 20% and OOM kills.

Sources: the local daemon's job API (as `monitor jobs`), or with --prometheus every node the \
job ran on (series summed over Prometheus' `instance`, one row per node), finished jobs \
included while Prometheus keeps them within --range. Exit status 1 when no job has that id.

Examples:
  monitor report 42
  monitor report 42 --user alice --json
  monitor report 1234567 --prometheus http://prometheus:9090 --range 7d")]
pub struct ReportArgs {
    /// The job id (as `monitor jobs` lists it: Slurm's job id for Slurm jobs).
    #[arg(value_name = "JOBID")]
    pub jobid: String,

    /// Only the job of this user (job ids are per user); without it, every
    /// user's job with that id is reported.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,

    /// Print the report as JSON (an array with one object per job found) instead of text.
    #[arg(long)]
    pub json: bool,

    /// Ask this Prometheus (http://HOST:PORT[/PREFIX]) instead of the local daemon: the job
    /// over every node whose daemon it scrapes.
    #[arg(long, value_name = "URL")]
    pub prometheus: Option<String>,

    /// With --prometheus: how far back to look for the job's series (finished jobs older than
    /// this are not found).
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "1d",
        value_parser = parse_positive_duration
    )]
    pub range: Duration,

    /// Colour and bars: auto (on a terminal, colour unless NO_COLOR is set), always, never.
    #[arg(long, value_name = "WHEN", default_value = "auto")]
    pub color: ColorChoice,

    /// The daemon's launcher socket (the API socket is found next to it).
    #[arg(
        long = "socket.path",
        value_name = "PATH",
        env = "MONITOR_SOCKET",
        default_value = DEFAULT_SOCKET
    )]
    pub socket_path: PathBuf,
}

/// When the text report has colour and bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// Colour and bars when stdout is a terminal (colour off when NO_COLOR is set).
    Auto,
    /// Colour and bars even when piped.
    Always,
    /// Plain text.
    Never,
}

#[derive(Debug, Args)]
#[command(after_help = "\
The job id defaults from SLURM_JOB_ID, PBS_JOBID, LSB_JOBID or FLUX_JOB_ID, else a \
generated one. If the daemon cannot be reached, CMD runs anyway (with a warning) \
unless --require is given. Example:
  monitor run --job-id 42 --name lammps --label partition=gpu -- mpirun -n 4 ./lmp -in in.lj")]
pub struct RunArgs {
    /// The job's id (jobs are per user: your 42 is not another user's 42).
    #[arg(long = "job-id", value_name = "ID")]
    pub job_id: Option<String>,

    /// A human-readable name, shown on monitor_job_info.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// A label for monitor_job_info (repeatable): --label partition=gpu.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,

    /// Fail (exit 75) instead of running CMD unmonitored when the daemon cannot register the job.
    #[arg(long)]
    pub require: bool,

    /// The daemon's launcher socket.
    #[arg(
        long = "socket.path",
        value_name = "PATH",
        env = "MONITOR_SOCKET",
        default_value = DEFAULT_SOCKET
    )]
    pub socket_path: PathBuf,

    /// The command to run, after `--`.
    #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
    pub command: Vec<std::ffi::OsString>,
}

fn parse_label(value: &str) -> Result<(String, String), String> {
    let (key, value) = value.split_once('=').ok_or("expected KEY=VALUE")?;
    if key.is_empty() {
        return Err("empty label name".into());
    }
    Ok((key.to_string(), value.to_string()))
}
