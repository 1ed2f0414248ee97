//! `CGROUP_CHANGED` mapped into the daemon's memory: one word per counter
//! slot that the programs set after changing the slot's counters, and the
//! daemon clears before reading them. A slot whose word is clear has not
//! changed since its last read, so a sample reads only the slots that did:
//! at 1,000 idle jobs that is 1,000 `bpf()` calls a sample fewer.
//!
//! The order makes it exact: the programs update, pass a full barrier,
//! then set the word; the daemon swaps the word to 0 (a full barrier too),
//! then reads. Whatever the interleaving, an update is either seen by that
//! read or leaves the word set for the next one.
use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use aya::maps::{Map, MapData};

#[derive(Debug, thiserror::Error)]
pub enum ChangedFlagsError {
    #[error("CGROUP_CHANGED is not a plain array map")]
    NotAnArray,
    #[error("CGROUP_CHANGED: {0}")]
    Map(#[from] aya::maps::MapError),
    #[error("mapping CGROUP_CHANGED into memory: {0}")]
    Mmap(#[source] std::io::Error),
}

pub struct ChangedFlags {
    words: NonNull<AtomicU64>,
    len: u32,
    mapped_bytes: usize,
    /// Held so the map outlives the mapping's users (the mapping itself
    /// also keeps the map alive).
    _map: MapData,
}

// SAFETY: the mapping is shared memory reached only through atomics.
unsafe impl Send for ChangedFlags {}

impl ChangedFlags {
    pub fn map(map: Map) -> Result<Self, ChangedFlagsError> {
        let Map::Array(data) = map else {
            return Err(ChangedFlagsError::NotAnArray);
        };
        let len = data.info()?.max_entries();
        let mapped_bytes = (len as usize * size_of::<u64>()).max(1);
        let fd = data.fd().as_fd().as_raw_fd();
        // SAFETY: a fresh shared mapping of the map's values, which the
        // kernel sizes to at least `len` u64s (BPF_F_MMAPABLE arrays).
        let address = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapped_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if address == libc::MAP_FAILED {
            return Err(ChangedFlagsError::Mmap(std::io::Error::last_os_error()));
        }
        let words = NonNull::new(address.cast())
            .ok_or_else(|| ChangedFlagsError::Mmap(std::io::Error::other("mmap returned NULL")))?;
        Ok(Self {
            words,
            len,
            mapped_bytes,
            _map: data,
        })
    }

    /// Whether `slot` changed since the last call for it; clears it. A
    /// slot out of range reads as changed (it is then read, never missed).
    pub fn take(&self, slot: u32) -> bool {
        if slot >= self.len {
            return true;
        }
        // SAFETY: in range of the mapping; the kernel writes the same
        // aligned words.
        let word = unsafe { &*self.words.as_ptr().add(slot as usize) };
        word.swap(0, Ordering::SeqCst) != 0
    }
}

impl Drop for ChangedFlags {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe {
            libc::munmap(self.words.as_ptr().cast(), self.mapped_bytes);
        }
    }
}
