//! The daemon under test: started on a free loopback port with its own
//! cgroup root, stopped and cleaned up on drop. The free port, the stop and
//! the unload are the benchmarks' too (their daemons are set up otherwise).
use std::{
    io::Read as _,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use crate::{cgroup, cgroup::JobCgroup, openmetrics::Metrics, tls::Curl};

/// Short, so a test waits little for the daemon to read the kernel maps.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(200);
const SAMPLE_INTERVAL_FLAG: &str = "200ms";
/// Where the daemon serves its metrics (`--web.telemetry-path`).
pub const TELEMETRY_PATH: &str = "/metrics";
const START_TIMEOUT: Duration = Duration::from_secs(15);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The daemon binary: `MONITOR_BIN`, else the workspace's release build.
pub fn binary() -> anyhow::Result<PathBuf> {
    let path = match std::env::var_os("MONITOR_BIN") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/monitor"),
    };
    if !path.is_file() {
        bail!(
            "no daemon binary at {} (set MONITOR_BIN, or run `cargo xtask test`, which builds it with the kernel programs embedded)",
            path.display()
        );
    }
    Ok(path)
}

/// A free port on loopback, picked by the kernel (the daemon binds it
/// right after).
pub fn free_port() -> anyhow::Result<u16> {
    let listener =
        TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0 to find a free port")?;
    Ok(listener
        .local_addr()
        .context("reading the bound address")?
        .port())
}

/// A cgroup root no other test (or run) uses.
fn unique_root() -> anyhow::Result<PathBuf> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Ok(cgroup::v2_mount()?.join(format!("monitor-test-{}-{n}.slice", std::process::id())))
}

pub struct Daemon {
    child: Child,
    /// Everything after `monitor`, to start it again the same way.
    args: Vec<std::ffi::OsString>,
    /// Its `--bpf.pin-path` and `--state.dir`, its own unless the test gave them.
    pin_path: PathBuf,
    state_dir: PathBuf,
    address: SocketAddr,
    /// Its `--sample.interval`: SAMPLE_INTERVAL unless the test gave one.
    interval: Duration,
    root: PathBuf,
    socket: PathBuf,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// How the web port is reached when `--web.config.file` secures it
    /// (None: plain HTTP).
    client: Option<Curl>,
}

impl Daemon {
    /// Starts the daemon and waits until it has taken a sample and serves it.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(&[])
    }

    /// Like [`Daemon::start`], with more flags for `monitor daemon`. A
    /// `--socket.path` or `--sample.interval` (in `ms` or `s`) among them
    /// replaces the default.
    pub fn start_with(extra_args: &[&str]) -> anyhow::Result<Self> {
        Self::start_configured(extra_args, |_| {})
    }

    /// Like [`Daemon::start_with`], with the daemon's default discovery
    /// layouts (Slurm's) in force: test daemons otherwise run with
    /// `--discover.off` (see [`Daemon::start_configured`]).
    pub fn start_discovering(extra_args: &[&str]) -> anyhow::Result<Self> {
        Self::start_inner(extra_args, |_| {}, true, None)
    }

    /// Like [`Daemon::start_with`] for a daemon whose web port is secured
    /// (`--web.config.file` among the flags): `client` reaches it, for the
    /// start-up wait and every later scrape.
    pub fn start_secured(extra_args: &[&str], client: Curl) -> anyhow::Result<Self> {
        Self::start_inner(extra_args, |_| {}, false, Some(client))
    }

    /// Like [`Daemon::start_with`]; `configure` may change the command
    /// further (limits, environment) before it is spawned.
    pub fn start_configured(
        extra_args: &[&str],
        configure: impl FnOnce(&mut Command),
    ) -> anyhow::Result<Self> {
        Self::start_inner(extra_args, configure, false, None)
    }

    fn start_inner(
        extra_args: &[&str],
        configure: impl FnOnce(&mut Command),
        default_discovery: bool,
        client: Option<Curl>,
    ) -> anyhow::Result<Self> {
        let binary = binary()?;
        let root = unique_root()?;
        // A leftover of a crashed run with the same pid: not ours to keep.
        cgroup::remove_tree(&root)?;
        let address = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let socket = match extra_args.iter().position(|a| *a == "--socket.path") {
            Some(i) => PathBuf::from(
                extra_args
                    .get(i + 1)
                    .context("--socket.path without a value")?,
            ),
            // Named after the root, so parallel daemons never share a socket.
            None => std::env::temp_dir().join(
                root.with_extension("sock")
                    .file_name()
                    .context("root has a name")?,
            ),
        };
        let interval = match extra_args.iter().position(|a| *a == "--sample.interval") {
            Some(i) => parse_interval(
                extra_args
                    .get(i + 1)
                    .context("--sample.interval without a value")?,
            )?,
            None => SAMPLE_INTERVAL,
        };
        let name = root
            .file_stem()
            .context("root has a name")?
            .to_string_lossy()
            .into_owned();
        let pin_path = match flag_value(extra_args, "--bpf.pin-path")? {
            Some(path) => PathBuf::from(path),
            // Per daemon: parallel daemons must never take up each other's programs.
            None => Path::new("/sys/fs/bpf").join(&name),
        };
        let state_dir = match flag_value(extra_args, "--state.dir")? {
            Some(path) => PathBuf::from(path),
            None => std::env::temp_dir().join(format!("{name}.state")),
        };
        let mut args: Vec<std::ffi::OsString> = vec![
            "daemon".into(),
            "--web.listen-address".into(),
            address.to_string().into(),
            "--web.telemetry-path".into(),
            TELEMETRY_PATH.into(),
        ];
        if !extra_args.contains(&"--sample.interval") {
            args.extend(["--sample.interval".into(), SAMPLE_INTERVAL_FLAG.into()]);
        }
        args.extend([
            "--cgroup.root".into(),
            root.clone().into(),
            "--log.level".into(),
            "info".into(),
        ]);
        if !extra_args.contains(&"--socket.path") {
            args.extend(["--socket.path".into(), socket.clone().into()]);
        }
        if !extra_args.contains(&"--bpf.pin-path") {
            args.extend(["--bpf.pin-path".into(), pin_path.clone().into()]);
        }
        if !extra_args.contains(&"--state.dir") {
            args.extend(["--state.dir".into(), state_dir.clone().into()]);
        }
        if !default_discovery && !extra_args.iter().any(|a| a.starts_with("--discover.")) {
            // Test daemons run side by side: one that found another test's
            // resource-manager jobs would count jobs no test expects.
            args.push("--discover.off".into());
        }
        args.extend(extra_args.iter().map(Into::into));
        // Leftovers of a crashed run with the same pid: not ours to take up.
        unload(&pin_path)?;
        let _ = std::fs::remove_dir_all(&state_dir);
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let child = spawn(&binary, &args, &stderr, configure)?;
        let mut daemon = Self {
            child,
            args,
            pin_path,
            state_dir,
            address,
            interval,
            root,
            socket,
            stderr,
            client,
        };
        daemon.wait_until_ready()?;
        Ok(daemon)
    }

    /// Kills the daemon with SIGKILL (no chance to tidy up), and reaps it.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        self.child.kill().context("killing the daemon")?;
        self.child.wait().context("reaping the daemon")?;
        Ok(())
    }

    /// Stops the daemon with SIGTERM, as systemd does.
    pub fn terminate(&mut self) -> anyhow::Result<()> {
        self.stop()
    }

    /// Starts the (stopped or killed) daemon again with the same flags, and
    /// waits until it serves.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if self.running() {
            bail!("restart: the daemon is still running");
        }
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(b"--- restarted ---\n");
        self.child = spawn(&binary()?, &self.args, &self.stderr, |_| {})?;
        self.wait_until_ready()
    }

    /// Like [`Daemon::restart`], with `extra_args` added to its flags from
    /// now on: flags that change what is baked into the kernel programs
    /// (say `--bpf.max-tasks`) make it load a new set and unload the
    /// pinned one, as an upgrade to another build does.
    pub fn restart_with(&mut self, extra_args: &[&str]) -> anyhow::Result<()> {
        self.args.extend(extra_args.iter().map(Into::into));
        self.restart()
    }

    /// Its `--state.dir`.
    /// Like [`Daemon::restart`], with `flag`'s value replaced by `value`
    /// (added when absent) from now on.
    pub fn restart_replacing(&mut self, flag: &str, value: &str) -> anyhow::Result<()> {
        match self.args.iter().position(|a| a == flag) {
            Some(i) if i + 1 < self.args.len() => self.args[i + 1] = value.into(),
            _ => self.args.extend([flag.into(), value.into()]),
        }
        if flag == "--sample.interval" {
            self.interval = parse_interval(value)?;
        }
        self.restart()
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Its `--bpf.pin-path`.
    pub fn pin_path(&self) -> &Path {
        &self.pin_path
    }

    /// How often the daemon samples the kernel maps.
    pub fn sample_interval(&self) -> Duration {
        self.interval
    }

    /// The daemon's web address (loopback); it serves [`TELEMETRY_PATH`].
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Is the daemon process still running (not exited)?
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn wait_until_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(metrics) = self.metrics()
                && metrics
                    .find("monitor_samples_total", &[])?
                    .is_some_and(|n| n >= 1.0)
            {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait().context("checking the daemon")? {
                bail!(
                    "the daemon exited during start-up ({status}); its stderr:\n{}",
                    self.stderr()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "the daemon did not serve {TELEMETRY_PATH} on {} within {START_TIMEOUT:?}; its stderr:\n{}",
                    self.address,
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon's stderr so far.
    pub fn stderr(&self) -> String {
        let bytes = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// GETs `path` from the daemon's web port (the body of a 200 answer).
    pub fn get(&self, path: &str) -> anyhow::Result<String> {
        match &self.client {
            None => crate::http::get(self.address, path),
            Some(curl) => curl.get_ok(self.address, path),
        }
    }

    /// Like [`Daemon::get`], with the answer's next page (its Link header's
    /// `rel="next"` target; not read through a secured port's client).
    pub fn get_page(&self, path: &str) -> anyhow::Result<(String, Option<String>)> {
        match &self.client {
            None => crate::http::get_page(self.address, path),
            Some(curl) => Ok((curl.get_ok(self.address, path)?, None)),
        }
    }

    /// The daemon's launcher socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The cgroup directory whose children are jobs.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Makes a job cgroup (after the daemon is up, so it sees the mkdir).
    pub fn create_job(&self, name: &str) -> anyhow::Result<JobCgroup> {
        JobCgroup::create(&self.root, name)
    }

    /// One scrape of the telemetry path, parsed.
    pub fn metrics(&self) -> anyhow::Result<Metrics> {
        let text = self
            .get(TELEMETRY_PATH)
            .with_context(|| format!("scraping the daemon; its stderr:\n{}", self.stderr()))?;
        Metrics::parse(&text).context("parsing /metrics")
    }

    /// A scrape taken after the daemon completed `samples` more samples
    /// (so everything that happened before this call has been read).
    pub fn metrics_after_samples(&self, samples: u32) -> anyhow::Result<Metrics> {
        let (_, metrics) = self.wait_for(samples, |_| false)?;
        Ok(metrics)
    }

    /// Scrapes until `done` holds, for at most `samples` more samples; the
    /// last scrape either way (a stuck sampler is an error).
    pub fn wait_for(
        &self,
        samples: u32,
        mut done: impl FnMut(&Metrics) -> bool,
    ) -> anyhow::Result<(bool, Metrics)> {
        let target = self.samples_taken()? + f64::from(samples);
        let deadline = Instant::now() + self.interval * (samples * 5) + Duration::from_secs(5);
        loop {
            let metrics = self.metrics()?;
            if done(&metrics) {
                return Ok((true, metrics));
            }
            if metrics.value("monitor_samples_total", &[])? >= target {
                return Ok((false, metrics));
            }
            if Instant::now() >= deadline {
                bail!(
                    "the daemon took fewer than {samples} samples by the deadline; its stderr:\n{}",
                    self.stderr()
                );
            }
            thread::sleep(SAMPLE_INTERVAL.min(self.interval) / 4);
        }
    }

    /// The first scrape showing a sample the daemon completed after this
    /// call began, polled every few milliseconds: it is that young when it
    /// returns (plus the sample's own tail after it read the kernel).
    pub fn next_sample(&self) -> anyhow::Result<Metrics> {
        const POLL: Duration = Duration::from_millis(3);
        let before = self.samples_taken()?;
        let deadline = Instant::now() + self.interval * 5 + Duration::from_secs(5);
        loop {
            thread::sleep(POLL);
            let metrics = self.metrics()?;
            if metrics.value("monitor_samples_total", &[])? > before {
                return Ok(metrics);
            }
            if Instant::now() >= deadline {
                bail!(
                    "the daemon took no sample by the deadline; its stderr:\n{}",
                    self.stderr()
                );
            }
        }
    }

    /// Ends `job` (removes its cgroup: its processes must have exited),
    /// waits until /metrics shows it finished, and returns a scrape
    /// `samples` samples later: the job's final figures.
    pub fn finish_job(&self, job: &JobCgroup, samples: u32) -> anyhow::Result<Metrics> {
        job.remove()?;
        let finished = [("jobid", job.name.as_str()), ("state", "finished")];
        let (seen, metrics) = self.wait_for(20, |m| {
            m.find("monitor_job_info", &finished)
                .is_ok_and(|v| v.is_some())
        })?;
        if !seen {
            bail!(
                "job {} is not in /metrics as finished 20 samples after its cgroup was removed:\n{}",
                job.name,
                metrics.text
            );
        }
        self.metrics_after_samples(samples)
    }

    /// Waits (at most `samples` more samples) for a series `name` with
    /// `labels` to appear; fails with the last scrape if it does not.
    pub fn wait_for_series(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        samples: u32,
    ) -> anyhow::Result<Metrics> {
        let (seen, metrics) =
            self.wait_for(samples, |m| m.matching(name, labels).next().is_some())?;
        if !seen {
            bail!(
                "no {name} {labels:?} in /metrics after {samples} samples:\n{}\n--- daemon stderr ---\n{}",
                metrics.text,
                self.stderr()
            );
        }
        Ok(metrics)
    }

    /// The daemon still runs, still samples and still serves /metrics: a
    /// scrape taken after one more sample.
    pub fn still_serving(&mut self) -> anyhow::Result<Metrics> {
        if let Some(status) = self.child.try_wait().context("checking the daemon")? {
            bail!("the daemon died ({status}); its stderr:\n{}", self.stderr());
        }
        self.metrics_after_samples(1)
            .context("the daemon stopped serving /metrics or sampling")
    }

    fn samples_taken(&self) -> anyhow::Result<f64> {
        self.metrics()?.value("monitor_samples_total", &[])
    }
}

/// A `--sample.interval` value the tests use: `250ms`, `1s`.
fn parse_interval(text: &str) -> anyhow::Result<Duration> {
    let number = |digits: &str| {
        digits
            .parse::<u64>()
            .with_context(|| format!("bad --sample.interval {text:?} (the tests give ms or s)"))
    };
    match text.strip_suffix("ms") {
        Some(ms) => Ok(Duration::from_millis(number(ms)?)),
        None => Ok(Duration::from_secs(number(
            text.strip_suffix('s').unwrap_or(text),
        )?)),
    }
}

/// The value after `flag` among `args`, if the flag is there.
fn flag_value<'a>(args: &[&'a str], flag: &str) -> anyhow::Result<Option<&'a str>> {
    match args.iter().position(|a| *a == flag) {
        Some(i) => Ok(Some(
            args.get(i + 1)
                .with_context(|| format!("{flag} without a value"))?,
        )),
        None => Ok(None),
    }
}

/// Starts `binary` with `args`, its stderr collected into `stderr`.
fn spawn(
    binary: &Path,
    args: &[std::ffi::OsString],
    stderr: &Arc<Mutex<Vec<u8>>>,
    configure: impl FnOnce(&mut Command),
) -> anyhow::Result<Child> {
    let mut command = Command::new(binary);
    command
        .args(args)
        .env_remove("MONITOR_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    configure(&mut command);
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    collect_stderr(&mut child, stderr.clone());
    Ok(child)
}

/// Copies the daemon's stderr into `sink` on a thread until the pipe closes.
fn collect_stderr(child: &mut Child, sink: Arc<Mutex<Vec<u8>>>) {
    let Some(mut pipe) = child.stderr.take() else {
        return;
    };
    thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut chunk) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(&chunk[..n]);
        }
    });
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("stopping the daemon: {e:#}");
        }
        // The programs stay pinned after a stop: unload them, as an admin would.
        if let Err(e) = unload(&self.pin_path) {
            eprintln!("unloading the daemon's programs: {e:#}");
        }
        if let Err(e) = std::fs::remove_dir_all(&self.state_dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("removing {}: {e}", self.state_dir.display());
        }
        if let Err(e) = cgroup::remove_tree(&self.root) {
            eprintln!("cleaning up {}: {e:#}", self.root.display());
        }
        if thread::panicking() {
            eprintln!(
                "--- daemon stderr ---\n{}--- end of daemon stderr ---",
                self.stderr()
            );
        }
    }
}

/// `monitor daemon --cleanup` for a pin path.
pub fn unload(pin_path: &Path) -> anyhow::Result<()> {
    unload_with(&binary()?, pin_path)
}

/// `monitor daemon --cleanup` for a pin path, by the daemon binary
/// `binary` (nothing pinned there is fine).
pub fn unload_with(binary: &Path, pin_path: &Path) -> anyhow::Result<()> {
    let output = Command::new(binary)
        .args(["daemon", "--cleanup", "--bpf.pin-path"])
        .arg(pin_path)
        .stdin(Stdio::null())
        .output()
        .context("running monitor daemon --cleanup")?;
    if !output.status.success() {
        bail!(
            "monitor daemon --cleanup --bpf.pin-path {} failed ({}): {}",
            pin_path.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Stops a daemon process as systemd does: SIGTERM, then a wait; SIGKILL
/// (an error) if it does not go within STOP_TIMEOUT. Its exit status, or
/// the one it had already exited with.
pub fn stop_process(child: &mut Child) -> anyhow::Result<ExitStatus> {
    if let Some(status) = child.try_wait().context("checking the daemon")? {
        return Ok(status);
    }
    let pid = Pid::from_raw(i32::try_from(child.id()).context("pid out of range")?);
    kill(pid, Signal::SIGTERM).context("sending SIGTERM to the daemon")?;
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().context("waiting for the daemon")? {
            return Ok(status);
        }
        thread::sleep(Duration::from_millis(10));
    }
    child.kill().context("killing the daemon")?;
    child.wait().context("reaping the daemon")?;
    bail!("the daemon ignored SIGTERM for {STOP_TIMEOUT:?} and was killed")
}

impl Daemon {
    /// SIGTERM, then wait; SIGKILL if it does not go within STOP_TIMEOUT.
    fn stop(&mut self) -> anyhow::Result<()> {
        stop_process(&mut self.child).map(drop)
    }
}
