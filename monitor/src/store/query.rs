//! The read queries, shared by the writer's connection and the readers'.
use std::path::Path;

use rusqlite::{Connection, OptionalExtension as _, ToSql};

use super::{ProfileQuery, StoreError};

/// A place in the listing of finished jobs, which is by end time, most
/// recent first, then by uid, job id and start time, all descending: a
/// total order (uid, job id and start time name one run), the same for
/// the store and the daemon's memory, so a page can start right after the
/// last job of the one before without skipping or repeating any.
#[derive(Debug, Clone, PartialEq)]
pub struct PageCursor {
    pub end_time: f64,
    pub uid: u32,
    pub jobid: String,
    pub start_time: f64,
}

impl PageCursor {
    /// Whether a job with these keys is listed after the cursor.
    pub fn precedes(&self, end_time: f64, uid: u32, jobid: &str, start_time: f64) -> bool {
        let key = (end_time, uid, jobid, start_time);
        let cursor = (
            self.end_time,
            self.uid,
            self.jobid.as_str(),
            self.start_time,
        );
        key.0
            .total_cmp(&cursor.0)
            .then(key.1.cmp(&cursor.1))
            .then(key.2.cmp(cursor.2))
            .then(key.3.total_cmp(&cursor.3))
            .is_lt()
    }
}

/// The JSON of the matching profiles, most recent (by end time) first.
pub fn profiles(
    conn: &Connection,
    path: &Path,
    query: &ProfileQuery,
) -> Result<Vec<String>, StoreError> {
    let sql = StoreError::sqlite;
    // Only the filters given go into the SQL, so each combination gets the
    // plan (index) that fits it; `?1 IS NULL OR user = ?1` would not.
    let limit = query.limit.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
    let mut conditions = Vec::new();
    let mut args: Vec<&dyn ToSql> = Vec::new();
    if let Some(user) = &query.user {
        conditions.push("user = ?");
        args.push(user);
    }
    if let Some(uid) = &query.uid {
        conditions.push("uid = ?");
        args.push(uid);
    }
    if let Some(jobid) = &query.jobid {
        conditions.push("jobid = ?");
        args.push(jobid);
    }
    if let Some(since) = &query.since {
        conditions.push("end_time >= ?");
        args.push(since);
    }
    if let Some(after) = &query.after {
        // The first term lets the end_time indexes narrow the scan.
        conditions.push("end_time <= ? AND (end_time, uid, jobid, start_time) < (?, ?, ?, ?)");
        args.extend([
            &after.end_time as &dyn ToSql,
            &after.end_time,
            &after.uid,
            &after.jobid,
            &after.start_time,
        ]);
    }
    let mut text = String::from("SELECT json FROM profiles");
    if !conditions.is_empty() {
        text.push_str(" WHERE ");
        text.push_str(&conditions.join(" AND "));
    }
    text.push_str(" ORDER BY end_time DESC, uid DESC, jobid DESC, start_time DESC");
    if let Some(limit) = &limit {
        text.push_str(" LIMIT ?");
        args.push(limit);
    }
    let mut statement = conn
        .prepare_cached(&text)
        .map_err(sql(path, "preparing a profile query"))?;
    let rows = statement
        .query_map(&args[..], |row| row.get(0))
        .map_err(sql(path, "querying profiles"))?;
    rows.collect::<Result<_, _>>()
        .map_err(sql(path, "reading profiles"))
}

/// How many profiles are stored.
pub fn count(conn: &Connection, path: &Path) -> Result<u64, StoreError> {
    let count: i64 = conn
        .query_row("SELECT count(*) FROM profiles", [], |row| row.get(0))
        .map_err(StoreError::sqlite(path, "counting profiles"))?;
    Ok(count.max(0) as u64)
}

/// How many profiles each uid has stored.
pub fn count_per_uid(conn: &Connection, path: &Path) -> Result<Vec<(u32, u64)>, StoreError> {
    let sql = StoreError::sqlite;
    let mut statement = conn
        .prepare_cached("SELECT uid, count(*) FROM profiles GROUP BY uid")
        .map_err(sql(path, "preparing the count per uid"))?;
    let rows = statement
        .query_map([], |row| {
            Ok((row.get(0)?, row.get::<_, i64>(1)?.max(0) as u64))
        })
        .map_err(sql(path, "counting profiles per uid"))?;
    rows.collect::<Result<_, _>>()
        .map_err(sql(path, "reading the count per uid"))
}

/// The registry saved last, if any.
pub fn registry(conn: &Connection, path: &Path) -> Result<Option<String>, StoreError> {
    conn.query_row("SELECT json FROM registry WHERE id = 1", [], |row| {
        row.get(0)
    })
    .optional()
    .map_err(StoreError::sqlite(path, "reading the registry"))
}
