//! The eBPF toolchain: nightly with rust-src (for -Z build-std=core) and
//! bpf-linker built against the LLVM major of that nightly. Installed here
//! when missing, so a fresh machine needs nothing by hand.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::util::{run, workspace_root};

const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn ensure() -> anyhow::Result<()> {
    let sysroot = nightly_sysroot()?;
    ensure_rust_src(&sysroot)?;
    ensure_bpf_linker(&sysroot)?;
    Ok(())
}

/// The installed `nightly` (the fuzz targets need it too; installing one
/// is left to the user: no dated nightly is pinned).
pub fn ensure_nightly() -> anyhow::Result<()> {
    nightly_sysroot().map(|_| ())
}

/// `cargo fmt` of the nightly, whose rustfmt applies the unstable import
/// settings of rustfmt.toml (the stable one ignores them). Its rustfmt
/// component is added when missing.
pub fn nightly_fmt() -> anyhow::Result<Command> {
    ensure_nightly()?;
    let installed = Command::new("rustup")
        .args(["run", "nightly", "rustfmt", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        eprintln!("xtask: rustfmt is missing for nightly (rustfmt.toml needs it); installing it");
        run(Command::new("rustup").args([
            "component",
            "add",
            "rustfmt",
            "--toolchain",
            "nightly",
        ]))?;
    }
    let mut cmd = Command::new("rustup");
    cmd.current_dir(workspace_root())
        .args(["run", "nightly", "cargo", "fmt"]);
    Ok(cmd)
}

fn nightly_sysroot() -> anyhow::Result<PathBuf> {
    let output = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output()
        .context("running rustup: is rustup installed?")?;
    if !output.status.success() {
        bail!(
            "no nightly toolchain (rustup run nightly failed: {}). Install one with `rustup toolchain install nightly`.",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(PathBuf::from(
        String::from_utf8_lossy(&output.stdout).trim(),
    ))
}

fn ensure_rust_src(sysroot: &Path) -> anyhow::Result<()> {
    if sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        return Ok(());
    }
    eprintln!(
        "xtask: rust-src is missing for nightly (needed for -Z build-std=core); installing it"
    );
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

fn bpf_linker_version() -> Option<String> {
    let output = Command::new("bpf-linker").arg("--version").output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

fn ensure_bpf_linker(sysroot: &Path) -> anyhow::Result<()> {
    if let Some(version) = bpf_linker_version()
        && version.contains(BPF_LINKER_VERSION)
    {
        return Ok(());
    }
    // bpf-linker links libLLVM, whose major must match rustc's. The nightly
    // ships its own libLLVM.so.<major>...: point bpf-linker's build at it.
    let lib_dir = sysroot.join("lib");
    let libllvm = fs::read_dir(&lib_dir)
        .with_context(|| format!("reading {}", lib_dir.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so."))
        })
        .with_context(|| {
            format!(
                "no libLLVM.so.* in {}: cannot build bpf-linker against the nightly's LLVM",
                lib_dir.display()
            )
        })?;
    let name = libllvm
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    let major = name
        .trim_start_matches("libLLVM.so.")
        .split('.')
        .next()
        .unwrap_or_default()
        .to_string();
    let prefix = workspace_root().join("target/xtask/llvm-prefix");
    let prefix_lib = prefix.join("lib");
    fs::create_dir_all(&prefix_lib)
        .with_context(|| format!("creating {}", prefix_lib.display()))?;
    for link in [prefix_lib.join("libLLVM.so"), prefix_lib.join(&name)] {
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&libllvm, &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    eprintln!(
        "xtask: installing bpf-linker {BPF_LINKER_VERSION} against the nightly's LLVM {major} ({}); this takes about a minute",
        libllvm.display()
    );
    let feature = format!("llvm-{major}");
    run(Command::new("cargo").env("LLVM_PREFIX", &prefix).args([
        "install",
        &format!("bpf-linker@{BPF_LINKER_VERSION}"),
        "--locked",
        "--no-default-features",
        "--features",
        &feature,
    ]))
    .context("installing bpf-linker")?;
    if bpf_linker_version().is_none() {
        bail!("bpf-linker was installed but is not on PATH: add ~/.cargo/bin to PATH");
    }
    Ok(())
}
