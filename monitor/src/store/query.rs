//! The read queries, shared by the writer's connection and the readers'.
use std::path::Path;

use rusqlite::{Connection, OptionalExtension as _, ToSql};

use super::{ProfileQuery, StoreError};

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
    let mut text = String::from("SELECT json FROM profiles");
    if !conditions.is_empty() {
        text.push_str(" WHERE ");
        text.push_str(&conditions.join(" AND "));
    }
    // rowid breaks ties: among jobs that ended at the same time, the one
    // stored last comes first.
    text.push_str(" ORDER BY end_time DESC, rowid DESC");
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
#[cfg(test)]
pub fn count(conn: &Connection, path: &Path) -> Result<u64, StoreError> {
    let count: i64 = conn
        .query_row("SELECT count(*) FROM profiles", [], |row| row.get(0))
        .map_err(StoreError::sqlite(path, "counting profiles"))?;
    Ok(count.max(0) as u64)
}

/// The registry saved last, if any.
pub fn registry(conn: &Connection, path: &Path) -> Result<Option<String>, StoreError> {
    conn.query_row("SELECT json FROM registry WHERE id = 1", [], |row| {
        row.get(0)
    })
    .optional()
    .map_err(StoreError::sqlite(path, "reading the registry"))
}
