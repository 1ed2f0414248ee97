//! Driving the fake launcher (tests/src/bin/fake_starter.rs): its
//! commands, and a hello sent through it to the daemon's launcher socket.
//!
//! Cargo tells only the test files where the binary is
//! (`CARGO_BIN_EXE_fake_starter`), so each takes its path from them.
use std::{
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::{
    ChildGuard,
    launcher::{RUN_TIMEOUT, Reply},
};

/// `program ARGS...`, stdin closed, stdout and stderr captured.
pub fn starter_command(program: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs `program send SOCKET PAYLOAD FLAGS...` to its end: its pid and what it printed.
pub fn send_with(
    program: &Path,
    socket: &Path,
    payload: &str,
    flags: &[&str],
) -> anyhow::Result<(u32, String)> {
    let socket = socket.to_str().context("socket path")?;
    let mut args = vec!["send", socket, payload];
    args.extend_from_slice(flags);
    let child = ChildGuard::spawn(&mut starter_command(program, &args), "fake_starter send")?;
    let pid = child.id();
    let output = child.wait_with_output(RUN_TIMEOUT)?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "fake_starter send: {}; stdout {stdout:?}; stderr {:?}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok((pid, stdout))
}

/// A hello from the launcher `program`, and the daemon's answer.
pub fn send(
    program: impl AsRef<Path>,
    socket: &Path,
    payload: &str,
) -> anyhow::Result<(u32, Reply)> {
    let (pid, stdout) = send_with(program.as_ref(), socket, payload, &[])?;
    Ok((pid, Reply::from_output(&stdout)?))
}
