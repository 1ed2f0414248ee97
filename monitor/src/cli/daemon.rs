//! The daemon's flags, in the Prometheus exporter style.
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Args;

use super::{
    DEFAULT_SOCKET,
    values::{
        parse_cgroup_slots, parse_duration, parse_listen_address, parse_positive_duration,
        parse_rate, parse_telemetry_path, path_or_empty,
    },
};
use crate::launcher::hello::HelloLimits;

#[derive(Debug, Args)]
#[command(after_help = concat!(
    "A job is every direct child cgroup of --cgroup.root, named by its directory; the ",
    "cgroups below it roll up into it. Example:\n",
    "  mkdir /sys/fs/cgroup/monitor.slice/job42 && ",
    "echo $$ > /sys/fs/cgroup/monitor.slice/job42/cgroup.procs\n",
    "  curl -s localhost:9959/metrics | grep 'jobid=\"job42\"'",
))]
pub struct DaemonArgs {
    /// Address to serve metrics on (`:PORT` means every interface).
    #[arg(
        long = "web.listen-address",
        value_name = "ADDR",
        default_value = ":9959",
        value_parser = parse_listen_address
    )]
    pub listen_address: SocketAddr,

    /// Path under which to expose metrics.
    #[arg(
        long = "web.telemetry-path",
        value_name = "PATH",
        default_value = "/metrics",
        value_parser = parse_telemetry_path
    )]
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
    #[arg(
        long = "web.max-connections",
        value_name = "N",
        default_value_t = 64,
        value_parser = clap::value_parser!(u32).range(1..=65536)
    )]
    pub max_connections: u32,

    /// How often to read the kernel maps (e.g. 500ms, 1s, 5s).
    #[arg(
        long = "sample.interval",
        value_name = "DURATION",
        default_value = "1s",
        value_parser = parse_positive_duration
    )]
    pub sample_interval: Duration,

    /// Cgroup (v2) under which every child directory is a job [default:
    /// <cgroup v2 mount>/monitor.slice, created if missing].
    #[arg(long = "cgroup.root", value_name = "DIR")]
    pub cgroup_root: Option<PathBuf>,

    /// Set the cgroup v2 hierarchy's option favordynmods at start if it
    /// lacks it (its other options and the mount's flags kept): without
    /// it, each move of a registering process into its task cgroup may
    /// wait for an RCU grace period (4-16 ms) holding the kernel's cgroup
    /// mutex, stalling every other registration behind it. Costs fork,
    /// exit and exec a memory barrier (see the README). false leaves the
    /// hierarchy as it is.
    #[arg(
        long = "cgroup.favordynmods",
        value_name = "BOOL",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub favordynmods: bool,

    /// How long finished jobs keep their final values in /metrics.
    #[arg(
        long = "job.retention",
        value_name = "DURATION",
        default_value = "5m",
        value_parser = parse_duration
    )]
    pub job_retention: Duration,

    /// Finished jobs of one non-root user kept in /metrics within
    /// --job.retention: past it the user's oldest leave /metrics early
    /// (they stay in the state store and the job API), counted in
    /// monitor_jobs_evicted_total{reason="per_user_limit"}. At the default
    /// registration rate (20/s) a finished job stays at least 100 s.
    #[arg(
        long = "job.retention.max-per-user",
        value_name = "N",
        default_value_t = 2000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub max_finished_per_user: u64,

    /// Log level: error, warn, info, debug or trace.
    #[arg(long = "log.level", value_name = "LEVEL", default_value = "info")]
    pub log_level: log::LevelFilter,

    /// Turn on the kernel's per-program run time accounting while the
    /// daemon runs (costs two clock reads per program run).
    #[arg(long = "bpf.stats")]
    pub bpf_stats: bool,

    /// The launcher socket (every user may connect; each connection is checked).
    #[arg(
        long = "socket.path",
        value_name = "PATH",
        env = "MONITOR_SOCKET",
        default_value = DEFAULT_SOCKET
    )]
    pub socket_path: PathBuf,

    /// An executable allowed to register jobs (repeatable, or one `;`-separated list).
    /// Matched exactly against the peer's /proc/PID/exe. For Apptainer:
    /// --trust.path '/usr/libexec/apptainer/bin/starter;/usr/libexec/apptainer/bin/starter-suid'
    #[arg(long = "trust.path", value_name = "PATH")]
    pub trust_paths: Vec<String>,

    /// Trust the daemon's own binary (for `monitor run`).
    #[arg(
        long = "trust.self",
        value_name = "BOOL",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub trust_self: bool,

    /// A regex over a launcher's cgroup v2 path: matching launchers are adopted
    /// where they are (their resource manager's limits stay) instead of moved,
    /// if that directory and all above it are root's (a user's own
    /// directories never are a resource manager's). Repeatable; anchor it
    /// with ^. The default matches Slurm's
    /// /system.slice/..slurmstepd.scope/job_N/step_N layout.
    #[arg(
        long = "adopt.cgroup",
        value_name = "REGEX",
        default_values_t = [crate::launcher::adopt::SLURM_DEFAULT.to_string()]
    )]
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

    /// Empty task cgroups kept ready under --cgroup.root, so a registration
    /// takes one instead of waiting for a mkdir (which queues behind every
    /// other mkdir and rmdir there: tens of ms at 1,000 registrations a
    /// second). Each holds a counter slot: at most one per 16 slots of
    /// --bpf.max-cgroups. 0 makes each on demand.
    #[arg(long = "socket.spare-cgroups", value_name = "N", default_value_t = 32)]
    pub spare_cgroups: usize,

    /// Launcher connections a non-root user may hold at once (a silent
    /// launcher, Apptainer's starter, holds one while its container runs);
    /// more are refused at once, and counted as
    /// monitor_registrations_total{result="over_limit"}.
    #[arg(
        long = "socket.max-connections-per-user",
        value_name = "N",
        default_value_t = 256,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_connections_per_user: u32,

    /// Launcher connections (registrations) a non-root user may open per
    /// second, sustained; more are answered with an error at once and
    /// counted as monitor_registrations_total{result="rate_limited"}. A
    /// refused `monitor run` still runs its command, unmonitored (unless
    /// --require). 0: no limit.
    #[arg(
        long = "socket.registration-rate",
        value_name = "PER_SECOND",
        default_value_t = 20.0,
        value_parser = parse_rate
    )]
    pub registration_rate: f64,

    /// Registrations a non-root user may open at once above the sustained
    /// rate (the bucket refills at --socket.registration-rate).
    #[arg(
        long = "socket.registration-burst",
        value_name = "N",
        default_value_t = 500,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub registration_burst: u32,

    /// Longest job name a hello may carry, in bytes.
    #[arg(
        long = "socket.max-name-bytes",
        value_name = "BYTES",
        default_value_t = HelloLimits::DEFAULT_NAME as u64,
        value_parser = clap::value_parser!(u64).range(1..=4096)
    )]
    pub max_name_bytes: u64,

    /// Longest label name a hello may carry, in bytes (shown as label_<name>
    /// on monitor_job_info; names are [a-zA-Z_][a-zA-Z0-9_]*).
    #[arg(
        long = "socket.max-label-name-bytes",
        value_name = "BYTES",
        default_value_t = HelloLimits::DEFAULT_LABEL_NAME as u64,
        value_parser = clap::value_parser!(u64).range(1..=4096)
    )]
    pub max_label_name_bytes: u64,

    /// Longest label value a hello may carry, in bytes.
    #[arg(
        long = "socket.max-label-value-bytes",
        value_name = "BYTES",
        default_value_t = HelloLimits::DEFAULT_LABEL_VALUE as u64,
        value_parser = clap::value_parser!(u64).range(1..=4096)
    )]
    pub max_label_value_bytes: u64,

    /// How long a launcher has to send its hello line before it counts as silent.
    #[arg(
        long = "socket.hello-timeout",
        value_name = "DURATION",
        default_value = "2s",
        value_parser = parse_positive_duration
    )]
    pub hello_timeout: Duration,

    /// Counter slots for cgroups (a power of two; 64 bytes per CPU each). A
    /// cgroup gets one of a few slots chosen by hashing its id, so keep it
    /// well above the cgroups counted at once (4x leaves room to spare); a
    /// cgroup finding them all taken is not counted, and is counted in
    /// monitor_bpf_lost_events_total{reason="cgroup_map_full"}.
    #[arg(
        long = "bpf.max-cgroups",
        value_name = "N",
        default_value_t = 16384,
        value_parser = parse_cgroup_slots
    )]
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
    #[arg(
        long = "bpf.pin-path",
        value_name = "DIR",
        default_value = DEFAULT_PIN_PATH,
        value_parser = path_or_empty
    )]
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
    #[arg(
        long = "state.retention",
        value_name = "DURATION",
        default_value = "0s",
        value_parser = parse_duration
    )]
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
    #[arg(
        long = "state.max-pending",
        value_name = "N",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub state_max_pending: u64,

    /// Finished jobs a job API answer lists when it names no `limit`; more
    /// are on the next pages (the answer's Link header, rel="next").
    #[arg(
        long = "api.page-size",
        value_name = "N",
        default_value_t = 500,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub api_page_size: u64,

    /// The largest `limit` a job API request may ask for (each finished job
    /// is ~1 KiB of JSON built in memory); a larger one is answered 400.
    #[arg(
        long = "api.max-page-size",
        value_name = "N",
        default_value_t = 1000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub api_max_page_size: u64,
}

pub const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/monitor";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/monitor";

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
