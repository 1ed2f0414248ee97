//! Launchers gone before the daemon handles them: before accept (reaped or
//! a zombie), while being placed, and reaped with their pid given to
//! another process. Nothing is left behind and no other process is moved.
use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use monitor_tests::{
    ChildGuard, Daemon, cpu_exclusive, cpu_shared,
    launcher::{
        RUN_TIMEOUT, all_registrations, cgroup_of, has_job, monitor_run, task_cgroups,
        wait_for_outcomes, wait_no_task_cgroups,
    },
    process::{NOBODY, run_as},
    require_root_or_skip,
    starter::{send, starter_command},
};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

const STARTER: &str = env!("CARGO_BIN_EXE_fake_starter");

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
    let (_, reply) = send(STARTER, daemon.socket(), r#"{"job_id":"old-kernel"}"#)?;
    assert!(reply.ok, "refused without SO_PEERPIDFD: {reply:?}");
    Ok(())
}
