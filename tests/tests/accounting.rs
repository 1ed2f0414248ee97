//! Per-job accounting against the kernel's own numbers: CPU time (of a
//! task that never leaves its CPU, and of processes moved between jobs),
//! run-queue wait, context switches, processes and execs, and jobs too
//! short for any sampler.
use std::{
    fs,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use monitor_tests::{
    ChildGuard, Daemon, JobCgroup, Metrics,
    accuracy::{SETTLE_SAMPLES, relative_difference},
    cpu_exclusive, cpu_shared,
    process::{allowed_cpus, pin_to_cpu, run_ok},
    require_root_or_skip,
    workload::{Report, report_of, run_to_end, spawn_to_end},
};

const WORKLOAD: &str = env!("CARGO_BIN_EXE_workload");

/// Pure user-space spinning: no syscalls, no forks (dash builtins only).
const BUSY_LOOP: &str = "while :; do :; done";
/// CPU seconds a busy job gets (by cpu.stat, not wall time, so other load
/// on the machine only makes the test slower).
const BUSY_CPU: f64 = 2.0;
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

fn sh(job: &JobCgroup, script: &str) -> anyhow::Result<Command> {
    let mut command = job.command("/bin/sh")?;
    command.args(["-c", script]);
    Ok(command)
}

#[test]
fn cpu_matches_cgroup_cpu_stat() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_exclusive();
    let daemon = Daemon::start()?;
    let job = daemon.create_job("busy")?;

    let busy = ChildGuard::spawn(&mut sh(&job, BUSY_LOOP)?, "a busy loop")?;
    job.wait_for_cpu(BUSY_CPU, BUSY_TIMEOUT)?;
    busy.kill()?;

    let metrics = daemon.metrics_after_samples(SETTLE_SAMPLES)?;
    let ours = metrics.value("monitor_job_cpu_seconds_total", &[("jobid", "busy")])?;
    let kernel = job.cpu_usage_seconds()?;
    let error = relative_difference(ours, kernel);
    println!(
        "cpu: monitor {ours:.6} s, cpu.stat {kernel:.6} s, difference {:.3}%",
        error * 100.0
    );
    assert!(
        error <= 0.01,
        "monitor_job_cpu_seconds_total {ours:.6} s is not within 1% of cpu.stat usage {kernel:.6} s ({:.3}%)",
        error * 100.0
    );
    Ok(())
}

/// Readings of a running busy job, one per sample.
const LIVE_READINGS: u32 = 5;
/// Slack on top of one sample interval for the scrape and the sample's own
/// tail after the kernel was read (the scrape is polled every 3 ms).
const LIVE_MARGIN: f64 = 0.05;

/// A busy task that never leaves its CPU of its own accord (a pure
/// user-space loop: no syscalls, no sleeps) shows its CPU within one sample
/// interval: read right after a fresh sample while it runs, the job's CPU
/// is at least its cgroup's cpu.stat usage (read right after) minus one
/// sample interval of one CPU (and a margin), never more than 1% above it.
#[test]
fn busy_task_shows_its_cpu_within_one_sample_interval() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_exclusive();
    let daemon = Daemon::start()?;
    let job = daemon.create_job("spinning")?;
    let busy = ChildGuard::spawn(&mut sh(&job, BUSY_LOOP)?, "a busy loop")?;
    // A few samples into its run.
    job.wait_for_cpu(0.5, BUSY_TIMEOUT)?;
    daemon.metrics_after_samples(2)?;

    let interval = daemon.sample_interval().as_secs_f64();
    let mut errors = Vec::new();
    for reading in 1..=LIVE_READINGS {
        let metrics = daemon.next_sample()?;
        let kernel = job.cpu_usage_seconds()?;
        let ours = metrics.value("monitor_job_cpu_seconds_total", &[("jobid", "spinning")])?;
        let (lower, upper) = (kernel - interval - LIVE_MARGIN, kernel * 1.01);
        println!(
            "busy task, reading {reading}: monitor {ours:.6} s, cpu.stat right after {kernel:.6} s, \
             behind by {:.6} s (bar: one {interval:.3} s interval of one CPU + {LIVE_MARGIN} s; \
             never more than 1% ahead), sample took {:.6} s",
            kernel - ours,
            metrics.value("monitor_sample_duration_seconds", &[])?
        );
        if !(lower..=upper).contains(&ours) {
            errors.push(format!(
                "reading {reading}: monitor_job_cpu_seconds_total {ours:.6} s is not between cpu.stat \
                 {kernel:.6} s minus one sample interval of one CPU and {LIVE_MARGIN} s ({lower:.6} s) \
                 and cpu.stat plus 1% ({upper:.6} s)"
            ));
        }
    }
    busy.kill()?;
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    Ok(())
}

/// The run-queue bar against the CPU time: the job's wait within 20% of it.
const WAIT_TOLERANCE: f64 = 0.20;
/// The run-queue bar against the kernel's own run_delay of the job's tasks.
const RUN_DELAY_TOLERANCE: f64 = 0.02;
/// A CPU counts as left to the spinners when the kernel's own wait of them
/// is this close to their CPU time; tighter than the bar, so a daemon that
/// matches the kernel cannot fail it by the kernel's noise alone.
const QUIET_CPU: f64 = 0.10;
/// Attempts at getting a CPU to the two spinners alone (see below).
const CONTENTION_ATTEMPTS: usize = 4;

/// Two equal spinners of one job pinned to one CPU, each until it has used
/// half of BUSY_CPU: each runs half the time and waits the other half.
/// Returns their figures, printed as their last act (/proc/self/schedstat
/// run_delay, /proc/self/status switches).
fn contend(job: &JobCgroup, cpu: usize) -> anyhow::Result<Vec<Report>> {
    let cpu_ms = (BUSY_CPU * 1000.0 / 2.0).to_string();
    let spinners = (0..2)
        .map(|i| {
            let mut command = job.command(WORKLOAD)?;
            command.args(["spin", &cpu_ms]);
            spawn_to_end(
                pin_to_cpu(&mut command, cpu),
                &format!("spinner {i} on CPU {cpu}"),
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    spinners
        .into_iter()
        .enumerate()
        .map(|(i, spinner)| {
            let output = spinner.wait_with_output(BUSY_TIMEOUT)?;
            report_of(&output, &format!("spinner {i} on CPU {cpu}"), "figures")
        })
        .collect()
}

/// The sum of `key` over the workloads' figures.
fn total(reports: &[Report], key: &str) -> anyhow::Result<u64> {
    reports.iter().map(|r| r.get(key)).sum()
}

/// Two busy processes of one job pinned to one CPU: the job's run-queue
/// wait within 2% of the kernel's run_delay of the two (read by each as its
/// last act, compared with the finished job's total), on every attempt;
/// and, on a CPU left to them, within 20% of the job's CPU time;
/// involuntary switches counted.
#[test]
fn runqueue_wait_under_contention() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_exclusive();
    let daemon = Daemon::start()?;
    let cpus = allowed_cpus()?;

    for attempt in 1..=CONTENTION_ATTEMPTS {
        // Another CPU each time: outside work is often pinned to one.
        let cpu = cpus[(attempt - 1) % cpus.len()];
        let name = format!("contended{attempt}");
        let job = daemon.create_job(&name)?;
        let figures = contend(&job, cpu)?;
        let kernel_wait = total(&figures, "run_delay_ns")? as f64 / 1e9;
        let kernel_cpu = job.cpu_usage_seconds()?;
        let metrics = daemon.finish_job(&job, SETTLE_SAMPLES)?;
        let labels = [("jobid", name.as_str())];
        let cpu_time = metrics.value("monitor_job_cpu_seconds_total", &labels)?;
        let wait = metrics.value("monitor_job_runqueue_wait_seconds_total", &labels)?;
        let switches = |kind: &str| {
            metrics.value(
                "monitor_job_context_switches_total",
                &[("jobid", name.as_str()), ("kind", kind)],
            )
        };
        let (voluntary, involuntary) = (switches("voluntary")?, switches("involuntary")?);
        let (kernel_voluntary, kernel_involuntary) =
            (total(&figures, "nvcsw")?, total(&figures, "nivcsw")?);
        let wait_error = relative_difference(wait, kernel_wait);
        let cpu_error = relative_difference(wait, cpu_time);
        println!(
            "runqueue attempt {attempt} on CPU {cpu}: wait {wait:.6} s vs the spinners' run_delay \
             {kernel_wait:.6} s, difference {:+.6} s ({:.3}%, bar 2%); vs the job's CPU \
             {cpu_time:.6} s (cpu.stat {kernel_cpu:.6} s) {:.2}% (bar 20% on a quiet CPU); \
             involuntary switches {involuntary} (kernel {kernel_involuntary}), voluntary \
             {voluntary} (kernel {kernel_voluntary})",
            wait - kernel_wait,
            wait_error * 100.0,
            cpu_error * 100.0
        );
        assert!(
            involuntary > 0.0,
            "no involuntary context switches for two spinners sharing CPU {cpu}"
        );
        // The kernel's own wait of the job's tasks: judged whatever else
        // ran on that CPU.
        assert!(
            wait_error <= RUN_DELAY_TOLERANCE,
            "run-queue wait {wait:.6} s is not within 2% of the kernel's run_delay of the job's two \
             spinners {kernel_wait:.6} s ({:+.6} s, {:.3}%)",
            wait - kernel_wait,
            wait_error * 100.0
        );
        // Work from outside the job on that CPU (another user of a shared
        // machine) makes the spinners wait longer than they run, by the
        // kernel's own account: then the premise of the 20% bar did not
        // hold, whatever the daemon says. Try again rather than judge the
        // daemon. (A daemon that is wrong on a quiet CPU still fails below.)
        if relative_difference(kernel_wait, kernel_cpu) > QUIET_CPU {
            println!(
                "runqueue attempt {attempt}: CPU {cpu} was busy with other work \
                 (kernel run_delay {kernel_wait:.6} s, cpu.stat {kernel_cpu:.6} s): again for the \
                 20% bar"
            );
            continue;
        }
        assert!(
            cpu_error <= WAIT_TOLERANCE,
            "run-queue wait {wait:.6} s is not within 20% of the job's CPU time {cpu_time:.6} s ({:.2}%); \
             the kernel's run_delay of the spinners was {kernel_wait:.6} s",
            cpu_error * 100.0
        );
        return Ok(());
    }
    panic!(
        "no CPU of {cpus:?} was left to the two spinners in {CONTENTION_ATTEMPTS} attempts \
         (other work on the machine): the 20% bar against the CPU time cannot be judged"
    );
}

/// A process that yields to a contender on its CPU (outside the job) until
/// the kernel counted 20,000 involuntary switches of it, then sleeps 1 µs
/// at a time until it counted 20,000 voluntary ones: the job's switches of
/// each kind within 0.5% of the process's own /proc/PID/status
/// voluntary_ctxt_switches and nonvoluntary_ctxt_switches, read as its last
/// act (its exit adds a few: the final switch away from a dead task is a
/// voluntary one).
#[test]
fn context_switches_match_proc_status() -> anyhow::Result<()> {
    const SWITCHES: u32 = 20_000;
    const TOLERANCE: f64 = 0.005;
    if !require_root_or_skip() {
        return Ok(());
    }
    // Two tasks pinned to one CPU, switching as fast as they can.
    let _machine = cpu_exclusive();
    let daemon = Daemon::start()?;
    let cpu = allowed_cpus()?[0];
    let job = daemon.create_job("switches")?;
    // Not in the job: the job's switches are the workload's alone.
    let contender = ChildGuard::spawn(
        pin_to_cpu(Command::new(WORKLOAD).arg("yield"), cpu),
        "a yielding contender",
    )?;
    let mut command = job.command(WORKLOAD)?;
    command.args(["switches", &SWITCHES.to_string(), &SWITCHES.to_string()]);
    let figures = run_to_end(
        pin_to_cpu(&mut command, cpu),
        "workload switches",
        "figures",
        BUSY_TIMEOUT,
    )?;
    contender.kill()?;
    let metrics = daemon.finish_job(&job, SETTLE_SAMPLES)?;

    let mut errors = Vec::new();
    for (kind, key, source) in [
        ("voluntary", "nvcsw", "voluntary_ctxt_switches"),
        ("involuntary", "nivcsw", "nonvoluntary_ctxt_switches"),
    ] {
        let ours = metrics.value(
            "monitor_job_context_switches_total",
            &[("jobid", "switches"), ("kind", kind)],
        )?;
        let kernel = figures.get(key)? as f64;
        let error = relative_difference(ours, kernel);
        println!(
            "context switches {kind}: monitor {ours:.0}, /proc/PID/status {source} {kernel:.0}, \
             difference {:+.0} ({:.4}%, bar 0.5%)",
            ours - kernel,
            error * 100.0
        );
        if kernel < f64::from(SWITCHES) {
            errors.push(format!(
                "the workload stopped at {kernel:.0} {kind} switches, short of {SWITCHES}: {}",
                figures.line
            ));
        }
        if error.is_nan() || error > TOLERANCE {
            errors.push(format!(
                "{kind} context switches {ours:.0} are not within 0.5% of the process's {source} \
                 {kernel:.0} ({:+.0}, {:.4}%)",
                ours - kernel,
                error * 100.0
            ));
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    Ok(())
}

/// CPU seconds a moved process spends in each of its two jobs.
const CPU_PER_JOB: f64 = 1.0;
/// The bar of each job's CPU against its own cgroup's cpu.stat.
const MOVED_TOLERANCE: f64 = 0.02;

/// `command` (a busy process, started in job A) uses CPU_PER_JOB of CPU in
/// A, is moved as a whole to job B (its pid written to B's cgroup.procs),
/// uses CPU_PER_JOB more there and is killed: each job's CPU within 2% of
/// its own cgroup's cpu.stat usage.
fn cpu_follows_a_move(
    daemon: &Daemon,
    from: &JobCgroup,
    to: &JobCgroup,
    command: &mut Command,
    what: &str,
) -> anyhow::Result<()> {
    let busy = ChildGuard::spawn(command, what)?;
    from.wait_for_cpu(CPU_PER_JOB, BUSY_TIMEOUT)?;
    let procs = to.dir.join("cgroup.procs");
    fs::write(&procs, busy.id().to_string())
        .with_context(|| format!("moving {what} to {}", procs.display()))?;
    to.wait_for_cpu(CPU_PER_JOB, BUSY_TIMEOUT)?;
    busy.kill()?;
    let metrics = daemon.metrics_after_samples(SETTLE_SAMPLES)?;

    let mut errors = Vec::new();
    for job in [from, to] {
        let ours = metrics.value(
            "monitor_job_cpu_seconds_total",
            &[("jobid", job.name.as_str())],
        )?;
        let kernel = job.cpu_usage_seconds()?;
        let error = relative_difference(ours, kernel);
        println!(
            "{what}, job {}: monitor {ours:.6} s, cpu.stat {kernel:.6} s, difference {:+.6} s \
             ({:.3}%, bar 2%)",
            job.name,
            ours - kernel,
            error * 100.0
        );
        if error.is_nan() || error > MOVED_TOLERANCE {
            errors.push(format!(
                "job {}: monitor_job_cpu_seconds_total {ours:.6} s is not within 2% of its cgroup's \
                 cpu.stat usage {kernel:.6} s ({:.3}%)",
                job.name,
                error * 100.0
            ));
        }
    }
    assert!(errors.is_empty(), "{what}:\n{}", errors.join("\n"));
    Ok(())
}

/// A busy process moved from one job to another mid-run: what it used
/// before the move stays with the job it left.
#[test]
fn cpu_follows_a_process_moved_between_jobs() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_exclusive();
    let daemon = Daemon::start()?;
    let from = daemon.create_job("moved-from")?;
    let to = daemon.create_job("moved-to")?;
    cpu_follows_a_move(
        &daemon,
        &from,
        &to,
        &mut sh(&from, BUSY_LOOP)?,
        "a busy process moved between jobs",
    )
}

/// The same for a process of three spinning threads moved as a whole: the
/// threads other than the one named in cgroup.procs move with it.
#[test]
fn cpu_follows_a_multithreaded_process_moved_between_jobs() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_exclusive();
    let daemon = Daemon::start()?;
    let from = daemon.create_job("threads-from")?;
    let to = daemon.create_job("threads-to")?;
    let mut command = from.command(WORKLOAD)?;
    command.args(["spin-threads", "3"]);
    cpu_follows_a_move(
        &daemon,
        &from,
        &to,
        &mut command,
        "three spinning threads moved between jobs",
    )
}

/// A process of more threads than the move's own thread walk reaches
/// (64), moved as a whole: the threads past it are found by the next
/// sample, which then walks every task of the node instead of only the
/// tracked ones. Every thread counts in the job it moved to, none in the
/// one it left.
#[test]
fn threads_past_the_move_walk_follow_their_process() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    const THREADS: u32 = 300;
    let _machine = cpu_shared();
    let daemon = Daemon::start()?;
    let from = daemon.create_job("many-threads-from")?;
    let to = daemon.create_job("many-threads-to")?;
    let mut command = from.command(WORKLOAD)?;
    command
        .args(["sleep-threads", &THREADS.to_string()])
        .stdout(std::process::Stdio::piped());
    let mut sleepers = ChildGuard::spawn(&mut command, "300 sleeping threads")?;
    sleepers.lines()?.expect("ready", BUSY_TIMEOUT)?;
    let tasks = |metrics: &Metrics, job: &JobCgroup| {
        metrics.value("monitor_job_tasks", &[("jobid", job.name.as_str())])
    };
    let all = f64::from(THREADS + 1);
    let (seen, metrics) = daemon.wait_for(10, |m| tasks(m, &from).is_ok_and(|n| n == all))?;
    assert!(
        seen,
        "job {} never showed {all} tasks:\n{}",
        from.name, metrics.text
    );

    let procs = to.dir.join("cgroup.procs");
    fs::write(&procs, sleepers.id().to_string())
        .with_context(|| format!("moving the sleepers to {}", procs.display()))?;
    let metrics = daemon.metrics_after_samples(2)?;
    let (left, arrived) = (tasks(&metrics, &from)?, tasks(&metrics, &to)?);
    let truncated = metrics.value(
        "monitor_bpf_lost_events_total",
        &[("reason", "thread_walk_truncated")],
    )?;
    println!(
        "{THREADS} threads and the main one moved: {left} tasks left in {}, {arrived} in {}; \
         thread walks cut short: {truncated}",
        from.name, to.name
    );
    sleepers.kill()?;
    assert!(
        truncated >= 1.0,
        "the move's thread walk was not cut short: {truncated}"
    );
    assert_eq!(
        (left, arrived),
        (0.0, all),
        "after the move and two samples every task must count in {} and none in {}",
        to.name,
        from.name
    );
    Ok(())
}

#[test]
fn processes_and_execs_counted() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    let daemon = Daemon::start()?;
    let job = daemon.create_job("forky")?;

    // The shell's own exec happens in the job (it joins between fork and
    // exec), its fork does not; then 50 fork+exec of /bin/true. Builtins
    // only otherwise, so nothing else forks or execs.
    const CHILDREN: u32 = 50;
    let script = format!("i=0; while [ $i -lt {CHILDREN} ]; do /bin/true; i=$((i+1)); done");
    run_ok(&mut sh(&job, &script)?, "the fork loop", RUN_TIMEOUT)?;

    let metrics = daemon.metrics_after_samples(SETTLE_SAMPLES)?;
    let labels = [("jobid", "forky")];
    let started = metrics.value("monitor_job_processes_started_total", &labels)?;
    let execs = metrics.value("monitor_job_execs_total", &labels)?;
    let exited = metrics.value("monitor_job_processes_exited_total", &labels)?;
    println!("processes: started {started}, execs {execs}, exited {exited}");
    let children = f64::from(CHILDREN);
    assert!(
        started >= children,
        "processes started {started}, expected at least {children}"
    );
    assert_eq!(
        execs,
        children + 1.0,
        "execs {execs}, expected exactly {} (the shell + {CHILDREN} children)",
        children + 1.0
    );
    assert!(
        exited >= children,
        "processes exited {exited}, expected at least {children}"
    );
    Ok(())
}

#[test]
fn short_job_is_counted() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    let daemon = Daemon::start()?;

    let born = Instant::now();
    let job = daemon.create_job("blink")?;
    run_ok(&mut job.command("/bin/true")?, "/bin/true", RUN_TIMEOUT)?;
    job.remove()?;
    let lifetime = born.elapsed();

    let finished = [("jobid", "blink"), ("state", "finished")];
    let (seen, metrics) = daemon.wait_for(10, |m| {
        m.find("monitor_job_info", &finished)
            .is_ok_and(|v| v.is_some())
    })?;
    println!("short job: lived {lifetime:?}, finished in /metrics: {seen}");
    assert!(
        seen,
        "job blink (lived {lifetime:?}) is not in /metrics as finished after 10 samples:\n{}",
        metrics.text
    );
    let execs = metrics.value("monitor_job_execs_total", &[("jobid", "blink")])?;
    assert!(
        execs >= 1.0,
        "job blink: execs {execs}, expected at least 1"
    );
    Ok(())
}
