//! Bad hellos on the launcher socket: malformed, forbidden, oversize,
//! silent and half-sent. Each gets a clear outcome (an error line, a count),
//! nothing is lost, and the daemon keeps serving /metrics afterwards.
use std::{
    path::Path,
    process::Stdio,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use monitor_tests::{
    ChildGuard, Daemon, cpu_shared,
    launcher::{
        JOB_SAMPLES, RUN_TIMEOUT, Reply, all_registrations, cgroup_of, counts_differ, has_job,
        in_hierarchy, registrations, wait_for_outcomes, wait_no_task_cgroups,
    },
    require_root_or_skip,
    starter::{send, send_with, starter_command},
};

const STARTER: &str = env!("CARGO_BIN_EXE_fake_starter");

/// The daemon's limit on a hello line, newline included.
const MAX_HELLO: usize = 4096;

/// Waits until `pid` sits in a task cgroup of the daemon (placed at accept).
fn wait_placed(daemon: &Daemon, pid: u32) -> anyhow::Result<String> {
    let root = in_hierarchy(daemon.root())?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let cgroup = cgroup_of(pid)?;
        if cgroup.starts_with(&format!("{root}/task-")) {
            return Ok(cgroup);
        }
        if Instant::now() > deadline {
            bail!("pid {pid} was not placed in a task cgroup (it is in {cgroup})");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn malformed_and_forbidden_hellos_get_an_error_and_stay_measured() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    let mut daemon = Daemon::start_with(&["--trust.path", STARTER])?;
    let cases = [
        ("this is not json", "malformed hello"),
        (r#"{"job_id":"x","bogus":1}"#, "unknown field"),
        (r#"{"job_id":42}"#, "malformed hello"),
        (r#"{"job_id":""}"#, "job_id"),
        (r#"{"labels":{"a-b":"x"}}"#, "label"),
        (r#"{"job_id":"x"} trailing"#, "malformed hello"),
    ];
    let before = registrations(&daemon.metrics()?, "invalid")?;
    let mut silent_ids = Vec::new();
    for (payload, expected) in cases {
        let (pid, reply) = send(STARTER, daemon.socket(), payload)?;
        println!("{payload:?} -> {}", reply.line);
        let error = reply.refusal()?;
        assert!(
            error.contains(expected),
            "{payload:?}: the error {error:?} does not mention {expected:?}"
        );
        silent_ids.push(format!("fake_starter_{pid}"));
    }
    // Nothing is lost: each launcher is still a job, under its silent id.
    for jobid in &silent_ids {
        daemon.wait_for_series(
            "monitor_job_info",
            &[("jobid", jobid.as_str()), ("launcher", "fake_starter")],
            JOB_SAMPLES,
        )?;
    }
    let metrics = daemon.still_serving()?;
    assert_eq!(
        registrations(&metrics, "invalid")? - before,
        cases.len() as f64,
        "registrations{{result=\"invalid\"}}"
    );
    assert!(!has_job(&metrics, "x"), "a refused hello named a job");
    Ok(())
}

/// `{"job_id":ID,"name":"xxx..."}` plus newline, exactly `len` bytes.
fn hello_of_length(job_id: &str, len: usize) -> String {
    let bare = format!(r#"{{"job_id":"{job_id}","name":""}}"#).len() + 1;
    format!(
        r#"{{"job_id":"{job_id}","name":"{}"}}"#,
        "x".repeat(len - bare)
    )
}

#[test]
fn oversize_hello_is_refused_beyond_4096_bytes() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    // The hello is padded with its job name: names as long as a hello may be.
    let mut daemon =
        Daemon::start_with(&["--trust.path", STARTER, "--socket.max-name-bytes", "4096"])?;

    let fits = hello_of_length("fits", MAX_HELLO);
    assert_eq!(fits.len() + 1, MAX_HELLO);
    let (_, reply) = send(STARTER, daemon.socket(), &fits)?;
    assert!(
        reply.ok,
        "a hello of exactly {MAX_HELLO} bytes (newline included) was refused: {}",
        reply.line
    );
    assert_eq!(reply.job_id.as_deref(), Some("fits"));

    let before = registrations(&daemon.metrics()?, "invalid")?;
    let mut refused = Vec::new();
    // One byte over; then far over, without a newline (about 100 KiB,
    // under the kernel's limit for one argument).
    for (payload, flags) in [
        (hello_of_length("one-over", MAX_HELLO + 1), vec![]),
        ("y".repeat(100_000), vec!["--no-newline"]),
    ] {
        let started = Instant::now();
        let (pid, stdout) = send_with(Path::new(STARTER), daemon.socket(), &payload, &flags)?;
        let reply = Reply::from_output(&stdout)?;
        println!(
            "{} bytes -> {} (after {:?})",
            payload.len() + usize::from(flags.is_empty()),
            reply.line,
            started.elapsed()
        );
        let error = reply.refusal()?;
        assert!(
            error.contains("longer than 4096"),
            "unexpected error for an oversize hello: {error}"
        );
        refused.push(format!("fake_starter_{pid}"));
    }
    for jobid in &refused {
        daemon.wait_for_series(
            "monitor_job_info",
            &[("jobid", jobid.as_str())],
            JOB_SAMPLES,
        )?;
    }
    let metrics = daemon.still_serving()?;
    assert_eq!(
        registrations(&metrics, "invalid")? - before,
        2.0,
        "registrations{{result=\"invalid\"}}"
    );
    assert!(!has_job(&metrics, "one-over"));
    Ok(())
}

/// A launcher that connects and never writes is a silent registration
/// (Apptainer's starter does exactly that): once the hello timeout has
/// passed it is a job, and counted, while its connection stays open.
#[test]
fn silent_client_is_a_job_and_counted_after_the_hello_timeout() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    let mut daemon =
        Daemon::start_with(&["--trust.path", STARTER, "--socket.hello-timeout", "300ms"])?;
    let before = all_registrations(&daemon.metrics()?)?;
    let socket = daemon.socket().to_str().context("socket path")?.to_string();

    let mut command = starter_command(Path::new(STARTER), &["silent", &socket]);
    command.stdin(Stdio::piped());
    let mut client = ChildGuard::spawn(&mut command, "a silent launcher")?;
    let lines = client.lines()?;
    lines.expect("connected", RUN_TIMEOUT)?;
    let jobid = format!("fake_starter_{}", client.id());
    let connected = Instant::now();

    let running = [("jobid", jobid.as_str()), ("state", "running")];
    daemon.wait_for_series("monitor_job_info", &running, JOB_SAMPLES)?;
    println!(
        "silent launcher is job {jobid} after {:?}",
        connected.elapsed()
    );
    // Still connected: the registration happened, so it is counted.
    let (counted, metrics) = daemon.wait_for(10, |m| {
        registrations(m, "silent").is_ok_and(|n| n == before[1] + 1.0)
    })?;
    let moved = counts_differ(&before, &all_registrations(&metrics)?);
    println!("registrations moved while the silent launcher is connected: {moved:?}");
    assert!(
        counted,
        "job {jobid} is registered (silent, hello timeout 300 ms) but monitor_registrations_total{{result=\"silent\"}} \
         did not count it within 10 samples ({:?} after connecting) while its connection stays open; moved: {moved:?}",
        connected.elapsed()
    );

    client.close_stdin();
    client.wait(RUN_TIMEOUT)?;
    daemon.wait_for_series(
        "monitor_job_info",
        &[("jobid", jobid.as_str()), ("state", "finished")],
        JOB_SAMPLES,
    )?;
    let metrics = daemon.still_serving()?;
    assert_eq!(
        registrations(&metrics, "silent")?,
        before[1] + 1.0,
        "counted once only"
    );
    Ok(())
}

/// Launchers that hang up during the handshake: after a partial line, and
/// after nothing at all. Each was placed at accept, so each is still a job.
#[test]
fn client_hanging_up_mid_handshake_is_still_measured() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    let mut daemon = Daemon::start_with(&["--trust.path", STARTER])?;
    let socket = daemon.socket().to_str().context("socket path")?.to_string();

    let cases: [(&[&str], &str); 2] = [
        (
            &[
                "send",
                &socket,
                r#"{"job_id":"half"#,
                "--no-newline",
                "--hold-until-stdin-eof",
            ],
            "invalid",
        ),
        (&["silent", &socket], "silent"),
    ];
    for (args, outcome) in cases {
        let before = all_registrations(&daemon.metrics()?)?;
        let mut command = starter_command(Path::new(STARTER), args);
        command.stdin(Stdio::piped());
        let mut client = ChildGuard::spawn(&mut command, "a launcher hanging up")?;
        let lines = client.lines()?;
        lines.expect("connected", RUN_TIMEOUT)?;
        wait_placed(&daemon, client.id())?;
        let jobid = format!("fake_starter_{}", client.id());
        client.close_stdin();
        client.wait(RUN_TIMEOUT)?;
        let moved = wait_for_outcomes(&daemon, &before, 1.0)?;
        println!("{:?} then hang-up: {moved:?}", &args[..args.len().min(3)]);
        assert_eq!(moved, vec![(outcome, 1.0)], "{args:?}");
        daemon.wait_for_series(
            "monitor_job_info",
            &[("jobid", jobid.as_str()), ("state", "finished")],
            JOB_SAMPLES,
        )?;
    }
    wait_no_task_cgroups(&daemon)?;
    daemon.still_serving()?;
    Ok(())
}
