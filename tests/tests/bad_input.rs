//! Bad input on the launcher socket: each case gets a clear outcome (an
//! error line, a count, a closed connection), nothing is lost, and the
//! daemon keeps serving /metrics afterwards.
use std::{
    fs,
    io::{BufRead as _, BufReader},
    os::unix::{fs::PermissionsExt as _, net::UnixStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use monitor_tests::{
    ChildGuard, Daemon, Metrics, cpu_exclusive, cpu_shared,
    daemon::binary,
    launcher::{
        RESULTS, Reply, TempDir, all_registrations, cgroup_of, fd_targets, in_hierarchy,
        monitor_run, monitor_run_of, open_fds, registrations, task_cgroups,
    },
    process::{NOBODY, run_as},
    require_root_or_skip,
};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

const STARTER: &str = env!("CARGO_BIN_EXE_fake_starter");
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
const JOB_SAMPLES: u32 = 25;
/// The daemon's limit on a hello line, newline included.
const MAX_HELLO: usize = 4096;

fn starter_command(program: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs `program send SOCKET PAYLOAD FLAGS...` to its end: its pid and what it printed.
fn send_with(
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

/// A hello from the trusted launcher, and the daemon's answer.
fn send(socket: &Path, payload: &str) -> anyhow::Result<(u32, Reply)> {
    let (pid, stdout) = send_with(Path::new(STARTER), socket, payload, &[])?;
    Ok((pid, Reply::from_output(&stdout)?))
}

fn counts_differ(
    before: &[f64; RESULTS.len()],
    after: &[f64; RESULTS.len()],
) -> Vec<(&'static str, f64)> {
    RESULTS
        .iter()
        .zip(before.iter().zip(after))
        .filter(|(_, (b, a))| a != b)
        .map(|(r, (b, a))| (*r, a - b))
        .collect()
}

/// Waits until the registration counts moved by `total` in all, and returns
/// which results moved by how much.
fn wait_for_outcomes(
    daemon: &Daemon,
    before: &[f64; RESULTS.len()],
    total: f64,
) -> anyhow::Result<Vec<(&'static str, f64)>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = all_registrations(&daemon.metrics()?)?;
        let moved = counts_differ(before, &now);
        let sum: f64 = moved.iter().map(|(_, d)| d).sum();
        if sum >= total {
            return Ok(moved);
        }
        if Instant::now() > deadline {
            bail!(
                "registrations moved by {moved:?} only, expected {total} in all; daemon stderr:\n{}",
                daemon.stderr()
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the daemon ended every job it made a task cgroup for.
fn wait_no_task_cgroups(daemon: &Daemon) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = task_cgroups(daemon.root())?;
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("task cgroups left behind: {left:?}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

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

fn has_job(metrics: &Metrics, jobid: &str) -> bool {
    metrics
        .matching("monitor_job_info", &[("jobid", jobid)])
        .next()
        .is_some()
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
        let (pid, reply) = send(daemon.socket(), payload)?;
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
    let (_, reply) = send(daemon.socket(), &fits)?;
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

/// Reads the one answer of a connection: `Some(reply)`, or `None` when the
/// daemon closed it without one.
fn answer(stream: &UnixStream) -> anyhow::Result<Option<Reply>> {
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut line = String::new();
    match BufReader::new(stream).read_line(&mut line) {
        Ok(0) => Ok(None),
        Ok(_) => Reply::parse(&line).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(None),
        Err(e) => Err(e).context("no answer within 20 s"),
    }
}

/// Waits until the daemon's open fds are back to `baseline` (they are
/// closed by tasks that finish on their own time).
fn wait_fds(pid: u32, baseline: usize) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = open_fds(pid)?;
        if now <= baseline || Instant::now() > deadline {
            return Ok(now);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

const CONNECTIONS: usize = 1000;

#[test]
fn a_thousand_concurrent_untrusted_connections() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    // Hundreds of processes or connections: not alongside other tests.
    let _machine = cpu_exclusive();
    let mut daemon = Daemon::start()?;
    let pid = daemon.pid();
    let before = all_registrations(&daemon.metrics_after_samples(1)?)?;
    let fds_before = open_fds(pid)?;
    let targets_before = fd_targets(pid);

    // 1,000 connections from this (untrusted) process, all open at once,
    // made from 4 threads at the same time.
    let socket = daemon.socket().to_path_buf();
    let streams: Vec<UnixStream> = thread::scope(|scope| {
        let makers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    (0..CONNECTIONS / 4)
                        .map(|_| UnixStream::connect(&socket))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        makers
            .into_iter()
            .map(|m| m.join().expect("connecting thread panicked"))
            .collect::<Result<Vec<Vec<_>>, _>>()
            .map(|v| v.into_iter().flatten().collect())
    })
    .context("connecting")?;
    assert_eq!(streams.len(), CONNECTIONS);
    // Serving while they are all open.
    daemon
        .metrics()
        .context("/metrics with 1,000 launcher connections open")?;

    let (mut refused, mut closed) = (0, 0);
    for stream in &streams {
        match answer(stream)? {
            Some(reply) => {
                let error = reply.refusal()?;
                assert!(
                    error.contains("untrusted launcher"),
                    "unexpected answer: {}",
                    reply.line
                );
                refused += 1;
            }
            None => closed += 1,
        }
    }
    drop(streams);
    println!(
        "{CONNECTIONS} untrusted connections: {refused} refused with an answer, {closed} closed without one"
    );
    assert_eq!(refused + closed, CONNECTIONS);
    // (A connection is counted just after its answer is written.)
    let moved = wait_for_outcomes(&daemon, &before, CONNECTIONS as f64)?;
    assert_eq!(
        moved,
        vec![("untrusted", CONNECTIONS as f64)],
        "registration counts: every connection judged once"
    );

    let fds_after = wait_fds(pid, fds_before)?;
    println!("daemon fds: {fds_before} before, {fds_after} after");
    assert!(
        fds_after <= fds_before,
        "the daemon holds {fds_after} fds, {fds_before} before the connections: a leak\n\
         before: {targets_before:?}\nafter: {:?}",
        fd_targets(pid)
    );
    daemon.still_serving()?;
    Ok(())
}

#[test]
fn a_thousand_concurrent_silent_trusted_connections() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    // Hundreds of processes or connections: not alongside other tests.
    let _machine = cpu_exclusive();
    let mut daemon =
        Daemon::start_with(&["--trust.path", STARTER, "--socket.hello-timeout", "500ms"])?;
    let pid = daemon.pid();
    let before = all_registrations(&daemon.metrics_after_samples(1)?)?;
    let fds_before = open_fds(pid)?;
    let targets_before = fd_targets(pid);
    let socket = daemon.socket().to_str().context("socket path")?.to_string();

    let count = CONNECTIONS.to_string();
    let mut command = starter_command(Path::new(STARTER), &["silent", &socket, &count]);
    command.stdin(Stdio::piped());
    let mut client = ChildGuard::spawn(&mut command, "a launcher holding 1,000 connections")?;
    let lines = client.lines()?;
    lines.expect("connected", RUN_TIMEOUT)?;
    let jobid = format!("fake_starter_{}", client.id());
    daemon.wait_for_series(
        "monitor_job_info",
        &[("jobid", jobid.as_str()), ("state", "running")],
        JOB_SAMPLES,
    )?;
    let during = daemon
        .metrics()
        .context("/metrics with 1,000 silent launcher connections open")?;
    println!(
        "fds while held: {}; registrations so far: {:?}",
        open_fds(pid)?,
        counts_differ(&before, &all_registrations(&during)?)
    );

    client.close_stdin();
    client.wait(RUN_TIMEOUT)?;
    let moved = wait_for_outcomes(&daemon, &before, CONNECTIONS as f64)?;
    println!("{CONNECTIONS} silent trusted connections: {moved:?}");
    assert_eq!(moved, vec![("silent", CONNECTIONS as f64)]);
    daemon.wait_for_series(
        "monitor_job_info",
        &[("jobid", jobid.as_str()), ("state", "finished")],
        JOB_SAMPLES,
    )?;
    wait_no_task_cgroups(&daemon)?;
    let fds_after = wait_fds(pid, fds_before)?;
    println!("daemon fds: {fds_before} before, {fds_after} after");
    assert!(
        fds_after <= fds_before,
        "the daemon holds {fds_after} fds, {fds_before} before the connections: a leak\n\
         before: {targets_before:?}\nafter: {:?}",
        fd_targets(pid)
    );
    daemon.still_serving()?;
    Ok(())
}

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
    let (_, reply) = send(daemon.socket(), r#"{"job_id":"trusted-via-link"}"#)?;
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

/// Resumes a stopped daemon even when the test fails half-way.
struct Stopped(Pid);

impl Stopped {
    fn stop(pid: u32) -> anyhow::Result<Self> {
        let pid = Pid::from_raw(i32::try_from(pid)?);
        kill(pid, Signal::SIGSTOP).context("SIGSTOP to the daemon")?;
        Ok(Self(pid))
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGCONT);
    }
}

fn process_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// Launchers that connect while the daemon cannot accept (stopped) and are
/// gone by the time it does: one reaped, one a zombie. Deterministic: the
/// daemon stays stopped until both have exited.
#[test]
fn a_launcher_gone_before_accept() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    let mut daemon = Daemon::start_with(&["--trust.path", STARTER])?;
    let before = all_registrations(&daemon.metrics()?)?;
    let socket = daemon.socket().to_str().context("socket path")?.to_string();

    let stopped = Stopped::stop(daemon.pid())?;
    let payload = r#"{"job_id":"ghost"}"#;
    let args = ["send", socket.as_str(), payload, "--exit-without-reading"];
    // Reaped: its pid is free again.
    let reaped = ChildGuard::spawn(
        &mut starter_command(Path::new(STARTER), &args),
        "a launcher that exits",
    )?;
    let status = reaped.wait(RUN_TIMEOUT)?;
    assert!(status.success(), "{status}");
    // A zombie: exited, not reaped (until the guard drops).
    let zombie = ChildGuard::spawn(
        &mut starter_command(Path::new(STARTER), &args),
        "a launcher left a zombie",
    )?;
    let deadline = Instant::now() + RUN_TIMEOUT;
    while process_state(zombie.id()) != Some('Z') {
        if Instant::now() > deadline {
            bail!("the second launcher did not exit");
        }
        thread::sleep(Duration::from_millis(5));
    }
    drop(stopped);

    let moved = wait_for_outcomes(&daemon, &before, 2.0)?;
    println!("two launchers gone before accept: {moved:?}");
    for (result, _) in &moved {
        assert!(
            matches!(*result, "exited" | "silent"),
            "unexpected outcome {result}: {moved:?}"
        );
    }
    let metrics = daemon.still_serving()?;
    assert!(
        !has_job(&metrics, "ghost"),
        "a launcher gone before accept settled its hello:\n{}",
        metrics.text
    );
    drop(zombie);
    wait_no_task_cgroups(&daemon)?;
    daemon.still_serving()?;
    Ok(())
}

/// systemd gives a service a soft limit of 1,024 open files unless its unit
/// says otherwise (DefaultLimitNOFILE=1024:524288). The daemon raises its
/// soft limit to the hard one at start (and the shipped unit sets
/// LimitNOFILE), and a held launcher connection keeps only its socket once
/// settled, so 1,000 Apptainer-like launchers holding their connections must
/// all be registered (or told "busy"), not lost to EMFILE. The test runs the
/// daemon under a 1,024 soft limit to check exactly that.
#[test]
fn a_thousand_silent_connections_under_systemds_default_fd_limit() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    // Hundreds of processes or connections: not alongside other tests.
    let _machine = cpu_exclusive();
    let args = ["--trust.path", STARTER, "--socket.hello-timeout", "500ms"];
    let mut daemon = Daemon::start_configured(&args, |command| {
        // SAFETY: one raw syscall between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(command, || {
                let mut limit = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                limit.rlim_cur = limit.rlim_max.min(1024);
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    })?;
    let limits = fs::read_to_string(format!("/proc/{}/limits", daemon.pid()))?;
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_default()
        .to_string();
    let before = all_registrations(&daemon.metrics_after_samples(1)?)?;
    let socket = daemon.socket().to_str().context("socket path")?.to_string();

    let count = CONNECTIONS.to_string();
    let mut command = starter_command(Path::new(STARTER), &["silent", &socket, &count]);
    command.stdin(Stdio::piped());
    let mut client = ChildGuard::spawn(&mut command, "a launcher holding 1,000 connections")?;
    client.lines()?.expect("connected", RUN_TIMEOUT)?;
    // Past the hello timeout, every connection is a silent registration.
    thread::sleep(Duration::from_secs(3));
    let during = daemon
        .metrics()
        .context("/metrics with 1,000 silent connections open")?;
    let moved_during = counts_differ(&before, &all_registrations(&during)?);
    client.close_stdin();
    client.wait(RUN_TIMEOUT)?;
    let moved = wait_for_outcomes(&daemon, &before, CONNECTIONS as f64)?;
    let emfile = daemon.stderr().matches("Too many open files").count()
        + daemon.stderr().matches("EMFILE").count();
    println!(
        "daemon limit: {soft}; outcomes while held: {moved_during:?}; in the end: {moved:?}; EMFILE log lines: {emfile}"
    );
    daemon.still_serving()?;
    wait_no_task_cgroups(&daemon)?;
    assert_eq!(
        moved,
        vec![("silent", CONNECTIONS as f64)],
        "with the daemon at systemd's default soft limit ({soft}), {CONNECTIONS} held silent launcher connections \
         were not all registered ({emfile} \"Too many open files\" log lines)"
    );
    Ok(())
}

/// 300 launchers of `uid` connect at once and exit right away; each is
/// reaped the moment it exits (a thread blocks in waitpid for it), so its
/// pid is gone, not a zombie, when the daemon gets to it, as under a batch
/// system's process manager.
fn burst_of_quitters(daemon: &Daemon, uid: u32) -> anyhow::Result<Vec<(&'static str, f64)>> {
    const LAUNCHERS: usize = 300;
    let before = all_registrations(&daemon.metrics()?)?;
    let socket = daemon.socket().to_str().context("socket path")?;
    thread::scope(|scope| -> anyhow::Result<()> {
        let waiters: Vec<_> = (0..LAUNCHERS)
            .map(|_| {
                scope.spawn(move || -> anyhow::Result<()> {
                    let mut command = starter_command(
                        Path::new(STARTER),
                        &["send", socket, "", "--no-newline", "--exit-without-reading"],
                    );
                    command.stdout(Stdio::null()).stderr(Stdio::null());
                    run_as(&mut command, uid, uid);
                    let status = command.status().context("running a launcher")?;
                    if !status.success() {
                        bail!("a launcher failed: {status}");
                    }
                    Ok(())
                })
            })
            .collect();
        for waiter in waiters {
            waiter
                .join()
                .map_err(|_| anyhow::anyhow!("a launcher thread panicked"))??;
        }
        Ok(())
    })?;
    wait_for_outcomes(daemon, &before, LAUNCHERS as f64)
}

/// Launchers that exit while the daemon is placing them (after it read
/// their identity, before it moved them): common when a job is cancelled
/// or a launcher is killed as it starts. Whatever the timing, nothing may
/// be left behind: no empty task cgroup, and no invisible provisional job
/// counting against the user's --jobs.max-per-user. While the daemon works
/// through a burst of such launchers, some die inside that window.
#[test]
fn launchers_exiting_during_registration_leave_nothing_behind() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    // Hundreds of processes or connections: not alongside other tests.
    let _machine = cpu_exclusive();
    monitor_tests::launcher::check_others_may_run(Path::new(STARTER))?;
    let mut daemon = Daemon::start_with(&["--trust.path", STARTER, "--jobs.max-per-user", "2"])?;
    let by_root = burst_of_quitters(&daemon, 0)?;
    let by_nobody = burst_of_quitters(&daemon, NOBODY)?;
    // Time for the daemon to end every job whose tasks are gone.
    let metrics = daemon.metrics_after_samples(5)?;
    let left = task_cgroups(daemon.root())?;
    let running = metrics.value("monitor_jobs", &[("state", "running")])?;
    let mut command = monitor_run(daemon.socket())?;
    command
        .args(["--require", "--job-id", "afterwards", "--", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    run_as(&mut command, NOBODY, NOBODY);
    let next =
        ChildGuard::spawn(&mut command, "nobody's next job")?.wait_with_output(RUN_TIMEOUT)?;
    let next_stderr = String::from_utf8_lossy(&next.stderr);
    println!(
        "300 launchers of root gone at once: {by_root:?}; 300 of nobody (cap 2): {by_nobody:?}; \
         task cgroups left: {}; running jobs: {running}; nobody's next job: {} {}",
        left.len(),
        next.status,
        next_stderr.trim()
    );
    daemon.still_serving()?;
    assert_eq!(
        running, 0.0,
        "jobs still running after every launcher exited"
    );
    assert!(
        left.is_empty(),
        "{} empty task cgroups left behind, and never removed, by launchers that exited while being placed (e.g. {})",
        left.len(),
        left[0].display()
    );
    assert!(
        next.status.success(),
        "uid 65534 has no process left but can no longer register (cap 2): {next_stderr}"
    );
    // A launcher that is gone is `exited` (or `silent` if it was placed),
    // never a daemon `error`.
    for (result, n) in by_root.iter().chain(&by_nobody) {
        assert!(
            matches!(*result, "silent" | "exited" | "over_limit"),
            "{n} launchers that simply exited were counted as {result}; daemon log:\n{}",
            daemon
                .stderr()
                .lines()
                .filter(|l| l.contains("WARN") && !l.contains("live jobs already"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    Ok(())
}

/// SO_PEERPIDFD's option number (asm-generic/socket.h).
const SO_PEERPIDFD: u32 = 77;

/// Makes the daemon's `getsockopt(SOL_SOCKET, SO_PEERPIDFD)` fail with
/// `errno`, as kernels answer that this one cannot: 6.5 to 6.15 give
/// EINVAL for a peer already reaped (6.16 and later give a pidfd of the
/// reaped peer instead), older ones ENOPROTOOPT. A seccomp filter
/// installed between fork and exec; every other call passes.
fn peer_pidfd_fails_with(command: &mut Command, errno: i32) {
    #[cfg(target_arch = "x86_64")]
    const ARCH: u32 = 0xC000_003E;
    #[cfg(target_arch = "aarch64")]
    const ARCH: u32 = 0xC000_00B7;
    let statement = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    // Jump to "allow" (the last statement) unless equal.
    let unless = |k: u32, to_allow: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt: 0,
        jf: to_allow,
        k,
    };
    let load = |offset: u32| statement(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, offset);
    // seccomp_data: nr at 0, arch at 4, the arguments' low halves at 16 + 8 i.
    let filter = [
        load(4),
        unless(ARCH, 7),
        load(0),
        unless(libc::SYS_getsockopt as u32, 5),
        load(16 + 8),
        unless(libc::SOL_SOCKET as u32, 3),
        load(16 + 16),
        unless(SO_PEERPIDFD, 1),
        statement(
            libc::BPF_RET | libc::BPF_K,
            libc::SECCOMP_RET_ERRNO | errno as u32,
        ),
        statement(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    ];
    // SAFETY: prctl only, on a filter that lives in the closure (copied
    // into the child by fork); nothing allocated after fork.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(command, move || {
            let program = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr().cast_mut(),
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &program as *const libc::sock_fprog,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Spawns `command` with pid `pid` (free again after its process was
/// reaped), by setting the kernel's last pid just before; None when
/// another process on the machine took it first every time.
fn spawn_with_pid(command: &mut Command, pid: u32) -> anyhow::Result<Option<ChildGuard>> {
    for _ in 0..50 {
        fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string())
            .context("writing /proc/sys/kernel/ns_last_pid")?;
        let child = ChildGuard::spawn(command, "a process given a reaped launcher's pid")?;
        if child.id() == pid {
            return Ok(Some(child));
        }
    }
    Ok(None)
}

/// Issue 13, item 9: on kernels 6.5 to 6.15, SO_PEERPIDFD answers EINVAL
/// when the peer is reaped already, and its pid may be another process's
/// by then. A launcher connects, sends a hello and is reaped while the
/// daemon is stopped; a root process (running the trusted binary) is
/// given its pid. The daemon, answered EINVAL as such a kernel does, must
/// refuse the registration (gone), never open the pid and move that
/// process into the launcher's job, which it used to. The fallback where
/// the option does not exist (ENOPROTOOPT, before 6.5) still registers.
#[test]
fn a_reaped_launchers_pid_given_to_another_process_is_never_placed() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    let mut daemon = Daemon::start_configured(&["--trust.path", STARTER], |command| {
        peer_pidfd_fails_with(command, libc::EINVAL)
    })?;
    let before = all_registrations(&daemon.metrics()?)?;
    let socket = daemon.socket().to_str().context("socket path")?.to_string();

    let stopped = Stopped::stop(daemon.pid())?;
    let args = [
        "send",
        socket.as_str(),
        r#"{"job_id":"ghost"}"#,
        "--exit-without-reading",
    ];
    let mut launcher = starter_command(Path::new(STARTER), &args);
    run_as(&mut launcher, NOBODY, NOBODY);
    let launcher = ChildGuard::spawn(&mut launcher, "a launcher that exits")?;
    let pid = launcher.id();
    let status = launcher.wait(RUN_TIMEOUT)?;
    assert!(status.success(), "{status}");
    // Idle until a line on stdin: the trusted binary, as root.
    let mut victim = starter_command(
        Path::new(STARTER),
        &["send", socket.as_str(), "{}", "--after-stdin-line"],
    );
    victim.stdin(Stdio::piped());
    let Some(victim) = spawn_with_pid(&mut victim, pid)? else {
        bail!("no process could be given pid {pid} again (the machine forks too fast)");
    };
    let victim_cgroup = cgroup_of(victim.id())?;
    drop(stopped);

    let moved = wait_for_outcomes(&daemon, &before, 1.0)?;
    println!("a reaped launcher whose pid is another process's: {moved:?}");
    assert_eq!(
        cgroup_of(victim.id())?,
        victim_cgroup,
        "the process given the reaped launcher's pid was moved into its job"
    );
    assert_eq!(moved, vec![("exited", 1.0)]);
    let metrics = daemon.still_serving()?;
    assert!(
        !has_job(&metrics, "ghost"),
        "the reaped launcher's hello made a job:\n{}",
        metrics.text
    );
    drop(victim);
    drop(daemon);

    // Before 6.5 the option does not exist: a pidfd is opened by pid.
    let daemon = Daemon::start_configured(&["--trust.path", STARTER], |command| {
        peer_pidfd_fails_with(command, libc::ENOPROTOOPT)
    })?;
    let (_, reply) = send(daemon.socket(), r#"{"job_id":"old-kernel"}"#)?;
    assert!(reply.ok, "refused without SO_PEERPIDFD: {reply:?}");
    Ok(())
}
