//! Threads the daemon cannot serve without (the sampler, the state store's
//! writer). If one panics, the daemon exits (status 70, EX_SOFTWARE)
//! rather than go on serving stale figures with `monitor_sample_success 1`:
//! the service manager restarts it, and the pinned programs count on
//! meanwhile, so the restarted daemon loses nothing.
use std::{
    io,
    panic::{AssertUnwindSafe, catch_unwind},
    thread::{self, JoinHandle},
};

const EX_SOFTWARE: i32 = 70;

pub fn spawn<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> io::Result<JoinHandle<T>> {
    let owned = name.to_string();
    thread::Builder::new().name(owned.clone()).spawn(move || {
        // The panic message itself is printed by the default hook first.
        match catch_unwind(AssertUnwindSafe(work)) {
            Ok(value) => value,
            Err(_) => {
                log::error!(
                    "the {owned} thread panicked: exiting so that the service manager restarts the daemon (pinned programs keep counting)"
                );
                std::process::exit(EX_SOFTWARE);
            }
        }
    })
}
