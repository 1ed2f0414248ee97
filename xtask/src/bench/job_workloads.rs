//! Workloads of the IO, network, memory and process benchmarks, each run
//! inside a cgroup: small-block dd, loopback TCP, fork and exit, an OOM
//! kill, and the helpers
//! (a measuring process in a job, an anonymous mapping).
//!
//! The Rust ones are forked from xtask (single-threaded, so the child may
//! run ordinary code) and move themselves into the job first.
use std::{
    fs::{self, File},
    io::{self, Read as _, Write as _},
    net::{Shutdown, TcpListener, TcpStream},
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::Instant,
};

use anyhow::{Context as _, bail};
use monitor_tests::cgroup::{ProcsFile, spawn_in};

use super::pingpong::{self, Forked, Pipe, pin_to};

const MIB: usize = 1 << 20;
pub const PAGE: usize = 4096;

/// Where the IO workloads put their files: the workspace's target dir (a
/// real disk, where /tmp might be tmpfs).
pub fn scratch_dir() -> anyhow::Result<PathBuf> {
    let dir = crate::util::workspace_root().join("target/bench/scratch");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// `dd if=/dev/zero of=FILE bs=512 count=BLOCKS` in the cgroup `dir_of_cgroup`
/// (a job, or the v2 root for a process outside any job), pinned to `cpu`: one
/// read and one write call per 512 bytes. Returns dd's own figure for the
/// copy, in seconds (start-up excluded).
pub fn dd_small_blocks(
    dir_of_cgroup: &Path,
    cpu: usize,
    dir: &Path,
    blocks: u32,
) -> anyhow::Result<f64> {
    let file = dir.join(format!("dd-{}", std::process::id()));
    let mut cmd = Command::new("dd");
    cmd.arg("if=/dev/zero")
        .arg(format!("of={}", file.display()))
        .args(["bs=512", &format!("count={blocks}")])
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: one raw syscall between fork and exec.
    unsafe { cmd.pre_exec(move || pin_to(cpu)) };
    let child = spawn_in(&mut cmd, dir_of_cgroup)?;
    let output = child.wait_with_output().context("waiting for dd")?;
    let _ = fs::remove_file(&file);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!("dd failed ({}): {stderr}", output.status);
    }
    dd_seconds(&stderr).with_context(|| format!("no time in dd's report: {stderr:?}"))
}

/// The seconds of dd's last line: `N bytes (...) copied, 0.275901 s, 371 MB/s`.
fn dd_seconds(report: &str) -> Option<f64> {
    let line = report.lines().rev().find(|l| l.contains(" copied, "))?;
    let after = line.split(" copied, ").nth(1)?;
    after.split_whitespace().next()?.parse().ok()
}

/// `bytes` over a loopback TCP connection between two threads of one
/// process in the job (the listener is made inside the job, so both
/// sockets belong to it), in 64 KiB writes; the sender pinned to
/// `cpus.0`, the receiver to `cpus.1`. Returns seconds from the
/// connection's first write to the receiver's last byte.
pub fn loopback_tcp(job: &Path, bytes: u64, cpus: (usize, usize)) -> anyhow::Result<f64> {
    let [seconds] =
        measure_in_job(job, || Ok([tcp_transfer(bytes, cpus)?])).context("loopback TCP process")?;
    Ok(seconds)
}

/// Runs `body` in a process forked from xtask that moved itself into the
/// cgroup `job` first, and returns the figures it measured.
pub fn measure_in_job<const N: usize>(
    job: &Path,
    body: impl FnOnce() -> io::Result<[f64; N]>,
) -> anyhow::Result<[f64; N]> {
    let procs = ProcsFile::of(job)?;
    let result = Pipe::new()?;
    let out = result.write.as_raw_fd();
    let child = Forked::spawn(|| {
        procs.enter()?;
        let figures = body()?;
        // SAFETY: the child's own copy of the result pipe's write end.
        let mut file = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(out) };
        let bytes: Vec<u8> = figures.iter().flat_map(|f| f.to_le_bytes()).collect();
        file.write_all(&bytes)
    })?;
    drop(result.write);
    let mut bytes = vec![0u8; 8 * N];
    let read = File::from(result.read).read_exact(&mut bytes);
    let status = child.wait();
    read.context("reading what the workload process measured")?;
    status?;
    let mut figures = [0.0; N];
    for (figure, chunk) in figures.iter_mut().zip(bytes.chunks_exact(8)) {
        *figure = f64::from_le_bytes(chunk.try_into().unwrap_or_default());
    }
    Ok(figures)
}

/// `count` processes forked and reaped one after another by a new process
/// in `job`, pinned to `cpu`, each child exiting at once: a job's process
/// churn (the daemon's task lifecycle programs run on each fork and exit,
/// and `favordynmods` puts a memory barrier on both). The forking process
/// is this binary exec'd afresh (`bench --fork-children N`): a fork copies
/// its parent's page tables, so a child of xtask itself would fork slower
/// the more memory the benchmarks before had left it. Returns seconds from
/// the first fork to the last reap.
pub fn fork_exit(job: &Path, cpu: usize, count: u32) -> anyhow::Result<f64> {
    let me = std::env::current_exe().context("finding the xtask binary")?;
    let mut cmd = Command::new(me);
    cmd.args(["bench", "--fork-children", &count.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // SAFETY: one raw syscall between fork and exec.
    unsafe { cmd.pre_exec(move || pin_to(cpu)) };
    let output = spawn_in(&mut cmd, job)?
        .wait_with_output()
        .context("waiting for the forking process")?;
    if !output.status.success() {
        bail!("the forking process failed: {}", output.status);
    }
    let text = String::from_utf8_lossy(&output.stdout);
    text.trim()
        .parse()
        .with_context(|| format!("the forking process said {text:?}"))
}

/// The hidden worker of [`fork_exit`]: forks and reaps `count` children
/// that exit at once, and prints the seconds it took.
pub fn fork_children_main(count: u32) -> anyhow::Result<()> {
    let start = Instant::now();
    for _ in 0..count {
        // SAFETY: the child calls nothing but _exit.
        match unsafe { libc::fork() } {
            -1 => return Err(io::Error::last_os_error()).context("fork"),
            // SAFETY: the child leaves at once, running nothing of ours.
            0 => unsafe { libc::_exit(0) },
            child => {
                let mut status = 0;
                // SAFETY: waits for the child just forked.
                if unsafe { libc::waitpid(child, &mut status, 0) } < 0 {
                    return Err(io::Error::last_os_error()).context("waitpid");
                }
            }
        }
    }
    println!("{}", start.elapsed().as_secs_f64());
    Ok(())
}

/// The CPUs of the loopback transfer's sender and receiver: both on the
/// benchmarks' usual CPU. Apart, every wake-up of the other side is an
/// interrupt to a CPU that may be idle, and on a virtual machine how
/// deeply it slept (which depends on what ran just before: starting the
/// daemon, or nothing) moved the figure by tens of percent either way.
pub fn tcp_cpus() -> (usize, usize) {
    let cpu = pingpong::default_cpu();
    (cpu, cpu)
}

fn tcp_transfer(bytes: u64, (sender_cpu, receiver_cpu): (usize, usize)) -> io::Result<f64> {
    const WRITE: usize = 64 * 1024;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    pin_to(sender_cpu)?;
    let receiver = thread::spawn(move || -> io::Result<u64> {
        pin_to(receiver_cpu)?;
        let (mut stream, _) = listener.accept()?;
        let mut buffer = vec![0u8; WRITE];
        let mut received = 0u64;
        loop {
            match stream.read(&mut buffer)? {
                0 => return Ok(received),
                n => received += n as u64,
            }
        }
    });
    let mut stream = TcpStream::connect(address)?;
    let chunk = vec![0xa5u8; WRITE];
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < bytes {
        let n = WRITE.min(usize::try_from(bytes - sent).unwrap_or(WRITE));
        stream.write_all(&chunk[..n])?;
        sent += n as u64;
    }
    stream.shutdown(Shutdown::Write)?;
    let received = receiver
        .join()
        .map_err(|_| io::Error::other("the receiving thread panicked"))??;
    let seconds = start.elapsed().as_secs_f64();
    if received != bytes {
        return Err(io::Error::other(format!(
            "received {received} of {bytes} bytes"
        )));
    }
    Ok(seconds)
}

/// A process in the job, also in `limit`, touching memory until the OOM
/// killer ends it. Err if it ends any other way.
pub fn oom_kill(job: &Path, limit: &MemoryLimit) -> anyhow::Result<()> {
    const GIVE_UP_MIB: usize = 2048;
    let procs = ProcsFile::of(job)?;
    let limited = limit.procs()?;
    let status = Forked::spawn(|| {
        procs.enter()?;
        if let Some(limited) = &limited {
            limited.enter()?;
        }
        let mut kept = Vec::new();
        for _ in 0..GIVE_UP_MIB {
            let mapping = Mapping::new(MIB)?;
            mapping.touch();
            kept.push(mapping);
        }
        Err(io::Error::other("not OOM-killed after 2 GiB"))
    })?
    .wait_status()?;
    if !(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL) {
        bail!("the OOM workload was not killed by the OOM killer (wait status {status:#x})");
    }
    Ok(())
}

/// A memory limit for a job, where the host lets one be set: `memory.max`
/// of the job (cgroup v2 with the memory controller), else a child v1
/// memory cgroup below xtask's own (hybrid hosts), which keeps every limit
/// of the cgroup xtask lives in. Removed on drop.
pub enum MemoryLimit {
    V2,
    V1(PathBuf),
}

impl MemoryLimit {
    /// Limits what runs in `job` (and joins [`MemoryLimit::procs`]) to
    /// `bytes`; `Ok(Err(why))` when the host allows no limit.
    pub fn apply(job: &Path, bytes: u64) -> anyhow::Result<Result<Self, String>> {
        let parent = job.parent().context("a job has a parent")?;
        let controllers = fs::read_to_string(parent.join("cgroup.controllers")).unwrap_or_default();
        if controllers.split_whitespace().any(|c| c == "memory") {
            if !job.join("memory.max").exists() {
                fs::write(parent.join("cgroup.subtree_control"), "+memory").with_context(|| {
                    format!("enabling the memory controller below {}", parent.display())
                })?;
            }
            write(&job.join("memory.max"), bytes)?;
            return Ok(Ok(Self::V2));
        }
        let Some(own) = own_v1_memory_cgroup()? else {
            return Ok(Err(
                "no memory controller on cgroup v2 and no v1 memory hierarchy".into(),
            ));
        };
        let dir = own.join(format!("monitor-bench-{}-oom", std::process::id()));
        if !dir.exists() {
            fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let limit = Self::V1(dir.clone());
        write(&dir.join("memory.limit_in_bytes"), bytes)?;
        for (knob, value) in [
            ("memory.swappiness", 0),
            ("memory.memsw.limit_in_bytes", bytes),
        ] {
            if dir.join(knob).exists() {
                write(&dir.join(knob), value)?;
            }
        }
        Ok(Ok(limit))
    }

    /// The v1 cgroup a limited process must join too (v2: none, the job is
    /// limited itself).
    fn procs(&self) -> anyhow::Result<Option<ProcsFile>> {
        match self {
            Self::V2 => Ok(None),
            Self::V1(dir) => ProcsFile::of(dir).map(Some),
        }
    }
}

impl Drop for MemoryLimit {
    fn drop(&mut self) {
        if let Self::V1(dir) = self
            && let Err(e) = fs::remove_dir(&*dir)
        {
            eprintln!("xtask: removing {}: {e}", dir.display());
        }
    }
}

fn write(file: &Path, value: u64) -> anyhow::Result<()> {
    fs::write(file, value.to_string())
        .with_context(|| format!("writing {value} to {}", file.display()))
}

/// xtask's own v1 memory cgroup directory, if there is a v1 memory hierarchy.
fn own_v1_memory_cgroup() -> anyhow::Result<Option<PathBuf>> {
    let mountinfo =
        fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    let mount = mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        let mut after = after.split_whitespace();
        (after.next()? == "cgroup").then_some(())?;
        let options = after.nth(1)?;
        options.split(',').any(|o| o == "memory").then_some(())?;
        before.split_whitespace().nth(4).map(PathBuf::from)
    });
    let Some(mount) = mount else {
        return Ok(None);
    };
    let cgroups = fs::read_to_string("/proc/self/cgroup").context("reading /proc/self/cgroup")?;
    let path = cgroups.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then_some(path)
    });
    Ok(path.map(|p| mount.join(p.trim_start_matches('/'))))
}

/// Anonymous memory, 4 KiB pages (MADV_NOHUGEPAGE: every page faults on
/// its first touch), unmapped on drop.
pub struct Mapping {
    address: *mut libc::c_void,
    len: usize,
}

impl Mapping {
    pub fn new(len: usize) -> io::Result<Self> {
        // SAFETY: a fresh private anonymous mapping, owned by the result.
        let address = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if address == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: advice on the mapping just made.
        unsafe { libc::madvise(address, len, libc::MADV_NOHUGEPAGE) };
        Ok(Self { address, len })
    }

    /// Writes one byte per page.
    pub fn touch(&self) {
        for offset in (0..self.len).step_by(PAGE) {
            // SAFETY: inside the mapping.
            unsafe { self.address.cast::<u8>().add(offset).write_volatile(1) };
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in new(), unmapped once.
        unsafe { libc::munmap(self.address, self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_dds_own_time() {
        let report = "200000+0 records in\n200000+0 records out\n\
                      102400000 bytes (102 MB, 98 MiB) copied, 0.275901 s, 371 MB/s\n";
        assert_eq!(dd_seconds(report), Some(0.275901));
        assert_eq!(dd_seconds("dd: error\n"), None);
    }
}
