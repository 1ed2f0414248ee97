//! Benchmark 7: the daemon's own cost on a busy node: 1,000 running jobs,
//! each a cgroup with one process of 10 sleeping threads (10,000 job
//! tasks), sampled every second. And, for comparison, the same 10,000 tasks
//! outside any job: the walk of tracked tasks then has none to visit. An
//! empty iterator over every task, run from xtask, shows what a walk of the
//! whole node would cost at least.
//!
//! Each phase has a fresh daemon and two windows of `--cost-window`
//! seconds. In the first, xtask turns bpf_stats on and reads every
//! program's run time (from the pins) and the daemon's CPU time (the exact
//! `usage_usec` of a cgroup of its own). In the second, bpf_stats is off and only the
//! process's CPU is read: the walks run inside its read(2), so they are in
//! its CPU time, without the two clock reads bpf_stats adds to each of their
//! 10,000 program runs a sample (a cost of the measurement, not of the
//! daemon). Daemon CPU = the second window's process CPU + the first
//! window's run time of the programs that run in other tasks' contexts
//! (every program but the walks). Nothing reads /metrics inside the windows
//! (a scrape of 1,000 jobs is work for the daemon); the per-sample figures
//! are read after them, one scrape per sample. Last, an empty task iterator
//! run from xtask gives the walk's own floor at the same task count.
use std::{
    collections::BTreeMap,
    fs,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use monitor_tests::{Metrics, cgroup::cpu_usage_seconds};

use super::{
    BenchArgs, Setup,
    bpf_stats::RunStats,
    cgroup::Root,
    daemon::{Daemon, JOBS, jobs_in_state},
    pinned, procfs,
    stats::median,
    thread_sleepers::ThreadSleepers,
    walk_floor::WalkFloor,
};

const LABEL: &str = "daemon-cost";
/// The programs the daemon runs at samples (not on any event): the walk of
/// the tracked tasks at every sample, the walk of every task when some job
/// task may be untracked (at start, after an adoption).
pub const ITERATORS: [&str; 2] = ["tracked_task_iter", "task_iter"];
/// Samples after the jobs are counted and before the window.
pub const SETTLE_SAMPLES: u32 = 2;
/// Samples whose duration is read after the window.
pub const OBSERVED_SAMPLES: u32 = 5;
/// Walks of the empty iterator per phase.
pub const FLOOR_WALKS: u32 = 10;
/// How often /metrics is read while waiting for a sample.
const POLL: Duration = Duration::from_millis(250);
const SAMPLES: &str = "monitor_samples_total";
const SAMPLE_DURATION: &str = "monitor_sample_duration_seconds";
const CREDIT_DURATION: &str = "monitor_task_credit_duration_seconds";
const JOB_TASKS: &str = "monitor_job_tasks";

/// One phase of one round: with the jobs, or with the same tasks outside jobs.
#[derive(Debug)]
pub struct Phase {
    pub jobs: u32,
    /// Job tasks the daemon counted (`monitor_job_tasks`, summed).
    pub job_tasks: f64,
    /// Tasks on the node (/proc/loadavg), the mean of the window's ends.
    pub node_tasks: f64,
    pub window_s: f64,
    /// CPU time of the daemon process over the window (its cgroup's usage).
    pub daemon_cpu_s: f64,
    /// The same over the second window, with bpf_stats off.
    pub quiet_daemon_cpu_s: f64,
    pub quiet_window_s: f64,
    /// Every attached program's runs over the window.
    pub programs: BTreeMap<String, RunStats>,
    /// Samples taken in the window (`monitor_samples_total`).
    pub samples: f64,
    /// `monitor_sample_duration_seconds` and
    /// `monitor_task_credit_duration_seconds` of the samples after the
    /// window, ms.
    pub sample_ms: Vec<f64>,
    pub credit_ms: Vec<f64>,
    /// The empty iterator's walks: each one's wall time (ms), and its runs
    /// over all of them.
    pub floor_walk_ms: Vec<f64>,
    pub floor: RunStats,
}

impl Phase {
    /// Both walks' runs together.
    fn iterator(&self) -> RunStats {
        ITERATORS
            .iter()
            .filter_map(|name| self.programs.get(*name))
            .fold(RunStats::default(), |sum, s| RunStats {
                run_time_ns: sum.run_time_ns + s.run_time_ns,
                run_count: sum.run_count + s.run_count,
            })
    }

    fn percent(&self, seconds: f64) -> f64 {
        seconds / self.window_s * 100.0
    }

    /// The daemon process's CPU, % of one core.
    pub fn daemon_pct(&self) -> f64 {
        self.percent(self.daemon_cpu_s)
    }

    /// Every program's run time, % of one core.
    pub fn programs_pct(&self) -> f64 {
        self.percent(self.programs.values().map(|s| s.run_time_ns).sum::<f64>() / 1e9)
    }

    /// The task iterator's run time, % of one core. It runs in the daemon's
    /// own read(2), so this is also part of [`Phase::daemon_pct`].
    pub fn iterator_pct(&self) -> f64 {
        self.percent(self.iterator().run_time_ns / 1e9)
    }

    /// Its process plus every program, % of one core: the walks counted
    /// twice (they run in the daemon's read(2): in its CPU time too).
    pub fn total_pct(&self) -> f64 {
        self.daemon_pct() + self.programs_pct()
    }

    /// Its process plus every program, the walks counted once, with
    /// bpf_stats on (their clock reads in it), % of one core.
    pub fn total_once_pct(&self) -> f64 {
        self.total_pct() - self.iterator_pct()
    }

    /// The daemon process's CPU with bpf_stats off, % of one core.
    pub fn quiet_daemon_pct(&self) -> f64 {
        self.quiet_daemon_cpu_s / self.quiet_window_s * 100.0
    }

    /// Daemon CPU as the goal means it: its process with bpf_stats off
    /// (the walks included) plus the run time of every other program, %
    /// of one core.
    pub fn cost_pct(&self) -> f64 {
        self.quiet_daemon_pct() + self.programs_pct() - self.iterator_pct()
    }

    /// Program runs of the iterator per sample: one per task visited (and
    /// one to end the walk).
    pub fn visited_per_walk(&self) -> f64 {
        self.iterator().run_count / self.samples
    }

    /// Iterator run time per walk (bpf_stats), ms.
    pub fn walk_ms(&self) -> f64 {
        self.iterator().run_time_ns / self.samples / 1e6
    }

    /// Iterator run time per task visited (bpf_stats), ns.
    pub fn ns_per_visit(&self) -> f64 {
        self.iterator().ns_per_run().unwrap_or(f64::NAN)
    }

    pub fn sample_median_ms(&self) -> f64 {
        median(&self.sample_ms).unwrap_or(f64::NAN)
    }

    pub fn credit_median_ms(&self) -> f64 {
        median(&self.credit_ms).unwrap_or(f64::NAN)
    }

    /// The empty iterator's walk (wall), median, ms.
    pub fn floor_walk_ms(&self) -> f64 {
        median(&self.floor_walk_ms).unwrap_or(f64::NAN)
    }

    /// The empty iterator per task visited (bpf_stats), ns.
    pub fn floor_ns_per_visit(&self) -> f64 {
        self.floor.ns_per_run().unwrap_or(f64::NAN)
    }
}

#[derive(Debug)]
pub struct DaemonCostResult {
    pub jobs: u32,
    pub threads_per_job: u32,
    pub window: Duration,
    /// One per round, in round order.
    pub with_jobs: Vec<Phase>,
    pub without_jobs: Vec<Phase>,
}

impl DaemonCostResult {
    /// The median over the rounds of one phase's figure.
    pub fn median(phases: &[Phase], figure: impl Fn(&Phase) -> f64) -> f64 {
        median(&phases.iter().map(figure).collect::<Vec<_>>()).unwrap_or(f64::NAN)
    }

    pub fn tasks(&self) -> u32 {
        self.jobs * self.threads_per_job
    }

    /// The goal's figure: daemon CPU with the jobs, % of one core.
    pub fn total_pct(&self) -> f64 {
        Self::median(&self.with_jobs, Phase::cost_pct)
    }

    /// The goal's figure: one sample with the jobs, ms (the median of every
    /// sample observed, over all rounds).
    pub fn sample_ms(&self) -> f64 {
        let all: Vec<f64> = self
            .with_jobs
            .iter()
            .flat_map(|p| p.sample_ms.iter().copied())
            .collect();
        median(&all).unwrap_or(f64::NAN)
    }

    /// Every observed credit duration of a phase, median, ms.
    pub fn credit_ms(phases: &[Phase]) -> f64 {
        let all: Vec<f64> = phases
            .iter()
            .flat_map(|p| p.credit_ms.iter().copied())
            .collect();
        median(&all).unwrap_or(f64::NAN)
    }

    /// What crediting adds per job task, from the iterator's own run time
    /// (bpf_stats) with and without the jobs, ns.
    pub fn credit_ns_per_job_task(&self) -> f64 {
        let with = Self::median(&self.with_jobs, Phase::walk_ms);
        let without = Self::median(&self.without_jobs, Phase::walk_ms);
        (with - without) * 1e6 / f64::from(self.tasks())
    }
}

pub fn run(setup: &Setup, args: &BenchArgs) -> anyhow::Result<DaemonCostResult> {
    let mut floor = WalkFloor::load(&setup.object)?;
    let parked = Root::create(&setup.cgroup_mount, "daemon-cost-parked")?;
    let started = Instant::now();
    let sleepers = ThreadSleepers::start(parked.path(), args.jobs, args.threads_per_job)?;
    eprintln!(
        "xtask:   {} processes of {} threads started in {:.1?}; {} tasks on the node",
        args.jobs,
        args.threads_per_job,
        started.elapsed(),
        procfs::node_tasks()?
    );
    let mut result = DaemonCostResult {
        jobs: args.jobs,
        threads_per_job: args.threads_per_job,
        window: Duration::from_secs(args.cost_window),
        with_jobs: Vec::new(),
        without_jobs: Vec::new(),
    };
    for round in 1..=args.rounds {
        let jobs_first = round % 2 == 0;
        for with_jobs in [jobs_first, !jobs_first] {
            let mut phase = phase(setup, &result, &sleepers, &parked, with_jobs)?;
            (phase.floor_walk_ms, phase.floor) = walk_floor(&mut floor)?;
            eprintln!(
                "xtask:   round {round}, {} jobs: daemon CPU {:.3}% of a core (process {:.3}% \
                 with bpf_stats off); with bpf_stats on: daemon {:.3}% + programs {:.3}% \
                 (iterator {:.3}%); {:.0} tasks, {:.0} visited per walk, {:.2} ms per walk, \
                 {:.0} ns per task; sample {:.2} ms, credit {:.2} ms; empty walk {:.2} ms, \
                 {:.0} ns per task",
                phase.jobs,
                phase.cost_pct(),
                phase.quiet_daemon_pct(),
                phase.daemon_pct(),
                phase.programs_pct(),
                phase.iterator_pct(),
                phase.node_tasks,
                phase.visited_per_walk(),
                phase.walk_ms(),
                phase.ns_per_visit(),
                phase.sample_median_ms(),
                phase.credit_median_ms(),
                phase.floor_walk_ms(),
                phase.floor_ns_per_visit(),
            );
            if with_jobs {
                result.with_jobs.push(phase);
            } else {
                result.without_jobs.push(phase);
            }
        }
    }
    Ok(result)
}

fn phase(
    setup: &Setup,
    result: &DaemonCostResult,
    sleepers: &ThreadSleepers,
    parked: &Root,
    with_jobs: bool,
) -> anyhow::Result<Phase> {
    // Declared before the daemon, so dropped after it.
    let root = Root::create(&setup.cgroup_mount, LABEL)?;
    // The daemon's own cgroup, outside the root it monitors: its CPU is
    // read from the cgroup's exact usage.
    let own = Root::create(&setup.cgroup_mount, "daemon-cost-daemon")?;
    // bpf_stats is xtask's to turn on and off (see `measure`).
    let mut daemon = Daemon::start(setup, root.path(), false, LABEL)?;
    let moved_in = fs::write(own.path().join("cgroup.procs"), daemon.pid().to_string())
        .with_context(|| format!("moving the daemon into {}", own.path().display()));
    if let Err(e) = moved_in {
        daemon.stop()?;
        return Err(e);
    }
    let jobs = if with_jobs { result.jobs } else { 0 };
    let measured = (|| {
        if with_jobs {
            place_in_jobs(&mut daemon, &root, sleepers, result.tasks())?;
        }
        daemon.next_samples_every(SETTLE_SAMPLES, POLL, &[])?;
        measure(&mut daemon, own.path(), jobs, result.window)
    })();
    // Out of the jobs before their root goes (removing it kills what is inside).
    let moved = if with_jobs {
        sleepers.move_all(parked.path())
    } else {
        Ok(())
    };
    let phase = measured?;
    moved?;
    daemon.stop()?;
    Ok(phase)
}

/// One job per process; returns once the daemon counts every job running.
fn place_in_jobs(
    daemon: &mut Daemon,
    root: &Root,
    sleepers: &ThreadSleepers,
    tasks: u32,
) -> anyhow::Result<()> {
    for i in 0..sleepers.len() {
        let job = root.make_job(&format!("job{i:05}"))?;
        sleepers.move_one(i, &job)?;
    }
    let jobs = sleepers.len() as f64;
    daemon.wait_for(
        "every job to be running",
        Duration::from_secs(60),
        &[JOBS],
        |metrics| jobs_in_state(metrics, "running") == Some(jobs),
    )?;
    // The task count should follow; go on without it, as the report shows it.
    let counted = daemon.wait_for(
        "every job task to be counted",
        Duration::from_secs(10),
        &[JOB_TASKS],
        |metrics| job_tasks(metrics) >= f64::from(tasks),
    );
    if let Err(e) = counted {
        eprintln!("xtask:   {e:#}");
    }
    Ok(())
}

fn job_tasks(metrics: &Metrics) -> f64 {
    metrics.sum(JOB_TASKS, &[])
}

/// The two windows, then the samples after them.
fn measure(
    daemon: &mut Daemon,
    own_cgroup: &Path,
    jobs: u32,
    window: Duration,
) -> anyhow::Result<Phase> {
    let cpu = || cpu_usage_seconds(own_cgroup);
    let programs = daemon.programs()?;
    let first = daemon.metrics(&[])?;
    let stats_on =
        aya::sys::enable_stats(aya::sys::Stats::RunTime).context("enabling bpf_stats")?;
    let (start, cpu_before, stats_before, tasks_before) = (
        Instant::now(),
        cpu()?,
        programs.stats()?,
        procfs::node_tasks()?,
    );
    thread::sleep(window);
    let (stats_after, cpu_after, tasks_after, window_s) = (
        programs.stats()?,
        cpu()?,
        procfs::node_tasks()?,
        start.elapsed().as_secs_f64(),
    );
    drop(stats_on);
    // Between the windows: the scrape's work falls in neither.
    let middle = daemon.metrics(&[])?;
    let (quiet_start, quiet_before) = (Instant::now(), cpu()?);
    thread::sleep(window);
    let (quiet_after, quiet_window_s) = (cpu()?, quiet_start.elapsed().as_secs_f64());
    let last = daemon.metrics(&[JOB_TASKS])?;
    let samples = samples_taken(&middle)? - samples_taken(&first)?;
    if samples < 1.0 {
        bail!("the daemon took no sample in {window:?}");
    }
    let (sample_ms, credit_ms) = observe_samples(daemon, OBSERVED_SAMPLES)?;
    Ok(Phase {
        jobs,
        job_tasks: job_tasks(&last),
        node_tasks: (tasks_before + tasks_after) as f64 / 2.0,
        window_s,
        daemon_cpu_s: cpu_after - cpu_before,
        quiet_daemon_cpu_s: quiet_after - quiet_before,
        quiet_window_s,
        programs: pinned::since(&stats_after, &stats_before),
        samples,
        sample_ms,
        credit_ms,
        floor_walk_ms: Vec::new(),
        floor: RunStats::default(),
    })
}

/// [`FLOOR_WALKS`] walks of the empty iterator: each one's time, ms, and
/// its runs over all of them.
fn walk_floor(floor: &mut WalkFloor) -> anyhow::Result<(Vec<f64>, RunStats)> {
    let before = floor.stats()?;
    let walks = (0..FLOOR_WALKS)
        .map(|_| Ok(floor.walk()?.as_secs_f64() * 1000.0))
        .collect::<anyhow::Result<Vec<f64>>>()?;
    Ok((walks, floor.stats()?.since(before)))
}

/// Each of the next `count` samples' duration and task credit duration, ms,
/// reading /metrics every [`POLL`].
fn observe_samples(daemon: &mut Daemon, count: u32) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let (mut sample_ms, mut credit_ms) = (Vec::new(), Vec::new());
    let mut seen = samples_taken(&daemon.metrics(&[])?)?;
    let deadline = Instant::now() + Duration::from_secs(5 + 2 * u64::from(count));
    while sample_ms.len() < count as usize {
        if Instant::now() > deadline {
            bail!("the daemon took too few samples");
        }
        thread::sleep(POLL);
        let metrics = daemon.metrics(&[SAMPLE_DURATION, CREDIT_DURATION])?;
        let taken = samples_taken(&metrics)?;
        if taken > seen {
            seen = taken;
            let value = |series: &str| {
                metrics
                    .find(series, &[])?
                    .map(|s| s * 1000.0)
                    .with_context(|| format!("{series} missing from /metrics"))
            };
            sample_ms.push(value(SAMPLE_DURATION)?);
            credit_ms.push(value(CREDIT_DURATION)?);
        }
    }
    Ok((sample_ms, credit_ms))
}

fn samples_taken(metrics: &Metrics) -> anyhow::Result<f64> {
    metrics
        .find(SAMPLES, &[])?
        .with_context(|| format!("{SAMPLES} missing from /metrics"))
}
