//! bench/RESULTS.md and the summary printed at the end: the figures, the
//! goals, and whether each was met.
use std::fmt::Write as _;

use super::{
    program_cost::CostResult,
    scale::{SETTLE_SAMPLES, ScaleResult},
    slowdown::SlowdownResult,
    system::Environment,
};

/// sched_switch may cost at most this many times the empty program.
const SWITCH_MAX_RATIO: f64 = 3.0;
/// The ping-pong may run at most this much slower under the daemon.
const MAX_SLOWDOWN: f64 = 0.05;
const MAX_SCRAPE_MS: f64 = 20.0;
/// Megabytes of 10^6 bytes.
const MAX_RSS_MB: f64 = 20.0;

pub struct Report {
    pub environment: Environment,
    pub rounds: u32,
    /// Enough rounds to judge the goals by.
    pub trusted: bool,
    /// sched_switch programs of others, before each benchmark and after the last.
    pub foreign_switch_programs: Vec<usize>,
    pub cost: CostResult,
    pub slowdown: SlowdownResult,
    pub scale: ScaleResult,
}

struct Goal {
    what: String,
    measured: String,
    target: String,
    pass: bool,
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut out = String::from("# Benchmark results\n\n");
        out += "Written by `cargo xtask bench`; rerun it rather than editing by hand.\n\n";
        out += &self.environment_section();
        out += &self.method_section();
        out += &self.cost_section();
        out += &self.slowdown_section();
        out += &self.scale_section();
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
                self.verdict(goal.pass),
                goal.what,
                goal.measured,
                goal.target
            );
        }
        out
    }

    fn goals(&self) -> Vec<Goal> {
        let switch = self.cost.program("sched_switch");
        let ratio = switch.and_then(|p| p.ratio);
        let slowdown = self.slowdown.slowdown();
        let jobs = self.scale.jobs;
        let rss_mb = mb(self.scale.rss_kib);
        vec![
            Goal {
                what: "sched_switch cost per run".into(),
                measured: ratio.map_or_else(|| "never ran".into(), |r| format!("{r:.2}x the floor")),
                target: format!("<= {SWITCH_MAX_RATIO}x the empty program"),
                pass: ratio.is_some_and(|r| r <= SWITCH_MAX_RATIO),
            },
            Goal {
                what: "pipe ping-pong slowdown".into(),
                measured: format!("{:+.1}%", slowdown * 100.0),
                target: format!("<= {:.0}%", MAX_SLOWDOWN * 100.0),
                pass: slowdown <= MAX_SLOWDOWN,
            },
            Goal {
                what: format!("/metrics median with {jobs} jobs"),
                measured: format!("{:.2} ms", self.scale.median_ms()),
                target: format!("<= {MAX_SCRAPE_MS} ms"),
                pass: self.scale.median_ms() <= MAX_SCRAPE_MS,
            },
            Goal {
                what: format!("/metrics p99 with {jobs} jobs"),
                measured: format!("{:.2} ms", self.scale.p99_ms()),
                target: format!("<= {MAX_SCRAPE_MS} ms"),
                pass: self.scale.p99_ms() <= MAX_SCRAPE_MS,
            },
            Goal {
                what: format!("daemon RSS with {jobs} jobs"),
                measured: format!("{rss_mb:.1} MB"),
                target: format!("<= {MAX_RSS_MB} MB"),
                pass: rss_mb <= MAX_RSS_MB,
            },
        ]
    }

    fn verdict(&self, pass: bool) -> &'static str {
        match (pass, self.trusted) {
            (true, true) => "PASS",
            (false, true) => "MISS",
            (true, false) => "PASS (too few rounds to judge)",
            (false, false) => "MISS (too few rounds to judge)",
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
                "Others' sched_switch programs (before each benchmark, after the last)",
                &self
                    .foreign_switch_programs
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            ]),
        ];
        format!("## Machine\n\n{}\n", table(&["", ""], &rows))
    }

    fn method_section(&self) -> String {
        let rt = self.slowdown.round_trips;
        let cpu = self.slowdown.cpu;
        format!(
            "## Method\n\n\
             The machine is shared and noisy, so every figure is a median over rounds and every \
             comparison is between figures taken in the same run.\n\n\
             - **Cost per program run**: the daemon runs with `--bpf.stats`; the empty program \
             `bench_floor` (the floor: the price of the hook and of bpf_stats' own clock reads) is \
             attached to sched/sched_switch next to it. A window runs from a fresh daemon sample, through \
             the workload, to the next fresh sample; the floor is read as each sample appears. Workload per window, inside a \
             job cgroup: a pipe ping-pong of {rt} round trips pinned to CPU {cpu}, 200 fork+exec+exit of \
             `/bin/true`, 20 nested cgroups made and removed. ns/run = delta run time / delta run count; \
             the ratio is taken per window, then the median.\n\
             - **Ping-pong slowdown**: two processes pinned to CPU {cpu} pass one byte over two pipes \
             (two context switches per round trip), {rt} round trips timed after 10,000 of warm-up, \
             inside a job cgroup. Runs without the daemon (stopped, nothing attached) and with it \
             (no `--bpf.stats`) alternate, and which goes first flips every round. After each run with \
             the daemon, the job's counted context switches are checked, so the programs took the job path.\n\
             - **/metrics and RSS**: {} job cgroups, each with a `sleep` inside, made after the daemon is up; \
             once all are running and {} more samples were taken, {} back-to-back GETs of /metrics over \
             loopback (connect to last byte), then VmRSS and VmHWM from /proc/PID/status.\n\n",
            self.scale.jobs,
            SETTLE_SAMPLES,
            self.scale.scrape_ms.len(),
        )
    }

    fn cost_section(&self) -> String {
        let cost = &self.cost;
        let mut rows = vec![row([
            "bench_floor (empty, on sched_switch)",
            &format!("{:.0}", cost.floor_runs),
            &format!("{:.0}", cost.floor_ns),
            "1.00",
            "",
            "",
        ])];
        for program in &cost.programs {
            let is_switch = program.name == "sched_switch";
            let goal = if is_switch {
                format!("<= {SWITCH_MAX_RATIO}x")
            } else {
                String::new()
            };
            let verdict = match (is_switch, program.ratio) {
                (true, Some(r)) => self.verdict(r <= SWITCH_MAX_RATIO),
                (true, None) => self.verdict(false),
                _ => "",
            };
            rows.push(row([
                &program.name,
                &format!("{:.0}", program.runs),
                &opt(program.ns_per_run, 0),
                &opt(program.ratio, 2),
                &goal,
                verdict,
            ]));
        }
        format!(
            "## 1. Cost per program run (bpf_stats)\n\n\
             Ratios are to the floor on sched_switch, whatever the program's own hook. The daemon \
             credited {:.0} context switches to the job (at least 2 per round trip are expected).\n\n{}\n",
            cost.job_switches,
            table(
                &["Program", "Runs per window", "ns/run", "x floor", "Goal", "Result"],
                &rows
            )
        )
    }

    fn slowdown_section(&self) -> String {
        let s = &self.slowdown;
        let mut rows: Vec<Vec<String>> = s
            .without_us
            .iter()
            .zip(&s.with_us)
            .enumerate()
            .map(|(i, (without, with))| {
                row([
                    &(i + 1).to_string(),
                    &format!("{without:.3}"),
                    &format!("{with:.3}"),
                    &format!("{:+.1}%", (with / without - 1.0) * 100.0),
                ])
            })
            .collect();
        rows.push(row([
            "**median**",
            &format!("**{:.3}**", s.median_without()),
            &format!("**{:.3}**", s.median_with()),
            &format!("**{:+.1}%**", s.slowdown() * 100.0),
        ]));
        format!(
            "## 2. Pipe ping-pong slowdown\n\n\
             Microseconds per round trip. Slowdown = median(with) / median(without) - 1 = {:+.1}%; \
             goal <= {:.0}%: **{}**.\n\n{}\n{}",
            s.slowdown() * 100.0,
            MAX_SLOWDOWN * 100.0,
            self.verdict(s.slowdown() <= MAX_SLOWDOWN),
            table(&["Round", "Without (µs/rt)", "With (µs/rt)", "Difference"], &rows),
            self.expected_slowdown()
        )
    }

    /// A cross-check from benchmark 1: a round trip runs sched_switch and
    /// sched_wakeup twice each, so their cost per run predicts the slowdown.
    fn expected_slowdown(&self) -> String {
        let ns = |name| self.cost.program(name).and_then(|p| p.ns_per_run);
        let (Some(switch), Some(wakeup)) = (ns("sched_switch"), ns("sched_wakeup")) else {
            return String::new();
        };
        let per_round_trip_us = 2.0 * (switch + wakeup) / 1000.0;
        format!(
            "Cross-check from benchmark 1: 2 x sched_switch + 2 x sched_wakeup = {per_round_trip_us:.2} µs per \
             round trip, {:.0}% of the median without (an upper bound: bpf_stats' clock reads are included).\n\n",
            per_round_trip_us / self.slowdown.median_without() * 100.0
        )
    }

    fn scale_section(&self) -> String {
        let s = &self.scale;
        let rss = mb(s.rss_kib);
        let rows = vec![
            row([
                "/metrics, median",
                &format!("{:.2} ms", s.median_ms()),
                &format!("<= {MAX_SCRAPE_MS} ms"),
                self.verdict(s.median_ms() <= MAX_SCRAPE_MS),
            ]),
            row([
                "/metrics, p99",
                &format!("{:.2} ms", s.p99_ms()),
                &format!("<= {MAX_SCRAPE_MS} ms"),
                self.verdict(s.p99_ms() <= MAX_SCRAPE_MS),
            ]),
            row(["/metrics body", &format!("{} bytes", s.body_bytes), "", ""]),
            row([
                "Daemon VmRSS",
                &format!("{rss:.1} MB ({} KiB)", s.rss_kib),
                &format!("<= {MAX_RSS_MB} MB"),
                self.verdict(rss <= MAX_RSS_MB),
            ]),
            row([
                "Daemon VmHWM (peak RSS)",
                &format!("{:.1} MB ({} KiB)", mb(s.hwm_kib), s.hwm_kib),
                "",
                "",
            ]),
            row([
                "Daemon's last map sample took",
                &s.sample_ms.map_or_else(|| "unknown".into(), |ms| format!("{ms:.2} ms")),
                "",
                "",
            ]),
        ];
        format!(
            "## 3. /metrics and memory with {} jobs\n\nMB are 10^6 bytes.\n\n{}\n",
            s.jobs,
            table(&["Measure", "Value", "Goal", "Result"], &rows)
        )
    }

    fn goals_table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .goals()
            .into_iter()
            .map(|g| row([&g.what, &g.measured, &g.target, self.verdict(g.pass)]))
            .collect();
        table(&["Goal", "Measured", "Target", "Result"], &rows)
    }
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
    kib as f64 * 1024.0 / 1e6
}
