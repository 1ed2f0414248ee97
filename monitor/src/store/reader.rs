//! The read-only connection the job API reads through.
use std::{
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
};

use rusqlite::{Connection, OpenFlags};

use super::{BUSY_TIMEOUT, DB_FILE, ProfileQuery, StoreError, query, schema};

/// A read-only connection for the HTTP API, beside the writer's (rather than
/// sending queries through the writer thread: simpler, and a query never
/// waits behind a commit's fsync). One connection behind a mutex, shared in
/// an `Arc` by all tasks: a query on it takes microseconds (the latest 100
/// of 30,000 profiles: ~50 µs), while opening a connection per query costs
/// ~0.25-0.6 ms (file open, WAL index, schema read) for nothing.
pub struct StoreReader {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl StoreReader {
    /// Opens `dir/jobs.db` read-only; it must exist at the current schema
    /// version (open the [`Store`](super::Store) first).
    pub fn open(dir: &Path) -> Result<StoreReader, StoreError> {
        let path = dir.join(DB_FILE);
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(StoreError::sqlite(&path, "opening read-only"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(StoreError::sqlite(&path, "setting the busy timeout"))?;
        schema::check_current(&conn, &path)?;
        Ok(StoreReader {
            conn: Mutex::new(conn),
            path,
        })
    }

    pub fn profiles(&self, query: &ProfileQuery) -> Result<Vec<String>, StoreError> {
        query::profiles(&self.conn(), &self.path, query)
    }

    #[cfg(test)]
    pub fn count(&self) -> Result<u64, StoreError> {
        query::count(&self.conn(), &self.path)
    }

    #[cfg(test)]
    pub fn registry(&self) -> Result<Option<String>, StoreError> {
        query::registry(&self.conn(), &self.path)
    }

    pub(super) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic mid-query leaves nothing half-done in a read connection.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
