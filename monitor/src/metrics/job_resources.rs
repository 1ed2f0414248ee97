//! Per-job memory, IO and network series, and the cgroup-file cross-checks.
use std::sync::Arc;

use prometheus_client::{
    collector::Collector, encoding::DescriptorEncoder, metrics::MetricType, registry::Unit,
};

use super::{
    encode::family,
    jobs::{Counter, labels},
};
use crate::daemon::snapshot::{CgroupFileStats, SharedSnapshot};

#[derive(Debug)]
pub struct JobResourceCollector(pub Arc<SharedSnapshot>);

const COUNTS: [Counter; 8] = [
    (
        "monitor_job_page_faults",
        "Page faults (minor and major) of the job's tasks.",
        |c| c.page_faults,
    ),
    (
        "monitor_job_oom_kills",
        "Tasks of the job killed by the OOM killer.",
        |c| c.oom_kills,
    ),
    (
        "monitor_job_io_read_bytes",
        "Bytes read through read-family calls and by the kernel for the job's tasks: /proc/PID/io rchar (any file, pipe or socket).",
        |c| c.io_read_bytes,
    ),
    (
        "monitor_job_io_write_bytes",
        "Bytes written through write-family calls and by the kernel for the job's tasks: /proc/PID/io wchar.",
        |c| c.io_write_bytes,
    ),
    (
        "monitor_job_io_read_calls",
        "Read-family calls (syscr).",
        |c| c.io_read_calls,
    ),
    (
        "monitor_job_io_write_calls",
        "Write-family calls (syscw).",
        |c| c.io_write_calls,
    ),
    (
        "monitor_job_block_read_bytes",
        "Bytes the job caused to be read from storage: /proc/PID/io read_bytes.",
        |c| c.block_read_bytes,
    ),
    (
        "monitor_job_block_write_bytes",
        "Bytes the job caused to be written to storage, writeback of pages it dirtied included: /proc/PID/io write_bytes.",
        |c| c.block_write_bytes,
    ),
];

type FileStat = (
    &'static str,
    &'static str,
    MetricType,
    fn(&CgroupFileStats) -> Option<u64>,
);

/// The kernel's own files, where present (pure cgroup v2 hosts; the
/// allocation also from a v1 resource manager's cpuset and memory cgroups).
const FILES: [FileStat; 6] = [
    (
        "monitor_job_cpus_allocated",
        "CPUs in the job's cpuset (cpuset.cpus.effective on v2, a v1 job's cpuset.cpus): CPU efficiency is CPU seconds over elapsed times this.",
        MetricType::Gauge,
        |f| f.cpus_allocated,
    ),
    (
        "monitor_job_memory_limit_bytes",
        "The job's memory limit (memory.max on v2, a v1 job's memory.limit_in_bytes); absent when unlimited.",
        MetricType::Gauge,
        |f| f.memory_limit_bytes,
    ),
    (
        "monitor_job_cgroup_memory_current_bytes",
        "memory.current of the job's cgroups (cross-check; only where the memory controller is enabled).",
        MetricType::Gauge,
        |f| f.memory_current,
    ),
    (
        "monitor_job_cgroup_memory_peak_bytes",
        "Highest memory.peak among the job's cgroups (cross-check).",
        MetricType::Gauge,
        |f| f.memory_peak,
    ),
    (
        "monitor_job_cgroup_io_read_bytes",
        "rbytes of io.stat of the job's cgroups (cross-check; only where the io controller is enabled).",
        MetricType::Counter,
        |f| f.io_read_bytes,
    ),
    (
        "monitor_job_cgroup_io_write_bytes",
        "wbytes of io.stat of the job's cgroups (cross-check).",
        MetricType::Counter,
        |f| f.io_write_bytes,
    ),
];

impl Collector for JobResourceCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.0.latest();
        let jobs = &snapshot.jobs;

        let mut f = family(
            &mut encoder,
            "monitor_job_memory_rss",
            "Resident memory (file, anon and shmem pages) of the job's processes, from kmem/rss_stat.",
            Some(&Unit::Bytes),
            MetricType::Gauge,
        )?;
        for job in jobs {
            let rss = job.counters.rss_bytes();
            f.gauge_i64(&labels(job), i64::try_from(rss).unwrap_or(i64::MAX))?;
        }
        let mut f = family(
            &mut encoder,
            "monitor_job_memory_rss_peak",
            "Highest resident memory of the job at any rss_stat event (not only at samples).",
            Some(&Unit::Bytes),
            MetricType::Gauge,
        )?;
        for job in jobs {
            let peak = job.counters.rss_peak();
            f.gauge_i64(&labels(job), i64::try_from(peak).unwrap_or(i64::MAX))?;
        }
        for (name, help, field) in &COUNTS {
            let mut f = family(&mut encoder, name, help, None, MetricType::Counter)?;
            for job in jobs {
                f.counter_u64(&labels(job), field(&job.counters))?;
            }
        }
        let mut f = family(
            &mut encoder,
            "monitor_job_network_bytes",
            "Bytes the job's sockets sent (tx) and received (rx), IP and transport headers included.",
            None,
            MetricType::Counter,
        )?;
        for job in jobs {
            let [jobid, user] = labels(job);
            f.counter_u64(
                &[jobid, user, ("direction", "rx")],
                job.counters.net_rx_bytes,
            )?;
            f.counter_u64(
                &[jobid, user, ("direction", "tx")],
                job.counters.net_tx_bytes,
            )?;
        }
        let mut f = family(
            &mut encoder,
            "monitor_job_network_packets",
            "Packets the job's sockets sent (tx) and received (rx).",
            None,
            MetricType::Counter,
        )?;
        for job in jobs {
            let [jobid, user] = labels(job);
            f.counter_u64(
                &[jobid, user, ("direction", "rx")],
                job.counters.net_rx_packets,
            )?;
            f.counter_u64(
                &[jobid, user, ("direction", "tx")],
                job.counters.net_tx_packets,
            )?;
        }
        for (name, help, metric_type, field) in &FILES {
            if !jobs.iter().any(|job| field(&job.files).is_some()) {
                continue;
            }
            let mut f = family(&mut encoder, name, help, None, *metric_type)?;
            for job in jobs {
                let Some(value) = field(&job.files) else {
                    continue;
                };
                match metric_type {
                    MetricType::Counter => f.counter_u64(&labels(job), value)?,
                    _ => f.gauge_i64(&labels(job), i64::try_from(value).unwrap_or(i64::MAX))?,
                }
            }
        }
        Ok(())
    }
}
