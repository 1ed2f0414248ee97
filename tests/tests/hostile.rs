//! What a hostile local user tries against the daemon, run as that user
//! (nobody) against the real daemon.
use std::{path::Path, process::Command, time::Duration};

use anyhow::Context as _;
use monitor_tests::{
    Daemon, JobCgroup, cgroup, cpu_shared,
    jobs_api::{api_jobs, with_id},
    launcher::{Reply, check_others_may_run, in_hierarchy, registrations},
    process::{NOBODY, run_as},
    require_root_or_skip, skip_or_fail,
};

/// A one-line client in Python: connects to the socket given and prints
/// the daemon's first answer.
const PYTHON_CLIENT: &str = "import socket, sys\n\
s = socket.socket(socket.AF_UNIX)\n\
s.settimeout(10)\n\
s.connect(sys.argv[1])\n\
print(s.makefile().readline(), end='')\n";

fn python() -> Option<&'static Path> {
    ["/usr/bin/python3"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
}

/// Issue 13, item 1: in a private mount namespace, a user bind-mounts
/// python3 over the daemon's trusted path and execs it. `/proc/PID/exe`
/// then shows the trusted path, but the file is python3: refused.
#[test]
fn a_trusted_path_over_another_file_in_a_private_namespace_is_refused() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let Some(python) = python() else {
        skip_or_fail("python3 is not installed (apt-get install python3)");
        return Ok(());
    };
    let daemon = Daemon::start()?;
    let trusted = monitor_tests::daemon::binary()?.canonicalize()?;
    check_others_may_run(&trusted)?;
    let userns = Command::new("unshare")
        .args(["-Urm", "true"])
        .as_nobody()
        .status();
    if !userns.is_ok_and(|s| s.success()) {
        skip_or_fail(
            "unprivileged user namespaces are off on this kernel (unshare -Urm fails as nobody)",
        );
        return Ok(());
    }
    let before = registrations(&daemon.metrics()?, "untrusted")?;
    let script = format!(
        "mount --bind {python} {trusted} && exec {trusted} -c \"$0\" {socket}",
        python = python.display(),
        trusted = trusted.display(),
        socket = daemon.socket().display(),
    );
    let output = Command::new("unshare")
        .args(["-Urm", "sh", "-c", &script, PYTHON_CLIENT])
        .as_nobody()
        .output()
        .context("running the impostor")?;
    let answer = String::from_utf8_lossy(&output.stdout);
    let reply = Reply::parse(answer.trim()).with_context(|| {
        format!(
            "the impostor got no answer line: {answer:?}; stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    let refusal = reply
        .refusal()
        .context("the impostor was accepted as a trusted launcher")?;
    assert!(refusal.contains("untrusted"), "{refusal}");
    let metrics = daemon.metrics_after_samples(1)?;
    assert_eq!(registrations(&metrics, "untrusted")?, before + 1.0);
    // The real binary, run by the same user, is still trusted.
    let output = monitor_tests::launcher::monitor_run(daemon.socket())?
        .args(["--require", "--job-id", "honest", "--", "/bin/true"])
        .as_nobody()
        .output()?;
    assert!(
        output.status.success(),
        "the trusted binary was refused: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

trait AsNobody {
    /// As nobody, from `/`.
    fn as_nobody(&mut self) -> &mut Self;
    /// As nobody, in the directory already set.
    fn as_nobody_here(&mut self) -> &mut Self;
}

impl AsNobody for Command {
    fn as_nobody(&mut self) -> &mut Self {
        self.as_nobody_here().current_dir("/")
    }

    fn as_nobody_here(&mut self) -> &mut Self {
        run_as(self, NOBODY, NOBODY);
        self
    }
}

/// A directory tree in the v2 hierarchy outside the daemon's root (a
/// resource manager's, or a user's), removed on drop.
struct Tree(std::path::PathBuf);

impl Tree {
    fn new(name: &str) -> anyhow::Result<Self> {
        let dir = cgroup::v2_mount()?.join(format!("{name}-{}", std::process::id()));
        cgroup::remove_tree(&dir)?;
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }

    fn in_hierarchy(&self, below: &str) -> anyhow::Result<String> {
        Ok(format!("{}/{below}", in_hierarchy(&self.0)?))
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        if let Err(e) = cgroup::remove_tree(&self.0) {
            eprintln!("removing {}: {e:#}", self.0.display());
        }
    }
}

/// The jobs the API lists with `jobid`, as (state, cgroup).
fn jobs_named(daemon: &Daemon, jobid: &str) -> anyhow::Result<Vec<(String, String)>> {
    let jobs = api_jobs(daemon, "")?;
    Ok(with_id(&jobs, jobid)
        .into_iter()
        .map(|job| {
            let text = |key: &str| job[key].as_str().unwrap_or_default().to_string();
            (text("state"), text("cgroup"))
        })
        .collect())
}

/// Issue 13, item 2: a second `monitor run` with another job id inside a
/// step that is adopted already joins the step's job. It used to re-point
/// the cgroup at a new job, and the first stayed "running" for ever.
#[test]
fn a_second_registration_in_an_adopted_step_leaves_no_ghost() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    let tree = Tree::new("hostile-slurm")?;
    let step = JobCgroup {
        name: "step_0".into(),
        dir: tree.0.join("job_8/step_0"),
    };
    std::fs::create_dir_all(&step.dir)?;
    let rule = format!("^{}/job_[0-9]+/step_[^/]+$", in_hierarchy(&tree.0)?);
    let daemon = Daemon::start_with(&["--adopt.cgroup", &rule])?;
    let binary = monitor_tests::daemon::binary()?;
    let socket = daemon.socket().display().to_string();
    let inner = format!(
        "{bin} run --require --socket.path {socket} --job-id second -- /bin/true",
        bin = binary.display()
    );
    let output = step
        .command(&binary)?
        .args([
            "run",
            "--require",
            "--socket.path",
            &socket,
            "--job-id",
            "first",
            "--",
        ])
        .args(["/bin/sh", "-c", &inner])
        .output()?;
    assert!(
        output.status.success(),
        "the launchers failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The step is empty now: its job ends, and nothing stays running.
    let (ended, metrics) = daemon.wait_for(25, |_| {
        jobs_named(&daemon, "first")
            .is_ok_and(|jobs| jobs.iter().any(|(state, _)| state == "finished"))
    })?;
    assert!(ended, "the step's job never ended:\n{}", metrics.text);
    assert_eq!(
        jobs_named(&daemon, "second")?,
        Vec::new(),
        "the second launcher made a job of its own"
    );
    let first = jobs_named(&daemon, "first")?;
    assert!(
        first.iter().all(|(state, _)| state == "finished"),
        "a ghost: {first:?}"
    );
    Ok(())
}

/// Issue 13, item 3: `.../job_1/step_0` made by a user in a subtree
/// delegated to them is theirs, not a resource manager's: even under a
/// loose `--adopt.cgroup` rule it is not adopted as a job's cgroup.
#[test]
fn a_users_own_job_and_step_directories_are_not_adopted() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    let tree = Tree::new("hostile-delegated")?;
    // Delegated to nobody, as systemd delegates a user manager's subtree.
    for file in [
        "",
        "cgroup.procs",
        "cgroup.subtree_control",
        "cgroup.threads",
    ] {
        let path = tree.0.join(file);
        nix::unistd::chown(&path, Some(NOBODY.into()), Some(NOBODY.into()))
            .with_context(|| format!("chown {}", path.display()))?;
    }
    let made = Command::new("mkdir")
        .args(["-p", "job_1/step_0"])
        .current_dir(&tree.0)
        .as_nobody_here()
        .status()?;
    assert!(
        made.success(),
        "nobody could not make job_1/step_0 in its own subtree"
    );
    let step = JobCgroup {
        name: "step_0".into(),
        dir: tree.0.join("job_1/step_0"),
    };
    // The old default rule, unanchored: ownership alone must decide.
    let daemon = Daemon::start_with(&["--adopt.cgroup", "/job_[0-9]+/step_[^/]+(/|$)"])?;
    let output = step
        .command(monitor_tests::daemon::binary()?)?
        .args(["run", "--require", "--socket.path"])
        .arg(daemon.socket())
        .args(["--job-id", "mine", "--", "/bin/true"])
        .as_nobody()
        .output()?;
    assert!(
        output.status.success(),
        "the registration failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let user_step = tree.in_hierarchy("job_1/step_0")?;
    let (seen, metrics) = daemon.wait_for(10, |_| {
        jobs_named(&daemon, "mine").is_ok_and(|jobs| !jobs.is_empty())
    })?;
    assert!(seen, "the job never showed:\n{}", metrics.text);
    let jobs = jobs_named(&daemon, "mine")?;
    assert!(
        jobs.iter().all(|(_, cgroup)| *cgroup != user_step),
        "the user's own directory was adopted as a resource manager's: {jobs:?} (stderr: {})",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// Issue 13, item 6: a job name and label with terminal escapes and a
/// bidi override reach `monitor jobs` and `monitor report` shown escaped,
/// never as bytes a terminal acts on.
#[test]
fn escape_sequences_in_names_never_reach_the_terminal() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let daemon = Daemon::start()?;
    let binary = monitor_tests::daemon::binary()?;
    check_others_may_run(&binary)?;
    let hostile = "\u{1b}]0;owned\u{7}\u{1b}[2J\u{202e}kcatta";
    let output = monitor_tests::launcher::monitor_run(daemon.socket())?
        .args(["--require", "--job-id", "escapes", "--name", hostile])
        .args(["--label", &format!("note={hostile}"), "--", "/bin/true"])
        .as_nobody()
        .output()?;
    assert!(
        output.status.success(),
        "the registration failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (seen, metrics) = daemon.wait_for(10, |_| {
        jobs_named(&daemon, "escapes").is_ok_and(|jobs| !jobs.is_empty())
    })?;
    assert!(seen, "the job never showed:\n{}", metrics.text);
    for args in [vec!["jobs"], vec!["report", "escapes"]] {
        // The job may be between two snapshots (it ends as this runs):
        // asked again for a few seconds until an answer comes.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let shown = loop {
            let shown = Command::new(&binary)
                .args(&args)
                .arg("--socket.path")
                .arg(daemon.socket())
                .output()?;
            if shown.status.success() || std::time::Instant::now() >= deadline {
                break shown;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let text = String::from_utf8_lossy(&shown.stdout);
        assert!(
            shown.status.success(),
            "monitor {args:?}: {}",
            String::from_utf8_lossy(&shown.stderr)
        );
        assert!(
            text.contains("kcatta"),
            "monitor {args:?} does not show the name:\n{text}"
        );
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}') && !text.contains('\u{202e}'),
            "monitor {args:?} printed the raw escapes: {text:?}"
        );
        assert!(
            text.contains("\\u{1b}"),
            "monitor {args:?} hid the escapes instead of showing them: {text:?}"
        );
    }
    Ok(())
}

const STARTER: &str = env!("CARGO_BIN_EXE_fake_starter");

/// Issue 13, item 7: one uid cannot hold every launcher connection. Over
/// its share its connections are refused at once, counted and answered,
/// and everyone else still registers.
#[test]
fn one_user_cannot_hold_every_launcher_connection() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    check_others_may_run(Path::new(STARTER))?;
    let daemon = Daemon::start_with(&[
        "--trust.path",
        STARTER,
        "--socket.max-connections-per-user",
        "8",
        "--socket.hello-timeout",
        "500ms",
    ])?;
    let before = registrations(&daemon.metrics()?, "over_limit")?;
    let mut hog = Command::new(STARTER);
    hog.args(["silent"])
        .arg(daemon.socket())
        .arg("20")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .as_nobody();
    let mut hog = monitor_tests::ChildGuard::spawn(&mut hog, "20 silent connections as nobody")?;
    let lines = hog.lines()?;
    lines.expect("connected", Duration::from_secs(30))?;
    // Refused at accept, before the hello timeout: counted at once.
    let (counted, metrics) = daemon.wait_for(10, |m| {
        registrations(m, "over_limit").is_ok_and(|n| n - before >= 12.0)
    })?;
    assert!(
        counted,
        "nobody's 12 connections over its share of 8 were not refused:\n{}",
        metrics.text
    );
    // Everyone else is served meanwhile, root and another user alike.
    for uid in [0, 4244] {
        let mut run = monitor_tests::launcher::monitor_run(daemon.socket())?;
        run.args(["--require", "--", "/bin/true"]).current_dir("/");
        run_as(&mut run, uid, uid);
        let output = run.output()?;
        assert!(
            output.status.success(),
            "uid {uid} could not register while nobody held its share: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    hog.close_stdin();
    hog.wait(Duration::from_secs(30))?;
    Ok(())
}

/// Issue 13, item 7: a silent launcher's connection is held while the
/// launcher lives, not for as long as some other process keeps the socket
/// open: the daemon closes its end when the launcher exits.
#[test]
fn a_held_connection_goes_when_its_launcher_exits() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    check_others_may_run(Path::new(STARTER))?;
    let mut daemon =
        Daemon::start_with(&["--trust.path", STARTER, "--socket.hello-timeout", "500ms"])?;
    let output = Command::new(STARTER)
        .arg("orphan")
        .arg(daemon.socket())
        .arg("1.5")
        .as_nobody()
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("connected") && text.contains("closed"),
        "the daemon held the connection after its launcher exited: {text:?}"
    );
    daemon.still_serving()?;
    Ok(())
}

/// Issue 13, item 13: the socket's directory is made with its own mode
/// whatever the umask (users must reach the socket), and a directory
/// another user owns or may write is refused at start, naming it.
#[test]
fn socket_directories_are_made_exactly_and_checked() -> anyhow::Result<()> {
    use std::os::unix::{fs::MetadataExt as _, process::CommandExt as _};
    if !require_root_or_skip() {
        return Ok(());
    }
    let scratch = monitor_tests::launcher::TempDir::new("socket-dirs")?;
    let socket = scratch.0.join("fresh/sub/monitor.sock");
    let daemon =
        Daemon::start_configured(&["--socket.path", &socket.to_string_lossy()], |command| {
            // SAFETY: umask only, between fork and exec.
            unsafe {
                command.pre_exec(|| {
                    libc::umask(0o077);
                    Ok(())
                });
            }
        })?;
    for dir in [scratch.0.join("fresh"), scratch.0.join("fresh/sub")] {
        let mode = std::fs::metadata(&dir)?.mode() & 0o7777;
        assert_eq!(
            mode,
            0o755,
            "{} made {mode:o} under umask 077",
            dir.display()
        );
    }
    drop(daemon);

    let planted = scratch.0.join("planted");
    std::fs::create_dir(&planted)?;
    nix::unistd::chown(&planted, Some(NOBODY.into()), Some(NOBODY.into()))?;
    let output = Command::new(monitor_tests::daemon::binary()?)
        .args([
            "daemon",
            "--web.listen-address",
            "127.0.0.1:1",
            "--bpf.pin-path=",
        ])
        .arg("--socket.path")
        .arg(planted.join("monitor.sock"))
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "the daemon used a directory nobody owns"
    );
    assert!(
        stderr.contains(&planted.display().to_string()) && stderr.contains("uid 65534"),
        "the refusal does not name the directory and its owner: {stderr}"
    );
    Ok(())
}

/// Issue 13, item 11: registrations of one uid at the same moment cannot
/// overshoot `--jobs.max-per-user` (the check and the reservation are one
/// step).
#[test]
fn concurrent_registrations_do_not_overshoot_the_per_user_cap() -> anyhow::Result<()> {
    const CAP: usize = 3;
    const LAUNCHERS: usize = 24;
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    let daemon = Daemon::start_with(&["--jobs.max-per-user", &CAP.to_string()])?;
    check_others_may_run(&monitor_tests::daemon::binary()?)?;
    let launchers = (0..LAUNCHERS)
        .map(|n| {
            let mut command = monitor_tests::launcher::monitor_run(daemon.socket())?;
            command
                .args([
                    "--require",
                    "--job-id",
                    &format!("crowd-{n}"),
                    "--",
                    "/bin/sleep",
                    "6",
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .as_nobody();
            monitor_tests::ChildGuard::spawn(&mut command, "a launcher of the crowd")
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut registered = 0;
    let mut refusals = Vec::new();
    for launcher in launchers {
        let output = launcher.wait_with_output(Duration::from_secs(60))?;
        if output.status.success() {
            registered += 1;
        } else {
            refusals.push(String::from_utf8_lossy(&output.stderr).into_owned());
        }
    }
    assert!(
        (1..=CAP).contains(&registered),
        "{registered} of {LAUNCHERS} simultaneous registrations of one uid went through a cap of {CAP}"
    );
    assert!(
        refusals
            .iter()
            .all(|r| r.contains("jobs.max-per-user") || r.contains("limit")),
        "refusals that do not say why: {refusals:?}"
    );
    Ok(())
}

/// Issue 13, item 11, provoked until it shows: where the cap's check and
/// the task cgroup's reservation take the job table's lock apart, a
/// registration that checks between another's two steps counts one task
/// cgroup short, and at the cap's last place both pass. Rounds of
/// launchers of one uid make that moment crowded: the daemon is held
/// (SIGSTOP) while they are let go together through one gate (a pipe they
/// all wait on, closed once every one of them is blocked reading it) and
/// until every one has connected and sent its hello; let go, it finds
/// them all queued, as a daemon held up for a moment on a busy node does.
/// Each job accepted keeps running until all of its round have been
/// answered, so the accepted are the jobs running at once, and they never
/// exceed the cap. Where the two steps are apart, about one round in
/// ten overshoots on a 2-CPU machine (some by four); the rounds stop
/// at the first.
#[test]
fn launchers_of_one_uid_let_go_together_never_run_more_jobs_than_the_cap() -> anyhow::Result<()> {
    const CAP: usize = 4;
    const LAUNCHERS: usize = 12;
    const ROUNDS: usize = 80;
    const JOBS_ON_THE_NODE: usize = 3000;
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    let daemon = Daemon::start_with(&["--jobs.max-per-user", &CAP.to_string()])?;
    check_others_may_run(&monitor_tests::daemon::binary()?)?;
    // Jobs already on the node: the sampler's pass over them holds the job
    // table's lock while the crowd piles up behind it.
    for n in 0..JOBS_ON_THE_NODE {
        std::fs::create_dir(daemon.root().join(format!("on-the-node-{n}")))?;
    }
    daemon.metrics_after_samples(2)?;
    let mut running_at_once = Vec::new();
    for round in 0..ROUNDS {
        running_at_once.push(crowd_let_go_together(&daemon, round, LAUNCHERS)?);
        if running_at_once.last().is_some_and(|&n| n > CAP) {
            break;
        }
    }
    eprintln!("jobs of one uid running at once, per round: {running_at_once:?}");
    assert!(
        running_at_once.iter().all(|n| (1..=CAP).contains(n)),
        "jobs of one uid running at once, per round of {LAUNCHERS} launchers let go together: \
         {running_at_once:?}, over a cap of {CAP}"
    );
    Ok(())
}

/// One round: `launchers` launchers of nobody let go together at a held
/// daemon; returns how many were accepted (their jobs all running at
/// once), once the daemon has ended them again.
fn crowd_let_go_together(daemon: &Daemon, round: usize, launchers: usize) -> anyhow::Result<usize> {
    const ANSWER: Duration = Duration::from_secs(60);
    let binary = monitor_tests::daemon::binary()?;
    let (gate, opener) = std::io::pipe().context("making the gate")?;
    let crowd = (0..launchers)
        .map(|n| {
            let mut command = Command::new("/bin/sh");
            command
                .args(["-c", "read _; exec \"$@\"", "gate"])
                .arg(&binary)
                .args(["run", "--socket.path"])
                .arg(daemon.socket())
                .args(["--require", "--job-id", &format!("crowd-{round}-{n}"), "--"])
                .args(["/bin/sh", "-c", "echo registered; exec sleep 600"])
                .env_remove("MONITOR_SOCKET")
                .stdin(gate.try_clone()?)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .as_nobody();
            for variable in monitor_tests::launcher::JOB_ID_VARIABLES {
                command.env_remove(variable);
            }
            monitor_tests::ChildGuard::spawn(&mut command, "a launcher of the crowd")
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    drop(gate);
    for launcher in &crowd {
        wait_until_reading(launcher.id(), Reading::Stdin)?;
    }
    {
        let _held = Held::stop(daemon)?;
        // EOF for every one of them at once.
        drop(opener);
        for launcher in &crowd {
            wait_until_reading(launcher.id(), Reading::Answer)?;
        }
    }
    let mut accepted = Vec::new();
    for mut launcher in crowd {
        let lines = launcher.lines()?;
        match lines.next_or_end(ANSWER)? {
            Some(line) if line == "registered" => accepted.push(launcher),
            Some(line) => anyhow::bail!("a launcher of the crowd printed {line:?}"),
            // Refused: `--require` exits without running the command.
            None => {}
        }
    }
    let running_at_once = accepted.len();
    for job in accepted {
        job.kill()?;
    }
    // The cap counts task cgroups until the daemon has removed them.
    let deadline = std::time::Instant::now() + ANSWER;
    while !monitor_tests::launcher::task_cgroups(daemon.root())?.is_empty() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the task cgroups of round {round} are still there after {ANSWER:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    daemon.metrics_after_samples(1)?;
    Ok(running_at_once)
}

/// The daemon stopped (SIGSTOP, every thread) until dropped.
struct Held(nix::unistd::Pid);

impl Held {
    fn stop(daemon: &Daemon) -> anyhow::Result<Self> {
        use nix::sys::signal::{Signal, kill};
        let pid = nix::unistd::Pid::from_raw(i32::try_from(daemon.pid())?);
        kill(pid, Signal::SIGSTOP).context("stopping the daemon")?;
        let held = Self(pid);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !all_threads_stopped(pid)? {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "the daemon's threads did not all stop"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(held)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGCONT);
    }
}

fn all_threads_stopped(pid: nix::unistd::Pid) -> anyhow::Result<bool> {
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let stat = std::fs::read_to_string(task?.path().join("stat"))?;
        let state = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next());
        if state != Some('T') {
            return Ok(false);
        }
    }
    Ok(true)
}

/// What a launcher of the crowd waits for.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Reading {
    /// The gate: its stdin.
    Stdin,
    /// The daemon's answer: any descriptor but stdin (a socket).
    Answer,
}

/// Waits until process `pid` is blocked reading what `reading` says (its
/// syscall in /proc is `read` or `recvfrom` on that descriptor). A process
/// answered and gone already is past it too.
fn wait_until_reading(pid: u32, reading: Reading) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let syscall = std::fs::read_to_string(format!("/proc/{pid}/syscall"))
            .with_context(|| format!("reading /proc/{pid}/syscall"))?;
        let mut fields = syscall.split_whitespace();
        let reads = fields.next().is_some_and(|number| {
            [libc::SYS_read, libc::SYS_recvfrom]
                .iter()
                .any(|n| n.to_string() == number)
        });
        let on_stdin = fields.next() == Some("0x0");
        if reads && on_stdin == (reading == Reading::Stdin) {
            return Ok(());
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if reading == Reading::Answer && stat.contains(") Z ") {
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "launcher {pid} never came to wait for {reading:?}: syscall {syscall:?}, stat {stat:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Issue 13, item 12: under `--api.private` the API socket shows each uid
/// its own jobs only (root all of them), as Slurm's `PrivateData=jobs`.
#[test]
fn the_private_api_shows_each_user_their_own_jobs() -> anyhow::Result<()> {
    const MINE: u32 = 4245;
    const THEIRS: u32 = 4246;
    if !require_root_or_skip() {
        return Ok(());
    }
    let binary = monitor_tests::daemon::binary()?;
    check_others_may_run(&binary)?;
    let daemon = Daemon::start_with(&["--api.private"])?;
    for (uid, jobid) in [(MINE, "mine"), (THEIRS, "theirs")] {
        let mut run = monitor_tests::launcher::monitor_run(daemon.socket())?;
        run.args(["--require", "--job-id", jobid, "--", "/bin/true"])
            .current_dir("/");
        run_as(&mut run, uid, uid);
        let output = run.output()?;
        assert!(
            output.status.success(),
            "uid {uid}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let (seen, metrics) = daemon.wait_for(10, |_| {
        jobs_named(&daemon, "theirs").is_ok_and(|jobs| !jobs.is_empty())
            && jobs_named(&daemon, "mine").is_ok_and(|jobs| !jobs.is_empty())
    })?;
    assert!(seen, "the jobs never showed:\n{}", metrics.text);
    let jobids = |uid: u32, args: &[&str]| -> anyhow::Result<(bool, String)> {
        let mut command = Command::new(&binary);
        command
            .args(args)
            .arg("--socket.path")
            .arg(daemon.socket())
            .current_dir("/");
        run_as(&mut command, uid, uid);
        let output = command.output()?;
        Ok((
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        ))
    };
    let (_, own) = jobids(MINE, &["jobs", "--json"])?;
    assert!(
        own.contains("\"mine\"") && !own.contains("\"theirs\""),
        "uid {MINE} sees: {own}"
    );
    let (found, _) = jobids(MINE, &["report", "theirs"])?;
    assert!(!found, "uid {MINE} got a report of another user's job");
    let (_, all) = jobids(0, &["jobs", "--json"])?;
    assert!(
        all.contains("\"mine\"") && all.contains("\"theirs\""),
        "root sees: {all}"
    );
    Ok(())
}

/// A controller of the v2 hierarchy to set a limit with, enabled in the
/// root's `cgroup.subtree_control` for the test (and disabled again after,
/// where the test enabled it).
struct V2Controller {
    mount: std::path::PathBuf,
    name: &'static str,
    enabled_here: bool,
}

impl V2Controller {
    /// The first of pids, memory and hugetlb the v2 hierarchy has (on a
    /// hybrid host the others are bound to v1 hierarchies).
    fn enable() -> anyhow::Result<Option<Self>> {
        let mount = cgroup::v2_mount()?;
        let read = |file: &str| std::fs::read_to_string(mount.join(file)).unwrap_or_default();
        let available = read("cgroup.controllers");
        let Some(name) = ["pids", "memory", "hugetlb"]
            .into_iter()
            .find(|c| available.split_whitespace().any(|a| a == *c))
        else {
            return Ok(None);
        };
        let enabled_here = !read("cgroup.subtree_control")
            .split_whitespace()
            .any(|c| c == name);
        if enabled_here {
            std::fs::write(mount.join("cgroup.subtree_control"), format!("+{name}"))
                .with_context(|| format!("enabling {name} in the v2 root"))?;
        }
        Ok(Some(Self {
            mount,
            name,
            enabled_here,
        }))
    }

    /// Sets a limit on cgroup `dir`: its file and value.
    fn limit(&self, dir: &Path) -> anyhow::Result<(String, String)> {
        let (file, value) = match self.name {
            "pids" => ("pids.max".to_string(), "1000"),
            "memory" => ("memory.max".to_string(), "1073741824"),
            _ => {
                let mut files: Vec<String> = std::fs::read_dir(dir)?
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|f| {
                        f.starts_with("hugetlb.") && f.ends_with(".max") && !f.contains("rsvd")
                    })
                    .collect();
                files.sort();
                (files.first().context("no hugetlb.*.max file")?.clone(), "0")
            }
        };
        std::fs::write(dir.join(&file), value)
            .with_context(|| format!("setting {file} of {}", dir.display()))?;
        Ok((file, value.to_string()))
    }
}

impl Drop for V2Controller {
    fn drop(&mut self) {
        if self.enabled_here {
            let _ = std::fs::write(
                self.mount.join("cgroup.subtree_control"),
                format!("-{}", self.name),
            );
        }
    }
}

/// Issue 13, item 8: a user's process bound by a cgroup v2 limit (here on
/// its parent, as systemd's TasksMax is on `user-UID.slice`) that
/// registers is not moved out of it into a task cgroup: the registration
/// is refused with the limit named, counted as `result="cgroup_limits"`,
/// and the command (run unmonitored) is still under the limit. A process
/// under no limit still registers.
#[test]
fn registering_never_takes_a_process_out_of_a_cgroup_limit() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    let Some(controller) = V2Controller::enable()? else {
        skip_or_fail("the v2 hierarchy has none of pids, memory, hugetlb to set a limit with");
        return Ok(());
    };
    let tree = Tree::new("hostile-limited")?;
    let (file, value) = controller.limit(&tree.0)?;
    let session = tree.0.join("session");
    std::fs::create_dir(&session)?;
    let daemon = Daemon::start()?;
    // (No such series before this change: the escape is what fails there.)
    let before = registrations(&daemon.metrics()?, "cgroup_limits").unwrap_or(0.0);

    let run = |require: bool| -> anyhow::Result<std::process::Output> {
        let mut run = monitor_tests::launcher::monitor_run(daemon.socket())?;
        if require {
            run.arg("--require");
        }
        run.args(["--job-id", "limited", "--", "/bin/sh", "-c"])
            .arg("sed -n 's/^0:://p' /proc/self/cgroup");
        // Joins the limited cgroup as root, then runs as nobody.
        cgroup::join_before_exec(&mut run, &session)?;
        Ok(run.as_nobody().output()?)
    };
    let output = run(false)?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let limited = in_hierarchy(&tree.0)?;
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        in_hierarchy(&session)?,
        "registering took the process out of {file} = {value} of {limited}; stderr: {stderr}"
    );
    assert!(
        stderr.contains(&file) && stderr.contains(&limited),
        "the refusal does not name the limit and its cgroup: {stderr}"
    );
    let output = run(true)?;
    assert!(
        !output.status.success(),
        "--require ran the command though it was not registered"
    );
    let metrics = daemon.metrics_after_samples(1)?;
    assert_eq!(registrations(&metrics, "cgroup_limits")?, before + 2.0);

    // Under no limit (the v2 root): registered as ever.
    let output = monitor_tests::launcher::monitor_run(daemon.socket())?
        .args(["--require", "--job-id", "unlimited", "--", "/bin/true"])
        .as_nobody()
        .output()?;
    assert!(
        output.status.success(),
        "a process under no limit was refused: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// Issue 13, item 9, the descendants' half: a registering process's
/// descendants are moved by pid number, and a number is free again once
/// its process is reaped. A user's launcher has many descendants (so the
/// daemon's moves take a while) and, last of them, a grandchild whose
/// parent reaps it. Once the daemon has listed the tree (its first move
/// shows it has), the grandchild is ended and reaped, and its pid is given
/// to a root process outside the tree (`ns_last_pid`, as CRIU restores
/// pids): the daemon must not move that process into the user's task
/// cgroup.
#[test]
fn a_descendants_pid_taken_by_another_process_during_the_move_is_not_moved() -> anyhow::Result<()> {
    // Enough that the daemon is still moving them while the test ends the
    // grandchild and hands its pid on (about 20 us a move here).
    const DESCENDANTS: usize = 1500;
    const SCRIPT: &str = r#"i=0
while [ "$i" -lt "$1" ]; do sleep 1000 & i=$((i + 1)); done
sh -c 'sleep 1000 & echo "doomed $!"; wait; exec sleep 1000' &
read _go
shift
exec "$@""#;
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    let daemon = Daemon::start()?;
    let binary = monitor_tests::daemon::binary()?;
    check_others_may_run(&binary)?;
    let tree = Tree::new("hostile-pid-reuse")?;
    let (session, bystanders) = (tree.0.join("session"), tree.0.join("bystanders"));
    std::fs::create_dir(&session)?;
    std::fs::create_dir(&bystanders)?;
    let source = in_hierarchy(&session)?;

    let mut peer = Command::new("/bin/sh");
    peer.args(["-c", SCRIPT, "peer", &DESCENDANTS.to_string()])
        .arg(&binary)
        .args(["run", "--socket.path"])
        .arg(daemon.socket())
        .args(["--require", "--job-id", "reused", "--"])
        .args(["/bin/sh", "-c", "echo registered; exec sleep 600"])
        .env_remove("MONITOR_SOCKET")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    for variable in monitor_tests::launcher::JOB_ID_VARIABLES {
        peer.env_remove(variable);
    }
    cgroup::join_before_exec(&mut peer, &session)?;
    let mut peer = monitor_tests::ChildGuard::spawn(peer.as_nobody(), "the launcher")?;
    let lines = peer.lines()?;
    let doomed: u32 = lines
        .expect("doomed", Duration::from_secs(120))?
        .parse()
        .context("the doomed grandchild's pid")?;
    // Every descendant is there (the doomed one's parent came last).
    let first = first_child(peer.id())?;
    peer.write_stdin(b"go\n")?;

    // The daemon lists and checks the whole tree before its first move.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while monitor_tests::launcher::cgroup_of(first)? == source {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the daemon never moved the launcher's first child"
        );
        std::thread::yield_now();
    }
    anyhow::ensure!(
        monitor_tests::launcher::cgroup_of(doomed)? == source,
        "the daemon moved the doomed grandchild before the test could end it: \
         more descendants are needed to hold it up"
    );
    // Listed just before the doomed one: while it has not moved, the
    // daemon has not come to the doomed pid either.
    let parent = parent_of(doomed)?;
    let doomed_pid = nix::unistd::Pid::from_raw(i32::try_from(doomed)?);
    nix::sys::signal::kill(doomed_pid, nix::sys::signal::Signal::SIGKILL)?;
    while Path::new(&format!("/proc/{doomed}")).exists() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the doomed grandchild was never reaped"
        );
        std::thread::yield_now();
    }
    let bystander = spawn_with_pid(doomed, &bystanders)?;
    anyhow::ensure!(
        monitor_tests::launcher::cgroup_of(parent)? == source,
        "the daemon came to pid {doomed} before the bystander took it: \
         more descendants are needed to hold it up"
    );

    // Answered: the daemon's moves are over.
    lines.expect("registered", Duration::from_secs(60))?;
    assert_eq!(
        monitor_tests::launcher::cgroup_of(bystander.id())?,
        in_hierarchy(&bystanders)?,
        "a root process that took pid {doomed} from the launcher's reaped grandchild \
         was moved into the user's task cgroup"
    );
    Ok(())
}

/// The parent of process `pid`, from /proc/PID/stat (after the command
/// name, which may hold spaces and parentheses).
fn parent_of(pid: u32) -> anyhow::Result<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    stat.rsplit_once(") ")
        .and_then(|(_, rest)| rest.split_whitespace().nth(1))
        .context("no parent in /proc/PID/stat")?
        .parse()
        .context("the parent's pid")
}

/// The first child of process `pid` (single-threaded).
fn first_child(pid: u32) -> anyhow::Result<u32> {
    let path = format!("/proc/{pid}/task/{pid}/children");
    std::fs::read_to_string(&path)
        .with_context(|| format!("reading {path}"))?
        .split_whitespace()
        .next()
        .with_context(|| format!("process {pid} has no children"))?
        .parse()
        .context("a child's pid")
}

/// A root process (`sleep`) in cgroup `dir` given pid `pid`, which must
/// be free: the kernel's last pid set just below it before the fork. Tried
/// a few times, as another process of the machine may fork in between.
fn spawn_with_pid(pid: u32, dir: &Path) -> anyhow::Result<monitor_tests::ChildGuard> {
    const ATTEMPTS: usize = 20;
    for _ in 0..ATTEMPTS {
        anyhow::ensure!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} was taken by another process of the machine first"
        );
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string())
            .context("setting /proc/sys/kernel/ns_last_pid")?;
        let mut command = Command::new("sleep");
        command.arg("600");
        cgroup::join_before_exec(&mut command, dir)?;
        let child = monitor_tests::ChildGuard::spawn(&mut command, "the bystander")?;
        if child.id() == pid {
            return Ok(child);
        }
    }
    anyhow::bail!("no fork got pid {pid} in {ATTEMPTS} attempts")
}
