//! The daemon's background threads yield to the node's work: the sampler,
//! the state store's writer and the /metrics renderers run at a lower
//! priority than the launcher socket, so a registration (which a job's
//! start waits on) never queues behind a sample that ends 1,000 jobs.
//!
//! A lowered thread that holds what a registration waits for (the job
//! table's lock, the kernel's cgroup mutex in an rmdir) must not be
//! preempted with it, though: it would make the registration wait for the
//! work it yields to (priority inversion). Such sections run under
//! [`foreground`], at the default priority.
use std::{cell::Cell, io};

/// The nice value of the background threads.
pub const BACKGROUND_NICE: libc::c_int = 10;
/// The nice value of the rest of the daemon.
const DEFAULT_NICE: libc::c_int = 0;

thread_local! {
    /// Whether this thread was lowered, and how many [`Foreground`]s it
    /// holds now.
    static LOWERED: Cell<bool> = const { Cell::new(false) };
    static RAISED: Cell<usize> = const { Cell::new(0) };
}

/// Lowers the calling thread to [`BACKGROUND_NICE`]; `what` names it in the
/// warning logged if that fails (it then keeps the default priority).
pub fn lower_this_thread(what: &str) {
    match set_this_thread(BACKGROUND_NICE) {
        Ok(()) => LOWERED.set(true),
        Err(e) => log::warn!("{what} keeps the default priority: setpriority: {e}"),
    }
}

/// The calling thread at the default priority until the guard is dropped
/// (nested guards: until the last). Nothing on a thread never lowered.
pub fn foreground() -> Foreground {
    if LOWERED.get() {
        let raised = RAISED.get();
        // Raising needs CAP_SYS_NICE, which the daemon has as root; without
        // it the section runs lowered, as it did before.
        if raised == 0 && set_this_thread(DEFAULT_NICE).is_err() {
            return Foreground { raised: false };
        }
        RAISED.set(raised + 1);
        return Foreground { raised: true };
    }
    Foreground { raised: false }
}

/// See [`foreground`].
#[must_use = "the thread is lowered again when this is dropped"]
pub struct Foreground {
    raised: bool,
}

impl Drop for Foreground {
    fn drop(&mut self) {
        if !self.raised {
            return;
        }
        let raised = RAISED.get().saturating_sub(1);
        RAISED.set(raised);
        if raised == 0 {
            let _ = set_this_thread(BACKGROUND_NICE);
        }
    }
}

fn set_this_thread(nice: libc::c_int) -> io::Result<()> {
    // SAFETY: setpriority on this thread (who = 0 with PRIO_PROCESS is the
    // calling thread on Linux).
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nice_of_this_thread() -> libc::c_int {
        // SAFETY: getpriority of this thread; -1 is a valid answer, and
        // errno is not looked at (the tests run where it cannot fail).
        unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
    }

    #[test]
    fn a_lowered_thread_runs_its_foreground_sections_at_the_default_priority() {
        std::thread::spawn(|| {
            lower_this_thread("a test thread");
            if nice_of_this_thread() != BACKGROUND_NICE {
                // Run at a lower priority than that already: nothing to test.
                return;
            }
            let privileged = nix::unistd::geteuid().is_root();
            {
                let _outer = foreground();
                let _inner = foreground();
                if privileged {
                    assert_eq!(nice_of_this_thread(), DEFAULT_NICE);
                }
            }
            assert_eq!(nice_of_this_thread(), BACKGROUND_NICE);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_thread_never_lowered_is_left_alone() {
        std::thread::spawn(|| {
            let before = nice_of_this_thread();
            drop(foreground());
            assert_eq!(nice_of_this_thread(), before);
        })
        .join()
        .unwrap();
    }
}
