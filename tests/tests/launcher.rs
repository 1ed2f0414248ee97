//! The launcher socket end to end: the socket itself, `monitor run`, an
//! Apptainer starter that forks its container before it connects, and
//! adoption in a resource manager's cgroup.
use std::{
    fs,
    os::unix::{
        fs::{FileTypeExt as _, PermissionsExt as _},
        net::UnixListener,
    },
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use monitor_tests::{
    ChildGuard, Daemon, JobCgroup, cgroup, cpu_shared,
    launcher::{
        JOB_SAMPLES, RUN_TIMEOUT, Reply, TempDir, cgroup_of, check_others_may_run, in_hierarchy,
        monitor_run, registrations, task_cgroups,
    },
    process::{NOBODY, run_as},
    require_root_or_skip,
    starter::starter_command,
};

/// The trusted test launcher (tests/src/bin/fake_starter.rs).
const STARTER: &str = env!("CARGO_BIN_EXE_fake_starter");

fn starter(args: &[&str]) -> Command {
    starter_command(Path::new(STARTER), args)
}

#[test]
fn socket_is_created_open_to_every_user_and_replaces_a_stale_one() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    check_others_may_run(Path::new(STARTER))?;
    let scratch = TempDir::new("socket")?;
    // Two levels that do not exist yet: the daemon makes them.
    let socket = scratch.0.join("run/monitor/monitor.sock");
    let socket_arg = socket.to_str().context("socket path not UTF-8")?;
    let args = ["--socket.path", socket_arg, "--trust.path", STARTER];

    {
        let mut daemon = Daemon::start_with(&args)?;
        let meta = fs::symlink_metadata(&socket)
            .with_context(|| format!("the daemon made no socket at {}", socket.display()))?;
        assert!(
            meta.file_type().is_socket(),
            "{} is not a socket",
            socket.display()
        );
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o666,
            "socket mode {:o}, expected 0666 (identity is checked per connection)",
            meta.permissions().mode() & 0o777
        );
        let parent_mode = fs::metadata(socket.parent().unwrap())?.permissions().mode();
        assert_eq!(
            parent_mode & 0o005,
            0o005,
            "the socket's directory (mode {parent_mode:o}) is closed to other users"
        );

        // An unprivileged user connects and is answered (and, with a
        // trusted launcher, registered under its own uid).
        let mut command = starter(&["send", socket_arg, r#"{"job_id":"from-nobody"}"#]);
        run_as(&mut command, NOBODY, NOBODY);
        let output = ChildGuard::spawn(&mut command, "fake_starter as nobody")?
            .wait_with_output(RUN_TIMEOUT)?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let reply = Reply::from_output(&stdout).with_context(|| {
            format!(
                "uid 65534 could not talk to the socket; stderr: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
        println!("nobody connected and got: {}", reply.line);
        assert!(
            reply.ok,
            "nobody's registration was refused: {}",
            reply.line
        );
        daemon.wait_for_series(
            "monitor_job_info",
            &[
                ("jobid", "from-nobody"),
                ("uid", "65534"),
                ("user", "nobody"),
            ],
            JOB_SAMPLES,
        )?;
        daemon.still_serving()?;
    }

    // A stale socket: bound, then abandoned (nobody listens on it).
    let _ = fs::remove_file(&socket);
    drop(UnixListener::bind(&socket).context("making a stale socket")?);
    assert!(
        std::os::unix::net::UnixStream::connect(&socket).is_err(),
        "the stale socket is not stale"
    );
    let mut daemon =
        Daemon::start_with(&args).context("the daemon did not start over a stale socket file")?;
    // (Inode numbers prove nothing here: tmpfs reuses them at once.) A
    // file left stale would refuse every connection.
    let meta = fs::symlink_metadata(&socket)?;
    assert_eq!(meta.permissions().mode() & 0o777, 0o666);
    let output = ChildGuard::spawn(
        &mut starter(&["send", socket_arg, r#"{"job_id":"after-stale"}"#]),
        "fake_starter",
    )?
    .wait_with_output(RUN_TIMEOUT)?;
    let reply = Reply::from_output(&String::from_utf8_lossy(&output.stdout))?;
    assert!(
        reply.ok,
        "registration over the replaced socket failed: {}",
        reply.line
    );
    assert!(
        daemon.stderr().contains("stale socket"),
        "the daemon did not say it replaced a stale socket; stderr:\n{}",
        daemon.stderr()
    );
    daemon.still_serving()?;
    drop(daemon);

    // Not a socket at all: refused, never deleted.
    fs::write(&socket, "precious")?;
    let refused = Daemon::start_with(&args);
    let error = format!(
        "{:#}",
        refused
            .err()
            .context("the daemon started over a regular file at its socket path")?
    );
    assert!(
        error.contains("not a socket"),
        "unexpected refusal: {error}"
    );
    assert_eq!(
        fs::read_to_string(&socket)?,
        "precious",
        "the daemon touched a regular file at its socket path"
    );
    Ok(())
}

#[test]
fn monitor_run_registers_the_job_and_keeps_the_exit_status() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    let mut daemon = Daemon::start()?;
    let before = registrations(&daemon.metrics()?, "ok")?;

    let mut command = monitor_run(daemon.socket())?;
    command
        .args([
            "--job-id",
            "j-run",
            "--name",
            "my name",
            "--label",
            "partition=gpu",
            "--label",
            "qos=high",
        ])
        .args(["--", "/bin/sh", "-c", "exit 3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = ChildGuard::spawn(&mut command, "monitor run -- sh -c 'exit 3'")?;
    let pid = child.id();
    let output = child.wait_with_output(RUN_TIMEOUT)?;
    println!(
        "monitor run: {}; stderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        output.status.code(),
        Some(3),
        "monitor run did not keep the command's exit status"
    );
    assert!(
        output.stderr.is_empty(),
        "monitor run warned although the daemon is up: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    // The command exited, so the job ends: its task cgroup goes, its final
    // values stay with an end time.
    let finished = [("jobid", "j-run"), ("state", "finished")];
    let metrics = daemon.wait_for_series("monitor_job_info", &finished, JOB_SAMPLES)?;
    let info = metrics
        .matching("monitor_job_info", &finished)
        .next()
        .context("job_info vanished")?;
    println!("job info: {:?}", info.labels);
    let root = in_hierarchy(daemon.root())?;
    for (label, want) in [
        ("name", "my name"),
        ("launcher", "monitor"),
        ("label_partition", "gpu"),
        ("label_qos", "high"),
        ("user", "root"),
        ("uid", "0"),
    ] {
        assert_eq!(
            info.labels.get(label).map(String::as_str),
            Some(want),
            "label {label} of {:?}",
            info.labels
        );
    }
    let cgroup = info.labels.get("cgroup").context("no cgroup label")?;
    assert!(
        cgroup.starts_with(&format!("{root}/task-")),
        "job cgroup {cgroup:?} of pid {pid} is not a task cgroup under {root}"
    );
    let labels = [("jobid", "j-run")];
    metrics.value("monitor_job_end_time_seconds", &labels)?;
    let execs = metrics.value("monitor_job_execs_total", &labels)?;
    assert!(
        execs >= 1.0,
        "the command's exec was not counted in the job (execs {execs})"
    );
    assert_eq!(
        registrations(&metrics, "ok")? - before,
        1.0,
        "registrations{{result=\"ok\"}}"
    );
    assert_eq!(
        task_cgroups(daemon.root())?,
        Vec::<PathBuf>::new(),
        "the ended job's task cgroup was not removed"
    );
    daemon.still_serving()?;
    Ok(())
}

#[test]
fn monitor_run_takes_the_job_id_from_the_batch_system() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    let mut daemon = Daemon::start()?;

    // SLURM_JOB_ID wins over the others.
    let mut command = monitor_run(daemon.socket())?;
    command
        .env("SLURM_JOB_ID", "31337")
        .env("PBS_JOBID", "999.pbs")
        .args(["--", "/bin/true"]);
    let status =
        ChildGuard::spawn(&mut command, "monitor run (SLURM_JOB_ID)")?.wait(RUN_TIMEOUT)?;
    assert!(status.success(), "monitor run -- true: {status}");
    daemon.wait_for_series(
        "monitor_job_info",
        &[("jobid", "31337"), ("launcher", "monitor")],
        JOB_SAMPLES,
    )?;

    let mut command = monitor_run(daemon.socket())?;
    command
        .env("PBS_JOBID", "999.pbs")
        .args(["--", "/bin/true"]);
    ChildGuard::spawn(&mut command, "monitor run (PBS_JOBID)")?.wait(RUN_TIMEOUT)?;
    daemon.wait_for_series("monitor_job_info", &[("jobid", "999.pbs")], JOB_SAMPLES)?;

    // None set: a generated id, `run-<pid>-<time>`.
    let mut command = monitor_run(daemon.socket())?;
    command.args(["--", "/bin/true"]);
    let child = ChildGuard::spawn(&mut command, "monitor run (no job id)")?;
    let prefix = format!("run-{}-", child.id());
    child.wait(RUN_TIMEOUT)?;
    let (seen, metrics) = daemon.wait_for(JOB_SAMPLES, |m| {
        m.matching("monitor_job_info", &[]).any(|s| {
            s.labels
                .get("jobid")
                .is_some_and(|j| j.starts_with(&prefix))
        })
    })?;
    assert!(seen, "no generated job id {prefix}...:\n{}", metrics.text);
    daemon.still_serving()?;
    Ok(())
}

#[test]
fn monitor_run_without_a_daemon_runs_the_command_unless_required() -> anyhow::Result<()> {
    let _machine = cpu_shared();
    let scratch = TempDir::new("nodaemon")?;
    let socket = scratch.0.join("nobody-listens.sock");
    let marker = scratch.0.join("ran");
    let script = format!("echo ran > {}; exit 4", marker.display());

    let mut command = monitor_run(&socket)?;
    command
        .args(["--job-id", "lonely", "--", "/bin/sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let output =
        ChildGuard::spawn(&mut command, "monitor run, no daemon")?.wait_with_output(RUN_TIMEOUT)?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("no daemon: {}; stderr: {stderr}", output.status);
    assert_eq!(
        output.status.code(),
        Some(4),
        "the command's exit status was not kept"
    );
    assert!(marker.exists(), "the command did not run without a daemon");
    assert!(
        stderr.contains("warning") && stderr.contains("lonely"),
        "no warning naming the job: {stderr:?}"
    );

    fs::remove_file(&marker)?;
    let mut command = monitor_run(&socket)?;
    command
        .args([
            "--require",
            "--job-id",
            "lonely",
            "--",
            "/bin/sh",
            "-c",
            &script,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let output = ChildGuard::spawn(&mut command, "monitor run --require, no daemon")?
        .wait_with_output(RUN_TIMEOUT)?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("no daemon, --require: {}; stderr: {stderr}", output.status);
    assert_eq!(
        output.status.code(),
        Some(75),
        "--require without a daemon must exit 75 (EX_TEMPFAIL)"
    );
    assert!(
        !marker.exists(),
        "--require ran the command although it could not register"
    );
    assert!(stderr.contains("error"), "no error message: {stderr:?}");
    Ok(())
}

/// Apptainer's starter (with `allow monitoring = yes`) forks the container
/// first and connects afterwards, silently, holding the connection while
/// the container runs. Apptheus moved only the starter into the job, so the
/// container was never measured. Here the container's CPU must be the job's.
#[test]
fn apptainer_starter_container_forked_before_connecting_is_measured() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    let mut daemon = Daemon::start_with(&["--trust.path", STARTER])?;
    let root = in_hierarchy(daemon.root())?;
    let silent_before = registrations(&daemon.metrics()?, "silent")?;
    let socket = daemon.socket().to_str().context("socket path")?.to_string();

    let mut starter_child = ChildGuard::spawn(
        &mut starter(&["starter", &socket, "2.0"]),
        "fake_starter starter",
    )?;
    let starter_pid = starter_child.id();
    let lines = starter_child.lines()?;
    let container: u32 = lines.expect("child", RUN_TIMEOUT)?.parse()?;
    // The container (forked before the connection) is moved with its starter.
    let deadline = Instant::now() + Duration::from_secs(10);
    let moved_to = loop {
        let now = cgroup_of(container)?;
        if now.starts_with(&format!("{root}/task-")) {
            break now;
        }
        if Instant::now() > deadline {
            bail!(
                "container pid {container} is still in {now}, not in a task cgroup of {root}; daemon stderr:\n{}",
                daemon.stderr()
            );
        }
        thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(
        cgroup_of(starter_pid)?,
        moved_to,
        "starter and container in different cgroups"
    );
    let child_cpu: f64 = lines.expect("child_cpu", RUN_TIMEOUT)?.parse()?;
    let status = starter_child.wait(RUN_TIMEOUT)?;
    assert!(status.success(), "fake_starter: {status}");

    let jobid = format!("fake_starter_{starter_pid}");
    let finished = [
        ("jobid", jobid.as_str()),
        ("state", "finished"),
        ("launcher", "fake_starter"),
    ];
    let metrics = daemon.wait_for_series("monitor_job_info", &finished, JOB_SAMPLES)?;
    let cpu = metrics.value(
        "monitor_job_cpu_seconds_total",
        &[("jobid", jobid.as_str())],
    )?;
    println!(
        "apptainer-like starter: container used {child_cpu:.3} s of CPU, job {jobid} has {cpu:.3} s"
    );
    assert!(
        cpu >= 0.9 * child_cpu,
        "job {jobid} has {cpu:.3} s of CPU, less than 90% of its container's {child_cpu:.3} s: the container was not measured"
    );
    assert_eq!(
        registrations(&metrics, "silent")? - silent_before,
        1.0,
        "registrations{{result=\"silent\"}}"
    );
    assert_eq!(
        task_cgroups(daemon.root())?,
        Vec::<PathBuf>::new(),
        "the ended job's task cgroup was not removed"
    );
    daemon.still_serving()?;
    Ok(())
}

/// A resource manager's cgroup tree outside the daemon's root, removed
/// (with anything left in it) when dropped.
struct ForeignTree(PathBuf);

impl Drop for ForeignTree {
    fn drop(&mut self) {
        if let Err(e) = cgroup::remove_tree(&self.0) {
            eprintln!("cleaning up {}: {e:#}", self.0.display());
        }
    }
}

/// A launcher already inside a resource manager's job cgroup (matching
/// --adopt.cgroup) stays there, so that job's limits keep applying; the
/// daemon counts that cgroup for the job instead.
#[test]
fn launcher_in_a_resource_manager_cgroup_is_adopted_not_moved() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    let top = format!("fake-slurm-{}", std::process::id());
    let tree = ForeignTree(cgroup::v2_mount()?.join(&top));
    cgroup::remove_tree(&tree.0)?;
    let step_dir = tree.0.join("job_7/step_0");
    fs::create_dir_all(&step_dir).with_context(|| format!("creating {}", step_dir.display()))?;
    let step = JobCgroup {
        name: "step_0".into(),
        dir: step_dir.clone(),
    };
    let step_path = format!("/{top}/job_7/step_0");
    // A rule of our own (not the Slurm default), anchored to this tree.
    let rule = format!("^/{top}/job_[0-9]+/step_[^/]+$");
    let mut daemon = Daemon::start_with(&["--adopt.cgroup", &rule])?;

    let mut command = step.command(monitor_tests::daemon::binary()?)?;
    command
        .args(["run", "--socket.path"])
        .arg(daemon.socket())
        .args(["--job-id", "7", "--", STARTER, "busy", "1.5"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut run = ChildGuard::spawn(&mut command, "monitor run in job_7/step_0")?;
    let lines = run.lines()?;
    let pid: u32 = lines.expect("ready", RUN_TIMEOUT)?.parse()?;
    // Registered (the command runs only after the answer), and not moved.
    assert_eq!(
        cgroup_of(pid)?,
        step_path,
        "the adopted launcher was moved out of its step"
    );
    assert_eq!(
        task_cgroups(daemon.root())?,
        Vec::<PathBuf>::new(),
        "a task cgroup was made for an adopted launcher"
    );
    let own_cpu: f64 = lines.expect("cpu", RUN_TIMEOUT)?.parse()?;
    let status = run.wait(RUN_TIMEOUT)?;
    assert!(status.success(), "monitor run -- busy: {status}");
    let kernel_cpu = step.cpu_usage_seconds()?;

    let finished = [("jobid", "7"), ("state", "finished")];
    let metrics = daemon.wait_for_series("monitor_job_info", &finished, JOB_SAMPLES)?;
    let info = metrics
        .matching("monitor_job_info", &finished)
        .next()
        .context("job 7")?;
    assert_eq!(
        info.labels.get("cgroup"),
        Some(&step_path),
        "job 7's cgroup label"
    );
    let cpu = metrics.value("monitor_job_cpu_seconds_total", &[("jobid", "7")])?;
    println!(
        "adopted job 7: {cpu:.3} s of CPU; the process used {own_cpu:.3} s, step_0's cpu.stat says {kernel_cpu:.3} s"
    );
    assert!(
        cpu >= 0.9 * own_cpu,
        "job 7 has {cpu:.3} s, less than 90% of its process's {own_cpu:.3} s"
    );
    assert!(
        cpu >= 0.9 * kernel_cpu,
        "job 7 has {cpu:.3} s, less than 90% of step_0's cpu.stat {kernel_cpu:.3} s"
    );
    // Not counted twice (room for the daemon's small overcount on a busy machine).
    assert!(
        cpu <= 1.1 * kernel_cpu,
        "job 7 has {cpu:.3} s, far more than step_0 used ({kernel_cpu:.3} s)"
    );
    // The daemon stops counting an adopted cgroup; it never removes it.
    assert!(
        step_dir.is_dir(),
        "the daemon removed the resource manager's cgroup {}",
        step_dir.display()
    );
    daemon.still_serving()?;
    Ok(())
}
