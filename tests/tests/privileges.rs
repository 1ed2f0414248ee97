//! The daemon refuses to run without root, saying why.
use std::{
    process::{Command, Stdio},
    time::Duration,
};

use monitor_tests::{
    ChildGuard, cpu_shared,
    daemon::binary,
    process::{NOBODY, run_as},
};

#[test]
fn daemon_refuses_without_root() -> anyhow::Result<()> {
    let _machine = cpu_shared();
    let mut command = Command::new(binary()?);
    // Harmless flags in case it wrongly starts: no real port, no real root.
    command
        .args([
            "daemon",
            "--web.listen-address",
            "127.0.0.1:0",
            "--cgroup.root",
            "/nonexistent/monitor-test.slice",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // As root, become nobody; as anyone else, we are unprivileged already.
    if nix::unistd::geteuid().is_root() {
        run_as(&mut command, NOBODY, NOBODY);
    }
    let output = ChildGuard::spawn(&mut command, "the daemon as an unprivileged user")?
        .wait_with_output(Duration::from_secs(10))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("unprivileged daemon: {}; stderr: {stderr}", output.status);
    assert!(
        !output.status.success(),
        "the daemon ran without root ({}); stderr:\n{stderr}",
        output.status
    );
    assert!(
        stderr.contains("root"),
        "the daemon's refusal does not mention root; stderr:\n{stderr}"
    );
    Ok(())
}
