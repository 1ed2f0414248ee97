//! The benchmark's own cgroups: one root per benchmark under the v2 mount,
//! named after this process so that leftovers of a killed run can be told
//! apart from a concurrent run's, and removed with everything in them.
use std::{
    ffi::CString,
    fs, io,
    os::unix::{ffi::OsStrExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

pub const ROOT_PREFIX: &str = "monitor-bench-";
/// How long killed processes may take to leave a cgroup.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The cgroup v2 mount point, from /proc/self/mountinfo (hybrid hosts have it
/// at /sys/fs/cgroup/unified, pure v2 hosts at /sys/fs/cgroup).
pub fn v2_mount() -> anyhow::Result<PathBuf> {
    let text =
        fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    v2_mount_in(&text).context("no cgroup2 mount in /proc/self/mountinfo")
}

fn v2_mount_in(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        (after.split_whitespace().next()? == "cgroup2").then_some(())?;
        before.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// A benchmark's cgroup root. Dropping it kills what runs inside and
/// removes every cgroup below it, so cleanup happens on errors too.
pub struct Root {
    path: PathBuf,
}

impl Root {
    pub fn create(mount: &Path, benchmark: &str) -> anyhow::Result<Self> {
        let path = mount.join(format!(
            "{ROOT_PREFIX}{}-{benchmark}.slice",
            std::process::id()
        ));
        fs::create_dir(&path).with_context(|| format!("creating cgroup {}", path.display()))?;
        Ok(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes a job (a direct child cgroup); the daemon counts it from now on.
    pub fn make_job(&self, name: &str) -> anyhow::Result<PathBuf> {
        let job = self.path.join(name);
        fs::create_dir(&job).with_context(|| format!("creating cgroup {}", job.display()))?;
        Ok(job)
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        if let Err(e) = remove_tree(&self.path) {
            eprintln!("xtask: cleaning up cgroup {}: {e:#}", self.path.display());
        }
    }
}

/// Removes roots of earlier runs whose process is gone (killed mid-run).
pub fn remove_stale_roots(mount: &Path) -> anyhow::Result<()> {
    let entries = fs::read_dir(mount).with_context(|| format!("listing {}", mount.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(owner_pid) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!(
                "xtask: removing {} left by an earlier run",
                entry.path().display()
            );
            remove_tree(&entry.path())?;
        }
    }
    Ok(())
}

/// The pid in `monitor-bench-<pid>-<benchmark>.slice` (and in a bench
/// daemon's pin directory, named alike).
pub fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix(ROOT_PREFIX)?
        .split('-')
        .next()?
        .parse()
        .ok()
}

/// Kills every process below `dir`, waits for them to leave, then removes the
/// cgroups deepest first.
pub fn remove_tree(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let kill = dir.join("cgroup.kill");
    fs::write(&kill, "1").with_context(|| format!("writing {}", kill.display()))?;
    wait_unpopulated(dir)?;
    remove_dirs(dir)
}

fn wait_unpopulated(dir: &Path) -> anyhow::Result<()> {
    let events = dir.join("cgroup.events");
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        let text =
            fs::read_to_string(&events).with_context(|| format!("reading {}", events.display()))?;
        if text.lines().any(|line| line == "populated 0") {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "processes in {} survived cgroup.kill for {DRAIN_TIMEOUT:?}",
                dir.display()
            );
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn remove_dirs(dir: &Path) -> anyhow::Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_dirs(&entry.path())?;
        }
    }
    remove_dir_retrying(dir)
}

/// rmdir can see EBUSY for a moment after the last task left.
fn remove_dir_retrying(dir: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e).with_context(|| format!("removing cgroup {}", dir.display())),
        }
    }
}

/// A cgroup's `cgroup.procs`, prepared so that a freshly forked child can move
/// itself in without allocating.
pub struct ProcsFile(CString);

impl ProcsFile {
    pub fn of(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("cgroup.procs");
        CString::new(path.as_os_str().as_bytes())
            .map(Self)
            .with_context(|| format!("{} contains a NUL byte", path.display()))
    }

    /// Moves the calling process in (writing 0 means "me"). Raw syscalls
    /// only, so it is safe between fork and exec.
    pub fn enter(&self) -> io::Result<()> {
        // SAFETY: a valid C string; the fd is closed below.
        let fd = unsafe { libc::open(self.0.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: one byte from a static buffer to an fd we own.
        let written = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
        let error = io::Error::last_os_error();
        // SAFETY: closing the fd opened above.
        unsafe { libc::close(fd) };
        if written == 1 { Ok(()) } else { Err(error) }
    }
}

/// Spawns `cmd` inside the cgroup `dir` (it moves itself in before exec, so
/// it never runs anywhere else).
pub fn spawn_in(cmd: &mut Command, dir: &Path) -> anyhow::Result<Child> {
    let procs = ProcsFile::of(dir)?;
    // SAFETY: the hook only makes raw syscalls (see ProcsFile::enter).
    unsafe { cmd.pre_exec(move || procs.enter()) };
    cmd.spawn()
        .with_context(|| format!("starting {cmd:?} in {}", dir.display()))
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
    }

    #[test]
    fn stale_roots_are_named_after_their_process() {
        assert_eq!(owner_pid("monitor-bench-1234-cost.slice"), Some(1234));
        assert_eq!(owner_pid("monitor.slice"), None);
        assert_eq!(owner_pid("monitor-bench-x-cost.slice"), None);
    }
}
