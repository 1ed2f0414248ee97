//! Keeping the daemon's resident memory close to what it uses. A scrape
//! with 10,000 finished jobs in retention builds about 20 MB of text; glibc
//! keeps freed memory in per-thread arenas (one per tokio worker that ever
//! rendered a scrape) instead of returning it, so the daemon would sit at
//! several times its working set. Other allocators: nothing to do. Tables
//! sized for a burst of cgroups give their room back once it is over
//! ([`ShrinkSparse`]).

use std::{
    collections::HashMap,
    hash::{BuildHasher, Hash},
};

/// Caps glibc's malloc arenas, and serves large blocks (a scrape's text)
/// from mmap so they go back to the kernel when freed: glibc otherwise
/// raises that threshold after the first large free and keeps later ones
/// on its heaps. Call before starting threads.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Returns freed heap memory to the kernel.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory the allocator holds free.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Tables whose room outlived a burst: Vec, VecDeque and HashMap never
/// give memory back as entries go, so after 10,000 cgroups came and went
/// every table sized for them held megabytes for none. Shrunk once they
/// are at most a quarter full, to twice what they hold: a table that
/// refills every sample (the readings) keeps its room in steady state.
pub trait ShrinkSparse {
    fn shrink_if_sparse(&mut self);
}

/// Tables this small are left alone: their room costs next to nothing.
const SMALL_TABLE: usize = 64;

/// The capacity to shrink to, if `capacity` is sparse for `len`.
fn shrunk_capacity(len: usize, capacity: usize) -> Option<usize> {
    (capacity > SMALL_TABLE && len.saturating_mul(4) <= capacity)
        .then(|| len.saturating_mul(2).max(SMALL_TABLE))
}

impl<T> ShrinkSparse for Vec<T> {
    fn shrink_if_sparse(&mut self) {
        if let Some(capacity) = shrunk_capacity(self.len(), self.capacity()) {
            self.shrink_to(capacity);
        }
    }
}

impl<T> ShrinkSparse for std::collections::VecDeque<T> {
    fn shrink_if_sparse(&mut self) {
        if let Some(capacity) = shrunk_capacity(self.len(), self.capacity()) {
            self.shrink_to(capacity);
        }
    }
}

impl<K: Eq + Hash, V, S: BuildHasher> ShrinkSparse for HashMap<K, V, S> {
    fn shrink_if_sparse(&mut self) {
        if let Some(capacity) = shrunk_capacity(self.len(), self.capacity()) {
            self.shrink_to(capacity);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_shrinks_once_three_quarters_are_empty() {
        let mut readings: Vec<u64> = (0..10_000).collect();
        readings.truncate(5_000);
        readings.shrink_if_sparse();
        assert!(readings.capacity() >= 10_000, "half full: kept");
        readings.truncate(100);
        readings.shrink_if_sparse();
        assert!((100..=256).contains(&readings.capacity()));
        assert_eq!(readings.len(), 100);

        let mut latest: HashMap<u64, u64> = (0..10_000).map(|id| (id, id)).collect();
        latest.retain(|id, _| *id < 10);
        latest.shrink_if_sparse();
        assert!(latest.capacity() < 256);
        assert_eq!(latest.len(), 10);

        let mut small: Vec<u8> = Vec::with_capacity(SMALL_TABLE);
        small.shrink_if_sparse();
        assert_eq!(small.capacity(), SMALL_TABLE, "small tables are left alone");
    }
}
