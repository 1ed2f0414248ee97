//! What Prometheus' own tooling makes of `/metrics`.
use std::{
    process::{Command, Stdio},
    time::Duration,
};

use monitor_tests::{
    ChildGuard, Daemon, cpu_shared, process::run_ok, prometheus::promtool_or_skip,
    require_root_or_skip,
};

#[test]
fn promtool_check_metrics_passes() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let Some(promtool) = promtool_or_skip() else {
        return Ok(());
    };
    let _machine = cpu_shared();
    let daemon = Daemon::start()?;
    // A job, so the per-job families have samples and labels to check.
    let job = daemon.create_job("lint")?;
    run_ok(
        &mut job.command("/bin/true")?,
        "/bin/true",
        Duration::from_secs(30),
    )?;
    let metrics = daemon.metrics_after_samples(2)?;
    metrics.value("monitor_job_info", &[("jobid", "lint")])?;

    let mut check = Command::new(&promtool);
    check
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = ChildGuard::spawn(&mut check, "promtool check metrics")?;
    child.feed_stdin(metrics.text.as_bytes())?;
    let output = child.wait_with_output(Duration::from_secs(30))?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("promtool check metrics: {}\n{said}", output.status);
    assert!(
        output.status.success(),
        "promtool check metrics failed ({}):\n{said}\n--- /metrics ---\n{}",
        output.status,
        metrics.text
    );
    Ok(())
}
