//! The real Prometheus server (Debian's `prometheus` package, which
//! `cargo xtask test` installs) scraping a daemon on loopback, with its own
//! configuration and database in a scratch directory; queried over its
//! HTTP API.
use std::{
    fs::{self, File},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::{daemon::free_port, http, launcher::TempDir, policy::skip_or_fail};

const START_TIMEOUT: Duration = Duration::from_secs(60);
/// The `job` label Prometheus gives the daemon's samples (`up{job="monitor"}`).
pub const SCRAPE_JOB: &str = "monitor";

/// The `prometheus` server binary on PATH, if installed.
pub fn binary() -> Option<PathBuf> {
    on_path("prometheus")
}

/// promtool on PATH (`cargo xtask test` installs Debian's prometheus package).
pub fn promtool() -> Option<PathBuf> {
    on_path("promtool")
}

/// [`promtool`], or a skip (a failure under `CI=true`) saying how to install it.
pub fn promtool_or_skip() -> Option<PathBuf> {
    let found = promtool();
    if found.is_none() {
        skip_or_fail(
            "promtool is not on PATH (cargo xtask test installs it: apt-get install prometheus)",
        );
    }
    found
}

/// The executable `name` in a directory of PATH, if any.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A running Prometheus, SIGKILLed and its directory (configuration, log
/// and database) removed on drop.
pub struct Prometheus {
    child: Child,
    address: SocketAddr,
    log: PathBuf,
    /// Declared after `child`, dropped after the kill: nothing writes to it then.
    dir: TempDir,
}

impl Prometheus {
    /// Starts `binary` on a free loopback port, scraping `target` at `path`
    /// every `interval` (job name [`SCRAPE_JOB`]), and waits until it is ready.
    pub fn start(
        binary: &PathBuf,
        target: SocketAddr,
        path: &str,
        interval: Duration,
    ) -> anyhow::Result<Self> {
        Self::start_scraping(binary, target, path, interval, "")
    }

    /// Like [`Prometheus::start`], with more lines for the scrape config
    /// (`scheme`, `tls_config`, `basic_auth`), each indented by four spaces.
    pub fn start_scraping(
        binary: &PathBuf,
        target: SocketAddr,
        path: &str,
        interval: Duration,
        scrape_lines: &str,
    ) -> anyhow::Result<Self> {
        Self::start_scraping_all(binary, &[target], path, interval, scrape_lines)
    }

    /// Like [`Prometheus::start_scraping`], with several targets in the one
    /// scrape job: several nodes' daemons, each its own `instance`.
    pub fn start_scraping_all(
        binary: &PathBuf,
        targets: &[SocketAddr],
        path: &str,
        interval: Duration,
        scrape_lines: &str,
    ) -> anyhow::Result<Self> {
        if targets.is_empty() {
            bail!("prometheus needs at least one target to scrape");
        }
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let targets = targets.join(", ");
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = TempDir::new(&format!(
            "prometheus-{}",
            NEXT.fetch_add(1, Ordering::Relaxed)
        ))?;
        let config = dir.0.join("prometheus.yml");
        let seconds = format!("{}ms", interval.as_millis());
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: {seconds}\n  scrape_timeout: {seconds}\n\
                 scrape_configs:\n  - job_name: {SCRAPE_JOB}\n    metrics_path: {path}\n{scrape_lines}    \
                 static_configs:\n      - targets: [{targets}]\n"
            ),
        )
        .with_context(|| format!("writing {}", config.display()))?;
        let log = dir.0.join("prometheus.log");
        let log_file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let address = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let mut command = Command::new(binary);
        command
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.0.join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().context("duplicating the log file")?)
            .stderr(log_file);
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut prometheus = Self {
            child,
            address,
            log,
            dir,
        };
        prometheus.wait_until_ready()?;
        Ok(prometheus)
    }

    fn wait_until_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        while http::get(self.address, "/-/ready").is_err() {
            if let Some(status) = self.child.try_wait().context("checking prometheus")? {
                bail!(
                    "prometheus exited during start-up ({status}); its log:\n{}",
                    self.log()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "prometheus was not ready on {} within {START_TIMEOUT:?}; its log:\n{}",
                    self.address,
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Where it serves its HTTP API.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Its output so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(unreadable: {e})"))
    }

    /// An instant query (`/api/v1/query`): the `data.result` vector.
    pub fn query(&self, promql: &str) -> anyhow::Result<Vec<Value>> {
        let path = format!("/api/v1/query?query={}", http::encode_query_value(promql));
        let body = http::get(self.address, &path)
            .with_context(|| format!("querying prometheus for {promql}"))?;
        let answer: Value = serde_json::from_str(&body)
            .with_context(|| format!("prometheus answered {promql} with no JSON: {body}"))?;
        if answer["status"] != "success" {
            bail!("prometheus failed {promql}: {answer}");
        }
        answer["data"]["result"]
            .as_array()
            .cloned()
            .with_context(|| format!("{promql} gave no result vector: {answer}"))
    }

    /// Waits until Prometheus has scraped its target successfully
    /// (`up{job="monitor"} == 1`), at most `timeout`.
    pub fn wait_for_scrape(&self, timeout: Duration) -> anyhow::Result<()> {
        self.wait_for_targets(1, timeout)
    }

    /// Waits until Prometheus has scraped `targets` targets successfully,
    /// at most `timeout`.
    pub fn wait_for_targets(&self, targets: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let up = format!("up{{job=\"{SCRAPE_JOB}\"}} == 1");
        loop {
            if self.query(&up)?.len() >= targets {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "prometheus did not scrape {targets} target(s) successfully within {timeout:?} \
                     (up: {:?}); its log:\n{}",
                    self.query(&format!("up{{job=\"{SCRAPE_JOB}\"}}")),
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The value of one sample of a query result (`"value": [time, "text"]`).
pub fn sample_value(sample: &Value) -> anyhow::Result<f64> {
    sample["value"][1]
        .as_str()
        .and_then(|text| text.parse().ok())
        .with_context(|| format!("no value in the sample {sample}"))
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!(
                "--- prometheus log ({}) ---\n{}--- end of prometheus log ---",
                self.dir.0.display(),
                self.log()
            );
        }
    }
}
