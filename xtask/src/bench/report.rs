//! bench/RESULTS.md and the summary printed at the end: the figures, the
//! goals, and whether each was met.
use std::fmt::Write as _;

use super::{
    Benchmark,
    job_slowdown::{JobSlowdownResult, Kind},
    program_cost::CostResult,
    registrations::{PACED_INTERVAL, PACED_REGISTRATIONS, RegistrationResult, SOLO_REGISTRATIONS},
    resource_cost::{DD_BLOCKS, DIRECT_MIB, ResourceCostResult, TCP_BYTES, TOUCH_MIB},
    retention::{API_GETS, JOB_RETENTION, POLL, RetentionResult, RetentionRound},
    scale::{SETTLE_SAMPLES, ScaleResult},
    slowdown::SlowdownResult,
    system::Environment,
};

/// sched_switch may cost at most this many times the empty program.
const SWITCH_MAX_RATIO: f64 = 3.0;
/// The ping-pong, and the IO- and network-heavy jobs, may run at most this
/// much slower under the daemon.
const MAX_SLOWDOWN: f64 = 0.05;
const MAX_SCRAPE_MS: f64 = 20.0;
/// Megabytes of 10^6 bytes.
const MAX_RSS_MB: f64 = 20.0;
const MIN_REGISTRATIONS_PER_S: f64 = 1000.0;
const MAX_REGISTRATION_P99_MS: f64 = 10.0;
/// With the finished jobs in retention (10,000 of them).
const MAX_RETENTION_SCRAPE_MS: f64 = 200.0;
const MAX_RETENTION_RSS_MB: f64 = 50.0;

pub struct Report {
    pub environment: Environment,
    pub rounds: u32,
    /// Enough rounds to judge the goals by.
    pub trusted: bool,
    /// sched_switch programs of others, before each benchmark and after the last.
    pub foreign_switch_programs: Vec<usize>,
    /// Each benchmark's result, `None` when it did not run (`--only`).
    pub cost: Option<CostResult>,
    pub slowdown: Option<SlowdownResult>,
    pub scale: Option<ScaleResult>,
    pub registrations: Option<RegistrationResult>,
    pub resource_cost: Option<ResourceCostResult>,
    pub io: Option<JobSlowdownResult>,
    pub network: Option<JobSlowdownResult>,
    pub retention: Option<RetentionResult>,
}

struct Goal {
    bench: Benchmark,
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
        out += &self.registrations_section();
        out += &self.resource_cost_section();
        out += &self.job_slowdown_section(self.io.as_ref());
        out += &self.job_slowdown_section(self.network.as_ref());
        out += &self.retention_section();
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
        let mut goals = Vec::new();
        if let Some(cost) = &self.cost {
            let ratio = cost.program("sched_switch").and_then(|p| p.ratio);
            goals.push(Goal {
                bench: Benchmark::Cost,
                what: "sched_switch cost per run".into(),
                measured: ratio
                    .map_or_else(|| "never ran".into(), |r| format!("{r:.2}x the floor")),
                target: format!("<= {SWITCH_MAX_RATIO}x the empty program"),
                pass: ratio.is_some_and(|r| r <= SWITCH_MAX_RATIO),
            });
        }
        if let Some(slowdown) = &self.slowdown {
            let slowdown = slowdown.slowdown();
            goals.push(Goal {
                bench: Benchmark::Slowdown,
                what: "pipe ping-pong slowdown".into(),
                measured: format!("{:+.1}%", slowdown * 100.0),
                target: format!("<= {:.0}%", MAX_SLOWDOWN * 100.0),
                pass: slowdown <= MAX_SLOWDOWN,
            });
        }
        if let Some(scale) = &self.scale {
            let jobs = scale.jobs;
            let rss_mb = mb(scale.rss_kib);
            goals.push(Goal {
                bench: Benchmark::Scale,
                what: format!("/metrics median with {jobs} jobs"),
                measured: format!("{:.2} ms", scale.median_ms()),
                target: format!("<= {MAX_SCRAPE_MS} ms"),
                pass: scale.median_ms() <= MAX_SCRAPE_MS,
            });
            goals.push(Goal {
                bench: Benchmark::Scale,
                what: format!("/metrics p99 with {jobs} jobs"),
                measured: format!("{:.2} ms", scale.p99_ms()),
                target: format!("<= {MAX_SCRAPE_MS} ms"),
                pass: scale.p99_ms() <= MAX_SCRAPE_MS,
            });
            goals.push(Goal {
                bench: Benchmark::Scale,
                what: format!("daemon RSS with {jobs} jobs"),
                measured: format!("{rss_mb:.1} MB"),
                target: format!("<= {MAX_RSS_MB} MB"),
                pass: rss_mb <= MAX_RSS_MB,
            });
        }
        if let Some(r) = &self.registrations {
            let launchers = r.launchers;
            goals.push(Goal {
                bench: Benchmark::Registrations,
                what: format!("registrations per second, {launchers} concurrent launchers"),
                measured: format!("{:.0}/s", r.per_second()),
                target: format!(">= {MIN_REGISTRATIONS_PER_S:.0}/s"),
                pass: r.per_second() >= MIN_REGISTRATIONS_PER_S && r.failures() == 0,
            });
            goals.push(Goal {
                bench: Benchmark::Registrations,
                what: format!("registration latency p99, {launchers} concurrent launchers"),
                measured: format!("{:.2} ms", r.p99_ms()),
                target: format!("<= {MAX_REGISTRATION_P99_MS} ms"),
                pass: r.p99_ms() <= MAX_REGISTRATION_P99_MS,
            });
        }
        for result in [&self.io, &self.network].into_iter().flatten() {
            let slowdown = result.slowdown();
            goals.push(Goal {
                bench: match result.kind {
                    Kind::Io => Benchmark::Io,
                    Kind::Network => Benchmark::Network,
                },
                what: slowdown_goal(result.kind).into(),
                measured: format!("{:+.1}%", slowdown * 100.0),
                target: format!("<= {:.0}%", MAX_SLOWDOWN * 100.0),
                pass: slowdown <= MAX_SLOWDOWN,
            });
        }
        if let Some(r) = &self.retention {
            let jobs = r.jobs;
            let rss_mb = mb_f(r.rss_kib());
            goals.push(Goal {
                bench: Benchmark::Retention,
                what: format!("/metrics median with {jobs} finished jobs"),
                measured: format!("{:.2} ms", r.scrape_median_ms()),
                target: format!("<= {MAX_RETENTION_SCRAPE_MS} ms"),
                pass: r.scrape_median_ms() <= MAX_RETENTION_SCRAPE_MS,
            });
            goals.push(Goal {
                bench: Benchmark::Retention,
                what: format!("/metrics p99 with {jobs} finished jobs"),
                measured: format!("{:.2} ms", r.scrape_p99_ms()),
                target: format!("<= {MAX_RETENTION_SCRAPE_MS} ms"),
                pass: r.scrape_p99_ms() <= MAX_RETENTION_SCRAPE_MS,
            });
            goals.push(Goal {
                bench: Benchmark::Retention,
                what: format!("daemon RSS with {jobs} finished jobs"),
                measured: format!("{rss_mb:.1} MB"),
                target: format!("<= {MAX_RETENTION_RSS_MB} MB"),
                pass: rss_mb <= MAX_RETENTION_RSS_MB,
            });
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
        let mut out = String::from(
            "## Method\n\n\
             The machine is shared and noisy, so every figure is a median over rounds and every \
             comparison is between figures taken in the same run.\n\n",
        );
        if let Some(slowdown) = &self.slowdown {
            let (rt, cpu) = (slowdown.round_trips, slowdown.cpu);
            if self.cost.is_some() {
                let _ = writeln!(
                    out,
                    "- **Cost per program run**: the daemon runs with `--bpf.stats`; the empty program \
                     `bench_floor` (the floor: the price of the hook and of bpf_stats' own clock reads) is \
                     attached to sched/sched_switch next to it. A window runs from a fresh daemon sample, through \
                     the workload, to the next fresh sample; the floor is read as each sample appears. Workload per window, inside a \
                     job cgroup: a pipe ping-pong of {rt} round trips pinned to CPU {cpu}, 200 fork+exec+exit of \
                     `/bin/true`, 20 nested cgroups made and removed. ns/run = delta run time / delta run count; \
                     the ratio is taken per window, then the median."
                );
            }
            let _ = writeln!(
                out,
                "- **Ping-pong slowdown**: two processes pinned to CPU {cpu} pass one byte over two pipes \
                 (two context switches per round trip), {rt} round trips timed after 10,000 of warm-up, \
                 inside a job cgroup. Runs without the daemon (stopped, nothing attached) and with it \
                 (no `--bpf.stats`) alternate, and which goes first flips every round. After each run with \
                 the daemon, the job's counted context switches are checked, so the programs took the job path."
            );
        } else if self.cost.is_some() {
            out += "- **Cost per program run**: the daemon runs with `--bpf.stats`; the empty program \
                    `bench_floor` is attached to sched/sched_switch next to it (see the earlier full run for the workload).\n";
        }
        if let Some(scale) = &self.scale {
            let _ = writeln!(
                out,
                "- **/metrics and RSS**: {} job cgroups, each with a `sleep` inside, made after the daemon is up; \
                 once all are running and {} more samples were taken, {} back-to-back GETs of /metrics over \
                 loopback (connect to last byte), then VmRSS and VmHWM from /proc/PID/status.",
                scale.jobs,
                SETTLE_SAMPLES,
                scale.scrape_ms.len(),
            );
        }
        if self.registrations.is_some() {
            out += "- **Registrations**: see section 4.\n";
        }
        if self.retention.is_some() {
            out += "- **Finished jobs**: see section 8.\n";
        }
        out += "\n";
        out
    }

    fn cost_section(&self) -> String {
        let Some(cost) = &self.cost else {
            return String::new();
        };
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
                &[
                    "Program",
                    "Runs per window",
                    "ns/run",
                    "x floor",
                    "Goal",
                    "Result"
                ],
                &rows
            )
        )
    }

    fn slowdown_section(&self) -> String {
        let Some(s) = &self.slowdown else {
            return String::new();
        };
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
            table(
                &["Round", "Without (µs/rt)", "With (µs/rt)", "Difference"],
                &rows
            ),
            self.expected_slowdown()
        )
    }

    /// A cross-check from benchmark 1: a round trip runs sched_switch and
    /// sched_wakeup twice each, so their cost per run predicts the slowdown.
    fn expected_slowdown(&self) -> String {
        let ns = |name| {
            self.cost
                .as_ref()
                .and_then(|c| c.program(name))
                .and_then(|p| p.ns_per_run)
        };
        let (Some(switch), Some(wakeup), Some(slowdown)) =
            (ns("sched_switch"), ns("sched_wakeup"), &self.slowdown)
        else {
            return String::new();
        };
        let per_round_trip_us = 2.0 * (switch + wakeup) / 1000.0;
        format!(
            "Cross-check from benchmark 1: 2 x sched_switch + 2 x sched_wakeup = {per_round_trip_us:.2} µs per \
             round trip, {:.0}% of the median without (an upper bound: bpf_stats' clock reads are included).\n\n",
            per_round_trip_us / slowdown.median_without() * 100.0
        )
    }

    fn scale_section(&self) -> String {
        let Some(s) = &self.scale else {
            return String::new();
        };
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
                &s.sample_ms
                    .map_or_else(|| "unknown".into(), |ms| format!("{ms:.2} ms")),
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

    fn registrations_section(&self) -> String {
        let Some(r) = &self.registrations else {
            return String::new();
        };
        let mut rows: Vec<Vec<String>> = r
            .rounds
            .iter()
            .enumerate()
            .map(|(i, round)| {
                row([
                    &(i + 1).to_string(),
                    &round.registrations.to_string(),
                    &format!("{:.2}", round.wall_s),
                    &format!("{:.0}", round.per_second()),
                    &format!("{:.2}", round.p50_ms()),
                    &format!("{:.2}", round.p99_ms()),
                    &format!("{:.2}", round.max_ms()),
                    &format!("{:.2}", round.solo_p50_ms()),
                    &format!("{:.2}", round.solo_p99_ms()),
                    &format!("{:.0}", round.paced_per_second),
                    &format!("{:.2}", round.paced_p50_ms()),
                    &format!("{:.2}", round.paced_p99_ms()),
                    &round.failures.to_string(),
                ])
            })
            .collect();
        rows.push(row([
            "**median**",
            "",
            "",
            &format!("**{:.0}**", r.per_second()),
            &format!("**{:.2}**", r.p50_ms()),
            &format!("**{:.2}**", r.p99_ms()),
            "",
            &format!("**{:.2}**", r.solo_p50_ms()),
            &format!("**{:.2}**", r.solo_p99_ms()),
            &format!("**{:.0}**", r.paced_per_second()),
            &format!("**{:.2}**", r.paced_p50_ms()),
            &format!("**{:.2}**", r.paced_p99_ms()),
            &r.failures().to_string(),
        ]));
        let launchers = r.launchers;
        let little = f64::from(launchers) / (MAX_REGISTRATION_P99_MS / 1000.0);
        let offered = f64::from(launchers) / PACED_INTERVAL.as_secs_f64();
        let mut out = format!(
            "## 4. Launcher registrations\n\n\
             {launchers} launcher processes (`xtask bench` re-executed as a hidden worker, trusted with \
             `--trust.path`) start together; each makes {} registrations in a row: connect, send \
             `{{\"job_id\":\"bench-<launcher>-<n>\"}}`, read the answer (which must be ok), close. Every \
             registration makes a task cgroup and moves the launcher into it (its previous job, now empty, \
             ends at the next sample; `--job.retention 2s`). Latency: connect to answer received, every \
             registration of the round. Per second: all registrations of the round over the time from the \
             first launcher's start to the last one's end. Then one launcher alone makes {SOLO_REGISTRATIONS} registrations \
             (\"alone\": the cost of one registration without queueing). Then \"paced\": the {launchers} \
             launchers again, each registering once every {} ms (schedules spread evenly, so \
             {offered:.0} registrations/s offered), {PACED_REGISTRATIONS} each; latency counts from when a registration was due. \
             The daemon samples every 1 s.\n\n\
             Back to back, the launchers never pause, so {launchers} registrations are always in flight: by \
             Little's law the mean latency is {launchers} / throughput, and a p99 of {MAX_REGISTRATION_P99_MS} ms \
             would need more than {little:.0} registrations/s. The goals are judged on the back-to-back run, as \
             specified; the paced run shows the latency at the goal's rate.\n\n{}\n",
            r.per_launcher,
            PACED_INTERVAL.as_millis(),
            table(
                &[
                    "Round",
                    "Registrations",
                    "Wall (s)",
                    "Per second",
                    "p50 (ms)",
                    "p99 (ms)",
                    "Max (ms)",
                    "Alone p50 (ms)",
                    "Alone p99 (ms)",
                    "Paced: per second",
                    "Paced p50 (ms)",
                    "Paced p99 (ms)",
                    "Failed",
                ],
                &rows
            )
        );
        let _ = writeln!(
            out,
            "Goals: >= {MIN_REGISTRATIONS_PER_S:.0}/s: **{}**; p99 <= {MAX_REGISTRATION_P99_MS} ms: **{}**.\n",
            self.verdict(r.per_second() >= MIN_REGISTRATIONS_PER_S && r.failures() == 0),
            self.verdict(r.p99_ms() <= MAX_REGISTRATION_P99_MS)
        );
        if let Some(failure) = &r.first_failure {
            let _ = writeln!(out, "A registration failed: `{failure}`\n");
        }
        out
    }

    fn resource_cost_section(&self) -> String {
        let Some(cost) = &self.resource_cost else {
            return String::new();
        };
        let mut rows = vec![row([
            "bench_floor (empty, on sched_switch)",
            "",
            &format!("{:.0}", cost.floor_ns),
            "1.00",
        ])];
        for program in &cost.programs {
            rows.push(row([
                &program.name,
                &format!("{:.0}", program.runs),
                &opt(program.ns_per_run, 0),
                &opt(program.ratio, 2),
            ]));
        }
        let counters = cost
            .job_counters
            .iter()
            .map(|(what, value)| format!("{what} {value:.0}"))
            .collect::<Vec<_>>()
            .join(", ");
        let oom = match &cost.no_oom {
            None => "a process of a second job, limited to 32 MiB (a child v1 memory cgroup below xtask's \
                     own on hybrid hosts, memory.max on cgroup v2), touching memory until the OOM killer ends it"
                .to_string(),
            Some(why) => format!("no OOM kill ({why})"),
        };
        format!(
            "## 5. Cost per run of the memory, IO and network programs (bpf_stats)\n\n\
             The daemon runs with `--bpf.stats`, the empty floor program on sched_switch next to it, as in \
             benchmark 1. Workload per window, inside a job cgroup: {TOUCH_MIB} MiB mapped, touched (4 KiB \
             pages) and unmapped; `dd if=/dev/zero bs=512 count={DD_BLOCKS}` to a file; {DIRECT_MIB} MiB \
             written and read back in 4 KiB O_DIRECT calls, then copied with sendfile and with \
             copy_file_range in 64 KiB calls; {TCP_BYTES} bytes over loopback TCP in 64 KiB writes; and {oom}. \
             ns/run covers every run in the window, the job's and everyone else's (the cheap \
             \"not a job\" exit); the ratio is to the floor, per window, then the median. The job's \
             counters after the last window: {counters}.\n\n{}\n",
            table(&["Program", "Runs per window", "ns/run", "x floor"], &rows)
        )
    }

    fn job_slowdown_section(&self, result: Option<&JobSlowdownResult>) -> String {
        let Some(s) = result else {
            return String::new();
        };
        let mut rows: Vec<Vec<String>> = s
            .without_s
            .iter()
            .zip(&s.with_s)
            .enumerate()
            .map(|(i, (without, with))| {
                row([
                    &(i + 1).to_string(),
                    &format!("{without:.4}"),
                    &format!("{with:.4}"),
                    &format!("{:+.1}%", (with / without - 1.0) * 100.0),
                ])
            })
            .collect();
        rows.push(row([
            "**median**",
            &format!("**{:.4}**", s.median_without()),
            &format!("**{:.4}**", s.median_with()),
            &format!("**{:+.1}%**", s.slowdown() * 100.0),
        ]));
        let (heading, how, credited) = match s.kind {
            Kind::Io => (
                "## 6. IO-heavy job slowdown",
                format!(
                    "`dd if=/dev/zero of=<file> bs=512 count={}` ({} bytes in {} read and {} write calls) \
                     inside a job cgroup, pinned to CPU {}, the file on the workspace's disk and removed after \
                     each run. Time: dd's own figure for the copy (start-up excluded).",
                    s.size,
                    s.bytes(),
                    s.size,
                    s.size,
                    s.cpus.0
                ),
                "bytes written",
            ),
            Kind::Network => (
                "## 7. Network-heavy job slowdown",
                format!(
                    "{} bytes over loopback TCP in 64 KiB writes, between two threads of one process inside a \
                     job cgroup (the listener made inside the job, so both sockets are the job's), {}. Time: \
                     from the first write to the receiver's last byte.",
                    s.bytes(),
                    if s.cpus.0 == s.cpus.1 {
                        format!("both pinned to CPU {}", s.cpus.0)
                    } else {
                        format!(
                            "the sender pinned to CPU {} and the receiver to CPU {}",
                            s.cpus.0, s.cpus.1
                        )
                    }
                ),
                "bytes sent",
            ),
        };
        format!(
            "{heading}\n\n\
             {how} Each round runs it {} times without the daemon (stopped, nothing attached) and {} times \
             with it (no `--bpf.stats`), the median of each side being the round's figure; which side goes \
             first flips every round. After each run with the daemon the job's counters are checked (last \
             check: {:.0} {credited} for {} runs). Seconds per run; slowdown = median(with) / median(without) - 1 \
             = {:+.1}%; goal <= {:.0}%: **{}**.\n\n{}\n",
            s.repeats,
            s.repeats,
            s.credited,
            s.repeats,
            s.slowdown() * 100.0,
            MAX_SLOWDOWN * 100.0,
            self.verdict(s.slowdown() <= MAX_SLOWDOWN),
            table(&["Round", "Without (s)", "With (s)", "Difference"], &rows)
        )
    }

    fn retention_section(&self) -> String {
        let Some(r) = &self.retention else {
            return String::new();
        };
        let jobs = r.jobs;
        let mut rows: Vec<Vec<String>> = r
            .rounds
            .iter()
            .enumerate()
            .map(|(i, round)| {
                row([
                    &(i + 1).to_string(),
                    &format!("{:.2}", round.rmdir_s),
                    &format!("{:.2}", round.written_s),
                    &format!("{:.0}", round.profiles_per_second(jobs)),
                    &format!("{:.0}", round.commits),
                    &format!("{:.0}", round.last_commit_ms),
                    &format!("{:.0}", round.ring_full),
                    &format!("{:.0}", round.burst_sample_ms),
                    &format!("{:.2}", round.finished_s),
                    &format!("{:.2}", round.store_bytes() as f64 / 1e6),
                    &format!("{:.1}", round.scrape_median_ms()),
                    &format!("{:.1}", round.scrape_p99_ms()),
                    &format!("{:.1}", mb(round.rss_kib)),
                    &format!("{:.1}", round.api_median_ms()),
                ])
            })
            .collect();
        rows.push(row([
            "**median**",
            &format!("**{:.2}**", r.median_of(|round| round.rmdir_s)),
            &format!("**{:.2}**", r.written_s()),
            &format!("**{:.0}**", r.profiles_per_second()),
            &format!("**{:.0}**", r.median_of(|round| round.commits)),
            &format!("**{:.0}**", r.median_of(|round| round.last_commit_ms)),
            &format!("**{:.0}**", r.median_of(|round| round.ring_full)),
            &format!("**{:.0}**", r.median_of(|round| round.burst_sample_ms)),
            &format!("**{:.2}**", r.finished_s()),
            &format!("**{:.2}**", r.store_bytes() / 1e6),
            &format!("**{:.1}**", r.scrape_median_ms()),
            &format!("**{:.1}**", r.scrape_p99_ms()),
            &format!("**{:.1}**", mb_f(r.rss_kib())),
            &format!("**{:.1}**", r.api_median_ms()),
        ]));
        let rss = mb_f(r.rss_kib());
        let api_jobs = r
            .rounds
            .iter()
            .map(|round| round.api_jobs)
            .min()
            .unwrap_or(0);
        let most =
            |figure: fn(&RetentionRound) -> f64| r.rounds.iter().map(figure).fold(0.0, f64::max);
        let summary = vec![
            row([
                "Profiles written per second",
                &format!(
                    "{:.0}/s (all {jobs} in {:.2} s)",
                    r.profiles_per_second(),
                    r.written_s()
                ),
                "",
                "",
            ]),
            row([
                &format!("All {jobs} finished in /metrics after"),
                &format!("{:.2} s", r.finished_s()),
                "",
                "",
            ]),
            row([
                "State store (jobs.db + WAL)",
                &format!(
                    "{:.2} MB ({:.0} bytes per job)",
                    r.store_bytes() / 1e6,
                    r.store_bytes() / f64::from(jobs)
                ),
                "",
                "",
            ]),
            row([
                "/metrics, median",
                &format!("{:.2} ms", r.scrape_median_ms()),
                &format!("<= {MAX_RETENTION_SCRAPE_MS} ms"),
                self.verdict(r.scrape_median_ms() <= MAX_RETENTION_SCRAPE_MS),
            ]),
            row([
                "/metrics, p99",
                &format!("{:.2} ms", r.scrape_p99_ms()),
                &format!("<= {MAX_RETENTION_SCRAPE_MS} ms"),
                self.verdict(r.scrape_p99_ms() <= MAX_RETENTION_SCRAPE_MS),
            ]),
            row([
                "/metrics body",
                &format!("{:.0} bytes", r.median_of(|round| round.body_bytes as f64)),
                "",
                "",
            ]),
            row([
                "Daemon VmRSS",
                &format!("{rss:.1} MB ({:.0} KiB)", r.rss_kib()),
                &format!("<= {MAX_RETENTION_RSS_MB} MB"),
                self.verdict(rss <= MAX_RETENTION_RSS_MB),
            ]),
            row([
                "Daemon VmHWM (peak RSS)",
                &format!("{:.1} MB", mb_f(r.median_of(|round| round.hwm_kib as f64))),
                "",
                "",
            ]),
            row([
                "/api/v1/jobs, median",
                &format!(
                    "{:.2} ms ({:.0} bytes, at least {api_jobs} jobs listed)",
                    r.api_median_ms(),
                    r.median_of(|round| round.api_bytes as f64)
                ),
                "",
                "",
            ]),
            row([
                "Daemon's last map sample took",
                &format!(
                    "{:.2} ms",
                    r.median_of(|round| round.sample_ms.unwrap_or(f64::NAN))
                ),
                "",
                "",
            ]),
            row([
                "Cgroups refused by the full counter map (most in a round)",
                &format!("{:.0}", most(|round| round.map_full)),
                "",
                "",
            ]),
        ];
        format!(
            "## 8. Finished jobs: profiles written, and /metrics with {jobs} in retention\n\n\
             Each round starts a fresh daemon (`--job.retention {JOB_RETENTION}`, `--bpf.max-cgroups {}`, an \
             empty `--state.dir` on the workspace's disk; it samples every 1 s), makes {jobs} job directories \
             under its root (no process in them), waits until all are running and one more sample was taken, then \
             removes them all back to back. Written after: from the first rmdir until \
             `monitor_state_profiles_written_total` reached {jobs}; finished after: until \
             `monitor_jobs{{state=\"finished\"}}` did; both read from /metrics every {} ms, each taken when the \
             GET that first showed it returned. A job ends at the first sample at least 50 ms (the grace for its final \
             read) after its rmdir, so written after includes waiting for that sample. Profiles/s = {jobs} / written \
             after. Commits: state store transactions that wrote them; last commit: \
             `monitor_state_commit_duration_seconds` then (fsync included). Events lost: cgroup events dropped \
             during the rmdirs for a full event ring (`monitor_bpf_lost_events_total{{reason=\"cgroup_event_ring_full\"}}`); \
             the daemon then finds the removed directories by walking the root at the next sample, and they \
             end a sample later. Slowest sample: the longest \
             `monitor_sample_duration_seconds` seen meanwhile (the sample that ends the jobs and hands their \
             profiles over). Store: jobs.db plus its WAL \
             afterwards. Then, {SETTLE_SAMPLES} samples later with all {jobs} finished jobs in /metrics, {} \
             back-to-back GETs of /metrics (median and p99 per round, then the median over rounds), VmRSS and \
             VmHWM from /proc/PID/status, and {API_GETS} GETs of `/api/v1/jobs` (which merges the retention with \
             the store). MB are 10^6 bytes.\n\n{}\n{}\n",
            r.max_cgroups,
            POLL.as_millis(),
            r.rounds.first().map_or(0, |round| round.scrape_ms.len()),
            table(
                &[
                    "Round",
                    "rmdirs (s)",
                    "Written after (s)",
                    "Profiles/s",
                    "Commits",
                    "Last commit (ms)",
                    "Events lost",
                    "Slowest sample (ms)",
                    "Finished after (s)",
                    "Store (MB)",
                    "/metrics p50 (ms)",
                    "/metrics p99 (ms)",
                    "RSS (MB)",
                    "API p50 (ms)",
                ],
                &rows
            ),
            table(&["Measure", "Value", "Goal", "Result"], &summary)
        )
    }

    /// The sections of the benchmarks that ran, keyed by their heading's
    /// number (`## 4.`).
    fn bench_sections(&self) -> Vec<(&'static str, String)> {
        [
            ("## 1.", self.cost_section()),
            ("## 2.", self.slowdown_section()),
            ("## 3.", self.scale_section()),
            ("## 4.", self.registrations_section()),
            ("## 5.", self.resource_cost_section()),
            ("## 6.", self.job_slowdown_section(self.io.as_ref())),
            ("## 7.", self.job_slowdown_section(self.network.as_ref())),
            ("## 8.", self.retention_section()),
        ]
        .into_iter()
        .filter(|(_, text)| !text.is_empty())
        .collect()
    }

    fn goals_table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .goals()
            .into_iter()
            .map(|g| row([&g.what, &g.measured, &g.target, self.verdict(g.pass)]))
            .collect();
        table(&GOALS_HEADER, &rows)
    }
}

const GOALS_HEADER: [&str; 4] = ["Goal", "Measured", "Target", "Result"];

/// Which benchmark a row of the goals table belongs to, by its first cell.
fn goal_bench(what: &str) -> Option<Benchmark> {
    // Before the /metrics and RSS rows of benchmark 3, which start alike.
    if what.ends_with("finished jobs") {
        Some(Benchmark::Retention)
    } else if what.starts_with("sched_switch") {
        Some(Benchmark::Cost)
    } else if what.starts_with("pipe ping-pong") {
        Some(Benchmark::Slowdown)
    } else if what.starts_with("/metrics") || what.starts_with("daemon RSS") {
        Some(Benchmark::Scale)
    } else if what.starts_with("registration") {
        Some(Benchmark::Registrations)
    } else if what == slowdown_goal(Kind::Io) {
        Some(Benchmark::Io)
    } else if what == slowdown_goal(Kind::Network) {
        Some(Benchmark::Network)
    } else {
        None
    }
}

/// The goal row of an IO- or network-heavy job's slowdown.
fn slowdown_goal(kind: Kind) -> &'static str {
    match kind {
        Kind::Io => "IO-heavy job slowdown (dd, 512-byte blocks)",
        Kind::Network => "network-heavy job slowdown (loopback TCP)",
    }
}

/// `existing` (the last RESULTS.md) with the sections and goals of the
/// benchmarks in `report` (a `--only` run) put in place of theirs; a
/// section not there yet goes before the goals.
pub fn merge(existing: &str, report: &Report) -> String {
    let Some(goals_at) = existing.find("\n## Goals") else {
        return report.markdown();
    };
    let ran: Vec<Benchmark> = report.goals().iter().map(|g| g.bench).collect();
    let stamp = format!(
        "_This section: `cargo xtask bench --only`, {}, {} rounds; the rest of the file is from an earlier run._\n\n",
        report.environment.date, report.rounds
    );
    let (body, goals) = existing.split_at(goals_at + 1);
    let mut sections = split_sections(body);
    for (key, text) in report.bench_sections() {
        let text = match text.split_once("\n\n") {
            Some((heading, rest)) => format!("{heading}\n\n{stamp}{rest}"),
            None => text,
        };
        match sections.iter_mut().find(|s| s.starts_with(key)) {
            Some(section) => *section = text,
            None => sections.push(text),
        }
    }
    // Old goal rows of the benchmarks that did not run, then the new ones.
    let mut rows: Vec<Vec<String>> = goals
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with(&format!("| {} |", GOALS_HEADER[0])))
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_string())
                .collect::<Vec<_>>()
        })
        .filter(|cells| goal_bench(&cells[0]).is_none_or(|b| !ran.contains(&b)))
        .collect();
    rows.extend(
        report
            .goals()
            .into_iter()
            .map(|g| row([&g.what, &g.measured, &g.target, report.verdict(g.pass)])),
    );
    let mut out = sections.concat();
    out += "## Goals\n\n";
    out += &table(&GOALS_HEADER, &rows);
    out
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
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::bench::{registrations::RegistrationRound, system::Environment};

    fn report() -> Report {
        let round = RegistrationRound {
            registrations: 5000,
            failures: 0,
            wall_s: 2.5,
            latency_ms: vec![1.0, 2.0, 50.0],
            solo_ms: vec![0.5, 0.6],
            paced_ms: vec![0.7, 0.9],
            paced_per_second: 999.0,
        };
        Report {
            environment: Environment {
                date: "2030-01-01 00:00 UTC".into(),
                kernel: "6.18".into(),
                cpu_model: "test".into(),
                cpus: 2,
                cgroup_mount: PathBuf::from("/sys/fs/cgroup"),
            },
            rounds: 1,
            trusted: false,
            foreign_switch_programs: vec![0, 0],
            cost: None,
            slowdown: None,
            scale: None,
            registrations: Some(RegistrationResult {
                launchers: 100,
                per_launcher: 50,
                rounds: vec![round],
                first_failure: None,
            }),
            resource_cost: None,
            io: None,
            network: None,
            retention: None,
        }
    }

    const EXISTING: &str = "# Benchmark results\n\nintro\n\n## Machine\n\nm\n\n## 3. /metrics\n\nscale\n\n## Goals\n\n\
| Goal | Measured | Target | Result |\n|---|---|---|---|\n\
| pipe ping-pong slowdown | +14.0% | <= 5% | MISS |\n\
| daemon RSS with 1000 jobs | 14.4 MB | <= 20 MB | PASS |\n";

    #[test]
    fn an_only_run_replaces_its_own_parts_and_keeps_the_rest() {
        let merged = merge(EXISTING, &report());
        assert!(merged.starts_with("# Benchmark results\n\nintro\n\n## Machine\n\nm\n\n## 3. /metrics\n\nscale\n\n## 4. Launcher registrations\n\n_This section"));
        assert!(merged.contains("| pipe ping-pong slowdown | +14.0% | <= 5% | MISS |"));
        assert!(merged.contains("| daemon RSS with 1000 jobs | 14.4 MB | <= 20 MB | PASS |"));
        assert!(merged.contains(
            "| registrations per second, 100 concurrent launchers | 2000/s | >= 1000/s |"
        ));
        // Again: replaced, not repeated.
        let again = merge(&merged, &report());
        assert_eq!(again.matches("## 4. Launcher registrations").count(), 1);
        assert_eq!(again.matches("| registrations per second").count(), 1);
        assert_eq!(again.matches("| registration latency p99").count(), 1);
        assert_eq!(again.matches("| pipe ping-pong slowdown").count(), 1);
    }

    #[test]
    fn job_slowdowns_have_their_own_sections_and_goals() {
        let slowdown = |kind, with: f64| JobSlowdownResult {
            kind,
            without_s: vec![1.0, 1.0],
            with_s: vec![with, with],
            repeats: 3,
            size: 200_000,
            cpus: (1, 1),
            credited: 3.0 * 102_400_000.0,
        };
        let mut partial = report();
        partial.registrations = None;
        partial.io = Some(slowdown(Kind::Io, 1.2));
        partial.network = Some(slowdown(Kind::Network, 1.01));
        let merged = merge(EXISTING, &partial);
        assert!(merged.contains("## 6. IO-heavy job slowdown\n\n_This section"));
        assert!(merged.contains("## 7. Network-heavy job slowdown\n\n_This section"));
        assert!(
            merged.contains("| IO-heavy job slowdown (dd, 512-byte blocks) | +20.0% | <= 5% |")
        );
        assert!(merged.contains("| network-heavy job slowdown (loopback TCP) | +1.0% | <= 5% |"));
        // The others' rows stay; a second run replaces its own.
        assert!(merged.contains("| pipe ping-pong slowdown | +14.0% | <= 5% | MISS |"));
        partial.network = None;
        let again = merge(&merged, &partial);
        assert_eq!(again.matches("| IO-heavy job slowdown").count(), 1);
        assert_eq!(again.matches("| network-heavy job slowdown").count(), 1);
        assert_eq!(again.matches("## 6. IO-heavy").count(), 1);
    }

    #[test]
    fn finished_job_goals_are_not_taken_for_the_scale_ones() {
        let round = RetentionRound {
            rmdir_s: 0.5,
            written_s: 2.0,
            finished_s: 2.5,
            commits: 3.0,
            last_commit_ms: 120.0,
            db_bytes: 30_000_000,
            wal_bytes: 1_000_000,
            scrape_ms: vec![100.0, 150.0],
            body_bytes: 8_000_000,
            rss_kib: 40_000,
            hwm_kib: 60_000,
            api_ms: vec![300.0],
            api_bytes: 20_000_000,
            api_jobs: 10_000,
            sample_ms: Some(30.0),
            burst_sample_ms: 300.0,
            map_full: 0.0,
            ring_full: 0.0,
        };
        let mut partial = report();
        partial.registrations = None;
        partial.retention = Some(RetentionResult {
            jobs: 10_000,
            max_cgroups: 32_768,
            rounds: vec![round],
        });
        let merged = merge(EXISTING, &partial);
        assert!(merged.contains("## 8. Finished jobs: profiles written, and /metrics with 10000 in retention\n\n_This section"));
        assert!(merged.contains("| Profiles written per second | 5000/s (all 10000 in 2.00 s) |"));
        assert!(
            merged.contains("| /metrics p99 with 10000 finished jobs | 150.00 ms | <= 200 ms |")
        );
        assert!(merged.contains("| daemon RSS with 10000 finished jobs | 41.0 MB | <= 50 MB |"));
        let again = merge(&merged, &partial);
        assert_eq!(
            again
                .matches("| daemon RSS with 10000 finished jobs")
                .count(),
            1
        );
        assert_eq!(
            again
                .matches("| daemon RSS with 1000 jobs | 14.4 MB")
                .count(),
            1
        );
        assert_eq!(again.matches("## 8. Finished jobs").count(), 1);
    }

    #[test]
    fn without_an_earlier_report_the_partial_one_is_written_whole() {
        let merged = merge("", &report());
        assert!(merged.contains("## 4. Launcher registrations"));
        assert!(merged.contains("## Goals"));
    }
}
