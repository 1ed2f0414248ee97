//! The job API: JSON over the web port and over the API socket (where
//! `monitor jobs` reads it). Running jobs come from the latest snapshot;
//! finished ones from the snapshot (those still in `--job.retention`) and
//! the state store (every profile it keeps):
//!
//! - `GET /api/v1/jobs?user=alice&state=running|finished&since=UNIXTIME&limit=N`:
//!   every filter optional; `since` keeps jobs running at or ended after
//!   that time; `limit` caps the finished jobs listed, most recent first.
//!   Running jobs come first, oldest first, then finished ones, most recent first;
//! - `GET /api/v1/jobs/{jobid}`: the jobs with that id (one per user, and
//!   per run when an id was reused), or 404.
use std::{collections::HashSet, sync::Arc};

use axum::{
    Extension, Json, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Deserialize;

use crate::{
    daemon::snapshot::{JobView, SharedSnapshot},
    metrics::encode::unix_seconds,
    profile::{JobJson, JobState, state_of},
    store::{ProfileQuery, StoreReader},
};

/// What the API handlers read.
#[derive(Clone)]
pub struct ApiState {
    pub shared: Arc<SharedSnapshot>,
    /// The state store; None when it could not be opened (the API then
    /// lists what the snapshot has, and says so in the log).
    pub store: Option<Arc<StoreReader>>,
    /// `--api.private`: the API socket shows each uid its own jobs only
    /// (root sees all), as Slurm's `PrivateData=jobs`.
    pub private: bool,
}

/// Who asks: the uid at the other end of the API socket; None on the web
/// port, whose clients have no uid (protect it with `--web.config.file`).
#[derive(Debug, Clone, Copy)]
pub struct Viewer(pub Option<u32>);

impl ApiState {
    /// The only uid whose jobs `viewer` may see, if it is limited to one.
    fn only_uid(&self, viewer: Option<Extension<Viewer>>) -> Option<u32> {
        let uid = viewer.and_then(|Extension(Viewer(uid))| uid)?;
        (self.private && uid != 0).then_some(uid)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFilter {
    pub user: Option<String>,
    pub state: Option<JobState>,
    /// Unix seconds.
    pub since: Option<f64>,
    /// Finished jobs listed at most.
    pub limit: Option<usize>,
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

    fn wants_finished(&self) -> bool {
        self.state.is_none_or(|s| s == JobState::Finished)
    }
}

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/jobs", get(list))
        .route("/api/v1/jobs/{jobid}", get(one))
}

async fn list(
    State(state): State<ApiState>,
    viewer: Option<Extension<Viewer>>,
    Query(filter): Query<JobFilter>,
) -> Response {
    let only = state.only_uid(viewer);
    let query = ProfileQuery {
        user: filter.user.clone(),
        uid: only,
        jobid: None,
        since: filter.since,
        limit: filter.limit,
    };
    let stored = if filter.wants_finished() {
        stored(&state, query).await
    } else {
        Ok(Vec::new())
    };
    let stored = match stored {
        Ok(stored) => stored,
        Err(response) => return response,
    };
    let snapshot = state.shared.latest();
    let jobs = merge(
        snapshot
            .jobs
            .iter()
            .map(|job| &**job)
            .filter(|job| filter.matches(job) && only.is_none_or(|uid| job.uid == uid)),
        stored,
        filter.limit,
    );
    Json(jobs).into_response()
}

async fn one(
    State(state): State<ApiState>,
    viewer: Option<Extension<Viewer>>,
    Path(jobid): Path<String>,
) -> Response {
    let only = state.only_uid(viewer);
    let query = ProfileQuery {
        jobid: Some(jobid.clone()),
        uid: only,
        ..Default::default()
    };
    let stored = match stored(&state, query).await {
        Ok(stored) => stored,
        Err(response) => return response,
    };
    let snapshot = state.shared.latest();
    let jobs = merge(
        snapshot
            .jobs
            .iter()
            .map(|job| &**job)
            .filter(|job| job.jobid == jobid && only.is_none_or(|uid| job.uid == uid)),
        stored,
        None,
    );
    if jobs.is_empty() {
        let error = serde_json::json!({ "error": format!("no job {jobid:?} (running, or finished and in the state store)") });
        return (StatusCode::NOT_FOUND, Json(error)).into_response();
    }
    Json(jobs).into_response()
}

/// Profiles from the store (none without one); a store that fails is a 500.
async fn stored(state: &ApiState, query: ProfileQuery) -> Result<Vec<JobJson>, Response> {
    let Some(store) = state.store.clone() else {
        return Ok(Vec::new());
    };
    let read =
        tokio::task::spawn_blocking(move || store.profiles(&query).map_err(|e| e.to_string()))
            .await;
    match read.map_err(|e| e.to_string()).and_then(|texts| texts) {
        Ok(texts) => Ok(crate::profile::parse_stored(&texts)),
        Err(e) => Err(server_error(format!("reading the state store: {e}"))),
    }
}

fn server_error(message: String) -> Response {
    log::warn!("{message}");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}

/// Snapshot jobs and stored profiles, one entry per job run (a profile
/// also in the snapshot's retention is the same run), running jobs first.
fn merge<'a>(
    snapshot: impl Iterator<Item = &'a JobView>,
    stored: Vec<JobJson>,
    limit: Option<usize>,
) -> Vec<JobJson> {
    let mut running = Vec::new();
    let mut finished = Vec::new();
    for job in snapshot.map(JobJson::from) {
        match job.state {
            JobState::Running => running.push(job),
            JobState::Finished => finished.push(job),
        }
    }
    let key = |job: &JobJson| (job.uid, job.jobid.clone(), job.start_time.to_bits());
    let mut seen: HashSet<_> = finished.iter().map(key).collect();
    finished.extend(stored.into_iter().filter(|job| seen.insert(key(job))));
    running.sort_by(|a, b| a.start_time.total_cmp(&b.start_time));
    finished.sort_by(|a, b| {
        b.end_time
            .unwrap_or(0.0)
            .total_cmp(&a.end_time.unwrap_or(0.0))
    });
    if let Some(limit) = limit {
        finished.truncate(limit);
    }
    running.extend(finished);
    running
}

#[cfg(test)]
mod tests {
    use std::{
        collections::BTreeMap,
        time::{Duration, SystemTime},
    };

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
    fn merging_keeps_one_entry_per_run_running_first() {
        let running = job("1", "alice", None);
        let in_retention = job("2", "alice", Some(100));
        let stored_too = JobJson::from(&in_retention);
        let older = JobJson::from(&job("3", "bob", Some(50)));
        let merged = merge(
            [&running, &in_retention].into_iter(),
            vec![stored_too, older],
            None,
        );
        let ids: Vec<&str> = merged.iter().map(|j| j.jobid.as_str()).collect();
        assert_eq!(ids, vec!["1", "2", "3"]);
        let limited = merge(
            [&running].into_iter(),
            vec![JobJson::from(&job("3", "bob", Some(50)))],
            Some(0),
        );
        assert_eq!(limited.len(), 1, "the limit caps finished jobs only");
    }

    #[test]
    fn serializes_state_and_times() {
        let json = serde_json::to_value(JobJson::from(&job("7", "alice", Some(42)))).unwrap();
        let back: JobJson = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(
            back,
            JobJson::from(&job("7", "alice", Some(42))),
            "a stored profile reads back"
        );
        assert_eq!(json["state"], "finished");
        assert_eq!(json["end_time"], 42.0);
        assert_eq!(json["network"]["rx_bytes"], 0);
    }
}
