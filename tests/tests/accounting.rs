//! Per-job accounting against the kernel's own numbers: CPU time, run-queue
//! wait, processes and execs, and jobs too short for any sampler.
use std::{
    process::Command,
    time::{Duration, Instant},
};

use monitor_tests::{
    ChildGuard, Daemon, JobCgroup, cpu_exclusive, cpu_shared,
    process::{allowed_cpus, pin_to_cpu, run_delay_seconds, run_ok},
    require_root_or_skip,
};

/// Pure user-space spinning: no syscalls, no forks (dash builtins only).
const BUSY_LOOP: &str = "while :; do :; done";
/// CPU seconds a busy job gets (by cpu.stat, not wall time, so other load
/// on the machine only makes the test slower).
const BUSY_CPU: f64 = 2.0;
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);
/// Enough samples after a workload ends for its last switch-out and the
/// per-CPU flush timer to have been read (the brief asks for at least 2).
const SETTLE_SAMPLES: u32 = 3;
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

/// The run-queue bar: the job's wait within 20% of its CPU time.
const WAIT_TOLERANCE: f64 = 0.20;
/// A CPU counts as left to the spinners when the kernel's own wait of them
/// is this close to their CPU time; tighter than the bar, so a daemon that
/// matches the kernel cannot fail it by the kernel's noise alone.
const QUIET_CPU: f64 = 0.10;
/// Attempts at getting a CPU to the two spinners alone (see below).
const CONTENTION_ATTEMPTS: usize = 4;

/// Two equal spinners of one job pinned to one CPU until the job has used
/// BUSY_CPU: each runs half the time and waits the other half. Returns the
/// kernel's own run-queue wait of the spinners (/proc/PID/schedstat).
fn contend(job: &JobCgroup, cpu: usize) -> anyhow::Result<f64> {
    let spinners = (0..2)
        .map(|i| {
            ChildGuard::spawn(
                pin_to_cpu(&mut sh(job, BUSY_LOOP)?, cpu),
                &format!("spinner {i} on CPU {cpu}"),
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    job.wait_for_cpu(BUSY_CPU, BUSY_TIMEOUT)?;
    let mut kernel_wait = 0.0;
    for spinner in spinners {
        kernel_wait += run_delay_seconds(spinner.id())?;
        spinner.kill()?;
    }
    Ok(kernel_wait)
}

fn relative_difference(a: f64, b: f64) -> f64 {
    (a - b).abs() / b
}

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
        let kernel_wait = contend(&job, cpu)?;
        let kernel_cpu = job.cpu_usage_seconds()?;
        // Work from outside the job on that CPU (another user of a shared
        // machine) makes the spinners wait longer than they run, by the
        // kernel's own account: then the premise of the bar did not hold,
        // whatever the daemon says. Try again rather than judge the daemon.
        // (A daemon that is wrong on a quiet CPU still fails below.)
        if relative_difference(kernel_wait, kernel_cpu) > QUIET_CPU {
            println!(
                "runqueue attempt {attempt}: CPU {cpu} was busy with other work \
                 (kernel run_delay {kernel_wait:.6} s, cpu.stat {kernel_cpu:.6} s)"
            );
            continue;
        }

        let metrics = daemon.metrics_after_samples(SETTLE_SAMPLES)?;
        let labels = [("jobid", name.as_str())];
        let cpu_time = metrics.value("monitor_job_cpu_seconds_total", &labels)?;
        let wait = metrics.value("monitor_job_runqueue_wait_seconds_total", &labels)?;
        let involuntary = metrics.value(
            "monitor_job_context_switches_total",
            &[("jobid", name.as_str()), ("kind", "involuntary")],
        )?;
        let error = relative_difference(wait, cpu_time);
        println!(
            "runqueue: wait {wait:.6} s (kernel run_delay {kernel_wait:.6} s), cpu {cpu_time:.6} s \
             (cpu.stat {kernel_cpu:.6} s), difference {:.2}%, involuntary switches {involuntary}",
            error * 100.0
        );
        assert!(
            involuntary > 0.0,
            "no involuntary context switches for two spinners sharing CPU {cpu}"
        );
        assert!(
            error <= WAIT_TOLERANCE,
            "run-queue wait {wait:.6} s is not within 20% of the job's CPU time {cpu_time:.6} s ({:.2}%); \
             the kernel's run_delay of the spinners was {kernel_wait:.6} s",
            error * 100.0
        );
        return Ok(());
    }
    panic!(
        "no CPU of {cpus:?} was left to the two spinners in {CONTENTION_ATTEMPTS} attempts \
         (other work on the machine): the run-queue bar cannot be judged"
    );
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
