//! Benchmark 3: /metrics latency and the daemon's memory with many jobs,
//! each job a cgroup with a sleeping process in it.
use std::{
    fs,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use monitor_tests::cgroup::spawn_in;

use super::{
    BenchArgs, Setup,
    cgroup::Root,
    daemon::{Daemon, JOBS, jobs_in_state},
    stats::{median, percentile},
};

/// Samples to wait for once every job is known, so /metrics is timed in the
/// steady state rather than right after a burst of new cgroups.
pub const SETTLE_SAMPLES: u32 = 3;
const SAMPLE_DURATION: &str = "monitor_sample_duration_seconds";

#[derive(Debug)]
pub struct ScaleResult {
    pub jobs: u32,
    /// Every scrape's wall time, in milliseconds.
    pub scrape_ms: Vec<f64>,
    pub body_bytes: usize,
    pub rss_kib: u64,
    pub hwm_kib: u64,
    /// The daemon's own duration of its last map sample.
    pub sample_ms: Option<f64>,
}

impl ScaleResult {
    pub fn median_ms(&self) -> f64 {
        median(&self.scrape_ms).unwrap_or(f64::NAN)
    }

    pub fn p99_ms(&self) -> f64 {
        percentile(&self.scrape_ms, 99.0).unwrap_or(f64::NAN)
    }
}

pub fn run(setup: &Setup, args: &BenchArgs) -> anyhow::Result<ScaleResult> {
    let root = Root::create(&setup.cgroup_mount, "scale")?;
    let mut daemon = Daemon::start(setup, root.path(), false, "scale")?;
    let started = Instant::now();
    let _sleepers = Sleepers::start(&root, args.jobs)?;
    eprintln!(
        "xtask:   {} jobs with a sleeper each made in {:.1?}",
        args.jobs,
        started.elapsed()
    );

    let jobs = f64::from(args.jobs);
    daemon.wait_for(
        "every job to be running",
        Duration::from_secs(60),
        &[JOBS],
        |metrics| jobs_in_state(metrics, "running") == Some(jobs),
    )?;
    let metrics = daemon.next_samples(SETTLE_SAMPLES, &[SAMPLE_DURATION])?;
    let sample_ms = metrics.find(SAMPLE_DURATION, &[])?.map(|s| s * 1000.0);

    let (scrape_ms, body_bytes) = time_scrapes(&daemon, args.scrapes)?;
    let (rss_kib, hwm_kib) = memory_kib(daemon.pid())?;
    Ok(ScaleResult {
        jobs: args.jobs,
        scrape_ms,
        body_bytes,
        rss_kib,
        hwm_kib,
        sample_ms,
    })
}

/// Back-to-back GETs of /metrics; returns each one's time and the last body's size.
pub fn time_scrapes(daemon: &Daemon, count: u32) -> anyhow::Result<(Vec<f64>, usize)> {
    let mut times = Vec::new();
    let mut body_bytes = 0;
    for _ in 0..count {
        let start = Instant::now();
        let body = daemon
            .scrape()
            .with_context(|| format!("scraping {}", daemon.addr()))?;
        times.push(start.elapsed().as_secs_f64() * 1000.0);
        body_bytes = body.len();
    }
    Ok((times, body_bytes))
}

/// VmRSS and VmHWM (peak RSS) of a process, in KiB.
pub fn memory_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let field = |name: &str| {
        status_kib(&status, name).with_context(|| format!("{name} missing from {path}"))
    };
    Ok((field("VmRSS")?, field("VmHWM")?))
}

/// A `Name:   1234 kB` line of /proc/PID/status.
fn status_kib(status: &str, name: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(':')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// One `sleep` per job, each started inside its job. Dropping kills and
/// reaps them all.
struct Sleepers(Vec<Child>);

impl Sleepers {
    fn start(root: &Root, jobs: u32) -> anyhow::Result<Self> {
        let mut sleepers = Self(Vec::new());
        for i in 0..jobs {
            let job = root.make_job(&format!("job{i:05}"))?;
            let mut cmd = Command::new("sleep");
            cmd.arg("3600").stdin(Stdio::null());
            sleepers.0.push(spawn_in(&mut cmd, &job)?);
        }
        Ok(sleepers)
    }
}

impl Drop for Sleepers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            // Already gone is fine: the cgroup may have been killed first.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_status_fields() {
        let status = "Name:\tmonitor\nVmHWM:\t   12345 kB\nVmRSS:\t    9876 kB\n";
        assert_eq!(status_kib(status, "VmRSS"), Some(9876));
        assert_eq!(status_kib(status, "VmHWM"), Some(12345));
        assert_eq!(status_kib(status, "VmPeak"), None);
    }
}
