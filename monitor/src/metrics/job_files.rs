//! Per-job series from the kernel's own cgroup files: the job's allocation
//! and cross-checks of the eBPF figures.
use prometheus_client::metrics::MetricType;

use super::job_text::{JobFamily, SampleWriter};
use crate::snapshot::{CgroupFileStats, JobView};

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
pub(super) static FAMILIES: [JobFamily; 6] = [file(0), file(1), file(2), file(3), file(4), file(5)];

/// `job`'s samples of [`FAMILIES`], one family after the other.
pub(super) fn write_samples(job: &JobView, out: &mut SampleWriter) {
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
