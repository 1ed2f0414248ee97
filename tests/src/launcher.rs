//! The launcher socket from the outside: the daemon's one-line JSON
//! answers, registration counts, task cgroups, and who may run what.
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
use serde_json::Value;

use crate::{Daemon, cgroup, daemon, openmetrics::Metrics};

/// The longest a launcher (`fake_starter`, `monitor run`) may take.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// Samples (200 ms each) to wait for a job to show up or end.
pub const JOB_SAMPLES: u32 = 25;

/// Every `result` of `monitor_registrations_total`.
pub const RESULTS: [&str; 9] = [
    "ok",
    "silent",
    "untrusted",
    "invalid",
    "exited",
    "over_limit",
    "cgroup_limits",
    "rate_limited",
    "error",
];

/// One answer of the daemon: `{"ok":..,"job_id":..,"cgroup":..,"error":..}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub ok: bool,
    pub job_id: Option<String>,
    pub cgroup: Option<String>,
    pub error: Option<String>,
    /// The line as received.
    pub line: String,
}

impl Reply {
    /// Parses one answer line: a JSON object with a boolean `ok` and
    /// optional strings.
    pub fn parse(line: &str) -> anyhow::Result<Self> {
        let answer: Value = serde_json::from_str(line)
            .with_context(|| format!("the daemon's answer {line:?} is not JSON"))?;
        let fields = answer
            .as_object()
            .with_context(|| format!("the daemon's answer {line:?} is not a JSON object"))?;
        let Some(ok) = fields.get("ok").and_then(Value::as_bool) else {
            bail!(
                "answer {line:?}: \"ok\" is {:?}, not a boolean",
                fields.get("ok")
            );
        };
        let string = |key: &str| fields.get(key).and_then(Value::as_str).map(str::to_string);
        Ok(Self {
            ok,
            job_id: string("job_id"),
            cgroup: string("cgroup"),
            error: string("error"),
            line: line.to_string(),
        })
    }

    /// The answer printed by `fake_starter send` (`reply LINE`); `closed`
    /// and `error ...` are errors here.
    pub fn from_output(output: &str) -> anyhow::Result<Self> {
        let line = output
            .lines()
            .find_map(|l| l.strip_prefix("reply "))
            .with_context(|| {
                format!("no answer from the daemon; the launcher printed {output:?}")
            })?;
        Self::parse(line)
    }

    /// The error text of a refusal (fails for an `ok` answer).
    pub fn refusal(&self) -> anyhow::Result<&str> {
        if self.ok {
            bail!("expected a refusal, the daemon accepted: {}", self.line);
        }
        self.error
            .as_deref()
            .with_context(|| format!("a refusal without an error text: {}", self.line))
    }
}

/// `monitor_registrations_total{result}` in one scrape.
pub fn registrations(metrics: &Metrics, result: &str) -> anyhow::Result<f64> {
    metrics.value("monitor_registrations_total", &[("result", result)])
}

/// Every result's count, in the order of [`RESULTS`].
pub fn all_registrations(metrics: &Metrics) -> anyhow::Result<[f64; RESULTS.len()]> {
    let mut counts = [0.0; RESULTS.len()];
    for (count, result) in counts.iter_mut().zip(RESULTS) {
        *count = registrations(metrics, result)?;
    }
    Ok(counts)
}

/// The results whose count moved from `before` to `after`, and by how much.
pub fn counts_differ(
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
pub fn wait_for_outcomes(
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
pub fn wait_no_task_cgroups(daemon: &Daemon) -> anyhow::Result<()> {
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

/// Does `/metrics` show a job `jobid` (any state)?
pub fn has_job(metrics: &Metrics, jobid: &str) -> bool {
    metrics
        .matching("monitor_job_info", &[("jobid", jobid)])
        .next()
        .is_some()
}

/// The task cgroups the daemon made for registrations under `root`
/// (`task-<pid>-<n>`, or a spare `task-<n>` taken by one), sorted: not the
/// free spares it keeps ready.
pub fn task_cgroups(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(root)
        .with_context(|| format!("listing {}", root.display()))?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| e.file_name().to_string_lossy().starts_with("task-"))
        .map(|e| e.path())
        .filter(|dir| !is_free_spare(dir))
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// Whether `dir` is a spare task cgroup (`task-<n>`) no registration has
/// taken: the daemon writes its job's record on it when one does.
pub fn is_free_spare(dir: &Path) -> bool {
    let spare_name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("task-"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    spare_name && job_record(dir).is_none()
}

/// The `trusted.monitor.job` record on a task cgroup, if any.
pub fn job_record(dir: &Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt as _;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut buffer = vec![0u8; 8192];
    // SAFETY: NUL-terminated strings and a buffer of the length given.
    let length = unsafe {
        libc::getxattr(
            path.as_ptr(),
            c"trusted.monitor.job".as_ptr(),
            buffer.as_mut_ptr().cast(),
            buffer.len(),
        )
    };
    let length = usize::try_from(length).ok()?;
    buffer.truncate(length);
    String::from_utf8(buffer).ok()
}

/// The cgroup v2 path of a process (`0::` line of /proc/PID/cgroup).
pub fn cgroup_of(pid: u32) -> anyhow::Result<String> {
    let path = format!("/proc/{pid}/cgroup");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
        .with_context(|| format!("no cgroup v2 line in {path}: {text:?}"))
}

/// Open file descriptors of a process.
pub fn open_fds(pid: u32) -> anyhow::Result<usize> {
    let dir = format!("/proc/{pid}/fd");
    Ok(fs::read_dir(&dir)
        .with_context(|| format!("listing {dir}"))?
        .count())
}

/// What each open file descriptor of a process points at, sorted.
pub fn fd_targets(pid: u32) -> Vec<String> {
    let mut targets: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| fs::read_link(e.path()).ok())
                .map(|t| t.display().to_string())
                .collect()
        })
        .unwrap_or_default();
    targets.sort();
    targets
}

/// Fails unless `uid` 65534 (others) may execute `binary`: every directory
/// above it searchable, the file itself readable and executable by others.
pub fn check_others_may_run(binary: &Path) -> anyhow::Result<()> {
    let binary = binary
        .canonicalize()
        .with_context(|| format!("resolving {}", binary.display()))?;
    let mode = |p: &Path| -> anyhow::Result<u32> {
        Ok(fs::metadata(p)
            .with_context(|| format!("stat {}", p.display()))?
            .permissions()
            .mode())
    };
    if mode(&binary)? & 0o005 != 0o005 {
        bail!(
            "{} is not readable and executable by other users (mode {:o}): \
             the tests run it as nobody",
            binary.display(),
            mode(&binary)?
        );
    }
    for dir in binary.ancestors().skip(1) {
        if mode(dir)? & 0o001 == 0 {
            bail!(
                "{} is not searchable by other users (mode {:o}), so nobody cannot run {}",
                dir.display(),
                mode(dir)?,
                binary.display()
            );
        }
    }
    Ok(())
}

/// Both binaries, the daemon's and the launcher `starter`, run as nobody
/// in the caller: they must be reachable for uid 65534.
pub fn check_binaries_for_nobody(starter: impl AsRef<Path>) -> anyhow::Result<()> {
    check_others_may_run(&daemon::binary()?)?;
    check_others_may_run(starter.as_ref())
}

/// A scratch directory under /tmp (`monitor-test-<pid>-<name>`), removed
/// with everything in it when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("monitor-test-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Batch systems' job id variables, which `monitor run` reads.
pub const JOB_ID_VARIABLES: [&str; 4] = ["SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID", "FLUX_JOB_ID"];

/// `monitor run --socket.path SOCKET`, with no job id from the environment
/// (the caller adds its flags, `--` and the command).
pub fn monitor_run(socket: &Path) -> anyhow::Result<Command> {
    Ok(monitor_run_of(&daemon::binary()?, socket))
}

/// Like [`monitor_run`], with another copy of the binary.
pub fn monitor_run_of(program: &Path, socket: &Path) -> Command {
    let mut command = Command::new(program);
    command
        .arg("run")
        .arg("--socket.path")
        .arg(socket)
        .env_remove("MONITOR_SOCKET")
        .stdin(Stdio::null());
    for variable in JOB_ID_VARIABLES {
        command.env_remove(variable);
    }
    command
}

/// The daemon's cgroup root as the kernel names it in /proc/PID/cgroup
/// (`/monitor-test-...slice`).
pub fn in_hierarchy(dir: &Path) -> anyhow::Result<String> {
    let mount = cgroup::v2_mount()?;
    let relative = dir
        .strip_prefix(&mount)
        .with_context(|| format!("{} is not below {}", dir.display(), mount.display()))?;
    Ok(format!("/{}", relative.display()))
}

/// Connects to `socket` from this (untrusted) process and reads the one
/// answer: the refusal of an untrusted launcher.
pub fn untrusted_attempt(socket: &Path, timeout: Duration) -> anyhow::Result<Reply> {
    let stream = UnixStream::connect(socket)
        .with_context(|| format!("connecting to {}", socket.display()))?;
    stream.set_read_timeout(Some(timeout))?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .context("reading the daemon's answer")?;
    Reply::parse(&line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_answers() {
        let ok = Reply::parse(r#"{"ok":true,"job_id":"42","cgroup":"/m/task-1-2"}"#).unwrap();
        assert!(ok.ok);
        assert_eq!(ok.job_id.as_deref(), Some("42"));
        assert_eq!(ok.cgroup.as_deref(), Some("/m/task-1-2"));
        let refused = Reply::parse(r#"{"ok":false,"error":"a \"b\" \u00e9\n"}"#).unwrap();
        assert_eq!(refused.refusal().unwrap(), "a \"b\" é\n");
        assert!(ok.refusal().is_err());
        assert!(Reply::parse("garbage").is_err());
        assert!(Reply::parse(r#"{"job_id":"x"}"#).is_err());
        let printed = Reply::from_output("reply {\"ok\":false,\"error\":\"no\"}\n").unwrap();
        assert_eq!(printed.error.as_deref(), Some("no"));
        assert!(Reply::from_output("closed\n").is_err());
    }
}
