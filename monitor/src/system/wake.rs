//! Waking the sampler thread from elsewhere (a pipe it polls).
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::{fcntl::OFlag, unistd};

#[derive(Debug)]
pub struct Wake {
    read: OwnedFd,
    write: OwnedFd,
}

impl Wake {
    pub fn new() -> nix::Result<Self> {
        let (read, write) = unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        Ok(Self { read, write })
    }

    /// Wakes the poller; a full pipe means it is awake already.
    pub fn wake(&self) {
        let _ = unistd::write(&self.write, &[1]);
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// Empties the pipe after a wake-up.
    pub fn drain(&self) {
        let mut buf = [0u8; 64];
        while matches!(unistd::read(&self.read, &mut buf), Ok(n) if n > 0) {}
    }
}
