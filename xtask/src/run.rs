//! `cargo xtask run`: build, then start the daemon in the foreground.
use std::process::Command;

use anyhow::Context as _;

use crate::{build, util::is_root};

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let binary = build::build_release()?;
    let mut cmd = if is_root() {
        Command::new(&binary)
    } else {
        eprintln!("xtask: the daemon needs root; starting it with sudo");
        let mut sudo = Command::new("sudo");
        sudo.arg(&binary);
        sudo
    };
    cmd.arg("daemon").args(args);
    eprintln!("xtask: starting {cmd:?} (Ctrl-C stops it)");
    let status = cmd
        .status()
        .with_context(|| format!("starting {}", binary.display()))?;
    if !status.success() {
        anyhow::bail!("the daemon exited with {status}");
    }
    Ok(())
}
