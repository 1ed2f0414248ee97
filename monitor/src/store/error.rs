//! The state store's errors.
use std::{
    io,
    path::{Path, PathBuf},
};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("creating the state directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("job database {path}: {what}: {source}")]
    Sqlite {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("job database {path}: migrating the schema to version {version}: {source}")]
    Migration {
        path: PathBuf,
        version: i64,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "job database {path} has schema version {found} (this monitor knows up to {known}): \
         it was made by a newer monitor; refusing to downgrade it"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error(
        "job database {path} has schema version {found}, not {expected}: \
         the daemon creates and migrates it when it starts"
    )]
    NotMigrated {
        path: PathBuf,
        found: i64,
        expected: i64,
    },
    #[error("job database {path}: the journal mode stayed {mode:?}, not WAL")]
    NotWal { path: PathBuf, mode: String },
    #[error("profile of job {jobid} (uid {uid}): {reason}")]
    InvalidProfile {
        jobid: String,
        uid: u32,
        reason: &'static str,
    },
    #[error("starting the job database writer thread: {0}")]
    Spawn(#[source] io::Error),
    #[error("the job database writer thread is gone (it panicked); the batch was not queued")]
    WriterGone,
    #[error("the job database writer thread panicked")]
    WriterPanicked,
    #[error("job database {path}: stopping with {profiles} profiles not written: {source}")]
    Unflushed {
        path: PathBuf,
        profiles: usize,
        #[source]
        source: Box<StoreError>,
    },
}

impl StoreError {
    /// A `map_err` adapter naming the file and the step that failed.
    pub(super) fn sqlite(
        path: &Path,
        what: &'static str,
    ) -> impl FnOnce(rusqlite::Error) -> StoreError {
        let path = path.to_path_buf();
        move |source| StoreError::Sqlite { path, what, source }
    }
}
