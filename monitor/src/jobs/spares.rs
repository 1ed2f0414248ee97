//! Spare task cgroups, made ahead of need by a thread of their own.
//!
//! A registration used to mkdir its task cgroup while the launcher waited.
//! Every mkdir and rmdir under the monitored root holds the root
//! directory's inode lock, so at 1,000 registrations a second one mkdir
//! often waited behind others for tens of ms (measured with bpftrace:
//! blocked in `filename_create`). The maker keeps `--socket.spare-cgroups`
//! empty task cgroups ready instead; a registration takes one in the same
//! step as its per-user cap check and only writes its job's record on it.
//! When none is ready (a burst beyond the spares), it makes its own as
//! before. The spares are removed when the daemon stops, and ones a
//! crashed run left are removed at the next start (see
//! [`super::task_cgroup::remove_unused_spares`]).
use std::{
    os::unix::fs::MetadataExt,
    path::PathBuf,
    sync::{Arc, Condvar, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::{JobTable, task_cgroup};
use crate::system::log_every::LogEvery;

/// After a failed mkdir the maker waits this long before the next.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Where spares are made, and how many are kept ready.
#[derive(Debug, Clone)]
pub struct SpareConfig {
    pub root_dir: PathBuf,
    /// The root in hierarchy form (`/monitor.slice`).
    pub root_in_hierarchy: String,
    pub count: usize,
}

/// Tells the maker a spare was taken; shared with the registrar.
#[derive(Debug, Default)]
pub struct SpareDemand {
    wanted: Mutex<Wanted>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct Wanted {
    taken: bool,
    stop: bool,
}

impl SpareDemand {
    /// A spare was taken: the maker makes another.
    pub fn taken(&self) {
        self.wanted.lock().unwrap_or_else(|e| e.into_inner()).taken = true;
        self.changed.notify_one();
    }

    /// Waits until a spare is taken or the maker is to stop (returned),
    /// at most `timeout` when given.
    fn wait(&self, timeout: Option<Duration>) -> bool {
        let wanted = self.wanted.lock().unwrap_or_else(|e| e.into_inner());
        let idle = |wanted: &mut Wanted| !wanted.taken && !wanted.stop;
        let mut wanted = match timeout {
            None => self
                .changed
                .wait_while(wanted, idle)
                .unwrap_or_else(|e| e.into_inner()),
            Some(timeout) => {
                self.changed
                    .wait_timeout_while(wanted, timeout, idle)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
        };
        wanted.taken = false;
        wanted.stop
    }

    fn stop(&self) {
        self.wanted.lock().unwrap_or_else(|e| e.into_inner()).stop = true;
        self.changed.notify_one();
    }
}

/// The maker's thread; stopping it (dropping it) removes the free spares.
pub struct SpareMaker {
    demand: Arc<SpareDemand>,
    table: Arc<Mutex<JobTable>>,
    mount: PathBuf,
    thread: Option<JoinHandle<()>>,
}

impl SpareMaker {
    /// Starts the maker (none when `config.count` is 0). It runs at the
    /// priority of the calling thread: a mkdir holds locks a registration
    /// waits for, so start it from one at the default priority.
    pub fn start(
        config: SpareConfig,
        mount: PathBuf,
        table: Arc<Mutex<JobTable>>,
        demand: Arc<SpareDemand>,
    ) -> std::io::Result<Self> {
        let thread = if config.count == 0 {
            None
        } else {
            let table = table.clone();
            let demand = demand.clone();
            Some(
                std::thread::Builder::new()
                    .name("spare-cgroups".into())
                    .spawn(move || make_spares(&config, &table, &demand))?,
            )
        };
        Ok(Self {
            demand,
            table,
            mount,
            thread,
        })
    }
}

impl Drop for SpareMaker {
    fn drop(&mut self) {
        self.demand.stop();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            log::warn!("the spare cgroup maker panicked");
        }
        let spares = self
            .table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take_all_spares();
        for (_, path) in spares {
            let dir = JobTable::dir(&self.mount, &path);
            if let Err(e) = std::fs::remove_dir(&dir) {
                log::warn!("removing spare cgroup {}: {e}", dir.display());
            }
        }
    }
}

fn make_spares(config: &SpareConfig, table: &Mutex<JobTable>, demand: &SpareDemand) {
    let lock = || table.lock().unwrap_or_else(|e| e.into_inner());
    let mut sequence = task_cgroup::first_sequence();
    let mut failures = LogEvery::new(Duration::from_secs(60));
    loop {
        if lock().spares_ready() >= config.count {
            if demand.wait(None) {
                return;
            }
            continue;
        }
        sequence += 1;
        let name = task_cgroup::spare_name(sequence);
        let path = format!("{}/{name}", config.root_in_hierarchy.trim_end_matches('/'));
        let dir = config.root_dir.join(&name);
        lock().expect_spare(&path);
        let made = std::fs::create_dir(&dir).and_then(|()| std::fs::metadata(&dir));
        match made {
            Ok(metadata) => lock().made_spare(&path, Some(metadata.ino())),
            // Left by an earlier run: the next name.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                lock().made_spare(&path, None);
            }
            Err(e) => {
                lock().made_spare(&path, None);
                let _ = std::fs::remove_dir(&dir);
                if let Some(since) = failures.note(1, Instant::now()) {
                    log::warn!(
                        "making a spare task cgroup {}: {e} ({since} such failures since the \
                         last such line; registrations make their own meanwhile)",
                        dir.display()
                    );
                }
                if demand.wait(Some(RETRY_AFTER)) {
                    return;
                }
            }
        }
    }
}
