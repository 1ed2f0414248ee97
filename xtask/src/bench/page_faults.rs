//! The page-fault-heavy workload: a fresh process in the job maps 1 GiB
//! of anonymous memory (MADV_NOHUGEPAGE, so every 4 KiB page faults),
//! writes one byte per page and unmaps it. A new process and mapping every
//! run, so every run takes every fault and rss_stat event again.
use std::{io, path::Path, time::Instant};

use super::{
    job_workloads::{self, Mapping, PAGE},
    pingpong::pin_to,
};

/// Memory touched per run.
pub const BYTES: usize = 1 << 30;

/// One fault per page.
pub fn pages(bytes: usize) -> u64 {
    (bytes / PAGE) as u64
}

/// One run in `job`, pinned to `cpu`: seconds from mmap to the end of
/// munmap, and the minor faults the process took meanwhile (getrusage),
/// which proves every page faulted.
pub fn touch_fresh(job: &Path, cpu: usize, bytes: usize) -> anyhow::Result<(f64, f64)> {
    let [seconds, faults] = job_workloads::measure_in_job(job, || {
        pin_to(cpu)?;
        let before = minor_faults()?;
        let start = Instant::now();
        let mapping = Mapping::new(bytes)?;
        mapping.touch();
        drop(mapping);
        let seconds = start.elapsed().as_secs_f64();
        Ok([seconds, (minor_faults()? - before) as f64])
    })?;
    Ok((seconds, faults))
}

fn minor_faults() -> io::Result<i64> {
    // SAFETY: getrusage fills the zeroed struct it is given.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(usage.ru_minflt)
    }
}
