//! Pages of finished jobs: their sizes, the `before=` cursor a Link header
//! carries, and the merge of the snapshot's jobs with a page of the store's.
use std::collections::HashSet;

use axum::http::Uri;
use serde::Deserialize;
use thiserror::Error;

use crate::{
    client::http::percent_encode,
    profile::{JobJson, JobState},
    snapshot::JobView,
    store::PageCursor,
};

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
    pub(super) limit: usize,
    pub(super) after: Option<PageCursor>,
}

/// The request again, for the page after `next`.
pub(super) fn next_page(uri: &Uri, next: &PageCursor) -> String {
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
pub(super) fn cursor_text(cursor: &PageCursor) -> String {
    format!(
        "{}:{}:{}:{}",
        cursor.end_time, cursor.uid, cursor.start_time, cursor.jobid
    )
}

pub(super) fn parse_cursor(text: &str) -> Option<PageCursor> {
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

/// One answer's jobs, and where the next page starts when there may be one.
#[derive(Debug)]
pub(super) struct Listed {
    pub(super) jobs: Vec<JobJson>,
    pub(super) next: Option<PageCursor>,
}

/// A finished job's place in the listing.
pub(super) fn place(job: &JobJson) -> PageCursor {
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
pub(super) fn merge<'a>(
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
