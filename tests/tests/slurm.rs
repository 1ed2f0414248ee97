//! Slurm jobs monitored with no change to their scripts: a real slurmctld
//! and slurmd (Debian's 22.05, cgroup/v1 plugins on this hybrid host) run
//! jobs as a normal user, and a daemon with its default discovery layouts
//! finds them. One test, in order: Slurm is one per machine.
use std::{fs, time::Duration};

use anyhow::Context as _;
use monitor_tests::{
    Daemon, Metrics,
    cgroup::v1_mount,
    cpu_exclusive, require_root_or_skip,
    slurm::{Slurm, USER},
};

const WORKLOAD: &str = env!("CARGO_BIN_EXE_workload");
const CPU_TOLERANCE: f64 = 0.02;
const JOB_TIMEOUT: Duration = Duration::from_secs(60);

fn cpu_of(metrics: &Metrics, jobid: &str) -> anyhow::Result<f64> {
    metrics.value(
        "monitor_job_cpu_seconds_total",
        &[("jobid", jobid), ("user", USER)],
    )
}

fn state_of(metrics: &Metrics, jobid: &str) -> Option<&'static str> {
    ["running", "finished"].into_iter().find(|state| {
        metrics
            .find("monitor_job_info", &[("jobid", jobid), ("state", state)])
            .is_ok_and(|v| v.is_some())
    })
}

/// Job `jobid`'s CPU by the daemon against its job cgroup's cpuacct.usage,
/// both read while the job sleeps after its work (neither moves).
fn compare_while_asleep(
    daemon: &Daemon,
    slurm: &Slurm,
    jobid: &str,
    expected_cpu: f64,
) -> anyhow::Result<()> {
    let (done, _) = daemon.wait_for(30, |m| {
        cpu_of(m, jobid).is_ok_and(|cpu| cpu >= expected_cpu * 0.98)
    })?;
    assert!(done, "job {jobid} never showed {expected_cpu} s of CPU");
    let metrics = daemon.metrics_after_samples(1)?;
    let ours = cpu_of(&metrics, jobid)?;
    let usage = slurm
        .job_dir(&v1_mount("cpuacct")?, jobid)
        .join("cpuacct.usage");
    let kernel: f64 = fs::read_to_string(&usage)
        .with_context(|| format!("reading {}", usage.display()))?
        .trim()
        .parse::<f64>()?
        / 1e9;
    let error = (ours - kernel).abs() / kernel;
    println!(
        "Slurm job {jobid}: monitor {ours:.6} s, cpuacct.usage {kernel:.6} s ({:.3}%, bar 2%)",
        error * 100.0
    );
    assert!(
        error <= CPU_TOLERANCE,
        "Slurm job {jobid}: {ours:.6} s is not within 2% of its cpuacct.usage {kernel:.6} s"
    );
    allocation_matches(&metrics, slurm, jobid)
}

/// What Slurm gave job `jobid` (its cpuset's CPUs, its memory limit), as
/// the daemon reports it and as the job's v1 cgroups say.
fn allocation_matches(metrics: &Metrics, slurm: &Slurm, jobid: &str) -> anyhow::Result<()> {
    let read = |controller: &str, file: &str| -> anyhow::Result<String> {
        let path = slurm.job_dir(&v1_mount(controller)?, jobid).join(file);
        fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    };
    let cpus: f64 = read("cpuset", "cpuset.cpus")?
        .trim()
        .split(',')
        .map(|part| match part.split_once('-') {
            Some((a, b)) => b.parse::<f64>().unwrap_or(0.0) - a.parse::<f64>().unwrap_or(0.0) + 1.0,
            None => 1.0,
        })
        .sum();
    let limit: f64 = read("memory", "memory.limit_in_bytes")?.trim().parse()?;
    let job = [("jobid", jobid), ("user", USER)];
    let ours = (
        metrics.value("monitor_job_cpus_allocated", &job)?,
        metrics.value("monitor_job_memory_limit_bytes", &job)?,
    );
    println!(
        "Slurm job {jobid}: allocated {ours:?} (cpus, memory limit), cgroups say ({cpus}, {limit})"
    );
    assert_eq!(
        ours,
        (cpus, limit),
        "job {jobid}'s allocation against its cgroups"
    );
    Ok(())
}

#[test]
fn slurm_jobs_are_monitored_without_changing_their_scripts() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_exclusive();
    let slurm = Slurm::start()?;
    let daemon = Daemon::start_discovering(&[])?;

    // A batch job of a normal user: Slurm's id, the user, its CPU.
    let busy = slurm.sbatch(&format!("{WORKLOAD} spin 2000; sleep 4"))?;
    slurm.wait_running(&busy, JOB_TIMEOUT)?;
    compare_while_asleep(&daemon, &slurm, &busy, 2.0)?;
    slurm.wait_done(&busy, JOB_TIMEOUT)?;

    // Two tasks of an srun step both count in the job. Each task is in
    // the job's freezer cgroup (where proctrack puts it, and where it is
    // counted from) some 10 ms before task/cgroup puts it in cpuacct: long
    // enough tasks keep that within the bar.
    let steps = slurm.sbatch_with(
        &["--ntasks=2"],
        &format!("srun -n 2 {WORKLOAD} spin 2500; sleep 4"),
    )?;
    slurm.wait_running(&steps, JOB_TIMEOUT)?;
    compare_while_asleep(&daemon, &slurm, &steps, 5.0)?;
    slurm.wait_done(&steps, JOB_TIMEOUT)?;

    // `monitor run` inside a job step joins the job: its label on the
    // job's series, no second job.
    let monitor = monitor_tests::daemon::binary()?;
    let joined = slurm.sbatch(&format!(
        "MONITOR_SOCKET={} srun {} run --require --label k=v -- {WORKLOAD} spin 300",
        daemon.socket().display(),
        monitor.display()
    ))?;
    slurm.wait_done(&joined, JOB_TIMEOUT)?;
    let labelled = [("jobid", joined.as_str()), ("label_k", "v")];
    let (seen, metrics) = daemon.wait_for(10, |m| {
        m.find("monitor_job_info", &labelled)
            .is_ok_and(|v| v.is_some())
    })?;
    assert!(
        seen,
        "job {joined} has no k=v label from monitor run:\n{}",
        metrics.text
    );
    // `monitor run` takes SLURM_JOB_ID as its job id: a job of its own
    // would be a second series of that id, or this one in a task cgroup.
    let of_job = [("jobid", joined.as_str())];
    let infos: Vec<_> = metrics.matching("monitor_job_info", &of_job).collect();
    assert_eq!(
        infos.len(),
        1,
        "two series of job {joined}:\n{}",
        metrics.text
    );
    let cgroup = infos[0]
        .labels
        .get("cgroup")
        .map(String::as_str)
        .unwrap_or("");
    assert!(
        cgroup.starts_with("freezer:/"),
        "job {joined} is not Slurm's cgroup but {cgroup:?}: monitor run made its own"
    );

    // A 100 ms job, and 20 jobs in a row: every one is kept.
    let short = slurm.sbatch(&format!("{WORKLOAD} spin 100"))?;
    let mut row = Vec::new();
    for _ in 0..20 {
        row.push(slurm.sbatch("true")?);
    }
    slurm.wait_done(&short, JOB_TIMEOUT)?;
    for id in &row {
        slurm.wait_done(id, JOB_TIMEOUT)?;
    }
    let all_finished = |m: &Metrics| {
        std::iter::once(&short)
            .chain(&row)
            .all(|id| state_of(m, id) == Some("finished"))
    };
    let (seen, metrics) = daemon.wait_for(20, all_finished)?;
    let missing: Vec<&String> = std::iter::once(&short)
        .chain(&row)
        .filter(|id| state_of(&metrics, id) != Some("finished"))
        .collect();
    assert!(
        seen,
        "Slurm jobs not shown finished: {missing:?}\n{}",
        metrics.text
    );
    let short_cpu = cpu_of(&metrics, &short)?;
    println!("100 ms Slurm job {short}: monitor {short_cpu:.6} s");
    assert!(
        short_cpu >= 0.1,
        "the 100 ms job's CPU {short_cpu} s is short of its 100 ms"
    );
    Ok(())
}
