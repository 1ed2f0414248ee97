//! The daemon's state store: finished-job profiles kept for good, and the
//! live-job registry kept for a restart, in an embedded SQLite database
//! (`<state dir>/jobs.db`).
//!
//! The store knows nothing of the daemon's types: a profile and the registry
//! are opaque JSON text, plus the few columns the queries need. Writes go
//! through one [`Store`], normally owned by the writer thread
//! ([`writer::spawn`]) so the sampler never waits for the disk. Readers
//! (the HTTP API) open a [`StoreReader`]: a second, read-only connection to
//! the same file, which WAL lets read while the writer writes. Both block on
//! the disk, so async code calls them through `spawn_blocking`.
//!
//! Crash safety: WAL journal with `synchronous=FULL`, so a commit that
//! returned survives a power loss, for one fsync per commit (one commit per
//! sample at most).
//!
//! The modules: [`database`] opens the file and commits, [`prune`] bounds
//! it, [`reader`] reads it for the API, [`query`] and [`schema`] hold the
//! SQL, [`writer`] is the thread that owns the [`Store`].
mod database;
mod error;
mod prune;
mod query;
mod reader;
mod schema;
#[cfg(test)]
pub(crate) mod test_dir;
#[cfg(test)]
pub(crate) mod tests;
pub mod writer;

use std::time::Duration;

pub use self::{
    database::Store,
    error::StoreError,
    prune::trim_to_level,
    query::PageCursor,
    reader::StoreReader,
    writer::{StoreFigures, StoreHandle, WriterConfig, WriterStats, spawn as spawn_writer},
};

/// The database's file name in the state directory.
pub const DB_FILE: &str = "jobs.db";

/// How long a connection waits for another one's lock before failing. Only
/// the writer writes, so this covers checkpoints and a second process
/// (a reader's open, a mistakenly started second daemon).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// One finished job, frozen.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub jobid: String,
    pub uid: u32,
    pub user: String,
    /// Unix seconds.
    pub start_time: f64,
    /// Unix seconds.
    pub end_time: f64,
    /// The whole profile as the API shows it; opaque here.
    pub json: String,
}

/// What one sample hands over: stored in one transaction.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub profiles: Vec<Profile>,
    /// The live-job registry (opaque JSON) to keep for a restart; `None`
    /// leaves the stored one as it is.
    pub registry: Option<String>,
    /// Opaque ids the writer hands back once the batch is durable (see
    /// [`writer`]).
    pub release: Vec<u64>,
}

/// Which profiles to list; all filters are optional and combine with AND.
/// Results are most recent first (see [`PageCursor`] for the exact order).
#[derive(Debug, Clone, Default)]
pub struct ProfileQuery {
    pub user: Option<String>,
    /// Only this owner's (the API socket's per-user view).
    pub uid: Option<u32>,
    pub jobid: Option<String>,
    /// Only jobs that ended at or after this (unix seconds).
    pub since: Option<f64>,
    /// At most this many, the most recent.
    pub limit: Option<usize>,
    /// Only those listed after this one (the next page).
    pub after: Option<PageCursor>,
}

impl Profile {
    /// SQLite stores a NaN as NULL, which the NOT NULL columns refuse: one
    /// such profile would fail every retry of the transaction it is in, so
    /// it is refused before it gets there.
    fn check(&self) -> Result<(), StoreError> {
        if !self.start_time.is_finite() || !self.end_time.is_finite() {
            return Err(StoreError::InvalidProfile {
                jobid: self.jobid.clone(),
                uid: self.uid,
                reason: "its start or end time is not a finite number",
            });
        }
        Ok(())
    }
}

impl Batch {
    pub fn check(&self) -> Result<(), StoreError> {
        self.profiles.iter().try_for_each(Profile::check)
    }
}
