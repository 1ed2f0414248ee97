//! What a sample reads besides the task walk: the cgroups' counters and the
//! programs' drop counts from the maps, the cgroup files that cross-check
//! them, what each job was given, and the owners of jobs whose layout
//! names none.
use std::path::Path;

use anyhow::Context as _;
use monitor_common::{CgroupCounters, DROP_REASONS, DropReason};

use super::{CROSS_CHECK_EVERY, Sampler};
use crate::{
    jobs::{JobKey, JobTable, allocation::Allocation, table::PendingIdentity},
    snapshot::CgroupFileStats,
    system::{
        cgroupfs,
        ids::{KeyMap, KeySet},
    },
};

impl Sampler {
    /// Summed counters of every cgroup with a known slot: those the job
    /// table knows into `known` (emptied first), the others returned.
    pub(super) fn read_counters(
        &mut self,
        known: &mut Vec<(u64, CgroupCounters)>,
    ) -> anyhow::Result<Vec<(u64, CgroupCounters)>> {
        known.clear();
        // Read with the job table let go (a map lookup per changed cgroup:
        // ms at thousands of them, which registrations would wait out),
        // then sorted under one short hold.
        for id in self.probes.counters.ids() {
            // Read for the last time already; freed once their job is stored.
            if self.persistence.holds(id) {
                continue;
            }
            if let Some(sum) = self
                .probes
                .counters
                .read_latest(id)
                .context("reading cgroup counters")?
            {
                known.push((id, sum));
            }
        }
        let mut unknown = Vec::new();
        let table = self.table.clone();
        let table = super::lock(&table);
        known.retain(|(id, sum)| {
            let knows = table.knows(*id);
            if !knows {
                unknown.push((*id, *sum));
            }
            knows
        });
        Ok(unknown)
    }

    pub(super) fn read_drops(&self) -> anyhow::Result<[u64; DROP_REASONS]> {
        let mut drops = [0; DROP_REASONS];
        for reason in DropReason::ALL {
            let per_cpu = self
                .probes
                .drops
                .get(&(reason as u32), 0)
                .context("reading drop counters")?;
            drops[reason as usize] = per_cpu.iter().sum();
        }
        drops[DropReason::CgroupMapFull as usize] += self.probes.counters.refused();
        Ok(drops)
    }

    /// The cgroup files that cross-check the kernel programs where they
    /// exist (memory and io controllers: pure cgroup v2 hosts), every
    /// [`CROSS_CHECK_EVERY`] samples: three opens per cgroup.
    pub(super) fn read_cgroup_files(&mut self) {
        if !self.health.samples.is_multiple_of(CROSS_CHECK_EVERY) {
            return;
        }
        // Job cgroups may be adopted from anywhere in the v2 hierarchy, so
        // the root's controllers decide, not only the monitored root's.
        if !(self.controllers.has("memory") || self.controllers.has("io")) {
            // Hybrid hosts (their controllers are all on v1): the job
            // cgroups have none of the files, only failed opens to pay for.
            self.views.files.clear();
            return;
        }
        let cgroups: Vec<(String, JobKey)> = self
            .table()
            .live_cgroups()
            .map(|(_, path, job)| (path.to_string(), job.clone()))
            .collect();
        let mut files: KeyMap<JobKey, CgroupFileStats> = KeyMap::default();
        for (path, job) in cgroups {
            let dir = JobTable::dir(&self.config.mount, &path);
            add_cgroup_files(files.entry(job).or_default(), &dir);
        }
        self.views.files = files;
    }

    /// Owners (and ids) of resource managers' jobs whose layout names
    /// none: the first process in the job's cgroups with a non-root uid
    /// tells both (its uid, its `SLURM_JOB_ID`).
    pub(super) fn resolve_identities(&mut self) {
        let pending = self.table().pending_identities();
        for job in pending {
            let pids: String = job
                .cgroups
                .iter()
                .map(|path| {
                    let procs = JobTable::dir(&self.config.mount, path).join("cgroup.procs");
                    std::fs::read_to_string(procs).unwrap_or_default()
                })
                .collect();
            let found = identity(&job, &pids, uid_of_process, slurm_job_id_of_process);
            if let Some((uid, jobid)) = found {
                self.table().resolve_identity(&job.key, uid, jobid);
            }
        }
    }

    /// What each live job was given: read for a job not seen before, and
    /// again with the cross-checks (a resource manager may change it).
    pub(super) fn read_allocations(&mut self) {
        let refresh = self.health.samples.is_multiple_of(CROSS_CHECK_EVERY);
        let table = self.table.clone();
        let table = super::lock(&table);
        // A job is new to this or its cgroup known only through a change
        // to the table: with none since the last look, no job is due
        // (no pass hashing every job's key, every sample).
        let generation = table.generation();
        if !refresh && self.views.allocations_looked_at == Some(generation) {
            return;
        }
        self.views.allocations_looked_at = Some(generation);
        let allocations = &mut self.views.allocations;
        let due: Vec<(JobKey, String)> = table
            .live_jobs()
            .filter(|job| refresh || !allocations.contains_key(&job.key))
            .filter(|job| !job.cgroup.is_empty())
            .map(|job| (job.key.clone(), job.cgroup.clone()))
            .collect();
        if refresh {
            let live: KeySet<&JobKey> = table.live_jobs().map(|job| &job.key).collect();
            let finished: KeySet<&JobKey> = table.finished_jobs().map(|job| &job.key).collect();
            // A finished job is never read again: one given nothing known
            // (every directory job on a hybrid host) needs no entry to say so.
            allocations.retain(|key, allocation| {
                live.contains(key)
                    || (finished.contains(key) && *allocation != Allocation::default())
            });
        }
        drop(table);
        for (key, cgroup) in due {
            let allocation = self.allocation.read(&cgroup, &self.controllers);
            if allocations.get(&key) == Some(&allocation) {
                // The usual cross-check: nothing changed, and no stat of
                // the directory (1,000 path walks every tenth sample).
                continue;
            }
            // A job ending as it is reread (its cgroup removed meanwhile)
            // read nothing: it keeps what it was given, its profile and
            // its last series say that.
            let gone = !JobTable::dir(&self.config.mount, &cgroup).exists();
            if gone && allocations.contains_key(&key) {
                continue;
            }
            allocations.insert(key, allocation);
        }
    }
}

/// Adds one cgroup's files in `dir` to its job's `stats`: current memory
/// and IO summed, the peak the highest.
fn add_cgroup_files(stats: &mut CgroupFileStats, dir: &Path) {
    add(
        &mut stats.memory_current,
        cgroupfs::read_number(dir, "memory.current"),
    );
    if let Some(peak) = cgroupfs::read_number(dir, "memory.peak") {
        stats.memory_peak = Some(stats.memory_peak.unwrap_or(0).max(peak));
    }
    if let Some((read, written)) = cgroupfs::read_io_stat(dir) {
        add(&mut stats.io_read_bytes, Some(read));
        add(&mut stats.io_write_bytes, Some(written));
    }
}

/// Adds an optional reading to an optional total (absent stays absent).
fn add(total: &mut Option<u64>, value: Option<u64>) {
    if let Some(value) = value {
        *total = Some(total.unwrap_or(0) + value);
    }
}

/// `job`'s owner and id as the first of its processes `pids` (one a line)
/// with a non-root uid tells them (`uid_of`, `job_id_of`).
fn identity(
    job: &PendingIdentity,
    pids: &str,
    uid_of: impl Fn(u32) -> Option<u32>,
    job_id_of: impl Fn(u32) -> Option<String>,
) -> Option<(u32, String)> {
    /// Processes looked at per job and sample, at most.
    const MAX_PIDS: usize = 16;
    pids.lines()
        .filter_map(|pid| pid.trim().parse::<u32>().ok())
        .take(MAX_PIDS)
        .find_map(|pid| {
            let uid = uid_of(pid).filter(|&uid| uid != 0)?;
            let jobid = if job.jobid {
                job_id_of(pid)?
            } else {
                job.key.jobid.clone()
            };
            Some((if job.owner { uid } else { job.key.uid }, jobid))
        })
}

/// The real uid of process `pid` (/proc/PID/status `Uid:`), if it still runs.
fn uid_of_process(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    real_uid(&status)
}

/// The real uid in a /proc/PID/status text.
fn real_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `SLURM_JOB_ID` in the environment process `pid` started with.
fn slurm_job_id_of_process(pid: u32) -> Option<String> {
    /// Environments are read up to this much.
    const MAX_ENVIRON: u64 = 256 * 1024;
    use std::io::Read as _;
    let mut environ = Vec::new();
    std::fs::File::open(format!("/proc/{pid}/environ"))
        .ok()?
        .take(MAX_ENVIRON)
        .read_to_end(&mut environ)
        .ok()?;
    slurm_job_id(&environ)
}

/// `SLURM_JOB_ID` in a /proc/PID/environ text, if it is a plausible id.
fn slurm_job_id(environ: &[u8]) -> Option<String> {
    environ
        .split(|&b| b == 0)
        .find_map(|var| var.strip_prefix(b"SLURM_JOB_ID="))
        .map(|id| String::from_utf8_lossy(id).into_owned())
        .filter(|id| {
            !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(owner: bool, jobid: bool) -> PendingIdentity {
        PendingIdentity {
            key: JobKey {
                uid: 0,
                jobid: "sluid".into(),
            },
            owner,
            jobid,
            cgroups: Vec::new(),
        }
    }

    #[test]
    fn the_first_non_root_process_tells_a_jobs_identity() {
        let uid_of = |pid| match pid {
            1 => Some(0),
            2 => Some(1001),
            3 => Some(1002),
            _ => None,
        };
        let job_id_of = |pid| (pid == 3).then(|| "77".to_string());
        let pids = "9\n1\n2\n3\n";
        assert_eq!(
            identity(&pending(true, false), pids, uid_of, job_id_of),
            Some((1001, "sluid".into()))
        );
        // Process 2 has no SLURM_JOB_ID: the next one tells both.
        assert_eq!(
            identity(&pending(true, true), pids, uid_of, job_id_of),
            Some((1002, "77".into()))
        );
        assert_eq!(
            identity(&pending(false, true), pids, uid_of, job_id_of),
            Some((0, "77".into()))
        );
        assert_eq!(
            identity(&pending(true, false), "1\n", uid_of, job_id_of),
            None
        );
        // Only the first processes are looked at.
        let many = format!("{}3\n", "1\n".repeat(16));
        assert_eq!(
            identity(&pending(true, false), &many, uid_of, job_id_of),
            None
        );
    }

    #[test]
    fn process_files_are_read_for_the_real_uid_and_a_plausible_job_id() {
        let status = "Name:\tx\nUid:\t1001\t0\t0\t0\nGid:\t100\t100\t100\t100\n";
        assert_eq!(real_uid(status), Some(1001));
        assert_eq!(real_uid("Name:\tx\n"), None);
        assert_eq!(
            slurm_job_id(b"PATH=/bin\0SLURM_JOB_ID=123\0HOME=/"),
            Some("123".into())
        );
        assert_eq!(slurm_job_id(b"SLURM_JOB_ID=\0"), None);
        assert_eq!(slurm_job_id(b"SLURM_JOB_ID=1;rm\0"), None);
        assert_eq!(slurm_job_id(b"SLURM_JOB_IDS=1\0"), None);
    }

    #[test]
    fn cgroup_files_add_up_per_job_and_absent_ones_stay_absent() {
        let dir = std::env::temp_dir().join(format!("sampler-reads-{}", std::process::id()));
        let (a, b) = (dir.join("a"), dir.join("b"));
        for (cgroup, current, peak) in [(&a, "100\n", "300\n"), (&b, "20\n", "250\n")] {
            std::fs::create_dir_all(cgroup).unwrap();
            std::fs::write(cgroup.join("memory.current"), current).unwrap();
            std::fs::write(cgroup.join("memory.peak"), peak).unwrap();
        }
        let mut stats = CgroupFileStats::default();
        add_cgroup_files(&mut stats, &a);
        add_cgroup_files(&mut stats, &b);
        add_cgroup_files(&mut stats, &dir.join("gone"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(stats.memory_current, Some(120));
        assert_eq!(stats.memory_peak, Some(300), "the highest, not the sum");
        assert_eq!(stats.io_read_bytes, None, "no io.stat anywhere");
    }
}
