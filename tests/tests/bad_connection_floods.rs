//! Floods of launcher connections: 1,000 untrusted ones at once, 1,000
//! held silent by a trusted launcher, and 1,000 under systemd's default
//! open-file limit. Each is judged once, no fd leaks, and the daemon keeps
//! serving /metrics throughout.
use std::{
    fs,
    io::{BufRead as _, BufReader},
    os::unix::net::UnixStream,
    path::Path,
    process::Stdio,
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use monitor_tests::{
    ChildGuard, Daemon, cpu_exclusive,
    launcher::{
        JOB_SAMPLES, RUN_TIMEOUT, Reply, all_registrations, counts_differ, fd_targets, open_fds,
        wait_for_outcomes, wait_no_task_cgroups,
    },
    require_root_or_skip,
    starter::starter_command,
};

const STARTER: &str = env!("CARGO_BIN_EXE_fake_starter");

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

/// The daemon's open fds before a flood, to check none leaks after it.
struct FdBaseline {
    pid: u32,
    count: usize,
    targets: Vec<String>,
}

impl FdBaseline {
    fn take(pid: u32) -> anyhow::Result<Self> {
        Ok(Self {
            pid,
            count: open_fds(pid)?,
            targets: fd_targets(pid),
        })
    }

    /// Waits until the daemon's open fds are back to the baseline (they
    /// are closed by tasks that finish on their own time), and fails if
    /// they are not.
    fn assert_no_leak(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let after = loop {
            let now = open_fds(self.pid)?;
            if now <= self.count || Instant::now() > deadline {
                break now;
            }
            thread::sleep(Duration::from_millis(50));
        };
        let before = self.count;
        println!("daemon fds: {before} before, {after} after");
        assert!(
            after <= before,
            "the daemon holds {after} fds, {before} before the connections: a leak\n\
             before: {:?}\nafter: {:?}",
            self.targets,
            fd_targets(self.pid)
        );
        Ok(())
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
    let fds = FdBaseline::take(pid)?;

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

    fds.assert_no_leak()?;
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
    let fds = FdBaseline::take(pid)?;
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
    fds.assert_no_leak()?;
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
