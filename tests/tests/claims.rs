//! What a launcher may claim is bounded by the identity the kernel gives
//! its connection: job ids are per uid, only root names a user, tasks of
//! one (uid, job id) share a job, and a non-root user's live jobs are capped.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use monitor_tests::{
    ChildGuard, Daemon, cpu_shared,
    daemon::binary,
    launcher::{
        JOB_SAMPLES, RUN_TIMEOUT, Reply, cgroup_of, check_binaries_for_nobody, in_hierarchy,
        monitor_run, registrations, task_cgroups,
    },
    process::{NOBODY, run_as},
    require_root_or_skip,
};

const STARTER: &str = env!("CARGO_BIN_EXE_fake_starter");

fn as_nobody(command: &mut Command) -> &mut Command {
    run_as(command, NOBODY, NOBODY)
}

fn send(socket: &Path, payload: &str, nobody: bool) -> anyhow::Result<(u32, Reply)> {
    let mut command = Command::new(STARTER);
    command
        .arg("send")
        .arg(socket)
        .arg(payload)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if nobody {
        as_nobody(&mut command);
    }
    let child = ChildGuard::spawn(&mut command, "fake_starter send")?;
    let pid = child.id();
    let output = child.wait_with_output(RUN_TIMEOUT)?;
    let reply = Reply::from_output(&String::from_utf8_lossy(&output.stdout))
        .with_context(|| format!("stderr: {}", String::from_utf8_lossy(&output.stderr)))?;
    Ok((pid, reply))
}

/// Waits until `pid` has exec'd away from `monitor` (so `monitor run`
/// registered and ran its command).
fn wait_registered(pid: u32) -> anyhow::Result<()> {
    let monitor = binary()?.canonicalize()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let exe = fs::read_link(format!("/proc/{pid}/exe"))
            .with_context(|| format!("pid {pid} is gone"))?;
        if exe != monitor {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("monitor run (pid {pid}) did not get to its command within 20 s");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn the_same_job_id_of_two_users_is_two_jobs() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    check_binaries_for_nobody(STARTER)?;
    let mut daemon = Daemon::start()?;

    for nobody in [true, false] {
        let mut command = monitor_run(daemon.socket())?;
        command
            .args(["--require", "--job-id", "42", "--", STARTER, "busy", "0.2"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if nobody {
            as_nobody(&mut command);
        }
        let output = ChildGuard::spawn(&mut command, "monitor run --job-id 42")?
            .wait_with_output(RUN_TIMEOUT)?;
        assert!(
            output.status.success(),
            "monitor run --require --job-id 42 (nobody: {nobody}): {}; stderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }

    let (seen, metrics) = daemon.wait_for(JOB_SAMPLES, |m| {
        m.matching(
            "monitor_job_info",
            &[("jobid", "42"), ("state", "finished")],
        )
        .count()
            == 2
    })?;
    let mut owners: Vec<(String, String, String)> = metrics
        .matching("monitor_job_info", &[("jobid", "42")])
        .map(|s| {
            (
                s.labels["uid"].clone(),
                s.labels["user"].clone(),
                s.labels["cgroup"].clone(),
            )
        })
        .collect();
    owners.sort();
    println!("job 42: {owners:?}");
    assert!(seen, "not two finished jobs 42:\n{}", metrics.text);
    assert_eq!(owners.len(), 2);
    assert_eq!((owners[0].0.as_str(), owners[0].1.as_str()), ("0", "root"));
    assert_eq!(
        (owners[1].0.as_str(), owners[1].1.as_str()),
        ("65534", "nobody")
    );
    assert_ne!(owners[0].2, owners[1].2, "both jobs 42 in one cgroup");
    // Each user's job has its own CPU time: series by (jobid, user).
    for user in ["root", "nobody"] {
        let cpu = metrics.value(
            "monitor_job_cpu_seconds_total",
            &[("jobid", "42"), ("user", user)],
        )?;
        assert!(
            cpu >= 0.15,
            "{user}'s job 42 has only {cpu:.3} s of CPU (its command spun 0.2 s)"
        );
    }
    daemon.still_serving()?;
    Ok(())
}

#[test]
fn only_a_root_launcher_may_name_the_user() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    check_binaries_for_nobody(STARTER)?;
    let mut daemon = Daemon::start_with(&["--trust.path", STARTER])?;
    let invalid_before = registrations(&daemon.metrics()?, "invalid")?;

    // nobody claims to be root: refused, and still measured as itself.
    let (pid, reply) = send(
        daemon.socket(),
        r#"{"job_id":"claimed","user":"root"}"#,
        true,
    )?;
    println!("nobody claiming user root: {}", reply.line);
    let error = reply.refusal()?;
    assert!(
        error.contains("only a root launcher may set user"),
        "unexpected refusal: {error}"
    );
    let silent_id = format!("fake_starter_{pid}");
    let metrics = daemon.wait_for_series(
        "monitor_job_info",
        &[
            ("jobid", silent_id.as_str()),
            ("uid", "65534"),
            ("user", "nobody"),
        ],
        JOB_SAMPLES,
    )?;
    assert_eq!(
        registrations(&metrics, "invalid")? - invalid_before,
        1.0,
        "registrations{{result=\"invalid\"}}"
    );
    assert_eq!(
        metrics
            .matching("monitor_job_info", &[("jobid", "claimed")])
            .count(),
        0,
        "a refused claim made a job:\n{}",
        metrics.text
    );

    // root may register a job for another user.
    let (_, reply) = send(
        daemon.socket(),
        r#"{"job_id":"for-nobody","user":"nobody"}"#,
        false,
    )?;
    assert!(
        reply.ok,
        "root naming user nobody was refused: {}",
        reply.line
    );
    daemon.wait_for_series(
        "monitor_job_info",
        &[
            ("jobid", "for-nobody"),
            ("uid", "65534"),
            ("user", "nobody"),
        ],
        JOB_SAMPLES,
    )?;
    daemon.still_serving()?;
    Ok(())
}

#[test]
fn tasks_of_one_user_and_job_id_share_one_job() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    let mut daemon = Daemon::start()?;
    let root = in_hierarchy(daemon.root())?;

    let mut tasks = Vec::new();
    for i in 0..2 {
        let mut command = monitor_run(daemon.socket())?;
        command
            .args([
                "--require",
                "--job-id",
                "shared",
                "--",
                STARTER,
                "busy",
                "1.0",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = ChildGuard::spawn(&mut command, &format!("task {i} of job shared"))?;
        let lines = child.lines()?;
        tasks.push((child, lines));
    }
    let mut cgroups = Vec::new();
    for (child, lines) in &tasks {
        let pid: u32 = lines.expect("ready", RUN_TIMEOUT)?.parse()?;
        assert_eq!(pid, child.id(), "monitor run did not exec in place");
        cgroups.push(cgroup_of(pid)?);
    }
    println!("task cgroups: {cgroups:?}");
    for cgroup in &cgroups {
        assert!(
            cgroup.starts_with(&format!("{root}/task-")),
            "{cgroup} is not a task cgroup under {root}"
        );
    }
    assert_ne!(cgroups[0], cgroups[1], "two tasks share one task cgroup");
    assert_eq!(
        task_cgroups(daemon.root())?.len(),
        2,
        "one task cgroup per task"
    );
    // One job with both tasks in it, while they run.
    let (both, metrics) = daemon.wait_for(JOB_SAMPLES, |m| {
        m.find("monitor_job_tasks", &[("jobid", "shared")])
            .is_ok_and(|t| t == Some(2.0))
    })?;
    assert!(both, "job shared does not show 2 tasks:\n{}", metrics.text);
    assert_eq!(
        metrics
            .matching("monitor_job_info", &[("jobid", "shared")])
            .count(),
        1
    );

    let mut spent = 0.0;
    for (child, lines) in tasks {
        spent += lines.expect("cpu", RUN_TIMEOUT)?.parse::<f64>()?;
        let status = child.wait(RUN_TIMEOUT)?;
        assert!(status.success(), "a task of job shared: {status}");
    }
    let metrics = daemon.wait_for_series(
        "monitor_job_info",
        &[("jobid", "shared"), ("state", "finished")],
        JOB_SAMPLES,
    )?;
    let cpu = metrics.value("monitor_job_cpu_seconds_total", &[("jobid", "shared")])?;
    println!("job shared: {cpu:.3} s of CPU; its two processes used {spent:.3} s");
    assert!(
        cpu >= 0.95 * spent,
        "job shared has {cpu:.3} s, not the sum of its tasks' {spent:.3} s"
    );
    // Not counted twice (the bar leaves room for the daemon's known small
    // overcount against the kernel on a busy machine).
    assert!(
        cpu <= 1.1 * spent,
        "job shared has {cpu:.3} s, far more than its tasks used ({spent:.3} s)"
    );
    assert_eq!(
        task_cgroups(daemon.root())?,
        Vec::<PathBuf>::new(),
        "task cgroups left after the job ended"
    );
    daemon.still_serving()?;
    Ok(())
}

/// `monitor run --require --job-id ID -- sleep 60` as nobody, registered.
fn nobody_sleeps(socket: &Path, job_id: &str) -> anyhow::Result<ChildGuard> {
    let mut command = monitor_run(socket)?;
    command
        .args(["--require", "--job-id", job_id, "--", "sleep", "60"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    as_nobody(&mut command);
    let child = ChildGuard::spawn(&mut command, &format!("nobody's job {job_id}"))?;
    wait_registered(child.id())?;
    Ok(child)
}

/// `monitor run --require` as nobody for a short command: its exit status and stderr.
fn nobody_runs(socket: &Path, job_id: &str) -> anyhow::Result<(Option<i32>, String)> {
    let mut command = monitor_run(socket)?;
    command
        .args(["--require", "--job-id", job_id, "--", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    as_nobody(&mut command);
    let output = ChildGuard::spawn(&mut command, &format!("nobody's job {job_id}"))?
        .wait_with_output(RUN_TIMEOUT)?;
    Ok((
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

#[test]
fn registered_tasks_per_user_are_capped_and_root_is_exempt() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    check_binaries_for_nobody(STARTER)?;
    let mut daemon = Daemon::start_with(&["--jobs.max-per-user", "2", "--trust.path", STARTER])?;
    let socket = daemon.socket().to_path_buf();

    let first = nobody_sleeps(&socket, "cap-a")?;
    let _second = nobody_sleeps(&socket, "cap-b")?;
    // The refusal, as a launcher reads it.
    let (_, reply) = send(&socket, r#"{"job_id":"cap-c"}"#, true)?;
    println!("third live job of nobody: {}", reply.line);
    let error = reply.refusal()?;
    assert!(
        error.contains("registered tasks running already"),
        "the refusal does not say why: {error}"
    );
    // And `monitor run --require` does not run its command.
    let (code, stderr) = nobody_runs(&socket, "cap-c")?;
    println!("monitor run --require for a third job: exit {code:?}; stderr: {stderr}");
    assert_eq!(
        code,
        Some(75),
        "a third live job of uid 65534 was not refused (cap 2)"
    );
    // (Counted just after the answer is written.)
    let (_, metrics) = daemon.wait_for(10, |m| {
        registrations(m, "over_limit").is_ok_and(|n| n >= 2.0)
    })?;
    assert_eq!(
        registrations(&metrics, "over_limit")?,
        2.0,
        "registrations{{result=\"over_limit\"}}"
    );
    assert_eq!(
        metrics
            .matching("monitor_job_info", &[("jobid", "cap-c")])
            .count(),
        0
    );

    // Root is not capped.
    let mut roots = Vec::new();
    for i in 0..3 {
        let mut command = monitor_run(&socket)?;
        command
            .args([
                "--require",
                "--job-id",
                &format!("root-{i}"),
                "--",
                "sleep",
                "60",
            ])
            .stdout(Stdio::null());
        let child = ChildGuard::spawn(&mut command, "root's sleeping job")?;
        wait_registered(child.id())?;
        roots.push(child);
    }
    daemon.wait_for_series(
        "monitor_job_info",
        &[("jobid", "root-2"), ("uid", "0")],
        JOB_SAMPLES,
    )?;

    // When one of nobody's jobs ends, there is room again.
    first.kill()?;
    daemon.wait_for_series(
        "monitor_job_info",
        &[("jobid", "cap-a"), ("state", "finished")],
        JOB_SAMPLES,
    )?;
    let (code, stderr) = nobody_runs(&socket, "cap-d")?;
    assert_eq!(
        code,
        Some(0),
        "nobody still refused after a job ended: {stderr}"
    );
    daemon.still_serving()?;
    Ok(())
}

/// One process registering again and again with the same job id (e.g. a
/// chain of `monitor run`s exec'ing each other) is one task of one job: it
/// must not leave an empty task cgroup behind at every registration. If it
/// does, any user can make cgroups without bound under --jobs.max-per-user
/// (whose point is to stop cgroup floods), and fill the kernel side's
/// --bpf.max-cgroups for every other job on the node.
#[test]
fn re_registering_one_task_does_not_pile_up_cgroups() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    check_binaries_for_nobody(STARTER)?;
    let mut daemon = Daemon::start_with(&["--jobs.max-per-user", "2", "--trust.path", STARTER])?;
    let socket = daemon.socket().to_str().context("socket path")?.to_string();

    const REGISTRATIONS: usize = 50;
    let count = REGISTRATIONS.to_string();
    let mut command = Command::new(STARTER);
    command
        .args(["repeat", &socket, "again", &count])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    as_nobody(&mut command);
    let mut client = ChildGuard::spawn(&mut command, "nobody registering 50 times")?;
    let lines = client.lines()?;
    let mut accepted = 0;
    for _ in 0..REGISTRATIONS {
        let line = lines.expect("reply", RUN_TIMEOUT)?;
        if Reply::parse(&line)?.ok {
            accepted += 1;
        }
    }
    lines.expect("done", RUN_TIMEOUT)?;
    let metrics = daemon.metrics_after_samples(3)?;
    let cgroups = task_cgroups(daemon.root())?;
    let populated = cgroups
        .iter()
        .filter(|dir| {
            fs::read_to_string(dir.join("cgroup.procs")).is_ok_and(|p| !p.trim().is_empty())
        })
        .count();
    println!(
        "one process of nobody, {REGISTRATIONS} registrations of job `again` ({accepted} accepted): \
         {} task cgroups under the root, {populated} with a process in it",
        cgroups.len()
    );
    assert_eq!(
        metrics
            .matching("monitor_job_info", &[("jobid", "again")])
            .count(),
        1
    );
    assert!(
        cgroups.len() <= 2,
        "one process of uid 65534 (cap: 2 live jobs) left {} task cgroups under the daemon's root by \
         registering {accepted} times, {} of them empty: empty task cgroups of a live job are never removed",
        cgroups.len(),
        cgroups.len() - populated
    );
    client.close_stdin();
    client.wait(RUN_TIMEOUT)?;
    daemon.still_serving()?;
    Ok(())
}
