//! Removing the empty task cgroups a sample finds, spread over part of the
//! sample interval instead of in one burst.
//!
//! Each rmdir holds the monitored root directory's inode lock, which every
//! registration's mkdir of its task cgroup takes too. When 1,000 jobs ended
//! in a sample, 1,000 rmdirs back to back kept the registrations arriving
//! meanwhile waiting for tens of ms (measured with bpftrace: most of a slow
//! registration was its mkdir blocked in `filename_create`). A thread of
//! its own removes them a few at a time instead, every [`STEP`], so a mkdir
//! waits for a few rmdirs at most; a batch is done within [`SPREAD`] of the
//! interval. The job table is told each removal as it happens: the job's
//! final values are read after the grace, as before.
use std::{
    collections::VecDeque,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        mpsc::{self, Receiver, Sender, TryRecvError},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::jobs::JobTable;

/// Time between two steps of removals.
const STEP: Duration = Duration::from_millis(1);
/// A batch is removed within this share of the sample interval.
const SPREAD: u32 = 2;

/// One empty cgroup to remove.
pub(super) struct Removal {
    pub id: u64,
    pub dir: PathBuf,
}

/// The thread that removes empty task cgroups; see the module docs.
pub(super) struct Remover {
    batches: Option<Sender<Vec<Removal>>>,
    thread: Option<JoinHandle<()>>,
}

impl Remover {
    /// Starts the thread. It runs at the priority of the calling thread:
    /// start it from one at the default priority, since an rmdir preempted
    /// at a lower one would hold registrations up (see
    /// [`crate::system::priority`]). Should it fail to start, the cgroups
    /// are removed as they are handed over.
    pub(super) fn start(table: Arc<Mutex<JobTable>>, interval: Duration) -> Self {
        let (batches, received) = mpsc::channel();
        let within = interval / SPREAD;
        match std::thread::Builder::new()
            .name("cgroup-remover".into())
            .spawn(move || remove_paced(&received, &table, within))
        {
            Ok(thread) => Self {
                batches: Some(batches),
                thread: Some(thread),
            },
            Err(e) => {
                log::warn!("empty cgroups are removed in bursts: starting their thread: {e}");
                Self {
                    batches: None,
                    thread: None,
                }
            }
        }
    }

    /// Hands over cgroups to remove, deepest first (the caller marked them
    /// removing in the table). Without the thread (it panicked) they are
    /// removed here and now.
    pub(super) fn hand_over(&self, batch: Vec<Removal>, table: &Mutex<JobTable>) {
        if batch.is_empty() {
            return;
        }
        let batch = match &self.batches {
            Some(batches) => match batches.send(batch) {
                Ok(()) => return,
                Err(mpsc::SendError(batch)) => batch,
            },
            None => batch,
        };
        remove(batch, table);
    }
}

impl Drop for Remover {
    /// What is still queued is removed at once before the thread ends.
    fn drop(&mut self) {
        drop(self.batches.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            log::warn!("the cgroup remover thread panicked");
        }
    }
}

fn remove_paced(received: &Receiver<Vec<Removal>>, table: &Mutex<JobTable>, within: Duration) {
    let mut queue: VecDeque<Removal> = VecDeque::new();
    let mut deadline = Instant::now();
    loop {
        if queue.is_empty() {
            let Ok(batch) = received.recv() else {
                return;
            };
            queue.extend(batch);
            deadline = Instant::now() + within;
        }
        let mut closing = false;
        loop {
            match received.try_recv() {
                Ok(batch) => {
                    queue.extend(batch);
                    deadline = Instant::now() + within;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    closing = true;
                    break;
                }
            }
        }
        let count = if closing {
            queue.len()
        } else {
            per_step(
                queue.len(),
                deadline.saturating_duration_since(Instant::now()),
            )
        };
        remove(queue.drain(..count).collect(), table);
        if !queue.is_empty() && !closing {
            std::thread::sleep(STEP);
        }
    }
}

/// How many of `queued` to remove in this step to be done in `left`.
fn per_step(queued: usize, left: Duration) -> usize {
    let steps = (left.as_micros() / STEP.as_micros()).max(1);
    let steps = usize::try_from(steps).unwrap_or(usize::MAX);
    queued.div_ceil(steps).min(queued)
}

/// Removes `batch`, then tells the table in one go.
fn remove(batch: Vec<Removal>, table: &Mutex<JobTable>) {
    // On the remover thread a no-op; on a lowered sampler (no thread) the
    // rmdirs must not be preempted holding what registrations wait for.
    let _foreground = crate::system::priority::foreground();
    let mut removed = Vec::with_capacity(batch.len());
    let mut kept = Vec::new();
    for Removal { id, dir } in batch {
        match std::fs::remove_dir(&dir) {
            Ok(()) => removed.push(id),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => removed.push(id),
            // A task arrived since the count: it lives on.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => kept.push(id),
            Err(e) => {
                log::warn!("removing {}: {e}", dir.display());
                kept.push(id);
            }
        }
    }
    let now = Instant::now();
    let mut table = table.lock().unwrap_or_else(|e| e.into_inner());
    for id in removed {
        table.remove_cgroup(id, now);
    }
    for id in kept {
        table.kept(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_spread_over_the_time_left_and_never_stalls() {
        assert_eq!(per_step(1_000, Duration::from_millis(500)), 2);
        assert_eq!(per_step(10, Duration::from_millis(500)), 1);
        assert_eq!(per_step(10_000, Duration::from_millis(500)), 20);
        // Past the deadline: the rest at once.
        assert_eq!(per_step(7, Duration::ZERO), 7);
        assert_eq!(per_step(0, Duration::from_millis(500)), 0);
    }
}
