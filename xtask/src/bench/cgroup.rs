//! The benchmark's own cgroups: one root per benchmark under the v2 mount,
//! named after this process so that leftovers of a killed run can be told
//! apart from a concurrent run's, and removed with everything in them (by
//! the end-to-end tests' cgroup helpers).
use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use monitor_tests::cgroup::remove_tree;

pub const ROOT_PREFIX: &str = "monitor-bench-";

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_roots_are_named_after_their_process() {
        assert_eq!(owner_pid("monitor-bench-1234-cost.slice"), Some(1234));
        assert_eq!(owner_pid("monitor.slice"), None);
        assert_eq!(owner_pid("monitor-bench-x-cost.slice"), None);
    }
}
