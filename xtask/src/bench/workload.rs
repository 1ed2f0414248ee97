//! What a job does during a cost window: enough of every event the monitor
//! hooks, all inside the job's cgroup, so the programs take their job path
//! (map lookups that hit) rather than the cheap "not a job" exit.
use std::{fs, path::Path, process::Command};

use anyhow::{Context as _, bail};

use super::{cgroup, pingpong};

/// Processes started (fork, exec, exit) per window.
const EXECS: u32 = 200;
/// Child cgroups made and removed in the job per window.
const NESTED_CGROUPS: u32 = 20;

pub fn run(job: &Path, cpu: usize, round_trips: u32) -> anyhow::Result<()> {
    // sched_switch, sched_wakeup.
    pingpong::run(job, cpu, round_trips)?;
    // task_newtask, sched_wakeup_new, sched_process_exec, sched_process_exit.
    fork_exec(job, EXECS)?;
    // cgroup_mkdir, cgroup_rmdir.
    nested_cgroups(job, NESTED_CGROUPS)
}

fn fork_exec(job: &Path, count: u32) -> anyhow::Result<()> {
    // /bin/true, not the shell's builtin: every iteration must fork and exec.
    let script = format!("i=0; while [ $i -lt {count} ]; do /bin/true; i=$((i+1)); done");
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script]);
    let status = cgroup::spawn_in(&mut cmd, job)?
        .wait()
        .context("waiting for the fork/exec loop")?;
    if !status.success() {
        bail!("the fork/exec loop failed: {status}");
    }
    Ok(())
}

fn nested_cgroups(job: &Path, count: u32) -> anyhow::Result<()> {
    for i in 0..count {
        let dir = job.join(format!("nested-{i}"));
        fs::create_dir(&dir).with_context(|| format!("creating cgroup {}", dir.display()))?;
        fs::remove_dir(&dir).with_context(|| format!("removing cgroup {}", dir.display()))?;
    }
    Ok(())
}
