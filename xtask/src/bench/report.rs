//! bench/RESULTS.md and the summary printed at the end: the figures, the
//! goals, and whether each was met. Each section is written by its own
//! module under `report/`; this one holds the goals, the parts every run
//! has, and the merge of a `--only` run into the last full report.
mod cost;
mod daemon_cost;
mod registrations;
mod retention;
mod scale;
mod slowdowns;

use std::fmt::Write as _;

use super::{
    Benchmark,
    daemon_cost::DaemonCostResult,
    job_slowdown::JobSlowdownResult,
    program_cost::CostResult,
    registrations::{RegistrationResult, RegistrationRound, Run},
    retention::RetentionResult,
    scale::ScaleResult,
    slowdown::SlowdownResult,
    system::Environment,
};

/// How much slower the ping-pong may run under the daemon.
const MAX_PINGPONG_SLOWDOWN: f64 = 0.01;
/// dd with 512-byte blocks, in a job and outside any job.
const MAX_IO_SLOWDOWN: f64 = 0.02;
const MAX_IO_OUTSIDE_SLOWDOWN: f64 = 0.01;
/// 1 GiB touched in 4 KiB pages in a job.
const MAX_FAULTS_SLOWDOWN: f64 = 0.03;
/// Loopback TCP in a job.
const MAX_NETWORK_SLOWDOWN: f64 = 0.05;
/// The daemon's CPU (its process and every program) with 1,000 jobs and
/// 10,000 tasks, % of one core.
const MAX_DAEMON_CPU_PCT: f64 = 1.0;
/// One sample with those 10,000 tasks.
const MAX_SAMPLE_MS: f64 = 15.0;
const MAX_SCRAPE_MS: f64 = 20.0;
/// Megabytes of 10^6 bytes.
const MAX_RSS_MB: f64 = 20.0;
const MIN_REGISTRATIONS_PER_S: f64 = 1000.0;
/// Paced at 1,000 registrations/s offered, alone and while /metrics is
/// scraped with the finished jobs in retention.
const MAX_REGISTRATION_P99_MS: f64 = 10.0;
/// With the finished jobs in retention (10,000 of them).
const MAX_RETENTION_SCRAPE_MS: f64 = 200.0;
const MAX_RETENTION_RSS_MB: f64 = 50.0;

/// Each benchmark's section title, up to its first figure, in section
/// order (section n is `## n. <title>...`): how a section of an earlier
/// report is recognised when a `--only` run merges.
const TITLES: [(Benchmark, &str); 10] = [
    (Benchmark::Cost, "Cost per program run"),
    (Benchmark::Slowdown, "Pipe ping-pong slowdown"),
    (Benchmark::Io, "IO-heavy job slowdown"),
    (Benchmark::IoOutside, "dd outside any job"),
    (Benchmark::Faults, "Page-fault-heavy job slowdown"),
    (Benchmark::Network, "Network-heavy job slowdown"),
    (Benchmark::DaemonCost, "The daemon's own cost"),
    (Benchmark::Scale, "/metrics and memory with"),
    (Benchmark::Registrations, "Launcher registrations"),
    (Benchmark::Retention, "Finished jobs"),
];

pub struct Report {
    pub environment: Environment,
    pub rounds: u32,
    /// Enough rounds to judge the goals by.
    pub trusted: bool,
    /// Other monitors' programs loaded, before each benchmark and after the last.
    pub foreign_programs: Vec<usize>,
    /// Each benchmark's result, `None` when it did not run (`--only`).
    pub cost: Option<CostResult>,
    pub slowdown: Option<SlowdownResult>,
    pub io: Option<JobSlowdownResult>,
    pub io_outside: Option<JobSlowdownResult>,
    pub faults: Option<JobSlowdownResult>,
    pub network: Option<JobSlowdownResult>,
    pub daemon_cost: Option<DaemonCostResult>,
    pub scale: Option<ScaleResult>,
    pub registrations: Option<RegistrationResult>,
    pub retention: Option<RetentionResult>,
}

struct Goal {
    bench: Benchmark,
    what: String,
    measured: String,
    target: String,
    pass: bool,
    /// Why the figure cannot be judged (the daemon did not do what was measured).
    invalid: bool,
}

impl Goal {
    fn new(bench: Benchmark, what: impl Into<String>, measured: String, target: String) -> Self {
        Self {
            bench,
            what: what.into(),
            measured,
            target,
            pass: false,
            invalid: false,
        }
    }

    fn pass(self, pass: bool) -> Self {
        Self { pass, ..self }
    }
}

impl Report {
    pub fn new(environment: Environment, rounds: u32, trusted_rounds: u32) -> Self {
        Self {
            environment,
            rounds,
            trusted: rounds >= trusted_rounds,
            foreign_programs: Vec::new(),
            cost: None,
            slowdown: None,
            io: None,
            io_outside: None,
            faults: None,
            network: None,
            daemon_cost: None,
            scale: None,
            registrations: None,
            retention: None,
        }
    }

    pub fn markdown(&self) -> String {
        let mut out = String::from("# Benchmark results\n\n");
        out += "Written by `cargo xtask bench`; rerun it rather than editing by hand.\n\n";
        out += &self.environment_section();
        out += &self.method_section();
        for (_, text) in self.bench_sections() {
            out += &text;
        }
        out += "## Goals\n\n";
        out += &self.goals_table();
        out
    }

    /// The goals, for the terminal.
    pub fn summary(&self) -> String {
        let mut out = format!("benchmark goals ({} rounds, medians):\n", self.rounds);
        for goal in self.goals() {
            let _ = writeln!(
                out,
                "  {:<4} {}: {} (goal {})",
                self.goal_verdict(&goal),
                goal.what,
                goal.measured,
                goal.target
            );
        }
        out
    }

    fn goals(&self) -> Vec<Goal> {
        let mut goals = Vec::new();
        if let Some(s) = &self.slowdown {
            goals.push(slowdown_goal(
                Benchmark::Slowdown,
                s.slowdown(),
                MAX_PINGPONG_SLOWDOWN,
            ));
        }
        for (bench, result, max) in [
            (Benchmark::Io, &self.io, MAX_IO_SLOWDOWN),
            (
                Benchmark::IoOutside,
                &self.io_outside,
                MAX_IO_OUTSIDE_SLOWDOWN,
            ),
            (Benchmark::Faults, &self.faults, MAX_FAULTS_SLOWDOWN),
            (Benchmark::Network, &self.network, MAX_NETWORK_SLOWDOWN),
        ] {
            if let Some(result) = result {
                let mut goal = slowdown_goal(bench, result.slowdown(), max);
                if result.rss_missed() {
                    goal.invalid = true;
                    goal.measured += " (RSS not counted: rss_stat did not run)";
                }
                goals.push(goal);
            }
        }
        if let Some(d) = &self.daemon_cost {
            let (jobs, tasks) = (d.jobs, d.tasks());
            goals.push(
                Goal::new(
                    Benchmark::DaemonCost,
                    format!("daemon CPU with {jobs} jobs and {tasks} tasks"),
                    format!("{:.3}% of one core", d.total_pct()),
                    format!("<= {MAX_DAEMON_CPU_PCT}%"),
                )
                .pass(d.total_pct() <= MAX_DAEMON_CPU_PCT),
            );
            goals.push(
                Goal::new(
                    Benchmark::DaemonCost,
                    format!("one sample with {tasks} job tasks"),
                    format!("{:.2} ms", d.sample_ms()),
                    format!("<= {MAX_SAMPLE_MS} ms"),
                )
                .pass(d.sample_ms() <= MAX_SAMPLE_MS),
            );
        }
        if let Some(scale) = &self.scale {
            let jobs = scale.jobs;
            let rss_mb = mb(scale.rss_kib);
            goals.push(
                Goal::new(
                    Benchmark::Scale,
                    format!("/metrics median with {jobs} jobs"),
                    format!("{:.2} ms", scale.median_ms()),
                    format!("<= {MAX_SCRAPE_MS} ms"),
                )
                .pass(scale.median_ms() <= MAX_SCRAPE_MS),
            );
            goals.push(
                Goal::new(
                    Benchmark::Scale,
                    format!("/metrics p99 with {jobs} jobs"),
                    format!("{:.2} ms", scale.p99_ms()),
                    format!("<= {MAX_SCRAPE_MS} ms"),
                )
                .pass(scale.p99_ms() <= MAX_SCRAPE_MS),
            );
            goals.push(
                Goal::new(
                    Benchmark::Scale,
                    format!("daemon RSS with {jobs} jobs"),
                    format!("{rss_mb:.1} MB"),
                    format!("<= {MAX_RSS_MB} MB"),
                )
                .pass(rss_mb <= MAX_RSS_MB),
            );
        }
        if let Some(r) = &self.registrations {
            // Judged on the paced runs: back to back, the p99 is set by
            // Little's law (the section says why), so it is shown, not a goal.
            let launchers = r.launchers;
            let back_to_back = r.median_of(|round| round.back_to_back.per_second());
            goals.push(
                Goal::new(
                    Benchmark::Registrations,
                    format!("registrations per second, {launchers} concurrent launchers"),
                    format!("{back_to_back:.0}/s"),
                    format!(">= {MIN_REGISTRATIONS_PER_S:.0}/s"),
                )
                .pass(
                    back_to_back >= MIN_REGISTRATIONS_PER_S
                        && r.failures_of(|round| &round.back_to_back) == 0,
                ),
            );
            let offered = r.offered_per_second();
            let jobs = r.finished_jobs;
            for (what, run) in [
                (
                    format!("registration latency p99, paced at {offered:.0}/s"),
                    (|round| &round.paced) as fn(&RegistrationRound) -> &Run,
                ),
                (
                    format!(
                        "registration latency p99, paced at {offered:.0}/s, two scrapes of {jobs} finished jobs running"
                    ),
                    |round| &round.scraped,
                ),
            ] {
                let p99 = r.median_of(|round| run(round).p99_ms());
                goals.push(
                    Goal::new(
                        Benchmark::Registrations,
                        what,
                        format!("{p99:.2} ms"),
                        format!("<= {MAX_REGISTRATION_P99_MS} ms"),
                    )
                    .pass(p99 <= MAX_REGISTRATION_P99_MS && r.failures_of(run) == 0),
                );
            }
        }
        if let Some(r) = &self.retention {
            let jobs = r.jobs;
            let rss_mb = mb_f(r.rss_kib());
            goals.push(
                Goal::new(
                    Benchmark::Retention,
                    format!("/metrics median with {jobs} finished jobs"),
                    format!("{:.2} ms", r.scrape_median_ms()),
                    format!("<= {MAX_RETENTION_SCRAPE_MS} ms"),
                )
                .pass(r.scrape_median_ms() <= MAX_RETENTION_SCRAPE_MS),
            );
            goals.push(
                Goal::new(
                    Benchmark::Retention,
                    format!("/metrics p99 with {jobs} finished jobs"),
                    format!("{:.2} ms", r.scrape_p99_ms()),
                    format!("<= {MAX_RETENTION_SCRAPE_MS} ms"),
                )
                .pass(r.scrape_p99_ms() <= MAX_RETENTION_SCRAPE_MS),
            );
            goals.push(
                Goal::new(
                    Benchmark::Retention,
                    format!("daemon RSS with {jobs} finished jobs"),
                    format!("{rss_mb:.1} MB"),
                    format!("<= {MAX_RETENTION_RSS_MB} MB"),
                )
                .pass(rss_mb <= MAX_RETENTION_RSS_MB),
            );
        }
        goals
    }

    fn verdict(&self, pass: bool) -> &'static str {
        match (pass, self.trusted) {
            (true, true) => "PASS",
            (false, true) => "MISS",
            (true, false) => "PASS (too few rounds to judge)",
            (false, false) => "MISS (too few rounds to judge)",
        }
    }

    fn goal_verdict(&self, goal: &Goal) -> &'static str {
        if goal.invalid {
            "INVALID"
        } else {
            self.verdict(goal.pass)
        }
    }

    fn environment_section(&self) -> String {
        let env = &self.environment;
        let rows = vec![
            row(["Date", &env.date]),
            row(["Kernel", &env.kernel]),
            row(["CPU", &format!("{} ({} CPUs)", env.cpu_model, env.cpus)]),
            row(["cgroup v2 mount", &env.cgroup_mount.display().to_string()]),
            row(["Rounds", &format!("{} (medians reported)", self.rounds)]),
            row([
                "Other monitors' programs loaded (before each benchmark, after the last)",
                &self
                    .foreign_programs
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            ]),
        ];
        format!("## Machine\n\n{}\n", table(&["", ""], &rows))
    }

    fn method_section(&self) -> String {
        String::from(
            "## Method\n\n\
             The machine is shared and noisy, so every figure is a median over rounds and every \
             comparison is between figures taken in the same run.\n\n\
             - **Slowdowns** (sections 2 to 6): runs without the daemon (stopped, its programs \
             unloaded: nothing attached) and with it (running, no `--bpf.stats`, whose clock reads \
             would add their own cost) alternate, and which side goes first flips every round. After \
             each run with the daemon, what it counted is checked, so its programs took the path \
             measured. Slowdown = the median over rounds of with / without - 1: each round runs both \
             sides back to back, so its ratio cancels what drifts between rounds (load from \
             others); the medians of each side are shown too.\n\
             - **Program costs** (sections 1 and 7): bpf_stats run time and run count of every \
             program the daemon attached, read from its pins (`--bpf.pin-path`) right before and \
             after each window, not from /metrics (refreshed once per sample only).\n\
             - **Other monitors' programs**: programs with the names of this monitor's (and of its \
             earlier versions') loaded while none of the benchmark's daemons ran: someone else's \
             monitor or test daemon, whose programs add to every figure.\n\n",
        )
    }

    /// The sections of the benchmarks that ran, each with its heading.
    fn bench_sections(&self) -> Vec<(Benchmark, String)> {
        [
            (Benchmark::Cost, self.cost_section()),
            (Benchmark::Slowdown, self.slowdown_section()),
            (Benchmark::Io, self.job_slowdown_section(self.io.as_ref())),
            (
                Benchmark::IoOutside,
                self.job_slowdown_section(self.io_outside.as_ref()),
            ),
            (
                Benchmark::Faults,
                self.job_slowdown_section(self.faults.as_ref()),
            ),
            (
                Benchmark::Network,
                self.job_slowdown_section(self.network.as_ref()),
            ),
            (Benchmark::DaemonCost, self.daemon_cost_section()),
            (Benchmark::Scale, self.scale_section()),
            (Benchmark::Registrations, self.registrations_section()),
            (Benchmark::Retention, self.retention_section()),
        ]
        .into_iter()
        .filter(|(_, text)| !text.is_empty())
        .collect()
    }

    fn goals_table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .goals()
            .iter()
            .map(|g| row([&g.what, &g.measured, &g.target, self.goal_verdict(g)]))
            .collect();
        table(&GOALS_HEADER, &rows)
    }
}

const GOALS_HEADER: [&str; 4] = ["Goal", "Measured", "Target", "Result"];

/// The goal row of a slowdown.
fn slowdown_goal(bench: Benchmark, slowdown: f64, max: f64) -> Goal {
    Goal::new(
        bench,
        slowdown_goal_name(bench),
        format!("{:+.1}%", slowdown * 100.0),
        format!("<= {:.0}%", max * 100.0),
    )
    .pass(slowdown <= max)
}

fn slowdown_goal_name(bench: Benchmark) -> &'static str {
    match bench {
        Benchmark::Slowdown => "pipe ping-pong slowdown",
        Benchmark::Io => "IO-heavy job slowdown (dd, 512-byte blocks)",
        Benchmark::IoOutside => "dd outside any job, slowdown",
        Benchmark::Faults => "page-fault-heavy job slowdown (1 GiB in 4 KiB pages)",
        Benchmark::Network => "network-heavy job slowdown (loopback TCP)",
        _ => "",
    }
}

/// Which benchmark a row of the goals table belongs to, by its first cell;
/// `None` for a goal no benchmark has any more.
fn goal_bench(what: &str) -> Option<Benchmark> {
    let slowdown = [
        Benchmark::Slowdown,
        Benchmark::Io,
        Benchmark::IoOutside,
        Benchmark::Faults,
        Benchmark::Network,
    ]
    .into_iter()
    .find(|b| slowdown_goal_name(*b) == what);
    if slowdown.is_some() {
        slowdown
    } else if what.ends_with("finished jobs") {
        // Before the /metrics and RSS rows of the scale benchmark, which start alike.
        Some(Benchmark::Retention)
    } else if what.starts_with("daemon CPU with") || what.starts_with("one sample with") {
        Some(Benchmark::DaemonCost)
    } else if what.starts_with("/metrics") || what.starts_with("daemon RSS") {
        Some(Benchmark::Scale)
    } else if what.starts_with("registration") {
        Some(Benchmark::Registrations)
    } else {
        None
    }
}

/// The position of a benchmark's section and goals.
fn order(bench: Benchmark) -> usize {
    TITLES
        .iter()
        .position(|(b, _)| *b == bench)
        .unwrap_or(usize::MAX)
}

/// A benchmark's section heading, up to its first figure.
fn heading(bench: Benchmark) -> String {
    let title = TITLES
        .iter()
        .find(|(b, _)| *b == bench)
        .map_or("", |(_, title)| title);
    format!("## {}. {title}", order(bench) + 1)
}

/// The benchmark of a numbered section (`## n. <title>...`), whatever its
/// number (an older layout numbered them otherwise).
fn section_bench(section: &str) -> Option<Benchmark> {
    let rest = section.strip_prefix("## ")?;
    let (number, title) = rest.split_once(". ")?;
    number.parse::<usize>().ok()?;
    TITLES
        .iter()
        .find(|(_, known)| title.starts_with(known))
        .map(|(bench, _)| *bench)
}

/// A section of an earlier report under its benchmark's number now.
fn renumber(section: &str, bench: Benchmark) -> String {
    match section.split_once(". ") {
        Some((_, rest)) => format!("## {}. {rest}", order(bench) + 1),
        None => section.to_string(),
    }
}

/// `existing` (the last RESULTS.md) with the sections and goals of the
/// benchmarks in `report` (a `--only` run) put in place of theirs, and the
/// method brought up to date. Sections and goals of benchmarks that exist
/// no more (an older layout) are dropped.
pub fn merge(existing: &str, report: &Report) -> String {
    let Some(goals_at) = existing.find("\n## Goals") else {
        return report.markdown();
    };
    let stamp = format!(
        "_This section: `cargo xtask bench --only`, {}, {} rounds; the rest of the file is from an earlier run._\n\n",
        report.environment.date, report.rounds
    );
    let (body, goals) = existing.split_at(goals_at + 1);
    let ran: Vec<(Benchmark, String)> = report.bench_sections();
    let mut head = Vec::new();
    let mut sections: Vec<(Benchmark, String)> = Vec::new();
    for section in split_sections(body) {
        if section.starts_with("## Method") {
            head.push(report.method_section());
        } else if let Some(bench) = section_bench(&section) {
            if !ran.iter().any(|(b, _)| *b == bench) {
                sections.push((bench, renumber(&section, bench)));
            }
        } else if !is_numbered(&section) {
            head.push(section);
        }
    }
    for (bench, text) in ran {
        let text = match text.split_once("\n\n") {
            Some((heading, rest)) => format!("{heading}\n\n{stamp}{rest}"),
            None => text,
        };
        sections.push((bench, text));
    }
    sections.sort_by_key(|(bench, _)| order(*bench));

    // Old goal rows of the benchmarks that did not run, then the new ones.
    let new_goals = report.goals();
    let mut rows: Vec<(Benchmark, Vec<String>)> = goals
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with(&format!("| {} |", GOALS_HEADER[0])))
        .filter_map(|l| {
            let cells: Vec<String> = l
                .trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_string())
                .collect();
            let bench = goal_bench(&cells[0])?;
            (!new_goals.iter().any(|g| g.bench == bench)).then_some((bench, cells))
        })
        .collect();
    rows.extend(new_goals.iter().map(|g| {
        (
            g.bench,
            row([&g.what, &g.measured, &g.target, report.goal_verdict(g)]),
        )
    }));
    rows.sort_by_key(|(bench, _)| order(*bench));
    let rows: Vec<Vec<String>> = rows.into_iter().map(|(_, cells)| cells).collect();

    let mut out = head.concat();
    out.extend(sections.into_iter().map(|(_, text)| text));
    out += "## Goals\n\n";
    out += &table(&GOALS_HEADER, &rows);
    out
}

/// A numbered section, `## n. ...`: a benchmark's, of this layout or an older one.
fn is_numbered(section: &str) -> bool {
    section
        .strip_prefix("## ")
        .and_then(|rest| rest.split_once(". "))
        .is_some_and(|(number, _)| number.parse::<usize>().is_ok())
}

/// The text split before each `## ` heading (the part before the first
/// heading, if any, comes first).
fn split_sections(text: &str) -> Vec<String> {
    let mut sections: Vec<String> = Vec::new();
    for line in text.split_inclusive('\n') {
        match sections.last_mut() {
            Some(last) if !line.starts_with("## ") => last.push_str(line),
            _ => sections.push(line.to_string()),
        }
    }
    sections
}

fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!("| {} |\n", header.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(header.len()));
    for row in rows {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    out
}

fn opt(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.decimals$}"))
}

fn mb(kib: u64) -> f64 {
    mb_f(kib as f64)
}

fn mb_f(kib: f64) -> f64 {
    kib * 1024.0 / 1e6
}

#[cfg(test)]
mod tests;
