//! The command line. Daemon flags follow the Prometheus exporter style.
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{launcher::hello::HelloLimits, system::duration::parse_duration};

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
    Daemon(Box<DaemonArgs>),
    /// Register with the daemon as a job, then run CMD in it (the job's process is CMD itself).
    Run(RunArgs),
    /// List running and recently finished jobs (--all: every stored profile).
    Jobs(JobsArgs),
    /// One job's report: CPU efficiency, memory peak against the limit, run-queue wait, IO and network, with advice.
    Report(ReportArgs),
}

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
    #[arg(long = "socket.path", value_name = "PATH", env = "MONITOR_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket_path: PathBuf,
}

/// Where client commands find the daemon.
pub const DEFAULT_SOCKET: &str = "/run/monitor/monitor.sock";

/// The job API socket, next to the launcher socket: `monitor.sock` ->
/// `monitor.api.sock`. Queries never go through the launcher socket, which
/// moves every peer into a job.
pub fn api_socket(launcher_socket: &std::path::Path) -> PathBuf {
    launcher_socket.with_extension("api.sock")
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

    /// Only the job of this user (job ids are per user); without it, every user's job with that id is reported.
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
    #[arg(long, value_name = "DURATION", default_value = "1d", value_parser = parse_positive_duration)]
    pub range: Duration,

    /// Colour and bars: auto (on a terminal, colour unless NO_COLOR is set), always, never.
    #[arg(long, value_name = "WHEN", default_value = "auto")]
    pub color: ColorChoice,

    /// The daemon's launcher socket (the API socket is found next to it).
    #[arg(long = "socket.path", value_name = "PATH", env = "MONITOR_SOCKET", default_value = DEFAULT_SOCKET)]
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
    #[arg(long = "socket.path", value_name = "PATH", env = "MONITOR_SOCKET", default_value = DEFAULT_SOCKET)]
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

    /// Prometheus exporter-toolkit web configuration (YAML): TLS, client
    /// certificates, response headers and basic auth for the web port
    /// (metrics and the JSON API). Reread when it or a file it names
    /// changes, and on SIGHUP. See README, "Securing the endpoint".
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub web_config_file: Option<PathBuf>,

    /// The API socket (`monitor jobs`, `monitor report`) shows each user
    /// their own jobs only; root sees every job. As Slurm's
    /// PrivateData=jobs. The web port is not affected: protect it with
    /// --web.config.file.
    #[arg(long = "api.private")]
    pub api_private: bool,

    /// Connections the web port serves at once (more wait in the kernel's
    /// backlog); the API socket takes the same number, a quarter of them
    /// at most from any one user.
    #[arg(long = "web.max-connections", value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_connections: u32,

    /// How often to read the kernel maps (e.g. 500ms, 1s, 5s).
    #[arg(long = "sample.interval", value_name = "DURATION", default_value = "1s", value_parser = parse_positive_duration)]
    pub sample_interval: Duration,

    /// Cgroup (v2) under which every child directory is a job [default: <cgroup v2 mount>/monitor.slice, created if missing].
    #[arg(long = "cgroup.root", value_name = "DIR")]
    pub cgroup_root: Option<PathBuf>,

    /// How long finished jobs keep their final values in /metrics.
    #[arg(long = "job.retention", value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub job_retention: Duration,

    /// Finished jobs of one non-root user kept in /metrics within
    /// --job.retention: past it the user's oldest leave /metrics early
    /// (they stay in the state store and the job API), counted in
    /// monitor_jobs_evicted_total{reason="per_user_limit"}. At the default
    /// registration rate (20/s) a finished job stays at least 100 s.
    #[arg(long = "job.retention.max-per-user", value_name = "N", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_finished_per_user: u64,

    /// Log level: error, warn, info, debug or trace.
    #[arg(long = "log.level", value_name = "LEVEL", default_value = "info")]
    pub log_level: log::LevelFilter,

    /// Turn on the kernel's per-program run time accounting while the
    /// daemon runs (costs two clock reads per program run).
    #[arg(long = "bpf.stats")]
    pub bpf_stats: bool,

    /// The launcher socket (every user may connect; each connection is checked).
    #[arg(long = "socket.path", value_name = "PATH", env = "MONITOR_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket_path: PathBuf,

    /// An executable allowed to register jobs (repeatable, or one `;`-separated list).
    /// Matched exactly against the peer's /proc/PID/exe. For Apptainer:
    /// --trust.path '/usr/libexec/apptainer/bin/starter;/usr/libexec/apptainer/bin/starter-suid'
    #[arg(long = "trust.path", value_name = "PATH")]
    pub trust_paths: Vec<String>,

    /// Trust the daemon's own binary (for `monitor run`).
    #[arg(long = "trust.self", value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub trust_self: bool,

    /// A regex over a launcher's cgroup v2 path: matching launchers are adopted
    /// where they are (their resource manager's limits stay) instead of moved,
    /// if that directory and all above it are root's (a user's own
    /// directories never are a resource manager's). Repeatable; anchor it
    /// with ^. The default matches Slurm's
    /// /system.slice/..slurmstepd.scope/job_N/step_N layout.
    #[arg(long = "adopt.cgroup", value_name = "REGEX", default_values_t = [crate::launcher::adopt::SLURM_DEFAULT.to_string()])]
    pub adopt_cgroups: Vec<String>,

    /// A resource manager's job layout: `[CONTROLLER:]^REGEX` over a job
    /// directory's cgroup path, with named captures `jobid` (and `uid`;
    /// otherwise the directory's owner). A CONTROLLER (e.g. `freezer`)
    /// puts it in that v1 hierarchy. Matching directories are jobs, counted
    /// in place from their first task, ended when removed; directories
    /// below them count in them. Repeatable (up to 4); the defaults are
    /// Slurm's cgroup/v2 and cgroup/v1 layouts.
    #[arg(long = "discover.layout", value_name = "[CONTROLLER:]REGEX", default_values_t = [
        crate::jobs::discovery::SLURM_V2.to_string(),
        crate::jobs::discovery::SLURM_V1.to_string(),
    ])]
    pub discover_layouts: Vec<String>,

    /// Find no resource manager's jobs (only the monitored root's and
    /// registered ones).
    #[arg(long = "discover.off")]
    pub discover_off: bool,

    /// Registered tasks (each has its own task cgroup) a non-root user may
    /// have running at once: bounds the cgroups any user can make.
    #[arg(long = "jobs.max-per-user", value_name = "N", default_value_t = 256)]
    pub max_jobs_per_user: usize,

    /// Launcher connections a non-root user may hold at once (a silent
    /// launcher, Apptainer's starter, holds one while its container runs);
    /// more are refused at once, and counted as
    /// monitor_registrations_total{result="over_limit"}.
    #[arg(long = "socket.max-connections-per-user", value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_user: u32,

    /// Launcher connections (registrations) a non-root user may open per
    /// second, sustained; more are answered with an error at once and
    /// counted as monitor_registrations_total{result="rate_limited"}. A
    /// refused `monitor run` still runs its command, unmonitored (unless
    /// --require). 0: no limit.
    #[arg(long = "socket.registration-rate", value_name = "PER_SECOND", default_value_t = 20.0, value_parser = parse_rate)]
    pub registration_rate: f64,

    /// Registrations a non-root user may open at once above the sustained
    /// rate (the bucket refills at --socket.registration-rate).
    #[arg(long = "socket.registration-burst", value_name = "N", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    pub registration_burst: u32,

    /// Longest job name a hello may carry, in bytes.
    #[arg(long = "socket.max-name-bytes", value_name = "BYTES", default_value_t = HelloLimits::DEFAULT_NAME as u64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub max_name_bytes: u64,

    /// Longest label name a hello may carry, in bytes (shown as label_<name>
    /// on monitor_job_info; names are [a-zA-Z_][a-zA-Z0-9_]*).
    #[arg(long = "socket.max-label-name-bytes", value_name = "BYTES", default_value_t = HelloLimits::DEFAULT_LABEL_NAME as u64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub max_label_name_bytes: u64,

    /// Longest label value a hello may carry, in bytes.
    #[arg(long = "socket.max-label-value-bytes", value_name = "BYTES", default_value_t = HelloLimits::DEFAULT_LABEL_VALUE as u64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub max_label_value_bytes: u64,

    /// How long a launcher has to send its hello line before it counts as silent.
    #[arg(long = "socket.hello-timeout", value_name = "DURATION", default_value = "2s", value_parser = parse_positive_duration)]
    pub hello_timeout: Duration,

    /// Counter slots for cgroups (a power of two; 64 bytes per CPU each). A
    /// cgroup gets one of a few slots chosen by hashing its id, so keep it
    /// well above the cgroups counted at once (4x leaves room to spare); a
    /// cgroup finding them all taken is not counted, and is counted in
    /// monitor_bpf_lost_events_total{reason="cgroup_map_full"}.
    #[arg(long = "bpf.max-cgroups", value_name = "N", default_value_t = 16384, value_parser = parse_cgroup_slots)]
    pub max_cgroups: u32,

    /// Threads of jobs tracked at once (about 200 bytes of kernel memory
    /// each, allocated as jobs start them). A job thread started when all
    /// are taken is not counted, and is counted in
    /// monitor_bpf_lost_events_total{reason="task_map_full"}. Every sample
    /// scans the map's buckets (one per possible entry), so a larger map
    /// costs each sample a little more. The old name --bpf.task-slots is
    /// accepted too.
    #[arg(
        long = "bpf.max-tasks",
        alias = "bpf.task-slots",
        value_name = "N",
        default_value_t = 16384,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_tasks: u32,

    /// Where the kernel programs, their links and maps are pinned (on bpffs),
    /// so counting goes on while the daemon is stopped, restarted or
    /// upgraded; a restarted daemon takes them up again. Empty: nothing is
    /// pinned and the programs go with the daemon.
    #[arg(long = "bpf.pin-path", value_name = "DIR", default_value = DEFAULT_PIN_PATH, value_parser = path_or_empty)]
    pub pin_path: PathBuf,

    /// Unload everything pinned under --bpf.pin-path (stopping all counting
    /// while the daemon is down) and exit. Stop the daemon first.
    #[arg(long)]
    pub cleanup: bool,

    /// Directory of the state store: every finished job's profile and the
    /// registry of running jobs (an SQLite database, jobs.db).
    #[arg(long = "state.dir", value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,

    /// How long finished jobs' profiles stay in the state store (0: for
    /// good, as accounting wants; --state.max-profiles bounds the disk).
    #[arg(long = "state.retention", value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    pub state_retention: Duration,

    /// Profiles the state store keeps at most (about 1.2 KiB of disk each
    /// for a typical job; 0: no bound). Past it the oldest profiles of the
    /// users who keep the most are deleted, so one user's flood of jobs evicts that user's own
    /// history first; counted in
    /// monitor_state_profiles_pruned_total{reason="max_profiles"}.
    #[arg(
        long = "state.max-profiles",
        value_name = "N",
        default_value_t = 500_000
    )]
    pub state_max_profiles: u64,

    /// Finished jobs' profiles held in memory while the state store cannot
    /// be written (disk full, broken disk), at most (about 1 KiB each for a typical job).
    /// Past it the oldest held are dropped, counted in
    /// monitor_state_profiles_dropped_total{reason="store_unavailable"}.
    #[arg(long = "state.max-pending", value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub state_max_pending: u64,

    /// Finished jobs a job API answer lists when it names no `limit`; more
    /// are on the next pages (the answer's Link header, rel="next").
    #[arg(long = "api.page-size", value_name = "N", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    pub api_page_size: u64,

    /// The largest `limit` a job API request may ask for (each finished job
    /// is ~1 KiB of JSON built in memory); a larger one is answered 400.
    #[arg(long = "api.max-page-size", value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub api_max_page_size: u64,
}

pub const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/monitor";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/monitor";

fn parse_listen_address(value: &str) -> Result<SocketAddr, String> {
    let full = if value.starts_with(':') {
        format!("0.0.0.0{value}")
    } else {
        value.to_string()
    };
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

/// A path, or empty (clap's own path parser refuses an empty value, which
/// `--bpf.pin-path` gives a meaning: pin nothing).
fn parse_rate(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate >= 0.0 => Ok(rate),
        _ => Err(format!("{value:?} is not a rate per second (0 or more)")),
    }
}

impl DaemonArgs {
    pub fn hello_limits(&self) -> HelloLimits {
        let bytes = |value: u64| usize::try_from(value).unwrap_or(usize::MAX);
        HelloLimits {
            name: bytes(self.max_name_bytes),
            label_name: bytes(self.max_label_name_bytes),
            label_value: bytes(self.max_label_value_bytes),
        }
    }
}

fn path_or_empty(value: &str) -> Result<PathBuf, std::convert::Infallible> {
    Ok(PathBuf::from(value))
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
        let Command::Daemon(args) = cli.command else {
            panic!("not the daemon");
        };
        assert_eq!(args.socket_path, PathBuf::from(DEFAULT_SOCKET));
        assert!(args.trust_self);
        assert_eq!(args.listen_address, "0.0.0.0:9959".parse().unwrap());
        assert_eq!(args.telemetry_path, "/metrics");
        assert_eq!(args.sample_interval, Duration::from_secs(1));
        assert_eq!(args.job_retention, Duration::from_secs(300));
        assert_eq!(args.max_cgroups, 16384);
        assert_eq!(
            (args.registration_rate, args.registration_burst),
            (20.0, 500)
        );
        assert_eq!(args.max_finished_per_user, 2000);
        assert_eq!(args.hello_limits(), HelloLimits::default());
    }

    #[test]
    fn run_takes_labels_and_a_command() {
        let cli = Cli::parse_from([
            "monitor", "run", "--job-id", "7", "--label", "a=b=c", "--", "sleep", "--help",
        ]);
        let Command::Run(args) = cli.command else {
            panic!("not run");
        };
        assert_eq!(args.job_id.as_deref(), Some("7"));
        assert_eq!(args.labels, vec![("a".to_string(), "b=c".to_string())]);
        assert_eq!(args.command, vec!["sleep", "--help"]);
        assert!(Cli::try_parse_from(["monitor", "run"]).is_err());
        assert!(Cli::try_parse_from(["monitor", "run", "--label", "x", "--", "true"]).is_err());
    }

    #[test]
    fn report_takes_a_job_id_and_its_sources() {
        let cli = Cli::parse_from(["monitor", "report", "42", "--user", "alice"]);
        let Command::Report(args) = cli.command else {
            panic!("not report");
        };
        assert_eq!(
            (args.jobid.as_str(), args.user.as_deref()),
            ("42", Some("alice"))
        );
        assert_eq!(args.range, Duration::from_secs(86_400));
        assert_eq!(args.color, ColorChoice::Auto);
        assert!(args.prometheus.is_none() && !args.json);
        assert!(Cli::try_parse_from(["monitor", "report"]).is_err());
        assert!(Cli::try_parse_from(["monitor", "report", "1", "--color", "sometimes"]).is_err());
    }

    #[test]
    fn bad_flags_are_refused() {
        for bad in [
            vec!["monitor", "daemon", "--sample.interval", "0s"],
            vec!["monitor", "daemon", "--web.listen-address", "nonsense"],
            vec!["monitor", "daemon", "--web.telemetry-path", "metrics"],
            vec!["monitor", "daemon", "--bpf.max-tasks", "0"],
            vec!["monitor", "daemon", "--bpf.task-slots", "-1"],
            vec!["monitor", "daemon", "--bpf.max-cgroups", "10000"],
            vec!["monitor", "daemon", "--bpf.max-cgroups", "32"],
            vec!["monitor", "daemon", "--socket.registration-rate", "-1"],
            vec!["monitor", "daemon", "--socket.registration-rate", "NaN"],
            vec!["monitor", "daemon", "--socket.registration-burst", "0"],
            vec!["monitor", "daemon", "--job.retention.max-per-user", "0"],
            vec!["monitor", "daemon", "--socket.max-name-bytes", "5000"],
        ] {
            assert!(Cli::try_parse_from(&bad).is_err(), "{bad:?}");
        }
    }
}
