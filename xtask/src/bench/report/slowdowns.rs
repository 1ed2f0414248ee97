//! Sections 2 to 6 and 11: how much slower the ping-pong, dd in a job, dd
//! outside any job, the page-fault-heavy job, the network-heavy job and the
//! process-churn job run under the daemon.
use super::{
    Outcome, Report, Section,
    goal::{Goal, Unit},
    markdown::{row, table},
};
use crate::bench::{
    job_slowdown::{JobSlowdownResult, Kind},
    pingpong,
    program_cost::Workload,
    slowdown::SlowdownResult,
    stats::{median, median_slowdown},
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
/// Processes forked and reaped in a job, as dd's calls: a program runs on
/// each fork and exit, so a little more than none.
const MAX_PROCESSES_SLOWDOWN: f64 = 0.02;

fn pingpong_goal(s: &SlowdownResult) -> Goal {
    Goal::at_most(
        "pipe ping-pong slowdown",
        s.slowdown(),
        MAX_PINGPONG_SLOWDOWN,
        Unit::Slowdown,
    )
}

/// A job's slowdown, not judged when the daemon's memory program did not
/// run on the job's faults.
fn job_goal(s: &JobSlowdownResult) -> Goal {
    let (name, max) = match s.kind {
        Kind::Io => (
            "IO-heavy job slowdown (dd, 512-byte blocks)",
            MAX_IO_SLOWDOWN,
        ),
        Kind::IoOutside => ("dd outside any job, slowdown", MAX_IO_OUTSIDE_SLOWDOWN),
        Kind::Faults => (
            "page-fault-heavy job slowdown (1 GiB in 4 KiB pages)",
            MAX_FAULTS_SLOWDOWN,
        ),
        Kind::Network => (
            "network-heavy job slowdown (loopback TCP)",
            MAX_NETWORK_SLOWDOWN,
        ),
        Kind::Processes => (
            "process-churn job slowdown (fork, exit, wait)",
            MAX_PROCESSES_SLOWDOWN,
        ),
    };
    Goal::at_most(name, s.slowdown(), max, Unit::Slowdown).invalid_if(
        s.rss_missed()
            .then_some("RSS not counted: rss_stat did not run"),
    )
}

impl Outcome for SlowdownResult {
    fn goals(&self) -> Vec<Goal> {
        vec![pingpong_goal(self)]
    }

    fn section(&self, report: &Report) -> Section {
        let s = self;
        let goal = pingpong_goal(s);
        let body = format!(
            "Two processes pinned to CPU {} pass one byte over two pipes (two context switches and \
             two wakeups per round trip), {} round trips timed after {} of warm-up, inside a job \
             cgroup. After each run with the daemon, the job's context switches it counted are checked \
             (at least one per round trip). Microseconds per round trip; slowdown = the median of \
             the rounds' with / without - 1 = {}; goal {}: **{}**.\n\n{}\n{}",
            s.cpu,
            s.round_trips,
            pingpong::WARMUP,
            goal.figure(),
            goal.target(),
            goal.verdict(report.trusted),
            rounds_table(&s.without_us, &s.with_us, "µs/rt", 3),
            programs_per_round_trip(report, s),
        );
        Section {
            title: "Pipe ping-pong slowdown".into(),
            body,
        }
    }
}

/// A cross-check from benchmark 1: what the daemon's programs ran per
/// round trip during its ping-pong window.
fn programs_per_round_trip(report: &Report, s: &SlowdownResult) -> String {
    let Some(cost) = &report.cost else {
        return String::new();
    };
    let (Some(window), Some((round_trips, _))) = (
        cost.workload(Workload::PingPong),
        cost.units(Workload::PingPong),
    ) else {
        return String::new();
    };
    let ns = window.event_ns / round_trips;
    format!(
        "Cross-check from benchmark 1: during its ping-pong the daemon's programs (the task \
             iterator's walks aside) ran {ns:.1} ns per round trip in all, {:.2}% of the median round \
             trip without the daemon (bpf_stats' clock reads included).\n\n",
        ns / 1000.0 / s.median_without() * 100.0
    )
}

impl Outcome for JobSlowdownResult {
    fn goals(&self) -> Vec<Goal> {
        vec![job_goal(self)]
    }

    fn section(&self, report: &Report) -> Section {
        let s = self;
        let goal = job_goal(s);
        let (title, how, check) = match s.kind {
            Kind::Io => (
                "IO-heavy job slowdown",
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
                format!(
                    "the job's bytes written are checked (last check: {:.0} for {} runs)",
                    s.credited, s.repeats
                ),
            ),
            Kind::IoOutside => (
                "dd outside any job",
                format!(
                    "The same dd (`bs=512 count={}`, pinned to CPU {}) run by a process outside any job: \
                     in the cgroup v2 root, where every program the daemon has on its path (rss_stat, the \
                     task lifecycle and network programs, the task iterator's visit) leaves at its \"not a \
                     job\" check. Time: dd's own figure for the copy.",
                    s.size, s.cpus.0
                ),
                "the daemon is checked to be sampling with no job running".to_string(),
            ),
            Kind::Faults => (
                "Page-fault-heavy job slowdown",
                format!(
                    "A new process in a job cgroup, pinned to CPU {}, maps {} MiB of anonymous memory \
                     (MADV_NOHUGEPAGE), writes one byte in each 4 KiB page ({} page faults, each changing \
                     the process's RSS counter: an rss_stat event) and unmaps it; a fresh process and \
                     mapping every run. Time: from mmap to the end of munmap.",
                    s.cpus.0,
                    s.size >> 20,
                    s.pages()
                ),
                format!(
                    "the job's page faults are checked (last check: {:.0} for {} runs) and its RSS peak \
                     is read: {}",
                    s.credited,
                    s.repeats,
                    s.rss_peak
                        .map_or_else(|| "unknown".into(), |b| format!("{b:.0} bytes"))
                ),
            ),
            Kind::Network => (
                "Network-heavy job slowdown",
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
                format!(
                    "the job's bytes sent are checked (last check: {:.0} for {} runs)",
                    s.credited, s.repeats
                ),
            ),
            Kind::Processes => (
                "Process-churn job slowdown",
                format!(
                    "A new process in a job cgroup, pinned to CPU {}, forks {} children one after \
                     another, each exiting at once, and reaps each before the next (the daemon's task \
                     lifecycle programs run on every fork and exit). Without the daemon the cgroup v2 \
                     hierarchy is remounted without `favordynmods`; with it, the daemon's remount is \
                     checked, so its memory barrier on each fork and exit is in the figure. Time: from \
                     the first fork to the last reap.",
                    s.cpus.0, s.size
                ),
                format!(
                    "the job's processes started are checked (last check: {:.0} for {} runs)",
                    s.credited, s.repeats
                ),
            ),
        };
        let mut out = format!(
            "{how} Each round runs it {} times without the daemon and {} times with it, the median of \
             each side being the round's figure. After each run with the daemon {check}. Seconds per \
             run; slowdown = {}; goal {}: **{}**.\n\n{}\n",
            s.repeats,
            s.repeats,
            goal.figure(),
            goal.target(),
            goal.verdict(report.trusted),
            rounds_table(&s.without_s, &s.with_s, "s", 4),
        );
        if s.kind == Kind::Faults {
            out += &per_fault(report, s);
        }
        Section {
            title: title.into(),
            body: out,
        }
    }
}

/// The page-fault job's figures per fault.
fn per_fault(report: &Report, s: &JobSlowdownResult) -> String {
    let pages = s.pages() as f64;
    let mut out = format!(
        "Per page fault: {:.0} ns without the daemon, {:.0} ns with it (medians); the daemon \
             adds {:+.1} ns per fault (the slowdown, a median of paired rounds, of the median run \
             without it). The process itself counted {} minor faults per run (getrusage, median).",
        s.median_without() * 1e9 / pages,
        s.median_with() * 1e9 / pages,
        s.extra_ns_per_fault(),
        s.faults_per_run
            .map_or_else(|| "an unknown number of".into(), |f| format!("{f:.0}")),
    );
    if let Some(cost) = &report.cost
        && let Some(window) = cost.workload(Workload::PageFaults)
        && let Some(rss) = window.cells.get("rss_stat")
        && let Some(ns) = rss.ns_per_run
    {
        out += &format!(
            " From benchmark 1: rss_stat {ns:.0} ns per run, {:.2} runs per page.",
            rss.runs_per_s * window.seconds / pages
        );
    }
    out += "\n\n";
    if s.rss_missed() {
        out += &format!(
            "**The daemon counted an RSS peak of {} for the job, which touched {} MiB: its memory \
                 program (rss_stat) did not run on the job's faults, so this slowdown leaves out the \
                 one program meant to be on the fault path.** The goal is not judged.\n\n",
            s.rss_peak
                .map_or_else(|| "nothing".into(), |b| format!("{b:.0} bytes")),
            s.size >> 20
        );
    }
    out
}

/// Rounds of a slowdown, then the medians.
fn rounds_table(without: &[f64], with: &[f64], unit: &str, decimals: usize) -> String {
    let mut rows: Vec<Vec<String>> = without
        .iter()
        .zip(with)
        .enumerate()
        .map(|(i, (without, with))| {
            row([
                &(i + 1).to_string(),
                &format!("{without:.decimals$}"),
                &format!("{with:.decimals$}"),
                &format!("{:+.1}%", (with / without - 1.0) * 100.0),
            ])
        })
        .collect();
    // Each column's own median; the difference is the median of the
    // rounds' differences (the slowdown), not the medians' ratio.
    let slowdown = median_slowdown(without, with);
    let (without, with) = (
        median(without).unwrap_or(f64::NAN),
        median(with).unwrap_or(f64::NAN),
    );
    rows.push(row([
        "**median**",
        &format!("**{without:.decimals$}**"),
        &format!("**{with:.decimals$}**"),
        &format!("**{:+.1}%**", slowdown * 100.0),
    ]));
    table(
        &[
            "Round",
            &format!("Without ({unit})"),
            &format!("With ({unit})"),
            "Difference",
        ],
        &rows,
    )
}
