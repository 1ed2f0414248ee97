//! Per-job series. Job series carry `jobid` and `user` only (never `job`:
//! Prometheus owns that label); the rest is on `monitor_job_info`. Here
//! the job's tasks, times and info; the counters are
//! [`crate::job_counters`]' rows.
use prometheus_client::registry::Unit;

use super::job_text::{JobFamily, SampleWriter};
use crate::{snapshot::JobView, system::time::unix_seconds};

/// This module's families, in the order [`write_samples`] writes them.
pub(super) static FAMILIES: [JobFamily; 4] = [
    JobFamily::gauge(
        "monitor_job_tasks",
        "Tasks (threads) in the job's cgroups now.",
        None,
    ),
    JobFamily::gauge(
        "monitor_job_start_time",
        "When the job started, as a Unix time.",
        Some(Unit::Seconds),
    ),
    JobFamily::gauge(
        "monitor_job_end_time",
        "When the job ended, as a Unix time (finished jobs only, kept for --job.retention).",
        Some(Unit::Seconds),
    ),
    JobFamily::gauge(
        "monitor_job_info",
        "Metadata of a job; always 1. A launcher's labels appear as label_<name>.",
        None,
    ),
];

/// `job`'s samples of [`FAMILIES`], one family after the other.
pub(super) fn write_samples(job: &JobView, out: &mut SampleWriter) {
    out.i64(&[], i64::try_from(job.tasks).unwrap_or(i64::MAX));
    out.end_family();
    out.f64(&[], unix_seconds(job.start));
    out.end_family();
    if let Some(end) = job.end {
        out.f64(&[], unix_seconds(end));
    }
    out.end_family();
    write_info(job, out);
    out.end_family();
}
fn write_info(job: &JobView, out: &mut SampleWriter) {
    let mut uid = itoa::Buffer::new();
    let uid = uid.format(job.uid);
    let state = if job.end.is_some() {
        "finished"
    } else {
        "running"
    };
    let label_names: Vec<String> = job.labels.keys().map(|k| format!("label_{k}")).collect();
    let mut set: Vec<(&str, &str)> = vec![
        ("uid", uid),
        ("name", job.name.as_str()),
        ("launcher", job.launcher.as_str()),
        ("cgroup", job.cgroup.as_str()),
        ("state", state),
    ];
    set.extend(
        label_names
            .iter()
            .map(String::as_str)
            .zip(job.labels.values().map(String::as_str)),
    );
    out.i64(&set, 1);
}
