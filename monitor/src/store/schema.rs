//! The database layout and its migrations, keyed on `PRAGMA user_version`.
//!
//! Version N of the schema is reached by running migrations 1..=N in order,
//! each exactly once, all in one transaction with the version bump: a crash
//! mid-migration leaves the old version, never half of a new one. A file
//! whose version is newer than [`VERSION`] was written by a newer monitor;
//! it is refused rather than "downgraded", since this build cannot know what
//! the newer migrations meant.
use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// Migration `i` (0-based) takes the schema from version `i` to `i + 1`.
/// Append only: a released migration is never edited.
const MIGRATIONS: &[&str] = &[
    // 1: finished-job profiles and the live-job registry.
    "
    CREATE TABLE profiles (
        uid        INTEGER NOT NULL,
        jobid      TEXT    NOT NULL,
        start_time REAL    NOT NULL,
        end_time   REAL    NOT NULL,
        user       TEXT    NOT NULL,
        json       TEXT    NOT NULL,
        -- A job id alone may be reused (scheduler restarts, two clusters);
        -- with its owner and start time it names one run. Also what makes a
        -- re-sent batch a no-op (INSERT OR IGNORE).
        PRIMARY KEY (uid, jobid, start_time)
    );
    -- Every query lists most recent first, so end_time ends each index.
    CREATE INDEX profiles_end_time ON profiles (end_time);
    CREATE INDEX profiles_jobid ON profiles (jobid, end_time);
    CREATE INDEX profiles_user ON profiles (user, end_time);

    -- One row: the registry is replaced whole at each save.
    CREATE TABLE registry (
        id   INTEGER PRIMARY KEY CHECK (id = 1),
        json TEXT NOT NULL
    );
    ",
    // 2: the listing's whole order in one index (pages start after a
    // (end_time, uid, jobid, start_time) cursor), and the per-uid views
    // (--api.private, pruning the largest users) by end time.
    "
    DROP INDEX profiles_end_time;
    CREATE INDEX profiles_listing ON profiles (end_time, uid, jobid, start_time);
    CREATE INDEX profiles_uid ON profiles (uid, end_time);
    ",
];

/// The schema version this build writes and reads.
pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database at `path` (open as `conn`) up to [`VERSION`].
pub fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let sql = |what| StoreError::sqlite(path, what);
    // IMMEDIATE takes the write lock before reading the version, so two
    // processes opening a fresh file cannot both run migration 1.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql("starting the schema migration"))?;
    let found = user_version(&tx, path)?;
    check_not_newer(path, found)?;
    if found == VERSION {
        return Ok(()); // dropping `tx` rolls back the (empty) transaction
    }
    for (from, migration) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
        tx.execute_batch(migration)
            .map_err(|source| StoreError::Migration {
                path: path.to_path_buf(),
                version: from as i64 + 1,
                source,
            })?;
    }
    tx.pragma_update(None, "user_version", VERSION)
        .map_err(sql("recording the schema version"))?;
    tx.commit()
        .map_err(sql("committing the schema migration"))?;
    log::info!(
        "{}: schema migrated from version {found} to {VERSION}",
        path.display()
    );
    Ok(())
}

/// Checks that a database opened read-only is exactly at [`VERSION`]: a
/// reader cannot migrate, and an older or fresh file has not been opened
/// by the daemon yet.
pub fn check_current(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let found = user_version(conn, path)?;
    check_not_newer(path, found)?;
    if found != VERSION {
        return Err(StoreError::NotMigrated {
            path: path.to_path_buf(),
            found,
            expected: VERSION,
        });
    }
    Ok(())
}

fn user_version(conn: &Connection, path: &Path) -> Result<i64, StoreError> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(StoreError::sqlite(path, "reading the schema version"))
}

fn check_not_newer(path: &Path, found: i64) -> Result<(), StoreError> {
    if found > VERSION {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found,
            known: VERSION,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, test_dir::TestDir};

    #[test]
    fn fresh_file_gets_the_current_version_and_reopening_keeps_it() {
        let dir = TestDir::new("schema-fresh");
        drop(Store::open(dir.path()).unwrap());
        let conn = Connection::open(dir.path().join("jobs.db")).unwrap();
        assert_eq!(user_version(&conn, dir.path()).unwrap(), VERSION);
        drop(conn);
        // A second open finds the version and runs nothing.
        drop(Store::open(dir.path()).unwrap());
    }

    #[test]
    fn a_newer_database_is_refused() {
        let dir = TestDir::new("schema-newer");
        drop(Store::open(dir.path()).unwrap());
        let file = dir.path().join("jobs.db");
        let conn = Connection::open(&file).unwrap();
        conn.pragma_update(None, "user_version", VERSION + 1)
            .unwrap();
        drop(conn);

        let Err(error) = Store::open(dir.path()) else {
            panic!("a newer database was opened");
        };
        assert!(matches!(error, StoreError::TooNew { found, .. } if found == VERSION + 1));
        let message = error.to_string();
        assert!(message.contains(&file.display().to_string()), "{message}");
        assert!(
            message.contains("made by a newer monitor; refusing to downgrade it"),
            "{message}"
        );
        // The refusal changed nothing.
        let conn = Connection::open(&file).unwrap();
        assert_eq!(user_version(&conn, dir.path()).unwrap(), VERSION + 1);
    }

    #[test]
    fn a_version_1_database_is_migrated_with_its_profiles() {
        let dir = TestDir::new("schema-v1");
        std::fs::create_dir_all(dir.path()).unwrap();
        let conn = Connection::open(dir.path().join("jobs.db")).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute(
            "INSERT INTO profiles VALUES (1000, '1', 10.0, 20.0, 'alice', '{}')",
            [],
        )
        .unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        drop(conn);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.count().unwrap(), 1);
        let conn = Connection::open(dir.path().join("jobs.db")).unwrap();
        assert_eq!(user_version(&conn, dir.path()).unwrap(), VERSION);
        let indexes: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL ORDER BY name")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            indexes,
            [
                "profiles_jobid",
                "profiles_listing",
                "profiles_uid",
                "profiles_user"
            ]
        );
    }
}
