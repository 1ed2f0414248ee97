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
mod query;
mod schema;
pub mod writer;

use std::{
    fs::{self, DirBuilder, Permissions},
    io,
    os::unix::fs::{DirBuilderExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
    time::Duration,
};

pub use query::PageCursor;
use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};
use thiserror::Error;
pub use writer::{StoreFigures, StoreHandle, WriterConfig, WriterStats, spawn as spawn_writer};

/// The database's file name in the state directory.
pub const DB_FILE: &str = "jobs.db";

/// How long a connection waits for another one's lock before failing. Only
/// the writer writes, so this covers checkpoints and a second process
/// (a reader's open, a mistakenly started second daemon).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A WAL file that a large commit grew is cut back to this after the next
/// checkpoint, rather than keeping its largest size for good.
const WAL_SIZE_LIMIT: i64 = 64 << 20;

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
    fn sqlite(path: &Path, what: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
        let path = path.to_path_buf();
        move |source| StoreError::Sqlite { path, what, source }
    }
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

/// The read-write connection. Only one should exist per file: the writer's.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens `dir/jobs.db`, creating the directory (0755) and the database
    /// as needed, and migrates its schema.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        // Every user's jobs are in it: the daemon's alone (the directory
        // too, for the WAL files and a store of an older daemon made 0755).
        let private = |path: &Path, mode: u32| {
            fs::set_permissions(path, Permissions::from_mode(mode)).map_err(|source| {
                StoreError::CreateDir {
                    path: path.to_path_buf(),
                    source,
                }
            })
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| StoreError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        private(dir, 0o700)?;
        let path = dir.join(DB_FILE);
        let mut conn = Connection::open(&path).map_err(StoreError::sqlite(&path, "opening"))?;
        private(&path, 0o600)?;
        let sql = |what| StoreError::sqlite(&path, what);
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(sql("setting the busy timeout"))?;
        // First, so that a file from a newer monitor is refused untouched.
        schema::migrate(&mut conn, &path)?;
        // WAL: readers never block the writer nor the other way round, and a
        // commit is one append + one fsync. The mode is kept in the file; it
        // is set anyway in case the file came from elsewhere.
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))
            .map_err(sql("switching to the WAL journal"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NotWal { path, mode });
        }
        // FULL (not WAL's usual NORMAL): a commit that returned is on disk,
        // since the sampler frees the job's kernel slots right after.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sql("setting synchronous=FULL"))?;
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)
            .map_err(sql("setting the WAL size limit"))?;
        Ok(Store { conn, path })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    #[cfg(test)]
    /// Stores one batch in one transaction; see [`Store::commit_profiles`].
    pub fn commit(&mut self, batch: &Batch) -> Result<u64, StoreError> {
        batch.check()?;
        self.commit_profiles(&batch.profiles, batch.registry.as_deref())
    }

    /// Stores `profiles` and the `registry` (if any) in ONE transaction: all
    /// of it is durable when this returns Ok, none of it when it fails. A
    /// profile already stored (same uid, job id and start time) is left as
    /// it is, so re-sending one is harmless. Returns how many were new.
    pub fn commit_profiles(
        &mut self,
        profiles: &[Profile],
        registry: Option<&str>,
    ) -> Result<u64, StoreError> {
        profiles.iter().try_for_each(Profile::check)?;
        let path = &self.path;
        let sql = |what| StoreError::sqlite(path, what);
        // IMMEDIATE takes the write lock up front, where busy_timeout applies;
        // a deferred transaction upgrading later can fail at once instead.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("starting a transaction"))?;
        let mut inserted = 0;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO profiles (uid, jobid, start_time, end_time, user, json)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(sql("preparing the profile insert"))?;
            for p in profiles {
                inserted += insert
                    .execute(params![
                        p.uid,
                        p.jobid,
                        p.start_time,
                        p.end_time,
                        p.user,
                        p.json
                    ])
                    .map_err(sql("inserting a profile"))? as u64;
            }
        }
        if let Some(registry) = registry {
            tx.execute(
                "INSERT OR REPLACE INTO registry (id, json) VALUES (1, ?1)",
                [registry],
            )
            .map_err(sql("saving the registry"))?;
        }
        tx.commit().map_err(sql("committing"))?;
        Ok(inserted)
    }

    /// Deletes the profiles of jobs that ended before `ended_before` (unix
    /// seconds); returns how many. The file does not shrink: SQLite reuses
    /// the freed pages for new profiles.
    pub fn prune(&mut self, ended_before: f64) -> Result<u64, StoreError> {
        let deleted = self
            .conn
            .execute("DELETE FROM profiles WHERE end_time < ?1", [ended_before])
            .map_err(StoreError::sqlite(&self.path, "pruning old profiles"))?;
        Ok(deleted as u64)
    }

    /// Deletes about `excess` profiles, the oldest of the uids that keep the
    /// most: those are trimmed down to a common level, so one user's flood
    /// of jobs evicts that user's own history first, not everyone's.
    /// Returns how many were deleted.
    pub fn prune_largest(&mut self, excess: u64) -> Result<u64, StoreError> {
        if excess == 0 {
            return Ok(0);
        }
        let path = &self.path;
        let sql = |what| StoreError::sqlite(path, what);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("starting a transaction"))?;
        let per_uid = query::count_per_uid(&tx, path)?;
        let mut deleted = 0;
        {
            let mut delete = tx
                .prepare_cached(
                    "DELETE FROM profiles WHERE rowid IN
                     (SELECT rowid FROM profiles WHERE uid = ?1 ORDER BY end_time, rowid LIMIT ?2)",
                )
                .map_err(sql("preparing the size pruning"))?;
            for (uid, n) in trim_to_level(&per_uid, excess) {
                let n = i64::try_from(n).unwrap_or(i64::MAX);
                deleted += delete
                    .execute(params![uid, n])
                    .map_err(sql("pruning the largest users' profiles"))?
                    as u64;
            }
        }
        tx.commit().map_err(sql("committing the size pruning"))?;
        Ok(deleted)
    }

    #[cfg(test)]
    pub fn profiles(&self, query: &ProfileQuery) -> Result<Vec<String>, StoreError> {
        query::profiles(&self.conn, &self.path, query)
    }

    /// How many profiles are stored (reads an index: ~ms per 100,000).
    pub fn count(&self) -> Result<u64, StoreError> {
        query::count(&self.conn, &self.path)
    }

    pub fn registry(&self) -> Result<Option<String>, StoreError> {
        query::registry(&self.conn, &self.path)
    }
}

/// How many profiles to delete of each uid so that about `excess` go in
/// all, taking from the uids with the most (`per_uid`: uid and count, any
/// order) down to a common level: with 900, 50 and 50 and an excess of 100,
/// the first keeps 800; with 500, 480 and 20 and an excess of 100, the first
/// two keep 440 each.
pub fn trim_to_level(per_uid: &[(u32, u64)], excess: u64) -> Vec<(u32, u64)> {
    let mut counts: Vec<(u32, u64)> = per_uid.to_vec();
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    let mut need = excess.min(counts.iter().map(|c| c.1).sum());
    let Some(&(_, mut level)) = counts.first() else {
        return Vec::new();
    };
    // Lower the level over the top `n` uids until it frees `need`.
    for n in 1..=counts.len() as u64 {
        let next = counts.get(n as usize).map_or(0, |c| c.1);
        let room = n * (level - next);
        if need <= room {
            level -= need.div_ceil(n);
            need = 0;
            break;
        }
        need -= room;
        level = next;
    }
    debug_assert_eq!(need, 0);
    counts
        .into_iter()
        .filter(|&(_, count)| count > level)
        .map(|(uid, count)| (uid, count - level))
        .collect()
}

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
    /// version (open the [`Store`] first).
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

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic mid-query leaves nothing half-done in a read connection.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
pub(crate) mod test_dir {
    use std::{
        path::{Path, PathBuf},
        sync::atomic::{AtomicU32, Ordering},
    };

    /// A fresh path under the temp directory (not created), removed on drop.
    pub struct TestDir(PathBuf);

    impl TestDir {
        pub fn new(name: &str) -> TestDir {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir()
                .join(format!("monitor-store-{name}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            TestDir(path)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use test_dir::TestDir;

    use super::*;

    pub fn profile(uid: u32, jobid: &str, user: &str, start: f64, end: f64) -> Profile {
        Profile {
            jobid: jobid.to_string(),
            uid,
            user: user.to_string(),
            start_time: start,
            end_time: end,
            json: format!(r#"{{"jobid":"{jobid}","uid":{uid},"end":{end}}}"#),
        }
    }

    fn batch(profiles: Vec<Profile>) -> Batch {
        Batch {
            profiles,
            ..Batch::default()
        }
    }

    fn query() -> ProfileQuery {
        ProfileQuery::default()
    }

    #[test]
    fn a_store_an_older_daemon_left_readable_is_made_private() {
        let dir = TestDir::new("private");
        fs::create_dir_all(dir.path()).unwrap();
        fs::set_permissions(dir.path(), Permissions::from_mode(0o755)).unwrap();
        drop(Store::open(dir.path()).unwrap());
        fs::set_permissions(dir.path().join(DB_FILE), Permissions::from_mode(0o644)).unwrap();
        drop(Store::open(dir.path()).unwrap());
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(dir.path()), 0o700);
        assert_eq!(mode(&dir.path().join(DB_FILE)), 0o600);
    }

    #[test]
    fn creates_the_directory_and_round_trips_profiles_and_registry() {
        let dir = TestDir::new("round-trip");
        let nested = dir.path().join("state/dir");
        let mut store = Store::open(&nested).unwrap();
        // Every user's jobs are in it: the daemon's alone.
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&nested), 0o700, "{:o}", mode(&nested));
        assert_eq!(mode(&nested.join(DB_FILE)), 0o600);
        assert_eq!(store.path(), nested.join(DB_FILE));
        assert_eq!(store.count().unwrap(), 0);
        assert_eq!(store.registry().unwrap(), None);

        let a = profile(1000, "1", "alice", 10.0, 20.0);
        let b = profile(1001, "2", "bob", 11.0, 30.0);
        let inserted = store
            .commit(&Batch {
                profiles: vec![a.clone(), b.clone()],
                registry: Some(r#"{"jobs":[]}"#.into()),
                release: vec![1, 2],
            })
            .unwrap();
        assert_eq!(inserted, 2);
        assert_eq!(store.count().unwrap(), 2);
        assert_eq!(
            store.profiles(&query()).unwrap(),
            [b.json.as_str(), a.json.as_str()]
        );
        assert_eq!(store.registry().unwrap().as_deref(), Some(r#"{"jobs":[]}"#));

        // None leaves the registry alone; Some replaces it.
        store.commit(&batch(vec![])).unwrap();
        assert_eq!(store.registry().unwrap().as_deref(), Some(r#"{"jobs":[]}"#));
        store
            .commit(&Batch {
                registry: Some(r#"{"jobs":[1]}"#.into()),
                ..Batch::default()
            })
            .unwrap();
        assert_eq!(
            store.registry().unwrap().as_deref(),
            Some(r#"{"jobs":[1]}"#)
        );
    }

    #[test]
    fn inserting_the_same_profile_again_is_a_no_op() {
        let dir = TestDir::new("duplicate");
        let mut store = Store::open(dir.path()).unwrap();
        let a = profile(1000, "1", "alice", 10.0, 20.0);
        assert_eq!(store.commit(&batch(vec![a.clone()])).unwrap(), 1);
        let mut again = a.clone();
        again.json = "{}".into();
        assert_eq!(store.commit(&batch(vec![a.clone(), again])).unwrap(), 0);
        assert_eq!(store.profiles(&query()).unwrap(), [a.json.as_str()]);
        // Same job id, another run (start time) or owner: distinct profiles.
        let rerun = profile(1000, "1", "alice", 15.0, 25.0);
        let other_owner = profile(1001, "1", "bob", 10.0, 20.0);
        assert_eq!(store.commit(&batch(vec![rerun, other_owner])).unwrap(), 2);
        assert_eq!(store.count().unwrap(), 3);
    }

    #[test]
    fn queries_filter_and_list_most_recent_first() {
        let dir = TestDir::new("queries");
        let mut store = Store::open(dir.path()).unwrap();
        let profiles = [
            profile(1000, "1", "alice", 0.0, 100.0),
            profile(1001, "2", "bob", 0.0, 200.0),
            profile(1000, "3", "alice", 0.0, 300.0),
            profile(1000, "1", "alice", 350.0, 400.0), // job id 1 reused
            profile(1001, "5", "bob", 0.0, 500.0),
        ];
        // Inserted out of order: the order comes from end_time.
        store
            .commit(&batch(vec![
                profiles[2].clone(),
                profiles[0].clone(),
                profiles[4].clone(),
                profiles[1].clone(),
                profiles[3].clone(),
            ]))
            .unwrap();
        let json = |indexes: &[usize]| -> Vec<String> {
            indexes.iter().map(|&i| profiles[i].json.clone()).collect()
        };

        assert_eq!(store.profiles(&query()).unwrap(), json(&[4, 3, 2, 1, 0]));
        let by_user = ProfileQuery {
            user: Some("alice".into()),
            ..query()
        };
        assert_eq!(store.profiles(&by_user).unwrap(), json(&[3, 2, 0]));
        let by_uid = ProfileQuery {
            uid: Some(1001),
            ..query()
        };
        assert_eq!(store.profiles(&by_uid).unwrap(), json(&[4, 1]));
        let by_jobid = ProfileQuery {
            jobid: Some("1".into()),
            ..query()
        };
        assert_eq!(store.profiles(&by_jobid).unwrap(), json(&[3, 0]));
        let since = ProfileQuery {
            since: Some(300.0),
            ..query()
        };
        assert_eq!(store.profiles(&since).unwrap(), json(&[4, 3, 2]));
        let limit = ProfileQuery {
            limit: Some(2),
            ..query()
        };
        assert_eq!(store.profiles(&limit).unwrap(), json(&[4, 3]));
        let all = ProfileQuery {
            user: Some("alice".into()),
            jobid: Some("1".into()),
            since: Some(50.0),
            limit: Some(1),
            uid: None,
            after: None,
        };
        assert_eq!(store.profiles(&all).unwrap(), json(&[3]));
        let none = ProfileQuery {
            user: Some("carol".into()),
            ..query()
        };
        assert!(store.profiles(&none).unwrap().is_empty());
        let huge = ProfileQuery {
            limit: Some(usize::MAX),
            ..query()
        };
        assert_eq!(store.profiles(&huge).unwrap().len(), 5);
    }

    #[test]
    fn reopening_keeps_everything() {
        let dir = TestDir::new("reopen");
        let a = profile(1000, "1", "alice", 10.0, 20.0);
        {
            let mut store = Store::open(dir.path()).unwrap();
            store
                .commit(&Batch {
                    profiles: vec![a.clone()],
                    registry: Some("[1]".into()),
                    release: vec![],
                })
                .unwrap();
        }
        let mut store = Store::open(dir.path()).unwrap();
        assert_eq!(store.profiles(&query()).unwrap(), [a.json.as_str()]);
        assert_eq!(store.registry().unwrap().as_deref(), Some("[1]"));
        // Still unique after the reopen.
        assert_eq!(store.commit(&batch(vec![a])).unwrap(), 0);
    }

    #[test]
    fn prune_deletes_only_old_profiles() {
        let dir = TestDir::new("prune");
        let mut store = Store::open(dir.path()).unwrap();
        let new = profile(1000, "3", "alice", 0.0, 300.0);
        store
            .commit(&batch(vec![
                profile(1000, "1", "alice", 0.0, 100.0),
                profile(1000, "2", "alice", 0.0, 200.0),
                new.clone(),
            ]))
            .unwrap();
        assert_eq!(store.prune(50.0).unwrap(), 0);
        assert_eq!(store.prune(300.0).unwrap(), 2); // 300 itself is kept
        assert_eq!(store.profiles(&query()).unwrap(), [new.json.as_str()]);
    }

    #[test]
    fn a_profile_with_a_nan_time_is_refused_and_nothing_of_its_batch_stored() {
        let dir = TestDir::new("nan");
        let mut store = Store::open(dir.path()).unwrap();
        let good = profile(1000, "1", "alice", 0.0, 100.0);
        let bad = profile(1000, "2", "alice", f64::NAN, 100.0);
        let error = store.commit(&batch(vec![good, bad])).unwrap_err();
        assert!(matches!(error, StoreError::InvalidProfile { ref jobid, .. } if jobid == "2"));
        assert_eq!(store.count().unwrap(), 0);
    }

    #[test]
    fn a_reader_sees_commits_while_the_writer_is_open() {
        let dir = TestDir::new("reader");
        assert!(matches!(
            StoreReader::open(dir.path()),
            Err(StoreError::Sqlite { .. })
        ));
        let mut store = Store::open(dir.path()).unwrap();
        let reader = StoreReader::open(dir.path()).unwrap();
        assert_eq!(reader.count().unwrap(), 0);
        assert_eq!(reader.registry().unwrap(), None);
        let a = profile(1000, "1", "alice", 10.0, 20.0);
        store
            .commit(&Batch {
                profiles: vec![a.clone()],
                registry: Some("[]".into()),
                release: vec![],
            })
            .unwrap();
        assert_eq!(reader.count().unwrap(), 1);
        assert_eq!(reader.profiles(&query()).unwrap(), [a.json.as_str()]);
        assert_eq!(reader.registry().unwrap().as_deref(), Some("[]"));
        // Read-only means it.
        let writes = reader
            .conn()
            .execute("DELETE FROM profiles", [])
            .unwrap_err();
        assert!(writes.to_string().contains("readonly"), "{writes}");

        // Also once the writer has closed (and SQLite removed the -wal and
        // -shm files with it).
        drop(reader);
        drop(store);
        let reader = StoreReader::open(dir.path()).unwrap();
        assert_eq!(reader.count().unwrap(), 1);
    }

    #[test]
    fn a_reader_refuses_a_database_the_daemon_has_not_set_up() {
        let dir = TestDir::new("reader-fresh");
        fs::create_dir_all(dir.path()).unwrap();
        drop(Connection::open(dir.path().join(DB_FILE)).unwrap());
        let Err(error) = StoreReader::open(dir.path()) else {
            panic!("opened an empty database");
        };
        assert!(
            matches!(error, StoreError::NotMigrated { found: 0, .. }),
            "{error}"
        );
    }

    #[test]
    fn pages_follow_each_other_without_gaps_or_repeats() {
        let dir = TestDir::new("pages");
        let mut store = Store::open(dir.path()).unwrap();
        // Ties on the end time, broken by uid, job id and start time.
        let mut all = Vec::new();
        for uid in [1000, 1001] {
            for jobid in ["a", "b"] {
                for start in [1.0, 2.0] {
                    let mut p = profile(uid, jobid, "u", start, 50.0);
                    p.json = format!(r#"{{"jobid":"{jobid}","uid":{uid},"start":{start}}}"#);
                    all.push(p);
                }
            }
        }
        all.push(profile(1000, "z", "u", 0.0, 60.0));
        store.commit(&batch(all.clone())).unwrap();
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .profiles(&ProfileQuery {
                    limit: Some(3),
                    after: after.clone(),
                    ..query()
                })
                .unwrap();
            let Some(last) = page.last() else { break };
            let last = all.iter().find(|p| p.json == *last).unwrap();
            after = Some(PageCursor {
                end_time: last.end_time,
                uid: last.uid,
                jobid: last.jobid.clone(),
                start_time: last.start_time,
            });
            seen.extend(page);
        }
        assert_eq!(seen.len(), all.len(), "{seen:?}");
        assert_eq!(seen[0], all[8].json, "the latest first");
        assert_eq!(seen[1], all[7].json, "then uid, job id, start descending");
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), all.len());
        let cursor = PageCursor {
            end_time: 50.0,
            uid: 1000,
            jobid: "b".into(),
            start_time: 1.0,
        };
        assert!(cursor.precedes(50.0, 1000, "a", 2.0));
        assert!(!cursor.precedes(50.0, 1001, "a", 1.0));
        assert!(!cursor.precedes(50.0, 1000, "b", 1.0), "not itself");
    }

    #[test]
    fn trimming_takes_from_the_largest_down_to_a_common_level() {
        assert_eq!(
            trim_to_level(&[(1, 50), (2, 900), (3, 50)], 100),
            [(2, 100)]
        );
        let mut cuts = trim_to_level(&[(1, 500), (2, 480), (3, 20)], 100);
        cuts.sort();
        assert_eq!(cuts, [(1, 60), (2, 40)]);
        assert_eq!(trim_to_level(&[(1, 3)], 10), [(1, 3)]);
        assert!(trim_to_level(&[], 10).is_empty());
        assert!(trim_to_level(&[(1, 3)], 0).is_empty());
    }

    #[test]
    fn pruning_the_largest_keeps_the_others() {
        let dir = TestDir::new("prune-largest");
        let mut store = Store::open(dir.path()).unwrap();
        let mut profiles = vec![profile(1001, "b", "bob", 0.0, 1.0)];
        profiles.extend(
            (0..10).map(|i| profile(1000, &i.to_string(), "alice", 0.0, 10.0 + f64::from(i))),
        );
        store.commit(&batch(profiles)).unwrap();
        assert_eq!(store.prune_largest(4).unwrap(), 4);
        assert_eq!(store.count().unwrap(), 7);
        let alice = ProfileQuery {
            uid: Some(1000),
            ..query()
        };
        let kept = store.profiles(&alice).unwrap();
        assert_eq!(kept.len(), 6);
        assert!(kept.last().unwrap().contains(r#""jobid":"4""#), "{kept:?}");
    }
}
