//! A bench daemon's programs as it pinned them (`<pin path>/<stamp>/prog_<name>`
//! and `link_<name>_<n>`): which are attached, and their bpf_stats read
//! straight from the kernel at any moment, not once per sample through
//! /metrics, and without a scrape that would add to the daemon's own work.
use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use aya::programs::ProgramInfo;

use super::bpf_stats::RunStats;

/// A daemon's committed pin set.
pub struct PinnedPrograms {
    dir: PathBuf,
    /// Programs with at least one pinned link: attached.
    attached: Vec<String>,
}

impl PinnedPrograms {
    /// The one committed set under `pin_path` (a set being staged is skipped).
    pub fn find(pin_path: &Path) -> anyhow::Result<Self> {
        let sets: Vec<PathBuf> = fs::read_dir(pin_path)
            .with_context(|| format!("listing {}", pin_path.display()))?
            .filter_map(Result::ok)
            .filter(|e| !e.file_name().to_string_lossy().starts_with("staging-"))
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        let [dir] = sets.as_slice() else {
            bail!(
                "expected one pinned set under {}, found {}",
                pin_path.display(),
                sets.len()
            );
        };
        let mut attached: Vec<String> = fs::read_dir(dir)
            .with_context(|| format!("listing {}", dir.display()))?
            .filter_map(Result::ok)
            .filter_map(|e| link_program(&e.file_name().to_string_lossy()).map(str::to_string))
            .collect();
        attached.sort();
        attached.dedup();
        Ok(Self {
            dir: dir.clone(),
            attached,
        })
    }

    /// Names of the attached programs, sorted.
    pub fn attached(&self) -> &[String] {
        &self.attached
    }

    /// Run time and count of every attached program now.
    pub fn stats(&self) -> anyhow::Result<BTreeMap<String, RunStats>> {
        self.attached
            .iter()
            .map(|name| {
                let path = self.dir.join(format!("prog_{name}"));
                let info = ProgramInfo::from_pin(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                Ok((
                    name.clone(),
                    RunStats {
                        run_time_ns: info.run_time().as_nanos() as f64,
                        run_count: info.run_count() as f64,
                    },
                ))
            })
            .collect()
    }
}

/// The program of a link pin `link_<program>_<n>`.
fn link_program(file: &str) -> Option<&str> {
    let rest = file.strip_prefix("link_")?;
    let (program, n) = rest.rsplit_once('_')?;
    n.parse::<usize>().ok().map(|_| program)
}

/// What happened to every program between two readings (programs in both).
pub fn since(
    now: &BTreeMap<String, RunStats>,
    earlier: &BTreeMap<String, RunStats>,
) -> BTreeMap<String, RunStats> {
    now.iter()
        .filter_map(|(name, stats)| Some((name.clone(), stats.since(*earlier.get(name)?))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_name_their_program() {
        assert_eq!(link_program("link_task_iter_0"), Some("task_iter"));
        assert_eq!(
            link_program("link_cgroup_attach_task_12"),
            Some("cgroup_attach_task")
        );
        assert_eq!(link_program("prog_task_iter"), None);
        assert_eq!(link_program("link_task_iter"), None);
        assert_eq!(link_program("map_DROPS"), None);
    }
}
