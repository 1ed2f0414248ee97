//! The daemon's background threads yield to the node's work: the sampler,
//! the state store's writer and the /metrics renderers run at a lower
//! priority than the launcher socket, so a registration (which a job's
//! start waits on) never queues behind a sample that ends 1,000 jobs.
use std::io;

/// The nice value of the background threads.
pub const BACKGROUND_NICE: libc::c_int = 10;

/// Lowers the calling thread to [`BACKGROUND_NICE`]; `what` names it in the
/// warning logged if that fails (it then keeps the default priority).
pub fn lower_this_thread(what: &str) {
    // SAFETY: setpriority on this thread (who = 0 with PRIO_PROCESS is the
    // calling thread on Linux); lowering one's own priority needs no privilege.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, BACKGROUND_NICE) } != 0 {
        log::warn!(
            "{what} keeps the default priority: setpriority: {}",
            io::Error::last_os_error()
        );
    }
}
