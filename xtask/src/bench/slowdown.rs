//! Benchmark 2: how much slower a context-switch-bound job runs under the
//! daemon. Runs without (daemon stopped, nothing attached) and with (daemon
//! running, no bpf_stats, whose clock reads would add their own cost)
//! alternate, and which goes first flips every round, so a drift in the
//! machine's load favours neither.
use anyhow::bail;
use monitor_tests::cgroup::remove_tree;

use super::{
    BenchArgs, Setup,
    cgroup::Root,
    daemon::Daemon,
    pingpong,
    stats::{median, median_slowdown},
};

#[derive(Debug)]
pub struct SlowdownResult {
    /// Microseconds per round trip, one per round, in round order.
    pub without_us: Vec<f64>,
    pub with_us: Vec<f64>,
    pub round_trips: u32,
    pub cpu: usize,
}

impl SlowdownResult {
    pub fn median_without(&self) -> f64 {
        median(&self.without_us).unwrap_or(f64::NAN)
    }

    /// One progress line for round `round` (from 1), once it is complete.
    fn brief(&self, round: u32) -> String {
        let i = round as usize - 1;
        format!(
            "without {:.2} µs/rt, with {:.2} µs/rt",
            self.without_us[i], self.with_us[i]
        )
    }

    /// The median of the rounds' with / without - 1 (see [`median_slowdown`]).
    pub fn slowdown(&self) -> f64 {
        median_slowdown(&self.without_us, &self.with_us)
    }
}

pub fn run(setup: &Setup, args: &BenchArgs) -> anyhow::Result<SlowdownResult> {
    let root = Root::create(&setup.cgroup_mount, "pingpong")?;
    let cpu = pingpong::default_cpu();
    let mut result = SlowdownResult {
        without_us: Vec::new(),
        with_us: Vec::new(),
        round_trips: args.round_trips,
        cpu,
    };
    for round in 1..=args.rounds {
        let with_first = round % 2 == 0;
        for with in [with_first, !with_first] {
            if with {
                result
                    .with_us
                    .push(measure_with(setup, &root, round, cpu, args.round_trips)?);
            } else {
                result
                    .without_us
                    .push(measure_without(&root, round, cpu, args.round_trips)?);
            }
        }
        eprintln!("xtask:   round {round}: {}", result.brief(round));
    }
    Ok(result)
}

fn measure_without(root: &Root, round: u32, cpu: usize, round_trips: u32) -> anyhow::Result<f64> {
    let job = root.make_job(&format!("without-{round}"))?;
    let us = pingpong::run(&job, cpu, round_trips)?;
    remove_tree(&job)?;
    Ok(us)
}

fn measure_with(
    setup: &Setup,
    root: &Root,
    round: u32,
    cpu: usize,
    round_trips: u32,
) -> anyhow::Result<f64> {
    let mut daemon = Daemon::start(setup, root.path(), false, "pingpong")?;
    // Made after the daemon is up: counting starts when the job dir appears.
    let name = format!("with-{round}");
    let job = root.make_job(&name)?;
    let us = pingpong::run(&job, cpu, round_trips)?;
    // Check the programs took the job path, or the figure means nothing.
    const SWITCHES: &str = "monitor_job_context_switches_total";
    let counted = daemon
        .next_samples(1, &[SWITCHES])?
        .sum(SWITCHES, &[("jobid", &name)]);
    if counted < f64::from(round_trips) {
        bail!(
            "the daemon credited {counted} context switches to {name}, expected at least {round_trips}"
        );
    }
    daemon.stop()?;
    remove_tree(&job)?;
    Ok(us)
}
