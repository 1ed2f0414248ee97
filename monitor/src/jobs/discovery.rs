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
use std::{
    fs,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use monitor_common::{DISCOVERY_PREFIX_MAX, DISCOVERY_PREFIXES, DiscoveryPrefix, NO_V1};
use regex::Regex;
use thiserror::Error;

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

/// One job layout.
#[derive(Debug, Clone)]
struct Layout {
    /// The v1 controller whose hierarchy it is in; None: the v2 hierarchy.
    controller: Option<String>,
    pattern: Regex,
    /// Its literal start as the kernel compares it (at most
    /// [`DISCOVERY_PREFIX_MAX`] bytes): what the kernel gives slots under is
    /// what the daemon frees them under.
    prefix: String,
}

/// The watched v1 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Hierarchy {
    pub controller: String,
    /// Its id (the cgroup tracepoints' `root`).
    pub hierarchy: u32,
    /// Its controller's index in `css_set.subsys[]`.
    pub subsys: u32,
    pub mount: PathBuf,
}

/// A directory under which a layout's jobs are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    pub dir: PathBuf,
    /// The mount of its hierarchy.
    pub mount: PathBuf,
    /// Its v1 controller; None: v2.
    pub controller: Option<String>,
}

impl Root {
    /// The table path of `dir`, found under this root.
    pub fn table_path(&self, dir: &Path) -> Option<String> {
        let relative = dir.strip_prefix(&self.mount).ok()?.to_string_lossy();
        let path = format!("/{}", relative.trim_end_matches('/'));
        Some(match &self.controller {
            Some(controller) => v1_table_path(controller, &path),
            None => path,
        })
    }
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

/// Where v1 table paths (`freezer:/slurm/...`) live on disk: set once at
/// start when a v1 hierarchy is watched.
static V1_MOUNT: OnceLock<(String, PathBuf)> = OnceLock::new();

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

/// The directory of table path `path`: under the v2 mount, or (for
/// `controller:/x`) under the watched v1 hierarchy's mount.
pub fn dir(v2_mount: &Path, path: &str) -> PathBuf {
    match (split(path), V1_MOUNT.get()) {
        ((Some(controller), rest), Some((watched, mount))) if controller == watched => {
            mount.join(rest.trim_start_matches('/'))
        }
        ((_, rest), _) => v2_mount.join(rest.trim_start_matches('/')),
    }
}

/// The table path of a cgroup of the watched v1 hierarchy.
pub fn v1_table_path(controller: &str, path: &str) -> String {
    format!("{controller}:{path}")
}

/// `controller:/x` -> (Some(controller), "/x"); `/x` -> (None, "/x").
pub fn split(path: &str) -> (Option<&str>, &str) {
    match path.split_once(":/") {
        Some((controller, _)) if !controller.contains('/') => {
            (Some(controller), &path[controller.len() + 1..])
        }
        _ => (None, path),
    }
}

fn parse_layout(spec: &str) -> Result<Layout, DiscoveryError> {
    let (controller, source) = match spec.split_once(":^") {
        Some((controller, rest)) if !controller.contains(['/', '^']) && !controller.is_empty() => {
            (Some(controller.to_string()), format!("^{rest}"))
        }
        _ => (None, spec.to_string()),
    };
    if !source.starts_with('^') {
        return Err(DiscoveryError::NotAnchored(spec.to_string()));
    }
    let pattern = Regex::new(&source).map_err(|source| DiscoveryError::Regex {
        layout: spec.to_string(),
        source,
    })?;
    if !pattern
        .capture_names()
        .any(|name| name == Some("jobid") || name == Some("sluid"))
    {
        return Err(DiscoveryError::NoJobId(spec.to_string()));
    }
    let mut prefix = literal_prefix(pattern.as_str());
    while prefix.len() > DISCOVERY_PREFIX_MAX {
        prefix.pop();
    }
    Ok(Layout {
        controller,
        pattern,
        prefix,
    })
}

/// The literal text an anchored regex's matches all start with: its
/// characters up to the first one with a special meaning (`\.` is a dot).
fn literal_prefix(pattern: &str) -> String {
    let mut out = String::new();
    let mut chars = pattern
        .strip_prefix('^')
        .unwrap_or(pattern)
        .chars()
        .peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some(&next) if next.is_ascii_punctuation() => {
                    out.push(next);
                    chars.next();
                }
                _ => break,
            },
            '.' | '[' | ']' | '(' | ')' | '{' | '}' | '*' | '+' | '?' | '|' | '^' | '$' => {
                // A quantifier applies to the character before it.
                if matches!(c, '*' | '?' | '{') {
                    out.pop();
                }
                break;
            }
            c => out.push(c),
        }
    }
    out
}

/// `controller`'s own v1 hierarchy: its id and subsys index from
/// /proc/cgroups (listed in subsys order), its mount from mountinfo.
fn v1_hierarchy(controller: &str, cgroups: &str, mountinfo: &str) -> Option<V1Hierarchy> {
    let (subsys, hierarchy) = cgroups
        .lines()
        .filter(|line| !line.starts_with('#'))
        .enumerate()
        .find_map(|(index, line)| {
            let mut fields = line.split_whitespace();
            let name = fields.next()?;
            let hierarchy: u32 = fields.next()?.parse().ok()?;
            (name == controller && hierarchy != 0).then_some((index as u32, hierarchy))
        })?;
    let mount = super::allocation::v1_mount(controller, mountinfo)?;
    Some(V1Hierarchy {
        controller: controller.to_string(),
        hierarchy,
        subsys,
        mount,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CGROUPS: &str = "#subsys_name\thierarchy\tnum_cgroups\tenabled\n\
        cpuset\t6\t1\t1\ncpu\t3\t57\t1\ncpuacct\t3\t57\t1\nblkio\t9\t57\t1\n\
        memory\t4\t88\t1\ndevices\t10\t57\t1\nfreezer\t7\t1\t1\nnet_cls\t2\t1\t1\n";
    const MOUNTINFO: &str = "30 25 0:26 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
        35 25 0:31 / /sys/fs/cgroup/freezer rw,nosuid - cgroup cgroup rw,freezer\n\
        36 25 0:32 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";

    fn slurm() -> Discovery {
        Discovery::from_system(&[SLURM_V2.into(), SLURM_V1.into()], CGROUPS, MOUNTINFO).unwrap()
    }

    #[test]
    fn slurm_v1_jobs_are_found_in_the_freezer_hierarchy() {
        let d = slurm();
        let v1 = d.v1().unwrap();
        assert_eq!((v1.hierarchy, v1.subsys), (7, 6));
        assert_eq!(v1.mount, PathBuf::from("/sys/fs/cgroup/freezer"));
        let job = |path: &str| d.job_of(path);
        assert_eq!(
            job("freezer:/slurm_vm/uid_1001/job_17"),
            Some(Found {
                jobid: "17".into(),
                jobid_from_tasks: false,
                uid: Some(1001)
            })
        );
        assert_eq!(job("freezer:/slurm/uid_0/job_3").unwrap().jobid, "3");
        assert_eq!(job("freezer:/slurm_vm/uid_1001/job_17/step_batch"), None);
        assert_eq!(job("freezer:/slurm_vm/uid_1001"), None);
        assert_eq!(
            job("/slurm_vm/uid_1001/job_17"),
            None,
            "a v1 layout is not a v2 path"
        );
        assert!(d.may_hold_jobs("freezer:/slurm_vm/uid_1001"));
        assert!(!d.may_hold_jobs("freezer:/docker/abc"));
    }

    #[test]
    fn slurm_v2_jobs_and_multi_slurmd_scopes_are_found() {
        let d = slurm();
        assert_eq!(
            d.job_of("/system.slice/slurmstepd.scope/job_5")
                .unwrap()
                .jobid,
            "5"
        );
        assert_eq!(
            d.job_of("/system.slice/node7_slurmstepd.scope/job_6"),
            Some(Found {
                jobid: "6".into(),
                jobid_from_tasks: false,
                uid: None
            })
        );
        assert_eq!(
            d.job_of("/system.slice/slurmstepd.scope/job_5/step_0"),
            None
        );
        assert_eq!(d.job_of("/system.slice/slurmstepd.scope/system"), None);
        assert_eq!(
            d.job_of("/user.slice/x/system.slice/slurmstepd.scope/job_5"),
            None
        );
    }

    #[test]
    fn a_sluid_layout_takes_the_job_id_from_its_tasks() {
        let layout = r"^/system\.slice/slurmstepd\.scope/job_(?P<sluid>s[0-9A-Z]+)$";
        let d = Discovery::from_system(&[layout.into()], CGROUPS, MOUNTINFO).unwrap();
        assert_eq!(
            d.job_of("/system.slice/slurmstepd.scope/job_s1Z3K"),
            Some(Found {
                jobid: "s1Z3K".into(),
                jobid_from_tasks: true,
                uid: None
            })
        );
    }

    #[test]
    fn the_kernel_gets_each_layouts_literal_start() {
        let filter = slurm().kernel_filter();
        assert_eq!(
            (filter.v1_hierarchy, filter.v1_subsys, filter.count),
            (7, 6, 2)
        );
        let prefix = |i: usize| {
            let p = &filter.prefixes[i];
            (
                p.v1,
                String::from_utf8_lossy(&p.bytes[..p.len as usize]).into_owned(),
            )
        };
        assert_eq!(prefix(0), (0, "/system.slice/".to_string()));
        assert_eq!(prefix(1), (1, "/slurm".to_string()));
    }

    #[test]
    fn a_long_literal_start_is_cut_where_the_kernel_cuts_it() {
        let long = "a".repeat(DISCOVERY_PREFIX_MAX + 10);
        let d = Discovery::from_system(
            &[format!("^/{long}/job_(?P<jobid>[0-9]+)$")],
            CGROUPS,
            MOUNTINFO,
        )
        .unwrap();
        let filter = d.kernel_filter();
        assert_eq!(filter.prefixes[0].len as usize, DISCOVERY_PREFIX_MAX);
        // Under the cut prefix but not the full one: given a slot by the
        // kernel, so freed by the daemon.
        assert!(d.may_hold_jobs(&format!("/{}b", &long[..DISCOVERY_PREFIX_MAX - 1])));
    }

    #[test]
    fn literal_prefixes_stop_at_the_first_special_character() {
        assert_eq!(literal_prefix(r"^/a\.b/c(?:d)"), "/a.b/c");
        assert_eq!(literal_prefix(r"^/pbs\.slice/jobs?/"), "/pbs.slice/job");
        assert_eq!(literal_prefix(r"^/x[0-9]"), "/x");
        assert_eq!(literal_prefix(r"^(?P<jobid>\d+)"), "");
    }

    #[test]
    fn walk_roots_are_the_prefixes_directories() {
        let roots = slurm().roots(Path::new("/sys/fs/cgroup/unified"));
        let dirs: Vec<_> = roots.iter().map(|r| r.dir.clone()).collect();
        assert_eq!(
            dirs,
            vec![
                PathBuf::from("/sys/fs/cgroup/unified/system.slice"),
                PathBuf::from("/sys/fs/cgroup/freezer/"),
            ]
        );
        assert_eq!(
            roots[1].table_path(Path::new("/sys/fs/cgroup/freezer/slurm_vm/uid_0/job_1")),
            Some("freezer:/slurm_vm/uid_0/job_1".to_string())
        );
        assert_eq!(
            roots[0].table_path(Path::new("/sys/fs/cgroup/unified/system.slice/x")),
            Some("/system.slice/x".to_string())
        );
    }

    #[test]
    fn table_paths_of_v1_cgroups_resolve_in_their_hierarchy() {
        assert_eq!(
            split("freezer:/slurm/uid_0/job_1"),
            (Some("freezer"), "/slurm/uid_0/job_1")
        );
        assert_eq!(split("/system.slice/a:b"), (None, "/system.slice/a:b"));
        assert_eq!(v1_table_path("freezer", "/slurm"), "freezer:/slurm");
    }

    #[test]
    fn bad_layouts_are_refused_with_the_reason() {
        let refuse = |spec: &str| Discovery::from_system(&[spec.into()], CGROUPS, MOUNTINFO);
        assert!(matches!(
            refuse("/job_(?P<jobid>1)"),
            Err(DiscoveryError::NotAnchored(_))
        ));
        assert!(matches!(
            refuse("^/job_(\\d+)"),
            Err(DiscoveryError::NoJobId(_))
        ));
        assert!(matches!(
            refuse("^/job_(?P<jobid>"),
            Err(DiscoveryError::Regex { .. })
        ));
        let two = Discovery::from_system(
            &[
                "freezer:^/a/(?P<jobid>1)".into(),
                "memory:^/b/(?P<jobid>1)".into(),
            ],
            CGROUPS,
            MOUNTINFO,
        );
        assert!(matches!(two, Err(DiscoveryError::TwoControllers(..))));
    }

    #[test]
    fn a_v1_layout_on_a_host_without_that_hierarchy_is_dropped() {
        let d = Discovery::from_system(&[SLURM_V1.into()], CGROUPS, "").unwrap();
        assert!(d.is_off());
        assert_eq!(d.kernel_filter().v1_subsys, NO_V1);
    }
}
