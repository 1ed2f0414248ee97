//! Benchmarks 3 to 6 and 11: how much slower a workload runs under the
//! daemon: small-block dd in a job, the same dd outside any job (in the v2
//! root), a page-fault-heavy job, a network-heavy one and one that forks
//! and reaps processes. As for the ping-pong:
//! runs without (daemon stopped, nothing attached) and with (daemon
//! running, no bpf_stats) alternate, which goes first flips every round,
//! and after each run with the daemon what it counted is checked, so its
//! programs took the path measured.
use std::path::Path;

use anyhow::{Context as _, bail};
use monitor_tests::{
    cgroup::remove_tree,
    cgroup_options::{FAVORDYNMODS, V2Options},
};

use super::{
    BenchArgs, Setup,
    cgroup::Root,
    daemon::{Daemon, JOBS, jobs_in_state},
    job_workloads, page_faults, pingpong,
    stats::{median, median_slowdown},
};

/// What the daemon credited the job, read after its runs.
const IO_WRITE: &str = "monitor_job_io_write_bytes_total";
const NETWORK: &str = "monitor_job_network_bytes_total";
const RSS_PEAK: &str = "monitor_job_memory_rss_peak_bytes";
const PAGE_FAULTS: &str = "monitor_job_page_faults_total";
const PROCESSES: &str = "monitor_job_processes_started_total";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// dd with 512-byte blocks in a job.
    Io,
    /// The same dd in the v2 root: a process outside any job.
    IoOutside,
    /// 1 GiB touched in 4 KiB pages in a job, a fresh mapping every run.
    Faults,
    /// Loopback TCP in a job.
    Network,
    /// Processes forked and reaped one after another in a job.
    Processes,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Self::Io => "io",
            Self::IoOutside => "io-outside",
            Self::Faults => "faults",
            Self::Network => "network",
            Self::Processes => "processes",
        }
    }

    /// Whether the workload runs in a job (else in the v2 root).
    fn in_job(self) -> bool {
        self != Self::IoOutside
    }
}

#[derive(Debug)]
pub struct JobSlowdownResult {
    pub kind: Kind,
    /// Seconds per run, the median of the repeats of each round, in round order.
    pub without_s: Vec<f64>,
    pub with_s: Vec<f64>,
    pub repeats: u32,
    /// dd blocks of 512 bytes (io), bytes sent (network), bytes touched
    /// (faults), processes forked (processes).
    pub size: u64,
    /// The CPU the workload was pinned to; the sender's and the receiver's (network).
    pub cpus: (usize, usize),
    /// What the daemon credited the job in the last run with it: bytes
    /// written (io), sent (network), page faults (faults); 0 outside jobs.
    pub credited: f64,
    /// Faults: the job's RSS peak as the daemon counted it (last run with it).
    pub rss_peak: Option<f64>,
    /// Faults: minor faults per run the process itself counted (getrusage), median.
    pub faults_per_run: Option<f64>,
}

impl JobSlowdownResult {
    pub fn median_without(&self) -> f64 {
        median(&self.without_s).unwrap_or(f64::NAN)
    }

    pub fn median_with(&self) -> f64 {
        median(&self.with_s).unwrap_or(f64::NAN)
    }

    /// The median of the rounds' with / without - 1 (see [`median_slowdown`]).
    pub fn slowdown(&self) -> f64 {
        median_slowdown(&self.without_s, &self.with_s)
    }

    /// Payload bytes of one run.
    pub fn bytes(&self) -> u64 {
        match self.kind {
            Kind::Io | Kind::IoOutside => self.size * 512,
            Kind::Network | Kind::Faults | Kind::Processes => self.size,
        }
    }

    /// Page faults of one run (faults): one per page.
    pub fn pages(&self) -> u64 {
        self.size / job_workloads::PAGE as u64
    }

    /// What the daemon adds per page fault (faults), ns: the slowdown of
    /// the median run without it.
    pub fn extra_ns_per_fault(&self) -> f64 {
        self.slowdown() * self.median_without() * 1e9 / self.pages() as f64
    }

    /// The daemon counted less RSS than the job touched (faults): its
    /// memory program did not run on the job's faults.
    pub fn rss_missed(&self) -> bool {
        self.kind == Kind::Faults && self.rss_peak.is_none_or(|peak| peak < self.size as f64)
    }
}

pub fn run(setup: &Setup, args: &BenchArgs, kind: Kind) -> anyhow::Result<JobSlowdownResult> {
    let root = Root::create(&setup.cgroup_mount, kind.label())?;
    let scratch = job_workloads::scratch_dir()?;
    let cpu = pingpong::default_cpu();
    let mut result = JobSlowdownResult {
        kind,
        without_s: Vec::new(),
        with_s: Vec::new(),
        repeats: args.repeats,
        size: match kind {
            Kind::Io | Kind::IoOutside => u64::from(args.io_blocks),
            Kind::Faults => page_faults::BYTES as u64,
            Kind::Network => args.net_bytes,
            Kind::Processes => u64::from(args.forks),
        },
        cpus: match kind {
            Kind::Network => job_workloads::tcp_cpus(),
            _ => (cpu, cpu),
        },
        credited: 0.0,
        rss_peak: None,
        faults_per_run: None,
    };
    let mut faults = Vec::new();
    let mut workload = |place: &Path| -> anyhow::Result<f64> {
        match kind {
            Kind::Io | Kind::IoOutside => {
                job_workloads::dd_small_blocks(place, cpu, &scratch, args.io_blocks)
            }
            Kind::Faults => {
                let (seconds, taken) = page_faults::touch_fresh(place, cpu, page_faults::BYTES)?;
                faults.push(taken);
                Ok(seconds)
            }
            Kind::Network => {
                job_workloads::loopback_tcp(place, args.net_bytes, job_workloads::tcp_cpus())
            }
            Kind::Processes => job_workloads::fork_exit(place, cpu, args.forks),
        }
    };
    // The node without the daemon has the hierarchy's options without the
    // one the daemon adds, whatever an earlier daemon left: its cost is
    // part of what "with" measures. Put back as found at the end.
    let options = if kind == Kind::Processes {
        Some(V2Options::read()?.put_back_on_drop())
    } else {
        None
    };
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        let with_first = round % 2 == 0;
        for daemon_on in [with_first, !with_first] {
            let name = format!("{}-{round}", if daemon_on { "with" } else { "without" });
            let daemon = if daemon_on {
                Some(Daemon::start(setup, root.path(), false, kind.label())?)
            } else {
                None
            };
            if let Some(found) = &options {
                favordynmods_as_the_node_has_it(found, daemon_on)?;
            }
            // Made after the daemon is up: counting starts when the job dir appears.
            let job = if kind.in_job() {
                Some(root.make_job(&name)?)
            } else {
                None
            };
            // The job, or the v2 root for a process outside any job.
            let place = job.as_deref().unwrap_or(&setup.cgroup_mount);
            let mut seconds = Vec::new();
            for _ in 0..args.repeats {
                seconds.push(workload(place)?);
            }
            let seconds = median(&seconds).unwrap_or(f64::NAN);
            if let Some(mut daemon) = daemon {
                check_credited(&mut daemon, &name, &mut result, args.repeats)?;
                daemon.stop()?;
                with.push(seconds);
            } else {
                without.push(seconds);
            }
            if let Some(job) = job {
                remove_tree(&job)?;
            }
        }
        eprintln!(
            "xtask:   round {round}: without {:.4} s, with {:.4} s",
            without[without.len() - 1],
            with[with.len() - 1]
        );
    }
    result.without_s = without;
    result.with_s = with;
    result.faults_per_run = median(&faults);
    Ok(result)
}

/// Before a run without the daemon, takes `favordynmods` away; with it,
/// checks the daemon set it (else the run would not measure its cost).
fn favordynmods_as_the_node_has_it(found: &V2Options, daemon_on: bool) -> anyhow::Result<()> {
    if daemon_on {
        let now = V2Options::read()?;
        if !now.has(FAVORDYNMODS) {
            bail!("the daemon did not set {FAVORDYNMODS}: {now:?}");
        }
        return Ok(());
    }
    found.set_options(&found.without(FAVORDYNMODS))
}

/// What the daemon counted for the job `name` in the last run with it:
/// at least the payload of every repeat written (io), sent (network) or
/// faulted (faults); no job at all for a process outside jobs. Records it
/// (and the RSS peak, for faults) in `result`.
fn check_credited(
    daemon: &mut Daemon,
    name: &str,
    result: &mut JobSlowdownResult,
    repeats: u32,
) -> anyhow::Result<()> {
    // Two: the first may have begun before the last run ended, and a run
    // shorter than the sample interval is credited only at its exit.
    let metrics = daemon.next_samples(
        2,
        &[JOBS, IO_WRITE, NETWORK, RSS_PEAK, PAGE_FAULTS, PROCESSES],
    )?;
    let job = [("jobid", name)];
    let (credited, expected, what) = match result.kind {
        Kind::IoOutside => {
            let running =
                jobs_in_state(&metrics, "running").context("monitor_jobs missing from /metrics")?;
            if running != 0.0 {
                bail!("{running} jobs running while dd ran outside any job: expected none");
            }
            result.credited = 0.0;
            return Ok(());
        }
        Kind::Io => (
            metrics.sum(IO_WRITE, &job),
            result.bytes() as f64,
            "bytes written",
        ),
        Kind::Network => (
            metrics.sum(NETWORK, &[("jobid", name), ("direction", "tx")]),
            result.bytes() as f64,
            "bytes sent",
        ),
        Kind::Processes => (
            metrics.sum(PROCESSES, &job),
            result.bytes() as f64,
            "processes started",
        ),
        Kind::Faults => {
            result.rss_peak = Some(metrics.sum(RSS_PEAK, &job));
            (
                metrics.sum(PAGE_FAULTS, &job),
                result.pages() as f64,
                "page faults",
            )
        }
    };
    let expected = expected * f64::from(repeats);
    if credited < expected {
        bail!(
            "the daemon credited {credited} {what} to {name}, expected at least {expected}: \
             its programs missed the job path"
        );
    }
    result.credited = credited;
    Ok(())
}
