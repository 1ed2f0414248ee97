//! The daemon under test: started on a free loopback port with its own
//! cgroup root, pin path and state directory, and stopped (SIGTERM, then
//! SIGKILL) when dropped. Its programs stay pinned after a stop, so stopping
//! also unloads them (`monitor daemon --cleanup`): runs "without the daemon"
//! must have nothing attached, and no bench daemon may take up another's.
//! The port, the stop, the unload, HTTP and the parsing of /metrics are the
//! end-to-end tests' harness; what is the bench's own is the set-up (a log
//! file, its label, bpf_stats, a sample a second).
use std::{
    fs::{self, File},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use monitor_tests::{
    Metrics,
    daemon::{free_port, stop_process, unload_with},
    http,
};

use super::{Setup, cgroup, pinned::PinnedPrograms};

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(10);
/// Fixed for every benchmark: the sample period sets how fresh /metrics is.
const SAMPLE_INTERVAL: &str = "1s";
const SAMPLES: &str = "monitor_samples_total";
/// Where bench daemons pin their programs, each in its own directory.
const BPFFS: &str = "/sys/fs/bpf";

pub struct Daemon {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    binary: PathBuf,
    /// Its `--bpf.pin-path` and `--state.dir`, emptied when it stops.
    pin_path: PathBuf,
    state_dir: PathBuf,
}

/// The daemon's jobs by state, the series most waits watch.
pub const JOBS: &str = "monitor_jobs";

/// The daemon's count of jobs in `state` (`running`, `finished`), from a
/// scrape with [`JOBS`] parsed.
pub fn jobs_in_state(metrics: &Metrics, state: &str) -> Option<f64> {
    metrics.find(JOBS, &[("state", state)]).ok().flatten()
}

impl Daemon {
    /// Starts the daemon and waits until it serves /metrics (its programs are
    /// attached by then). `bpf_stats` turns on the kernel's run time counting.
    pub fn start(
        setup: &Setup,
        cgroup_root: &Path,
        bpf_stats: bool,
        label: &str,
    ) -> anyhow::Result<Self> {
        Self::start_with(setup, cgroup_root, bpf_stats, label, &[])
    }

    /// Like [`Daemon::start`], with more flags for `monitor daemon`.
    pub fn start_with(
        setup: &Setup,
        cgroup_root: &Path,
        bpf_stats: bool,
        label: &str,
        extra_args: &[&str],
    ) -> anyhow::Result<Self> {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        // Its own launcher socket, never the system's /run/monitor one.
        let socket = Self::socket_path(setup, label);
        let log = setup.logs.join(format!("daemon-{label}.log"));
        let log_file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let log_copy = log_file
            .try_clone()
            .context("duplicating the daemon log fd")?;
        // Named like the cgroup roots, so a killed run's leftovers can be told apart.
        let pin_path = Path::new(BPFFS).join(format!(
            "{}{}-{label}",
            cgroup::ROOT_PREFIX,
            std::process::id()
        ));
        let state_dir = setup.logs.join(format!("daemon-{label}.state"));
        // Leftovers of an earlier daemon with this label: not ours to take up.
        unload_with(&setup.daemon, &pin_path)?;
        remove_state(&state_dir)?;
        let mut cmd = Command::new(&setup.daemon);
        cmd.arg("daemon")
            .arg("--web.listen-address")
            .arg(addr.to_string())
            .arg("--cgroup.root")
            .arg(cgroup_root)
            .args(["--sample.interval", SAMPLE_INTERVAL])
            .arg("--socket.path")
            .arg(&socket)
            .arg("--bpf.pin-path")
            .arg(&pin_path)
            .arg("--state.dir")
            .arg(&state_dir)
            .args(extra_args)
            .env_remove("MONITOR_SOCKET")
            .stdin(Stdio::null())
            .stdout(log_copy)
            .stderr(log_file);
        if bpf_stats {
            cmd.arg("--bpf.stats");
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", setup.daemon.display()))?;
        let mut daemon = Self {
            child,
            addr,
            log,
            binary: setup.daemon.clone(),
            pin_path,
            state_dir,
        };
        daemon.wait_ready()?;
        Ok(daemon)
    }

    /// The launcher socket of the daemon started with `label`.
    pub fn socket_path(setup: &Setup, label: &str) -> PathBuf {
        setup.logs.join(format!("daemon-{label}.sock"))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its `--state.dir` (removed when it stops).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Its programs as pinned under its `--bpf.pin-path`.
    pub fn programs(&self) -> anyhow::Result<PinnedPrograms> {
        PinnedPrograms::find(&self.pin_path)
    }

    /// The /metrics text, as a scraper gets it.
    pub fn scrape(&self) -> anyhow::Result<String> {
        http::get(self.addr, "/metrics")
    }

    /// A scrape with the series named `names` parsed (and the samples
    /// taken); the rest is skipped, as a scrape of thousands of jobs is long.
    pub fn metrics(&self, names: &[&str]) -> anyhow::Result<Metrics> {
        let text = self.scrape()?;
        let names: Vec<&str> = names.iter().copied().chain([SAMPLES]).collect();
        Metrics::parse_only(&text, &names).context("parsing /metrics")
    }

    /// Waits for `count` more samples of the kernel maps and returns the
    /// series `names` of the /metrics right after the last one.
    pub fn next_samples(&mut self, count: u32, names: &[&str]) -> anyhow::Result<Metrics> {
        self.next_samples_every(count, POLL, names)
    }

    /// [`Daemon::next_samples`], reading /metrics every `poll`: with many
    /// jobs a scrape is work for the daemon, so a measurement of its own
    /// cost polls gently.
    pub fn next_samples_every(
        &mut self,
        count: u32,
        poll: Duration,
        names: &[&str],
    ) -> anyhow::Result<Metrics> {
        let start = self.samples_taken(&self.metrics(&[])?)?;
        let deadline = Instant::now() + Duration::from_secs(5 + 2 * u64::from(count));
        loop {
            self.check_alive()?;
            let metrics = self.metrics(names)?;
            if self.samples_taken(&metrics)? >= start + f64::from(count) {
                return Ok(metrics);
            }
            if Instant::now() > deadline {
                bail!(
                    "the daemon took no new sample for too long (log: {})",
                    self.log.display()
                );
            }
            thread::sleep(poll);
        }
    }

    /// Waits until `ready` holds for the series `names` of the daemon's
    /// /metrics.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        names: &[&str],
        ready: impl Fn(&Metrics) -> bool,
    ) -> anyhow::Result<Metrics> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive()?;
            let metrics = self.metrics(names)?;
            if ready(&metrics) {
                return Ok(metrics);
            }
            if Instant::now() > deadline {
                bail!(
                    "timed out after {timeout:?} waiting for {what} (log: {})",
                    self.log.display()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the daemon and unloads its programs, failing if it does not
    /// exit cleanly.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.terminate()?;
        self.tidy()
    }

    fn samples_taken(&self, metrics: &Metrics) -> anyhow::Result<f64> {
        metrics
            .find(SAMPLES, &[])?
            .with_context(|| format!("{SAMPLES} missing from /metrics of {}", self.addr))
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.check_alive()?;
            if self.scrape().is_ok_and(|text| text.contains(SAMPLES)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the daemon did not serve /metrics within {READY_TIMEOUT:?} (log: {})",
                    self.log.display()
                );
            }
            thread::sleep(POLL);
        }
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait().context("checking on the daemon")? {
            bail!(
                "the daemon exited ({status}); its log:\n{}",
                log_tail(&self.log)
            );
        }
        Ok(())
    }

    /// Stops the daemon if it runs; an error if it does not exit cleanly.
    fn terminate(&mut self) -> anyhow::Result<()> {
        if self
            .child
            .try_wait()
            .context("checking on the daemon")?
            .is_some()
        {
            return Ok(());
        }
        let status = stop_process(&mut self.child)?;
        if !status.success() {
            bail!(
                "the daemon exited with {status} on SIGTERM; its log:\n{}",
                log_tail(&self.log)
            );
        }
        Ok(())
    }

    /// Unloads the pinned programs and removes the state directory (after
    /// a stop; again harmless).
    fn tidy(&self) -> anyhow::Result<()> {
        unload_with(&self.binary, &self.pin_path)?;
        remove_state(&self.state_dir)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Err(e) = self.terminate() {
            eprintln!("xtask: stopping the daemon: {e:#}");
        }
        if let Err(e) = self.tidy() {
            eprintln!("xtask: cleaning up after the daemon: {e:#}");
        }
    }
}

/// Unloads the pin directories of earlier runs whose process is gone
/// (killed mid-run): their programs would go on counting.
pub fn remove_stale_pins(binary: &Path) -> anyhow::Result<()> {
    let Ok(entries) = fs::read_dir(BPFFS) else {
        // No bpffs yet: nothing was pinned.
        return Ok(());
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(cgroup::owner_pid) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!(
                "xtask: unloading {} left by an earlier run",
                entry.path().display()
            );
            unload_with(binary, &entry.path())?;
        }
    }
    Ok(())
}

fn remove_state(dir: &Path) -> anyhow::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", dir.display()))
        }
        _ => Ok(()),
    }
}

fn log_tail(log: &Path) -> String {
    let text =
        fs::read_to_string(log).unwrap_or_else(|e| format!("(cannot read {}: {e})", log.display()));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
