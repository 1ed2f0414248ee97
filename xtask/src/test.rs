//! `cargo xtask test`: every test. Unit tests of the userspace crates, then
//! the privileged end-to-end tests against the real daemon binary.
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::{
    build,
    util::{cargo, is_root, run},
};

pub fn test(args: &[String]) -> anyhow::Result<()> {
    if !is_root() {
        bail!("the end-to-end tests load kernel programs and make cgroups: run `sudo -E cargo xtask test`");
    }
    ensure_promtool()?;
    let binary = build::build_release()?;
    run(cargo()
        .env("MONITOR_BIN", &binary)
        .args(["test", "--release", "--workspace", "--exclude", "monitor-ebpf"])
        .args(args))
    .context("tests failed")
}

/// `promtool check metrics` is one of the tests, and another scrapes the
/// daemon with the real Prometheus server: install Debian's prometheus
/// package (both binaries) when either is missing.
fn ensure_promtool() -> anyhow::Result<()> {
    if which::which("promtool").is_ok() && which::which("prometheus").is_ok() {
        return Ok(());
    }
    eprintln!("xtask: promtool or prometheus is missing; installing Debian's prometheus package");
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get").args(["install", "-y", "--no-install-recommends", "prometheus"]).env("DEBIAN_FRONTEND", "noninteractive"))
        .context("installing promtool and prometheus (apt-get install prometheus)")
}
