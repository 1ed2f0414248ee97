//! Per-job series. Job series carry `jobid` and `user` only (never `job`:
//! Prometheus owns that label); the rest is on `monitor_job_info`.
use std::sync::Arc;

use monitor_common::CgroupCounters;
use prometheus_client::{
    collector::Collector, encoding::DescriptorEncoder, metrics::MetricType, registry::Unit,
};

use super::encode::{family, seconds, unix_seconds};
use crate::daemon::snapshot::{JobView, SharedSnapshot};

#[derive(Debug)]
pub struct JobCollector(pub Arc<SharedSnapshot>);

pub(super) fn labels(job: &JobView) -> [(&'static str, &str); 2] {
    [("jobid", job.jobid.as_str()), ("user", job.user.as_str())]
}

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

impl Collector for JobCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.0.latest();
        let jobs = &snapshot.jobs;

        let mut f = family(
            &mut encoder,
            "monitor_job_cpu",
            "CPU time of the job's tasks (their se.sum_exec_runtime, the figure cgroup cpu.stat sums).",
            Some(&Unit::Seconds),
            MetricType::Counter,
        )?;
        for job in jobs {
            f.counter(&labels(job), seconds(job.counters.cpu_ns))?;
        }
        let mut f = family(
            &mut encoder,
            "monitor_job_runqueue_wait",
            "Time the job's tasks were runnable but waiting for a CPU (their schedstat run_delay).",
            Some(&Unit::Seconds),
            MetricType::Counter,
        )?;
        for job in jobs {
            f.counter(&labels(job), seconds(job.counters.runqueue_wait_ns))?;
        }
        let mut f = family(
            &mut encoder,
            "monitor_job_context_switches",
            "Context switches of the job's tasks; kind=voluntary (blocked) or involuntary (preempted).",
            None,
            MetricType::Counter,
        )?;
        for job in jobs {
            let [jobid, user] = labels(job);
            f.counter_u64(
                &[jobid, user, ("kind", "voluntary")],
                job.counters.voluntary_switches,
            )?;
            f.counter_u64(
                &[jobid, user, ("kind", "involuntary")],
                job.counters.involuntary_switches,
            )?;
        }
        for (name, help, field) in &COUNTS {
            let mut f = family(&mut encoder, name, help, None, MetricType::Counter)?;
            for job in jobs {
                f.counter_u64(&labels(job), field(&job.counters))?;
            }
        }
        let mut f = family(
            &mut encoder,
            "monitor_job_tasks",
            "Tasks (threads) in the job's cgroups now.",
            None,
            MetricType::Gauge,
        )?;
        for job in jobs {
            f.gauge_i64(&labels(job), i64::try_from(job.tasks).unwrap_or(i64::MAX))?;
        }
        let mut f = family(
            &mut encoder,
            "monitor_job_start_time",
            "When the job started, as a Unix time.",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        for job in jobs {
            f.gauge(&labels(job), unix_seconds(job.start))?;
        }
        let mut f = family(
            &mut encoder,
            "monitor_job_end_time",
            "When the job ended, as a Unix time (finished jobs only, kept for --job.retention).",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        for job in jobs {
            if let Some(end) = job.end {
                f.gauge(&labels(job), unix_seconds(end))?;
            }
        }
        let mut f = family(
            &mut encoder,
            "monitor_job_info",
            "Metadata of a job; always 1. A launcher's labels appear as label_<name>.",
            None,
            MetricType::Gauge,
        )?;
        for job in jobs {
            let uid = job.uid.to_string();
            let state = if job.end.is_some() {
                "finished"
            } else {
                "running"
            };
            let label_names: Vec<String> =
                job.labels.keys().map(|k| format!("label_{k}")).collect();
            let [jobid, user] = labels(job);
            let mut set: Vec<(&str, &str)> = vec![
                jobid,
                user,
                ("uid", uid.as_str()),
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
            f.gauge_i64(&set, 1)?;
        }
        Ok(())
    }
}
