//! Process file descriptors: a pidfd pins one process, so a pid number
//! used while its pidfd's process is unreaped is that process's, not a
//! later one's that got the number again.
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::errno::Errno;

/// A pidfd for `pid` (ESRCH: no such process).
pub fn open(pid: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: plain syscall; on success it returns a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(Errno::last());
    }
    let fd = i32::try_from(fd).map_err(|_| Errno::EBADF)?;
    // SAFETY: a fresh fd from the kernel.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether the pidfd's process is not reaped yet (running or a zombie):
/// its pid number is still its own. Signal 0 checks without sending.
pub fn unreaped(pidfd: BorrowedFd<'_>) -> bool {
    // SAFETY: plain syscall on a descriptor we hold; no siginfo.
    let sent = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            0,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    sent == 0 || Errno::last() != Errno::ESRCH
}
