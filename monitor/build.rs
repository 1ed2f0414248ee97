//! Builds the kernel programs with aya-build and embeds them in the daemon.
//!
//! Where the eBPF toolchain (nightly rust-src, bpf-linker) is missing, the
//! build still succeeds with an empty object, so `cargo build`, clippy and
//! the unit tests work anywhere; the daemon refuses that object at start.
//! `cargo xtask build-ebpf` installs the toolchain.
use std::{env, fs, path::PathBuf, process::Command};

use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

const EBPF_PACKAGE: &str = "monitor-ebpf";

fn main() -> anyhow::Result<()> {
    emit_git_revision();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let object = out_dir.join(EBPF_PACKAGE);

    println!("cargo:rerun-if-env-changed=MONITOR_SKIP_EBPF");
    let skip = env::var("MONITOR_SKIP_EBPF").is_ok_and(|v| v == "1" || v == "true");
    match (skip, missing_toolchain()) {
        (false, None) => {
            let metadata = cargo_metadata::MetadataCommand::new().no_deps().exec()?;
            let package = metadata
                .packages
                .iter()
                .find(|p| p.name.as_str() == EBPF_PACKAGE)
                .ok_or_else(|| anyhow!("{EBPF_PACKAGE} not in the workspace"))?;
            let root_dir = package
                .manifest_path
                .parent()
                .ok_or_else(|| anyhow!("{EBPF_PACKAGE} manifest has no directory"))?;
            aya_build::build_ebpf(
                [aya_build::Package {
                    name: EBPF_PACKAGE,
                    root_dir: root_dir.as_str(),
                    ..Default::default()
                }],
                Toolchain::default(),
            )
        }
        (skip, missing) => {
            let why = if skip {
                "MONITOR_SKIP_EBPF is set".to_string()
            } else {
                missing.unwrap_or_default()
            };
            println!(
                "cargo:warning=kernel programs not built ({why}); the daemon will refuse to start. Run `cargo xtask build-ebpf`."
            );
            fs::write(&object, []).context("writing the empty eBPF object")?;
            Ok(())
        }
    }
}

/// Why the eBPF build cannot run here, or None when it can.
fn missing_toolchain() -> Option<String> {
    let Ok(linker) = which::which("bpf-linker") else {
        // Re-run once it appears (cargo re-runs for a path that does not exist).
        println!("cargo:rerun-if-changed=/nonexistent/bpf-linker");
        return Some("bpf-linker not found".into());
    };
    println!("cargo:rerun-if-changed={}", linker.display());
    let sysroot = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let Some(sysroot) = sysroot else {
        return Some("no nightly toolchain".into());
    };
    let rust_src = sysroot.join("lib/rustlib/src/rust/library");
    println!("cargo:rerun-if-changed={}", rust_src.display());
    if !rust_src.exists() {
        return Some("rust-src is not installed for nightly".into());
    }
    None
}

fn emit_git_revision() {
    let revision = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=MONITOR_GIT_REVISION={revision}");
}
