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
//! one's end. Then, for reference, one launcher alone (no queueing); then
//! the launchers paced at a fixed offered rate; then that paced run again
//! against a second daemon that holds many finished jobs in its retention
//! while two threads scrape its /metrics back to back.
use std::{
    io::{BufRead, BufReader, Read as _, Write as _},
    net::SocketAddr,
    os::unix::net::UnixStream,
    path::Path,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use monitor_tests::http;

use super::{
    BenchArgs, Setup,
    cgroup::Root,
    daemon::{Daemon, JOBS, jobs_in_state},
    retention,
    stats::{median, percentile},
};

/// Registrations of the launcher that runs alone, per round.
pub const SOLO_REGISTRATIONS: u32 = 200;
/// The paced run: every launcher registers this often...
pub const PACED_INTERVAL: Duration = Duration::from_millis(100);
/// ...this many times (100 launchers: 1,000 registrations/s for 2 s).
pub const PACED_REGISTRATIONS: u32 = 20;
/// Threads scraping /metrics back to back during the scraped paced run
/// (the goal's name says "two").
pub const SCRAPERS: usize = 2;
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
const LABEL: &str = "registrations";
/// The daemon of the scraped paced run, with its finished jobs.
const SCRAPED_LABEL: &str = "registrations-scraped";

/// One run of launchers.
#[derive(Debug, Clone, Default)]
pub struct Run {
    /// Registrations answered ok.
    pub registrations: usize,
    pub failures: usize,
    /// First launcher's start to last launcher's end.
    pub wall_s: f64,
    /// Every successful registration's latency, milliseconds (paced: from
    /// when it was due).
    pub latency_ms: Vec<f64>,
}

impl Run {
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
}

#[derive(Debug, Clone)]
pub struct RegistrationRound {
    /// Every launcher registering back to back.
    pub back_to_back: Run,
    /// One launcher alone, back to back.
    pub solo: Run,
    /// Every launcher once every [`PACED_INTERVAL`].
    pub paced: Run,
    /// The paced run against the daemon holding finished jobs, scraped.
    pub scraped: Run,
    /// Each /metrics GET the scrapers finished during the scraped run, milliseconds.
    pub scrapes_ms: Vec<f64>,
}

impl RegistrationRound {
    pub fn failures(&self) -> usize {
        [&self.back_to_back, &self.solo, &self.paced, &self.scraped]
            .iter()
            .map(|run| run.failures)
            .sum()
    }

    pub fn scrape_median_ms(&self) -> f64 {
        median(&self.scrapes_ms).unwrap_or(f64::NAN)
    }
}

#[derive(Debug)]
pub struct RegistrationResult {
    pub launchers: u32,
    pub per_launcher: u32,
    /// Finished jobs in the scraped run's daemon when it starts.
    pub finished_jobs: u32,
    pub rounds: Vec<RegistrationRound>,
    /// A failed registration's answer, if any failed.
    pub first_failure: Option<String>,
}

impl RegistrationResult {
    /// The median over rounds of a round's figure.
    pub fn median_of(&self, figure: impl Fn(&RegistrationRound) -> f64) -> f64 {
        median(&self.rounds.iter().map(figure).collect::<Vec<_>>()).unwrap_or(f64::NAN)
    }

    /// Registrations per second the paced runs offer.
    pub fn offered_per_second(&self) -> f64 {
        f64::from(self.launchers) / PACED_INTERVAL.as_secs_f64()
    }

    /// Failed registrations of one run, over every round.
    pub fn failures_of(&self, run: impl Fn(&RegistrationRound) -> &Run) -> usize {
        self.rounds.iter().map(|round| run(round).failures).sum()
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
        finished_jobs: args.finished_jobs,
        rounds: Vec::new(),
        first_failure: None,
    };
    let paced = Pace::Every(PACED_INTERVAL);
    for round in 1..=args.rounds {
        let mut failures = Vec::new();
        let mut launched = |launchers, each, id_base, pace| -> anyhow::Result<Run> {
            let (run, failure) =
                Launchers::start(&me, &socket, launchers, each, id_base, pace)?.run()?;
            failures.push(failure);
            Ok(run)
        };
        let back_to_back = launched(
            args.launchers,
            args.registrations_per_launcher,
            round,
            Pace::BackToBack,
        )?;
        wait_all_ended(&mut daemon)?;
        let solo = launched(1, SOLO_REGISTRATIONS, round + 1000, Pace::BackToBack)?;
        wait_all_ended(&mut daemon)?;
        let paced_run = launched(args.launchers, PACED_REGISTRATIONS, round + 2000, paced)?;
        wait_all_ended(&mut daemon)?;
        let (scraped, scrapes_ms, scraped_failure) =
            scraped_run(setup, args, &me, &me_arg, round + 3000)?;
        failures.push(scraped_failure);
        let r = RegistrationRound {
            back_to_back,
            solo,
            paced: paced_run,
            scraped,
            scrapes_ms,
        };
        result.first_failure = result
            .first_failure
            .or(failures.into_iter().flatten().next());
        eprintln!(
            "xtask:   round {round}: {} registrations in {:.2} s = {:.0}/s, latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; \
             alone p50 {:.2} ms, p99 {:.2} ms; paced at {:.0}/s: p50 {:.2} ms, p99 {:.2} ms; \
             paced at {:.0}/s with {} finished jobs scraped ({} scrapes, median {:.0} ms): p50 {:.2} ms, p99 {:.2} ms; \
             {} failed",
            r.back_to_back.registrations,
            r.back_to_back.wall_s,
            r.back_to_back.per_second(),
            r.back_to_back.p50_ms(),
            r.back_to_back.p99_ms(),
            r.back_to_back.max_ms(),
            r.solo.p50_ms(),
            r.solo.p99_ms(),
            r.paced.per_second(),
            r.paced.p50_ms(),
            r.paced.p99_ms(),
            r.scraped.per_second(),
            args.finished_jobs,
            r.scrapes_ms.len(),
            r.scrape_median_ms(),
            r.scraped.p50_ms(),
            r.scraped.p99_ms(),
            r.failures()
        );
        result.rounds.push(r);
    }
    if let Some(failure) = &result.first_failure {
        eprintln!("xtask:   a registration failed: {failure}");
    }
    daemon.stop()?;
    Ok(result)
}

/// The paced run against a fresh daemon whose retention holds
/// `--finished-jobs` finished jobs, while [`SCRAPERS`] threads GET its
/// /metrics back to back from the launchers' go to their last answer. A
/// fresh daemon each round, as in the finished-jobs benchmark: the paced
/// run's own jobs stay in its retention, so a kept daemon would hold more
/// each round. Returns the run, each scrape's duration and the first
/// failed registration's answer.
fn scraped_run(
    setup: &Setup,
    args: &BenchArgs,
    me: &Path,
    me_arg: &str,
    id_base: u32,
) -> anyhow::Result<(Run, Vec<f64>, Option<String>)> {
    // Before the daemon, so dropped after it (see the finished-jobs benchmark).
    let root = Root::create(&setup.cgroup_mount, SCRAPED_LABEL)?;
    // Room for the finished jobs as that benchmark sizes it, and for the
    // paced run's task cgroups when few finished jobs are asked for.
    let slots =
        retention::max_cgroups(args.finished_jobs.max(args.launchers * PACED_REGISTRATIONS))
            .to_string();
    let mut flags = vec!["--trust.path", me_arg];
    flags.extend(retention::daemon_flags(&slots));
    let mut daemon = Daemon::start_with(setup, root.path(), false, SCRAPED_LABEL, &flags)?;
    retention::fill(&mut daemon, &root, args.finished_jobs)?;
    let socket = Daemon::socket_path(setup, SCRAPED_LABEL);
    let launchers = Launchers::start(
        me,
        &socket,
        args.launchers,
        PACED_REGISTRATIONS,
        id_base,
        Pace::Every(PACED_INTERVAL),
    )?;
    let scrapers = Scrapers::start(daemon.addr());
    let outcome = launchers.run();
    let scrapes_ms = scrapers.finish();
    let (run, failure) = outcome?;
    let scrapes_ms = scrapes_ms?;
    wait_all_ended(&mut daemon)?;
    daemon.stop()?;
    Ok((run, scrapes_ms, failure))
}

/// [`SCRAPERS`] threads, each GETting /metrics back to back until told to stop.
struct Scrapers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<anyhow::Result<Vec<f64>>>>,
}

impl Scrapers {
    fn start(addr: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..SCRAPERS)
            .map(|_| {
                let stop = Arc::clone(&stop);
                thread::spawn(move || {
                    let mut times = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let start = Instant::now();
                        // Read and dropped: the load is the daemon's to
                        // carry, not this client's (copies of a 19 MB body
                        // on the launchers' two cores).
                        http::get_discarding(addr, "/metrics")
                            .context("scraping during registrations")?;
                        times.push(start.elapsed().as_secs_f64() * 1000.0);
                    }
                    Ok(times)
                })
            })
            .collect();
        Self { stop, threads }
    }

    /// Stops the scrapers (a scrape under way is finished and counted) and
    /// returns every scrape's duration, milliseconds.
    fn finish(mut self) -> anyhow::Result<Vec<f64>> {
        self.stop.store(true, Ordering::Relaxed);
        let mut times = Vec::new();
        for thread in self.threads.drain(..) {
            let scraped = thread
                .join()
                .map_err(|_| anyhow::anyhow!("a scraper thread panicked"))??;
            times.extend(scraped);
        }
        Ok(times)
    }
}

impl Drop for Scrapers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Waits until every job of the round has ended (its launchers exited), so
/// rounds start alike.
fn wait_all_ended(daemon: &mut Daemon) -> anyhow::Result<()> {
    daemon.wait_for(
        "every registered job to end",
        Duration::from_secs(60),
        &[JOBS],
        |metrics| jobs_in_state(metrics, "running") == Some(0.0),
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

/// `launchers` processes, spawned and ready (their runtime up), waiting for
/// the go; `each` registrations each.
struct Launchers(Vec<Launcher>);

impl Launchers {
    fn start(
        me: &Path,
        socket: &Path,
        launchers: u32,
        each: u32,
        id_base: u32,
        pace: Pace,
    ) -> anyhow::Result<Self> {
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
                .args(["--launcher-index", &(id_base * 100_000 + index).to_string()])
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
        for launcher in &mut running {
            expect_line(&mut launcher.stdout, "ready")?;
        }
        Ok(Self(running))
    }

    /// Everyone goes at once; returns the run and the first failed
    /// registration's answer, if any failed.
    fn run(self) -> anyhow::Result<(Run, Option<String>)> {
        let mut running = self.0;
        for launcher in &mut running {
            let mut stdin = launcher.stdin.take().context("launcher stdin")?;
            stdin.write_all(b"go\n").context("starting a launcher")?;
        }
        let mut run = Run::default();
        let (mut first_start, mut last_end) = (u64::MAX, 0u64);
        let mut failure = None;
        for mut launcher in running {
            let line = expect_line(&mut launcher.stdout, "result")?;
            let report = LauncherReport::parse(&line)?;
            first_start = first_start.min(report.start_ns);
            last_end = last_end.max(report.end_ns);
            run.registrations += report.latencies_ns.len();
            run.failures += report.failures;
            run.latency_ms
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
        run.wall_s = last_end.saturating_sub(first_start) as f64 / 1e9;
        Ok((run, failure))
    }
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
                thread::sleep(wait);
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
