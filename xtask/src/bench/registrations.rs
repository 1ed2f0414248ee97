//! Benchmark 4: launcher registrations over the daemon's socket.
//!
//! 100 launchers (separate processes: this binary re-executed as a hidden
//! `bench --registration-launcher SOCKET` worker, trusted with
//! `--trust.path`) start together and each registers N times in a row:
//! connect, send `{"job_id":"bench-<launcher>-<n>"}`, read the answer,
//! close. Each registration makes a task cgroup and moves the launcher into
//! it (its previous job, now empty, ends at the next sample). Latency is
//! connect to answer received, per registration; throughput is all
//! registrations over the time from the first launcher's start to the last
//! one's end. Then, for reference, one launcher alone (no queueing).
use std::{
    io::{BufRead, BufReader, Read as _, Write as _},
    os::unix::net::UnixStream,
    path::Path,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{
    BenchArgs, Setup,
    cgroup::Root,
    daemon::Daemon,
    metrics,
    stats::{median, percentile},
};

/// Registrations of the launcher that runs alone, per round.
pub const SOLO_REGISTRATIONS: u32 = 200;
/// The paced run: every launcher registers this often...
pub const PACED_INTERVAL: Duration = Duration::from_millis(100);
/// ...this many times (100 launchers: 1,000 registrations/s for 2 s).
pub const PACED_REGISTRATIONS: u32 = 20;
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
const LABEL: &str = "registrations";

#[derive(Debug, Clone)]
pub struct RegistrationRound {
    pub registrations: usize,
    pub failures: usize,
    /// First launcher's start to last launcher's end.
    pub wall_s: f64,
    /// Every registration's latency, milliseconds.
    pub latency_ms: Vec<f64>,
    /// The lone launcher's latencies, milliseconds.
    pub solo_ms: Vec<f64>,
    /// The paced launchers' latencies (from when each registration was
    /// due), milliseconds.
    pub paced_ms: Vec<f64>,
    /// Registrations per second the paced launchers achieved.
    pub paced_per_second: f64,
}

impl RegistrationRound {
    pub fn per_second(&self) -> f64 {
        self.registrations as f64 / self.wall_s
    }

    pub fn p50_ms(&self) -> f64 {
        percentile(&self.latency_ms, 50.0).unwrap_or(f64::NAN)
    }

    pub fn p99_ms(&self) -> f64 {
        percentile(&self.latency_ms, 99.0).unwrap_or(f64::NAN)
    }

    pub fn max_ms(&self) -> f64 {
        self.latency_ms.iter().copied().fold(f64::NAN, f64::max)
    }

    pub fn solo_p50_ms(&self) -> f64 {
        percentile(&self.solo_ms, 50.0).unwrap_or(f64::NAN)
    }

    pub fn solo_p99_ms(&self) -> f64 {
        percentile(&self.solo_ms, 99.0).unwrap_or(f64::NAN)
    }

    pub fn paced_p50_ms(&self) -> f64 {
        percentile(&self.paced_ms, 50.0).unwrap_or(f64::NAN)
    }

    pub fn paced_p99_ms(&self) -> f64 {
        percentile(&self.paced_ms, 99.0).unwrap_or(f64::NAN)
    }
}

#[derive(Debug)]
pub struct RegistrationResult {
    pub launchers: u32,
    pub per_launcher: u32,
    pub rounds: Vec<RegistrationRound>,
    /// A failed registration's answer, if any failed.
    pub first_failure: Option<String>,
}

impl RegistrationResult {
    fn median_of(&self, f: impl Fn(&RegistrationRound) -> f64) -> f64 {
        median(&self.rounds.iter().map(f).collect::<Vec<_>>()).unwrap_or(f64::NAN)
    }

    pub fn per_second(&self) -> f64 {
        self.median_of(RegistrationRound::per_second)
    }

    pub fn p50_ms(&self) -> f64 {
        self.median_of(RegistrationRound::p50_ms)
    }

    pub fn p99_ms(&self) -> f64 {
        self.median_of(RegistrationRound::p99_ms)
    }

    pub fn solo_p50_ms(&self) -> f64 {
        self.median_of(RegistrationRound::solo_p50_ms)
    }

    pub fn solo_p99_ms(&self) -> f64 {
        self.median_of(RegistrationRound::solo_p99_ms)
    }

    pub fn paced_per_second(&self) -> f64 {
        self.median_of(|r| r.paced_per_second)
    }

    pub fn paced_p50_ms(&self) -> f64 {
        self.median_of(RegistrationRound::paced_p50_ms)
    }

    pub fn paced_p99_ms(&self) -> f64 {
        self.median_of(RegistrationRound::paced_p99_ms)
    }

    pub fn failures(&self) -> usize {
        self.rounds.iter().map(|r| r.failures).sum()
    }
}

pub fn run(setup: &Setup, args: &BenchArgs) -> anyhow::Result<RegistrationResult> {
    let me = std::env::current_exe().context("finding the xtask binary")?;
    let me_arg = me.to_str().context("xtask path not UTF-8")?.to_string();
    let root = Root::create(&setup.cgroup_mount, LABEL)?;
    // Finished jobs are of no interest here: a short retention keeps
    // thousands of them from piling up in every snapshot.
    let mut daemon = Daemon::start_with(
        setup,
        root.path(),
        false,
        LABEL,
        &["--trust.path", &me_arg, "--job.retention", "2s"],
    )?;
    let socket = Daemon::socket_path(setup, LABEL);
    let mut result = RegistrationResult {
        launchers: args.launchers,
        per_launcher: args.registrations_per_launcher,
        rounds: Vec::new(),
        first_failure: None,
    };
    for round in 1..=args.rounds {
        let back_to_back = Pace::BackToBack;
        let (mut concurrent, failure) = registrations(
            &me,
            &socket,
            args.launchers,
            args.registrations_per_launcher,
            round,
            back_to_back,
        )?;
        wait_all_ended(&mut daemon)?;
        let (solo, solo_failure) = registrations(
            &me,
            &socket,
            1,
            SOLO_REGISTRATIONS,
            round + 1000,
            back_to_back,
        )?;
        wait_all_ended(&mut daemon)?;
        let (paced, paced_failure) = registrations(
            &me,
            &socket,
            args.launchers,
            PACED_REGISTRATIONS,
            round + 2000,
            Pace::Every(PACED_INTERVAL),
        )?;
        wait_all_ended(&mut daemon)?;
        concurrent.solo_ms = solo.latency_ms;
        concurrent.paced_ms = paced.latency_ms.clone();
        concurrent.paced_per_second = paced.per_second();
        concurrent.failures += solo.failures + paced.failures;
        result.first_failure = result
            .first_failure
            .or(failure)
            .or(solo_failure)
            .or(paced_failure);
        eprintln!(
            "xtask:   round {round}: {} registrations in {:.2} s = {:.0}/s, latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; \
             alone p50 {:.2} ms, p99 {:.2} ms; paced at {:.0}/s: p50 {:.2} ms, p99 {:.2} ms; {} failed",
            concurrent.registrations,
            concurrent.wall_s,
            concurrent.per_second(),
            concurrent.p50_ms(),
            concurrent.p99_ms(),
            concurrent.max_ms(),
            concurrent.solo_p50_ms(),
            concurrent.solo_p99_ms(),
            concurrent.paced_per_second,
            concurrent.paced_p50_ms(),
            concurrent.paced_p99_ms(),
            concurrent.failures
        );
        result.rounds.push(concurrent);
    }
    if let Some(failure) = &result.first_failure {
        eprintln!("xtask:   a registration failed: {failure}");
    }
    daemon.stop()?;
    Ok(result)
}

/// Waits until every job of the round has ended (its launchers exited), so
/// rounds start alike.
fn wait_all_ended(daemon: &mut Daemon) -> anyhow::Result<()> {
    daemon.wait_for(
        "every registered job to end",
        Duration::from_secs(60),
        |text| metrics::value(text, "monitor_jobs{state=\"running\"}") == Some(0.0),
    )?;
    Ok(())
}

struct Launcher {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Drop for Launcher {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// How a launcher spaces its registrations.
#[derive(Debug, Clone, Copy)]
enum Pace {
    /// The next as soon as the last is answered (a closed loop).
    BackToBack,
    /// One every interval, whatever the answers take (an open loop); the
    /// launchers' schedules are spread evenly over the interval.
    Every(Duration),
}

/// `launchers` processes, started together, `each` registrations each.
fn registrations(
    me: &Path,
    socket: &Path,
    launchers: u32,
    each: u32,
    round: u32,
    pace: Pace,
) -> anyhow::Result<(RegistrationRound, Option<String>)> {
    let mut running = Vec::new();
    for index in 0..launchers {
        let (interval_us, offset_us) = match pace {
            Pace::BackToBack => (0, 0),
            Pace::Every(interval) => {
                let us = interval.as_micros() as u64;
                (us, us * u64::from(index) / u64::from(launchers))
            }
        };
        let mut child = Command::new(me)
            .arg("bench")
            .arg("--registration-launcher")
            .arg(socket)
            .args(["--launcher-index", &(round * 100_000 + index).to_string()])
            .args(["--registrations-per-launcher", &each.to_string()])
            .args(["--launcher-interval-us", &interval_us.to_string()])
            .args(["--launcher-offset-us", &offset_us.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting launcher {index}"))?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().context("launcher stdout")?);
        running.push(Launcher {
            child,
            stdin,
            stdout,
        });
    }
    // Everyone ready (started, runtime up), then everyone goes at once.
    for launcher in &mut running {
        expect_line(&mut launcher.stdout, "ready")?;
    }
    for launcher in &mut running {
        let mut stdin = launcher.stdin.take().context("launcher stdin")?;
        stdin.write_all(b"go\n").context("starting a launcher")?;
    }
    let mut round_result = RegistrationRound {
        registrations: 0,
        failures: 0,
        wall_s: 0.0,
        latency_ms: Vec::new(),
        solo_ms: Vec::new(),
        paced_ms: Vec::new(),
        paced_per_second: f64::NAN,
    };
    let (mut first_start, mut last_end) = (u64::MAX, 0u64);
    let mut failure = None;
    for mut launcher in running {
        let line = expect_line(&mut launcher.stdout, "result")?;
        let report = LauncherReport::parse(&line)?;
        first_start = first_start.min(report.start_ns);
        last_end = last_end.max(report.end_ns);
        round_result.registrations += report.latencies_ns.len();
        round_result.failures += report.failures;
        round_result
            .latency_ms
            .extend(report.latencies_ns.iter().map(|ns| *ns as f64 / 1e6));
        if failure.is_none() && report.failures > 0 {
            let mut rest = String::new();
            let _ = launcher.stdout.read_to_string(&mut rest);
            failure = Some(rest.trim().to_string());
        }
        let status = launcher.child.wait().context("waiting for a launcher")?;
        if !status.success() {
            bail!("a registration launcher failed: {status}");
        }
    }
    round_result.wall_s = last_end.saturating_sub(first_start) as f64 / 1e9;
    Ok((round_result, failure))
}

fn expect_line(reader: &mut impl BufRead, prefix: &str) -> anyhow::Result<String> {
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .context("reading from a launcher")?;
    if !line.starts_with(prefix) {
        bail!("a launcher said {line:?}, expected {prefix}");
    }
    Ok(line.trim_end().to_string())
}

/// `result START_NS END_NS FAILURES LAT_NS,LAT_NS,...` (CLOCK_MONOTONIC,
/// which all processes share). Latencies of successful registrations only.
#[derive(Debug, PartialEq)]
struct LauncherReport {
    start_ns: u64,
    end_ns: u64,
    failures: usize,
    latencies_ns: Vec<u64>,
}

impl LauncherReport {
    fn line(&self) -> String {
        let latencies: Vec<String> = self.latencies_ns.iter().map(u64::to_string).collect();
        format!(
            "result {} {} {} {}",
            self.start_ns,
            self.end_ns,
            self.failures,
            latencies.join(",")
        )
    }

    fn parse(line: &str) -> anyhow::Result<Self> {
        let mut fields = line.split(' ');
        let tag = fields.next();
        let mut number = |what: &str| -> anyhow::Result<u64> {
            fields
                .next()
                .with_context(|| format!("no {what} in {line:?}"))?
                .parse()
                .with_context(|| format!("bad {what} in {line:?}"))
        };
        if tag != Some("result") {
            bail!("not a launcher result: {line:?}");
        }
        let start_ns = number("start")?;
        let end_ns = number("end")?;
        let failures = usize::try_from(number("failures")?)?;
        let latencies_ns = fields
            .next()
            .unwrap_or_default()
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().with_context(|| format!("bad latency {s:?}")))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            start_ns,
            end_ns,
            failures,
            latencies_ns,
        })
    }
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The hidden worker (`xtask bench --registration-launcher SOCKET`): says
/// `ready`, waits for a line on stdin, registers `count` times (back to
/// back, or one every `interval_us` from `offset_us` on), prints its
/// [`LauncherReport`] and, if any failed, the first failed answer. A paced
/// registration's latency counts from when it was due, so a daemon that
/// falls behind is not flattered (no coordinated omission).
pub fn launcher_main(
    socket: &Path,
    index: u32,
    count: u32,
    interval_us: u64,
    offset_us: u64,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    let mut go = String::new();
    std::io::stdin().read_line(&mut go)?;
    let mut report = LauncherReport {
        start_ns: monotonic_ns(),
        end_ns: 0,
        failures: 0,
        latencies_ns: Vec::with_capacity(count as usize),
    };
    let mut first_failure = None;
    let go = Instant::now();
    for n in 0..count {
        let started = if interval_us == 0 {
            Instant::now()
        } else {
            let due = go + Duration::from_micros(offset_us + interval_us * u64::from(n));
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            due
        };
        match register(socket, &format!("bench-{index}-{n}")) {
            Ok(()) => report
                .latencies_ns
                .push(started.elapsed().as_nanos() as u64),
            Err(e) => {
                report.failures += 1;
                first_failure.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    report.end_ns = monotonic_ns();
    writeln!(out, "{}", report.line())?;
    if let Some(failure) = first_failure {
        writeln!(out, "{failure}")?;
    }
    out.flush()?;
    Ok(())
}

/// One registration: connect, hello, the answer must be ok.
fn register(socket: &Path, job_id: &str) -> anyhow::Result<()> {
    let mut stream = UnixStream::connect(socket).context("connecting")?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    stream
        .write_all(format!("{{\"job_id\":\"{job_id}\"}}\n").as_bytes())
        .context("sending the hello")?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .context("reading the answer")?;
    if !answer.starts_with("{\"ok\":true") {
        bail!("refused: {}", answer.trim());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip() {
        let report = LauncherReport {
            start_ns: 5,
            end_ns: 9,
            failures: 1,
            latencies_ns: vec![100, 2000],
        };
        assert_eq!(LauncherReport::parse(&report.line()).unwrap(), report);
        let empty = LauncherReport {
            latencies_ns: vec![],
            ..report
        };
        assert_eq!(LauncherReport::parse(&empty.line()).unwrap(), empty);
        assert!(LauncherReport::parse("ready").is_err());
    }
}
