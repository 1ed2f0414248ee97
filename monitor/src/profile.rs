//! A job's profile: every per-job figure, as the JSON API shows it and the
//! state store keeps it once the job has ended (then frozen).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    daemon::snapshot::JobView,
    metrics::encode::{seconds, unix_seconds},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Running,
    Finished,
}

pub fn state_of(job: &JobView) -> JobState {
    if job.end.is_some() { JobState::Finished } else { JobState::Running }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Switches {
    pub voluntary: u64,
    pub involuntary: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Network {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
}

/// One job as the API shows it; the same figures as /metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobJson {
    pub jobid: String,
    pub user: String,
    pub uid: u32,
    pub name: String,
    pub launcher: String,
    pub labels: BTreeMap<String, String>,
    pub cgroup: String,
    pub state: JobState,
    pub start_time: f64,
    pub end_time: Option<f64>,
    pub tasks: u64,
    pub cpu_seconds: f64,
    pub runqueue_wait_seconds: f64,
    pub context_switches: Switches,
    pub processes_started: u64,
    pub threads_started: u64,
    pub execs: u64,
    pub processes_exited: u64,
    pub memory_rss_bytes: u64,
    pub memory_rss_peak_bytes: u64,
    pub page_faults: u64,
    pub oom_kills: u64,
    pub io_read_bytes: u64,
    pub io_write_bytes: u64,
    pub block_read_bytes: u64,
    pub block_write_bytes: u64,
    pub network: Network,
}

impl From<&JobView> for JobJson {
    fn from(job: &JobView) -> Self {
        let c = &job.counters;
        let rss = c.rss_delta_bytes.max(0) as u64;
        JobJson {
            jobid: job.jobid.clone(),
            user: job.user.clone(),
            uid: job.uid,
            name: job.name.clone(),
            launcher: job.launcher.clone(),
            labels: job.labels.clone(),
            cgroup: job.cgroup.clone(),
            state: state_of(job),
            start_time: unix_seconds(job.start),
            end_time: job.end.map(unix_seconds),
            tasks: job.tasks,
            cpu_seconds: seconds(c.cpu_ns),
            runqueue_wait_seconds: seconds(c.runqueue_wait_ns),
            context_switches: Switches {
                voluntary: c.voluntary_switches,
                involuntary: c.involuntary_switches,
            },
            processes_started: c.processes_started,
            threads_started: c.threads_started,
            execs: c.execs,
            processes_exited: c.process_exits,
            memory_rss_bytes: rss,
            memory_rss_peak_bytes: c.rss_peak_bytes.max(rss),
            page_faults: c.page_faults,
            oom_kills: c.oom_kills,
            io_read_bytes: c.io_read_bytes,
            io_write_bytes: c.io_write_bytes,
            block_read_bytes: c.block_read_bytes,
            block_write_bytes: c.block_write_bytes,
            network: Network {
                rx_bytes: c.net_rx_bytes,
                tx_bytes: c.net_tx_bytes,
                rx_packets: c.net_rx_packets,
                tx_packets: c.net_tx_packets,
            },
        }
    }
}

