//! The "processes" workload of the cost benchmark: task lifecycle events,
//! all inside a job, so the programs on them take their job path: processes
//! forked, exec'd and exited, cgroups made and removed, a process moved
//! between cgroups, and (where a memory limit can be set) an OOM kill.
use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};
use monitor_tests::cgroup::{remove_tree, spawn_in};

use super::job_workloads::{self, MemoryLimit};

/// Processes started (fork, exec, exit) per run.
pub const EXECS: u32 = 200;
/// Child cgroups made and removed in the job per run.
pub const NESTED_CGROUPS: u32 = 20;
/// Moves of one process between two child cgroups of the job per run.
pub const MOVES: u32 = 100;
/// The memory limit of the OOM-killed process.
pub const OOM_LIMIT: u64 = 32 << 20;

/// One run: every event in `job`; the OOM kill in `oom_job` (limited by
/// `limit`) when there is a limit.
pub fn run(job: &Path, oom_job: &Path, limit: Option<&MemoryLimit>) -> anyhow::Result<()> {
    // task_newtask, sched_process_exec, sched_process_exit, sched_process_free.
    fork_exec(job, EXECS)?;
    // cgroup_mkdir, cgroup_rmdir.
    nested_cgroups(job, NESTED_CGROUPS)?;
    // cgroup_attach_task.
    moves(job, MOVES)?;
    // oom_mark_victim.
    if let Some(limit) = limit {
        job_workloads::oom_kill(oom_job, limit)?;
    }
    Ok(())
}

fn fork_exec(job: &Path, count: u32) -> anyhow::Result<()> {
    // /bin/true, not the shell's builtin: every iteration must fork and exec.
    let script = format!("i=0; while [ $i -lt {count} ]; do /bin/true; i=$((i+1)); done");
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script]);
    let status = spawn_in(&mut cmd, job)?
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

fn moves(job: &Path, count: u32) -> anyhow::Result<()> {
    let dirs = [job.join("move-a"), job.join("move-b")];
    for dir in &dirs {
        fs::create_dir(dir).with_context(|| format!("creating cgroup {}", dir.display()))?;
    }
    let mut cmd = Command::new("sleep");
    cmd.arg("3600").stdin(Stdio::null());
    let mut child = spawn_in(&mut cmd, &dirs[0])?;
    let pid = child.id().to_string();
    let moved = (0..count).try_for_each(|i| {
        let procs = dirs[(i as usize + 1) % 2].join("cgroup.procs");
        fs::write(&procs, &pid).with_context(|| format!("moving {pid} to {}", procs.display()))
    });
    let _ = child.kill();
    let _ = child.wait();
    for dir in &dirs {
        remove_tree(dir)?;
    }
    moved
}
