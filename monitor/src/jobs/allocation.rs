//! What a job was given, where its cgroup says it cheaply: the CPUs of its
//! cpuset and its memory limit, so that efficiency can be computed (CPU
//! seconds over elapsed times CPUs; peak over limit).
//!
//! A v2 job cgroup has `cpuset.cpus.effective` and `memory.max` when those
//! controllers are enabled for it. A job of the watched v1 hierarchy (say
//! `freezer:/slurm_node/uid_1/job_5`) has the same path in the cpuset and
//! memory hierarchies, where Slurm's task/cgroup sets `cpuset.cpus` and
//! `memory.limit_in_bytes`.
use std::{
    fs,
    path::{Path, PathBuf},
};

use crate::system::cgroupfs::RootControllers;

/// A v1 memory limit at or above this is "no limit" (the kernel shows
/// PAGE_COUNTER_MAX pages as a byte count near i64::MAX).
const V1_UNLIMITED: u64 = 1 << 62;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allocation {
    pub cpus: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
}

/// Reads allocations from the cgroup files.
#[derive(Debug, Clone)]
pub struct AllocationReader {
    v2_mount: PathBuf,
    cpuset_v1: Option<PathBuf>,
    memory_v1: Option<PathBuf>,
}

impl AllocationReader {
    pub fn new(v2_mount: &Path) -> Self {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        Self {
            v2_mount: v2_mount.to_path_buf(),
            cpuset_v1: v1_mount("cpuset", &mountinfo),
            memory_v1: v1_mount("memory", &mountinfo),
        }
    }

    /// The allocation of the job whose (first) cgroup is table path
    /// `cgroup`; a v2 one's files are opened only for the `controllers`
    /// the root hands down (on a hybrid host, 2,000 failed opens a refresh
    /// at 1,000 jobs otherwise).
    pub fn read(&self, cgroup: &str, controllers: &RootControllers) -> Allocation {
        match super::discovery::split(cgroup) {
            (Some(_), path) => {
                let relative = path.trim_matches('/');
                let in_v1 = |mount: &Option<PathBuf>, file: &str| {
                    fs::read_to_string(mount.as_ref()?.join(relative).join(file)).ok()
                };
                Allocation {
                    cpus: in_v1(&self.cpuset_v1, "cpuset.cpus").and_then(|t| count_cpus(&t)),
                    memory_limit_bytes: in_v1(&self.memory_v1, "memory.limit_in_bytes")
                        .and_then(|t| t.trim().parse::<u64>().ok())
                        .filter(|&limit| limit < V1_UNLIMITED),
                }
            }
            (None, path) => {
                let dir = self.v2_mount.join(path.trim_start_matches('/'));
                let read = |enabled: bool, file: &str| {
                    enabled
                        .then(|| fs::read_to_string(dir.join(file)).ok())
                        .flatten()
                };
                Allocation {
                    cpus: read(controllers.has("cpuset"), "cpuset.cpus.effective")
                        .and_then(|t| count_cpus(&t)),
                    // "max": no limit.
                    memory_limit_bytes: read(controllers.has("memory"), "memory.max")
                        .and_then(|t| t.trim().parse().ok()),
                }
            }
        }
    }
}

/// The number of CPUs in a cpuset list such as `0-3,8,10-11`; None when
/// empty or malformed.
pub fn count_cpus(list: &str) -> Option<u64> {
    let list = list.trim();
    if list.is_empty() {
        return None;
    }
    let mut count = 0u64;
    for part in list.split(',') {
        let part = part.trim();
        match part.split_once('-') {
            Some((first, last)) => {
                let (first, last): (u64, u64) = (first.parse().ok()?, last.parse().ok()?);
                count += last.checked_sub(first)? + 1;
            }
            None => {
                part.parse::<u64>().ok()?;
                count += 1;
            }
        }
    }
    Some(count)
}

/// The mount of v1 controller `controller` in mountinfo text.
pub fn v1_mount(controller: &str, mountinfo: &str) -> Option<PathBuf> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuset_lists_are_counted() {
        assert_eq!(count_cpus("0-3,8,10-11\n"), Some(7));
        assert_eq!(count_cpus("1"), Some(1));
        assert_eq!(count_cpus("\n"), None);
        assert_eq!(count_cpus("3-1"), None);
        assert_eq!(count_cpus("a-b"), None);
    }

    #[test]
    fn v1_mounts_are_found_by_controller() {
        let mountinfo = "35 25 0:31 / /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset\n\
            36 25 0:32 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
        assert_eq!(
            v1_mount("cpuacct", mountinfo),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(v1_mount("memory", mountinfo), None);
    }

    #[test]
    fn v1_and_v2_jobs_read_their_own_files() {
        let base = std::env::temp_dir().join(format!("monitor-allocation-{}", std::process::id()));
        let v1_job = base.join("cpuset/slurm/uid_1/job_5");
        let v1_memory = base.join("memory/slurm/uid_1/job_5");
        let v2_job = base.join("v2/jobs/a");
        for dir in [&v1_job, &v1_memory, &v2_job] {
            fs::create_dir_all(dir).unwrap();
        }
        fs::write(v1_job.join("cpuset.cpus"), "0-1\n").unwrap();
        fs::write(v1_memory.join("memory.limit_in_bytes"), "1073741824\n").unwrap();
        fs::write(v2_job.join("cpuset.cpus.effective"), "3\n").unwrap();
        fs::write(v2_job.join("memory.max"), "max\n").unwrap();
        let reader = AllocationReader {
            v2_mount: base.join("v2"),
            cpuset_v1: Some(base.join("cpuset")),
            memory_v1: Some(base.join("memory")),
        };
        // The v2 root hands neither controller down: no v2 file is opened.
        let none = RootControllers::read(&base.join("v2"));
        assert_eq!(reader.read("/jobs/a", &none), Allocation::default());
        fs::write(base.join("v2/cgroup.subtree_control"), "cpuset memory\n").unwrap();
        let controllers = RootControllers::read(&base.join("v2"));
        assert_eq!(
            reader.read("freezer:/slurm/uid_1/job_5", &controllers),
            Allocation {
                cpus: Some(2),
                memory_limit_bytes: Some(1 << 30)
            }
        );
        assert_eq!(
            reader.read("/jobs/a", &controllers),
            Allocation {
                cpus: Some(1),
                memory_limit_bytes: None
            }
        );
        fs::write(
            v1_memory.join("memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .unwrap();
        assert_eq!(
            reader
                .read("freezer:/slurm/uid_1/job_5", &controllers)
                .memory_limit_bytes,
            None
        );
        fs::remove_dir_all(&base).unwrap();
    }
}
