//! No job is lost: 500 short jobs started through `monitor run` all show
//! in /metrics and in the JSON API as finished, with CPU time and their
//! exact process and exec counts; a real Prometheus scraping every second
//! keeps every job of a burst of 100; and a full cgroup counter map drops
//! what does not fit, says so, never reports more entries than it has,
//! frees the slots of removed cgroups and counts new jobs again.
use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    process::Stdio,
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use monitor_tests::{
    ChildGuard, Daemon, Metrics,
    counter_map::counter_map,
    cpu_shared,
    daemon::TELEMETRY_PATH,
    jobs_api::{monitor_jobs, with_id},
    launcher::{RUN_TIMEOUT, monitor_run},
    process::run_ok,
    prometheus::{self, Prometheus, sample_value},
    require_root_or_skip, skip_or_fail,
};
use serde_json::Value;

/// The job command (tests/src/bin/fake_starter.rs): `busy SECONDS` spins
/// until it has used that much CPU, in one process, without forking.
const STARTER: &str = env!("CARGO_BIN_EXE_fake_starter");
/// Samples (200 ms each) to wait for jobs to show up or end.
const JOB_SAMPLES: u32 = 50;
/// Ids listed in a failure message, per kind of failure.
const LISTED: usize = 10;

/// `monitor run` registers, then execs the command in place: the job's
/// one process arrives by being moved (not forked) into its cgroup and
/// does exactly one exec there, the command's.
const EXECS_PER_JOB: f64 = 1.0;
const PROCESSES_STARTED_PER_JOB: f64 = 0.0;

/// Runs `monitor run --job-id ID -- fake_starter busy SECONDS` for each
/// `(ID, SECONDS)`, `parallel` at a time. Fails listing the jobs that did
/// not exit 0 or that warned (a warning means the job ran unregistered).
fn run_jobs(socket: &Path, jobs: &[(String, f64)], parallel: usize) -> anyhow::Result<()> {
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    thread::scope(|scope| {
        for _ in 0..parallel {
            scope.spawn(|| {
                while let Some((id, seconds)) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) {
                    if let Err(e) = run_job(socket, id, *seconds) {
                        failures.lock().unwrap().push(format!("{id}: {e:#}"));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    if !failures.is_empty() {
        bail!(
            "{} of {} `monitor run` jobs failed; the first {LISTED}:\n{}",
            failures.len(),
            jobs.len(),
            failures[..failures.len().min(LISTED)].join("\n")
        );
    }
    Ok(())
}

/// One `monitor run --job-id ID -- fake_starter busy SECONDS`.
fn run_job(socket: &Path, id: &str, seconds: f64) -> anyhow::Result<()> {
    let mut command = monitor_run(socket)?;
    command
        .args(["--job-id", id, "--", STARTER, "busy", &seconds.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let output = ChildGuard::spawn(&mut command, "monitor run")?.wait_with_output(RUN_TIMEOUT)?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() || !stderr.is_empty() {
        bail!("{}; stderr: {stderr:?}", output.status);
    }
    Ok(())
}

/// Every sample of family `name` in one scrape, by its `jobid` label.
fn by_jobid(metrics: &Metrics, name: &str) -> HashMap<String, f64> {
    metrics
        .matching(name, &[])
        .filter_map(|s| Some((s.labels.get("jobid")?.clone(), s.value)))
        .collect()
}

/// Jobs that failed a check, by check: one failure message with the count
/// and the first few of each.
#[derive(Default)]
struct Problems(BTreeMap<String, Vec<String>>);

impl Problems {
    fn add(&mut self, check: &str, job: String) {
        self.0.entry(check.to_string()).or_default().push(job);
    }

    /// None when every job passed every check.
    fn report(&self, jobs: usize) -> Option<String> {
        if self.0.is_empty() {
            return None;
        }
        let lines: Vec<String> = self
            .0
            .iter()
            .map(|(check, failed)| {
                format!(
                    "{} of {jobs} jobs {check}; the first {}: {:?}",
                    failed.len(),
                    failed.len().min(LISTED),
                    &failed[..failed.len().min(LISTED)]
                )
            })
            .collect();
        Some(lines.join("\n"))
    }
}

#[test]
fn five_hundred_short_jobs_are_all_counted() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    const JOBS: usize = 500;
    // Every job in one answer of /api/v1/jobs below.
    let mut daemon = Daemon::start_with(&["--job.retention", "10m", "--api.page-size", "1000"])?;
    // 5 to 20 ms of CPU each, in turn.
    let jobs: Vec<(String, f64)> = (0..JOBS)
        .map(|n| (format!("short-{n}"), (5 + n % 16) as f64 / 1000.0))
        .collect();
    let started = Instant::now();
    run_jobs(daemon.socket(), &jobs, 4)?;
    println!("{JOBS} jobs ran in {:?}", started.elapsed());

    let (all_ended, metrics) = daemon.wait_for(JOB_SAMPLES, |m| {
        let ended = by_jobid(m, "monitor_job_end_time_seconds");
        jobs.iter().all(|(id, _)| ended.contains_key(id))
    })?;
    let cpu = by_jobid(&metrics, "monitor_job_cpu_seconds_total");
    let started_counts = by_jobid(&metrics, "monitor_job_processes_started_total");
    let execs = by_jobid(&metrics, "monitor_job_execs_total");
    let ended = by_jobid(&metrics, "monitor_job_end_time_seconds");
    let mut problems = Problems::default();
    for (id, _) in &jobs {
        match cpu.get(id) {
            None => problems.add("are missing from /metrics", id.clone()),
            Some(&cpu) if cpu <= 0.0 => problems.add("have no CPU time", format!("{id} ({cpu})")),
            Some(_) => {}
        }
        match started_counts.get(id) {
            Some(&n) if n == PROCESSES_STARTED_PER_JOB => {}
            n => problems.add(
                &format!("do not have processes_started {PROCESSES_STARTED_PER_JOB}"),
                format!("{id} ({n:?})"),
            ),
        }
        match execs.get(id) {
            Some(&n) if n == EXECS_PER_JOB => {}
            n => problems.add(
                &format!("do not have execs {EXECS_PER_JOB}"),
                format!("{id} ({n:?})"),
            ),
        }
        if !ended.contains_key(id) {
            problems.add("have no end time in /metrics", id.clone());
        }
    }
    // What the programs dropped meanwhile, to read a failure by.
    for lost in metrics.matching("monitor_bpf_lost_events_total", &[]) {
        println!(
            "lost events {:?}: {}",
            lost.labels.get("reason"),
            lost.value
        );
    }
    println!(
        "/metrics: all {JOBS} ended: {all_ended}; CPU per job {:.4}..{:.4} s",
        cpu.values().copied().fold(f64::INFINITY, f64::min),
        cpu.values().copied().fold(0.0, f64::max)
    );

    let listed: Value = serde_json::from_str(&daemon.get("/api/v1/jobs")?)?;
    let listed: HashMap<&str, &Value> = listed
        .as_array()
        .context("/api/v1/jobs is not an array")?
        .iter()
        .filter_map(|job| Some((job["jobid"].as_str()?, job)))
        .collect();
    for (id, _) in &jobs {
        let Some(job) = listed.get(id.as_str()) else {
            problems.add("are missing from /api/v1/jobs", id.clone());
            continue;
        };
        if job["state"] != "finished" {
            problems.add(
                "are not finished in /api/v1/jobs",
                format!("{id} ({})", job["state"]),
            );
        }
        if job["cpu_seconds"].as_f64().is_none_or(|cpu| cpu <= 0.0) {
            problems.add(
                "have no cpu_seconds in /api/v1/jobs",
                format!("{id} ({})", job["cpu_seconds"]),
            );
        }
        if job["execs"].as_f64() != Some(EXECS_PER_JOB)
            || job["processes_started"].as_f64() != Some(PROCESSES_STARTED_PER_JOB)
        {
            problems.add(
                "have other execs or processes_started in /api/v1/jobs",
                format!("{id} ({}, {})", job["execs"], job["processes_started"]),
            );
        }
    }
    if let Some(report) = problems.report(JOBS) {
        panic!("short jobs lost or miscounted:\n{report}");
    }

    // Every profile is in the state store: a restarted daemon lists each
    // one unchanged, and still shows them in /metrics for the retention.
    daemon.terminate()?;
    daemon.restart()?;
    let stored = monitor_jobs(&daemon, &["--all"])?;
    let metrics = daemon.metrics()?;
    let cpu_after = by_jobid(&metrics, "monitor_job_cpu_seconds_total");
    for (id, _) in &jobs {
        match with_id(&stored, id).as_slice() {
            [job] if Some(*job) == listed.get(id.as_str()).copied() => {}
            found => problems.add(
                "are not stored unchanged (monitor jobs --all after a restart)",
                format!("{id} ({} found)", found.len()),
            ),
        }
        if cpu_after.get(id) != cpu.get(id) {
            problems.add(
                "changed or left /metrics across a restart",
                format!("{id} ({:?} -> {:?})", cpu.get(id), cpu_after.get(id)),
            );
        }
    }
    if let Some(report) = problems.report(JOBS) {
        panic!("profiles not kept across a restart:\n{report}");
    }
    Ok(())
}

/// Prometheus' scrape interval in the burst test.
const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);

#[test]
fn prometheus_scrapes_every_job_of_a_burst() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let Some(binary) = prometheus::binary() else {
        skip_or_fail(
            "the prometheus server is not on PATH (cargo xtask test installs it: apt-get install prometheus)",
        );
        return Ok(());
    };
    let _machine = cpu_shared();
    const JOBS: usize = 100;
    let daemon = Daemon::start()?;
    let prometheus = Prometheus::start(&binary, daemon.address(), TELEMETRY_PATH, SCRAPE_INTERVAL)?;
    prometheus.wait_for_scrape(Duration::from_secs(60))?;

    let jobs: Vec<(String, f64)> = (0..JOBS).map(|n| (format!("burst-{n}"), 0.05)).collect();
    let started = Instant::now();
    run_jobs(daemon.socket(), &jobs, 10)?;
    println!("{JOBS} jobs ran in {:?}", started.elapsed());
    // The daemon has them all (or the failure is the daemon's, not the scrapes').
    let (seen, metrics) = daemon.wait_for(JOB_SAMPLES, |m| {
        let cpu = by_jobid(m, "monitor_job_cpu_seconds_total");
        jobs.iter().all(|(id, _)| cpu.contains_key(id))
    })?;
    assert!(seen, "the daemon itself lost burst jobs:\n{}", metrics.text);

    let series = r#"last_over_time(monitor_job_cpu_seconds_total{jobid=~"burst-.*"}[5m])"#;
    let count_query = format!("count(count by (jobid) ({series}))");
    let ids_query = format!("group by (jobid) ({series})");
    // A few scrape intervals; more on a machine too loaded to keep time.
    let deadline = Instant::now() + SCRAPE_INTERVAL * 30;
    thread::sleep(SCRAPE_INTERVAL * 3);
    let missing = loop {
        let stored: Vec<String> = prometheus
            .query(&ids_query)?
            .iter()
            .filter_map(|sample| sample["metric"]["jobid"].as_str().map(str::to_string))
            .collect();
        let missing: Vec<&str> = jobs
            .iter()
            .map(|(id, _)| id.as_str())
            .filter(|id| !stored.iter().any(|s| s == id))
            .collect();
        if missing.is_empty() || Instant::now() >= deadline {
            break missing;
        }
        thread::sleep(SCRAPE_INTERVAL);
    };
    assert!(
        missing.is_empty(),
        "{} of {JOBS} burst jobs never reached prometheus; the first {}: {:?}",
        missing.len(),
        missing.len().min(LISTED),
        &missing[..missing.len().min(LISTED)]
    );
    let count = prometheus.query(&count_query)?;
    let counted = match count.as_slice() {
        [sample] => sample_value(sample)?,
        other => bail!(
            "{count_query} gave {} samples, expected one: {other:?}",
            other.len()
        ),
    };
    println!("prometheus counts {counted} burst jobs");
    assert_eq!(counted, JOBS as f64, "{count_query}");
    Ok(())
}

/// The smallest counter map the daemon takes (`--bpf.max-cgroups`).
const SLOTS: &str = "64";
/// Directory jobs made against it: more than it has slots.
const CROWD: usize = 100;

#[test]
fn full_counter_map_drops_and_recovers() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    // No spare task cgroups: they hold slots too, made while the crowd is,
    // and this counts the slots of the cgroups it makes.
    let mut daemon =
        Daemon::start_with(&["--bpf.max-cgroups", SLOTS, "--socket.spare-cgroups", "0"])?;
    let (baseline, capacity, drops_before) = counter_map(&daemon.metrics()?)?;
    println!("counter map: {baseline} of {capacity} entries, {drops_before} drops");
    assert_eq!(capacity.to_string(), SLOTS, "the counter map's capacity");

    // Every scrape along the way must stay within capacity.
    let mut scrapes = Vec::new();
    let mut crowd = Vec::new();
    for n in 0..CROWD {
        crowd.push(daemon.create_job(&format!("crowd-{n}"))?);
        if n % 10 == 9 {
            scrapes.push(counter_map(&daemon.metrics()?)?);
        }
    }
    // Each new cgroup either got a slot or was counted as a drop.
    let (accounted, metrics) = daemon.wait_for(JOB_SAMPLES, |m| {
        counter_map(m).is_ok_and(|(entries, _, drops)| {
            entries - baseline + drops - drops_before == CROWD as f64
        })
    })?;
    let full = counter_map(&metrics)?;
    scrapes.push(full);
    let (entries, _, drops) = full;
    println!(
        "after {CROWD} job cgroups: {entries} of {capacity} entries, {} dropped",
        drops - drops_before
    );
    assert!(
        accounted,
        "{CROWD} new cgroups, but {} new entries and {} drops",
        entries - baseline,
        drops - drops_before
    );
    assert!(
        drops > drops_before,
        "{CROWD} cgroups in {SLOTS} slots and no cgroup_map_full drop"
    );
    let over: Vec<_> = scrapes.iter().filter(|(e, c, _)| e > c).collect();
    assert!(
        over.is_empty(),
        "map entries above capacity (entries, capacity, drops): {over:?}"
    );
    daemon.still_serving()?;

    for job in &crowd {
        job.remove()?;
    }
    let (reclaimed, metrics) = daemon.wait_for(JOB_SAMPLES, |m| {
        counter_map(m).is_ok_and(|(e, _, _)| e == baseline)
    })?;
    let (entries, _, drops_full) = counter_map(&metrics)?;
    println!("after removing them: {entries} entries");
    assert!(
        reclaimed,
        "the removed cgroups' slots were not freed: {entries} entries, {baseline} before"
    );

    // A new job gets a slot again, and is counted.
    let job = daemon.create_job("after-full")?;
    run_ok(
        job.command(STARTER)?
            .args(["busy", "0.05"])
            .stdout(Stdio::null()),
        "fake_starter busy",
        RUN_TIMEOUT,
    )?;
    let labels = [("jobid", "after-full")];
    let (counted, metrics) = daemon.wait_for(JOB_SAMPLES, |m| {
        m.find("monitor_job_cpu_seconds_total", &labels)
            .is_ok_and(|cpu| cpu.is_some_and(|c| c > 0.0))
    })?;
    let cpu = metrics.find("monitor_job_cpu_seconds_total", &labels)?;
    println!(
        "new job after the map emptied: {cpu:?} s of CPU (cpu.stat {:.3} s)",
        job.cpu_usage_seconds()?
    );
    assert!(
        counted,
        "the job made after the map emptied has CPU {cpu:?}, expected > 0"
    );
    let (_, _, drops_now) = counter_map(&metrics)?;
    assert_eq!(
        drops_now, drops_full,
        "the new job's cgroup was dropped although slots were free"
    );
    daemon.still_serving()?;
    Ok(())
}
