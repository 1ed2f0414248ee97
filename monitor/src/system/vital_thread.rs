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

#[cfg(test)]
mod tests {
    use std::process::Command;

    /// Set in the child process the test runs itself again as.
    const CHILD: &str = "MONITOR_VITAL_THREAD_TEST_CHILD";
    const NAME: &str =
        "system::vital_thread::tests::a_panicking_vital_thread_exits_the_process_with_70";

    /// No outside event makes the sampler or the store writer panic (see
    /// the issue 13 tests in tests/tests), so a thread that panics on
    /// purpose stands in for a bug: in a child process, whose main thread
    /// waits on it as the daemon's serves on (it joins only at shutdown).
    /// A thread spawned plainly ends, the join returns and the child exits
    /// 0; a vital one exits 70 first, with a line saying why.
    #[test]
    fn a_panicking_vital_thread_exits_the_process_with_70() {
        if std::env::var_os(CHILD).is_some() {
            let _ = env_logger::builder()
                .filter_level(log::LevelFilter::Error)
                .try_init();
            let thread = super::spawn("sampler", || panic!("a bug in the sampler"))
                .expect("spawning the thread");
            let _ = thread.join();
            // Reached only where the panic left the process running.
            std::process::exit(0);
        }
        let output = Command::new(std::env::current_exe().expect("the test binary"))
            .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .output()
            .expect("running the test binary again");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(super::EX_SOFTWARE),
            "the process went on after its sampler thread panicked ({}); stderr: {stderr}",
            output.status
        );
        assert!(
            stderr.contains(
                "the sampler thread panicked: exiting so that the service manager restarts the daemon"
            ),
            "no line saying why it exited: {stderr}"
        );
    }
}
