//! Job cgroups on the v2 hierarchy: make them, run commands inside them,
//! read their own accounting, and tear a whole test root down. The
//! benchmarks (`cargo xtask bench`) use these too.
use std::{
    ffi::CString,
    fs, io,
    os::unix::{ffi::OsStrExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};

/// Where the cgroup v2 hierarchy is mounted (hybrid hosts: usually
/// /sys/fs/cgroup/unified; pure v2: /sys/fs/cgroup), from mountinfo.
pub fn v2_mount() -> anyhow::Result<PathBuf> {
    let text =
        fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    v2_mount_in(&text).ok_or_else(|| anyhow!("no cgroup2 entry in /proc/self/mountinfo"))
}

/// Where mountinfo text has the cgroup v2 hierarchy mounted.
pub fn v2_mount_in(mountinfo: &str) -> Option<PathBuf> {
    v2_mount_fields(mountinfo).map(|(mount_point, _, _)| mount_point)
}

/// mountinfo's cgroup v2 line: the mount point, the mount's own flags
/// (`rw,nosuid,...`) and the hierarchy's super options.
pub fn v2_mount_fields(mountinfo: &str) -> Option<(PathBuf, &str, &str)> {
    mountinfo.lines().find_map(|line| {
        // `id parent dev root mount-point options [optional...] - fstype source super-options`
        let (before, after) = line.split_once(" - ")?;
        let mut after = after.split_whitespace();
        if after.next()? != "cgroup2" {
            return None;
        }
        let mut before = before.split_whitespace();
        let mount_point = before.nth(4).map(unescape_mountinfo)?;
        let mount_flags = before.next().unwrap_or_default();
        Some((mount_point, mount_flags, after.nth(1).unwrap_or_default()))
    })
}

/// mountinfo writes space, tab, newline and backslash as `\ooo` octal.
fn unescape_mountinfo(field: &str) -> PathBuf {
    let mut out = field.to_string();
    for (escaped, plain) in [
        ("\\040", " "),
        ("\\011", "\t"),
        ("\\012", "\n"),
        ("\\134", "\\"),
    ] {
        out = out.replace(escaped, plain);
    }
    PathBuf::from(out)
}

/// Where the v1 hierarchy of `controller` is mounted, from mountinfo text.
pub fn v1_mount_in(controller: &str, mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        let mut after = after.split_whitespace();
        if after.next()? != "cgroup" {
            return None;
        }
        let options = after.nth(1)?;
        options
            .split(',')
            .any(|o| o == controller)
            .then(|| before.split_whitespace().nth(4).map(PathBuf::from))?
    })
}

/// Where this machine's v1 hierarchy of `controller` is mounted.
pub fn v1_mount(controller: &str) -> anyhow::Result<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    v1_mount_in(controller, &mountinfo)
        .with_context(|| format!("no v1 {controller} hierarchy mounted"))
}

/// One job: a direct child cgroup of the daemon's root, named by its directory.
#[derive(Debug)]
pub struct JobCgroup {
    pub name: String,
    pub dir: PathBuf,
}

impl JobCgroup {
    /// Makes the job's directory; the daemon's kernel program sees the mkdir.
    pub fn create(root: &Path, name: &str) -> anyhow::Result<Self> {
        let dir = root.join(name);
        fs::create_dir(&dir).with_context(|| format!("creating job cgroup {}", dir.display()))?;
        Ok(Self {
            name: name.to_string(),
            dir,
        })
    }

    /// A command whose process joins this cgroup between fork and exec, so
    /// everything it execs runs in the job from its first instruction.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> anyhow::Result<Command> {
        let mut command = Command::new(program);
        join_before_exec(&mut command, &self.dir)?;
        Ok(command)
    }

    /// The kernel's own CPU time of the cgroup (and its descendants):
    /// cpu.stat usage_usec, in seconds.
    pub fn cpu_usage_seconds(&self) -> anyhow::Result<f64> {
        cpu_usage_seconds(&self.dir)
    }

    /// Waits until the cgroup has used `seconds` of CPU by its own account,
    /// so a workload gets the same CPU time however busy the machine is.
    pub fn wait_for_cpu(&self, seconds: f64, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let used = self.cpu_usage_seconds()?;
            if used >= seconds {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} used only {used:.3} s of CPU in {timeout:?} (waited for {seconds} s)",
                    self.dir.display()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Removes the (empty) job cgroup: the job ends.
    pub fn remove(&self) -> anyhow::Result<()> {
        rmdir_when_empty(&self.dir)
    }
}

/// CPU time of every task that ran in the v2 cgroup `dir` and its
/// descendants, in seconds: its `cpu.stat` `usage_usec`, which the kernel
/// keeps from each task's exact run time (microseconds, threads that exited
/// included), where /proc/PID/stat's utime + stime come in 10 ms ticks.
pub fn cpu_usage_seconds(dir: &Path) -> anyhow::Result<f64> {
    let path = dir.join("cpu.stat");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let usec = text
        .lines()
        .find_map(|line| line.strip_prefix("usage_usec "))
        .with_context(|| format!("no usage_usec in {}:\n{text}", path.display()))?;
    let usec: u64 = usec
        .trim()
        .parse()
        .with_context(|| format!("bad usage_usec {usec:?}"))?;
    Ok(usec as f64 / 1e6)
}

/// Makes `command`'s process join the cgroup directory `dir` (v1 or v2)
/// between fork and exec.
pub fn join_before_exec(command: &mut Command, dir: &Path) -> anyhow::Result<()> {
    let procs = ProcsFile::of(dir)?;
    // SAFETY: the hook only makes raw syscalls on memory prepared before
    // the fork: no allocation, no locks (other test threads may hold them).
    unsafe {
        command.pre_exec(move || procs.enter());
    }
    Ok(())
}

/// Spawns `command` inside the cgroup `dir` (it moves itself in before
/// exec, so it never runs anywhere else).
pub fn spawn_in(command: &mut Command, dir: &Path) -> anyhow::Result<Child> {
    join_before_exec(command, dir)?;
    command
        .spawn()
        .with_context(|| format!("starting {command:?} in {}", dir.display()))
}

/// A cgroup's `cgroup.procs`, prepared so that a freshly forked child can
/// move itself in without allocating.
pub struct ProcsFile(CString);

impl ProcsFile {
    pub fn of(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("cgroup.procs");
        CString::new(path.as_os_str().as_bytes())
            .map(Self)
            .with_context(|| format!("cgroup path with a NUL byte: {}", path.display()))
    }

    /// Moves the calling process in (writing "0" means "me"). Raw syscalls
    /// only, so it is safe between fork and exec.
    pub fn enter(&self) -> io::Result<()> {
        // SAFETY: plain syscalls on a valid NUL-terminated path and a static buffer.
        unsafe {
            let fd = libc::open(self.0.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let written = libc::write(fd, b"0".as_ptr().cast(), 1);
            let error = io::Error::last_os_error();
            libc::close(fd);
            if written != 1 {
                return Err(error);
            }
        }
        Ok(())
    }
}

/// How long killed processes may take to leave a cgroup: a benchmark's
/// root may hold thousands of threads.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// rmdir, retrying while the last tasks are still on their way out (EBUSY).
pub fn rmdir_when_empty(dir: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e).with_context(|| format!("removing cgroup {}", dir.display())),
        }
    }
}

/// Kills every process below `root` and removes its cgroups, deepest
/// first, then `root` itself.
pub fn remove_tree(root: &Path) -> anyhow::Result<()> {
    if !root.exists() {
        return Ok(());
    }
    kill_all(root)?;
    let mut dirs = Vec::new();
    collect_dirs(root, &mut dirs)?;
    // collect_dirs lists parents before children.
    for dir in dirs.iter().rev() {
        rmdir_when_empty(dir)?;
    }
    Ok(())
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    out.push(dir.to_path_buf());
    let entries = fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_dirs(&entry.path(), out)?;
        }
    }
    Ok(())
}

/// SIGKILLs everything in the subtree: cgroup.kill where the kernel has it
/// (5.14+), else each pid of each cgroup.procs.
fn kill_all(root: &Path) -> anyhow::Result<()> {
    let kill_file = root.join("cgroup.kill");
    if kill_file.exists() {
        fs::write(&kill_file, "1").with_context(|| format!("writing {}", kill_file.display()))?;
    } else {
        let mut dirs = Vec::new();
        collect_dirs(root, &mut dirs)?;
        for dir in dirs {
            for pid in pids(&dir)? {
                // Gone already is fine.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    wait_until_unpopulated(root)
}

fn pids(dir: &Path) -> anyhow::Result<Vec<i32>> {
    let path = dir.join("cgroup.procs");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .map(|l| {
            l.trim()
                .parse()
                .with_context(|| format!("bad pid {l:?} in {}", path.display()))
        })
        .collect()
}

/// Waits for cgroup.events to say `populated 0` (the kill takes a moment).
fn wait_until_unpopulated(root: &Path) -> anyhow::Result<()> {
    let events = root.join("cgroup.events");
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        let text =
            fs::read_to_string(&events).with_context(|| format!("reading {}", events.display()))?;
        if text.lines().any(|l| l == "populated 0") {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{} still has processes {DRAIN_TIMEOUT:?} after SIGKILL",
                root.display()
            );
        }
        thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_v2_mount_of_a_hybrid_host() {
        let mountinfo = "\
35 24 0:30 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 35 0:39 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory";
        assert_eq!(
            v2_mount_in(mountinfo),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(v2_mount_in("35 24 0:30 / /x rw - tmpfs tmpfs rw"), None);
        assert_eq!(
            v2_mount_in("41 31 0:38 / /sys/fs/my\\040cgroup rw - cgroup2 cgroup2 rw"),
            Some(PathBuf::from("/sys/fs/my cgroup"))
        );
    }

    #[test]
    fn cpu_usage_from_cpu_stat() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("cpu-stat-test-{}", std::process::id()));
        fs::create_dir_all(&dir)?;
        fs::write(
            dir.join("cpu.stat"),
            "usage_usec 1234567\nuser_usec 1000000\nsystem_usec 234567\n",
        )?;
        let usage = cpu_usage_seconds(&dir);
        fs::write(dir.join("cpu.stat"), "user_usec 5\n")?;
        let missing = cpu_usage_seconds(&dir);
        fs::remove_dir_all(&dir)?;
        assert_eq!(usage?, 1.234567);
        assert!(missing.is_err());
        Ok(())
    }
}
