//! `monitor report` end to end, its output checked for its figures:
//!
//! - against the local daemon: a finished 5 ms job (its CPU is the API's
//!   and /metrics' to the nanosecond), a running job (its elapsed time
//!   grows), an OOM-killed job, an unknown id (exit 1, the id named);
//! - across three daemons, three "nodes" on this machine, through the
//!   real Prometheus scraping them every second: one job on all three is
//!   one report, its CPU the sum of the three cgroups' own `cpu.stat`, its
//!   efficiencies those computed by hand; and every query of the two
//!   Grafana dashboards answers from that Prometheus.
use std::{
    fs,
    os::unix::process::ExitStatusExt as _,
    path::{Path, PathBuf},
    process::{Command, Output},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use monitor_tests::{
    ChildGuard, Daemon,
    accuracy::{CPU_TOLERANCE, relative_difference},
    cgroup::{join_before_exec, rmdir_when_empty, v1_mount, v2_mount},
    cpu_exclusive, cpu_shared, daemon,
    grafana::{self, JOB_DASHBOARD, NODE_DASHBOARD},
    jobs_api::{wait_for_jobs, with_id},
    launcher,
    memcg::{MemoryLimit, own_v1_memory_path},
    process::{allowed_cpus, run_ok},
    prometheus::{self, Prometheus, sample_value},
    require_root_or_skip, skip_or_fail,
    workload::{self, STEP, Workload},
};
use serde_json::Value;

const WORKLOAD: &str = env!("CARGO_BIN_EXE_workload");

/// `monitor report ARGS` against `socket` (None: no socket given), to its end.
fn monitor_report(socket: Option<&Path>, args: &[&str]) -> anyhow::Result<Output> {
    let mut command = Command::new(daemon::binary()?);
    command
        .arg("report")
        .args(args)
        .env_remove("MONITOR_SOCKET");
    command.env_remove("NO_COLOR");
    if let Some(socket) = socket {
        command.arg("--socket.path").arg(socket);
    }
    command
        .output()
        .with_context(|| format!("running monitor report {args:?}"))
}

/// Its stdout, which must have succeeded.
fn report_ok(socket: Option<&Path>, args: &[&str]) -> anyhow::Result<String> {
    let output = monitor_report(socket, args)?;
    ensure!(
        output.status.success(),
        "monitor report {args:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `monitor report ARGS --json`: the one job reported.
fn report_json(socket: Option<&Path>, args: &[&str]) -> anyhow::Result<Value> {
    let json = report_ok(socket, &[args, &["--json"]].concat())?;
    let reports: Value = serde_json::from_str(&json)
        .with_context(|| format!("monitor report --json printed no JSON:\n{json}"))?;
    match reports.as_array().map(Vec::as_slice) {
        Some([one]) => Ok(one.clone()),
        _ => bail!("expected one job reported, got {reports:#}"),
    }
}

fn number(value: &Value, key: &str) -> anyhow::Result<f64> {
    value[key]
        .as_f64()
        .with_context(|| format!("no number {key} in {value:#}"))
}

fn note_kinds(report: &Value) -> Vec<String> {
    report["notes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["kind"].as_str().map(str::to_string))
        .collect()
}

/// How the text report writes CPU and wait times.
fn shown_seconds(value: f64) -> String {
    if value.abs() < 1.0 {
        format!("{value:.6} s")
    } else {
        format!("{value:.3} s")
    }
}

fn shown_percent(fraction: f64) -> String {
    format!("{:.1}%", fraction * 100.0)
}

/// `text` shows `expected`, words compared and not columns (lines are
/// aligned and notes wrapped).
fn ensure_contains(text: &str, expected: &str) -> anyhow::Result<()> {
    ensure!(
        squash(text).contains(&squash(expected)),
        "the report does not show {expected:?}:\n{text}"
    );
    Ok(())
}

fn hostname() -> anyhow::Result<String> {
    Ok(fs::read_to_string("/proc/sys/kernel/hostname")?
        .trim()
        .to_string())
}

/// A job of a few milliseconds (`monitor run -- /bin/true`): its report
/// shows the CPU time the API and /metrics show, to the nanosecond, and
/// every other figure the API has; `--user` picks it.
#[test]
fn a_finished_5ms_job_reports_what_the_api_and_metrics_show() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    let daemon = Daemon::start()?;
    let mut run = launcher::monitor_run(daemon.socket())?;
    run.args(["--job-id", "short", "--require", "--", "/bin/true"]);
    run_ok(&mut run, "monitor run -- /bin/true", STEP)?;
    let (finished, jobs) =
        wait_for_jobs(&daemon, "state=finished", Duration::from_secs(20), |j| {
            !with_id(j, "short").is_empty()
        })?;
    ensure!(finished, "job short never finished: {jobs:?}");
    let api = with_id(&jobs, "short")[0].clone();
    let metrics = daemon.metrics()?;
    let in_metrics = metrics.value("monitor_job_cpu_seconds_total", &[("jobid", "short")])?;

    let socket = Some(daemon.socket());
    let report = report_json(socket, &["short"])?;
    let cpu = number(&report, "cpu_seconds")?;
    println!(
        "5 ms job: report {cpu:.9} s, API {:.9} s, /metrics {in_metrics:.9} s; elapsed {:.3} s",
        number(&api, "cpu_seconds")?,
        number(&report, "elapsed_seconds")?
    );
    ensure!(cpu > 0.0, "no CPU time reported: {report:#}");
    ensure!(
        (cpu - number(&api, "cpu_seconds")?).abs() < 1e-9 && (cpu - in_metrics).abs() < 1e-9,
        "CPU: report {cpu}, API {}, /metrics {in_metrics}",
        api["cpu_seconds"]
    );
    for key in [
        "runqueue_wait_seconds",
        "execs",
        "processes_exited",
        "memory_rss_peak_bytes",
        "page_faults",
        "io_read_bytes",
        "io_read_calls",
        "start_time",
        "end_time",
    ] {
        ensure!(
            report[key] == api[key],
            "{key}: report {}, API {}",
            report[key],
            api[key]
        );
    }
    ensure!(report["context_switches"] == api["context_switches"]);
    ensure!(
        report["state"] == "finished" && report["execs"] == 1,
        "{report:#}"
    );
    ensure!(report["jobid"] == "short" && report["user"] == "root");
    let elapsed = number(&api, "end_time")? - number(&api, "start_time")?;
    ensure!((number(&report, "elapsed_seconds")? - elapsed).abs() < 1e-9);
    // No cpuset and no memory limit here: the node's, and said so.
    let node = &report["nodes"][0];
    ensure!(node["node"] == hostname()?.as_str(), "{node:#}");
    if api["cpus_allocated"].is_null() {
        ensure!(node["cpus_from"] == "node", "{node:#}");
        ensure!(note_kinds(&report).contains(&"cpus_from_node".to_string()));
    }
    ensure!(
        note_kinds(&report).contains(&"short_job".to_string())
            && !note_kinds(&report).contains(&"low_efficiency".to_string()),
        "a short job is said to be exact and not judged on efficiency: {:#}",
        report["notes"]
    );

    let text = report_ok(socket, &["short"])?;
    for expected in [
        "Job short of root".to_string(),
        "State        finished".to_string(),
        format!("CPU time     {}", shown_seconds(cpu)),
        format!(
            "Efficiency   {}",
            shown_percent(number(&report, "cpu_efficiency")?)
        ),
        "Started      0 processes, 0 threads, 1 exec".to_string(),
        "Exited       1 process".to_string(),
        format!(
            "Read         {} in {} calls",
            bytes(number(&api, "io_read_bytes")?),
            api["io_read_calls"]
        ),
        "OOM kills    0".to_string(),
        "Its figures are exact all the same".to_string(),
    ] {
        ensure_contains(&text, &expected)?;
    }
    ensure!(
        !text.contains('\x1b') && !text.contains('█'),
        "piped output has colour or bars:\n{text}"
    );

    // --user picks among users; a user without that job is an error.
    let mine = report_json(socket, &["short", "--user", "root"])?;
    ensure!(mine["cpu_seconds"] == report["cpu_seconds"]);
    let output = monitor_report(socket, &["short", "--user", "nobody"])?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        output.status.code() == Some(1)
            && stderr.contains("\"short\"")
            && stderr.contains("nobody"),
        "--user nobody: {} {stderr}",
        output.status
    );
    Ok(())
}

/// Every run of white space in `text` as one space.
fn squash(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// As the report writes sizes.
fn bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n}B")
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

/// A running job: reported as running, no end, its elapsed time growing
/// with the clock, its task counted.
#[test]
fn a_running_job_reports_running_and_its_elapsed_time_grows() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    let daemon = Daemon::start()?;
    let job = daemon.create_job("running")?;
    let mut sleeper = job.command("sleep")?;
    sleeper.arg("120");
    let sleeper = ChildGuard::spawn(&mut sleeper, "sleep 120")?;
    let (seen, jobs) = wait_for_jobs(&daemon, "state=running", Duration::from_secs(20), |j| {
        with_id(j, "running")
            .first()
            .is_some_and(|job| job["tasks"] == 1)
    })?;
    ensure!(
        seen,
        "the sleeping job is not running with its task: {jobs:?}"
    );
    let socket = Some(daemon.socket());
    let first = report_json(socket, &["running"])?;
    let started = Instant::now();
    thread::sleep(Duration::from_secs(2));
    let second = report_json(socket, &["running"])?;
    let gap = started.elapsed().as_secs_f64();
    let (e1, e2) = (
        number(&first, "elapsed_seconds")?,
        number(&second, "elapsed_seconds")?,
    );
    println!("running job: elapsed {e1:.3} s, then {e2:.3} s, {gap:.3} s later");
    for report in [&first, &second] {
        ensure!(
            report["state"] == "running" && report["end_time"].is_null(),
            "{report:#}"
        );
        ensure!(report["tasks"] == 1, "the sleeping task: {report:#}");
    }
    // Each invocation reads the clock as it starts: the gap, give or take
    // a process start.
    ensure!(
        (e2 - e1 - gap).abs() < 0.25,
        "elapsed grew by {:.3} s in {gap:.3} s",
        e2 - e1
    );
    let text = report_ok(socket, &["running"])?;
    for expected in [
        "State        running",
        "Ended        still running",
        "Tasks now    1",
    ] {
        ensure_contains(&text, expected)?;
    }
    sleeper.kill()?;
    Ok(())
}

/// A job the OOM killer hit: its kill counted, the note saying so, and
/// its memory peak near the limit it ran into.
#[test]
fn an_oom_killed_job_says_so() -> anyhow::Result<()> {
    const LIMIT: u64 = 64 << 20;
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    let daemon = Daemon::start()?;
    let job = daemon.create_job("oom")?;
    let limit = match MemoryLimit::apply(&job, LIMIT)? {
        Ok(limit) => limit,
        Err(why) => {
            skip_or_fail(&format!("cannot limit a job's memory on this host: {why}"));
            return Ok(());
        }
    };
    let mut command = job.command(WORKLOAD)?;
    command.arg("oom");
    limit.join(&mut command)?;
    let status = Workload::spawn(&mut command, "workload oom")?.wait(STEP)?;
    ensure!(
        status.signal() == Some(libc::SIGKILL),
        "the workload was not OOM-killed under {} ({status})",
        limit.describe()
    );
    let oom = [("jobid", "oom")];
    let (seen, _) = daemon.wait_for(20, |m| {
        m.value("monitor_job_oom_kills_total", &oom)
            .is_ok_and(|v| v >= 1.0)
    })?;
    ensure!(seen, "no OOM kill counted for job oom within 20 samples");

    let socket = Some(daemon.socket());
    let report = report_json(socket, &["oom"])?;
    let peak = number(&report, "memory_rss_peak_bytes")?;
    println!(
        "OOM job: {} OOM kill(s), RSS peak {:.1} MiB under {}, notes {:?}",
        report["oom_kills"],
        peak / f64::from(1 << 20),
        limit.describe(),
        note_kinds(&report)
    );
    ensure!(report["oom_kills"] == 1, "{report:#}");
    ensure!(
        note_kinds(&report).first().map(String::as_str) == Some("oom_killed"),
        "the OOM kill is not the first note: {:#}",
        report["notes"]
    );
    // It allocated until the limit stopped it.
    ensure!(
        (LIMIT as f64 * 0.5..=LIMIT as f64 * 1.1).contains(&peak),
        "RSS peak {peak} for a {LIMIT}-byte limit"
    );
    let node = &report["nodes"][0];
    if node["memory_limit_from"] == "limit" {
        // Pure cgroup v2: the limit is the job's own memory.max.
        ensure!(node["memory_limit_bytes"] == LIMIT);
        ensure!(note_kinds(&report).contains(&"memory_near_limit".to_string()));
    } else {
        // A hybrid host: the limit is a v1 memory cgroup the daemon does
        // not relate to this v2 job, so the peak is set against MemTotal.
        ensure!(node["memory_limit_from"] == "node_mem_total", "{node:#}");
        ensure!(note_kinds(&report).contains(&"memory_from_node".to_string()));
    }
    let text = report_ok(socket, &["oom"])?;
    ensure_contains(&text, "OOM kills    1")?;
    ensure_contains(
        &text,
        "! the OOM killer killed 1 task of the job: it ran out of memory.",
    )?;
    ensure_contains(&text, &format!("RSS peak     {}", bytes(peak)))?;
    Ok(())
}

/// An id no job has: an error naming it, on stderr, exit status 1.
#[test]
fn an_unknown_job_id_is_an_error_naming_it() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    let daemon = Daemon::start()?;
    for args in [&["no-such-job-4711"][..], &["no-such-job-4711", "--json"]] {
        let output = monitor_report(Some(daemon.socket()), args)?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        println!("monitor report {args:?}: {}: {stderr}", output.status);
        ensure!(
            output.status.code() == Some(1),
            "{args:?}: {}",
            output.status
        );
        ensure!(
            stderr.contains("no job \"no-such-job-4711\""),
            "stderr does not name the id: {stderr}"
        );
        ensure!(output.stdout.is_empty(), "{args:?} printed a report");
    }
    // And without a daemon: the socket is named.
    let output = monitor_report(Some(Path::new("/nonexistent/monitor.sock")), &["1"])?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        output.status.code() == Some(1) && stderr.contains("/nonexistent/monitor.api.sock"),
        "{stderr}"
    );
    Ok(())
}

/// One node's share of a job as Slurm's task/cgroup makes it on a hybrid
/// host: the same directory in the freezer (where the daemon finds jobs),
/// cpuset (the CPUs the job is given) and memory (its limit) hierarchies,
/// placed below this process's own v1 memory cgroup so the limit nests in
/// the one this process lives under (nothing leaves its v1 cgroups for
/// anything but a child of them); and a v2 cgroup of its own, for the
/// kernel's `cpu.stat` of exactly its processes.
struct NodeJob {
    /// freezer, cpuset and memory job directories.
    job_dirs: Vec<PathBuf>,
    reference: PathBuf,
    /// Every directory made, parents first.
    made: Vec<PathBuf>,
}

/// What the job's directory is under, in every v1 hierarchy: this
/// process's memory cgroup (`/process_api/abc`, or empty at the root).
fn v1_base() -> anyhow::Result<String> {
    let cgroups = fs::read_to_string("/proc/self/cgroup")?;
    let path = own_v1_memory_path(&cgroups).unwrap_or("/");
    Ok(path.trim_end_matches('/').to_string())
}

impl NodeJob {
    /// The job `jobid` of uid 0 under `top` (a directory per node), given
    /// CPU `cpu` and `memory_limit` bytes.
    fn create(top: &str, jobid: &str, cpu: usize, memory_limit: u64) -> anyhow::Result<Self> {
        let relative = format!("{}/{top}/uid_0/job_{jobid}", v1_base()?);
        let mut job = Self {
            job_dirs: Vec::new(),
            reference: v2_mount()?.join(format!("{top}-reference")),
            made: Vec::new(),
        };
        for controller in ["freezer", "cpuset", "memory"] {
            let dir = v1_mount(controller)?.join(relative.trim_start_matches('/'));
            job.make_all(&dir, controller == "cpuset")?;
            job.job_dirs.push(dir);
        }
        let [_, cpuset, memory] = job.job_dirs.as_slice() else {
            bail!("three hierarchies");
        };
        fs::write(cpuset.join("cpuset.cpus"), cpu.to_string())?;
        fs::write(
            memory.join("memory.limit_in_bytes"),
            memory_limit.to_string(),
        )?;
        // No swapping instead of the OOM kill.
        let _ = fs::write(memory.join("memory.swappiness"), "0");
        let _ = fs::write(
            memory.join("memory.memsw.limit_in_bytes"),
            memory_limit.to_string(),
        );
        let reference = job.reference.clone();
        job.make(&reference)?;
        Ok(job)
    }

    fn make(&mut self, dir: &Path) -> anyhow::Result<()> {
        fs::create_dir(dir).with_context(|| format!("making {}", dir.display()))?;
        self.made.push(dir.to_path_buf());
        Ok(())
    }

    /// Makes `dir` and its missing parents; a v1 cpuset gets its parent's
    /// CPUs and memory nodes at each level (it starts with none).
    fn make_all(&mut self, dir: &Path, cpuset: bool) -> anyhow::Result<()> {
        let missing: Vec<PathBuf> = dir
            .ancestors()
            .take_while(|d| !d.exists())
            .map(Path::to_path_buf)
            .collect();
        for dir in missing.into_iter().rev() {
            self.make(&dir)?;
            if cpuset {
                let parent = dir.parent().context("a cgroup has a parent")?;
                for file in ["cpuset.cpus", "cpuset.mems"] {
                    let value = fs::read_to_string(parent.join(file))?;
                    fs::write(dir.join(file), value.trim())
                        .with_context(|| format!("writing {}", dir.join(file).display()))?;
                }
            }
        }
        Ok(())
    }

    /// A command whose process joins the job on this node before it execs.
    fn command(&self, program: &str) -> anyhow::Result<Command> {
        let mut command = Command::new(program);
        // The v2 move first: the freezer one after it is the job's.
        join_before_exec(&mut command, &self.reference)?;
        for dir in &self.job_dirs {
            join_before_exec(&mut command, dir)?;
        }
        Ok(command)
    }

    /// The kernel's CPU time of the job's processes on this node.
    fn cpu_usage_seconds(&self) -> anyhow::Result<f64> {
        let text = fs::read_to_string(self.reference.join("cpu.stat"))?;
        let usec: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .context("no usage_usec")?
            .trim()
            .parse()?;
        Ok(usec / 1e6)
    }

    /// The resource manager removes the job's directories: the job ends.
    fn end(&mut self) -> anyhow::Result<()> {
        for dir in std::mem::take(&mut self.job_dirs) {
            rmdir_when_empty(&dir)?;
            self.made.retain(|d| *d != dir);
        }
        Ok(())
    }
}

impl Drop for NodeJob {
    fn drop(&mut self) {
        for dir in self.job_dirs.iter().chain(self.made.iter().rev()) {
            if let Err(e) = rmdir_when_empty(dir) {
                eprintln!("{e:#}");
            }
        }
    }
}

/// The nodes' jobs, dropped last first: the first one made the parent
/// directories the others share.
struct NodeJobs(Vec<NodeJob>);

impl Drop for NodeJobs {
    fn drop(&mut self) {
        while let Some(node) = self.0.pop() {
            drop(node);
        }
    }
}

/// Escapes regex metacharacters of a path.
fn regex_literal(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if r"\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The job's id on every node.
const JOBID: &str = "7001";
/// Each node's busy loop, in CPU milliseconds.
const SPIN_MS: u64 = 1500;
/// Node 0's memory limit, which its OOM-ing process runs into.
const SMALL_LIMIT: u64 = 64 << 20;
const LARGE_LIMIT: u64 = 512 << 20;

/// One job id on three daemons (three nodes), with a cpuset of one CPU
/// and a memory limit each, busy 1.5 s of CPU on each (nodes 0 and 2 on
/// the same CPU, so they wait for it), and an OOM kill on node 0; the
/// real Prometheus scrapes the three every second.
///
/// `monitor report --prometheus` then shows one job: its CPU the sum of
/// the three reference cgroups' `cpu.stat` (bar 2%), a row per instance,
/// each node's efficiency and the job's equal to cpu.stat over (elapsed x
/// CPUs) by hand, with each node's elapsed time from its daemon's API
/// (bar 2%: the CPU bar; the times are the same figures). And every query
/// of the node and job dashboards, with Grafana's variables filled in for
/// this job and node 0, answers from that Prometheus.
#[test]
fn a_job_on_three_nodes_is_one_report_through_prometheus() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let Some(prometheus_binary) = prometheus::binary() else {
        skip_or_fail(
            "prometheus is not on PATH (cargo xtask test installs it: apt-get install prometheus)",
        );
        return Ok(());
    };
    for controller in ["freezer", "cpuset", "memory"] {
        if let Err(e) = v1_mount(controller) {
            skip_or_fail(&format!(
                "the job is made as Slurm's task/cgroup makes it on a hybrid host, with a cpuset \
                 and a memory limit from the v1 hierarchies: {e:#}"
            ));
            return Ok(());
        }
    }
    let _machine = cpu_exclusive();
    let base = v1_base()?;
    let tops: Vec<String> = (0..3)
        .map(|i| format!("monreport_{}_{i}", std::process::id()))
        .collect();
    let mut daemons = Vec::new();
    for top in &tops {
        let layout = format!(
            "freezer:^{}/{top}/uid_(?P<uid>[0-9]+)/job_(?P<jobid>[^/]+)$",
            regex_literal(&base)
        );
        daemons.push(Daemon::start_with(&["--discover.layout", &layout])?);
    }
    let targets: Vec<_> = daemons.iter().map(Daemon::address).collect();
    let server = Prometheus::start_scraping_all(
        &prometheus_binary,
        &targets,
        daemon::TELEMETRY_PATH,
        Duration::from_secs(1),
        "",
    )?;
    server.wait_for_targets(3, Duration::from_secs(30))?;

    let cpus = allowed_cpus()?;
    let mut nodes = NodeJobs(Vec::new());
    for (i, top) in tops.iter().enumerate() {
        let limit = if i == 0 { SMALL_LIMIT } else { LARGE_LIMIT };
        // Nodes 0 and 2 on one CPU, node 1 on another (where there is one).
        let cpu = cpus[i % 2 % cpus.len()];
        nodes.0.push(NodeJob::create(top, JOBID, cpu, limit)?);
    }
    let nodes = &mut nodes.0;
    // Node 0: a process allocating until its job's limit stops it.
    let mut oom = nodes[0].command(WORKLOAD)?;
    oom.arg("oom");
    let status = Workload::spawn(&mut oom, "workload oom")?.wait(STEP)?;
    ensure!(
        status.signal() == Some(libc::SIGKILL),
        "node 0's allocating process was not OOM-killed ({status})"
    );
    // Every node busy at once, as an MPI job's ranks are.
    let spinners = nodes
        .iter()
        .map(|node| {
            let mut command = node.command(WORKLOAD)?;
            command.args(["spin", &SPIN_MS.to_string()]);
            workload::spawn_to_end(&mut command, "a busy rank")
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    for spinner in spinners {
        let output = spinner.wait_with_output(STEP)?;
        workload::report_of(&output, "a busy rank", "figures")?;
    }
    let kernel: Vec<f64> = nodes
        .iter()
        .map(NodeJob::cpu_usage_seconds)
        .collect::<anyhow::Result<_>>()?;
    for node in nodes.iter_mut() {
        node.end()?;
    }
    let finished = [("jobid", JOBID), ("state", "finished")];
    let mut api = Vec::new();
    for daemon in &daemons {
        let (seen, metrics) = daemon.wait_for(50, |m| {
            m.find("monitor_job_info", &finished)
                .is_ok_and(|v| v.is_some())
        })?;
        ensure!(seen, "job {JOBID} did not finish:\n{}", metrics.text);
        let jobs: Value = serde_json::from_str(&daemon.get(&format!("/api/v1/jobs/{JOBID}"))?)?;
        api.push(jobs[0].clone());
    }
    // The scrape that saw the end saw the final counts too.
    let ends = format!("count(monitor_job_end_time_seconds{{jobid=\"{JOBID}\"}})");
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.query(&ends)?.first().map(sample_value).transpose()? != Some(3.0) {
        ensure!(
            Instant::now() < deadline,
            "Prometheus never had the job's end on all three nodes"
        );
        thread::sleep(Duration::from_millis(200));
    }

    let url = format!("http://{}", server.address());
    let report = report_json(None, &[JOBID, "--prometheus", &url])?;
    let text = report_ok(None, &[JOBID, "--prometheus", &url])?;
    println!("{text}");
    check_report(&report, &text, &daemons, &api, &kernel)?;

    let instance = daemons[0].address().to_string();
    check_dashboards(&server, &instance)?;
    Ok(())
}

/// The report against each node's cgroup and daemon API.
fn check_report(
    report: &Value,
    text: &str,
    daemons: &[Daemon],
    api: &[Value],
    kernel: &[f64],
) -> anyhow::Result<()> {
    let rows = report["nodes"].as_array().context("no nodes")?;
    let mut instances: Vec<String> = daemons.iter().map(|d| d.address().to_string()).collect();
    instances.sort();
    let shown: Vec<&str> = rows.iter().filter_map(|r| r["node"].as_str()).collect();
    ensure!(
        shown == instances,
        "nodes {shown:?}, expected {instances:?}"
    );
    ensure!(report["user"] == "root" && report["state"] == "finished");

    let total = number(report, "cpu_seconds")?;
    let kernel_total: f64 = kernel.iter().sum();
    let error = relative_difference(total, kernel_total);
    println!(
        "three nodes: report {total:.6} s of CPU, cpu.stat sum {kernel_total:.6} s ({:.3}%, bar 2%)",
        error * 100.0
    );
    ensure!(
        error <= CPU_TOLERANCE,
        "summed CPU {total} s is not within 2% of the cgroups' {kernel_total} s"
    );

    // By hand: cpu.stat over (the daemon's elapsed time x the one CPU of its cpuset).
    let mut used = 0.0;
    let mut given = 0.0;
    for (node, ((daemon, job), kernel)) in daemons.iter().zip(api).zip(kernel).enumerate() {
        let instance = daemon.address().to_string();
        let row = rows
            .iter()
            .find(|r| r["node"] == instance.as_str())
            .with_context(|| format!("no row for {instance}"))?;
        let elapsed = number(job, "end_time")? - number(job, "start_time")?;
        let by_hand = kernel / elapsed;
        let efficiency = number(row, "cpu_efficiency")?;
        println!(
            "{instance}: CPU {:.6} s (cpu.stat {kernel:.6} s), elapsed {elapsed:.3} s, \
             efficiency {efficiency:.4} (by hand {by_hand:.4}), wait share {:.3}, RSS peak {} of {}",
            number(row, "cpu_seconds")?,
            number(row, "runqueue_wait_share")?,
            row["memory_rss_peak_bytes"],
            row["memory_limit_bytes"]
        );
        ensure!(
            relative_difference(efficiency, by_hand) <= CPU_TOLERANCE,
            "{instance}: efficiency {efficiency} against {by_hand} by hand"
        );
        ensure!(
            relative_difference(number(row, "cpu_seconds")?, *kernel) <= CPU_TOLERANCE,
            "{instance}: CPU {} against cpu.stat {kernel}",
            row["cpu_seconds"]
        );
        for key in [
            "start_time",
            "end_time",
            "cpu_seconds",
            "runqueue_wait_seconds",
        ] {
            ensure!(
                (number(row, key)? - number(job, key)?).abs() < 1e-6,
                "{instance}: {key} {} in the report, {} in the daemon's API",
                row[key],
                job[key]
            );
        }
        ensure!(
            row["cpus_allocated"] == 1 && row["cpus_from"] == "cpuset",
            "{row:#}"
        );
        // The limit the test set (the API's copy is read at the daemon's
        // allocation refresh, which a short job may end before).
        let limit = if node == 0 { SMALL_LIMIT } else { LARGE_LIMIT };
        ensure!(
            row["memory_limit_bytes"] == limit,
            "{instance}: memory limit {} in the report, {limit} set:\n{row:#}",
            row["memory_limit_bytes"]
        );
        used += kernel;
        given += elapsed;
        ensure_contains(
            text,
            &format!(
                "{instance}  finished  {}",
                shown_seconds(number(row, "cpu_seconds")?)
            ),
        )?;
        ensure_contains(text, &shown_percent(efficiency))?;
    }
    let job_efficiency = number(report, "cpu_efficiency")?;
    println!(
        "job efficiency {job_efficiency:.4}, by hand {:.4} (bar 2%)",
        used / given
    );
    ensure!(relative_difference(job_efficiency, used / given) <= CPU_TOLERANCE);
    ensure!(report["cpus_allocated"] == 3);

    ensure!(report["oom_kills"] == 1, "node 0's OOM kill: {report:#}");
    ensure!(
        rows.iter()
            .map(|r| &r["oom_kills"])
            .filter(|k| **k == 1)
            .count()
            == 1
    );
    ensure!(note_kinds(report).contains(&"oom_killed".to_string()));
    let small = rows
        .iter()
        .find(|r| r["memory_limit_bytes"] == SMALL_LIMIT)
        .context("no node with the small limit")?;
    ensure!(
        (number(small, "memory_peak_ratio")?
            - number(small, "memory_rss_peak_bytes")? / SMALL_LIMIT as f64)
            .abs()
            < 1e-9
    );

    for expected in [
        format!("Nodes        3: {}", instances.join(", ")),
        format!("CPU time     {}", shown_seconds(total)),
        format!(
            "Efficiency   {}  of 3 CPUs over the elapsed time (its cpuset)",
            shown_percent(job_efficiency)
        ),
        format!(
            "Run-queue    {}",
            shown_percent(number(report, "runqueue_wait_share")?)
        ),
        "OOM kills    1".to_string(),
        "NODE".to_string(),
    ] {
        ensure_contains(text, &expected)?;
    }
    Ok(())
}

/// Every dashboard query (panels and `label_values` variables) with
/// Grafana's variables filled in for this job and node returns data,
/// except those listed here with the reason.
fn check_dashboards(server: &Prometheus, instance: &str) -> anyhow::Result<()> {
    let variables = [
        ("jobid", JOBID),
        ("user", "root"),
        ("instance", instance),
        ("datasource", "prometheus"),
        ("__rate_interval", "1m"),
        ("__interval", "1s"),
        ("__interval_ms", "1000"),
        ("__range", "5m"),
        ("__range_s", "300"),
    ];
    // The daemon reads memory.current, memory.peak and io.stat only where
    // the v2 hierarchy has those controllers (pure cgroup v2 hosts).
    let controllers = fs::read_to_string(v2_mount()?.join("cgroup.controllers"))?;
    let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
    let mut exceptions: Vec<(&str, String)> = Vec::new();
    if !has("memory") {
        exceptions.push((
            "monitor_job_cgroup_memory_",
            format!(
                "a cross-check from memory.current/memory.peak, which a job has only where the v2 \
                 hierarchy has the memory controller (here: {})",
                controllers.trim()
            ),
        ));
    }
    if !has("io") {
        exceptions.push((
            "monitor_job_cgroup_io_",
            format!(
                "a cross-check from io.stat, which a job has only where the v2 hierarchy has the \
                 io controller (here: {})",
                controllers.trim()
            ),
        ));
    }
    let mut answered = 0;
    let mut excepted = Vec::new();
    let mut problems = Vec::new();
    for name in [NODE_DASHBOARD, JOB_DASHBOARD] {
        for query in grafana::queries(name, &grafana::dashboard(name)?)? {
            let expr = grafana::substitute(&query.expr, &variables)?;
            let result = server
                .query(&expr)
                .with_context(|| format!("{}: {expr}", query.source))?;
            let exception = exceptions.iter().find(|(metric, _)| expr.contains(metric));
            match (result.is_empty(), exception) {
                (false, None) => answered += 1,
                (true, Some((_, why))) => excepted.push(format!("{}: {why}", query.source)),
                (true, None) => problems.push(format!("{} returned no data: {expr}", query.source)),
                (false, Some(_)) => problems.push(format!(
                    "{} is listed as having no data here but answered: drop the exception",
                    query.source
                )),
            }
        }
    }
    println!(
        "dashboards: {answered} queries answered, {} without data by nature:\n  {}",
        excepted.len(),
        excepted.join("\n  ")
    );
    ensure!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}
