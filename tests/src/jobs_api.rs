//! Reading jobs the two ways users do: the JSON API on the web port and
//! `monitor jobs --json` on the API socket.
use std::{process::Command, time::Duration};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::{Daemon, daemon::binary};

/// `GET /api/v1/jobs?{query}`, parsed: every page of it (the daemon
/// answers `--api.page-size` finished jobs at a time, naming the next page
/// in a Link header).
pub fn api_jobs(daemon: &Daemon, query: &str) -> anyhow::Result<Vec<Value>> {
    let path = if query.is_empty() {
        "/api/v1/jobs".to_string()
    } else {
        format!("/api/v1/jobs?{query}")
    };
    let mut jobs = Vec::new();
    let mut next = Some(path);
    while let Some(path) = next {
        let (page, following) = api_page(daemon, &path)?;
        jobs.extend(page);
        next = following;
    }
    Ok(jobs)
}

/// One answer of the job API at `path`: its jobs and its next page, if any.
pub fn api_page(daemon: &Daemon, path: &str) -> anyhow::Result<(Vec<Value>, Option<String>)> {
    let (body, next) = daemon.get_page(path)?;
    let jobs: Value =
        serde_json::from_str(&body).with_context(|| format!("{path} is not JSON: {body}"))?;
    match jobs {
        Value::Array(jobs) => Ok((jobs, next)),
        other => bail!("{path} is not a list: {other}"),
    }
}

/// `monitor jobs --json` with `args`, against the daemon's socket.
pub fn monitor_jobs(daemon: &Daemon, args: &[&str]) -> anyhow::Result<Vec<Value>> {
    let json = [&["--json"], args].concat();
    let stdout = run_monitor_jobs(daemon, &json)?;
    serde_json::from_str(&stdout).context("monitor jobs --json printed no job list")
}

/// `monitor jobs` (the table) with `args`.
pub fn monitor_jobs_table(daemon: &Daemon, args: &[&str]) -> anyhow::Result<String> {
    run_monitor_jobs(daemon, args)
}

/// Runs `monitor jobs ARGS` against the daemon's socket; its stdout.
fn run_monitor_jobs(daemon: &Daemon, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(binary()?)
        .arg("jobs")
        .arg("--socket.path")
        .arg(daemon.socket())
        .args(args)
        .env_remove("MONITOR_SOCKET")
        .output()
        .context("running monitor jobs")?;
    if !output.status.success() {
        bail!(
            "monitor jobs failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The jobs of `jobs` with id `jobid`.
pub fn with_id<'a>(jobs: &'a [Value], jobid: &str) -> Vec<&'a Value> {
    jobs.iter().filter(|job| job["jobid"] == jobid).collect()
}

/// Polls `/api/v1/jobs?{query}` until `done` holds, at most `timeout`;
/// returns the last list either way.
pub fn wait_for_jobs(
    daemon: &Daemon,
    query: &str,
    timeout: Duration,
    mut done: impl FnMut(&[Value]) -> bool,
) -> anyhow::Result<(bool, Vec<Value>)> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let jobs = api_jobs(daemon, query)?;
        if done(&jobs) {
            return Ok((true, jobs));
        }
        if std::time::Instant::now() >= deadline {
            return Ok((false, jobs));
        }
        std::thread::sleep(daemon.sample_interval());
    }
}
