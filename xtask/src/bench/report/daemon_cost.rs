//! Section 7: the daemon's own cost with many jobs and tasks, and what its
//! walk of the tracked tasks costs against a walk of every task.
use std::collections::BTreeMap;

use super::{
    Outcome, Report, Section,
    goal::{Goal, Unit},
    markdown::{row, table},
};
use crate::bench::daemon_cost::{
    DaemonCostResult, FLOOR_WALKS, ITERATORS, OBSERVED_SAMPLES, Phase, SETTLE_SAMPLES,
};

/// The daemon's CPU (its process and every program) with 1,000 jobs and
/// 10,000 tasks, % of one core.
const MAX_DAEMON_CPU_PCT: f64 = 1.0;
/// One sample with those 10,000 tasks.
const MAX_SAMPLE_MS: f64 = 15.0;

/// The daemon's CPU, and one sample, with every job task to credit.
fn goals(d: &DaemonCostResult) -> [Goal; 2] {
    let (jobs, tasks) = (d.jobs, d.tasks());
    [
        Goal::at_most(
            format!("daemon CPU with {jobs} jobs and {tasks} tasks"),
            d.total_pct(),
            MAX_DAEMON_CPU_PCT,
            Unit::CorePercent,
        ),
        Goal::at_most(
            format!("one sample with {tasks} job tasks"),
            d.sample_ms(),
            MAX_SAMPLE_MS,
            Unit::Milliseconds,
        ),
    ]
}

impl Outcome for DaemonCostResult {
    fn goals(&self) -> Vec<Goal> {
        goals(self).into()
    }

    fn section(&self, report: &Report) -> Section {
        let d = self;
        let [cpu_goal, sample_goal] = goals(d);
        let (jobs, tasks) = (d.jobs, d.tasks());
        let median =
            |phases: &[Phase], figure: fn(&Phase) -> f64| DaemonCostResult::median(phases, figure);
        let both = |figure: fn(&Phase) -> f64, decimals: usize| {
            (
                format!("{:.decimals$}", median(&d.with_jobs, figure)),
                format!("{:.decimals$}", median(&d.without_jobs, figure)),
            )
        };
        let mut rows = Vec::new();
        let mut add = |what: &str, (with, without): (String, String), goal: &str, result: &str| {
            rows.push(row([what, &with, &without, goal, result]));
        };
        add(
            "Tasks on the node (/proc/loadavg)",
            both(|p| p.node_tasks, 0),
            "",
            "",
        );
        add(
            "Job tasks the daemon counted (`monitor_job_tasks`)",
            both(|p| p.job_tasks, 0),
            "",
            "",
        );
        add(
            "Daemon process: CPU time (its cgroup's `usage_usec`), % of one core",
            both(Phase::daemon_pct, 3),
            "",
            "",
        );
        add(
            "All programs' run time, % of one core",
            both(Phase::programs_pct, 3),
            "",
            "",
        );
        add(
            "of which the walks (run in the daemon's read: also in its CPU time)",
            both(Phase::iterator_pct, 3),
            "",
            "",
        );
        add(
            "Daemon process + programs, the walks counted twice (an upper bound)",
            both(Phase::total_pct, 3),
            "",
            "",
        );
        add(
            "Daemon process + programs, the walks counted once, bpf_stats on",
            both(Phase::total_once_pct, 3),
            "",
            "",
        );
        add(
            "Daemon process, second window (bpf_stats off), % of one core",
            both(Phase::quiet_daemon_pct, 3),
            "",
            "",
        );
        add(
            "**Daemon CPU: process (bpf_stats off, the walks in it) + the other programs' run time, % of one core**",
            both(Phase::cost_pct, 3),
            &cpu_goal.target(),
            cpu_goal.verdict(report.trusted),
        );
        let sample_without: Vec<f64> = d
            .without_jobs
            .iter()
            .flat_map(|p| p.sample_ms.iter().copied())
            .collect();
        add(
            "**One sample (`monitor_sample_duration_seconds`), median, ms**",
            (
                format!("{:.2}", d.sample_ms()),
                format!(
                    "{:.2}",
                    crate::bench::stats::median(&sample_without).unwrap_or(f64::NAN)
                ),
            ),
            &sample_goal.target(),
            sample_goal.verdict(report.trusted),
        );
        let credit = (
            DaemonCostResult::credit_ms(&d.with_jobs),
            DaemonCostResult::credit_ms(&d.without_jobs),
        );
        add(
            "Walk (`monitor_task_credit_duration_seconds`), median, ms",
            (format!("{:.2}", credit.0), format!("{:.2}", credit.1)),
            "",
            "",
        );
        add(
            "Walk's program run time (bpf_stats), ms",
            both(Phase::walk_ms, 2),
            "",
            "",
        );
        add(
            "Program runs per walk (tasks visited, and one to end)",
            both(Phase::visited_per_walk, 0),
            "",
            "",
        );
        add(
            "Per task visited (bpf_stats), ns",
            both(Phase::ns_per_visit, 0),
            "",
            "",
        );
        add(
            "Empty walk of every task (bench_task_iter_floor, wall), ms",
            both(Phase::floor_walk_ms, 2),
            "",
            "",
        );
        add(
            "Empty walk of every task, per task visited (bpf_stats), ns",
            both(Phase::floor_ns_per_visit, 0),
            "",
            "",
        );
        let nodes = (
            median(&d.with_jobs, |p| p.node_tasks),
            median(&d.without_jobs, |p| p.node_tasks),
        );
        add(
            "Walk (wall) per task on the node, ns",
            (
                format!("{:.0}", credit.0 * 1e6 / nodes.0),
                format!("{:.0}", credit.1 * 1e6 / nodes.1),
            ),
            "",
            "",
        );
        let walk_without = median(&d.without_jobs, Phase::walk_ms);
        let floor_ns = median(&d.without_jobs, Phase::floor_ns_per_visit);
        let floor_ms = median(&d.without_jobs, Phase::floor_walk_ms);
        let visited_without = median(&d.without_jobs, Phase::visited_per_walk);
        let by_credit = (credit.0 - credit.1) * 1e6 / f64::from(tasks);
        let body = format!(
            "{jobs} processes of {} sleeping threads each ({tasks} tasks) are started once, in a cgroup \
             outside the daemon's root. Each round has two phases, each with a fresh daemon \
             (sampling every 1 s), in an order that flips every round: **with jobs**, \
             each process moved into a job cgroup of its own under the daemon's root (every thread \
             moves), waited for until the daemon counts all {jobs} jobs running; and **without jobs**, \
             the same processes left outside, so the sample's walk of the tracked tasks \
             (`tracked_task_iter`, over the TASK_STATE map) has none to visit. After {SETTLE_SAMPLES} more samples, two windows of {} s each in which nothing reads \
             /metrics (a scrape of {jobs} jobs is work for the daemon). In the first, xtask turns \
             bpf_stats on: the daemon's CPU time and every attached program's \
             bpf_stats (from its pins) are read at its ends. The daemon runs in a cgroup of its own, \
             outside the root it monitors, and its CPU time is that cgroup's `cpu.stat` `usage_usec`: \
             the kernel's exact run time of its threads in microseconds (/proc/PID/stat's utime + \
             stime come in 10 ms ticks, 0.05% of a 20 s window). In the second, bpf_stats is off and the \
             daemon's CPU time alone is read: the walks run inside the daemon's own read(2), so \
             they are in its CPU time, here without the two clock reads bpf_stats adds to each of their \
             program runs (one per job task per sample: a cost of measuring, not of the daemon). \
             Daemon CPU = the second window's CPU time + the first window's run time of every \
             program but the walks (those run in other tasks' contexts), as % of one core. The rows \
             above it show the first window's figures: with the walks counted twice (an upper bound) \
             and once. Walks in the first window: `monitor_samples_total` before and after. Then the next {OBSERVED_SAMPLES} samples' `monitor_sample_duration_seconds` and \
             `monitor_task_credit_duration_seconds` are read, one scrape each; their medians over all \
             rounds are shown. Last, with the daemon stopped, xtask runs the object's empty task \
             iterator (`bench_task_iter_floor`) {FLOOR_WALKS} times over the same tasks: the least a \
             walk of every task of the node costs, which the daemon now runs only when a job task may \
             be untracked (at start, on adopting a running cgroup). bpf_stats adds its own clock reads (tens of ns) to every program run, each task \
             visited by an iterator included.\n\n{}\n\
             **Tracked tasks against every task.** A walk of every task costs at least \
             {floor_ms:.2} ms ({floor_ns:.0} ns per task by bpf_stats for the empty program, the rest \
             the kernel's own iteration), whatever the jobs. The sample's walk of the tracked tasks \
             visits only the job tasks: without jobs it makes {visited_without:.0} program runs in \
             {walk_without:.2} ms of program time ({:.0} ns per run), and the kernel's scan of the \
             map's empty buckets is the rest of its {:.2} ms; crediting the {tasks} job tasks costs \
             {:.0} ns per job task by the program's own run time (bpf_stats), {by_credit:.0} ns by \
             the daemon's timing of the walk.\n\n\
             Programs in the window with the jobs (median of the rounds):\n\n{}\n\
             Every round:\n\n{}\n",
            d.threads_per_job,
            d.window.as_secs(),
            table(
                &[
                    "Measure",
                    &format!("With {jobs} jobs"),
                    "Without jobs (same tasks)",
                    "Goal",
                    "Result",
                ],
                &rows
            ),
            median(&d.without_jobs, Phase::ns_per_visit),
            credit.1,
            d.credit_ns_per_job_task(),
            programs_table(&d.with_jobs),
            rounds_table(d),
        );
        Section {
            title: format!("The daemon's own cost with {jobs} jobs and {tasks} tasks"),
            body,
        }
    }
}

/// Each program's runs per second, ns per run and share of a core in the
/// window, medians over the rounds.
fn programs_table(phases: &[Phase]) -> String {
    let mut names: BTreeMap<&str, ()> = BTreeMap::new();
    for phase in phases {
        for name in phase.programs.keys() {
            names.insert(name, ());
        }
    }
    let rows: Vec<Vec<String>> = names
        .keys()
        .map(|name| {
            let figure = |f: &dyn Fn(&Phase, f64, f64) -> f64| {
                let values: Vec<f64> = phases
                    .iter()
                    .filter_map(|p| {
                        let s = p.programs.get(*name)?;
                        Some(f(p, s.run_time_ns, s.run_count))
                    })
                    .filter(|v| v.is_finite())
                    .collect();
                crate::bench::stats::median(&values)
            };
            let runs = figure(&|p, _, count| count / p.window_s);
            let ns = figure(&|_, time, count| if count > 0.0 { time / count } else { f64::NAN });
            let pct = figure(&|p, time, _| time / 1e9 / p.window_s * 100.0);
            let label = if ITERATORS.contains(name) {
                format!("{name} (a run per task visited)")
            } else {
                name.to_string()
            };
            row([
                &label,
                &runs.map_or_else(|| "-".into(), |r| format!("{r:.1}")),
                &ns.map_or_else(|| "-".into(), |n| format!("{n:.0}")),
                &pct.map_or_else(|| "-".into(), |p| format!("{p:.4}%")),
            ])
        })
        .collect();
    table(&["Program", "Runs per s", "ns/run", "% of one core"], &rows)
}

fn rounds_table(d: &DaemonCostResult) -> String {
    let mut rows = Vec::new();
    let rounds = d.with_jobs.len().max(d.without_jobs.len());
    for i in 0..rounds {
        for phase in [d.with_jobs.get(i), d.without_jobs.get(i)]
            .into_iter()
            .flatten()
        {
            rows.push(row([
                &(i + 1).to_string(),
                &phase.jobs.to_string(),
                &format!("{:.0}", phase.node_tasks),
                &format!("{:.0}", phase.job_tasks),
                &format!("{:.1}", phase.window_s),
                &format!("{:.0}", phase.samples),
                &format!("{:.3}", phase.daemon_pct()),
                &format!("{:.3}", phase.programs_pct()),
                &format!("{:.3}", phase.iterator_pct()),
                &format!("{:.3}", phase.total_once_pct()),
                &format!("{:.2}", phase.walk_ms()),
                &format!("{:.0}", phase.visited_per_walk()),
                &format!("{:.0}", phase.ns_per_visit()),
                &format!("{:.2}", phase.sample_median_ms()),
                &format!("{:.2}", phase.credit_median_ms()),
            ]));
        }
    }
    table(
        &[
            "Round",
            "Jobs",
            "Node tasks",
            "Job tasks",
            "Window (s)",
            "Walks",
            "Daemon %",
            "Programs %",
            "Walks %",
            "Total % (walks once)",
            "Walk (ms)",
            "Visited per walk",
            "ns per task",
            "Sample (ms)",
            "Credit (ms)",
        ],
        &rows,
    )
}
