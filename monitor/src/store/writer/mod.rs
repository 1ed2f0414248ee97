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
//!
//! Here the handle and the writer's settings; [`worker`] is the writer's
//! loop, [`stats`] its counters.
mod stats;
#[cfg(test)]
mod tests;
mod worker;

use std::{
    sync::{
        Arc,
        atomic::Ordering::Relaxed,
        mpsc::{self, Receiver, Sender},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

pub use self::stats::{StoreFigures, WriterStats};
use self::worker::{Pending, Writer};
use super::{Batch, Store, StoreError};
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
    let thread = crate::system::vital_thread::spawn("store-writer", move || {
        crate::system::priority::lower_this_thread("the store writer");
        writer.run()
    })
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
