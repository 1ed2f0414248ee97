//! The report's figures and notes, computed from what a source gathered:
//! pure functions of their inputs (and of "now", for running jobs), so
//! every ratio and every note is unit-tested here.
//!
//! Here the types and the figures; the notes are in [`notes`].
mod notes;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub use self::notes::notes;

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

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Switches {
    pub voluntary: u64,
    pub involuntary: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Network {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
}

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
