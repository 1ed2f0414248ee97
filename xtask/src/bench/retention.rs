//! Benchmark 8: finished jobs. Many directory jobs (10,000) are made under
//! the daemon's root and counted, then removed as fast as possible: how fast
//! their profiles reach the state store, and how /metrics, the job API and
//! the daemon's memory fare with all of them finished and in retention.
//!
//! Every round has a fresh daemon with an empty state directory. One daemon
//! with new job names per round would be quicker, but its /metrics and store
//! would hold 10,000 more finished jobs each round, so no two rounds would
//! measure the same thing.
use std::{
    fs,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use monitor_tests::{Metrics, http};

use super::{
    BenchArgs, Setup,
    cgroup::Root,
    daemon::{Daemon, JOBS, jobs_in_state},
    scale::{self, SETTLE_SAMPLES},
    stats::{median, percentile},
};

/// Long enough that no finished job leaves /metrics during a round.
pub const JOB_RETENTION: &str = "1h";
/// GETs of /api/v1/jobs timed per round (each lists every job).
pub const API_GETS: u32 = 20;
/// How often /metrics is read while the profiles are being written.
pub const POLL: Duration = Duration::from_millis(50);
/// Counter slots per job counted at once: a cgroup gets one of a few
/// hashed slots, so the map needs room beyond one slot per cgroup.
const SLOTS_PER_JOB: u32 = 3;
/// The fewest counter slots the daemon takes.
const MIN_CGROUP_SLOTS: u32 = 64;
const BURST_TIMEOUT: Duration = Duration::from_secs(180);
const LABEL: &str = "retention";
const WRITTEN: &str = "monitor_state_profiles_written_total";
const COMMITS: &str = "monitor_state_commits_total";
const COMMIT_DURATION: &str = "monitor_state_commit_duration_seconds";
const SAMPLE_DURATION: &str = "monitor_sample_duration_seconds";
const LOST_EVENTS: &str = "monitor_bpf_lost_events_total";
const MAP_FULL: [(&str, &str); 1] = [("reason", "cgroup_map_full")];
const RING_FULL: [(&str, &str); 1] = [("reason", "cgroup_event_ring_full")];
/// What is read while the profiles are being written.
const BURST_SERIES: [&str; 5] = [WRITTEN, JOBS, SAMPLE_DURATION, COMMITS, COMMIT_DURATION];

#[derive(Debug)]
pub struct RetentionRound {
    /// The rmdirs alone, first to last, seconds.
    pub rmdir_s: f64,
    /// First rmdir until every profile was written (by the GET that showed it).
    pub written_s: f64,
    /// First rmdir until /metrics showed every job finished.
    pub finished_s: f64,
    /// State store commits that wrote the profiles.
    pub commits: f64,
    /// The last of them (fsync included), milliseconds.
    pub last_commit_ms: f64,
    /// jobs.db and its WAL once every profile was written and read back.
    pub db_bytes: u64,
    pub wal_bytes: u64,
    /// /metrics scrapes with every job finished, milliseconds.
    pub scrape_ms: Vec<f64>,
    pub body_bytes: usize,
    pub rss_kib: u64,
    pub hwm_kib: u64,
    /// GETs of /api/v1/jobs, milliseconds.
    pub api_ms: Vec<f64>,
    pub api_bytes: usize,
    /// Jobs the last API answer listed.
    pub api_jobs: usize,
    /// The daemon's own duration of its last map sample, with every job finished.
    pub sample_ms: Option<f64>,
    /// The longest sample seen while the profiles were written, milliseconds.
    pub burst_sample_ms: f64,
    /// Cgroups the full counter map refused, over the round.
    pub map_full: f64,
    /// Cgroup events lost to a full ring during the rmdirs: the daemon then
    /// finds the removed directories by walking the root at the next sample.
    pub ring_full: f64,
}

impl RetentionRound {
    pub fn profiles_per_second(&self, jobs: u32) -> f64 {
        f64::from(jobs) / self.written_s
    }

    pub fn store_bytes(&self) -> u64 {
        self.db_bytes + self.wal_bytes
    }

    pub fn scrape_median_ms(&self) -> f64 {
        median(&self.scrape_ms).unwrap_or(f64::NAN)
    }

    pub fn scrape_p99_ms(&self) -> f64 {
        percentile(&self.scrape_ms, 99.0).unwrap_or(f64::NAN)
    }

    pub fn api_median_ms(&self) -> f64 {
        median(&self.api_ms).unwrap_or(f64::NAN)
    }
}

#[derive(Debug)]
pub struct RetentionResult {
    pub jobs: u32,
    pub max_cgroups: u32,
    pub rounds: Vec<RetentionRound>,
}

impl RetentionResult {
    pub fn profiles_per_second(&self) -> f64 {
        self.median_of(|r| r.profiles_per_second(self.jobs))
    }

    pub fn written_s(&self) -> f64 {
        self.median_of(|r| r.written_s)
    }

    pub fn finished_s(&self) -> f64 {
        self.median_of(|r| r.finished_s)
    }

    pub fn store_bytes(&self) -> f64 {
        self.median_of(|r| r.store_bytes() as f64)
    }

    /// The median of the rounds' medians.
    pub fn scrape_median_ms(&self) -> f64 {
        self.median_of(RetentionRound::scrape_median_ms)
    }

    /// The median of the rounds' p99s.
    pub fn scrape_p99_ms(&self) -> f64 {
        self.median_of(RetentionRound::scrape_p99_ms)
    }

    pub fn rss_kib(&self) -> f64 {
        self.median_of(|r| r.rss_kib as f64)
    }

    pub fn api_median_ms(&self) -> f64 {
        self.median_of(RetentionRound::api_median_ms)
    }

    pub fn median_of(&self, figure: impl Fn(&RetentionRound) -> f64) -> f64 {
        let values: Vec<f64> = self.rounds.iter().map(figure).collect();
        median(&values).unwrap_or(f64::NAN)
    }
}

/// Counter slots for a daemon that counts `jobs` jobs at once.
pub fn max_cgroups(jobs: u32) -> u32 {
    (jobs * SLOTS_PER_JOB)
        .next_power_of_two()
        .max(MIN_CGROUP_SLOTS)
}

/// The flags of a daemon whose retention is filled: no finished job leaves
/// /metrics during a round, and `max_cgroups` counter slots.
pub fn daemon_flags(max_cgroups: &str) -> [&str; 4] {
    [
        "--job.retention",
        JOB_RETENTION,
        "--bpf.max-cgroups",
        max_cgroups,
    ]
}

pub fn run(setup: &Setup, args: &BenchArgs) -> anyhow::Result<RetentionResult> {
    let max_cgroups = max_cgroups(args.finished_jobs);
    let mut result = RetentionResult {
        jobs: args.finished_jobs,
        max_cgroups,
        rounds: Vec::new(),
    };
    for round in 1..=args.rounds {
        let r = run_round(setup, args, max_cgroups)?;
        eprintln!(
            "xtask:   round {round}: rmdirs {:.2} s; all profiles written after {:.2} s ({:.0}/s, \
             {:.0} commits, the last {:.0} ms), slowest sample {:.0} ms, all finished after {:.2} s, \
             {} events lost; store {} + {} WAL bytes; /metrics p50 {:.1} ms, p99 {:.1} ms, {} bytes; \
             RSS {} KiB; API p50 {:.1} ms, {} jobs, {} bytes",
            r.rmdir_s,
            r.written_s,
            r.profiles_per_second(args.finished_jobs),
            r.commits,
            r.last_commit_ms,
            r.burst_sample_ms,
            r.finished_s,
            r.ring_full,
            r.db_bytes,
            r.wal_bytes,
            r.scrape_median_ms(),
            r.scrape_p99_ms(),
            r.body_bytes,
            r.rss_kib,
            r.api_median_ms(),
            r.api_jobs,
            r.api_bytes,
        );
        result.rounds.push(r);
    }
    Ok(result)
}

fn run_round(setup: &Setup, args: &BenchArgs, max_cgroups: u32) -> anyhow::Result<RetentionRound> {
    let jobs = args.finished_jobs;
    // Declared before the daemon, so dropped after it: on an error too, the
    // daemon stops (its pins and state go) before its root is removed.
    let root = Root::create(&setup.cgroup_mount, LABEL)?;
    let slots = max_cgroups.to_string();
    // One GET lists every job, as this bench has always timed: the page
    // sizes (defaults 500 and 1,000) raised to the jobs filled.
    let page = jobs.max(1).to_string();
    let mut flags = daemon_flags(&slots).to_vec();
    flags.extend(["--api.page-size", &page, "--api.max-page-size", &page]);
    let mut daemon = Daemon::start_with(setup, root.path(), false, LABEL, &flags)?;
    let filled = fill(&mut daemon, &root, jobs)?;
    let burst = &filled.burst;

    // The steady state with every job finished: no burst left to digest.
    let settled = daemon.next_samples(SETTLE_SAMPLES, &[SAMPLE_DURATION])?;
    let sample_ms = settled.find(SAMPLE_DURATION, &[])?.map(|s| s * 1000.0);
    let (scrape_ms, body_bytes) = scale::time_scrapes(&daemon, args.scrapes)?;
    let (rss_kib, hwm_kib) = scale::memory_kib(daemon.pid())?;
    let (api_ms, api_body) = time_api(&daemon)?;
    let db = daemon.state_dir().join("jobs.db");
    let db_bytes = file_size(&db)?;
    let wal_bytes = file_size(&db.with_extension("db-wal"))?;
    let last = daemon.metrics(&[LOST_EVENTS])?;
    daemon.stop()?;
    Ok(RetentionRound {
        rmdir_s: filled.rmdir_s,
        written_s: burst.written_s,
        finished_s: burst.finished_s,
        commits: burst.commits - filled.commits_before,
        last_commit_ms: burst.last_commit_ms,
        db_bytes,
        wal_bytes,
        scrape_ms,
        body_bytes,
        rss_kib,
        hwm_kib,
        api_ms,
        api_bytes: api_body.len(),
        api_jobs: api_body.matches("\"jobid\":").count(),
        sample_ms,
        burst_sample_ms: burst.slowest_sample_ms,
        map_full: last.find(LOST_EVENTS, &MAP_FULL)?.unwrap_or(0.0),
        ring_full: last.find(LOST_EVENTS, &RING_FULL)?.unwrap_or(0.0) - filled.ring_full_before,
    })
}

/// How the daemon's retention was filled.
pub struct Filled {
    /// The rmdirs alone, first to last, seconds.
    pub rmdir_s: f64,
    pub burst: Burst,
    /// monitor_state_commits_total and the cgroup events lost to a full
    /// ring before the rmdirs.
    pub commits_before: f64,
    pub ring_full_before: f64,
}

/// Fills the retention of a daemon (started with [`daemon_flags`]) with
/// `jobs` finished jobs: makes that many job directories under its root,
/// waits until all are running and counted by a sample, removes them back
/// to back, and waits until every profile is written and every job shows
/// as finished.
pub fn fill(daemon: &mut Daemon, root: &Root, jobs: u32) -> anyhow::Result<Filled> {
    let dirs = (0..jobs)
        .map(|i| root.make_job(&format!("job{i:05}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let all = f64::from(jobs);
    daemon.wait_for(
        "every job to be running",
        Duration::from_secs(120),
        &[JOBS],
        |metrics| jobs_in_state(metrics, "running") == Some(all),
    )?;
    // Counted by a sample of the maps, not only seen as events.
    let before = daemon.next_samples(1, &[COMMITS, LOST_EVENTS])?;
    let commits_before = figure(&before, COMMITS)?;
    let ring_full_before = before.find(LOST_EVENTS, &RING_FULL)?.unwrap_or(0.0);

    let start = Instant::now();
    for dir in &dirs {
        fs::remove_dir(dir).with_context(|| format!("removing cgroup {}", dir.display()))?;
    }
    let rmdir_s = start.elapsed().as_secs_f64();
    let burst = wait_written(daemon, start, all)?;
    Ok(Filled {
        rmdir_s,
        burst,
        commits_before,
        ring_full_before,
    })
}

/// The profiles of the removed jobs being written.
pub struct Burst {
    /// First rmdir until every profile was written, seconds.
    pub written_s: f64,
    /// First rmdir until every job showed as finished, seconds.
    pub finished_s: f64,
    /// monitor_state_commits_total when the last profile was written.
    pub commits: f64,
    pub last_commit_ms: f64,
    pub slowest_sample_ms: f64,
}

/// Reads /metrics every [`POLL`] until every profile is written and every
/// job shows as finished; each time is taken when the GET that first showed
/// it returned (so it errs long, by up to a poll and a scrape).
fn wait_written(daemon: &Daemon, start: Instant, jobs: f64) -> anyhow::Result<Burst> {
    let (mut written_s, mut finished_s) = (None, None);
    let (mut commits, mut last_commit_ms, mut slowest_sample_ms) = (0.0, 0.0, 0.0_f64);
    loop {
        let text = daemon
            .scrape()
            .context("reading /metrics during the burst")?;
        let now = start.elapsed().as_secs_f64();
        let metrics = Metrics::parse_only(&text, &BURST_SERIES)?;
        let written = figure(&metrics, WRITTEN)?;
        let finished = jobs_in_state(&metrics, "finished")
            .context("monitor_jobs{state=\"finished\"} missing")?;
        if let Some(sample) = metrics.find(SAMPLE_DURATION, &[])? {
            slowest_sample_ms = slowest_sample_ms.max(sample * 1000.0);
        }
        if written >= jobs && written_s.is_none() {
            written_s = Some(now);
            commits = figure(&metrics, COMMITS)?;
            last_commit_ms = metrics.find(COMMIT_DURATION, &[])?.unwrap_or(f64::NAN) * 1000.0;
        }
        if finished >= jobs {
            finished_s.get_or_insert(now);
        }
        if let (Some(written_s), Some(finished_s)) = (written_s, finished_s) {
            return Ok(Burst {
                written_s,
                finished_s,
                commits,
                last_commit_ms,
                slowest_sample_ms,
            });
        }
        if start.elapsed() > BURST_TIMEOUT {
            bail!(
                "after {BURST_TIMEOUT:?}, {written} of {jobs} profiles written and {finished} jobs finished"
            );
        }
        thread::sleep(POLL);
    }
}

/// The value of the unlabelled series `name`, which must be there.
fn figure(metrics: &Metrics, name: &str) -> anyhow::Result<f64> {
    metrics
        .find(name, &[])?
        .with_context(|| format!("{name} missing"))
}

/// [`API_GETS`] back-to-back GETs of the job list; each one's time and the
/// last answer.
fn time_api(daemon: &Daemon) -> anyhow::Result<(Vec<f64>, String)> {
    let mut times = Vec::new();
    let mut body = String::new();
    for _ in 0..API_GETS {
        let start = Instant::now();
        body = http::get(daemon.addr(), "/api/v1/jobs").context("listing the jobs")?;
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    Ok((times, body))
}

/// A file's size; 0 when it does not exist (no WAL after a checkpoint that truncated it away).
fn file_size(path: &Path) -> anyhow::Result<u64> {
    match fs::metadata(path) {
        Ok(meta) => Ok(meta.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e).with_context(|| format!("reading the size of {}", path.display())),
    }
}
