//! Pipe ping-pong: two processes pinned to one CPU pass one byte back and
//! forth, so every round trip is two context switches and two wakeups, the
//! scheduler path the monitor's hottest programs sit on.
//!
//! Both processes are forked from xtask (single-threaded, so the children
//! may run ordinary code) and move themselves into a job cgroup first.
use std::{
    fs::File,
    io::{self, Read as _},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    path::Path,
    time::Instant,
};

use anyhow::{Context as _, bail};
use monitor_tests::cgroup::ProcsFile;

/// Round trips before the clock starts: page faults, caches, first switches.
pub const WARMUP: u32 = 10_000;

/// CPU 1 where there is one: CPU 0 usually takes more of the interrupts.
pub fn default_cpu() -> usize {
    std::thread::available_parallelism().map_or(0, |n| usize::from(n.get() > 1))
}

/// Runs `round_trips` round trips inside the cgroup `job`, both processes on
/// `cpu`; returns microseconds per round trip.
pub fn run(job: &Path, cpu: usize, round_trips: u32) -> anyhow::Result<f64> {
    let procs = ProcsFile::of(job)?;
    let there = Pipe::new()?;
    let back = Pipe::new()?;
    let result = Pipe::new()?;
    let all = [&there, &back, &result]
        .map(|p| [p.read.as_raw_fd(), p.write.as_raw_fd()])
        .concat();

    let (pong_rx, pong_tx) = (there.read.as_raw_fd(), back.write.as_raw_fd());
    let pong = Forked::spawn(|| {
        close_all_but(&all, &[pong_rx, pong_tx]);
        prepare(&procs, cpu)?;
        bounce(pong_rx, pong_tx, WARMUP + round_trips, Side::Pong)
    })?;
    let (ping_tx, ping_rx, out) = (
        there.write.as_raw_fd(),
        back.read.as_raw_fd(),
        result.write.as_raw_fd(),
    );
    let ping = Forked::spawn(|| {
        close_all_but(&all, &[ping_tx, ping_rx, out]);
        prepare(&procs, cpu)?;
        ping(ping_tx, ping_rx, out, round_trips)
    })?;
    // Only the children may hold the pipes now, so one dying unblocks the other.
    drop((there, back, result.write));

    let mut elapsed_ns = [0u8; 8];
    let read = File::from(result.read).read_exact(&mut elapsed_ns);
    let statuses = (ping.wait(), pong.wait());
    read.context("reading the ping-pong time")?;
    statuses.0.context("ping process")?;
    statuses.1.context("pong process")?;
    Ok(u64::from_le_bytes(elapsed_ns) as f64 / 1000.0 / f64::from(round_trips))
}

#[derive(Clone, Copy, PartialEq)]
enum Side {
    Ping,
    Pong,
}

fn ping(tx: RawFd, rx: RawFd, out: RawFd, round_trips: u32) -> io::Result<()> {
    bounce(rx, tx, WARMUP, Side::Ping)?;
    let start = Instant::now();
    bounce(rx, tx, round_trips, Side::Ping)?;
    let elapsed_ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
    // SAFETY: `out` is this child's own write end of the result pipe, used
    // by nothing else.
    let mut file = unsafe { File::from_raw_fd(out) };
    io::Write::write_all(&mut file, &elapsed_ns.to_le_bytes())
}

fn bounce(rx: RawFd, tx: RawFd, round_trips: u32, side: Side) -> io::Result<()> {
    for _ in 0..round_trips {
        if side == Side::Ping {
            send(tx)?;
        }
        receive(rx)?;
        if side == Side::Pong {
            send(tx)?;
        }
    }
    Ok(())
}

fn send(fd: RawFd) -> io::Result<()> {
    loop {
        // SAFETY: one byte from a live buffer.
        match unsafe { libc::write(fd, b"x".as_ptr().cast(), 1) } {
            1 => return Ok(()),
            _ => retry_on_eintr()?,
        }
    }
}

fn receive(fd: RawFd) -> io::Result<()> {
    let mut byte = 0u8;
    loop {
        // SAFETY: one byte into a live buffer.
        match unsafe { libc::read(fd, (&raw mut byte).cast(), 1) } {
            1 => return Ok(()),
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the other side is gone",
                ));
            }
            _ => retry_on_eintr()?,
        }
    }
}

fn retry_on_eintr() -> io::Result<()> {
    let error = io::Error::last_os_error();
    if error.kind() == io::ErrorKind::Interrupted {
        Ok(())
    } else {
        Err(error)
    }
}

/// Moves the calling process into the job and pins it to `cpu`.
fn prepare(procs: &ProcsFile, cpu: usize) -> io::Result<()> {
    procs.enter()?;
    pin_to(cpu)
}

pub fn pin_to(cpu: usize) -> io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET stays in bounds
    // for any cpu below CPU_SETSIZE, which sched_setaffinity checks anyway.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn close_all_but(all: &[RawFd], keep: &[RawFd]) {
    for fd in all.iter().filter(|fd| !keep.contains(fd)) {
        // SAFETY: the child's own copies of the pipe ends; it never uses them.
        unsafe { libc::close(*fd) };
    }
}

pub(super) struct Pipe {
    pub(super) read: OwnedFd,
    pub(super) write: OwnedFd,
}

impl Pipe {
    pub(super) fn new() -> anyhow::Result<Self> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills both slots on success.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error()).context("creating a pipe");
        }
        // SAFETY: both fds are fresh and owned by nobody else.
        Ok(unsafe {
            Self {
                read: OwnedFd::from_raw_fd(fds[0]),
                write: OwnedFd::from_raw_fd(fds[1]),
            }
        })
    }
}

/// A forked child running a closure. Dropping it unwaited kills it, so an
/// error on one side never leaves the other spinning.
pub(super) struct Forked {
    pid: libc::pid_t,
    reaped: bool,
}

impl Forked {
    pub(super) fn spawn(body: impl FnOnce() -> io::Result<()>) -> anyhow::Result<Self> {
        // SAFETY: xtask runs no other thread, so the child's copy of the
        // process is consistent; it leaves through _exit, so no destructor of
        // the parent's state (cgroups, daemon) ever runs in it.
        match unsafe { libc::fork() } {
            -1 => Err(io::Error::last_os_error()).context("forking a workload process"),
            0 => {
                let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
                    Ok(Ok(())) => 0,
                    Ok(Err(e)) => {
                        eprintln!("xtask: workload process: {e}");
                        1
                    }
                    Err(_) => 2,
                };
                // SAFETY: ends the child without unwinding into the parent's frames.
                unsafe { libc::_exit(code) }
            }
            pid => Ok(Self { pid, reaped: false }),
        }
    }

    pub(super) fn pid(&self) -> u32 {
        self.pid.unsigned_abs()
    }

    pub(super) fn wait(self) -> anyhow::Result<()> {
        let status = self.wait_status()?;
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            bail!("exited with wait status {status:#x}");
        }
        Ok(())
    }
}

impl Forked {
    /// Waits for the child; its raw wait status.
    pub(super) fn wait_status(mut self) -> anyhow::Result<i32> {
        let mut status = 0;
        // SAFETY: our own child, not reaped yet.
        if unsafe { libc::waitpid(self.pid, &mut status, 0) } != self.pid {
            return Err(io::Error::last_os_error()).context("waiting for a forked process");
        }
        self.reaped = true;
        Ok(status)
    }
}

impl Drop for Forked {
    fn drop(&mut self) {
        if !self.reaped {
            // SAFETY: our own child, not reaped yet, so the pid is still ours.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
    }
}
