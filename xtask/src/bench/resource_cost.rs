//! Benchmark 5: nanoseconds per run of the memory, IO and network
//! programs, from bpf_stats, with a workload in a job that makes each of
//! them run on its job path, next to the empty floor program on
//! sched_switch in the same windows (as benchmark 1 does for the others).
use std::collections::BTreeMap;

use anyhow::bail;

use super::{
    BenchArgs, Setup,
    bpf_stats::RunStats,
    cgroup::Root,
    daemon::Daemon,
    floor::Floor,
    job_workloads::{self, MemoryLimit},
    metrics, pingpong,
    program_cost::ProgramCost,
    stats::median,
};

const JOB: &str = "resources-job";
/// The programs this benchmark is about, in table order.
pub const PROGRAMS: [&str; 9] = [
    "rss_stat",
    "page_fault_user",
    "oom_mark_victim",
    "block_bio_queue",
    "sys_exit_read_family",
    "sys_exit_write_family",
    "sys_exit_copy_family",
    "net_ingress",
    "net_egress",
];
/// Per window: memory touched, dd blocks, direct IO and copies, TCP bytes.
pub const TOUCH_MIB: usize = 256;
pub const DD_BLOCKS: u32 = 100_000;
pub const DIRECT_MIB: usize = 16;
pub const TCP_BYTES: u64 = 100_000_000;
/// The memory limit of the OOM-killed process.
const OOM_LIMIT: u64 = 32 << 20;
/// The job's own counters, shown as proof that the job path ran.
const JOB_COUNTERS: [(&str, &str); 7] = [
    ("page faults", "monitor_job_page_faults_total"),
    ("OOM kills", "monitor_job_oom_kills_total"),
    ("read bytes", "monitor_job_io_read_bytes_total"),
    ("write bytes", "monitor_job_io_write_bytes_total"),
    ("block read bytes", "monitor_job_block_read_bytes_total"),
    ("block write bytes", "monitor_job_block_write_bytes_total"),
    ("network bytes", "monitor_job_network_bytes_total"),
];

#[derive(Debug)]
pub struct ResourceCostResult {
    pub floor_ns: f64,
    pub programs: Vec<ProgramCost>,
    /// The job's counters at the end, by JOB_COUNTERS' names.
    pub job_counters: Vec<(String, f64)>,
    /// Why no OOM kill was part of the windows, if none was.
    pub no_oom: Option<String>,
}

pub fn run(setup: &Setup, args: &BenchArgs) -> anyhow::Result<ResourceCostResult> {
    let root = Root::create(&setup.cgroup_mount, "resources")?;
    let mut daemon = Daemon::start(setup, root.path(), true, "resources")?;
    let floor = Floor::attach(&setup.object)?;
    let job = root.make_job(JOB)?;
    let oom_job = root.make_job("resources-oom")?;
    let limit = MemoryLimit::apply(&oom_job, OOM_LIMIT)?;
    let no_oom = limit.as_ref().err().cloned();
    let scratch = job_workloads::scratch_dir()?;
    let cpu = pingpong::default_cpu();
    daemon.next_samples(1)?;

    let mut windows = Vec::new();
    for round in 1..=args.rounds {
        let before = Snapshot::take(&mut daemon, &floor)?;
        job_workloads::touch_memory(&job, TOUCH_MIB)?;
        job_workloads::dd_small_blocks(&job, cpu, &scratch, DD_BLOCKS)?;
        job_workloads::direct_io_and_copies(&job, &scratch, DIRECT_MIB)?;
        job_workloads::loopback_tcp(&job, TCP_BYTES, job_workloads::tcp_cpus())?;
        if let Ok(limit) = &limit {
            job_workloads::oom_kill(&oom_job, limit)?;
        }
        let after = Snapshot::take(&mut daemon, &floor)?;
        let window = after.since(&before);
        eprintln!("xtask:   round {round}: {}", window.brief());
        windows.push(window);
    }

    let text = daemon.next_samples(1)?;
    let label = format!("jobid=\"{JOB}\"");
    let mut job_counters: Vec<(String, f64)> = JOB_COUNTERS
        .iter()
        .map(|(what, series)| {
            (
                what.to_string(),
                metrics::sum_with_label(&text, series, &label),
            )
        })
        .collect();
    let oom_kills = metrics::sum_with_label(
        &text,
        "monitor_job_oom_kills_total",
        "jobid=\"resources-oom\"",
    );
    if let Some(counter) = job_counters
        .iter_mut()
        .find(|(what, _)| what == "OOM kills")
    {
        counter.1 = oom_kills;
    }
    let counted = |what: &str| {
        job_counters
            .iter()
            .find(|(w, _)| w == what)
            .map_or(0.0, |c| c.1)
    };
    if counted("page faults") < (TOUCH_MIB * 256) as f64
        || counted("network bytes") < TCP_BYTES as f64
    {
        bail!(
            "the daemon credited the job too little ({job_counters:?}): its programs missed the job path"
        );
    }
    if limit.is_ok() && oom_kills < f64::from(args.rounds) {
        bail!(
            "the daemon counted {oom_kills} OOM kills, expected {}",
            args.rounds
        );
    }
    Ok(summarize(&windows, job_counters, no_oom))
}

/// Counters of the floor and of the programs at one moment.
struct Snapshot {
    floor: RunStats,
    programs: BTreeMap<&'static str, RunStats>,
}

impl Snapshot {
    fn take(daemon: &mut Daemon, floor: &Floor) -> anyhow::Result<Self> {
        let text = daemon.next_samples(1)?;
        let floor = floor.stats()?;
        let programs = PROGRAMS
            .iter()
            .filter_map(|name| Some((*name, metrics::program_stats(&text, name)?)))
            .collect();
        Ok(Self { floor, programs })
    }

    fn since(&self, earlier: &Self) -> Self {
        let programs = self
            .programs
            .iter()
            .filter_map(|(name, now)| Some((*name, now.since(*earlier.programs.get(name)?))))
            .collect();
        Self {
            floor: self.floor.since(earlier.floor),
            programs,
        }
    }

    fn brief(&self) -> String {
        let ns = |name: &str| {
            self.programs
                .get(name)
                .and_then(|s| s.ns_per_run())
                .map_or_else(|| "-".to_string(), |ns| format!("{ns:.0}"))
        };
        format!(
            "rss_stat {} ns, page_fault_user {} ns, sys_exit_write_family {} ns, net_egress {} ns per run",
            ns("rss_stat"),
            ns("page_fault_user"),
            ns("sys_exit_write_family"),
            ns("net_egress")
        )
    }
}

fn summarize(
    windows: &[Snapshot],
    job_counters: Vec<(String, f64)>,
    no_oom: Option<String>,
) -> ResourceCostResult {
    let floor_ns: Vec<f64> = windows
        .iter()
        .filter_map(|w| w.floor.ns_per_run())
        .collect();
    let programs = PROGRAMS
        .iter()
        .map(|name| {
            let of_window = |w: &Snapshot| w.programs.get(name).copied();
            let runs: Vec<f64> = windows
                .iter()
                .filter_map(of_window)
                .map(|s| s.run_count)
                .collect();
            let ns: Vec<f64> = windows
                .iter()
                .filter_map(|w| of_window(w)?.ns_per_run())
                .collect();
            let ratios: Vec<f64> = windows
                .iter()
                .filter_map(|w| Some(of_window(w)?.ns_per_run()? / w.floor.ns_per_run()?))
                .collect();
            ProgramCost {
                name: name.to_string(),
                runs: median(&runs).unwrap_or(0.0),
                ns_per_run: median(&ns),
                ratio: median(&ratios),
            }
        })
        .collect();
    ResourceCostResult {
        floor_ns: median(&floor_ns).unwrap_or(f64::NAN),
        programs,
        job_counters,
        no_oom,
    }
}
