//! The writer's counters, for the metrics: updated by the writer thread,
//! read at sample time as plain [`StoreFigures`].
use std::{
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

/// Counters for the metrics; updated by the writer thread.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub(super) profiles_written: AtomicU64,
    pub(super) commits: AtomicU64,
    pub(super) commit_errors: AtomicU64,
    pub(super) last_commit_micros: AtomicU64,
    pub(super) profiles_pending: AtomicU64,
    pub(super) profiles_stored: AtomicU64,
    pub(super) pruned_retention: AtomicU64,
    pub(super) pruned_max_profiles: AtomicU64,
    pub(super) dropped_unavailable: AtomicU64,
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
