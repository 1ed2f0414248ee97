//! Resource managers' job cgroups, found where they make them and counted in
//! place: a Slurm job is monitored with no change to its script.
//!
//! A layout is a regex over a cgroup's path in its hierarchy with named
//! captures: `jobid`, or `sluid` where the directory is named by Slurm's
//! SLUID (the job id then comes from a task's `SLURM_JOB_ID`, as CEEMS
//! reads it), and `uid` (otherwise the first non-root uid among the job's
//! tasks). It must match the job's directory itself, anchored with `^`;
//! the directories below a job's (its steps and tasks) count in that job.
//! A layout for a v1 hierarchy names its controller first
//! (`freezer:^/slurm/...`); all v1 layouts name the same one, the hierarchy
//! the kernel programs read a task's v1 cgroup in.
//!
//! The literal start of each layout (`/system.slice/`, `/slurm`) is handed
//! to the kernel: a cgroup made under it gets a counter slot at once, so a
//! job is counted from its first task; the daemon frees the slots of the
//! cgroups its full layouts do not take.
//!
//! [`layout`] parses the layouts; [`paths`] places table paths on disk;
//! here they are matched.
mod layout;
mod paths;
#[cfg(test)]
mod tests;

use std::{fs, path::Path};

use monitor_common::{DISCOVERY_PREFIX_MAX, DISCOVERY_PREFIXES, DiscoveryPrefix, NO_V1};
use thiserror::Error;

pub use self::paths::{Root, V1Hierarchy, dir, split, v1_table_path};
use self::{
    layout::{Layout, parse_layout},
    paths::{V1_MOUNT, v1_hierarchy},
};

/// Slurm with the cgroup/v2 plugin: `/system.slice/slurmstepd.scope/job_5`
/// (`<node>_slurmstepd.scope` where one host runs several slurmd).
pub const SLURM_V2: &str = r"^/system\.slice/(?:[^/]+_)?slurmstepd\.scope/job_(?P<jobid>[0-9]+)$";
/// Slurm with the cgroup/v1 plugin: `/slurm/uid_1001/job_5` in every v1
/// controller (`/slurm_<node>/...` as Debian's Slurm makes it); the freezer
/// hierarchy is the one proctrack/cgroup puts every task of a job in.
pub const SLURM_V1: &str = r"freezer:^/slurm(?:_[^/]+)?/uid_(?P<uid>[0-9]+)/job_(?P<jobid>[0-9]+)$";

#[derive(Debug, Error)]
pub enum DiscoveryError {
    #[error("layout {layout:?}: {source}")]
    Regex {
        layout: String,
        #[source]
        source: regex::Error,
    },
    #[error("layout {0:?} has no (?P<jobid>...) or (?P<sluid>...) capture")]
    NoJobId(String),
    #[error("layout {0:?} is not anchored: start it with ^ (after any `controller:`)")]
    NotAnchored(String),
    #[error("layouts name two v1 controllers, {0} and {1}: the programs read one v1 hierarchy")]
    TwoControllers(String, String),
    #[error("more than {DISCOVERY_PREFIXES} layouts")]
    TooMany,
    #[error("reading {path}: {source}")]
    Read {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// A job directory a layout matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The `jobid` capture; for a `sluid` layout, the SLUID until a task's
    /// `SLURM_JOB_ID` names the job.
    pub jobid: String,
    /// The job id is to come from a task's environment (a `sluid` layout).
    pub jobid_from_tasks: bool,
    pub uid: Option<u32>,
}

/// The layouts in force (none: discovery is off).
#[derive(Debug, Clone, Default)]
pub struct Discovery {
    layouts: Vec<Layout>,
    v1: Option<V1Hierarchy>,
}

impl Discovery {
    /// Parses `specs` (`[controller:]^regex`) against this machine's
    /// hierarchies (/proc/cgroups and /proc/self/mountinfo).
    pub fn new(specs: &[String]) -> Result<Self, DiscoveryError> {
        let read = |path: &'static str| {
            fs::read_to_string(path).map_err(|source| DiscoveryError::Read { path, source })
        };
        if specs.is_empty() {
            return Ok(Self::default());
        }
        Self::from_system(
            specs,
            &read("/proc/cgroups")?,
            &read("/proc/self/mountinfo")?,
        )
    }

    fn from_system(
        specs: &[String],
        cgroups: &str,
        mountinfo: &str,
    ) -> Result<Self, DiscoveryError> {
        if specs.len() > DISCOVERY_PREFIXES {
            return Err(DiscoveryError::TooMany);
        }
        let layouts = specs
            .iter()
            .map(|spec| parse_layout(spec))
            .collect::<Result<Vec<_>, _>>()?;
        let mut controller: Option<&str> = None;
        for layout in &layouts {
            if let Some(this) = layout.controller.as_deref() {
                match controller {
                    Some(other) if other != this => {
                        return Err(DiscoveryError::TwoControllers(other.into(), this.into()));
                    }
                    _ => controller = Some(this),
                }
            }
        }
        let v1 = match controller {
            None => None,
            Some(name) => v1_hierarchy(name, cgroups, mountinfo),
        };
        // A host without that v1 hierarchy (pure v2) simply has no such jobs.
        let layouts = layouts
            .into_iter()
            .filter(|l| l.controller.is_none() || v1.is_some())
            .collect();
        Ok(Self { layouts, v1 })
    }

    pub fn is_off(&self) -> bool {
        self.layouts.is_empty()
    }

    pub fn v1(&self) -> Option<&V1Hierarchy> {
        self.v1.as_ref()
    }

    /// Makes v1 table paths resolvable by [`dir`] (once per process).
    pub fn publish_v1_mount(&self) {
        if let Some(v1) = &self.v1 {
            let _ = V1_MOUNT.set((v1.controller.clone(), v1.mount.clone()));
        }
    }

    /// What the kernel programs need: the v1 hierarchy and the prefixes.
    pub fn kernel_filter(&self) -> monitor_common::Discovery {
        let mut filter = monitor_common::Discovery::OFF;
        if let Some(v1) = &self.v1 {
            filter.v1_hierarchy = v1.hierarchy;
            filter.v1_subsys = v1.subsys;
        }
        for (slot, layout) in filter.prefixes.iter_mut().zip(&self.layouts) {
            let bytes = layout.prefix.as_bytes();
            let len = bytes.len();
            *slot = DiscoveryPrefix {
                v1: u32::from(layout.controller.is_some()),
                len: len as u32,
                bytes: [0; DISCOVERY_PREFIX_MAX],
            };
            slot.bytes[..len].copy_from_slice(&bytes[..len]);
            filter.count += 1;
        }
        if filter.v1_hierarchy == NO_V1 {
            filter.v1_subsys = NO_V1;
        }
        filter
    }

    /// The job `path` (a table path: `/x/y` in v2, `controller:/x/y` in v1)
    /// is the directory of, if a layout says so.
    pub fn job_of(&self, path: &str) -> Option<Found> {
        let (controller, path) = split(path);
        self.layouts
            .iter()
            .filter(|l| l.controller.as_deref() == controller)
            .find_map(|l| {
                let captures = l.pattern.captures(path)?;
                let (jobid, jobid_from_tasks) = match captures.name("jobid") {
                    Some(jobid) => (jobid.as_str(), false),
                    None => (captures.name("sluid")?.as_str(), true),
                };
                if jobid.is_empty() {
                    return None;
                }
                Some(Found {
                    jobid: jobid.to_string(),
                    jobid_from_tasks,
                    uid: captures.name("uid").and_then(|u| u.as_str().parse().ok()),
                })
            })
    }

    /// Whether a new cgroup at `path` may be under a job layout (the
    /// kernel gave it a slot for that reason).
    pub fn may_hold_jobs(&self, path: &str) -> bool {
        let (controller, path) = split(path);
        self.layouts
            .iter()
            .any(|l| l.controller.as_deref() == controller && path.starts_with(&l.prefix))
    }

    /// The directories to walk for jobs already there (at start, and after
    /// lost events): each layout's literal prefix up to its last `/`, with
    /// the mount of its hierarchy and its v1 controller (None: v2).
    pub fn roots(&self, v2_mount: &Path) -> Vec<Root> {
        let mut roots: Vec<Root> = Vec::new();
        for layout in &self.layouts {
            let parent = layout
                .prefix
                .rsplit_once('/')
                .map_or("", |(parent, _)| parent);
            let mount = match (&layout.controller, &self.v1) {
                (None, _) => v2_mount.to_path_buf(),
                (Some(_), Some(v1)) => v1.mount.clone(),
                (Some(_), None) => continue,
            };
            let root = Root {
                dir: mount.join(parent.trim_start_matches('/')),
                mount,
                controller: layout.controller.clone(),
            };
            if !roots.contains(&root) {
                roots.push(root);
            }
        }
        roots
    }
}
