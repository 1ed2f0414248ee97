//! The read-write connection: opening (and migrating) the database, and
//! committing profiles and the registry.
use std::{
    fs::{self, DirBuilder, Permissions},
    os::unix::fs::{DirBuilderExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use rusqlite::{Connection, TransactionBehavior, params};

use super::{BUSY_TIMEOUT, DB_FILE, Profile, StoreError, query, schema};
#[cfg(test)]
use super::{Batch, ProfileQuery};

/// A WAL file that a large commit grew is cut back to this after the next
/// checkpoint, rather than keeping its largest size for good.
const WAL_SIZE_LIMIT: i64 = 64 << 20;

/// The read-write connection. Only one should exist per file: the writer's.
pub struct Store {
    pub(super) conn: Connection,
    pub(super) path: PathBuf,
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
