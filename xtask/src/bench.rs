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
mod metrics;
mod pingpong;
mod program_cost;
mod report;
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
}

/// What every benchmark needs: the built artefacts and where to make cgroups.
pub struct Setup {
    pub daemon: PathBuf,
    pub object: PathBuf,
    pub cgroup_mount: PathBuf,
    pub logs: PathBuf,
}

pub fn bench(args: &BenchArgs) -> anyhow::Result<()> {
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

    // Counted before, between and after the benchmarks, when none of ours runs.
    let mut foreign = vec![system::foreign_switch_programs()];
    eprintln!("xtask: bench 1/3: cost per program run against an empty program");
    let cost = program_cost::run(&setup, args)?;
    foreign.push(system::foreign_switch_programs());
    eprintln!("xtask: bench 2/3: pipe ping-pong with and without the daemon");
    let slowdown = slowdown::run(&setup, args)?;
    foreign.push(system::foreign_switch_programs());
    eprintln!("xtask: bench 3/3: /metrics and RSS with {} jobs", args.jobs);
    let scale = scale::run(&setup, args)?;
    foreign.push(system::foreign_switch_programs());

    let report = report::Report {
        environment,
        rounds: args.rounds,
        trusted: args.rounds >= MIN_TRUSTED_ROUNDS,
        foreign_switch_programs: foreign,
        cost,
        slowdown,
        scale,
    };
    let path = workspace_root().join("bench/RESULTS.md");
    fs::write(&path, report.markdown()).with_context(|| format!("writing {}", path.display()))?;
    println!("{}", report.summary());
    println!("written to {}", path.display());
    Ok(())
}

/// Builds, mounts tracefs, and clears what an interrupted run left behind.
fn prepare() -> anyhow::Result<Setup> {
    let daemon = build::build_release()?;
    let object = build::build_ebpf()?;
    system::ensure_tracefs()?;
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
