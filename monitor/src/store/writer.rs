//! The writer thread: owns the [`Store`] so the sampler never waits for an
//! fsync.
//!
//! The sampler hands [`Batch`]es over an unbounded channel
//! ([`StoreHandle::send`] never blocks). The thread commits what is queued,
//! several batches in one transaction when they piled up during the last
//! commit, and only then hands the batches' `release` ids back
//! ([`StoreHandle::released`]): the sampler frees a job's kernel counter
//! slots after its profile is durable, so a crash at any point loses no job.
//!
//! A failed commit keeps its batches and retries them with a backoff (1 s
//! doubling to a minute), together with whatever arrived meanwhile;
//! profiles are never dropped to get going again. Closing the handle makes
//! the thread write what it holds and exit.
use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
        mpsc::{self, Receiver, RecvTimeoutError, Sender},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use super::{Batch, Store, StoreError};

/// The first retry delay after a failed commit; doubled per failure.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(60);
/// Retention pruning runs at most this often.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// When closing: how many times to try writing what is held, and the pause
/// between tries. Short, as the daemon's stop waits for it.
const EXIT_ATTEMPTS: u32 = 3;
const EXIT_RETRY: Duration = Duration::from_secs(1);

/// Counters for the metrics; updated by the writer thread.
#[derive(Debug, Default)]
pub struct WriterStats {
    profiles_written: AtomicU64,
    commits: AtomicU64,
    commit_errors: AtomicU64,
    last_commit_micros: AtomicU64,
    profiles_pending: AtomicU64,
    profiles_pruned: AtomicU64,
}

impl WriterStats {
    /// Profiles newly stored (a re-sent one already there is not counted).
    pub fn profiles_written(&self) -> u64 {
        self.profiles_written.load(Relaxed)
    }

    /// Successful commits (transactions).
    pub fn commits(&self) -> u64 {
        self.commits.load(Relaxed)
    }

    /// Failed commits; each is retried.
    pub fn commit_errors(&self) -> u64 {
        self.commit_errors.load(Relaxed)
    }

    /// How long the last successful commit took, fsync included.
    pub fn last_commit_duration(&self) -> Duration {
        Duration::from_micros(self.last_commit_micros.load(Relaxed))
    }

    /// Profiles received and not yet durable (waiting for a retry).
    pub fn profiles_pending(&self) -> u64 {
        self.profiles_pending.load(Relaxed)
    }

    /// Profiles deleted by retention.
    pub fn profiles_pruned(&self) -> u64 {
        self.profiles_pruned.load(Relaxed)
    }
}

/// The sampler's side of the writer thread. Dropping it closes the channel
/// and waits for the thread like [`StoreHandle::shutdown`], logging errors.
pub struct StoreHandle {
    batches: Option<Sender<Batch>>,
    released: Receiver<Vec<u64>>,
    stats: Arc<WriterStats>,
    thread: Option<JoinHandle<Result<(), StoreError>>>,
}

/// Starts the writer thread on `store`. With a `retention`, profiles of
/// jobs that ended longer ago than that are deleted (checked at start, then
/// at most once a minute).
pub fn spawn(store: Store, retention: Option<Duration>) -> Result<StoreHandle, StoreError> {
    let (batches, batches_rx) = mpsc::channel();
    let (released_tx, released) = mpsc::channel();
    let stats = Arc::new(WriterStats::default());
    let writer = Writer {
        store,
        batches: batches_rx,
        released: released_tx,
        stats: stats.clone(),
        retention,
        pending: Vec::new(),
        failures: 0,
        retry_at: None,
        prune_at: Instant::now(),
    };
    let thread = crate::system::vital_thread::spawn("store-writer", move || writer.run())
        .map_err(StoreError::Spawn)?;
    Ok(StoreHandle {
        batches: Some(batches),
        released,
        stats,
        thread: Some(thread),
    })
}

impl StoreHandle {
    /// Queues `batch` for writing; never waits for the disk. A batch with an
    /// invalid profile is refused here, whole, rather than failing the
    /// transaction it would share with other batches.
    pub fn send(&self, batch: Batch) -> Result<(), StoreError> {
        batch.check()?;
        self.batches
            .as_ref()
            .ok_or(StoreError::WriterGone)?
            .send(batch)
            .map_err(|_| StoreError::WriterGone)
    }

    /// The `release` ids of the batches made durable since the last call
    /// (never waits).
    pub fn released(&self) -> Vec<u64> {
        self.released.try_iter().flatten().collect()
    }

    pub fn stats(&self) -> Arc<WriterStats> {
        self.stats.clone()
    }

    /// Closes the channel and waits until the thread has written what it
    /// holds. Returns the `release` ids not collected yet; an error when
    /// some profiles could not be written.
    pub fn shutdown(mut self) -> Result<Vec<u64>, StoreError> {
        self.close()?;
        Ok(self.released())
    }

    fn close(&mut self) -> Result<(), StoreError> {
        self.batches = None;
        match self.thread.take() {
            Some(thread) => thread.join().map_err(|_| StoreError::WriterPanicked)?,
            None => Ok(()),
        }
    }
}

impl Drop for StoreHandle {
    fn drop(&mut self) {
        if let Err(error) = self.close() {
            log::error!("{error}");
        }
    }
}

struct Writer {
    store: Store,
    batches: Receiver<Batch>,
    released: Sender<Vec<u64>>,
    stats: Arc<WriterStats>,
    retention: Option<Duration>,
    /// Received and not yet committed, in order.
    pending: Vec<Batch>,
    /// Commits failed in a row.
    failures: u32,
    /// No commit before this, after a failure.
    retry_at: Option<Instant>,
    prune_at: Instant,
}

impl Writer {
    fn run(mut self) -> Result<(), StoreError> {
        loop {
            let received = match self.wake_at() {
                None => self
                    .batches
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
                Some(at) => self
                    .batches
                    .recv_timeout(at.saturating_duration_since(Instant::now())),
            };
            match received {
                Ok(batch) => self.pending.push(batch),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            // What queued up during the last commit goes in this one.
            self.pending.extend(self.batches.try_iter());
            self.note_pending();
            let retry_due = self.retry_at.is_none_or(|at| Instant::now() >= at);
            if !self.pending.is_empty() && retry_due {
                // A failure is logged and kept for the retry.
                let _ = self.commit();
            }
            self.prune_if_due();
        }
        self.flush_at_exit()
    }

    /// When to stop waiting for a batch: for a retry or for pruning.
    fn wake_at(&self) -> Option<Instant> {
        let retry = self.retry_at.filter(|_| !self.pending.is_empty());
        let prune = self.retention.map(|_| self.prune_at);
        match (retry, prune) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Commits all pending batches in one transaction, then releases them.
    fn commit(&mut self) -> Result<(), StoreError> {
        let started = Instant::now();
        match self.store.commit_all(&self.pending) {
            Ok(inserted) => {
                let took = started.elapsed();
                self.stats.profiles_written.fetch_add(inserted, Relaxed);
                self.stats.commits.fetch_add(1, Relaxed);
                self.stats
                    .last_commit_micros
                    .store(took.as_micros().try_into().unwrap_or(u64::MAX), Relaxed);
                if self.failures > 0 {
                    log::info!(
                        "{}: written again after {} failed commits",
                        self.store.path().display(),
                        self.failures
                    );
                }
                self.failures = 0;
                self.retry_at = None;
                let ids: Vec<u64> = self.pending.drain(..).flat_map(|b| b.release).collect();
                self.note_pending();
                if !ids.is_empty() {
                    // Fails only once the handle is gone: nobody to free for.
                    let _ = self.released.send(ids);
                }
                Ok(())
            }
            Err(error) => {
                self.stats.commit_errors.fetch_add(1, Relaxed);
                self.failures += 1;
                let delay = FIRST_RETRY
                    .saturating_mul(2u32.saturating_pow(self.failures - 1))
                    .min(MAX_RETRY);
                self.retry_at = Some(Instant::now() + delay);
                log::error!(
                    "{error}; keeping {} profiles in memory, retrying in {delay:?}",
                    self.pending_profiles()
                );
                Err(error)
            }
        }
    }

    fn flush_at_exit(mut self) -> Result<(), StoreError> {
        let mut attempts = 0;
        while !self.pending.is_empty() {
            attempts += 1;
            if let Err(error) = self.commit() {
                if attempts >= EXIT_ATTEMPTS {
                    return Err(StoreError::Unflushed {
                        path: self.store.path().to_path_buf(),
                        profiles: self.pending_profiles(),
                        source: Box::new(error),
                    });
                }
                thread::sleep(EXIT_RETRY);
            }
        }
        Ok(())
    }

    fn prune_if_due(&mut self) {
        let Some(retention) = self.retention else {
            return;
        };
        let now = Instant::now();
        if now < self.prune_at {
            return;
        }
        self.prune_at = now + PRUNE_EVERY;
        // A clock before 1970 makes the cutoff negative: nothing goes.
        let unix_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        match self.store.prune(unix_now - retention.as_secs_f64()) {
            Ok(deleted) => {
                self.stats.profiles_pruned.fetch_add(deleted, Relaxed);
                if deleted > 0 {
                    log::debug!("pruned {deleted} profiles older than {retention:?}");
                }
            }
            // Retried at the next interval; the data is only kept longer.
            Err(error) => log::error!("{error}"),
        }
    }

    fn pending_profiles(&self) -> usize {
        self.pending.iter().map(|b| b.profiles.len()).sum()
    }

    fn note_pending(&self) {
        let pending = self.pending_profiles() as u64;
        self.stats.profiles_pending.store(pending, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::*;
    use crate::store::{DB_FILE, ProfileQuery, StoreReader, test_dir::TestDir, tests::profile};

    fn batch(jobids: &[&str], release: &[u64]) -> Batch {
        Batch {
            profiles: jobids
                .iter()
                .map(|jobid| profile(1000, jobid, "alice", 0.0, 100.0))
                .collect(),
            registry: Some(format!("{jobids:?}")),
            release: release.to_vec(),
        }
    }

    /// Polls `released` until it has returned `want` ids in all, or fails.
    fn wait_released(handle: &StoreHandle, want: usize) -> Vec<u64> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        while got.len() < want {
            assert!(Instant::now() < deadline, "released only {got:?}");
            got.extend(handle.released());
            thread::sleep(Duration::from_millis(5));
        }
        got
    }

    /// A second connection holding the write lock, so the writer's commits
    /// wait (up to the busy timeout) until it is dropped.
    fn lock_writes(dir: &TestDir) -> Connection {
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        conn
    }

    #[test]
    fn release_ids_come_back_only_once_the_batch_is_committed() {
        let dir = TestDir::new("writer-release");
        let handle = spawn(Store::open(dir.path()).unwrap(), None).unwrap();
        let reader = StoreReader::open(dir.path()).unwrap();

        let lock = lock_writes(&dir);
        handle.send(batch(&["1", "2"], &[7, 8])).unwrap();
        thread::sleep(Duration::from_millis(300));
        assert!(handle.released().is_empty());
        assert_eq!(reader.count().unwrap(), 0);
        drop(lock);

        assert_eq!(wait_released(&handle, 2), [7, 8]);
        // Released means committed: visible to any connection.
        assert_eq!(reader.count().unwrap(), 2);
        assert_eq!(reader.registry().unwrap().as_deref(), Some(r#"["1", "2"]"#));
        let stats = handle.stats();
        assert_eq!(stats.profiles_written(), 2);
        assert_eq!(stats.commit_errors(), 0);
        assert_eq!(stats.profiles_pending(), 0);
        assert!(stats.last_commit_duration() > Duration::ZERO);
        assert!(handle.shutdown().unwrap().is_empty());
    }

    #[test]
    fn batches_queued_during_a_commit_share_the_next_one() {
        let dir = TestDir::new("writer-coalesce");
        let handle = spawn(Store::open(dir.path()).unwrap(), None).unwrap();
        let lock = lock_writes(&dir);
        handle.send(batch(&["0"], &[0])).unwrap();
        thread::sleep(Duration::from_millis(100)); // the writer waits for the lock
        for i in 1..10u64 {
            handle.send(batch(&[&i.to_string()], &[i])).unwrap();
        }
        thread::sleep(Duration::from_millis(100));
        drop(lock);

        let mut released = wait_released(&handle, 10);
        released.sort_unstable();
        assert_eq!(released, (0..10).collect::<Vec<_>>());
        let stats = handle.stats();
        assert!(stats.commits() <= 2, "{} commits", stats.commits());
        assert_eq!(stats.profiles_written(), 10);
        handle.shutdown().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.count().unwrap(), 10);
        // The registry of the last batch won.
        assert_eq!(store.registry().unwrap().as_deref(), Some(r#"["9"]"#));
    }

    #[test]
    fn closing_writes_everything_queued() {
        let dir = TestDir::new("writer-flush");
        let handle = spawn(Store::open(dir.path()).unwrap(), None).unwrap();
        for i in 0..50u64 {
            handle.send(batch(&[&i.to_string()], &[i])).unwrap();
        }
        let mut released = handle.shutdown().unwrap();
        released.sort_unstable();
        assert_eq!(released, (0..50).collect::<Vec<_>>());
        assert_eq!(Store::open(dir.path()).unwrap().count().unwrap(), 50);

        // Dropping the handle waits too.
        let handle = spawn(Store::open(dir.path()).unwrap(), None).unwrap();
        handle.send(batch(&["50"], &[])).unwrap();
        drop(handle);
        assert_eq!(Store::open(dir.path()).unwrap().count().unwrap(), 51);
    }

    #[test]
    fn a_failed_commit_keeps_its_batches_and_retries() {
        let dir = TestDir::new("writer-retry");
        let store = Store::open(dir.path()).unwrap();
        // Make every insert fail until the trigger goes.
        let side = Connection::open(dir.path().join(DB_FILE)).unwrap();
        side.execute_batch(
            "CREATE TRIGGER fail BEFORE INSERT ON profiles
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
        )
        .unwrap();
        let handle = spawn(store, None).unwrap();
        let stats = handle.stats();
        handle.send(batch(&["1"], &[1])).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while stats.commit_errors() == 0 {
            assert!(Instant::now() < deadline, "the commit did not fail");
            thread::sleep(Duration::from_millis(5));
        }
        handle.send(batch(&["2"], &[2])).unwrap(); // waits for the retry
        thread::sleep(Duration::from_millis(50));
        assert!(handle.released().is_empty());
        assert_eq!(stats.profiles_pending(), 2);

        side.execute_batch("DROP TRIGGER fail").unwrap();
        assert_eq!(wait_released(&handle, 2), [1, 2]);
        assert_eq!(stats.profiles_written(), 2);
        assert_eq!(stats.commits(), 1, "both batches in the retried commit");
        assert_eq!(stats.profiles_pending(), 0);
        handle.shutdown().unwrap();
    }

    #[test]
    fn closing_reports_profiles_it_could_not_write() {
        let dir = TestDir::new("writer-unflushed");
        let store = Store::open(dir.path()).unwrap();
        let side = Connection::open(dir.path().join(DB_FILE)).unwrap();
        side.execute_batch(
            "CREATE TRIGGER fail BEFORE INSERT ON profiles
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
        )
        .unwrap();
        let handle = spawn(store, None).unwrap();
        handle.send(batch(&["1", "2"], &[1])).unwrap();
        let error = handle.shutdown().unwrap_err();
        assert!(
            matches!(error, StoreError::Unflushed { profiles: 2, .. }),
            "{error}"
        );
        assert!(error.to_string().contains(DB_FILE), "{error}");
    }

    #[test]
    fn an_invalid_batch_is_refused_at_send() {
        let dir = TestDir::new("writer-invalid");
        let handle = spawn(Store::open(dir.path()).unwrap(), None).unwrap();
        let mut bad = batch(&["1"], &[1]);
        bad.profiles[0].end_time = f64::INFINITY;
        assert!(matches!(
            handle.send(bad),
            Err(StoreError::InvalidProfile { .. })
        ));
        handle.send(batch(&["2"], &[2])).unwrap();
        assert_eq!(handle.shutdown().unwrap(), [2]);
    }

    #[test]
    fn retention_prunes_old_profiles_at_start() {
        let dir = TestDir::new("writer-prune");
        let mut store = Store::open(dir.path()).unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let recent = profile(1000, "2", "alice", now - 100.0, now - 10.0);
        store
            .commit(&Batch {
                profiles: vec![
                    profile(1000, "1", "alice", 0.0, now - 7200.0),
                    recent.clone(),
                ],
                ..Batch::default()
            })
            .unwrap();
        let handle = spawn(store, Some(Duration::from_secs(3600))).unwrap();
        let stats = handle.stats();
        let deadline = Instant::now() + Duration::from_secs(10);
        while stats.profiles_pruned() == 0 {
            assert!(Instant::now() < deadline, "nothing pruned");
            thread::sleep(Duration::from_millis(5));
        }
        handle.shutdown().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store.profiles(&ProfileQuery::default()).unwrap(),
            [recent.json]
        );
        assert_eq!(stats.profiles_pruned(), 1);
    }
}
