//! Builds the kernel programs with aya-build and embeds them in the daemon.
//!
//! Where the eBPF toolchain (nightly rust-src, bpf-linker) is missing, the
//! build still succeeds with an empty object, so `cargo build`, clippy and
//! the unit tests work anywhere; the daemon refuses that object at start.
//! `cargo xtask build-ebpf` installs the toolchain.
//!
//! aya-build prints each line of the nested cargo build as a cargo warning;
//! this script runs that build in a second copy of itself and shows its
//! output only when it fails (or one line pointing to it, when it warns).
use std::{env, fs, path::PathBuf, process::Command};

use anyhow::{Context as _, anyhow, bail};
use aya_build::Toolchain;

const EBPF_PACKAGE: &str = "monitor-ebpf";

/// Set in the copy of this script that runs the nested build.
const NESTED_BUILD: &str = "MONITOR_NESTED_EBPF_BUILD";

/// The nested build's whole output, kept after every build.
const BUILD_LOG: &str = "monitor-ebpf-build.log";

fn main() -> anyhow::Result<()> {
    if env::var_os(NESTED_BUILD).is_some() {
        return build_ebpf();
    }
    emit_git_revision();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let object = out_dir.join(EBPF_PACKAGE);

    println!("cargo:rerun-if-env-changed=MONITOR_SKIP_EBPF");
    let skip = env::var("MONITOR_SKIP_EBPF").is_ok_and(|v| v == "1" || v == "true");
    match (skip, missing_toolchain()) {
        (false, None) => build_ebpf_quietly(&out_dir),
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

/// Runs [`build_ebpf`] in a copy of this script (cargo hands it the same
/// environment) and passes its cargo directives through. The rest of its
/// output is kept in [`BUILD_LOG`]: shown whole when the build fails, named
/// in one warning when it built with warnings, and not shown otherwise.
fn build_ebpf_quietly(out_dir: &std::path::Path) -> anyhow::Result<()> {
    let script = env::current_exe().context("finding the build script")?;
    let output = Command::new(script)
        .env(NESTED_BUILD, "1")
        // Its error is the nested cargo command line, not a Rust backtrace.
        .env("RUST_LIB_BACKTRACE", "0")
        .output()
        .context("running the eBPF build")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut messages = Vec::new();
    for line in stdout.lines() {
        match line
            .strip_prefix("cargo:warning=")
            .or_else(|| line.strip_prefix("cargo::warning="))
        {
            Some(message) => messages.push(message),
            // rerun-if-changed and the like
            None => println!("{line}"),
        }
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let log = out_dir.join(BUILD_LOG);
    fs::write(&log, format!("{}\n{stderr}", messages.join("\n")))
        .with_context(|| format!("writing {}", log.display()))?;
    if !output.status.success() {
        for message in &messages {
            eprintln!("{message}");
        }
        eprint!("{stderr}");
        bail!("building the kernel programs ({EBPF_PACKAGE}) failed; its output is above");
    }
    // Compiler warnings start their line; cargo's progress lines are indented.
    if messages.iter().any(|m| m.starts_with("warning")) {
        println!(
            "cargo:warning=the kernel programs ({EBPF_PACKAGE}) built with warnings: see {}",
            log.display()
        );
    }
    Ok(())
}

/// The nested cargo build of the kernel programs, into OUT_DIR.
fn build_ebpf() -> anyhow::Result<()> {
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
