//! Benchmark 1: nanoseconds per run of every daemon program, from bpf_stats,
//! next to the empty floor program on sched_switch in the same windows.
//!
//! The daemon publishes its programs' counters once per sample, so a window
//! runs from one fresh sample to another, and the floor is read right when
//! each sample shows up: both cover the same stretch of time, within the
//! polling period.
use std::collections::BTreeMap;

use anyhow::bail;

use super::{
    BenchArgs, Setup, bpf_stats::RunStats, cgroup::Root, daemon::Daemon, floor::Floor, metrics,
    pingpong, stats::median, workload,
};

const JOB: &str = "cost-job";
const PROGRAM_RUNS: &str = "monitor_bpf_program_runs_total";

#[derive(Debug)]
pub struct ProgramCost {
    pub name: String,
    /// Median runs per window.
    pub runs: f64,
    /// Median ns per run; `None` if it never ran in a window.
    pub ns_per_run: Option<f64>,
    /// Median of the per-window ratios to the floor.
    pub ratio: Option<f64>,
}

#[derive(Debug)]
pub struct CostResult {
    pub floor_ns: f64,
    pub floor_runs: f64,
    pub programs: Vec<ProgramCost>,
    /// Context switches the daemon credited to the job: proof the job path ran.
    pub job_switches: f64,
}

impl CostResult {
    pub fn program(&self, name: &str) -> Option<&ProgramCost> {
        self.programs.iter().find(|p| p.name == name)
    }
}

pub fn run(setup: &Setup, args: &BenchArgs) -> anyhow::Result<CostResult> {
    let root = Root::create(&setup.cgroup_mount, "cost")?;
    let mut daemon = Daemon::start(setup, root.path(), true, "cost")?;
    let floor = Floor::attach(&setup.object)?;
    let job = root.make_job(JOB)?;
    let cpu = pingpong::default_cpu();
    // Program counters appear with the first sample.
    let programs = metrics::label_values(&daemon.next_samples(1)?, PROGRAM_RUNS, "program");

    let mut windows = Vec::new();
    for round in 1..=args.rounds {
        let before = Snapshot::take(&mut daemon, &floor, &programs)?;
        workload::run(&job, cpu, args.round_trips)?;
        let after = Snapshot::take(&mut daemon, &floor, &programs)?;
        let window = after.since(&before);
        eprintln!("xtask:   round {round}: {}", window.brief());
        windows.push(window);
    }

    let text = daemon.metrics()?;
    let job_switches = metrics::sum_with_label(
        &text,
        "monitor_job_context_switches_total",
        &format!("jobid=\"{JOB}\""),
    );
    if job_switches < f64::from(args.round_trips) {
        bail!(
            "the daemon credited only {job_switches} context switches to {JOB}: its programs missed the job path"
        );
    }
    Ok(summarize(&programs, &windows, job_switches))
}

/// Counters of the floor and of every daemon program at one moment.
struct Snapshot {
    floor: RunStats,
    programs: BTreeMap<String, RunStats>,
}

impl Snapshot {
    fn take(daemon: &mut Daemon, floor: &Floor, names: &[String]) -> anyhow::Result<Self> {
        let text = daemon.next_samples(1)?;
        let floor = floor.stats()?;
        let programs = names
            .iter()
            .filter_map(|name| Some((name.clone(), metrics::program_stats(&text, name)?)))
            .collect();
        Ok(Self { floor, programs })
    }

    fn since(&self, earlier: &Self) -> Self {
        let programs = self
            .programs
            .iter()
            .filter_map(|(name, now)| Some((name.clone(), now.since(*earlier.programs.get(name)?))))
            .collect();
        Self {
            floor: self.floor.since(earlier.floor),
            programs,
        }
    }

    /// One progress line: the hot program against the floor.
    fn brief(&self) -> String {
        let ns = |stats: Option<&RunStats>| {
            stats
                .and_then(|s| s.ns_per_run())
                .map_or_else(|| "-".to_string(), |ns| format!("{ns:.0} ns"))
        };
        format!(
            "sched_switch {} per run, floor {} per run",
            ns(self.programs.get("sched_switch")),
            ns(Some(&self.floor))
        )
    }
}

fn summarize(names: &[String], windows: &[Snapshot], job_switches: f64) -> CostResult {
    let floor_ns: Vec<f64> = windows
        .iter()
        .filter_map(|w| w.floor.ns_per_run())
        .collect();
    let floor_runs: Vec<f64> = windows.iter().map(|w| w.floor.run_count).collect();
    let programs = names
        .iter()
        .map(|name| {
            let of_window = |w: &Snapshot| w.programs.get(name).copied();
            let runs: Vec<f64> = windows
                .iter()
                .filter_map(of_window)
                .map(|s| s.run_count)
                .collect();
            let ns: Vec<f64> = windows
                .iter()
                .filter_map(|w| of_window(w)?.ns_per_run())
                .collect();
            // Ratios per window: the floor and the program saw the same load.
            let ratios: Vec<f64> = windows
                .iter()
                .filter_map(|w| Some(of_window(w)?.ns_per_run()? / w.floor.ns_per_run()?))
                .collect();
            ProgramCost {
                name: name.clone(),
                runs: median(&runs).unwrap_or(0.0),
                ns_per_run: median(&ns),
                ratio: median(&ratios),
            }
        })
        .collect();
    CostResult {
        floor_ns: median(&floor_ns).unwrap_or(f64::NAN),
        floor_runs: median(&floor_runs).unwrap_or(0.0),
        programs,
        job_switches,
    }
}
