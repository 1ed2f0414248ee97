//! What one user may leave behind (issue 13, item 5): how fast they may
//! register, how many of their finished jobs /metrics keeps, how long a
//! job's name and labels may be. Run as that user (nobody) against the
//! real daemon, with small limits so each test is quick.
use std::process::{Command, Output, Stdio};

use anyhow::{Context as _, bail};
use monitor_tests::{
    ChildGuard, Daemon, Metrics, cpu_shared,
    jobs_api::wait_for_jobs,
    launcher::{RUN_TIMEOUT, Reply, check_binaries_for_nobody, monitor_run, registrations},
    process::{NOBODY, run_as},
    require_root_or_skip,
};

const STARTER: &str = env!("CARGO_BIN_EXE_fake_starter");
/// Another unprivileged uid, to show one user's limit is not everyone's.
const OTHER_UID: u32 = 4247;

fn as_user(command: &mut Command, uid: u32) -> &mut Command {
    run_as(command, uid, uid).current_dir("/")
}

/// `monitor run --require --job-id JOBID -- /bin/true` as `uid`.
fn run_true(daemon: &Daemon, uid: u32, jobid: &str) -> anyhow::Result<Output> {
    let mut command = monitor_run(daemon.socket())?;
    command.args(["--require", "--job-id", jobid, "--", "/bin/true"]);
    as_user(&mut command, uid);
    Ok(command.output()?)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Over `--socket.registration-rate` (with its burst), a uid's
/// registrations are refused at once with a JSON error and counted as
/// `rate_limited`; the log says so once, not once per refusal. Other
/// users, and root, keep registering meanwhile.
#[test]
fn registrations_over_the_rate_are_refused_counted_and_others_go_on() -> anyhow::Result<()> {
    const BURST: usize = 5;
    const ATTEMPTS: usize = 15;
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    check_binaries_for_nobody(STARTER)?;
    // One token per 100 s: the burst is all nobody gets while this runs.
    let daemon = Daemon::start_with(&[
        "--trust.path",
        STARTER,
        "--socket.registration-rate",
        "0.01",
        "--socket.registration-burst",
        &BURST.to_string(),
    ])?;
    let before = daemon.metrics()?;
    let socket = daemon.socket().to_str().context("socket path")?.to_string();
    let mut command = Command::new(STARTER);
    command
        .args(["repeat", &socket, "flood", &ATTEMPTS.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    as_user(&mut command, NOBODY);
    let mut flood = ChildGuard::spawn(&mut command, "nobody registering 15 times in a row")?;
    let lines = flood.lines()?;
    let mut replies = Vec::new();
    for _ in 0..ATTEMPTS {
        let line = lines.expect("reply", RUN_TIMEOUT)?;
        replies.push(Reply::parse(line.trim_start_matches("reply ").trim())?);
    }
    lines.expect("done", RUN_TIMEOUT)?;

    let accepted = replies.iter().take_while(|r| r.ok).count();
    assert!(
        accepted >= BURST,
        "only {accepted} of a burst of {BURST} were accepted: {replies:?}"
    );
    let refused: Vec<&str> = replies
        .iter()
        .filter(|r| !r.ok)
        .map(Reply::refusal)
        .collect::<anyhow::Result<_>>()?;
    assert!(
        !refused.is_empty(),
        "{ATTEMPTS} registrations back to back over a burst of {BURST} and a rate of 0.01/s, none refused"
    );
    assert!(
        refused
            .iter()
            .all(|e| e.contains("--socket.registration-rate")),
        "refusals that do not say why: {refused:?}"
    );
    // Others go on: another user and root.
    for uid in [OTHER_UID, 0] {
        let output = run_true(&daemon, uid, &format!("calm-{uid}"))?;
        assert!(
            output.status.success(),
            "uid {uid} was refused while nobody was over its rate: {}",
            stderr(&output)
        );
    }
    let limited = |m: &Metrics| {
        registrations(m, "rate_limited").unwrap_or(f64::NAN)
            - registrations(&before, "rate_limited").unwrap_or(f64::NAN)
    };
    let (counted, metrics) = daemon.wait_for(10, |m| limited(m) >= refused.len() as f64)?;
    assert!(counted, "rate_limited moved by {}", limited(&metrics));
    assert_eq!(
        limited(&metrics),
        refused.len() as f64,
        "every refusal counted once, and only those"
    );
    let ok = registrations(&metrics, "ok")? - registrations(&before, "ok")?;
    assert!(
        ok >= (accepted + 2) as f64,
        "{ok} ok registrations counted for {accepted} of nobody's and 2 others'"
    );
    let log_lines = daemon
        .stderr()
        .lines()
        .filter(|l| l.contains("over the registration rate"))
        .count();
    assert!(
        (1..refused.len()).contains(&log_lines),
        "{} refusals logged in {log_lines} lines:\n{}",
        refused.len(),
        daemon.stderr()
    );
    flood.close_stdin();
    flood.wait(RUN_TIMEOUT)?;
    Ok(())
}

/// A uid over `--job.retention.max-per-user` keeps only that many of its
/// finished jobs in /metrics (its oldest leave early, counted in
/// `monitor_jobs_evicted_total`), while the state store and the job API
/// still have every one. Root's jobs are not capped.
#[test]
fn a_user_over_the_finished_jobs_cap_keeps_only_that_many_in_metrics() -> anyhow::Result<()> {
    const CAP: usize = 3;
    const JOBS: usize = 8;
    const ROOT_JOBS: usize = 4;
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    check_binaries_for_nobody(STARTER)?;
    let daemon = Daemon::start_with(&["--job.retention.max-per-user", &CAP.to_string()])?;
    let nobody = NOBODY.to_string();
    for n in 0..JOBS {
        let output = run_true(&daemon, NOBODY, &format!("capped-{n}"))?;
        assert!(output.status.success(), "job {n}: {}", stderr(&output));
    }
    for n in 0..ROOT_JOBS {
        let output = run_true(&daemon, 0, &format!("root-{n}"))?;
        assert!(output.status.success(), "root job {n}: {}", stderr(&output));
    }
    let finished = |m: &Metrics, uid: &str| {
        m.matching("monitor_job_info", &[("uid", uid), ("state", "finished")])
            .count()
    };
    let evicted = |m: &Metrics| {
        m.find(
            "monitor_jobs_evicted_total",
            &[("reason", "per_user_limit")],
        )
        .ok()
        .flatten()
    };
    let (settled, metrics) = daemon.wait_for(50, |m| {
        evicted(m) == Some((JOBS - CAP) as f64) && finished(m, "0") == ROOT_JOBS
    })?;
    assert!(
        settled,
        "{JOBS} finished jobs of nobody against a cap of {CAP}: {} in /metrics, evicted {:?}; \
         root's in /metrics: {}\n{}",
        finished(&metrics, &nobody),
        evicted(&metrics),
        finished(&metrics, "0"),
        metrics.text
    );
    assert_eq!(
        finished(&metrics, &nobody),
        CAP,
        "nobody's finished jobs in /metrics"
    );
    let running = metrics
        .matching(
            "monitor_job_info",
            &[("uid", &nobody), ("state", "running")],
        )
        .count();
    assert_eq!(running, 0);
    // The store and the API have every one.
    let capped = |jobs: &[serde_json::Value]| {
        jobs.iter()
            .filter(|job| {
                job["jobid"]
                    .as_str()
                    .is_some_and(|id| id.starts_with("capped-"))
                    && job["state"] == "finished"
            })
            .count()
    };
    let (all, jobs) = wait_for_jobs(&daemon, "", RUN_TIMEOUT, |jobs| capped(jobs) == JOBS)?;
    assert!(
        all,
        "the API lists {} of nobody's {JOBS} finished jobs: {jobs:?}",
        capped(&jobs)
    );
    // The store's figures are published with the next sample.
    let written_of = |m: &Metrics| {
        m.value("monitor_state_profiles_written_total", &[])
            .unwrap_or(0.0)
    };
    let (_, metrics) = daemon.wait_for(3, |m| written_of(m) >= (JOBS + ROOT_JOBS) as f64)?;
    let written = written_of(&metrics);
    assert!(
        written >= (JOBS + ROOT_JOBS) as f64,
        "{written} profiles in the store for {} finished jobs",
        JOBS + ROOT_JOBS
    );
    let log_lines = daemon
        .stderr()
        .lines()
        .filter(|l| l.contains("--job.retention.max-per-user"))
        .count();
    assert!(
        (1..JOBS - CAP).contains(&log_lines),
        "{} evictions logged in {log_lines} lines:\n{}",
        JOBS - CAP,
        daemon.stderr()
    );
    Ok(())
}

/// A hello from the trusted fake starter as nobody: the daemon's answer.
fn hello_as_nobody(daemon: &Daemon, payload: &str) -> anyhow::Result<Reply> {
    let mut command = Command::new(STARTER);
    command.arg("send").arg(daemon.socket()).arg(payload);
    as_user(&mut command, NOBODY);
    let output = command.output()?;
    if !output.status.success() {
        bail!("fake_starter send: {}: {}", output.status, stderr(&output));
    }
    Reply::from_output(&String::from_utf8_lossy(&output.stdout))
}

/// A job name, a label name and a label value over their bounds are each
/// refused with an error naming the bound (and counted as invalid); at the
/// bounds they are taken.
#[test]
fn oversize_names_and_labels_are_refused() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    check_binaries_for_nobody(STARTER)?;
    let daemon = Daemon::start_with(&["--trust.path", STARTER])?;
    let before = registrations(&daemon.metrics()?, "invalid")?;
    let cases = [
        (
            format!(r#"{{"job_id":"n","name":"{}"}}"#, "x".repeat(257)),
            "--socket.max-name-bytes",
        ),
        (
            format!(r#"{{"job_id":"k","labels":{{"{}":"v"}}}}"#, "k".repeat(65)),
            "--socket.max-label-name-bytes",
        ),
        (
            format!(r#"{{"job_id":"v","labels":{{"k":"{}"}}}}"#, "v".repeat(257)),
            "--socket.max-label-value-bytes",
        ),
    ];
    for (payload, flag) in &cases {
        let reply = hello_as_nobody(&daemon, payload)?;
        let refusal = reply
            .refusal()
            .with_context(|| format!("a hello over {flag} was accepted"))?;
        assert!(
            refusal.contains(flag),
            "the refusal does not name {flag}: {refusal}"
        );
    }
    let (counted, metrics) = daemon.wait_for(10, |m| {
        registrations(m, "invalid").is_ok_and(|n| n - before >= cases.len() as f64)
    })?;
    assert!(
        counted,
        "the refusals were not counted as invalid:\n{}",
        metrics.text
    );
    // At the bounds: taken, and shown.
    let name = "n".repeat(256);
    let label = format!("{}={}", "k".repeat(64), "v".repeat(256));
    let mut command = monitor_run(daemon.socket())?;
    command
        .args(["--require", "--job-id", "at-bounds", "--name", &name])
        .args(["--label", &label, "--", "/bin/true"]);
    as_user(&mut command, NOBODY);
    let output = command.output()?;
    assert!(
        output.status.success(),
        "a name and label at their bounds were refused: {}",
        stderr(&output)
    );
    let metrics = daemon.wait_for_series("monitor_job_info", &[("jobid", "at-bounds")], 25)?;
    let info = metrics
        .matching("monitor_job_info", &[("jobid", "at-bounds")])
        .next()
        .context("no monitor_job_info")?;
    assert_eq!(info.labels.get("name"), Some(&name));
    assert_eq!(
        info.labels.get(&format!("label_{}", "k".repeat(64))),
        Some(&"v".repeat(256))
    );
    Ok(())
}
