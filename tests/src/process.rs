//! Workload processes: pinning, dropping privileges, and never leaving a
//! busy loop behind when a test fails half-way.
use std::{
    io::{self, BufRead as _, BufReader, Read, Write as _},
    os::unix::process::CommandExt as _,
    process::{Child, Command, ExitStatus, Output},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};

/// The uid and gid of `nobody` on Linux distributions.
pub const NOBODY: u32 = 65534;

/// A spawned child that is SIGKILLed and reaped if the test lets go of it.
pub struct ChildGuard {
    child: Child,
    what: String,
}

impl ChildGuard {
    pub fn spawn(command: &mut Command, what: &str) -> anyhow::Result<Self> {
        let child = command
            .spawn()
            .with_context(|| format!("starting {what}: {command:?}"))?;
        Ok(Self {
            child,
            what: what.to_string(),
        })
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Writes `bytes` to the child's (piped) stdin and closes it.
    pub fn feed_stdin(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let mut stdin = self
            .child
            .stdin
            .take()
            .with_context(|| format!("{} has no piped stdin", self.what))?;
        stdin
            .write_all(bytes)
            .with_context(|| format!("writing to the stdin of {}", self.what))
    }

    /// Writes `bytes` to the child's (piped) stdin and keeps it open.
    pub fn write_stdin(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let stdin = self
            .child
            .stdin
            .as_mut()
            .with_context(|| format!("{} has no piped stdin", self.what))?;
        stdin
            .write_all(bytes)
            .and_then(|()| stdin.flush())
            .with_context(|| format!("writing to the stdin of {}", self.what))
    }

    /// SIGKILL, then reap.
    pub fn kill(mut self) -> anyhow::Result<ExitStatus> {
        self.child
            .kill()
            .with_context(|| format!("killing {}", self.what))?;
        self.child
            .wait()
            .with_context(|| format!("reaping {}", self.what))
    }

    /// Waits for the child to exit by itself, at most `timeout`.
    pub fn wait(mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .with_context(|| format!("waiting for {}", self.what))?
            {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("{} still runs after {timeout:?}", self.what);
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl ChildGuard {
    /// The child's (piped) stdout as lines, read on a thread, so a test can
    /// wait for one with a timeout while the child runs on.
    pub fn lines(&mut self) -> anyhow::Result<Lines> {
        let stdout = self
            .child
            .stdout
            .take()
            .with_context(|| format!("{} has no piped stdout", self.what))?;
        let (sender, receiver) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Lines {
            receiver,
            what: self.what.clone(),
        })
    }

    /// Closes the child's (piped) stdin: EOF for the child.
    pub fn close_stdin(&mut self) {
        drop(self.child.stdin.take());
    }
}

/// Lines a child printed, as they come.
pub struct Lines {
    receiver: mpsc::Receiver<String>,
    what: String,
}

impl Lines {
    /// The next line, waiting at most `timeout`.
    pub fn next(&self, timeout: Duration) -> anyhow::Result<String> {
        self.receiver.recv_timeout(timeout).map_err(|e| match e {
            mpsc::RecvTimeoutError::Timeout => {
                anyhow!("{} printed no line within {timeout:?}", self.what)
            }
            mpsc::RecvTimeoutError::Disconnected => {
                anyhow!("{} closed its stdout without the line awaited", self.what)
            }
        })
    }

    /// The next line, or None once the child has closed its stdout,
    /// waiting at most `timeout`.
    pub fn next_or_end(&self, timeout: Duration) -> anyhow::Result<Option<String>> {
        match self.receiver.recv_timeout(timeout) {
            Ok(line) => Ok(Some(line)),
            Err(mpsc::RecvTimeoutError::Disconnected) => Ok(None),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(anyhow!(
                "{} printed no line and kept its stdout open for {timeout:?}",
                self.what
            )),
        }
    }

    /// The rest of the next line, which must be `prefix` alone or start
    /// with `prefix` and a space.
    pub fn expect(&self, prefix: &str, timeout: Duration) -> anyhow::Result<String> {
        let line = self.next(timeout)?;
        line.strip_prefix(prefix)
            .and_then(|rest| {
                if rest.is_empty() {
                    Some(rest)
                } else {
                    rest.strip_prefix(' ')
                }
            })
            .map(str::to_string)
            .with_context(|| format!("{} printed {line:?}, expected `{prefix} ...`", self.what))
    }
}

impl ChildGuard {
    /// Like [`ChildGuard::wait`], also collecting stdout and stderr (the
    /// command must have been given piped ones).
    pub fn wait_with_output(mut self, timeout: Duration) -> anyhow::Result<Output> {
        let stdout = read_on_thread(self.child.stdout.take());
        let stderr = read_on_thread(self.child.stderr.take());
        let what = self.what.clone();
        let status = self.wait(timeout)?;
        let join = |reader: thread::JoinHandle<Vec<u8>>| {
            reader
                .join()
                .map_err(|_| anyhow!("reading the output of {what} panicked"))
        };
        Ok(Output {
            status,
            stdout: join(stdout)?,
            stderr: join(stderr)?,
        })
    }
}

/// Reads a pipe to its end on a thread, so a chatty child never blocks.
fn read_on_thread(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `command` to completion (at most `timeout`); it must exit 0.
pub fn run_ok(command: &mut Command, what: &str, timeout: Duration) -> anyhow::Result<()> {
    let status = ChildGuard::spawn(command, what)?.wait(timeout)?;
    if !status.success() {
        bail!("{what} failed: {status}");
    }
    Ok(())
}

/// The kernel's run-queue wait of a live process's main thread
/// (/proc/PID/schedstat, second field), in seconds.
pub fn run_delay_seconds(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/schedstat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let ns: u64 = text
        .split_whitespace()
        .nth(1)
        .with_context(|| format!("no run_delay in {path}: {text:?}"))?
        .parse()
        .with_context(|| format!("bad run_delay in {path}: {text:?}"))?;
    Ok(ns as f64 / 1e9)
}

/// The child runs only on `cpu` (set between fork and exec).
pub fn pin_to_cpu(command: &mut Command, cpu: usize) -> &mut Command {
    // SAFETY: one raw syscall on a stack value; nothing allocated after fork.
    unsafe {
        command.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// The CPUs this process may run on, highest first (CPU 0 takes most of
/// the machine's interrupts and housekeeping, so it comes last).
pub fn allowed_cpus() -> anyhow::Result<Vec<usize>> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the kernel fills it in.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(io::Error::last_os_error()).context("sched_getaffinity");
        }
        set
    };
    let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        .rev()
        // SAFETY: reads a bit of an initialised set, index in range.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect();
    if cpus.is_empty() {
        bail!("this process may run on no CPU at all");
    }
    Ok(cpus)
}

/// The child drops to `uid`/`gid` (no supplementary groups) before exec.
pub fn run_as(command: &mut Command, uid: u32, gid: u32) -> &mut Command {
    // SAFETY: raw syscalls only; nothing allocated after fork.
    unsafe {
        command.pre_exec(move || {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    }
}
