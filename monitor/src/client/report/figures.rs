//! The report's figures and notes, computed from what a source gathered:
//! pure functions of their inputs (and of "now", for running jobs), so
//! every ratio and every note is unit-tested here.
use serde::{Deserialize, Serialize};

use crate::profile::{Network, Switches};

/// CPU efficiency under this is flagged (Princeton's jobstats flags 20%).
pub const LOW_EFFICIENCY: f64 = 0.25;
/// A memory peak over this share of the limit is flagged.
pub const MEMORY_NEAR_LIMIT: f64 = 0.90;
/// Run-queue wait over this share of the CPU time is flagged.
pub const HIGH_WAIT_SHARE: f64 = 0.20;
/// A job shorter than this is not judged on its efficiency: its counts are
/// exact, but its end is known only to a sample interval (1 s by default),
/// which is most of a short job's elapsed time.
pub const SHORT_JOB_SECONDS: f64 = 10.0;

/// What the kernel counted for a job on one node (or summed over nodes):
/// the figures of the job API, under the same names.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    pub cpu_seconds: f64,
    pub runqueue_wait_seconds: f64,
    pub context_switches: Switches,
    pub processes_started: u64,
    pub threads_started: u64,
    pub execs: u64,
    pub processes_exited: u64,
    /// Threads in the job's cgroups now.
    pub tasks: u64,
    pub memory_rss_bytes: u64,
    pub memory_rss_peak_bytes: u64,
    pub page_faults: u64,
    pub oom_kills: u64,
    pub io_read_bytes: u64,
    pub io_write_bytes: u64,
    pub io_read_calls: u64,
    pub io_write_calls: u64,
    pub block_read_bytes: u64,
    pub block_write_bytes: u64,
    pub network: Network,
}

impl Counts {
    /// Adds another node's counts. Memory figures add up too: the sum of
    /// the nodes' peaks (as the job dashboard shows it), not a peak of the
    /// sum, which no node saw.
    fn add(&mut self, other: &Counts) {
        self.cpu_seconds += other.cpu_seconds;
        self.runqueue_wait_seconds += other.runqueue_wait_seconds;
        self.context_switches.voluntary += other.context_switches.voluntary;
        self.context_switches.involuntary += other.context_switches.involuntary;
        self.processes_started += other.processes_started;
        self.threads_started += other.threads_started;
        self.execs += other.execs;
        self.processes_exited += other.processes_exited;
        self.tasks += other.tasks;
        self.memory_rss_bytes += other.memory_rss_bytes;
        self.memory_rss_peak_bytes += other.memory_rss_peak_bytes;
        self.page_faults += other.page_faults;
        self.oom_kills += other.oom_kills;
        self.io_read_bytes += other.io_read_bytes;
        self.io_write_bytes += other.io_write_bytes;
        self.io_read_calls += other.io_read_calls;
        self.io_write_calls += other.io_write_calls;
        self.block_read_bytes += other.block_read_bytes;
        self.block_write_bytes += other.block_write_bytes;
        self.network.rx_bytes += other.network.rx_bytes;
        self.network.tx_bytes += other.network.tx_bytes;
        self.network.rx_packets += other.network.rx_packets;
        self.network.tx_packets += other.network.tx_packets;
    }
}

/// Where a CPU count comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CpusFrom {
    /// The job's cpuset: what it was given.
    Cpuset,
    /// The node's online CPUs: the job had no cpuset, so it could use them all.
    Node,
}

/// Where a memory size to compare the peak with comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryFrom {
    /// The job's memory limit.
    Limit,
    /// The node's MemTotal: the job had no limit.
    NodeMemTotal,
}

/// One node's share of a job, as a source found it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeInput {
    /// The node: Prometheus' `instance`, or this host's name.
    pub node: String,
    pub start_time: f64,
    /// None while the job runs there.
    pub end_time: Option<f64>,
    pub cpus: Option<(u64, CpusFrom)>,
    pub memory: Option<(u64, MemoryFrom)>,
    pub counts: Counts,
}

/// One job (one user's job id, one run) over its nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct JobInput {
    pub jobid: String,
    pub user: String,
    pub name: String,
    /// Where the figures come from, for the reader.
    pub source: String,
    pub nodes: Vec<NodeInput>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Running,
    Finished,
}

/// A node's row of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    pub node: String,
    pub state: State,
    pub start_time: f64,
    pub end_time: Option<f64>,
    pub elapsed_seconds: f64,
    pub cpus_allocated: Option<u64>,
    pub cpus_from: Option<CpusFrom>,
    /// CPU time over elapsed time x CPUs.
    pub cpu_efficiency: Option<f64>,
    /// Run-queue wait over CPU time.
    pub runqueue_wait_share: Option<f64>,
    pub memory_limit_bytes: Option<u64>,
    pub memory_limit_from: Option<MemoryFrom>,
    /// RSS peak over the memory limit (or MemTotal).
    pub memory_peak_ratio: Option<f64>,
    #[serde(flatten)]
    pub counts: Counts,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Something to act on.
    Warning,
    /// How to read a figure.
    Info,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoteKind {
    OomKilled,
    MemoryNearLimit,
    LowEfficiency,
    RunqueueWait,
    ShortJob,
    CpusFromNode,
    CpusUnknown,
    MemoryFromNode,
}

/// A plain-language note on the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Note {
    pub kind: NoteKind,
    pub severity: Severity,
    pub text: String,
}

/// The whole report of one job: the figures summed over its nodes, each
/// node's row, and the notes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub jobid: String,
    pub user: String,
    pub name: String,
    pub source: String,
    /// Running while it runs on any node.
    pub state: State,
    /// The earliest start over the nodes.
    pub start_time: f64,
    /// The latest end, once finished everywhere.
    pub end_time: Option<f64>,
    pub elapsed_seconds: f64,
    /// CPUs over the nodes where the count is known.
    pub cpus_allocated: Option<u64>,
    /// CPU time over the nodes' CPUs x elapsed time, over the nodes where
    /// the CPU count is known.
    pub cpu_efficiency: Option<f64>,
    pub runqueue_wait_share: Option<f64>,
    /// The node whose memory peak is closest to its limit, and how close.
    pub memory_peak_node: Option<String>,
    pub memory_peak_ratio: Option<f64>,
    /// The memory figures here are the sums of the nodes' (see [`Counts::add`]).
    #[serde(flatten)]
    pub totals: Counts,
    pub nodes: Vec<NodeReport>,
    pub notes: Vec<Note>,
}

/// `a / b`, None when `b` is not positive (nothing to compare with).
fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

fn node_report(input: &NodeInput, now: f64) -> NodeReport {
    let end = input.end_time.unwrap_or(now);
    let elapsed = (end - input.start_time).max(0.0);
    let counts = input.counts.clone();
    NodeReport {
        node: input.node.clone(),
        state: if input.end_time.is_some() {
            State::Finished
        } else {
            State::Running
        },
        start_time: input.start_time,
        end_time: input.end_time,
        elapsed_seconds: elapsed,
        cpus_allocated: input.cpus.map(|(n, _)| n),
        cpus_from: input.cpus.map(|(_, from)| from),
        cpu_efficiency: input
            .cpus
            .and_then(|(n, _)| ratio(counts.cpu_seconds, elapsed * n as f64)),
        runqueue_wait_share: ratio(counts.runqueue_wait_seconds, counts.cpu_seconds),
        memory_limit_bytes: input.memory.map(|(b, _)| b),
        memory_limit_from: input.memory.map(|(_, from)| from),
        memory_peak_ratio: input
            .memory
            .and_then(|(b, _)| ratio(counts.memory_rss_peak_bytes as f64, b as f64)),
        counts,
    }
}

/// The report of `job` at Unix time `now` (the end of a running job).
pub fn report(job: &JobInput, now: f64) -> Report {
    let nodes: Vec<NodeReport> = job.nodes.iter().map(|n| node_report(n, now)).collect();
    let mut totals = Counts::default();
    for node in &nodes {
        totals.add(&node.counts);
    }
    let running = nodes.iter().any(|n| n.state == State::Running);
    let start = nodes
        .iter()
        .map(|n| n.start_time)
        .min_by(f64::total_cmp)
        .unwrap_or(now);
    let end = nodes
        .iter()
        .map(|n| n.end_time.unwrap_or(now))
        .max_by(f64::total_cmp)
        .unwrap_or(now);
    let with_cpus: Vec<&NodeReport> = nodes
        .iter()
        .filter(|n| n.cpus_allocated.is_some())
        .collect();
    let cpus_allocated =
        (!with_cpus.is_empty()).then(|| with_cpus.iter().filter_map(|n| n.cpus_allocated).sum());
    let cpu_efficiency = if with_cpus.is_empty() {
        None
    } else {
        let used: f64 = with_cpus.iter().map(|n| n.counts.cpu_seconds).sum();
        let given: f64 = with_cpus
            .iter()
            .map(|n| n.elapsed_seconds * n.cpus_allocated.unwrap_or(0) as f64)
            .sum();
        ratio(used, given)
    };
    let worst_memory = nodes
        .iter()
        .filter_map(|n| n.memory_peak_ratio.map(|r| (n, r)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let mut report = Report {
        jobid: job.jobid.clone(),
        user: job.user.clone(),
        name: job.name.clone(),
        source: job.source.clone(),
        state: if running {
            State::Running
        } else {
            State::Finished
        },
        start_time: start,
        end_time: (!running).then_some(end),
        elapsed_seconds: (end - start).max(0.0),
        cpus_allocated,
        cpu_efficiency,
        runqueue_wait_share: ratio(totals.runqueue_wait_seconds, totals.cpu_seconds),
        memory_peak_node: worst_memory.map(|(n, _)| n.node.clone()),
        memory_peak_ratio: worst_memory.map(|(_, r)| r),
        totals,
        nodes,
        notes: Vec::new(),
    };
    report.notes = notes(&report);
    report
}

/// "on node X" when the job ran on more than one node.
fn on_node(report: &Report, node: &str) -> String {
    if report.nodes.len() > 1 {
        format!(" on {node}")
    } else {
        String::new()
    }
}

/// The plain-language notes: what is off first (warnings), then how to
/// read figures that stand on a fallback.
pub fn notes(report: &Report) -> Vec<Note> {
    let mut notes = Vec::new();
    let mut note = |kind, severity, text: String| {
        notes.push(Note {
            kind,
            severity,
            text,
        })
    };
    let kills = report.totals.oom_kills;
    if kills > 0 {
        let nodes: Vec<&str> = report
            .nodes
            .iter()
            .filter(|n| n.counts.oom_kills > 0)
            .map(|n| n.node.as_str())
            .collect();
        let place = if report.nodes.len() > 1 {
            format!(" on {}", nodes.join(", "))
        } else {
            String::new()
        };
        let tasks = if kills == 1 { "task" } else { "tasks" };
        note(
            NoteKind::OomKilled,
            Severity::Warning,
            format!(
                "the OOM killer killed {kills} {tasks} of the job{place}: it ran out of memory. \
                 Ask for more memory, or make it use less."
            ),
        );
    }
    if let (Some(ratio), Some(node)) = (report.memory_peak_ratio, &report.memory_peak_node)
        && ratio > MEMORY_NEAR_LIMIT
        && let Some(row) = report.nodes.iter().find(|n| &n.node == node)
    {
        let of = match row.memory_limit_from {
            Some(MemoryFrom::NodeMemTotal) => "the node's memory",
            _ => "its memory limit",
        };
        note(
            NoteKind::MemoryNearLimit,
            Severity::Warning,
            format!(
                "the memory peak reached {:.1}% of {of}{}: one larger input and it is killed. \
                 Ask for more memory to be safe.",
                ratio * 100.0,
                on_node(report, node)
            ),
        );
    }
    let short = report.elapsed_seconds < SHORT_JOB_SECONDS;
    if let (Some(efficiency), Some(cpus)) = (report.cpu_efficiency, report.cpus_allocated)
        && efficiency < LOW_EFFICIENCY
        && !short
    {
        let busy = efficiency * cpus as f64;
        note(
            NoteKind::LowEfficiency,
            Severity::Warning,
            format!(
                "CPU efficiency is {:.1}%: the job kept {busy:.2} of its {cpus} CPUs busy on average. \
                 Ask for fewer CPUs, or check that the program really runs in parallel \
                 (threads, MPI ranks).",
                efficiency * 100.0
            ),
        );
    }
    if let Some(share) = report.runqueue_wait_share
        && share > HIGH_WAIT_SHARE
    {
        note(
            NoteKind::RunqueueWait,
            Severity::Warning,
            format!(
                "your job waited {:.1}% of its CPU time for a CPU: it ran more threads than cores. \
                 Start as many threads or ranks as CPUs allocated (OMP_NUM_THREADS, ranks per node).",
                share * 100.0
            ),
        );
    }
    if short {
        note(
            NoteKind::ShortJob,
            Severity::Info,
            format!(
                "the job ran for {:.2} s. Its figures are exact all the same (the kernel counts from its \
                 first instruction), but its end is known only to a sample interval, so its \
                 efficiency is not judged.",
                report.elapsed_seconds
            ),
        );
    }
    let by_node: Vec<&str> = report
        .nodes
        .iter()
        .filter(|n| n.cpus_from == Some(CpusFrom::Node))
        .map(|n| n.node.as_str())
        .collect();
    if !by_node.is_empty() {
        let cpus: Vec<String> = report
            .nodes
            .iter()
            .filter(|n| n.cpus_from == Some(CpusFrom::Node))
            .filter_map(|n| n.cpus_allocated.map(|c| c.to_string()))
            .collect();
        note(
            NoteKind::CpusFromNode,
            Severity::Info,
            format!(
                "the job has no cpuset, so what it was given is not known: its efficiency is against \
                 all {} CPUs of the node.",
                cpus.join(" + ")
            ),
        );
    }
    let unknown: Vec<&str> = report
        .nodes
        .iter()
        .filter(|n| n.cpus_allocated.is_none())
        .map(|n| n.node.as_str())
        .collect();
    if !unknown.is_empty() {
        let which = if unknown.len() == report.nodes.len() {
            "its nodes report".to_string()
        } else {
            format!("{} report", unknown.join(", "))
        };
        note(
            NoteKind::CpusUnknown,
            Severity::Info,
            format!(
                "{which} no CPUs allocated (the job has no cpuset there): efficiency is computed \
                 only where they are known."
            ),
        );
    }
    if report
        .nodes
        .iter()
        .any(|n| n.memory_limit_from == Some(MemoryFrom::NodeMemTotal))
    {
        note(
            NoteKind::MemoryFromNode,
            Severity::Info,
            "the job has no memory limit: its memory peak is compared with the node's memory (MemTotal)."
                .to_string(),
        );
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cpu: f64, start: f64, end: Option<f64>) -> NodeInput {
        NodeInput {
            node: name.into(),
            start_time: start,
            end_time: end,
            cpus: Some((4, CpusFrom::Cpuset)),
            memory: Some((1 << 30, MemoryFrom::Limit)),
            counts: Counts {
                cpu_seconds: cpu,
                memory_rss_peak_bytes: 100 << 20,
                ..Default::default()
            },
        }
    }

    fn job(nodes: Vec<NodeInput>) -> JobInput {
        JobInput {
            jobid: "42".into(),
            user: "alice".into(),
            name: "lammps".into(),
            source: "test".into(),
            nodes,
        }
    }

    fn kinds(report: &Report) -> Vec<NoteKind> {
        report.notes.iter().map(|n| n.kind).collect()
    }

    #[test]
    fn efficiency_is_cpu_time_over_elapsed_times_cpus() {
        // 4 CPUs for 100 s, 300 CPU seconds used: 75%.
        let report = report(&job(vec![node("n1", 300.0, 1000.0, Some(1100.0))]), 5000.0);
        assert_eq!(report.state, State::Finished);
        assert_eq!(report.elapsed_seconds, 100.0);
        assert_eq!(report.cpus_allocated, Some(4));
        assert_eq!(report.cpu_efficiency, Some(0.75));
        assert_eq!(report.nodes[0].cpu_efficiency, Some(0.75));
        assert_eq!(report.end_time, Some(1100.0));
        assert!(report.notes.is_empty(), "{:?}", report.notes);
    }

    #[test]
    fn several_nodes_sum_and_weigh_each_node_by_its_own_time() {
        // n1: 4 CPUs x 100 s, 200 s used; n2: 4 CPUs x 50 s, 200 s used.
        let nodes = vec![
            node("n1", 200.0, 1000.0, Some(1100.0)),
            node("n2", 200.0, 1020.0, Some(1070.0)),
        ];
        let report = report(&job(nodes), 5000.0);
        assert_eq!(report.totals.cpu_seconds, 400.0);
        assert_eq!(report.cpus_allocated, Some(8));
        assert_eq!(report.cpu_efficiency, Some(400.0 / 600.0));
        assert_eq!(report.nodes[1].cpu_efficiency, Some(1.0));
        assert_eq!((report.start_time, report.elapsed_seconds), (1000.0, 100.0));
        assert_eq!(report.totals.memory_rss_peak_bytes, 200 << 20);
    }

    #[test]
    fn a_running_node_makes_the_job_running_until_now() {
        let nodes = vec![
            node("n1", 10.0, 1000.0, Some(1100.0)),
            node("n2", 10.0, 1000.0, None),
        ];
        let report = report(&job(nodes), 1200.0);
        assert_eq!(report.state, State::Running);
        assert_eq!(report.end_time, None);
        assert_eq!(report.elapsed_seconds, 200.0);
        assert_eq!(report.nodes[1].state, State::Running);
        assert_eq!(report.nodes[1].elapsed_seconds, 200.0);
    }

    #[test]
    fn low_efficiency_is_flagged_but_not_for_a_short_job() {
        let idle = report(&job(vec![node("n1", 40.0, 0.0, Some(100.0))]), 100.0);
        assert_eq!(idle.cpu_efficiency, Some(0.1));
        assert_eq!(kinds(&idle), vec![NoteKind::LowEfficiency]);
        assert!(idle.notes[0].text.contains("10.0%"), "{:?}", idle.notes);
        assert!(idle.notes[0].text.contains("0.40 of its 4 CPUs"));
        // 5 ms of CPU in a job whose end came at the next sample.
        let short = report(&job(vec![node("n1", 0.005, 0.0, Some(0.3))]), 1.0);
        assert_eq!(kinds(&short), vec![NoteKind::ShortJob]);
        assert!(short.notes[0].text.contains("exact"));
    }

    #[test]
    fn memory_near_its_limit_and_oom_kills_are_flagged_per_node() {
        let mut n2 = node("n2", 300.0, 0.0, Some(100.0));
        n2.counts.memory_rss_peak_bytes = 980 << 20;
        n2.counts.oom_kills = 1;
        let report = report(&job(vec![node("n1", 300.0, 0.0, Some(100.0)), n2]), 100.0);
        assert_eq!(report.memory_peak_node.as_deref(), Some("n2"));
        assert_eq!(report.memory_peak_ratio, Some(980.0 / 1024.0));
        assert_eq!(
            kinds(&report),
            vec![NoteKind::OomKilled, NoteKind::MemoryNearLimit]
        );
        assert!(
            report.notes[0]
                .text
                .contains("killed 1 task of the job on n2")
        );
        assert!(
            report.notes[1]
                .text
                .contains("95.7% of its memory limit on n2")
        );
    }

    #[test]
    fn run_queue_wait_share_is_wait_over_cpu_time() {
        let mut n1 = node("n1", 300.0, 0.0, Some(100.0));
        n1.counts.runqueue_wait_seconds = 150.0;
        let report = report(&job(vec![n1]), 100.0);
        assert_eq!(report.runqueue_wait_share, Some(0.5));
        assert_eq!(kinds(&report), vec![NoteKind::RunqueueWait]);
        assert!(report.notes[0].text.starts_with(
            "your job waited 50.0% of its CPU time for a CPU: it ran more threads than cores"
        ));
    }

    #[test]
    fn fallbacks_are_said_and_unknowns_left_out() {
        let mut n1 = node("n1", 100.0, 0.0, Some(100.0));
        n1.cpus = Some((2, CpusFrom::Node));
        n1.memory = Some((8 << 30, MemoryFrom::NodeMemTotal));
        let report = report(&job(vec![n1]), 100.0);
        assert_eq!(report.cpu_efficiency, Some(0.5));
        assert_eq!(
            kinds(&report),
            vec![NoteKind::CpusFromNode, NoteKind::MemoryFromNode]
        );
        assert!(report.notes[0].text.contains("all 2 CPUs of the node"));

        let mut n2 = node("n2", 100.0, 0.0, Some(100.0));
        n2.cpus = None;
        n2.memory = None;
        let report = super::report(&job(vec![node("n1", 100.0, 0.0, Some(100.0)), n2]), 100.0);
        // Only n1's CPU over n1's CPUs.
        assert_eq!(report.cpu_efficiency, Some(0.25));
        assert_eq!(report.cpus_allocated, Some(4));
        assert_eq!(report.nodes[1].memory_peak_ratio, None);
        assert_eq!(kinds(&report), vec![NoteKind::CpusUnknown]);
        assert!(report.notes[0].text.starts_with("n2 report no CPUs"));
    }

    #[test]
    fn nothing_to_divide_by_gives_no_ratio() {
        let mut n1 = node("n1", 0.0, 100.0, Some(100.0));
        n1.cpus = Some((0, CpusFrom::Cpuset));
        let report = report(&job(vec![n1]), 100.0);
        assert_eq!(report.cpu_efficiency, None);
        assert_eq!(report.runqueue_wait_share, None);
        let empty = super::report(&job(Vec::new()), 100.0);
        assert_eq!((empty.elapsed_seconds, empty.cpu_efficiency), (0.0, None));
    }
}
