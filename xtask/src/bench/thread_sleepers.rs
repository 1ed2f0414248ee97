//! Many tasks doing nothing: processes of sleeping threads, forked from
//! xtask into a parking cgroup, then moved into jobs and back as whole
//! processes (a write to `cgroup.procs` moves every thread). Dropping them
//! kills and reaps every process.
use std::{
    fs, io,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use monitor_tests::cgroup::ProcsFile;

use super::{pingpong::Forked, procfs};

/// A sleeping thread needs little stack.
const STACK: usize = 64 * 1024;
const READY_TIMEOUT: Duration = Duration::from_secs(120);

pub struct ThreadSleepers {
    processes: Vec<Forked>,
}

impl ThreadSleepers {
    /// `processes` processes of `threads` threads each (the main thread
    /// included), all in the cgroup `parked`; returns once every thread exists.
    pub fn start(parked: &Path, processes: u32, threads: u32) -> anyhow::Result<Self> {
        let procs = ProcsFile::of(parked)?;
        let mut sleepers = Self {
            processes: Vec::new(),
        };
        for _ in 0..processes {
            let child = Forked::spawn(|| {
                procs.enter()?;
                for _ in 1..threads {
                    thread::Builder::new()
                        .stack_size(STACK)
                        .spawn(|| {
                            sleep_forever();
                        })
                        .map_err(|e| io::Error::other(format!("starting a thread: {e}")))?;
                }
                sleep_forever()
            })?;
            sleepers.processes.push(child);
        }
        sleepers.wait_for_threads(threads as usize)?;
        Ok(sleepers)
    }

    pub fn len(&self) -> usize {
        self.processes.len()
    }

    /// Moves process `index` (every thread of it) into the cgroup `dir`.
    pub fn move_one(&self, index: usize, dir: &Path) -> anyhow::Result<()> {
        let pid = self.processes[index].pid();
        let procs = dir.join("cgroup.procs");
        fs::write(&procs, pid.to_string())
            .with_context(|| format!("moving process {pid} into {}", procs.display()))
    }

    /// Moves every process into the cgroup `dir`.
    pub fn move_all(&self, dir: &Path) -> anyhow::Result<()> {
        (0..self.len()).try_for_each(|i| self.move_one(i, dir))
    }

    fn wait_for_threads(&self, threads: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        for process in &self.processes {
            while procfs::threads(process.pid()) < threads {
                if Instant::now() > deadline {
                    bail!(
                        "process {} has {} of its {threads} threads after {READY_TIMEOUT:?}",
                        process.pid(),
                        procfs::threads(process.pid())
                    );
                }
                thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(())
    }
}

fn sleep_forever() -> ! {
    loop {
        // SAFETY: pause has no preconditions; it returns only on a signal.
        unsafe { libc::pause() };
    }
}
