//! Per-job series. Job series carry `jobid` and `user` only (never `job`:
//! Prometheus owns that label); the rest is on `monitor_job_info`.
use monitor_common::CgroupCounters;
use prometheus_client::registry::Unit;

use super::job_text::{JobFamily, SampleWriter};
use crate::{
    snapshot::JobView,
    system::time::{seconds, unix_seconds},
};

pub(super) type Counter = (&'static str, &'static str, fn(&CgroupCounters) -> u64);

/// Plain per-job counters: name (without `_total`), help, field.
const COUNTS: [Counter; 4] = [
    (
        "monitor_job_processes_started",
        "Processes started in the job (fork/clone without CLONE_THREAD).",
        |c| c.processes_started,
    ),
    (
        "monitor_job_threads_started",
        "Threads started in the job (clone with CLONE_THREAD).",
        |c| c.threads_started,
    ),
    ("monitor_job_execs", "Successful execs in the job.", |c| {
        c.execs
    }),
    (
        "monitor_job_processes_exited",
        "Processes of the job that exited (whole thread groups).",
        |c| c.process_exits,
    ),
];

/// This module's families, in the order [`write_samples`] writes them.
pub(super) static FAMILIES: [JobFamily; 11] = [
    JobFamily::counter(
        "monitor_job_cpu",
        "CPU time of the job's tasks (their se.sum_exec_runtime, the figure cgroup cpu.stat sums).",
        Some(Unit::Seconds),
    ),
    JobFamily::counter(
        "monitor_job_runqueue_wait",
        "Time the job's tasks were runnable but waiting for a CPU (their schedstat run_delay).",
        Some(Unit::Seconds),
    ),
    JobFamily::counter(
        "monitor_job_context_switches",
        "Context switches of the job's tasks; kind=voluntary (blocked) or involuntary (preempted).",
        None,
    ),
    JobFamily::counter(COUNTS[0].0, COUNTS[0].1, None),
    JobFamily::counter(COUNTS[1].0, COUNTS[1].1, None),
    JobFamily::counter(COUNTS[2].0, COUNTS[2].1, None),
    JobFamily::counter(COUNTS[3].0, COUNTS[3].1, None),
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
    let c = &job.counters;
    out.f64(&[], seconds(c.cpu_ns));
    out.end_family();
    out.f64(&[], seconds(c.runqueue_wait_ns));
    out.end_family();
    out.u64(&[("kind", "voluntary")], c.voluntary_switches);
    out.u64(&[("kind", "involuntary")], c.involuntary_switches);
    out.end_family();
    for (_, _, field) in &COUNTS {
        out.u64(&[], field(c));
        out.end_family();
    }
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
