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
        bail!(
            "the end-to-end tests load kernel programs and make cgroups: run `sudo -E cargo xtask test`"
        );
    }
    ensure_promtool()?;
    ensure_slurm()?;
    let binary = build::build_release()?;
    unload_test_pins(&binary);
    let result = run(cargo()
        .env("MONITOR_BIN", &binary)
        .args([
            "test",
            "--release",
            "--workspace",
            "--exclude",
            "monitor-ebpf",
        ])
        .args(args))
    .context("tests failed");
    // Each test daemon unloads its own programs; a killed test run cannot,
    // and pinned programs would go on running on every context switch.
    unload_test_pins(&binary);
    result
}

/// Unloads what test daemons pinned (`/sys/fs/bpf/monitor-test-*`).
fn unload_test_pins(binary: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir("/sys/fs/bpf") else {
        return;
    };
    for entry in entries.flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with("monitor-test-")
        {
            continue;
        }
        let status = Command::new(binary)
            .args(["daemon", "--cleanup", "--bpf.pin-path"])
            .arg(entry.path())
            .stdout(std::process::Stdio::null())
            .status();
        if !status.is_ok_and(|s| s.success()) {
            eprintln!("xtask: could not unload {}", entry.path().display());
        }
    }
}

/// The Slurm tests run a real one-node Slurm: install Debian's slurmctld,
/// slurmd, slurm-client and munge when any is missing.
fn ensure_slurm() -> anyhow::Result<()> {
    let binaries = ["slurmctld", "slurmd", "sbatch", "munged"];
    let found = |binary: &&str| {
        which::which(binary).is_ok()
            || ["/usr/sbin", "/usr/bin"]
                .iter()
                .any(|dir| std::path::Path::new(dir).join(binary).exists())
    };
    if binaries.iter().all(found) {
        return Ok(());
    }
    eprintln!(
        "xtask: Slurm or munge is missing; installing Debian's slurmctld, slurmd, slurm-client and munge"
    );
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get")
        .args([
            "install",
            "-y",
            "--no-install-recommends",
            "slurmctld",
            "slurmd",
            "slurm-client",
            "munge",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .context("installing Slurm (apt-get install slurmctld slurmd slurm-client munge)")
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
    run(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends", "prometheus"])
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .context("installing promtool and prometheus (apt-get install prometheus)")
}
