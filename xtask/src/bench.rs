//! `cargo xtask bench`: what the monitor costs the jobs it watches, and how
//! it scales, measured against its goals and written to bench/RESULTS.md.
//!
//! The machine is noisy, so every figure is a median over rounds, runs with
//! and without the monitor are interleaved, and every goal compares figures
//! taken in the same run. Timings are reported here, never asserted in tests.
mod bpf_stats;
mod cgroup;
mod daemon;
mod floor;
mod http;
mod job_slowdown;
mod job_workloads;
mod metrics;
mod pingpong;
mod program_cost;
mod registrations;
mod report;
mod resource_cost;
mod retention;
mod scale;
mod slowdown;
mod stats;
mod system;
mod workload;

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

    /// Job cgroups for the /metrics latency and RSS measurement.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub jobs: u32,

    /// GETs of /metrics timed with all those jobs present.
    #[arg(long, value_name = "N", default_value_t = 200, value_parser = clap::value_parser!(u32).range(100..))]
    pub scrapes: u32,

    /// Concurrent launcher processes for the registration benchmark.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub launchers: u32,

    /// Registrations each launcher makes in a row, per round.
    #[arg(long = "registrations-per-launcher", value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub registrations_per_launcher: u32,

    /// Runs of the IO- and network-heavy workloads per side and round; the
    /// round's figure is their median.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub repeats: u32,

    /// 512-byte blocks dd copies per run of the IO-heavy job.
    #[arg(long = "io-blocks", value_name = "N", default_value_t = 200_000, value_parser = clap::value_parser!(u32).range(1000..))]
    pub io_blocks: u32,

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
    /// Cost per program run against an empty program (bpf_stats).
    Cost,
    /// Pipe ping-pong with and without the daemon.
    Slowdown,
    /// /metrics latency and daemon RSS with many jobs.
    Scale,
    /// Launcher registrations per second and their latency.
    Registrations,
    /// Cost per run of the memory, IO and network programs (bpf_stats).
    ResourceCost,
    /// An IO-heavy job (dd, 512-byte blocks) with and without the daemon.
    Io,
    /// A network-heavy job (loopback TCP) with and without the daemon.
    Network,
    /// Profiles written per second, and /metrics, the job API and RSS with
    /// many finished jobs in retention.
    Retention,
}

/// What every benchmark needs: the built artefacts and where to make cgroups.
pub struct Setup {
    pub daemon: PathBuf,
    pub object: PathBuf,
    pub cgroup_mount: PathBuf,
    pub logs: PathBuf,
}

pub fn bench(args: &BenchArgs) -> anyhow::Result<()> {
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
    let runs = |bench: Benchmark| args.only.is_empty() || args.only.contains(&bench);
    let total = [
        Benchmark::Cost,
        Benchmark::Slowdown,
        Benchmark::Scale,
        Benchmark::Registrations,
        Benchmark::ResourceCost,
        Benchmark::Io,
        Benchmark::Network,
        Benchmark::Retention,
    ]
    .into_iter()
    .filter(|b| runs(*b))
    .count();
    let mut step = 0;
    let mut announce = |what: &str| {
        step += 1;
        eprintln!("xtask: bench {step}/{total}: {what}");
    };

    // Counted before, between and after the benchmarks, when none of ours runs.
    let mut foreign = vec![system::foreign_switch_programs()];
    let mut cost = None;
    if runs(Benchmark::Cost) {
        announce("cost per program run against an empty program");
        cost = Some(program_cost::run(&setup, args)?);
        foreign.push(system::foreign_switch_programs());
    }
    let mut slowdown = None;
    if runs(Benchmark::Slowdown) {
        announce("pipe ping-pong with and without the daemon");
        slowdown = Some(slowdown::run(&setup, args)?);
        foreign.push(system::foreign_switch_programs());
    }
    let mut scale = None;
    if runs(Benchmark::Scale) {
        announce(&format!("/metrics and RSS with {} jobs", args.jobs));
        scale = Some(scale::run(&setup, args)?);
        foreign.push(system::foreign_switch_programs());
    }
    let mut registrations = None;
    if runs(Benchmark::Registrations) {
        announce(&format!(
            "registrations by {} concurrent launchers, {} each",
            args.launchers, args.registrations_per_launcher
        ));
        registrations = Some(registrations::run(&setup, args)?);
        foreign.push(system::foreign_switch_programs());
    }
    let mut resource_cost = None;
    if runs(Benchmark::ResourceCost) {
        announce("cost per run of the memory, IO and network programs");
        resource_cost = Some(resource_cost::run(&setup, args)?);
        foreign.push(system::foreign_switch_programs());
    }
    let mut io = None;
    if runs(Benchmark::Io) {
        announce(&format!(
            "IO-heavy job (dd, {} blocks of 512 bytes) with and without the daemon",
            args.io_blocks
        ));
        io = Some(job_slowdown::run(&setup, args, job_slowdown::Kind::Io)?);
        foreign.push(system::foreign_switch_programs());
    }
    let mut network = None;
    if runs(Benchmark::Network) {
        announce(&format!(
            "network-heavy job (loopback TCP, {} bytes) with and without the daemon",
            args.net_bytes
        ));
        network = Some(job_slowdown::run(
            &setup,
            args,
            job_slowdown::Kind::Network,
        )?);
        foreign.push(system::foreign_switch_programs());
    }
    let mut retention = None;
    if runs(Benchmark::Retention) {
        announce(&format!(
            "{} finished jobs: profiles written per second, /metrics, the job API and RSS",
            args.finished_jobs
        ));
        retention = Some(retention::run(&setup, args)?);
        foreign.push(system::foreign_switch_programs());
    }

    let report = report::Report {
        environment,
        rounds: args.rounds,
        trusted: args.rounds >= MIN_TRUSTED_ROUNDS,
        foreign_switch_programs: foreign,
        cost,
        slowdown,
        scale,
        registrations,
        resource_cost,
        io,
        network,
        retention,
    };
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

/// Builds, mounts tracefs, and clears what an interrupted run left behind.
fn prepare() -> anyhow::Result<Setup> {
    let daemon = build::build_release()?;
    let object = build::build_ebpf()?;
    system::ensure_tracefs()?;
    daemon::remove_stale_pins(&daemon)?;
    let cgroup_mount = cgroup::v2_mount()?;
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
