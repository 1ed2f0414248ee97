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
//!
//! Here the routes and their handlers; [`filter`] and [`paging`] say which
//! jobs a request gets, [`answers`] how they are sent.
mod answers;
mod filter;
mod paging;
#[cfg(test)]
mod tests;

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use axum::{
    Extension, Json, Router,
    extract::{Path, Query, State},
    http::{StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::get,
};

use self::{
    answers::{answer, bad_request, server_error},
    paging::merge,
};
pub use self::{
    filter::JobFilter,
    paging::{Page, PageError, PageQuery, PageSizeError, PageSizes},
};
use crate::{
    profile::JobJson,
    snapshot::SharedSnapshot,
    store::{ProfileQuery, StoreReader},
    system::log_every::LogEvery,
};

/// Jobs listed from which an answer's parsed profiles (megabytes, each
/// job in small blocks, freed once its text is written) go back to the
/// kernel at once rather than at the sampler's next trim, seconds later.
const LARGE_PAGE: usize = 1000;

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
    let large = listed.jobs.len() >= LARGE_PAGE;
    let response = answer(listed, &uri);
    if large {
        // Off the async workers; the answer need not wait for it.
        tokio::task::spawn_blocking(crate::system::memory::release_free_memory);
    }
    response
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
        let error = serde_json::json!({
            "error": format!("no job {jobid:?} (running, or finished and in the state store)")
        });
        return (StatusCode::NOT_FOUND, Json(error)).into_response();
    }
    answer(listed, &uri)
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
