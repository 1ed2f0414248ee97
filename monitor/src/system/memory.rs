//! Keeping the daemon's resident memory close to what it uses. A scrape
//! with 10,000 finished jobs in retention builds about 20 MB of text; glibc
//! keeps freed memory in per-thread arenas (one per tokio worker that ever
//! rendered a scrape) instead of returning it, so the daemon would sit at
//! several times its working set. Other allocators: nothing to do.

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
