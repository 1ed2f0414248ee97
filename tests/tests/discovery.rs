//! Resource managers' job cgroups found where they are made and counted in
//! place, with no registration: Slurm's v1 layout (this machine is a hybrid
//! host: the job's tasks sit in v1 cgroups only) and its v2 layouts, made
//! by hand as Slurm makes them, with real processes in them. Each test uses
//! layouts of its own (a unique top directory), so test daemons running
//! side by side never find each other's jobs.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::Context as _;
use monitor_tests::{
    Daemon, JobCgroup,
    accuracy::{CPU_TOLERANCE, relative_difference},
    cgroup::{join_before_exec, v1_mount, v2_mount},
    cpu_shared, require_root_or_skip,
    workload::run_to_end,
};

const WORKLOAD: &str = env!("CARGO_BIN_EXE_workload");
/// CPU each job's process uses.
const SPIN_MS: u64 = 1500;
const RUN_TIMEOUT: Duration = Duration::from_secs(30);
/// The uid the v2 jobs' tasks run as (no user of that name needed).
const JOB_UID: u32 = 4243;

/// Directories made for a test, removed deepest first when it ends.
struct Dirs(Vec<PathBuf>);

impl Dirs {
    fn make(&mut self, dir: PathBuf) -> anyhow::Result<PathBuf> {
        fs::create_dir_all(&dir).with_context(|| format!("making {}", dir.display()))?;
        self.0.push(dir.clone());
        Ok(dir)
    }

    /// Removes `dir` and the parents made with it below `top`.
    fn remove(&mut self, dir: &Path, top: &Path) {
        let mut at = Some(dir);
        while let Some(d) = at {
            if d == top || !d.starts_with(top) {
                break;
            }
            let _ = fs::remove_dir(d);
            at = d.parent();
        }
        let _ = fs::remove_dir(top);
    }
}

impl Drop for Dirs {
    fn drop(&mut self) {
        let mut dirs = std::mem::take(&mut self.0);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for dir in dirs {
            for d in dir.ancestors().take(4) {
                let _ = fs::remove_dir(d);
            }
        }
    }
}

/// A busy process of `SPIN_MS` in each of `dirs` (joined before exec), to its end.
fn spin_in(dirs: &[&Path]) -> anyhow::Result<()> {
    let mut command = Command::new(WORKLOAD);
    command.args(["spin", &SPIN_MS.to_string()]);
    spin(command, dirs)
}

/// The same, run as `uid` with `env` added (it joins the cgroups as root,
/// then drops to the uid).
fn spin_as(uid: u32, env: &[(&str, &str)], dirs: &[&Path]) -> anyhow::Result<()> {
    let mut command = Command::new("setpriv");
    command
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
            WORKLOAD,
            "spin",
            &SPIN_MS.to_string(),
        ])
        .envs(env.iter().copied());
    spin(command, dirs)
}

fn spin(mut command: Command, dirs: &[&Path]) -> anyhow::Result<()> {
    for dir in dirs {
        join_before_exec(&mut command, dir)?;
    }
    run_to_end(&mut command, "a busy process", "figures", RUN_TIMEOUT)?;
    Ok(())
}

/// Slurm's v1 layout, `freezer:/slurm_<node>/uid_<uid>/job_<id>/step_<step>`
/// (with the same tree in cpuacct, as task/cgroup makes it): the job is
/// found with Slurm's id and the uid of its path, its CPU matches the job's
/// cpuacct.usage, and it ends when Slurm removes its directories.
#[test]
fn a_slurm_v1_job_is_found_and_counted_in_place() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    let (freezer, cpuacct) = (v1_mount("freezer")?, v1_mount("cpuacct")?);
    let top = format!("slurm_t{}", std::process::id());
    let layout = format!("freezer:^/{top}/uid_(?P<uid>[0-9]+)/job_(?P<jobid>[0-9]+)$");
    let mut daemon = Daemon::start_with(&["--discover.layout", &layout])?;

    let mut dirs = Dirs(Vec::new());
    let step = |mount: &Path| mount.join(&top).join("uid_4242/job_901/step_batch");
    let freezer_step = dirs.make(step(&freezer))?;
    let cpuacct_step = dirs.make(step(&cpuacct))?;
    spin_in(&[&freezer_step, &cpuacct_step])?;
    // Its sockets' v2 cgroup is the root: they are the job's by the
    // socket's creator. The workload's client socket sends the payload;
    // the socket the kernel makes for the accepting side is made by no
    // task of the job (see README, Slurm), so only tx is checked.
    const PAYLOAD: u64 = 20_000_000;
    let mut net = Command::new(WORKLOAD);
    net.args(["net", &PAYLOAD.to_string()]);
    // In the cpuacct step too: its CPU is the job's, and cpuacct.usage
    // must see it (a busy machine makes it 2% of the spin's).
    join_before_exec(&mut net, &freezer_step)?;
    join_before_exec(&mut net, &cpuacct_step)?;
    run_to_end(&mut net, "loopback TCP", "net", RUN_TIMEOUT)?;
    let metrics = daemon.metrics_after_samples(2)?;
    let sent = metrics.value(
        "monitor_job_network_bytes_total",
        &[("jobid", "901"), ("direction", "tx")],
    )?;
    println!("v1 job 901 network tx: {sent:.0} B for a payload of {PAYLOAD} B");
    assert!(
        (PAYLOAD as f64..=PAYLOAD as f64 * 1.05).contains(&sent),
        "v1 job 901 sent {sent:.0} B against a payload of {PAYLOAD} B"
    );

    let job = [("jobid", "901"), ("user", "4242")];
    let ours = metrics.value("monitor_job_cpu_seconds_total", &job)?;
    let usage_ns: f64 = fs::read_to_string(cpuacct_step.join("cpuacct.usage"))?
        .trim()
        .parse()?;
    let kernel = usage_ns / 1e9;
    let error = relative_difference(ours, kernel);
    println!(
        "v1 job 901: monitor {ours:.6} s, cpuacct.usage {kernel:.6} s ({:.3}%, bar 2%)",
        error * 100.0
    );
    assert!(
        error <= CPU_TOLERANCE,
        "the v1 job's CPU {ours:.6} s is not within 2% of its cpuacct.usage {kernel:.6} s"
    );
    let cgroup = format!("freezer:/{top}/uid_4242/job_901");
    assert!(
        metrics
            .find(
                "monitor_job_info",
                &[("jobid", "901"), ("cgroup", &cgroup), ("state", "running")]
            )?
            .is_some(),
        "job 901 is not running with cgroup {cgroup}:\n{}",
        metrics.text
    );

    // A restart (killed, so nothing is saved at exit) keeps the job and
    // what it counted: the registry and the pinned programs carry it.
    daemon.kill9()?;
    daemon.restart()?;
    let metrics = daemon.metrics_after_samples(1)?;
    let after = metrics.value("monitor_job_cpu_seconds_total", &job)?;
    println!("after a restart: {after:.6} s");
    assert!(
        relative_difference(after, ours) <= 0.001,
        "job 901 counted {ours:.6} s before a restart and {after:.6} s after"
    );

    // Slurm removes the job's directories at its end: the job ends.
    dirs.remove(&freezer_step, &freezer.join(&top));
    dirs.remove(&cpuacct_step, &cpuacct.join(&top));
    let finished = [("jobid", "901"), ("state", "finished")];
    let (seen, metrics) = daemon.wait_for(10, |m| {
        m.find("monitor_job_info", &finished)
            .is_ok_and(|v| v.is_some())
    })?;
    assert!(
        seen,
        "job 901 did not finish when its directories went:\n{}",
        metrics.text
    );
    Ok(())
}

/// Slurm's v2 layouts, `.../slurmstepd.scope/job_<id>/step_<step>` and
/// (several slurmd on one host) `.../<node>_slurmstepd.scope/job_<id>`:
/// each job's CPU matches its job cgroup's cpu.stat; its user is the uid
/// its tasks run as (the directories are root's, as Slurm makes them); the
/// scope's own `system` cgroup is no job.
#[test]
fn slurm_v2_jobs_are_found_under_both_scope_names() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    let mount = v2_mount()?;
    let top = format!("slurm-t{}.slice", std::process::id());
    let layout = format!(
        r"^/{}/(?:[^/]+_)?slurmstepd\.scope/job_(?P<jobid>[0-9]+)$",
        top.replace('.', r"\.")
    );
    let daemon = Daemon::start_with(&["--discover.layout", &layout])?;

    let mut dirs = Dirs(Vec::new());
    let mut jobs = Vec::new();
    for (scope, jobid) in [("slurmstepd.scope", "11"), ("n1_slurmstepd.scope", "12")] {
        let scope = dirs.make(mount.join(&top).join(scope))?;
        dirs.make(scope.join("system"))?;
        let job = JobCgroup::create(&scope, &format!("job_{jobid}"))?;
        dirs.0.push(job.dir.clone());
        let step = dirs.make(job.dir.join("step_0"))?;
        spin_as(JOB_UID, &[], &[&step])?;
        jobs.push((jobid, job));
    }
    let metrics = daemon.metrics_after_samples(2)?;
    let mut errors = Vec::new();
    for (jobid, job) in &jobs {
        let ours = metrics.value(
            "monitor_job_cpu_seconds_total",
            &[("jobid", jobid), ("user", &JOB_UID.to_string())],
        )?;
        let kernel = job.cpu_usage_seconds()?;
        let error = relative_difference(ours, kernel);
        println!(
            "v2 job {jobid}: monitor {ours:.6} s, cpu.stat {kernel:.6} s ({:.3}%, bar 2%)",
            error * 100.0
        );
        if error > CPU_TOLERANCE {
            errors.push(format!(
                "job {jobid}: {ours:.6} s against cpu.stat {kernel:.6} s"
            ));
        }
    }
    let running = metrics.value("monitor_jobs", &[("state", "running")])?;
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    assert_eq!(
        running, 2.0,
        "two jobs, the scopes' `system` cgroups none:\n{}",
        metrics.text
    );
    Ok(())
}

/// Slurm 26.05 names v2 job directories by SLUID (without
/// `CgroupJobIdPaths=yes`): a layout capturing `sluid` takes the job's id
/// from its tasks' `SLURM_JOB_ID`, as CEEMS does.
#[test]
fn a_sluid_named_job_takes_its_id_from_its_tasks() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    let mount = v2_mount()?;
    let top = format!("sluid-t{}.slice", std::process::id());
    let layout = format!(
        r"^/{}/slurmstepd\.scope/job_(?P<sluid>s[0-9A-Za-z]+)$",
        top.replace('.', r"\.")
    );
    let daemon = Daemon::start_with(&["--discover.layout", &layout])?;
    let mut dirs = Dirs(Vec::new());
    let scope = dirs.make(mount.join(&top).join("slurmstepd.scope"))?;
    let job = JobCgroup::create(&scope, "job_s1Z8Kq4")?;
    dirs.0.push(job.dir.clone());
    let step = dirs.make(job.dir.join("step_batch"))?;
    spin_as(JOB_UID, &[("SLURM_JOB_ID", "7731")], &[&step])?;
    let metrics = daemon.metrics_after_samples(2)?;
    let uid = JOB_UID.to_string();
    let ours = metrics.value(
        "monitor_job_cpu_seconds_total",
        &[("jobid", "7731"), ("user", &uid)],
    )?;
    let kernel = job.cpu_usage_seconds()?;
    println!("SLUID job 7731: monitor {ours:.6} s, cpu.stat {kernel:.6} s");
    assert!(relative_difference(ours, kernel) <= CPU_TOLERANCE);
    assert!(
        metrics
            .find("monitor_job_info", &[("jobid", "s1Z8Kq4")])?
            .is_none(),
        "the job is shown under its SLUID too:\n{}",
        metrics.text
    );
    Ok(())
}
