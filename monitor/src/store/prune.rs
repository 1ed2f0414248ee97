//! Bounds on disk: deleting profiles past the retention, and past the
//! maximum, the oldest of the uids that keep the most.
use rusqlite::{TransactionBehavior, params};

use super::{Store, StoreError, query};

impl Store {
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
