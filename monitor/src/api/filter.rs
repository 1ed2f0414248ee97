//! The list request's filters, on the snapshot's jobs and as a store query.
use serde::Deserialize;

use super::paging::Page;
use crate::{
    profile::{JobState, state_of},
    snapshot::JobView,
    store::ProfileQuery,
    system::time::unix_seconds,
};

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

impl JobFilter {
    pub(super) fn matches(&self, job: &JobView) -> bool {
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

    pub(super) fn wants_finished(&self) -> bool {
        self.state.is_none_or(|s| s == JobState::Finished)
    }
}
