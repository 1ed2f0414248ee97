//! The command line. Daemon flags follow the Prometheus exporter style.
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::system::duration::parse_duration;

#[derive(Debug, Parser)]
#[command(
    name = "monitor",
    version,
    about = "Kernel-level job monitor: per-job CPU, scheduling, memory, IO and network from eBPF, served to Prometheus.",
    long_about = None,
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node daemon (root): load the kernel programs, watch job cgroups, serve /metrics.
    Daemon(DaemonArgs),
}

#[derive(Debug, Args)]
#[command(after_help = "\
A job is every direct child cgroup of --cgroup.root, named by its directory; the \
cgroups below it roll up into it. Example:
  mkdir /sys/fs/cgroup/monitor.slice/job42 && echo $$ > /sys/fs/cgroup/monitor.slice/job42/cgroup.procs
  curl -s localhost:9959/metrics | grep 'jobid=\"job42\"'")]
pub struct DaemonArgs {
    /// Address to serve metrics on (`:PORT` means every interface).
    #[arg(long = "web.listen-address", value_name = "ADDR", default_value = ":9959", value_parser = parse_listen_address)]
    pub listen_address: SocketAddr,

    /// Path under which to expose metrics.
    #[arg(long = "web.telemetry-path", value_name = "PATH", default_value = "/metrics", value_parser = parse_telemetry_path)]
    pub telemetry_path: String,

    /// How often to read the kernel maps (e.g. 500ms, 1s, 5s).
    #[arg(long = "sample.interval", value_name = "DURATION", default_value = "1s", value_parser = parse_positive_duration)]
    pub sample_interval: Duration,

    /// Cgroup (v2) under which every child directory is a job [default: <cgroup v2 mount>/monitor.slice, created if missing].
    #[arg(long = "cgroup.root", value_name = "DIR")]
    pub cgroup_root: Option<PathBuf>,

    /// How long finished jobs keep their final values in /metrics.
    #[arg(long = "job.retention", value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub job_retention: Duration,

    /// Log level: error, warn, info, debug or trace.
    #[arg(long = "log.level", value_name = "LEVEL", default_value = "info")]
    pub log_level: log::LevelFilter,

    /// Turn on the kernel's per-program run time accounting while the
    /// daemon runs (costs two clock reads per program run).
    #[arg(long = "bpf.stats")]
    pub bpf_stats: bool,

    /// Counter slots for cgroups (a power of two; 64 bytes per CPU each). A
    /// cgroup gets one of a few slots chosen by hashing its id, so keep it
    /// well above the cgroups counted at once (4x leaves room to spare); a
    /// cgroup finding them all taken is not counted, and is counted in
    /// monitor_bpf_lost_events_total{reason="cgroup_map_full"}.
    #[arg(long = "bpf.max-cgroups", value_name = "N", default_value_t = 16384, value_parser = parse_cgroup_slots)]
    pub max_cgroups: u32,

    /// Slots for tasks waiting to run (a power of two; 16 bytes each). Two
    /// waiting tasks in one slot lose one wait, counted in
    /// monitor_bpf_lost_events_total{reason="task_slot_collision"}.
    #[arg(long = "bpf.task-slots", value_name = "N", default_value_t = 65536, value_parser = parse_power_of_two)]
    pub task_slots: u32,
}

fn parse_listen_address(value: &str) -> Result<SocketAddr, String> {
    let full = if value.starts_with(':') { format!("0.0.0.0{value}") } else { value.to_string() };
    full.parse()
        .map_err(|e| format!("{e}: expected HOST:PORT or :PORT, e.g. :9959 or 127.0.0.1:9959"))
}

fn parse_telemetry_path(value: &str) -> Result<String, String> {
    if value.starts_with('/') && value.len() > 1 {
        Ok(value.to_string())
    } else {
        Err("must start with / and not be / itself (the landing page is there)".into())
    }
}

fn parse_power_of_two(value: &str) -> Result<u32, String> {
    power_of_two_at_least(value, 1024)
}

fn parse_cgroup_slots(value: &str) -> Result<u32, String> {
    power_of_two_at_least(value, 64)
}

fn power_of_two_at_least(value: &str, min: u32) -> Result<u32, String> {
    let n: u32 = value.parse().map_err(|e| format!("{e}"))?;
    if n.is_power_of_two() && n >= min {
        Ok(n)
    } else {
        Err(format!("must be a power of two, at least {min}"))
    }
}

fn parse_positive_duration(value: &str) -> Result<Duration, String> {
    let duration = parse_duration(value).map_err(|e| e.to_string())?;
    if duration < Duration::from_millis(10) {
        return Err("must be at least 10ms".into());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_are_sane() {
        let cli = Cli::parse_from(["monitor", "daemon"]);
        let Command::Daemon(args) = cli.command;
        assert_eq!(args.listen_address, "0.0.0.0:9959".parse().unwrap());
        assert_eq!(args.telemetry_path, "/metrics");
        assert_eq!(args.sample_interval, Duration::from_secs(1));
        assert_eq!(args.job_retention, Duration::from_secs(300));
        assert_eq!(args.max_cgroups, 16384);
    }

    #[test]
    fn bad_flags_are_refused() {
        for bad in [
            vec!["monitor", "daemon", "--sample.interval", "0s"],
            vec!["monitor", "daemon", "--web.listen-address", "nonsense"],
            vec!["monitor", "daemon", "--web.telemetry-path", "metrics"],
            vec!["monitor", "daemon", "--bpf.task-slots", "1000"],
            vec!["monitor", "daemon", "--bpf.max-cgroups", "10000"],
            vec!["monitor", "daemon", "--bpf.max-cgroups", "32"],
        ] {
            assert!(Cli::try_parse_from(&bad).is_err(), "{bad:?}");
        }
    }
}
