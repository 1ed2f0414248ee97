//! The writer thread: owns the [`Store`] so the sampler never waits for an
//! fsync.
//!
//! The sampler hands [`Batch`]es over an unbounded channel
//! ([`StoreHandle::send`] never blocks). The thread commits what is held,
//! everything that piled up during the last commit in one transaction, and
//! then hands the batches' `release` ids back ([`StoreHandle::released`]):
//! the sampler frees a job's kernel counter slots once its profile is
//! durable, so a crash at any point loses no job. A commit that fails hands
//! them back too: the store had its chance, and a store that cannot write
//! must not hold the kernel's counter map (shared by every job) hostage.
//!
//! A failed commit keeps what it held and retries it with a backoff (1 s
//! doubling to 10 s), together with whatever arrived meanwhile, logging at
//! most every [`LOG_EVERY`]. While it fails, at most
//! [`WriterConfig::max_pending`] profiles are held; older ones are dropped
//! (and counted) for newer. Closing the handle makes the thread write what
//! it holds and exit.
//!
//! Bounds on disk: profiles of jobs that ended longer ago than the
//! retention are deleted (checked at start, then once a minute); past
//! [`WriterConfig::max_profiles`], the oldest profiles of the uids that keep
//! the most are (see [`Store::prune_largest`]).
use std::{
    collections::VecDeque,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
        mpsc::{self, Receiver, RecvTimeoutError, Sender},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use super::{Batch, Profile, Store, StoreError};
use crate::system::log_every::LogEvery;

/// Failures and drops are logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// The first retry delay after a failed commit; doubled per failure.
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest pause between retries: a full disk costs one failed
/// transaction per this, and writing starts again at most this long after
/// space is freed.
const MAX_RETRY: Duration = Duration::from_secs(10);
/// Retention pruning runs at most this often.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// When closing: how many times to try writing what is held, and the pause
/// between tries. Short, as the daemon's stop waits for it.
const EXIT_ATTEMPTS: u32 = 3;
const EXIT_RETRY: Duration = Duration::from_secs(1);

/// What the writer keeps to.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Delete the profiles of jobs that ended longer ago than this.
    pub retention: Option<Duration>,
    /// Keep at most this many profiles (pruned down by a twentieth more,
    /// so pruning runs once per that many new profiles, not per commit).
    pub max_profiles: Option<u64>,
    /// Profiles held in memory while commits fail, at most.
    pub max_pending: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            retention: None,
            max_profiles: None,
            max_pending: usize::MAX,
        }
    }
}

/// Counters for the metrics; updated by the writer thread.
#[derive(Debug, Default)]
pub struct WriterStats {
    profiles_written: AtomicU64,
    commits: AtomicU64,
    commit_errors: AtomicU64,
    last_commit_micros: AtomicU64,
    profiles_pending: AtomicU64,
    profiles_stored: AtomicU64,
    pruned_retention: AtomicU64,
    pruned_max_profiles: AtomicU64,
    dropped_unavailable: AtomicU64,
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

    /// Profiles in the store.
    pub fn profiles_stored(&self) -> u64 {
        self.profiles_stored.load(Relaxed)
    }

    /// Profiles deleted for being older than the retention.
    pub fn pruned_retention(&self) -> u64 {
        self.pruned_retention.load(Relaxed)
    }

    /// Profiles deleted to keep the store within its maximum.
    pub fn pruned_max_profiles(&self) -> u64 {
        self.pruned_max_profiles.load(Relaxed)
    }

    /// Profiles dropped from memory while the store could not be written.
    pub fn dropped_unavailable(&self) -> u64 {
        self.dropped_unavailable.load(Relaxed)
    }
}

/// The writer's figures at one moment, as plain numbers: what a sample
/// publishes, so the encoders never read the writer's live counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreFigures {
    pub profiles_written: u64,
    pub commits: u64,
    pub commit_errors: u64,
    pub last_commit_duration: Duration,
    pub profiles_pending: u64,
    pub profiles_stored: u64,
    pub pruned_retention: u64,
    pub pruned_max_profiles: u64,
    pub dropped_unavailable: u64,
}

impl WriterStats {
    /// Every figure, now.
    pub fn figures(&self) -> StoreFigures {
        StoreFigures {
            profiles_written: self.profiles_written(),
            commits: self.commits(),
            commit_errors: self.commit_errors(),
            last_commit_duration: self.last_commit_duration(),
            profiles_pending: self.profiles_pending(),
            profiles_stored: self.profiles_stored(),
            pruned_retention: self.pruned_retention(),
            pruned_max_profiles: self.pruned_max_profiles(),
            dropped_unavailable: self.dropped_unavailable(),
        }
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

/// Starts the writer thread on `store`.
pub fn spawn(store: Store, config: WriterConfig) -> Result<StoreHandle, StoreError> {
    let (batches, batches_rx) = mpsc::channel();
    let (released_tx, released) = mpsc::channel();
    let stats = Arc::new(WriterStats::default());
    let stored = store.count()?;
    stats.profiles_stored.store(stored, Relaxed);
    let writer = Writer {
        store,
        batches: batches_rx,
        released: released_tx,
        stats: stats.clone(),
        config,
        pending: Pending::default(),
        stored,
        failures: 0,
        retry_at: None,
        prune_at: Instant::now(),
        failure_log: LogEvery::new(LOG_EVERY),
        drop_log: LogEvery::new(LOG_EVERY),
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

    /// The `release` ids of the batches committed, or whose commit failed,
    /// since the last call (never waits).
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

/// What was received and is not committed yet: the batches merged.
#[derive(Debug, Default)]
struct Pending {
    /// Oldest first.
    profiles: VecDeque<Profile>,
    /// The latest registry received (an older one is of no use).
    registry: Option<String>,
    release: Vec<u64>,
}

impl Pending {
    fn add(&mut self, batch: Batch) {
        self.profiles.extend(batch.profiles);
        if batch.registry.is_some() {
            self.registry = batch.registry;
        }
        self.release.extend(batch.release);
    }

    fn is_empty(&self) -> bool {
        self.profiles.is_empty() && self.registry.is_none() && self.release.is_empty()
    }
}

struct Writer {
    store: Store,
    batches: Receiver<Batch>,
    released: Sender<Vec<u64>>,
    stats: Arc<WriterStats>,
    config: WriterConfig,
    pending: Pending,
    /// Profiles in the store (counted at start, then kept up to date).
    stored: u64,
    /// Commits failed in a row.
    failures: u32,
    /// No commit before this, after a failure.
    retry_at: Option<Instant>,
    prune_at: Instant,
    failure_log: LogEvery,
    drop_log: LogEvery,
}

impl Writer {
    fn run(mut self) -> Result<(), StoreError> {
        // A lowered maximum applies at once.
        self.prune_to_max();
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
                Ok(batch) => self.pending.add(batch),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            // What queued up during the last commit goes in this one.
            for batch in self.batches.try_iter() {
                self.pending.add(batch);
            }
            self.drop_over_bound();
            self.note_pending();
            let retry_due = self.retry_at.is_none_or(|at| Instant::now() >= at);
            if !self.pending.is_empty() && retry_due && self.commit().is_ok() {
                self.prune_to_max();
            }
            if self.failures > 0 {
                // Waiting for a retry: what arrived meanwhile is not held
                // in the counter map either.
                self.hand_back_release();
            }
            self.prune_if_due();
        }
        self.flush_at_exit()
    }

    /// When to stop waiting for a batch: for a retry or for pruning.
    fn wake_at(&self) -> Option<Instant> {
        let retry = self.retry_at.filter(|_| !self.pending.is_empty());
        let prune = self.config.retention.map(|_| self.prune_at);
        match (retry, prune) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Commits everything pending in one transaction. Either way the
    /// release ids go back (see the module documentation).
    fn commit(&mut self) -> Result<(), StoreError> {
        let started = Instant::now();
        let profiles = self.pending.profiles.make_contiguous();
        let result = self
            .store
            .commit_profiles(profiles, self.pending.registry.as_deref());
        self.hand_back_release();
        match result {
            Ok(inserted) => {
                let took = started.elapsed();
                self.stored += inserted;
                self.stats.profiles_stored.store(self.stored, Relaxed);
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
                    self.failure_log = LogEvery::new(LOG_EVERY);
                }
                self.failures = 0;
                self.retry_at = None;
                self.pending.profiles.clear();
                self.pending.registry = None;
                self.note_pending();
                Ok(())
            }
            Err(error) => {
                self.stats.commit_errors.fetch_add(1, Relaxed);
                self.failures += 1;
                let delay = FIRST_RETRY
                    .saturating_mul(2u32.saturating_pow(self.failures - 1))
                    .min(MAX_RETRY);
                self.retry_at = Some(Instant::now() + delay);
                if let Some(failed) = self.failure_log.note(1, Instant::now()) {
                    log::error!(
                        "{error} ({failed} failed commits since the last such line); \
                         holding {} profiles in memory (at most {}), retrying every \
                         {MAX_RETRY:?} at most",
                        self.pending.profiles.len(),
                        self.config.max_pending,
                    );
                }
                Err(error)
            }
        }
    }

    /// Hands the release ids held back to the sampler.
    fn hand_back_release(&mut self) {
        let ids = std::mem::take(&mut self.pending.release);
        if !ids.is_empty() {
            // Fails only once the handle is gone: nobody to free for.
            let _ = self.released.send(ids);
        }
    }

    /// Drops the oldest held profiles past the bound, counted and logged.
    fn drop_over_bound(&mut self) {
        let held = self.pending.profiles.len();
        let Some(over) = held.checked_sub(self.config.max_pending).filter(|&n| n > 0) else {
            return;
        };
        self.pending.profiles.drain(..over);
        self.stats
            .dropped_unavailable
            .fetch_add(over as u64, Relaxed);
        if let Some(dropped) = self.drop_log.note(over as u64, Instant::now()) {
            log::error!(
                "{}: the state store cannot be written: dropped {dropped} finished jobs' \
                 profiles (the oldest held) since the last such line, to hold at most {} in \
                 memory (--state.max-pending)",
                self.store.path().display(),
                self.config.max_pending,
            );
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
                        profiles: self.pending.profiles.len(),
                        source: Box::new(error),
                    });
                }
                thread::sleep(EXIT_RETRY);
            }
        }
        Ok(())
    }

    /// Past the maximum, deletes down to a twentieth under it.
    fn prune_to_max(&mut self) {
        let Some(max) = self.config.max_profiles else {
            return;
        };
        if self.stored <= max {
            return;
        }
        let excess = self.stored - max + max / 20;
        match self.store.prune_largest(excess) {
            Ok(deleted) => {
                self.stored = self.stored.saturating_sub(deleted);
                self.stats.profiles_stored.store(self.stored, Relaxed);
                self.stats.pruned_max_profiles.fetch_add(deleted, Relaxed);
                log::debug!("pruned {deleted} profiles to keep at most {max}");
            }
            // Tried again after the next commit; the store only stays larger.
            Err(error) => log::error!("{error}"),
        }
    }

    fn prune_if_due(&mut self) {
        let Some(retention) = self.config.retention else {
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
                self.stored = self.stored.saturating_sub(deleted);
                self.stats.profiles_stored.store(self.stored, Relaxed);
                self.stats.pruned_retention.fetch_add(deleted, Relaxed);
                if deleted > 0 {
                    log::debug!("pruned {deleted} profiles older than {retention:?}");
                }
            }
            // Retried at the next interval; the data is only kept longer.
            Err(error) => log::error!("{error}"),
        }
    }

    fn note_pending(&self) {
        let pending = self.pending.profiles.len() as u64;
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
        let handle = spawn(Store::open(dir.path()).unwrap(), WriterConfig::default()).unwrap();
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
        let handle = spawn(Store::open(dir.path()).unwrap(), WriterConfig::default()).unwrap();
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
        let handle = spawn(Store::open(dir.path()).unwrap(), WriterConfig::default()).unwrap();
        for i in 0..50u64 {
            handle.send(batch(&[&i.to_string()], &[i])).unwrap();
        }
        let mut released = handle.shutdown().unwrap();
        released.sort_unstable();
        assert_eq!(released, (0..50).collect::<Vec<_>>());
        assert_eq!(Store::open(dir.path()).unwrap().count().unwrap(), 50);

        // Dropping the handle waits too.
        let handle = spawn(Store::open(dir.path()).unwrap(), WriterConfig::default()).unwrap();
        handle.send(batch(&["50"], &[])).unwrap();
        drop(handle);
        assert_eq!(Store::open(dir.path()).unwrap().count().unwrap(), 51);
    }

    /// Makes every insert fail until the returned connection drops the trigger.
    fn fail_inserts(dir: &TestDir) -> Connection {
        let side = Connection::open(dir.path().join(DB_FILE)).unwrap();
        side.execute_batch(
            "CREATE TRIGGER fail BEFORE INSERT ON profiles
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
        )
        .unwrap();
        side
    }

    fn wait_until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_failed_commit_keeps_its_profiles_retries_and_frees_the_slots_at_once() {
        let dir = TestDir::new("writer-retry");
        let store = Store::open(dir.path()).unwrap();
        let side = fail_inserts(&dir);
        let handle = spawn(store, WriterConfig::default()).unwrap();
        let stats = handle.stats();
        handle.send(batch(&["1"], &[1])).unwrap();
        wait_until("the commit did not fail", || stats.commit_errors() > 0);
        // The slots are not held while the store cannot write.
        assert_eq!(wait_released(&handle, 1), [1]);
        // Waits for the retry; its slots do not.
        handle.send(batch(&["2"], &[2])).unwrap();
        assert_eq!(wait_released(&handle, 1), [2]);
        wait_until("the second batch is not held", || {
            stats.profiles_pending() == 2
        });

        side.execute_batch("DROP TRIGGER fail").unwrap();
        wait_until("not written after the retry", || {
            stats.profiles_written() == 2
        });
        assert_eq!(stats.commits(), 1, "both batches in the retried commit");
        assert_eq!(stats.profiles_pending(), 0);
        assert_eq!(stats.dropped_unavailable(), 0);
        handle.shutdown().unwrap();
    }

    #[test]
    fn while_commits_fail_at_most_max_pending_profiles_are_held_the_oldest_dropped() {
        let dir = TestDir::new("writer-bound");
        let store = Store::open(dir.path()).unwrap();
        let side = fail_inserts(&dir);
        let config = WriterConfig {
            max_pending: 3,
            ..WriterConfig::default()
        };
        let handle = spawn(store, config).unwrap();
        let stats = handle.stats();
        handle.send(batch(&["1", "2"], &[1])).unwrap();
        wait_until("the commit did not fail", || stats.commit_errors() > 0);
        for i in 3..=6u64 {
            handle.send(batch(&[&i.to_string()], &[i])).unwrap();
        }
        wait_until("not all dropped", || stats.dropped_unavailable() == 3);
        assert_eq!(stats.profiles_pending(), 3);

        side.execute_batch("DROP TRIGGER fail").unwrap();
        wait_until("not written again", || stats.profiles_written() == 3);
        handle.shutdown().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let kept: Vec<String> = store.profiles(&ProfileQuery::default()).unwrap();
        assert_eq!(kept.len(), 3);
        for (json, jobid) in kept.iter().zip(["6", "5", "4"]) {
            assert!(json.contains(&format!(r#""jobid":"{jobid}""#)), "{json}");
        }
        // The registry is never dropped: the latest one is stored.
        assert_eq!(store.registry().unwrap().as_deref(), Some(r#"["6"]"#));
    }

    #[test]
    fn past_max_profiles_the_largest_users_oldest_go_first() {
        let dir = TestDir::new("writer-max");
        let handle = spawn(
            Store::open(dir.path()).unwrap(),
            WriterConfig {
                max_profiles: Some(20),
                ..WriterConfig::default()
            },
        )
        .unwrap();
        let stats = handle.stats();
        // Another user's five jobs, then one user's flood of 30.
        let others: Vec<Profile> = (0..5)
            .map(|i| profile(1001, &format!("b{i}"), "bob", 0.0, f64::from(i)))
            .collect();
        handle
            .send(Batch {
                profiles: others.clone(),
                ..Batch::default()
            })
            .unwrap();
        for i in 0..30 {
            let end = 100.0 + f64::from(i);
            handle
                .send(Batch {
                    profiles: vec![profile(1000, &format!("a{i}"), "alice", 0.0, end)],
                    ..Batch::default()
                })
                .unwrap();
        }
        handle.shutdown().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let stored = store.count().unwrap();
        assert!(stored <= 20, "{stored} profiles kept");
        assert!(stats.pruned_max_profiles() >= 15);
        assert_eq!(stats.profiles_stored(), stored);
        let bob = ProfileQuery {
            uid: Some(1001),
            ..ProfileQuery::default()
        };
        assert_eq!(store.profiles(&bob).unwrap().len(), 5, "bob's jobs kept");
        let alice = store
            .profiles(&ProfileQuery {
                uid: Some(1000),
                ..ProfileQuery::default()
            })
            .unwrap();
        assert!(alice[0].contains(r#""jobid":"a29""#), "{alice:?}");
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
        let handle = spawn(store, WriterConfig::default()).unwrap();
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
        let handle = spawn(Store::open(dir.path()).unwrap(), WriterConfig::default()).unwrap();
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
        let config = WriterConfig {
            retention: Some(Duration::from_secs(3600)),
            ..WriterConfig::default()
        };
        let handle = spawn(store, config).unwrap();
        let stats = handle.stats();
        let deadline = Instant::now() + Duration::from_secs(10);
        while stats.pruned_retention() == 0 {
            assert!(Instant::now() < deadline, "nothing pruned");
            thread::sleep(Duration::from_millis(5));
        }
        handle.shutdown().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store.profiles(&ProfileQuery::default()).unwrap(),
            [recent.json]
        );
        assert_eq!(stats.pruned_retention(), 1);
        assert_eq!(stats.profiles_stored(), 1);
    }
}
