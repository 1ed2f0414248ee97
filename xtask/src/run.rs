//! `cargo xtask run`: build, then start the daemon in the foreground: the
//! README's try-out. It pins nothing, so its kernel programs go with it when
//! it stops (Ctrl-C); the service (packaging/systemd) keeps them pinned, so
//! counting survives its restarts.
use std::{
    path::Path,
    process::{Command, ExitStatus},
};

use anyhow::Context as _;

use crate::{build, util::is_root};

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let binary = build::build_release()?;
    let status = try_out(&binary, args)?;
    if !status.success() {
        anyhow::bail!("the daemon exited with {status}");
    }
    Ok(())
}

/// Runs the daemon until it stops, then makes sure nothing of it stays
/// loaded, and says so.
fn try_out(binary: &Path, args: &[String]) -> anyhow::Result<ExitStatus> {
    let pin_path = pin_path_of(args);
    let mut cmd = if is_root() {
        Command::new(binary)
    } else {
        eprintln!("xtask: the daemon needs root; starting it with sudo");
        let mut sudo = Command::new("sudo");
        sudo.arg(binary);
        sudo
    };
    cmd.arg("daemon");
    if pin_path.is_none() {
        // Not pinned: the programs live as long as the daemon's process.
        cmd.arg("--bpf.pin-path=");
    }
    cmd.args(args);
    eprintln!("xtask: starting {cmd:?} (Ctrl-C stops it)");
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    // Ctrl-C reaches the daemon too (one process group): it stops on its
    // own; this process waits for it, to clean up and say so after.
    // SAFETY: sets a signal disposition; no handler runs.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    let status = child.wait().context("waiting for the daemon")?;
    // SAFETY: as above.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_DFL) };
    match pin_path {
        None => eprintln!(
            "xtask: the daemon stopped ({status}); its kernel programs were not pinned and are \
             unloaded with it: nothing of it is left running"
        ),
        Some(path) => {
            // Asked to pin: a try-out still leaves nothing behind.
            let cleanup = Command::new(binary)
                .args(["daemon", "--cleanup", "--bpf.pin-path", path])
                .status()
                .context("unloading the pinned programs")?;
            eprintln!(
                "xtask: the daemon stopped ({status}); unloaded what it pinned under {path} ({cleanup})"
            );
        }
    }
    Ok(status)
}

/// The `--bpf.pin-path` the user gave, if any.
fn pin_path_of(args: &[String]) -> Option<&str> {
    args.iter()
        .enumerate()
        .find_map(|(i, arg)| {
            if let Some(value) = arg.strip_prefix("--bpf.pin-path=") {
                return Some(value);
            }
            (arg == "--bpf.pin-path").then(|| args.get(i + 1).map(String::as_str))?
        })
        // Empty: not pinned.
        .filter(|path| !path.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_path_given_either_way_is_found() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(pin_path_of(&args(&["--bpf.pin-path", "/x"])), Some("/x"));
        assert_eq!(pin_path_of(&args(&["--bpf.pin-path=/y"])), Some("/y"));
        assert_eq!(pin_path_of(&args(&["--log.level", "debug"])), None);
        assert_eq!(pin_path_of(&args(&["--bpf.pin-path="])), None);
    }
}
