//! The JSON job API agrees with /metrics, filters, and answers bad requests
//! clearly.
use std::time::Duration;

use monitor_tests::{Daemon, cpu_shared, process::run_ok, require_root_or_skip};
use serde_json::Value;

#[test]
fn api_lists_jobs_as_metrics_shows_them() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    let daemon = Daemon::start()?;
    let job = daemon.create_job("api-job")?;
    run_ok(
        &mut job.command("/bin/true")?,
        "/bin/true",
        Duration::from_secs(30),
    )?;
    let metrics = daemon.metrics_after_samples(2)?;
    let execs = metrics.value("monitor_job_execs_total", &[("jobid", "api-job")])?;

    let all: Value = serde_json::from_str(&daemon.get("/api/v1/jobs")?)?;
    let listed = all
        .as_array()
        .and_then(|jobs| jobs.iter().find(|j| j["jobid"] == "api-job"))
        .ok_or_else(|| anyhow::anyhow!("api-job missing from /api/v1/jobs: {all}"))?;
    assert_eq!(
        listed["execs"].as_f64(),
        Some(execs),
        "execs differ between the API and /metrics: {listed}"
    );
    assert_eq!(listed["state"], "running");

    let one: Value = serde_json::from_str(&daemon.get("/api/v1/jobs/api-job")?)?;
    assert_eq!(one.as_array().map(Vec::len), Some(1), "{one}");
    let finished: Value = serde_json::from_str(&daemon.get("/api/v1/jobs?state=finished")?)?;
    assert!(
        finished
            .as_array()
            .is_some_and(|jobs| jobs.iter().all(|j| j["jobid"] != "api-job")),
        "a running job listed as finished: {finished}"
    );

    let missing = daemon
        .get("/api/v1/jobs/no-such-job")
        .unwrap_err()
        .to_string();
    assert!(
        missing.contains("404") && missing.contains("no job"),
        "{missing}"
    );
    let bad = daemon
        .get("/api/v1/jobs?state=sleeping")
        .unwrap_err()
        .to_string();
    assert!(bad.contains("400"), "a bad filter is not a 400: {bad}");
    Ok(())
}
