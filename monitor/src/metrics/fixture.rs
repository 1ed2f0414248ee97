//! A snapshot with finished and running jobs for the encoders' tests: label
//! values that need escaping, optional cgroup-file series present on some
//! jobs only, fractional and negative figures.
use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, UNIX_EPOCH},
};

use monitor_common::CgroupCounters;

use crate::daemon::snapshot::{CgroupFileStats, Health, JobView, Snapshot};

pub fn snapshot() -> Snapshot {
    Snapshot {
        jobs: jobs().into_iter().map(Arc::new).collect(),
        health: Health::default(),
    }
}

pub fn jobs() -> Vec<JobView> {
    let finished = JobView {
        jobid: "1001".into(),
        user: "alice".into(),
        uid: 1000,
        name: "sim \"big\" \\ run\nline two".into(),
        launcher: "slurm".into(),
        labels: BTreeMap::from([
            ("project".into(), "p-1".into()),
            ("note".into(), "a\"b\\c\nd".into()),
        ]),
        cgroup: "/slurm/uid_1000/job_1001".into(),
        counters: CgroupCounters {
            cpu_ns: 1_500_000_001,
            runqueue_wait_ns: 250_000,
            voluntary_switches: 12,
            involuntary_switches: 3,
            processes_started: 4,
            threads_started: 9,
            execs: 2,
            process_exits: 4,
            page_faults: 1234,
            oom_kills: 1,
            io_read_bytes: 1 << 40,
            io_write_bytes: 77,
            io_read_calls: 5,
            io_write_calls: 6,
            block_read_bytes: 4096,
            block_write_bytes: 8192,
            net_rx_bytes: 1500,
            net_tx_bytes: 60,
            net_rx_packets: 1,
            net_tx_packets: 2,
            rss_delta_bytes: 3 << 20,
            rss_peak_bytes: 1 << 20,
        },
        files: CgroupFileStats {
            memory_current: Some(0),
            memory_peak: Some(5 << 20),
            io_read_bytes: Some(4096),
            io_write_bytes: Some(8192),
            cpus_allocated: Some(4),
            memory_limit_bytes: Some(u64::MAX),
        },
        tasks: 0,
        start: UNIX_EPOCH + Duration::from_millis(1_764_480_000_123),
        end: Some(UNIX_EPOCH + Duration::from_nanos(1_764_480_100_987_654_321)),
        series: Default::default(),
    };
    let running = JobView {
        jobid: "bench-7-42".into(),
        user: "bob".into(),
        uid: 1001,
        name: String::new(),
        launcher: "monitor run".into(),
        labels: BTreeMap::new(),
        cgroup: "/monitor.slice/job-7".into(),
        counters: CgroupCounters {
            cpu_ns: 3,
            rss_delta_bytes: -4096,
            rss_peak_bytes: 8192,
            ..CgroupCounters::default()
        },
        files: CgroupFileStats {
            cpus_allocated: Some(2),
            ..CgroupFileStats::default()
        },
        tasks: 17,
        start: UNIX_EPOCH + Duration::from_secs(1_764_480_200),
        end: None,
        series: Default::default(),
    };
    let idle = JobView {
        jobid: "job00042".into(),
        user: "root".into(),
        uid: 0,
        name: "job00042".into(),
        launcher: "directory".into(),
        labels: BTreeMap::from([("empty".into(), String::new())]),
        cgroup: "/jobs.slice/job00042".into(),
        counters: CgroupCounters::default(),
        files: CgroupFileStats::default(),
        tasks: 0,
        start: UNIX_EPOCH,
        end: Some(UNIX_EPOCH + Duration::from_secs(1)),
        series: Default::default(),
    };
    vec![finished, running, idle]
}
