//! Which cgroups a launcher is adopted in rather than moved out of.
//!
//! A peer already inside a resource manager's job cgroup keeps its limits:
//! moving it out would weaken them. The default rule matches Slurm's cgroup
//! v2 layout (`/system.slice/<node>_slurmstepd.scope/job_<id>/step_<id>/...`),
//! anchored at the hierarchy's root: a user may make `.../job_1/step_0`
//! in any subtree delegated to them (a systemd user manager's, a rootless
//! container runtime's). Rules match paths; whether a directory is a
//! resource manager's is its owner's to say (see [`manager_owned`]).
use std::{os::unix::fs::MetadataExt as _, path::Path};

use regex::Regex;

/// Slurm (cgroup/v2 plugin): `/system.slice/<node>_slurmstepd.scope/job_5/step_0/user/task_0`.
pub const SLURM_DEFAULT: &str =
    r"^/system\.slice/(?:[^/]+_)?slurmstepd\.scope/job_[0-9]+/step_[^/]+(/|$)";

/// Whether `dir` and every directory between it and `mount` belong to
/// root, as a resource manager's do: a directory a user owns (or one under
/// it, which that user could have made) is the user's, whatever its name.
pub fn manager_owned(mount: &Path, dir: &Path) -> bool {
    let Ok(relative) = dir.strip_prefix(mount) else {
        return false;
    };
    let mut at = mount.to_path_buf();
    for part in relative.components() {
        at.push(part);
        match std::fs::metadata(&at) {
            Ok(metadata) if metadata.uid() == 0 => {}
            _ => return false,
        }
    }
    true
}

#[derive(Debug, Clone)]
pub struct AdoptRules(Vec<Regex>);

impl AdoptRules {
    pub fn new(patterns: &[String]) -> Result<Self, regex::Error> {
        patterns
            .iter()
            .map(|p| Regex::new(p))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Should a peer in `cgroup` (hierarchy path) be adopted where it is?
    pub fn adopts(&self, cgroup: &str) -> bool {
        self.0.iter().any(|rule| rule.is_match(cgroup))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slurm_default_adopts_steps_only() {
        let rules = AdoptRules::new(&[SLURM_DEFAULT.to_string()]).unwrap();
        assert!(rules.adopts("/system.slice/slurmstepd.scope/job_5/step_0/user/task_0"));
        assert!(rules.adopts("/system.slice/node1_slurmstepd.scope/job_17/step_batch"));
        assert!(!rules.adopts("/system.slice/slurmstepd.scope/system"));
        assert!(!rules.adopts("/user.slice/user-1000.slice/session-3.scope"));
        assert!(!rules.adopts("/job_5x/step_0"));
        // Anchored: the same names in a user's delegated subtree are not Slurm's.
        assert!(!rules.adopts("/user.slice/user-1000.slice/user@1000.service/job_1/step_0"));
        assert!(!rules.adopts("/job_5/step_0"));
    }

    #[test]
    fn only_root_owned_directories_are_a_managers() {
        let mount = std::env::temp_dir().join(format!("monitor-adopt-{}", std::process::id()));
        let job = mount.join("system.slice/slurmstepd.scope/job_1/step_0");
        std::fs::create_dir_all(&job).unwrap();
        // The test runs as root in CI; elsewhere the files are the user's.
        let root = nix::unistd::geteuid().is_root();
        assert_eq!(manager_owned(&mount, &job), root);
        if root {
            nix::unistd::chown(
                &mount.join("system.slice/slurmstepd.scope/job_1"),
                Some(nix::unistd::Uid::from_raw(1000)),
                None,
            )
            .unwrap();
            assert!(
                !manager_owned(&mount, &job),
                "a user's directory on the way"
            );
        }
        assert!(!manager_owned(&mount, Path::new("/elsewhere")));
        std::fs::remove_dir_all(&mount).unwrap();
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(AdoptRules::new(&["(".to_string()]).is_err());
    }
}
