//! Which cgroups a launcher is adopted in rather than moved out of.
//!
//! A peer already inside a resource manager's job cgroup keeps its limits:
//! moving it out would weaken them. The default rule matches Slurm's cgroup
//! v2 layout (`.../job_<id>/step_<id>/...`).
use regex::Regex;

/// Slurm (cgroup/v2 plugin): `/system.slice/<node>_slurmstepd.scope/job_5/step_0/user/task_0`.
pub const SLURM_DEFAULT: &str = r"/job_[0-9]+/step_[^/]+(/|$)";

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
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(AdoptRules::new(&["(".to_string()]).is_err());
    }
}
