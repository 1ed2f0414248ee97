//! A memory limit for one job's workload, set where the host lets us:
//!
//! - pure cgroup v2 (the memory controller on the v2 hierarchy): the job
//!   cgroup's own `memory.max`;
//! - hybrid hosts (memory controller on a v1 hierarchy, none on v2): a
//!   child v1 memory cgroup made below this process's own v1 memory cgroup,
//!   with `memory.limit_in_bytes`. The workload joins it between fork and
//!   exec, besides its v2 job cgroup. Being a child, it keeps every limit
//!   of the cgroup this process lives in; nothing ever leaves its v1 cgroup
//!   for anything but a child of it.
use std::{
    fs, io,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicUsize, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow};

use crate::cgroup::JobCgroup;

#[derive(Debug)]
pub enum MemoryLimit {
    /// `memory.max` of a v2 cgroup (the job's, or an ancestor of jobs).
    V2 { dir: PathBuf },
    /// A child v1 memory cgroup of ours, removed on drop.
    V1 { dir: PathBuf },
}

impl MemoryLimit {
    /// Limits the memory of what runs in `job` to `bytes` (swap included
    /// where the host has a knob for it). `Ok(Err(why))` when this host lets
    /// no limit be set.
    pub fn apply(job: &JobCgroup, bytes: u64) -> anyhow::Result<Result<Self, String>> {
        Self::apply_below(&job.dir, bytes)
    }

    /// Like [`MemoryLimit::apply`], one limit shared by everything below the
    /// v2 cgroup `dir` (e.g. the daemon's root, for several jobs) and
    /// everything that [joins](MemoryLimit::join) it.
    pub fn apply_below(dir: &Path, bytes: u64) -> anyhow::Result<Result<Self, String>> {
        if v2_has_memory(dir)? {
            return Self::v2(dir, bytes).map(Ok);
        }
        match own_v1_memory_cgroup()? {
            Ok(parent) => Self::v1(&parent, bytes).map(Ok),
            Err(why) => Ok(Err(format!(
                "no memory controller on the cgroup v2 hierarchy of {} and {why}",
                dir.display()
            ))),
        }
    }

    fn v2(dir: &Path, bytes: u64) -> anyhow::Result<Self> {
        let max = dir.join("memory.max");
        if !max.exists() {
            // The controller is on the hierarchy but not given to this
            // cgroup yet: enable it in its parent.
            let parent = dir
                .parent()
                .context("a v2 cgroup below the root has a parent")?;
            let control = parent.join("cgroup.subtree_control");
            fs::write(&control, "+memory").with_context(|| {
                format!("enabling the memory controller in {}", control.display())
            })?;
        }
        write(&max, bytes)?;
        let swap = dir.join("memory.swap.max");
        if swap.exists() {
            write(&swap, 0)?;
        }
        Ok(Self::V2 {
            dir: dir.to_path_buf(),
        })
    }

    fn v1(parent: &Path, bytes: u64) -> anyhow::Result<Self> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = parent.join(format!("monitor-test-{}-{n}", std::process::id()));
        fs::create_dir(&dir)
            .with_context(|| format!("creating the v1 memory cgroup {}", dir.display()))?;
        let limit = Self::V1 { dir: dir.clone() };
        write(&dir.join("memory.limit_in_bytes"), bytes)?;
        // No swapping out instead of the OOM kill (where the host has swap).
        let swappiness = dir.join("memory.swappiness");
        if swappiness.exists() {
            write(&swappiness, 0)?;
        }
        let memsw = dir.join("memory.memsw.limit_in_bytes");
        if memsw.exists() {
            write(&memsw, bytes)?;
        }
        Ok(limit)
    }

    /// Where the limit is, for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::V2 { dir } => format!("memory.max of {}", dir.display()),
            Self::V1 { dir } => format!("memory.limit_in_bytes of the v1 cgroup {}", dir.display()),
        }
    }

    /// Makes `command` join the limited cgroup too, between fork and exec
    /// (for v2 nothing: a job's command joins its job, below the limit).
    pub fn join(&self, command: &mut Command) -> anyhow::Result<()> {
        let Self::V1 { dir } = self else {
            return Ok(());
        };
        crate::cgroup::join_before_exec(command, dir)
    }

    /// The kernel's own count of OOM kills in the limited cgroup:
    /// `oom_kill` of memory.events (v2) or memory.oom_control (v1).
    pub fn kernel_oom_kills(&self) -> anyhow::Result<u64> {
        let file = match self {
            Self::V2 { dir } => dir.join("memory.events"),
            Self::V1 { dir } => dir.join("memory.oom_control"),
        };
        let text =
            fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .with_context(|| format!("no oom_kill in {}:\n{text}", file.display()))?
            .trim()
            .parse()
            .with_context(|| format!("bad oom_kill in {}", file.display()))
    }
}

impl Drop for MemoryLimit {
    fn drop(&mut self) {
        let Self::V1 { dir } = self else {
            return;
        };
        // Its processes are gone by now (killed, or killed with the test's
        // job tree); rmdir may see EBUSY for a moment after the last left.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match fs::remove_dir(&*dir) {
                Ok(()) => return,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    eprintln!("removing the v1 memory cgroup {}: {e}", dir.display());
                    return;
                }
            }
        }
    }
}

fn write(file: &Path, value: u64) -> anyhow::Result<()> {
    fs::write(file, value.to_string())
        .with_context(|| format!("writing {value} to {}", file.display()))
}

/// Can the v2 cgroup `dir` have the memory controller (is it available to
/// its parent)?
fn v2_has_memory(dir: &Path) -> anyhow::Result<bool> {
    let parent = dir
        .parent()
        .context("a v2 cgroup below the root has a parent")?;
    let controllers = parent.join("cgroup.controllers");
    let text = fs::read_to_string(&controllers)
        .with_context(|| format!("reading {}", controllers.display()))?;
    Ok(text.split_whitespace().any(|c| c == "memory"))
}

/// This process's v1 memory cgroup directory, or why there is none.
fn own_v1_memory_cgroup() -> anyhow::Result<Result<PathBuf, String>> {
    let mountinfo =
        fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    let Some(mount) = v1_memory_mount(&mountinfo) else {
        return Ok(Err(
            "no cgroup v1 hierarchy with the memory controller is mounted".into(),
        ));
    };
    let cgroups = fs::read_to_string("/proc/self/cgroup").context("reading /proc/self/cgroup")?;
    let path = own_v1_memory_path(&cgroups)
        .ok_or_else(|| anyhow!("no memory line in /proc/self/cgroup:\n{cgroups}"))?;
    let dir = mount.join(path.trim_start_matches('/'));
    if !dir.join("memory.limit_in_bytes").exists() {
        return Ok(Err(format!(
            "{} (this process's v1 memory cgroup) has no memory.limit_in_bytes",
            dir.display()
        )));
    }
    Ok(Ok(dir))
}

/// Where the v1 hierarchy with the memory controller is mounted.
fn v1_memory_mount(mountinfo: &str) -> Option<PathBuf> {
    crate::cgroup::v1_mount_in("memory", mountinfo)
}

/// The path of `N:memory:/path` in /proc/PID/cgroup text (a line may name
/// several controllers): where a process sits in the v1 memory hierarchy.
pub fn own_v1_memory_path(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then_some(path)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_v1_memory_hierarchy_and_our_place_in_it() {
        let mountinfo = "\
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 35 0:39 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
43 35 0:40 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct";
        assert_eq!(
            v1_memory_mount(mountinfo),
            Some(PathBuf::from("/sys/fs/cgroup/memory"))
        );
        assert_eq!(
            v1_memory_mount("41 31 0:38 / /x rw - cgroup2 cgroup2 rw"),
            None
        );
        let cgroups = "5:devices:/\n4:memory:/process_api/abc\n2:cpu,cpuacct:/\n0::/";
        assert_eq!(own_v1_memory_path(cgroups), Some("/process_api/abc"));
        assert_eq!(own_v1_memory_path("0::/user.slice"), None);
    }
}
