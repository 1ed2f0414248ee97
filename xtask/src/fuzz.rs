//! `cargo xtask fuzz`: every fuzz target in `fuzz/` (cargo-fuzz, libFuzzer)
//! for a while each, from the committed corpus. `cargo xtask test` runs
//! them 30 s each. A crash, panic, hang or out-of-memory fails the run; the
//! input that did it is left in `fuzz/artifacts/<target>/`.
use std::{fs, process::Command};

use anyhow::{Context as _, bail};

use crate::{
    toolchain,
    util::{run, workspace_root},
};

/// Pinned as bpf-linker is: a newer release may need a newer stable rustc.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// The targets, as fuzz/Cargo.toml names them.
pub const TARGETS: [&str; 4] = ["hello", "api_query", "stored_profile", "btf"];

#[derive(Debug, clap::Args)]
pub struct FuzzArgs {
    /// How long each target runs.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Targets to run (all when none is given).
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    pub targets: Vec<String>,
}

pub fn fuzz(args: &FuzzArgs) -> anyhow::Result<()> {
    toolchain::ensure_nightly()?;
    ensure_cargo_fuzz()?;
    let root = workspace_root();
    let targets: Vec<&str> = if args.targets.is_empty() {
        TARGETS.to_vec()
    } else {
        args.targets.iter().map(String::as_str).collect()
    };
    for target in targets {
        // New inputs go to a scratch directory, so a run leaves the
        // committed corpus as it is (README, "Tests", says how to grow it);
        // the named seeds (valid inputs, past crashes) are replayed too.
        let scratch = root.join("target/fuzz-corpus").join(target);
        fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
        eprintln!("xtask: fuzzing {target} for {} s", args.seconds);
        run(nightly_cargo()
            .args(["fuzz", "run", target])
            .arg(&scratch)
            .arg(root.join("fuzz/corpus").join(target))
            .arg(root.join("fuzz/seeds").join(target))
            .args([
                "--",
                &format!("-max_total_time={}", args.seconds),
                // An input parsed for more than 10 s is a hang, not a slow run.
                "-timeout=10",
                "-print_final_stats=1",
            ]))
        .with_context(|| {
            format!(
                "fuzz target {target} failed: its input is in fuzz/artifacts/{target}/ \
                 (replay: `cargo +nightly fuzz run {target} fuzz/artifacts/{target}/<file>`)"
            )
        })?;
    }
    Ok(())
}

/// `cargo` of the nightly, in the workspace root. Not $CARGO: under
/// `cargo xtask` that is the stable cargo binary, which ignores `+nightly`.
fn nightly_cargo() -> Command {
    let mut cmd = Command::new("rustup");
    cmd.current_dir(workspace_root())
        .args(["run", "nightly", "cargo"])
        .env_remove("RUSTC")
        // The fuzz targets reach parsers, not the kernel programs: the
        // daemon's build script skips building them (and their toolchain
        // never sees the sanitizer flags).
        .env("MONITOR_SKIP_EBPF", "1");
    cmd
}

fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    let works = || {
        nightly_cargo()
            .args(["fuzz", "--version"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if works() {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION}; this takes about two minutes");
    run(Command::new("cargo").args([
        "install",
        &format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"),
        "--locked",
    ]))
    .context("installing cargo-fuzz")?;
    if !works() {
        bail!("cargo-fuzz was installed but is not on PATH: add ~/.cargo/bin to PATH");
    }
    Ok(())
}
