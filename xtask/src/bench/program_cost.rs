//! Benchmark 1: what every program the daemon attached costs under each
//! workload: nanoseconds per run and runs per second, from bpf_stats, with
//! the empty floor program on sched_switch as a reference row.
//!
//! One daemon with `--bpf.stats` for the whole benchmark. A window is one
//! workload from start to end; the programs' counters are read from their
//! pins right before and after it (not through /metrics, which is only
//! refreshed once per sample), so each window covers exactly its workload.
use std::{
    collections::BTreeMap,
    thread,
    time::{Duration, Instant},
};

use super::{
    BenchArgs, Setup,
    bpf_stats::RunStats,
    cgroup::Root,
    daemon::Daemon,
    daemon_cost::ITERATORS,
    floor::{self, Floor},
    job_workloads::{self, MemoryLimit},
    lifecycle, page_faults, pingpong,
    pinned::{self, PinnedPrograms},
    stats::median,
};

const JOB: &str = "cost-job";
const OOM_JOB: &str = "cost-oom";
/// The idle window: nothing runs but the node's own background and the
/// daemon's samples.
pub const IDLE: Duration = Duration::from_secs(5);
/// The job's counters after the last window, shown as proof that the
/// programs took the job path.
const JOB_COUNTERS: [(&str, &str); 8] = [
    ("context switches", "monitor_job_context_switches_total"),
    ("processes started", "monitor_job_processes_started_total"),
    ("execs", "monitor_job_execs_total"),
    ("page faults", "monitor_job_page_faults_total"),
    ("RSS peak bytes", "monitor_job_memory_rss_peak_bytes"),
    ("write bytes", "monitor_job_io_write_bytes_total"),
    ("network bytes", "monitor_job_network_bytes_total"),
    ("OOM kills", "monitor_job_oom_kills_total"),
];

/// The workloads, in the order they run in each round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    Idle,
    PingPong,
    DdInJob,
    DdOutside,
    PageFaults,
    Network,
    Processes,
}

impl Workload {
    pub const ALL: [Self; 7] = [
        Self::Idle,
        Self::PingPong,
        Self::DdInJob,
        Self::DdOutside,
        Self::PageFaults,
        Self::Network,
        Self::Processes,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::PingPong => "ping-pong",
            Self::DdInJob => "dd in a job",
            Self::DdOutside => "dd outside jobs",
            Self::PageFaults => "page faults",
            Self::Network => "network",
            Self::Processes => "processes",
        }
    }
}

/// One program under one workload: medians over the rounds' windows.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cell {
    /// `None` when it never ran in a window.
    pub ns_per_run: Option<f64>,
    pub runs_per_s: f64,
}

#[derive(Debug)]
pub struct WorkloadCost {
    pub workload: Workload,
    /// Median window length.
    pub seconds: f64,
    /// By program; the floor under [`floor::PROGRAM`].
    pub cells: BTreeMap<String, Cell>,
    /// Every daemon program's run time per second of the window, summed
    /// per window, then the median (ns of one CPU per second).
    pub all_ns_per_s: f64,
    /// The daemon programs' run time per window but the task iterator's
    /// (summed), the median, ns: what the workload's own events cost. The
    /// iterator runs at samples, whatever the workload, and a window may
    /// hold a walk or not.
    pub event_ns: f64,
}

#[derive(Debug)]
pub struct CostResult {
    /// The daemon's attached programs (from its pinned links), sorted.
    pub attached: Vec<String>,
    /// Programs in the object the daemon did not attach (the bench's floors aside).
    pub not_attached: Vec<String>,
    pub workloads: Vec<WorkloadCost>,
    /// The job's counters after the last window.
    pub job_counters: Vec<(String, f64)>,
    /// Why no OOM kill was part of the windows, if none was.
    pub no_oom: Option<String>,
    pub round_trips: u32,
    pub io_blocks: u32,
    pub net_bytes: u64,
    pub cpu: usize,
}

impl CostResult {
    pub fn workload(&self, workload: Workload) -> Option<&WorkloadCost> {
        self.workloads.iter().find(|w| w.workload == workload)
    }

    /// Units of work per window of a workload, and their name, for the
    /// programs' time per unit.
    pub fn units(&self, workload: Workload) -> Option<(f64, &'static str)> {
        match workload {
            Workload::Idle => None,
            Workload::PingPong => {
                Some((f64::from(self.round_trips + pingpong::WARMUP), "round trip"))
            }
            Workload::DdInJob | Workload::DdOutside => {
                Some((f64::from(self.io_blocks), "512-byte block"))
            }
            Workload::PageFaults => Some((page_faults::pages(page_faults::BYTES) as f64, "page")),
            Workload::Network => Some((self.net_bytes as f64 / 1e6, "MB sent")),
            Workload::Processes => Some((f64::from(lifecycle::EXECS), "process started")),
        }
    }
}

pub fn run(setup: &Setup, args: &BenchArgs) -> anyhow::Result<CostResult> {
    let root = Root::create(&setup.cgroup_mount, "cost")?;
    let mut daemon = Daemon::start(setup, root.path(), true, "cost")?;
    let floor = Floor::attach(&setup.object)?;
    let job = root.make_job(JOB)?;
    let oom_job = root.make_job(OOM_JOB)?;
    let limit = MemoryLimit::apply(&oom_job, lifecycle::OOM_LIMIT)?;
    let no_oom = limit.as_ref().err().cloned();
    let scratch = job_workloads::scratch_dir()?;
    let cpu = pingpong::default_cpu();
    let programs = daemon.programs()?;
    daemon.next_samples(1, &[])?;

    let run_workload = |workload: Workload| -> anyhow::Result<()> {
        match workload {
            Workload::Idle => thread::sleep(IDLE),
            Workload::PingPong => {
                pingpong::run(&job, cpu, args.round_trips)?;
            }
            Workload::DdInJob => {
                job_workloads::dd_small_blocks(&job, cpu, &scratch, args.io_blocks)?;
            }
            Workload::DdOutside => {
                job_workloads::dd_small_blocks(&setup.cgroup_mount, cpu, &scratch, args.io_blocks)?;
            }
            Workload::PageFaults => {
                page_faults::touch_fresh(&job, cpu, page_faults::BYTES)?;
            }
            Workload::Network => {
                job_workloads::loopback_tcp(&job, args.net_bytes, job_workloads::tcp_cpus())?;
            }
            Workload::Processes => lifecycle::run(&job, &oom_job, limit.as_ref().ok())?,
        }
        Ok(())
    };

    let mut windows: Vec<(Workload, Window)> = Vec::new();
    for round in 1..=args.rounds {
        let mut brief = Vec::new();
        for workload in Workload::ALL {
            let before = Snapshot::take(&floor, &programs)?;
            run_workload(workload)?;
            let window = Snapshot::take(&floor, &programs)?.since(&before);
            brief.push(format!(
                "{} {:.1} µs/s",
                workload.label(),
                window.all_ns() / window.seconds / 1000.0
            ));
            windows.push((workload, window));
        }
        eprintln!(
            "xtask:   round {round}: all programs' run time per second: {}",
            brief.join(", ")
        );
    }

    let series: Vec<&str> = JOB_COUNTERS.iter().map(|(_, series)| *series).collect();
    let metrics = daemon.next_samples(1, &series)?;
    let mut job_counters: Vec<(String, f64)> = JOB_COUNTERS
        .iter()
        .map(|(what, series)| {
            let job = if *what == "OOM kills" { OOM_JOB } else { JOB };
            let value = metrics.sum(series, &[("jobid", job)]);
            (what.to_string(), value)
        })
        .collect();
    job_counters.retain(|(what, _)| limit.is_ok() || what != "OOM kills");
    let attached = programs.attached().to_vec();
    let not_attached = floor
        .object_programs()
        .into_iter()
        .filter(|name| !name.starts_with("bench_") && !attached.contains(name))
        .collect();
    drop(limit);
    Ok(CostResult {
        workloads: summarize(&attached, &windows),
        attached,
        not_attached,
        job_counters,
        no_oom,
        round_trips: args.round_trips,
        io_blocks: args.io_blocks,
        net_bytes: args.net_bytes,
        cpu,
    })
}

/// Counters of the floor and of every attached program at one moment.
struct Snapshot {
    at: Instant,
    floor: RunStats,
    programs: BTreeMap<String, RunStats>,
}

impl Snapshot {
    fn take(floor: &Floor, programs: &PinnedPrograms) -> anyhow::Result<Self> {
        Ok(Self {
            programs: programs.stats()?,
            floor: floor.stats()?,
            at: Instant::now(),
        })
    }

    fn since(&self, earlier: &Self) -> Window {
        Window {
            seconds: self.at.duration_since(earlier.at).as_secs_f64(),
            floor: self.floor.since(earlier.floor),
            programs: pinned::since(&self.programs, &earlier.programs),
        }
    }
}

/// What ran during one workload.
struct Window {
    seconds: f64,
    floor: RunStats,
    programs: BTreeMap<String, RunStats>,
}

impl Window {
    /// Every daemon program's run time, ns.
    fn all_ns(&self) -> f64 {
        self.programs.values().map(|s| s.run_time_ns).sum()
    }

    /// Every daemon program's run time but the iterators', ns.
    fn event_ns(&self) -> f64 {
        self.programs
            .iter()
            .filter(|(name, _)| !ITERATORS.contains(&name.as_str()))
            .map(|(_, s)| s.run_time_ns)
            .sum()
    }

    fn stats(&self, program: &str) -> Option<RunStats> {
        if program == floor::PROGRAM {
            Some(self.floor)
        } else {
            self.programs.get(program).copied()
        }
    }
}

fn summarize(attached: &[String], windows: &[(Workload, Window)]) -> Vec<WorkloadCost> {
    Workload::ALL
        .iter()
        .map(|&workload| {
            let of: Vec<&Window> = windows
                .iter()
                .filter(|(w, _)| *w == workload)
                .map(|(_, window)| window)
                .collect();
            let names = std::iter::once(floor::PROGRAM).chain(attached.iter().map(String::as_str));
            let cells = names
                .map(|name| {
                    let figures = |f: &dyn Fn(&Window, RunStats) -> Option<f64>| {
                        let values: Vec<f64> =
                            of.iter().filter_map(|w| f(w, w.stats(name)?)).collect();
                        median(&values)
                    };
                    let cell = Cell {
                        ns_per_run: figures(&|_, s| s.ns_per_run()),
                        runs_per_s: figures(&|w, s| Some(s.run_count / w.seconds)).unwrap_or(0.0),
                    };
                    (name.to_string(), cell)
                })
                .collect();
            let per_window = |f: &dyn Fn(&Window) -> f64| {
                median(&of.iter().map(|w| f(w)).collect::<Vec<_>>()).unwrap_or(f64::NAN)
            };
            WorkloadCost {
                workload,
                seconds: per_window(&|w| w.seconds),
                cells,
                all_ns_per_s: per_window(&|w| w.all_ns() / w.seconds),
                event_ns: per_window(&Window::event_ns),
            }
        })
        .collect()
}
