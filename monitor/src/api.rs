//! The job API: JSON over the web port and over the API socket (where
//! `monitor jobs` reads it). Running jobs come from the latest snapshot;
//! finished ones from the snapshot (those still in `--job.retention`) and
//! the state store (every profile it keeps):
//!
//! - `GET /api/v1/jobs?user=alice&state=running|finished&since=UNIXTIME&limit=N&before=CURSOR`:
//!   every filter optional; `since` keeps jobs running at or ended after
//!   that time. Running jobs come first, oldest first, then finished ones,
//!   most recent first, a page of them: `limit` (default `--api.page-size`,
//!   at most `--api.max-page-size`, more is a 400). When the page is full
//!   the answer's `Link: <...>; rel="next"` header is the same request for
//!   the next page (`before=` the last job's place; running jobs are on the
//!   first page only);
//! - `GET /api/v1/jobs/{jobid}?limit=N&before=CURSOR`: the jobs with that id
//!   (one per user, and per run when an id was reused), paged the same way,
//!   or 404.
use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use axum::{
    Extension, Json, Router,
    extract::{Path, Query, State},
    http::{HeaderValue, StatusCode, Uri, header::LINK},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Deserialize;
use thiserror::Error;

use crate::{
    client::http::percent_encode,
    profile::{JobJson, JobState, state_of},
    snapshot::{JobView, SharedSnapshot},
    store::{PageCursor, ProfileQuery, StoreReader},
    system::{log_every::LogEvery, time::unix_seconds},
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
    pub pages: PageSizes,
    pub stats: Arc<ApiStats>,
}

/// Requests the API refused, for the metrics.
#[derive(Debug)]
pub struct ApiStats {
    page_too_large: AtomicU64,
    bad_cursor: AtomicU64,
    log: Mutex<LogEvery>,
}

impl Default for ApiStats {
    fn default() -> Self {
        ApiStats {
            page_too_large: AtomicU64::default(),
            bad_cursor: AtomicU64::default(),
            log: Mutex::new(LogEvery::new(Duration::from_secs(10))),
        }
    }
}

impl ApiStats {
    /// Refusals by reason (the metric's label).
    pub fn refused(&self) -> [(&'static str, u64); 2] {
        [
            ("page_too_large", self.page_too_large.load(Relaxed)),
            ("bad_cursor", self.bad_cursor.load(Relaxed)),
        ]
    }

    /// Counts a refusal, logged at most once per interval.
    fn refuse(&self, refused: &PageError) {
        let counter = match refused {
            PageError::TooLarge { .. } => &self.page_too_large,
            PageError::Cursor => &self.bad_cursor,
        };
        counter.fetch_add(1, Relaxed);
        let due = self
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .note(1, std::time::Instant::now());
        if let Some(n) = due {
            log::warn!(
                "job API: {n} requests refused since the last such line, the latest: {refused}"
            );
        }
    }
}

/// How many finished jobs one answer lists: `--api.page-size` when the
/// request names no `limit`, at most `--api.max-page-size`. Each is built
/// in memory (~1 KiB of JSON for a typical job), so this bounds what one request costs.
#[derive(Debug, Clone, Copy)]
pub struct PageSizes {
    default: usize,
    max: usize,
}

#[derive(Debug, Error)]
#[error("--api.page-size ({default}) is larger than --api.max-page-size ({max})")]
pub struct PageSizeError {
    default: u64,
    max: u64,
}

impl PageSizes {
    pub fn new(default: u64, max: u64) -> Result<Self, PageSizeError> {
        if default > max {
            return Err(PageSizeError { default, max });
        }
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        Ok(PageSizes {
            default: size(default),
            max: size(max),
        })
    }

    /// The page a request asks for, checked: its size and its cursor.
    pub fn page(&self, asked: &PageQuery) -> Result<Page, PageError> {
        let limit = asked.limit.unwrap_or(self.default);
        if limit > self.max {
            return Err(PageError::TooLarge {
                limit,
                max: self.max,
            });
        }
        let after = match asked.before.as_deref() {
            None => None,
            Some(text) => Some(parse_cursor(text).ok_or(PageError::Cursor)?),
        };
        Ok(Page { limit, after })
    }
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

/// A page that is not given: answered 400 with the reason.
#[derive(Debug, Error)]
pub enum PageError {
    #[error(
        "limit {limit} is over the largest page, {max} (--api.max-page-size): ask for fewer \
         and follow the answer's Link header (rel=\"next\") to the next page"
    )]
    TooLarge { limit: usize, max: usize },
    #[error(
        "before= is not a place this API gave in a Link header (END_TIME:UID:START_TIME:JOBID)"
    )]
    Cursor,
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
    /// Only those listed after this place (from a Link header).
    pub before: Option<String>,
}

/// Which page of finished jobs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Finished jobs listed at most.
    pub limit: Option<usize>,
    /// Only those listed after this place (from a Link header).
    pub before: Option<String>,
}

/// A page as asked for, checked.
#[derive(Debug, Clone)]
pub struct Page {
    limit: usize,
    after: Option<PageCursor>,
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

    /// The store query for this filter and its page, limited to `only`'s
    /// jobs if set.
    pub fn profile_query(&self, page: &Page, only: Option<u32>) -> ProfileQuery {
        ProfileQuery {
            user: self.user.clone(),
            uid: only,
            jobid: None,
            since: self.since,
            limit: Some(page.limit),
            after: page.after.clone(),
        }
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
    uri: Uri,
    Query(filter): Query<JobFilter>,
) -> Response {
    let asked = PageQuery {
        limit: filter.limit,
        before: filter.before.clone(),
    };
    let page = match page_of(&state, &asked) {
        Ok(page) => page,
        Err(response) => return *response,
    };
    let only = state.only_uid(viewer);
    let query = filter.profile_query(&page, only);
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
    let listed = merge(
        snapshot
            .jobs
            .iter()
            .map(|job| &**job)
            .filter(|job| filter.matches(job) && only.is_none_or(|uid| job.uid == uid)),
        stored,
        &page,
    );
    answer(listed, &uri)
}

/// The page `asked` names, or the 400 (counted) that refuses it.
fn page_of(state: &ApiState, asked: &PageQuery) -> Result<Page, Box<Response>> {
    state.pages.page(asked).map_err(|refused| {
        state.stats.refuse(&refused);
        Box::new(bad_request(refused.to_string()))
    })
}

async fn one(
    State(state): State<ApiState>,
    viewer: Option<Extension<Viewer>>,
    uri: Uri,
    Path(jobid): Path<String>,
    Query(asked): Query<PageQuery>,
) -> Response {
    let page = match page_of(&state, &asked) {
        Ok(page) => page,
        Err(response) => return *response,
    };
    let only = state.only_uid(viewer);
    let query = ProfileQuery {
        jobid: Some(jobid.clone()),
        uid: only,
        limit: Some(page.limit),
        after: page.after.clone(),
        ..Default::default()
    };
    let stored = match stored(&state, query).await {
        Ok(stored) => stored,
        Err(response) => return response,
    };
    let snapshot = state.shared.latest();
    let listed = merge(
        snapshot
            .jobs
            .iter()
            .map(|job| &**job)
            .filter(|job| job.jobid == jobid && only.is_none_or(|uid| job.uid == uid)),
        stored,
        &page,
    );
    if listed.jobs.is_empty() && page.after.is_none() {
        let error = serde_json::json!({ "error": format!("no job {jobid:?} (running, or finished and in the state store)") });
        return (StatusCode::NOT_FOUND, Json(error)).into_response();
    }
    answer(listed, &uri)
}

/// The jobs as JSON, with a Link to the next page when this one is full.
fn answer(listed: Listed, uri: &Uri) -> Response {
    let mut response = Json(listed.jobs).into_response();
    if let Some(next) = listed.next {
        let link = format!("<{}>; rel=\"next\"", next_page(uri, &next));
        // Built from a URI and percent-encoded text: always a valid value.
        if let Ok(value) = HeaderValue::from_str(&link) {
            response.headers_mut().insert(LINK, value);
        }
    }
    response
}

/// The request again, for the page after `next`.
fn next_page(uri: &Uri, next: &PageCursor) -> String {
    let mut query: Vec<&str> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty() && !pair.starts_with("before="))
        .collect();
    let before = format!("before={}", percent_encode(&cursor_text(next)));
    query.push(&before);
    format!("{}?{}", uri.path(), query.join("&"))
}

/// `END_TIME:UID:START_TIME:JOBID` (the job id last: it may hold a `:`).
/// Rust prints an f64 in the shortest form that reads back the same, so
/// the place is exact.
fn cursor_text(cursor: &PageCursor) -> String {
    format!(
        "{}:{}:{}:{}",
        cursor.end_time, cursor.uid, cursor.start_time, cursor.jobid
    )
}

fn parse_cursor(text: &str) -> Option<PageCursor> {
    let mut parts = text.splitn(4, ':');
    let end_time: f64 = parts.next()?.parse().ok()?;
    let uid = parts.next()?.parse().ok()?;
    let start_time: f64 = parts.next()?.parse().ok()?;
    let jobid = parts.next()?.to_string();
    (end_time.is_finite() && start_time.is_finite()).then_some(PageCursor {
        end_time,
        uid,
        jobid,
        start_time,
    })
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

fn bad_request(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}

/// One answer's jobs, and where the next page starts when there may be one.
#[derive(Debug)]
struct Listed {
    jobs: Vec<JobJson>,
    next: Option<PageCursor>,
}

/// A finished job's place in the listing.
fn place(job: &JobJson) -> PageCursor {
    PageCursor {
        end_time: job.end_time.unwrap_or(0.0),
        uid: job.uid,
        jobid: job.jobid.clone(),
        start_time: job.start_time,
    }
}

/// Snapshot jobs and a page of stored profiles, one entry per job run (a
/// profile also in the snapshot's retention is the same run): running jobs
/// first (on the first page), then the page of finished ones. The store's
/// page is the first `limit` after the cursor, so the first `limit` of
/// both together are too.
fn merge<'a>(
    snapshot: impl Iterator<Item = &'a JobView>,
    stored: Vec<JobJson>,
    page: &Page,
) -> Listed {
    let mut running = Vec::new();
    let mut finished = Vec::new();
    for job in snapshot.map(JobJson::from) {
        match job.state {
            JobState::Running if page.after.is_none() => running.push(job),
            JobState::Running => {}
            JobState::Finished => finished.push(job),
        }
    }
    if let Some(after) = &page.after {
        finished.retain(|job| {
            let p = place(job);
            after.precedes(p.end_time, p.uid, &p.jobid, p.start_time)
        });
    }
    let key = |job: &JobJson| (job.uid, job.jobid.clone(), job.start_time.to_bits());
    let mut seen: HashSet<_> = finished.iter().map(key).collect();
    finished.extend(stored.into_iter().filter(|job| seen.insert(key(job))));
    running.sort_by(|a, b| a.start_time.total_cmp(&b.start_time));
    // Most recent first, in the store's order (see PageCursor).
    finished.sort_by(|a, b| {
        let (a, b) = (place(a), place(b));
        b.end_time
            .total_cmp(&a.end_time)
            .then(b.uid.cmp(&a.uid))
            .then(b.jobid.cmp(&a.jobid))
            .then(b.start_time.total_cmp(&a.start_time))
    });
    let full = finished.len() >= page.limit && page.limit > 0;
    finished.truncate(page.limit);
    let next = full.then(|| finished.last().map(place)).flatten();
    running.extend(finished);
    Listed {
        jobs: running,
        next,
    }
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
            series: Default::default(),
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
        let all = Page {
            limit: 10,
            after: None,
        };
        let merged = merge(
            [&running, &in_retention].into_iter(),
            vec![stored_too, older],
            &all,
        );
        let ids: Vec<&str> = merged.jobs.iter().map(|j| j.jobid.as_str()).collect();
        assert_eq!(ids, vec!["1", "2", "3"]);
        assert!(merged.next.is_none(), "the page is not full");
        let none = Page {
            limit: 0,
            after: None,
        };
        let limited = merge(
            [&running].into_iter(),
            vec![JobJson::from(&job("3", "bob", Some(50)))],
            &none,
        );
        assert_eq!(limited.jobs.len(), 1, "the limit caps finished jobs only");
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

    #[test]
    fn pages_of_snapshot_and_store_follow_each_other() {
        let running = job("r", "alice", None);
        let in_memory = job("m", "alice", Some(300));
        let stored: Vec<JobJson> = [100, 200, 300]
            .iter()
            .map(|&end| JobJson::from(&job(&format!("s{end}"), "bob", Some(end))))
            .collect();
        let first = merge(
            [&running, &in_memory].into_iter(),
            stored.clone(),
            &Page {
                limit: 2,
                after: None,
            },
        );
        let ids: Vec<&str> = first.jobs.iter().map(|j| j.jobid.as_str()).collect();
        // Same end time: "s300" before "m" (job id descending).
        assert_eq!(ids, ["r", "s300", "m"]);
        let next = first.next.expect("a full page has a next one");
        let text = cursor_text(&next);
        assert_eq!(parse_cursor(&text), Some(next.clone()));
        // The store's answer after the cursor: what it would send.
        let rest: Vec<JobJson> = stored
            .into_iter()
            .filter(|j| {
                let p = place(j);
                next.precedes(p.end_time, p.uid, &p.jobid, p.start_time)
            })
            .collect();
        let second = merge(
            [&running, &in_memory].into_iter(),
            rest,
            &Page {
                limit: 2,
                after: Some(next),
            },
        );
        let ids: Vec<&str> = second.jobs.iter().map(|j| j.jobid.as_str()).collect();
        assert_eq!(ids, ["s200", "s100"], "running jobs only on the first page");
    }

    #[test]
    fn a_cursor_reads_back_exactly_and_nonsense_is_refused() {
        let cursor = PageCursor {
            end_time: 1_795_000_000.123_456_7,
            uid: 1000,
            jobid: "a:b/c".into(),
            start_time: 0.1,
        };
        assert_eq!(parse_cursor(&cursor_text(&cursor)), Some(cursor));
        assert_eq!(parse_cursor("1:2:3"), None);
        assert_eq!(parse_cursor("NaN:2:3:x"), None);
        assert_eq!(parse_cursor("1:-2:3:x"), None);
        let uri: Uri = "/api/v1/jobs?user=alice&before=1%3A2&limit=5"
            .parse()
            .unwrap();
        let next = PageCursor {
            end_time: 2.5,
            uid: 7,
            jobid: "j 1".into(),
            start_time: 1.0,
        };
        assert_eq!(
            next_page(&uri, &next),
            "/api/v1/jobs?user=alice&limit=5&before=2.5%3A7%3A1%3Aj%201"
        );
    }
}
