//! Benchmarks 6 and 7: how much slower an IO-heavy job (dd with 512-byte
//! blocks) and a network-heavy one (loopback TCP) run under the daemon.
//! As for the ping-pong: runs without (daemon stopped, nothing attached)
//! and with (daemon running, no bpf_stats) alternate, which goes first
//! flips every round, and after each run with the daemon the job's
//! counters are checked, so its programs took the job path.
use std::path::Path;

use anyhow::bail;

use super::{
    BenchArgs, Setup,
    cgroup::{self, Root},
    daemon::Daemon,
    job_workloads, metrics, pingpong,
    stats::median,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Io,
    Network,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Self::Io => "io",
            Self::Network => "network",
        }
    }
}

#[derive(Debug)]
pub struct JobSlowdownResult {
    pub kind: Kind,
    /// Seconds per run, the median of the repeats of each round, in round order.
    pub without_s: Vec<f64>,
    pub with_s: Vec<f64>,
    pub repeats: u32,
    /// dd blocks of 512 bytes (io), or bytes sent (network).
    pub size: u64,
    /// The CPU dd was pinned to (io); the sender's and the receiver's (network).
    pub cpus: (usize, usize),
    /// What the daemon credited the job in the last run with it: bytes
    /// written (io) or sent (network).
    pub credited: f64,
}

impl JobSlowdownResult {
    pub fn median_without(&self) -> f64 {
        median(&self.without_s).unwrap_or(f64::NAN)
    }

    pub fn median_with(&self) -> f64 {
        median(&self.with_s).unwrap_or(f64::NAN)
    }

    /// median(with) / median(without) - 1.
    pub fn slowdown(&self) -> f64 {
        self.median_with() / self.median_without() - 1.0
    }

    /// Payload bytes of one run.
    pub fn bytes(&self) -> u64 {
        match self.kind {
            Kind::Io => self.size * 512,
            Kind::Network => self.size,
        }
    }
}

pub fn run(setup: &Setup, args: &BenchArgs, kind: Kind) -> anyhow::Result<JobSlowdownResult> {
    let root = Root::create(&setup.cgroup_mount, kind.label())?;
    let scratch = job_workloads::scratch_dir()?;
    let mut result = JobSlowdownResult {
        kind,
        without_s: Vec::new(),
        with_s: Vec::new(),
        repeats: args.repeats,
        size: match kind {
            Kind::Io => u64::from(args.io_blocks),
            Kind::Network => args.net_bytes,
        },
        cpus: match kind {
            Kind::Io => (pingpong::default_cpu(), pingpong::default_cpu()),
            Kind::Network => job_workloads::tcp_cpus(),
        },
        credited: 0.0,
    };
    let workload = |job: &Path| -> anyhow::Result<f64> {
        match kind {
            Kind::Io => {
                job_workloads::dd_small_blocks(job, result.cpus.0, &scratch, args.io_blocks)
            }
            Kind::Network => {
                job_workloads::loopback_tcp(job, args.net_bytes, job_workloads::tcp_cpus())
            }
        }
    };
    let (mut without, mut with, mut credited) = (Vec::new(), Vec::new(), 0.0);
    for round in 1..=args.rounds {
        let with_first = round % 2 == 0;
        for daemon_on in [with_first, !with_first] {
            let name = format!("{}-{round}", if daemon_on { "with" } else { "without" });
            let daemon = if daemon_on {
                Some(Daemon::start(setup, root.path(), false, kind.label())?)
            } else {
                None
            };
            // Made after the daemon is up: counting starts when the job dir appears.
            let job = root.make_job(&name)?;
            let mut seconds = Vec::new();
            for _ in 0..args.repeats {
                seconds.push(workload(&job)?);
            }
            let seconds = median(&seconds).unwrap_or(f64::NAN);
            if let Some(mut daemon) = daemon {
                credited = check_credited(&mut daemon, kind, &name, &result, args.repeats)?;
                daemon.stop()?;
                with.push(seconds);
            } else {
                without.push(seconds);
            }
            cgroup::remove_tree(&job)?;
        }
        eprintln!(
            "xtask:   round {round}: without {:.4} s, with {:.4} s",
            without[without.len() - 1],
            with[with.len() - 1]
        );
    }
    result.without_s = without;
    result.with_s = with;
    result.credited = credited;
    Ok(result)
}

/// The job's bytes as the daemon counted them: written (io) or sent
/// (network), at least the payload of every repeat.
fn check_credited(
    daemon: &mut Daemon,
    kind: Kind,
    name: &str,
    result: &JobSlowdownResult,
    repeats: u32,
) -> anyhow::Result<f64> {
    let text = daemon.next_samples(1)?;
    let label = format!("jobid=\"{name}\"");
    let credited = match kind {
        Kind::Io => metrics::sum_with_label(&text, "monitor_job_io_write_bytes_total", &label),
        Kind::Network => metrics::sum_with_label(
            &text
                .lines()
                .filter(|l| l.contains("direction=\"tx\""))
                .collect::<Vec<_>>()
                .join("\n"),
            "monitor_job_network_bytes_total",
            &label,
        ),
    };
    let expected = result.bytes() as f64 * f64::from(repeats);
    if credited < expected {
        bail!(
            "the daemon credited {credited} bytes to {name}, expected at least {expected}: its programs missed the job path"
        );
    }
    Ok(credited)
}
