//! When a test may skip, and which tests may share the machine.
use std::{
    io::Write as _,
    sync::{RwLock, RwLockReadGuard, RwLockWriteGuard},
};

/// Is this a CI run? There a skipped test would hide a broken set-up, so
/// every skip is a failure instead.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Skips the calling test with `reason` (returns false, meaning "do not
/// run"), or panics with it when `CI=true`.
pub fn skip_or_fail(reason: &str) -> bool {
    if in_ci() {
        panic!("CI=true, so this cannot be skipped: {reason}");
    }
    // Straight to stderr, not eprintln!: the test harness would capture it
    // and hide it for a test that "passed".
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
    false
}

/// True when the test can run: root, and a cgroup v2 hierarchy to make jobs in.
/// Otherwise skips (or fails under `CI=true`).
pub fn require_root_or_skip() -> bool {
    if !nix::unistd::geteuid().is_root() {
        return skip_or_fail(
            "the end-to-end tests load kernel programs and make cgroups: run them as root",
        );
    }
    if let Err(e) = crate::cgroup::v2_mount() {
        return skip_or_fail(&format!("no cgroup v2 hierarchy: {e:#}"));
    }
    true
}

/// Tests that measure CPU and scheduling time hold this exclusively; every
/// other test holds it shared. On two cores another test's daemon start-up
/// or workload landing on the pinned CPU would show up as run-queue wait.
static MACHINE: RwLock<()> = RwLock::new(());

/// The machine to yourself: no other test of this binary runs meanwhile.
pub fn cpu_exclusive() -> RwLockWriteGuard<'static, ()> {
    // A test that panicked while holding the lock poisoned it; the lock
    // guards no data, so carry on.
    MACHINE
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Share the machine with other light tests, but not with a timing one.
pub fn cpu_shared() -> RwLockReadGuard<'static, ()> {
    MACHINE
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
