//! `cargo xtask bench`: what the monitor costs the jobs it watches, and how
//! it scales, measured against its goals and written to bench/RESULTS.md.
//!
//! The machine is noisy, so every figure is a median over rounds, runs with
//! and without the monitor are interleaved, and every goal compares figures
//! taken in the same run. Timings are reported here, never asserted in tests.
mod bpf_stats;
mod cgroup;
mod daemon;
mod daemon_cost;
mod floor;
mod job_slowdown;
mod job_workloads;
mod lifecycle;
mod page_faults;
mod pingpong;
mod pinned;
mod procfs;
mod program_cost;
mod registrations;
mod report;
mod retention;
mod scale;
mod slowdown;
mod stats;
pub(crate) mod system;
mod thread_sleepers;
mod walk_floor;

use std::{fs, path::PathBuf};

use anyhow::{Context as _, bail};

use crate::{
    build,
    util::{is_root, workspace_root},
};

/// Rounds below this give medians too shaky to judge a goal by.
const MIN_TRUSTED_ROUNDS: u32 = 5;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Rounds per measurement; medians are reported (5 or more to judge goals).
    #[arg(long, value_name = "N", default_value_t = MIN_TRUSTED_ROUNDS, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,

    /// Round trips per pipe ping-pong run.
    #[arg(long = "round-trips", value_name = "N", default_value_t = 200_000, value_parser = clap::value_parser!(u32).range(1000..))]
    pub round_trips: u32,

    /// Running jobs for the /metrics latency and RSS measurement, and for
    /// the daemon's own cost.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub jobs: u32,

    /// Threads of each job's process in the daemon's own cost benchmark
    /// (tasks on the node: --jobs times this).
    #[arg(long = "threads-per-job", value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub threads_per_job: u32,

    /// Seconds of the window over which the daemon's own CPU is measured,
    /// per phase and round.
    #[arg(long = "cost-window", value_name = "SECONDS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(2..))]
    pub cost_window: u64,

    /// GETs of /metrics timed with all those jobs present.
    #[arg(long, value_name = "N", default_value_t = 200, value_parser = clap::value_parser!(u32).range(100..))]
    pub scrapes: u32,

    /// Concurrent launcher processes for the registration benchmark.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub launchers: u32,

    /// Registrations each launcher makes in a row, per round.
    #[arg(long = "registrations-per-launcher", value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub registrations_per_launcher: u32,

    /// Runs of the dd, page-fault and network workloads per side and
    /// round; the round's figure is their median.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub repeats: u32,

    /// 512-byte blocks dd copies per run of the IO-heavy job.
    #[arg(long = "io-blocks", value_name = "N", default_value_t = 200_000, value_parser = clap::value_parser!(u32).range(1000..))]
    pub io_blocks: u32,

    /// Processes forked and reaped per run of the process-churn job.
    #[arg(long, value_name = "N", default_value_t = 2000, value_parser = clap::value_parser!(u32).range(100..))]
    pub forks: u32,

    /// Bytes sent per run of the network-heavy job (loopback TCP, 64 KiB writes).
    #[arg(long = "net-bytes", value_name = "N", default_value_t = 200_000_000, value_parser = clap::value_parser!(u64).range(1_000_000..))]
    pub net_bytes: u64,

    /// Directory jobs made, counted and removed at once for the finished-jobs
    /// benchmark (all in retention while /metrics is timed).
    #[arg(long = "finished-jobs", value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub finished_jobs: u32,

    /// Run only these benchmarks (repeat the flag, or separate with commas)
    /// and update their parts of bench/RESULTS.md, keeping the others' figures.
    #[arg(long, value_name = "NAME", value_enum, value_delimiter = ',')]
    pub only: Vec<Benchmark>,

    /// (Internal) Be one launcher of the registration benchmark: register
    /// --registrations-per-launcher times on this socket.
    #[arg(long, value_name = "SOCKET", hide = true)]
    pub registration_launcher: Option<PathBuf>,

    /// (Internal) Be the forking process of the process-churn benchmark:
    /// fork and reap this many children, print the seconds.
    #[arg(long, value_name = "N", hide = true)]
    pub fork_children: Option<u32>,

    /// (Internal) The launcher's number, for its job ids.
    #[arg(long, value_name = "N", hide = true, default_value_t = 0)]
    pub launcher_index: u32,

    /// (Internal) Microseconds between the launcher's registrations (0: back to back).
    #[arg(long, value_name = "US", hide = true, default_value_t = 0)]
    pub launcher_interval_us: u64,

    /// (Internal) When the launcher's first paced registration is due, in microseconds after the start.
    #[arg(long, value_name = "US", hide = true, default_value_t = 0)]
    pub launcher_offset_us: u64,
}

/// The benchmarks, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Benchmark {
    /// Every attached program's cost per run and runs per second, under
    /// each workload (bpf_stats).
    Cost,
    /// Pipe ping-pong with and without the daemon.
    Slowdown,
    /// dd with 512-byte blocks in a job, with and without the daemon.
    Io,
    /// The same dd outside any job, with and without the daemon.
    IoOutside,
    /// A page-fault-heavy job (1 GiB in 4 KiB pages), with and without the daemon.
    Faults,
    /// A network-heavy job (loopback TCP) with and without the daemon.
    Network,
    /// The daemon's own CPU and sample time with many jobs and tasks.
    DaemonCost,
    /// /metrics latency and daemon RSS with many jobs.
    Scale,
    /// Launcher registrations per second and their latency.
    Registrations,
    /// Profiles written per second, and /metrics, the job API and RSS with
    /// many finished jobs in retention.
    Retention,
    /// A job forking and reaping processes, with and without the daemon
    /// (and the favordynmods mount option it sets).
    Processes,
}

impl Benchmark {
    pub const ALL: [Self; 11] = [
        Self::Cost,
        Self::Slowdown,
        Self::Io,
        Self::IoOutside,
        Self::Faults,
        Self::Network,
        Self::DaemonCost,
        Self::Scale,
        Self::Registrations,
        Self::Retention,
        Self::Processes,
    ];
}

/// What every benchmark needs: the built artefacts and where to make cgroups.
pub struct Setup {
    pub daemon: PathBuf,
    pub object: PathBuf,
    pub cgroup_mount: PathBuf,
    pub logs: PathBuf,
}

pub fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    if let Some(count) = args.fork_children {
        return job_workloads::fork_children_main(count);
    }
    if let Some(socket) = &args.registration_launcher {
        return registrations::launcher_main(
            socket,
            args.launcher_index,
            args.registrations_per_launcher,
            args.launcher_interval_us,
            args.launcher_offset_us,
        );
    }
    if !is_root() {
        bail!("the benchmarks load kernel programs and make cgroups: run them as root");
    }
    if args.rounds < MIN_TRUSTED_ROUNDS {
        eprintln!(
            "xtask: only {} rounds; the goals need {MIN_TRUSTED_ROUNDS} or more",
            args.rounds
        );
    }
    let setup = prepare()?;
    let environment = system::Environment::probe(&setup.cgroup_mount)?;
    let selected: Vec<Benchmark> = Benchmark::ALL
        .into_iter()
        .filter(|b| args.only.is_empty() || args.only.contains(b))
        .collect();
    let mut report = report::Report::new(environment, args.rounds, MIN_TRUSTED_ROUNDS);
    // Counted before, between and after the benchmarks, when none of ours runs.
    report.foreign_programs.push(system::foreign_programs());
    for (step, bench) in selected.iter().enumerate() {
        eprintln!(
            "xtask: bench {}/{}: {}",
            step + 1,
            selected.len(),
            describe(*bench, args)
        );
        run_one(*bench, &setup, args, &mut report)?;
        report.foreign_programs.push(system::foreign_programs());
    }

    let path = workspace_root().join("bench/RESULTS.md");
    let markdown = if args.only.is_empty() {
        report.markdown()
    } else {
        // Only some benchmarks ran: their sections and goals replace theirs
        // in the last full report; the rest stays as it was.
        let existing = fs::read_to_string(&path).unwrap_or_default();
        report::merge(&existing, &report)
    };
    fs::write(&path, markdown).with_context(|| format!("writing {}", path.display()))?;
    println!("{}", report.summary());
    println!("written to {}", path.display());
    Ok(())
}

/// What a benchmark does, for the progress line.
fn describe(bench: Benchmark, args: &BenchArgs) -> String {
    match bench {
        Benchmark::Cost => "every program's cost per run, under each workload".into(),
        Benchmark::Slowdown => "pipe ping-pong with and without the daemon".into(),
        Benchmark::Io => format!(
            "dd ({} blocks of 512 bytes) in a job, with and without the daemon",
            args.io_blocks
        ),
        Benchmark::IoOutside => format!(
            "dd ({} blocks of 512 bytes) outside any job, with and without the daemon",
            args.io_blocks
        ),
        Benchmark::Faults => {
            "page-fault-heavy job (1 GiB in 4 KiB pages) with and without the daemon".into()
        }
        Benchmark::Network => format!(
            "network-heavy job (loopback TCP, {} bytes) with and without the daemon",
            args.net_bytes
        ),
        Benchmark::DaemonCost => format!(
            "the daemon's own cost with {} jobs of {} threads",
            args.jobs, args.threads_per_job
        ),
        Benchmark::Scale => format!("/metrics and RSS with {} jobs", args.jobs),
        Benchmark::Registrations => format!(
            "registrations by {} concurrent launchers, {} each",
            args.launchers, args.registrations_per_launcher
        ),
        Benchmark::Retention => format!(
            "{} finished jobs: profiles written per second, /metrics, the job API and RSS",
            args.finished_jobs
        ),
        Benchmark::Processes => format!(
            "a job forking and reaping {} processes, with and without the daemon",
            args.forks
        ),
    }
}

/// Runs one benchmark and puts its result in the report.
fn run_one(
    bench: Benchmark,
    setup: &Setup,
    args: &BenchArgs,
    report: &mut report::Report,
) -> anyhow::Result<()> {
    use job_slowdown::Kind;
    match bench {
        Benchmark::Cost => report.cost = Some(program_cost::run(setup, args)?),
        Benchmark::Slowdown => report.slowdown = Some(slowdown::run(setup, args)?),
        Benchmark::Io => report.io = Some(job_slowdown::run(setup, args, Kind::Io)?),
        Benchmark::IoOutside => {
            report.io_outside = Some(job_slowdown::run(setup, args, Kind::IoOutside)?);
        }
        Benchmark::Faults => report.faults = Some(job_slowdown::run(setup, args, Kind::Faults)?),
        Benchmark::Network => {
            report.network = Some(job_slowdown::run(setup, args, Kind::Network)?);
        }
        Benchmark::DaemonCost => report.daemon_cost = Some(daemon_cost::run(setup, args)?),
        Benchmark::Scale => report.scale = Some(scale::run(setup, args)?),
        Benchmark::Registrations => report.registrations = Some(registrations::run(setup, args)?),
        Benchmark::Retention => report.retention = Some(retention::run(setup, args)?),
        Benchmark::Processes => {
            report.processes = Some(job_slowdown::run(setup, args, Kind::Processes)?);
        }
    }
    Ok(())
}

/// Builds, mounts tracefs, and clears what an interrupted run left behind.
fn prepare() -> anyhow::Result<Setup> {
    let daemon = build::build_release()?;
    let object = build::build_ebpf()?;
    system::ensure_tracefs()?;
    daemon::remove_stale_pins(&daemon)?;
    let cgroup_mount = monitor_tests::cgroup::v2_mount()?;
    cgroup::remove_stale_roots(&cgroup_mount)?;
    let logs = workspace_root().join("target/bench");
    fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    Ok(Setup {
        daemon,
        object,
        cgroup_mount,
        logs,
    })
}
