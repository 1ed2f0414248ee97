//! bench/RESULTS.md and the summary printed at the end. Each benchmark
//! declares its section and its goals once, in its module under `report/`
//! (an [`Outcome`]); this one only puts the parts in order: the machine,
//! the method, each section in its marked block, and the goals table.
mod cost;
mod daemon_cost;
mod goal;
mod markdown;
mod merge;
mod registrations;
mod retention;
mod scale;
mod slowdowns;

use std::fmt::Write as _;

use clap::ValueEnum as _;
pub use merge::merge;

use self::{
    goal::Goal,
    markdown::{marked, row, table},
};
use super::{
    Benchmark, daemon_cost::DaemonCostResult, job_slowdown::JobSlowdownResult,
    program_cost::CostResult, registrations::RegistrationResult, retention::RetentionResult,
    scale::ScaleResult, slowdown::SlowdownResult, system::Environment,
};

/// The keys of the marked parts that are no benchmark's.
const MACHINE: &str = "machine";
const METHOD: &str = "method";
const GOALS: &str = "goals";
const GOALS_HEADER: [&str; 5] = ["Benchmark", "Goal", "Measured", "Target", "Result"];

/// What a benchmark puts in the report, declared in one place.
trait Outcome {
    /// Its section; `report` has the verdicts' trust and the other
    /// benchmarks' results, for cross-checks.
    fn section(&self, report: &Report) -> Section;
    /// Its goals, each judged and printed from the one declaration.
    fn goals(&self) -> Vec<Goal>;
}

/// A benchmark's section: the title after its number, and the text.
struct Section {
    title: String,
    body: String,
}

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
    pub processes: Option<JobSlowdownResult>,
}

impl Benchmark {
    /// The name `--only` takes, which also marks the benchmark's part of
    /// bench/RESULTS.md.
    fn key(self) -> String {
        self.to_possible_value()
            .map_or_else(String::new, |value| value.get_name().to_string())
    }

    fn from_key(key: &str) -> Option<Self> {
        Self::from_str(key, false).ok()
    }

    /// The section's number.
    fn number(self) -> usize {
        Self::ALL
            .iter()
            .position(|b| *b == self)
            .unwrap_or(usize::MAX)
            + 1
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
            processes: None,
        }
    }

    pub fn markdown(&self) -> String {
        let mut sections = String::new();
        for (bench, outcome) in self.outcomes() {
            sections += &self.section_block(bench, outcome, "");
        }
        let goals = self.goal_rows().into_iter().map(|(_, row)| row).collect();
        self.document(&self.machine_section(), &sections, goals)
    }

    /// The goals, for the terminal.
    pub fn summary(&self) -> String {
        let mut out = format!("benchmark goals ({} rounds, medians):\n", self.rounds);
        for (_, goal) in self.goals() {
            let _ = writeln!(
                out,
                "  {:<4} {}: {} (goal {})",
                goal.verdict(self.trusted),
                goal.name,
                goal.measured_text(),
                goal.target()
            );
        }
        out
    }

    /// The benchmarks that ran, in section order.
    fn outcomes(&self) -> Vec<(Benchmark, &dyn Outcome)> {
        fn ran<T: Outcome>(result: Option<&T>) -> Option<&dyn Outcome> {
            result.map(|r| r as &dyn Outcome)
        }
        [
            (Benchmark::Cost, ran(self.cost.as_ref())),
            (Benchmark::Slowdown, ran(self.slowdown.as_ref())),
            (Benchmark::Io, ran(self.io.as_ref())),
            (Benchmark::IoOutside, ran(self.io_outside.as_ref())),
            (Benchmark::Faults, ran(self.faults.as_ref())),
            (Benchmark::Network, ran(self.network.as_ref())),
            (Benchmark::DaemonCost, ran(self.daemon_cost.as_ref())),
            (Benchmark::Scale, ran(self.scale.as_ref())),
            (Benchmark::Registrations, ran(self.registrations.as_ref())),
            (Benchmark::Retention, ran(self.retention.as_ref())),
            (Benchmark::Processes, ran(self.processes.as_ref())),
        ]
        .into_iter()
        .filter_map(|(bench, outcome)| Some((bench, outcome?)))
        .collect()
    }

    fn goals(&self) -> Vec<(Benchmark, Goal)> {
        self.outcomes()
            .into_iter()
            .flat_map(|(bench, outcome)| outcome.goals().into_iter().map(move |g| (bench, g)))
            .collect()
    }

    /// The goals table's rows of the benchmarks that ran.
    fn goal_rows(&self) -> Vec<(Benchmark, Vec<String>)> {
        self.goals()
            .into_iter()
            .map(|(bench, goal)| {
                let row = row([
                    &format!("`{}`", bench.key()),
                    &goal.name,
                    &goal.measured_text(),
                    &goal.target(),
                    goal.verdict(self.trusted),
                ]);
                (bench, row)
            })
            .collect()
    }

    /// A benchmark's section in its marked block; `stamp` follows the heading.
    fn section_block(&self, bench: Benchmark, outcome: &dyn Outcome, stamp: &str) -> String {
        let Section { title, body } = outcome.section(self);
        let text = format!("## {}. {title}\n\n{stamp}{body}", bench.number());
        marked(&bench.key(), &text)
    }

    /// The whole file from its parts: `sections` already marked.
    fn document(&self, machine: &str, sections: &str, goals: Vec<Vec<String>>) -> String {
        let mut out = String::from("# Benchmark results\n\n");
        out += "Written by `cargo xtask bench`; rerun it rather than editing by hand.\n\n";
        out += &marked(MACHINE, machine);
        out += &marked(METHOD, &method_section());
        out += sections;
        out += &marked(
            GOALS,
            &format!("## Goals\n\n{}", table(&GOALS_HEADER, &goals)),
        );
        // One newline at the end of the file, not the blank line between parts.
        out.pop();
        out
    }

    fn machine_section(&self) -> String {
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
}

fn method_section() -> String {
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

#[cfg(test)]
mod tests;
