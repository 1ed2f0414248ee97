//! The daemon under test: started on a free loopback port with its own
//! cgroup root, and stopped (SIGTERM, then SIGKILL) when dropped.
use std::{
    fs::{self, File},
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{Setup, http, metrics};

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(10);
/// Fixed for every benchmark: the sample period sets how fresh /metrics is.
const SAMPLE_INTERVAL: &str = "1s";
const SAMPLES: &str = "monitor_samples_total";

pub struct Daemon {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Daemon {
    /// Starts the daemon and waits until it serves /metrics (its programs are
    /// attached by then). `bpf_stats` turns on the kernel's run time counting.
    pub fn start(setup: &Setup, cgroup_root: &Path, bpf_stats: bool, label: &str) -> anyhow::Result<Self> {
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
        let addr = free_loopback_port()?;
        // Its own launcher socket, never the system's /run/monitor one.
        let socket = Self::socket_path(setup, label);
        let log = setup.logs.join(format!("daemon-{label}.log"));
        let log_file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let log_copy = log_file.try_clone().context("duplicating the daemon log fd")?;
        let mut cmd = Command::new(&setup.daemon);
        cmd.arg("daemon")
            .arg("--web.listen-address")
            .arg(addr.to_string())
            .arg("--cgroup.root")
            .arg(cgroup_root)
            .args(["--sample.interval", SAMPLE_INTERVAL])
            .arg("--socket.path")
            .arg(&socket)
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
        let mut daemon = Self { child, addr, log };
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

    pub fn metrics(&self) -> anyhow::Result<String> {
        http::get(self.addr, "/metrics")
    }

    /// Waits for `count` more samples of the kernel maps and returns the
    /// /metrics text right after the last one.
    pub fn next_samples(&mut self, count: u32) -> anyhow::Result<String> {
        let start = self.samples_taken(&self.metrics()?)?;
        let deadline = Instant::now() + Duration::from_secs(5 + 2 * u64::from(count));
        loop {
            self.check_alive()?;
            let text = self.metrics()?;
            if self.samples_taken(&text)? >= start + f64::from(count) {
                return Ok(text);
            }
            if Instant::now() > deadline {
                bail!(
                    "the daemon took no new sample for too long (log: {})",
                    self.log.display()
                );
            }
            thread::sleep(POLL);
        }
    }

    /// Waits until `ready(text)` holds for the daemon's /metrics.
    pub fn wait_for(&mut self, what: &str, timeout: Duration, ready: impl Fn(&str) -> bool) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive()?;
            let text = self.metrics()?;
            if ready(&text) {
                return Ok(text);
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

    /// Stops the daemon, failing if it does not exit cleanly.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.terminate()
    }

    fn samples_taken(&self, text: &str) -> anyhow::Result<f64> {
        metrics::value(text, SAMPLES).with_context(|| format!("{SAMPLES} missing from /metrics of {}", self.addr))
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.check_alive()?;
            if self.metrics().is_ok_and(|text| text.contains(SAMPLES)) {
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
            bail!("the daemon exited ({status}); its log:\n{}", log_tail(&self.log));
        }
        Ok(())
    }

    fn terminate(&mut self) -> anyhow::Result<()> {
        if self.child.try_wait().context("checking on the daemon")?.is_some() {
            return Ok(());
        }
        let pid = libc::pid_t::try_from(self.child.id()).context("daemon pid out of range")?;
        // SAFETY: signalling our own child, which has not been reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().context("waiting for the daemon")? {
                if status.success() {
                    return Ok(());
                }
                bail!(
                    "the daemon exited with {status} on SIGTERM; its log:\n{}",
                    log_tail(&self.log)
                );
            }
            thread::sleep(POLL);
        }
        self.child.kill().context("killing the daemon")?;
        self.child.wait().context("reaping the daemon")?;
        bail!("the daemon ignored SIGTERM for {STOP_TIMEOUT:?} and was killed")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Err(e) = self.terminate() {
            eprintln!("xtask: stopping the daemon: {e:#}");
        }
    }
}

/// A loopback port nobody listens on now (the daemon binds it right after).
fn free_loopback_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    listener.local_addr().context("reading the free port")
}

fn log_tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_else(|e| format!("(cannot read {}: {e})", log.display()));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
