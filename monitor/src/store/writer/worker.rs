//! The writer thread's loop: gather what the sampler sent, commit it in
//! one transaction (retrying with a backoff while commits fail, within
//! [`WriterConfig::max_pending`]), hand the release ids back, and prune.
use std::{
    collections::VecDeque,
    sync::{
        Arc,
        atomic::Ordering::Relaxed,
        mpsc::{Receiver, RecvTimeoutError, Sender},
    },
    thread,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use super::{
    EXIT_ATTEMPTS, EXIT_RETRY, FIRST_RETRY, LOG_EVERY, MAX_RETRY, PRUNE_EVERY, WriterConfig,
    WriterStats,
};
use crate::{
    store::{Batch, Profile, Store, StoreError},
    system::{log_every::LogEvery, memory::ShrinkSparse},
};

/// What was received and is not committed yet: the batches merged.
#[derive(Debug, Default)]
pub(super) struct Pending {
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

pub(super) struct Writer {
    pub(super) store: Store,
    pub(super) batches: Receiver<Batch>,
    pub(super) released: Sender<Vec<u64>>,
    pub(super) stats: Arc<WriterStats>,
    pub(super) config: WriterConfig,
    pub(super) pending: Pending,
    /// Profiles in the store (counted at start, then kept up to date).
    pub(super) stored: u64,
    /// Commits failed in a row.
    pub(super) failures: u32,
    /// No commit before this, after a failure.
    pub(super) retry_at: Option<Instant>,
    pub(super) prune_at: Instant,
    pub(super) failure_log: LogEvery,
    pub(super) drop_log: LogEvery,
}

impl Writer {
    pub(super) fn run(mut self) -> Result<(), StoreError> {
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
                // A burst's room (10,000 profiles: about 1 MB) goes with it.
                self.pending.profiles.shrink_if_sparse();
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
