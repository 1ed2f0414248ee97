//! Launchers that are not the trusted binary, or are it by another name:
//! a byte-identical copy, a binary deleted while running and a copy of
//! `monitor run` are refused and told why; a symlink to the trusted binary
//! is trusted.
use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::Context as _;
use monitor_tests::{
    ChildGuard, Daemon, cpu_shared,
    daemon::binary,
    launcher::{
        JOB_SAMPLES, RUN_TIMEOUT, Reply, TempDir, has_job, monitor_run_of, registrations,
        task_cgroups,
    },
    require_root_or_skip,
    starter::{send, send_with, starter_command},
};

const STARTER: &str = env!("CARGO_BIN_EXE_fake_starter");

fn copy_executable(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// What counts as a launcher's executable is what the kernel runs:
/// /proc/PID/exe. A byte-identical copy elsewhere is another file, which
/// nobody vetted (and anyone could have changed): not trusted. A binary
/// deleted (or replaced) since it started is not the trusted file either.
#[test]
fn a_copy_of_a_trusted_binary_is_untrusted() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    let scratch = TempDir::new("copy")?;
    // Same name as the trusted one, another path.
    let copy = scratch.0.join("fake_starter");
    copy_executable(Path::new(STARTER), &copy)?;
    let mut daemon = Daemon::start_with(&["--trust.path", STARTER])?;
    let before = registrations(&daemon.metrics()?, "untrusted")?;

    let (pid, stdout) = send_with(&copy, daemon.socket(), r#"{"job_id":"from-copy"}"#, &[])?;
    let reply = Reply::from_output(&stdout)?;
    println!("copy at {}: {}", copy.display(), reply.line);
    assert!(
        reply.refusal()?.contains("untrusted launcher"),
        "{}",
        reply.line
    );
    let log = format!("pid {pid} uid 0 gid 0 runs {copy:?}");
    assert!(
        daemon.stderr().contains(&log),
        "no log line with {log:?}; stderr:\n{}",
        daemon.stderr()
    );
    let metrics = daemon.still_serving()?;
    assert_eq!(registrations(&metrics, "untrusted")? - before, 1.0);
    assert!(
        !has_job(&metrics, "from-copy"),
        "an untrusted launcher made a job"
    );
    assert_eq!(
        task_cgroups(daemon.root())?,
        Vec::<PathBuf>::new(),
        "an untrusted launcher was placed"
    );
    drop(daemon);

    // Trusted by path, then deleted while running: /proc/PID/exe ends in
    // " (deleted)", and that is not the trusted file.
    let doomed = scratch.0.join("doomed_starter");
    copy_executable(Path::new(STARTER), &doomed)?;
    let doomed_arg = doomed.to_str().context("path")?;
    let mut daemon = Daemon::start_with(&["--trust.path", doomed_arg])?;
    let socket = daemon.socket().to_str().context("socket path")?.to_string();
    let mut command = starter_command(
        &doomed,
        &[
            "send",
            &socket,
            r#"{"job_id":"deleted"}"#,
            "--after-stdin-line",
        ],
    );
    command.stdin(Stdio::piped());
    let mut client = ChildGuard::spawn(&mut command, "a launcher whose binary was deleted")?;
    let lines = client.lines()?;
    fs::remove_file(&doomed)?;
    client.feed_stdin(b"go\n")?;
    lines.expect("connected", RUN_TIMEOUT)?;
    // (`write_error` first if the daemon hung up before the hello was written.)
    let mut line = lines.next(RUN_TIMEOUT)?;
    if line.starts_with("write_error") {
        line = lines.next(RUN_TIMEOUT)?;
    }
    let reply = Reply::from_output(&line)?;
    println!("deleted binary: {}", reply.line);
    assert!(
        reply.refusal()?.contains("untrusted launcher"),
        "{}",
        reply.line
    );
    client.wait(RUN_TIMEOUT)?;
    let metrics = daemon.still_serving()?;
    assert_eq!(registrations(&metrics, "untrusted")?, 1.0);
    Ok(())
}

/// A symlink to a trusted binary is trusted: exec resolves it, so
/// /proc/PID/exe is the trusted file itself and the code that runs is the
/// vetted code (a symlink cannot change it). The job's launcher label is
/// that file's name, not the link's. Likewise a --trust.path that is a
/// symlink trusts the file it points to (resolved at start).
#[test]
fn a_symlink_to_a_trusted_binary_is_trusted() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    let scratch = TempDir::new("symlink")?;
    let link = scratch.0.join("starter-link");
    std::os::unix::fs::symlink(STARTER, &link)?;

    let mut daemon = Daemon::start_with(&["--trust.path", STARTER])?;
    let (_, stdout) = send_with(&link, daemon.socket(), r#"{"job_id":"via-link"}"#, &[])?;
    let reply = Reply::from_output(&stdout)?;
    println!("via {}: {}", link.display(), reply.line);
    assert!(
        reply.ok,
        "a symlink to the trusted binary was refused: {}",
        reply.line
    );
    daemon.wait_for_series(
        "monitor_job_info",
        &[("jobid", "via-link"), ("launcher", "fake_starter")],
        JOB_SAMPLES,
    )?;
    daemon.still_serving()?;
    drop(daemon);

    let link_arg = link.to_str().context("path")?;
    let mut daemon = Daemon::start_with(&["--trust.path", link_arg])?;
    let (_, reply) = send(STARTER, daemon.socket(), r#"{"job_id":"trusted-via-link"}"#)?;
    assert!(
        reply.ok,
        "--trust.path given as a symlink did not trust its target: {}",
        reply.line
    );
    daemon.still_serving()?;
    Ok(())
}

/// An untrusted `monitor run` (a copy of the binary) must be told why it
/// was refused. The daemon answers an untrusted peer at accept, without
/// waiting for its hello, and closes; `monitor run` writes its hello after
/// connecting. Tried many times, as the order of the two is up to the
/// scheduler.
#[test]
fn a_refused_monitor_run_is_told_why() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    let scratch = TempDir::new("refused-run")?;
    let copy = scratch.0.join("monitor");
    copy_executable(&binary()?, &copy)?;
    let mut daemon = Daemon::start()?;

    const ATTEMPTS: usize = 30;
    let mut unexplained = Vec::new();
    for _ in 0..ATTEMPTS {
        let mut command = monitor_run_of(&copy, daemon.socket());
        command
            .args(["--require", "--job-id", "refused", "--", "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let output = ChildGuard::spawn(&mut command, "an untrusted monitor run")?
            .wait_with_output(RUN_TIMEOUT)?;
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(
            output.status.code(),
            Some(75),
            "untrusted monitor run --require: {stderr}"
        );
        if !stderr.contains("untrusted launcher") {
            unexplained.push(stderr);
        }
    }
    let metrics = daemon.still_serving()?;
    assert_eq!(registrations(&metrics, "untrusted")?, ATTEMPTS as f64);
    assert!(
        unexplained.is_empty(),
        "{} of {ATTEMPTS} refused `monitor run`s were not told why, e.g.: {}",
        unexplained.len(),
        unexplained[0].trim()
    );
    Ok(())
}
