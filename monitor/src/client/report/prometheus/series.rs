//! The series a report reads: for each, its metric, how it is read over
//! the range, and where its value lands in what was found of a node.
use crate::client::report::figures::Counts;

/// What was found of a job on one node (one user's, one instance's).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Found {
    pub start: Option<f64>,
    pub end: Option<f64>,
    pub cpus: Option<f64>,
    pub memory_limit: Option<f64>,
    pub name: Option<String>,
    pub counts: Counts,
}

/// How a series is read over the range.
#[derive(Debug, Clone, Copy)]
pub(super) enum Over {
    /// Counters (and the peak): their highest value is their last.
    Max,
    /// Gauges: the last value.
    Last,
}

pub(super) type Setter = fn(&mut Found, &str, f64);

/// One figure: its metric, how it is read, the label splitting it (kind,
/// direction) and where it goes.
pub(super) struct Figure {
    pub(super) metric: &'static str,
    pub(super) over: Over,
    pub(super) split: Option<&'static str>,
    pub(super) set: Setter,
}

/// A count from a sample value (counts are whole numbers).
pub(super) fn whole(value: f64) -> u64 {
    value.max(0.0).round() as u64
}

pub(super) const FIGURES: [Figure; 24] = [
    Figure {
        metric: "monitor_job_start_time_seconds",
        over: Over::Last,
        split: None,
        set: |f, _, v| f.start = Some(v),
    },
    Figure {
        metric: "monitor_job_end_time_seconds",
        over: Over::Last,
        split: None,
        set: |f, _, v| f.end = Some(v),
    },
    Figure {
        metric: "monitor_job_cpus_allocated",
        over: Over::Last,
        split: None,
        set: |f, _, v| f.cpus = Some(v),
    },
    Figure {
        metric: "monitor_job_memory_limit_bytes",
        over: Over::Last,
        split: None,
        set: |f, _, v| f.memory_limit = Some(v),
    },
    Figure {
        metric: "monitor_job_cpu_seconds_total",
        over: Over::Max,
        split: None,
        set: |f, _, v| f.counts.cpu_seconds = v,
    },
    Figure {
        metric: "monitor_job_runqueue_wait_seconds_total",
        over: Over::Max,
        split: None,
        set: |f, _, v| f.counts.runqueue_wait_seconds = v,
    },
    Figure {
        metric: "monitor_job_context_switches_total",
        over: Over::Max,
        split: Some("kind"),
        set: |f, kind, v| match kind {
            "voluntary" => f.counts.context_switches.voluntary = whole(v),
            "involuntary" => f.counts.context_switches.involuntary = whole(v),
            _ => {}
        },
    },
    Figure {
        metric: "monitor_job_processes_started_total",
        over: Over::Max,
        split: None,
        set: |f, _, v| f.counts.processes_started = whole(v),
    },
    Figure {
        metric: "monitor_job_threads_started_total",
        over: Over::Max,
        split: None,
        set: |f, _, v| f.counts.threads_started = whole(v),
    },
    Figure {
        metric: "monitor_job_execs_total",
        over: Over::Max,
        split: None,
        set: |f, _, v| f.counts.execs = whole(v),
    },
    Figure {
        metric: "monitor_job_processes_exited_total",
        over: Over::Max,
        split: None,
        set: |f, _, v| f.counts.processes_exited = whole(v),
    },
    Figure {
        metric: "monitor_job_tasks",
        over: Over::Last,
        split: None,
        set: |f, _, v| f.counts.tasks = whole(v),
    },
    Figure {
        metric: "monitor_job_memory_rss_bytes",
        over: Over::Last,
        split: None,
        set: |f, _, v| f.counts.memory_rss_bytes = whole(v),
    },
    Figure {
        metric: "monitor_job_memory_rss_peak_bytes",
        over: Over::Max,
        split: None,
        set: |f, _, v| f.counts.memory_rss_peak_bytes = whole(v),
    },
    Figure {
        metric: "monitor_job_page_faults_total",
        over: Over::Max,
        split: None,
        set: |f, _, v| f.counts.page_faults = whole(v),
    },
    Figure {
        metric: "monitor_job_oom_kills_total",
        over: Over::Max,
        split: None,
        set: |f, _, v| f.counts.oom_kills = whole(v),
    },
    Figure {
        metric: "monitor_job_io_read_bytes_total",
        over: Over::Max,
        split: None,
        set: |f, _, v| f.counts.io_read_bytes = whole(v),
    },
    Figure {
        metric: "monitor_job_io_write_bytes_total",
        over: Over::Max,
        split: None,
        set: |f, _, v| f.counts.io_write_bytes = whole(v),
    },
    Figure {
        metric: "monitor_job_io_read_calls_total",
        over: Over::Max,
        split: None,
        set: |f, _, v| f.counts.io_read_calls = whole(v),
    },
    Figure {
        metric: "monitor_job_io_write_calls_total",
        over: Over::Max,
        split: None,
        set: |f, _, v| f.counts.io_write_calls = whole(v),
    },
    Figure {
        metric: "monitor_job_block_read_bytes_total",
        over: Over::Max,
        split: None,
        set: |f, _, v| f.counts.block_read_bytes = whole(v),
    },
    Figure {
        metric: "monitor_job_block_write_bytes_total",
        over: Over::Max,
        split: None,
        set: |f, _, v| f.counts.block_write_bytes = whole(v),
    },
    Figure {
        metric: "monitor_job_network_bytes_total",
        over: Over::Max,
        split: Some("direction"),
        set: |f, direction, v| match direction {
            "rx" => f.counts.network.rx_bytes = whole(v),
            "tx" => f.counts.network.tx_bytes = whole(v),
            _ => {}
        },
    },
    Figure {
        metric: "monitor_job_network_packets_total",
        over: Over::Max,
        split: Some("direction"),
        set: |f, direction, v| match direction {
            "rx" => f.counts.network.rx_packets = whole(v),
            "tx" => f.counts.network.tx_packets = whole(v),
            _ => {}
        },
    },
];

#[cfg(test)]
mod tests {
    use super::{super::query_api::percent_decode, *};

    #[test]
    fn figures_land_where_they_belong() {
        let mut found = Found::default();
        for figure in &FIGURES {
            for split in ["", "voluntary", "involuntary", "rx", "tx"] {
                (figure.set)(&mut found, split, 3.0);
            }
        }
        let c = &found.counts;
        assert_eq!(
            (found.start, found.end, found.cpus),
            (Some(3.0), Some(3.0), Some(3.0))
        );
        assert_eq!((c.cpu_seconds, c.runqueue_wait_seconds), (3.0, 3.0));
        assert_eq!(
            (c.context_switches.voluntary, c.context_switches.involuntary),
            (3, 3)
        );
        assert_eq!((c.network.rx_packets, c.network.tx_bytes), (3, 3));
        assert_eq!((c.block_write_bytes, c.oom_kills, c.tasks), (3, 3, 3));
        assert_eq!(percent_decode("a%2Fb%zz"), b"a/b%zz");
    }
}
