//! Per-job memory, IO and network series, and the cgroup-file cross-checks.
use prometheus_client::{metrics::MetricType, registry::Unit};

use super::{
    job_text::{JobFamily, SampleWriter},
    jobs::Counter,
};
use crate::snapshot::{CgroupFileStats, JobView};

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

const fn count(index: usize) -> JobFamily {
    JobFamily::counter(COUNTS[index].0, COUNTS[index].1, None)
}

/// A cgroup-file family: only when some job has the file.
const fn file(index: usize) -> JobFamily {
    let (name, help, metric_type, _) = FILES[index];
    JobFamily {
        name,
        help,
        unit: None,
        metric_type,
        optional: true,
    }
}

/// This module's families, in the order [`write_samples`] writes them.
pub(super) static FAMILIES: [JobFamily; 18] = [
    JobFamily::gauge(
        "monitor_job_memory_rss",
        "Resident memory (file, anon and shmem pages) of the job's processes, from kmem/rss_stat.",
        Some(Unit::Bytes),
    ),
    JobFamily::gauge(
        "monitor_job_memory_rss_peak",
        "Highest resident memory of the job at any rss_stat event (not only at samples).",
        Some(Unit::Bytes),
    ),
    count(0),
    count(1),
    count(2),
    count(3),
    count(4),
    count(5),
    count(6),
    count(7),
    JobFamily::counter(
        "monitor_job_network_bytes",
        "Bytes the job's sockets sent (tx) and received (rx), IP and transport headers included.",
        None,
    ),
    JobFamily::counter(
        "monitor_job_network_packets",
        "Packets the job's sockets sent (tx) and received (rx).",
        None,
    ),
    file(0),
    file(1),
    file(2),
    file(3),
    file(4),
    file(5),
];

/// `job`'s samples of [`FAMILIES`], one family after the other.
pub(super) fn write_samples(job: &JobView, out: &mut SampleWriter) {
    let c = &job.counters;
    out.u64(&[], c.rss_bytes());
    out.end_family();
    out.u64(&[], c.rss_peak());
    out.end_family();
    for (_, _, field) in &COUNTS {
        out.u64(&[], field(c));
        out.end_family();
    }
    out.u64(&[("direction", "rx")], c.net_rx_bytes);
    out.u64(&[("direction", "tx")], c.net_tx_bytes);
    out.end_family();
    out.u64(&[("direction", "rx")], c.net_rx_packets);
    out.u64(&[("direction", "tx")], c.net_tx_packets);
    out.end_family();
    for (_, _, metric_type, field) in &FILES {
        if let Some(value) = field(&job.files) {
            match metric_type {
                MetricType::Counter => out.u64(&[], value),
                _ => out.i64(&[], i64::try_from(value).unwrap_or(i64::MAX)),
            }
        }
        out.end_family();
    }
}
