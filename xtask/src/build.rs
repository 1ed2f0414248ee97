//! Building the kernel programs and the daemon.
use std::{path::PathBuf, process::Command};

use anyhow::Context as _;

use crate::{
    toolchain,
    util::{cargo, run, workspace_root},
};

/// Builds monitor-ebpf for bpfel-unknown-none; returns the object's path.
pub fn build_ebpf() -> anyhow::Result<PathBuf> {
    toolchain::ensure()?;
    let target_dir = workspace_root().join("target/ebpf");
    let rustflags = [
        "--cfg=bpf_target_arch=\"x86_64\"",
        "-Cdebuginfo=2",
        "-Clink-arg=--btf",
    ]
    .join("\x1f");
    // `rustup run nightly cargo`, not $CARGO: under `cargo xtask` that is the
    // stable cargo binary itself, which ignores RUSTUP_TOOLCHAIN.
    let mut nightly_cargo = Command::new("rustup");
    nightly_cargo
        .current_dir(workspace_root())
        .args(["run", "nightly", "cargo"]);
    run(nightly_cargo
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags)
        .env_remove("RUSTC")
        .args([
            "build",
            "--package",
            "monitor-ebpf",
            "--bins",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
        ])
        .arg("--target-dir")
        .arg(&target_dir))
    .context("building the kernel programs")?;
    Ok(target_dir.join("bpfel-unknown-none/release/monitor-ebpf"))
}

/// Builds the daemon (release) with the kernel programs embedded.
pub fn build_release() -> anyhow::Result<PathBuf> {
    build_ebpf()?;
    run(cargo().args(["build", "--release", "--package", "monitor"]))
        .context("building the daemon")?;
    Ok(daemon_binary())
}

pub fn daemon_binary() -> PathBuf {
    workspace_root().join("target/release/monitor")
}
