//! The per-job counters as they are shown: one row per figure the kernel
//! counts in [`CgroupCounters`], with its `/metrics` family and its key in a
//! profile (the JSON API and the state store). Both are driven from these
//! rows, so a new counter is its field in `CgroupCounters`, the program
//! that fills it, and one row here.
//!
//! Rows come in the order /metrics serves the families and profiles list
//! the keys; [`ACTIVITY`] before the job's tasks, times and info,
//! [`RESOURCES`] after them (where they always were).
use monitor_common::CgroupCounters;
use prometheus_client::{metrics::MetricType, registry::Unit};

/// Reads a figure from the counters, and writes it back (a profile read
/// back from the store becomes counters again).
#[derive(Clone, Copy)]
pub struct Field {
    pub get: fn(&CgroupCounters) -> u64,
    pub set: fn(&mut CgroupCounters, u64),
}

/// The [`Field`] of a plain `CgroupCounters` field.
macro_rules! field {
    ($name:ident) => {
        Field {
            get: |c| c.$name,
            set: |c, value| c.$name = value,
        }
    };
}

/// One part of a [`Figure::Split`].
#[derive(Clone, Copy)]
pub struct Part {
    /// Its label's value in /metrics.
    pub label_value: &'static str,
    /// Its key in the profile's object.
    pub key: &'static str,
    pub field: Field,
}

impl Part {
    pub const fn new(label_value: &'static str, key: &'static str, field: Field) -> Self {
        Part {
            label_value,
            key,
            field,
        }
    }
}

/// How a row's figure is read and shown.
#[derive(Clone, Copy)]
pub enum Figure {
    /// A number, shown as it is.
    Count(Field),
    /// Nanoseconds, shown as seconds (in /metrics and in profiles).
    Seconds(Field),
    /// Two numbers: two samples told apart by `label` in /metrics, two keys
    /// of an object in profiles (rows with the same key share the object).
    Split {
        label: &'static str,
        parts: [Part; 2],
    },
}

/// One per-job counter: its family in /metrics and its key in profiles.
pub struct JobCounter {
    /// The family's name, without the unit and without `_total`.
    pub family: &'static str,
    pub help: &'static str,
    pub unit: Option<Unit>,
    pub metric_type: MetricType,
    /// Its key in a profile.
    pub key: &'static str,
    pub figure: Figure,
}

impl JobCounter {
    const fn counter(
        family: &'static str,
        help: &'static str,
        key: &'static str,
        figure: Figure,
    ) -> Self {
        JobCounter {
            family,
            help,
            unit: None,
            metric_type: MetricType::Counter,
            key,
            figure,
        }
    }

    /// Two counts told apart by `label` (one object of two keys in profiles).
    const fn split(
        family: &'static str,
        help: &'static str,
        key: &'static str,
        label: &'static str,
        parts: [Part; 2],
    ) -> Self {
        Self::counter(family, help, key, Figure::Split { label, parts })
    }

    const fn seconds(
        family: &'static str,
        help: &'static str,
        key: &'static str,
        field: Field,
    ) -> Self {
        JobCounter {
            family,
            help,
            unit: Some(Unit::Seconds),
            metric_type: MetricType::Counter,
            key,
            figure: Figure::Seconds(field),
        }
    }

    const fn bytes_gauge(
        family: &'static str,
        help: &'static str,
        key: &'static str,
        field: Field,
    ) -> Self {
        JobCounter {
            family,
            help,
            unit: Some(Unit::Bytes),
            metric_type: MetricType::Gauge,
            key,
            figure: Figure::Count(field),
        }
    }

    /// Every row: [`ACTIVITY`], then [`RESOURCES`].
    pub fn all() -> impl Iterator<Item = &'static JobCounter> {
        ACTIVITY.iter().chain(RESOURCES)
    }
}

/// CPU, scheduling and processes: served before the job's tasks, times and
/// info.
pub static ACTIVITY: &[JobCounter] = &[
    JobCounter::seconds(
        "monitor_job_cpu",
        "CPU time of the job's tasks (their se.sum_exec_runtime, the figure cgroup cpu.stat sums).",
        "cpu_seconds",
        field!(cpu_ns),
    ),
    JobCounter::seconds(
        "monitor_job_runqueue_wait",
        "Time the job's tasks were runnable but waiting for a CPU (their schedstat run_delay).",
        "runqueue_wait_seconds",
        field!(runqueue_wait_ns),
    ),
    JobCounter::split(
        "monitor_job_context_switches",
        "Context switches of the job's tasks; kind=voluntary (blocked) or involuntary (preempted).",
        "context_switches",
        "kind",
        [
            Part::new("voluntary", "voluntary", field!(voluntary_switches)),
            Part::new("involuntary", "involuntary", field!(involuntary_switches)),
        ],
    ),
    JobCounter::counter(
        "monitor_job_processes_started",
        "Processes started in the job (fork/clone without CLONE_THREAD).",
        "processes_started",
        Figure::Count(field!(processes_started)),
    ),
    JobCounter::counter(
        "monitor_job_threads_started",
        "Threads started in the job (clone with CLONE_THREAD).",
        "threads_started",
        Figure::Count(field!(threads_started)),
    ),
    JobCounter::counter(
        "monitor_job_execs",
        "Successful execs in the job.",
        "execs",
        Figure::Count(field!(execs)),
    ),
    JobCounter::counter(
        "monitor_job_processes_exited",
        "Processes of the job that exited (whole thread groups).",
        "processes_exited",
        Figure::Count(field!(process_exits)),
    ),
];

/// Memory, IO and network: served after the job's tasks, times and info,
/// before the cgroup files' cross-checks.
pub static RESOURCES: &[JobCounter] = &[
    JobCounter::bytes_gauge(
        "monitor_job_memory_rss",
        "Resident memory (file, anon and shmem pages) of the job's processes, from kmem/rss_stat.",
        "memory_rss_bytes",
        Field {
            get: CgroupCounters::rss_bytes,
            set: |c, value| c.rss_delta_bytes = i64::try_from(value).unwrap_or(i64::MAX),
        },
    ),
    JobCounter::bytes_gauge(
        "monitor_job_memory_rss_peak",
        "Highest resident memory of the job at any rss_stat event (not only at samples).",
        "memory_rss_peak_bytes",
        Field {
            get: CgroupCounters::rss_peak,
            set: |c, value| c.rss_peak_bytes = value,
        },
    ),
    JobCounter::counter(
        "monitor_job_page_faults",
        "Page faults (minor and major) of the job's tasks.",
        "page_faults",
        Figure::Count(field!(page_faults)),
    ),
    JobCounter::counter(
        "monitor_job_oom_kills",
        "Tasks of the job killed by the OOM killer.",
        "oom_kills",
        Figure::Count(field!(oom_kills)),
    ),
    JobCounter::counter(
        "monitor_job_io_read_bytes",
        "Bytes read through read-family calls and by the kernel for the job's tasks: /proc/PID/io rchar (any file, pipe or socket).",
        "io_read_bytes",
        Figure::Count(field!(io_read_bytes)),
    ),
    JobCounter::counter(
        "monitor_job_io_write_bytes",
        "Bytes written through write-family calls and by the kernel for the job's tasks: /proc/PID/io wchar.",
        "io_write_bytes",
        Figure::Count(field!(io_write_bytes)),
    ),
    JobCounter::counter(
        "monitor_job_io_read_calls",
        "Read-family calls (syscr).",
        "io_read_calls",
        Figure::Count(field!(io_read_calls)),
    ),
    JobCounter::counter(
        "monitor_job_io_write_calls",
        "Write-family calls (syscw).",
        "io_write_calls",
        Figure::Count(field!(io_write_calls)),
    ),
    JobCounter::counter(
        "monitor_job_block_read_bytes",
        "Bytes the job caused to be read from storage: /proc/PID/io read_bytes.",
        "block_read_bytes",
        Figure::Count(field!(block_read_bytes)),
    ),
    JobCounter::counter(
        "monitor_job_block_write_bytes",
        "Bytes the job caused to be written to storage, writeback of pages it dirtied included: /proc/PID/io write_bytes.",
        "block_write_bytes",
        Figure::Count(field!(block_write_bytes)),
    ),
    JobCounter::split(
        "monitor_job_network_bytes",
        "Bytes the job's sockets sent (tx) and received (rx), IP and transport headers included.",
        "network",
        "direction",
        [
            Part::new("rx", "rx_bytes", field!(net_rx_bytes)),
            Part::new("tx", "tx_bytes", field!(net_tx_bytes)),
        ],
    ),
    JobCounter::split(
        "monitor_job_network_packets",
        "Packets the job's sockets sent (tx) and received (rx).",
        "network",
        "direction",
        [
            Part::new("rx", "rx_packets", field!(net_rx_packets)),
            Part::new("tx", "tx_packets", field!(net_tx_packets)),
        ],
    ),
];

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every field of the counters is shown by exactly one row: a field
    /// set alone moves exactly one figure.
    #[test]
    fn every_counter_field_is_shown_once() {
        let fields = serde_json::to_value(CgroupCounters::default()).unwrap();
        for name in fields.as_object().unwrap().keys() {
            let mut one = fields.clone();
            one[name] = 3.into();
            let c: CgroupCounters = serde_json::from_value(one).unwrap();
            let moved: usize = JobCounter::all()
                .map(|row| match row.figure {
                    Figure::Count(f) | Figure::Seconds(f) => usize::from((f.get)(&c) != 0),
                    Figure::Split { parts, .. } => {
                        parts.iter().filter(|p| (p.field.get)(&c) != 0).count()
                    }
                })
                .sum();
            // The RSS peak is never below the RSS: the delta moves both.
            let expected = if name == "rss_delta_bytes" { 2 } else { 1 };
            assert_eq!(moved, expected, "{name}");
        }
    }

    #[test]
    fn families_and_keys_are_unique() {
        let families: BTreeSet<_> = JobCounter::all().map(|row| row.family).collect();
        assert_eq!(families.len(), JobCounter::all().count());
        let mut keys = BTreeSet::new();
        for row in JobCounter::all() {
            match row.figure {
                Figure::Split { parts, .. } => {
                    for part in parts {
                        assert!(keys.insert((row.key, part.key)), "{}", part.key);
                    }
                }
                _ => assert!(keys.insert((row.key, "")), "{}", row.key),
            }
        }
    }

    #[test]
    fn a_field_set_reads_back() {
        for row in JobCounter::all() {
            let fields = match row.figure {
                Figure::Count(f) | Figure::Seconds(f) => vec![f],
                Figure::Split { parts, .. } => parts.iter().map(|p| p.field).collect(),
            };
            for field in fields {
                let mut c = CgroupCounters::default();
                (field.set)(&mut c, 12_345);
                assert_eq!((field.get)(&c), 12_345, "{}", row.family);
            }
        }
    }
}
