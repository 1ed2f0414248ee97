//! The job API, JSON over the web port, from the latest snapshot:
//!
//! - `GET /api/v1/jobs?user=alice&state=running|finished&since=UNIXTIME`:
//!   live jobs and finished ones still in retention, filtered (all filters
//!   optional; `since` keeps jobs running at or ended after that time);
//! - `GET /api/v1/jobs/{jobid}`: the jobs with that id (one per user that
//!   has one), or 404.
use std::{collections::BTreeMap, sync::Arc};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use serde::{Deserialize, Serialize};

use crate::{
    daemon::snapshot::{JobView, SharedSnapshot},
    metrics::encode::{seconds, unix_seconds},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Running,
    Finished,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFilter {
    pub user: Option<String>,
    pub state: Option<JobState>,
    /// Unix seconds.
    pub since: Option<f64>,
}

impl JobFilter {
    fn matches(&self, job: &JobView) -> bool {
        let state = state_of(job);
        self.user.as_ref().is_none_or(|user| *user == job.user)
            && self.state.is_none_or(|wanted| wanted == state)
            && self
                .since
                .is_none_or(|since| job.end.is_none_or(|end| unix_seconds(end) >= since))
    }
}

fn state_of(job: &JobView) -> JobState {
    if job.end.is_some() { JobState::Finished } else { JobState::Running }
}

#[derive(Debug, Serialize)]
pub struct Switches {
    voluntary: u64,
    involuntary: u64,
}

#[derive(Debug, Serialize)]
pub struct Network {
    rx_bytes: u64,
    tx_bytes: u64,
    rx_packets: u64,
    tx_packets: u64,
}

/// One job as the API shows it; the same figures as /metrics.
#[derive(Debug, Serialize)]
pub struct JobJson {
    jobid: String,
    user: String,
    uid: u32,
    name: String,
    launcher: String,
    labels: BTreeMap<String, String>,
    cgroup: String,
    state: JobState,
    start_time: f64,
    end_time: Option<f64>,
    tasks: u64,
    cpu_seconds: f64,
    runqueue_wait_seconds: f64,
    context_switches: Switches,
    processes_started: u64,
    threads_started: u64,
    execs: u64,
    processes_exited: u64,
    memory_rss_bytes: u64,
    memory_rss_peak_bytes: u64,
    page_faults: u64,
    oom_kills: u64,
    io_read_bytes: u64,
    io_write_bytes: u64,
    block_read_bytes: u64,
    block_write_bytes: u64,
    network: Network,
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

pub fn routes() -> Router<Arc<SharedSnapshot>> {
    Router::new()
        .route("/api/v1/jobs", get(list))
        .route("/api/v1/jobs/{jobid}", get(one))
}

async fn list(State(shared): State<Arc<SharedSnapshot>>, Query(filter): Query<JobFilter>) -> Json<Vec<JobJson>> {
    let snapshot = shared.latest();
    Json(snapshot.jobs.iter().filter(|job| filter.matches(job)).map(JobJson::from).collect())
}

async fn one(State(shared): State<Arc<SharedSnapshot>>, Path(jobid): Path<String>) -> Response {
    let snapshot = shared.latest();
    let jobs: Vec<JobJson> = snapshot.jobs.iter().filter(|job| job.jobid == jobid).map(JobJson::from).collect();
    if jobs.is_empty() {
        let error = serde_json::json!({ "error": format!("no job {jobid:?} (running, or finished within --job.retention)") });
        return (StatusCode::NOT_FOUND, Json(error)).into_response();
    }
    Json(jobs).into_response()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    fn job(jobid: &str, user: &str, end: Option<u64>) -> JobView {
        JobView {
            jobid: jobid.into(),
            user: user.into(),
            uid: 1000,
            name: String::new(),
            launcher: "monitor".into(),
            labels: BTreeMap::new(),
            cgroup: "/monitor.slice/task-1-1".into(),
            counters: Default::default(),
            files: Default::default(),
            tasks: 0,
            start: SystemTime::UNIX_EPOCH,
            end: end.map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s)),
        }
    }

    #[test]
    fn filters_by_user_state_and_time() {
        let running = job("1", "alice", None);
        let old = job("2", "bob", Some(100));
        let recent = job("3", "alice", Some(200));
        let by_user = JobFilter {
            user: Some("alice".into()),
            ..Default::default()
        };
        assert!(by_user.matches(&running) && !by_user.matches(&old) && by_user.matches(&recent));
        let finished = JobFilter {
            state: Some(JobState::Finished),
            ..Default::default()
        };
        assert!(!finished.matches(&running) && finished.matches(&old));
        let since = JobFilter {
            since: Some(150.0),
            ..Default::default()
        };
        assert!(since.matches(&running) && !since.matches(&old) && since.matches(&recent));
    }

    #[test]
    fn serializes_state_and_times() {
        let json = serde_json::to_value(JobJson::from(&job("7", "alice", Some(42)))).unwrap();
        assert_eq!(json["state"], "finished");
        assert_eq!(json["end_time"], 42.0);
        assert_eq!(json["network"]["rx_bytes"], 0);
    }
}
