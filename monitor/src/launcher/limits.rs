//! The resource limits a process would leave if it were moved out of its
//! cgroup v2 into a task cgroup.
//!
//! A cgroup v2 limit binds every process below the cgroup that sets it
//! (systemd's `user-UID.slice` TasksMax and MemoryMax, another resource
//! manager's job cgroup). Moving a registering process into a task cgroup
//! under `--cgroup.root` leaves every limit set between the hierarchy's
//! root and the process's cgroup, except those also above the task cgroup.
//! Copying them to the task cgroup would not keep them: they are shared
//! budgets (TasksMax counts all of a user's processes together), so a copy
//! per task would hand out the budget again. And the task cgroup cannot be
//! made under the limited cgroup: that is another manager's subtree
//! (systemd's, Slurm's), where cgroup v2's no-internal-process rule and
//! delegation leave it nowhere to go. So such a registration is refused.
//!
//! Limits of v1 hierarchies (hybrid and v1 hosts) are kept whatever
//! happens: the daemon moves processes in the v2 hierarchy only. Only the
//! controllers a host runs in its v2 hierarchy have interface files there,
//! so on a hybrid host only those (hugetlb, say) are looked at.
use std::{
    fmt, fs, io,
    path::{Path, PathBuf},
};

use thiserror::Error;

/// A limit a move would leave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// The cgroup that sets it, as a path in the hierarchy.
    pub cgroup: String,
    /// Its interface file (`pids.max`) and what it says.
    pub file: String,
    pub value: String,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} = {:?} in cgroup {:?}",
            self.file, self.value, self.cgroup
        )
    }
}

#[derive(Debug, Error)]
#[error("reading the limits of cgroup {cgroup:?}: {source}")]
pub struct LimitsError {
    pub cgroup: String,
    #[source]
    pub source: io::Error,
}

/// The first limit a process in `source` (a hierarchy path) would leave by
/// a move to a child of `target_parent` (a hierarchy path), `mount` being
/// the v2 mount. Cgroups above both, whose limits bind the task cgroup
/// too, are not looked at.
pub fn left_by_move(
    mount: &Path,
    source: &str,
    target_parent: &str,
) -> Result<Option<Limit>, LimitsError> {
    for cgroup in ancestors(source) {
        if is_ancestor_or_self(&cgroup, target_parent) {
            // This one and every one above it bind the target as well.
            break;
        }
        if let Some(limit) = limit_of(mount, &cgroup)? {
            return Ok(Some(limit));
        }
    }
    let (Some(from), Some(to)) = (
        effective_cpuset(mount, source)?,
        effective_cpuset(mount, target_parent)?,
    ) else {
        return Ok(None);
    };
    // A cpuset is inherited (and confined) down the tree: compare where the
    // process may run now with where it would.
    Ok(from
        .iter()
        .zip(&to)
        .find(|((_, here), (_, there))| here != there)
        .map(|((file, value), _)| Limit {
            cgroup: source.to_string(),
            file: (*file).to_string(),
            value: value.clone(),
        }))
}

/// `path` and the cgroups above it, deepest first, without the root.
fn ancestors(path: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut at = path.trim_end_matches('/');
    while !at.is_empty() {
        found.push(at.to_string());
        at = at.rsplit_once('/').map_or("", |(parent, _)| parent);
    }
    found
}

fn is_ancestor_or_self(ancestor: &str, path: &str) -> bool {
    let ancestor = ancestor.trim_end_matches('/');
    path == ancestor
        || path
            .strip_prefix(ancestor)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn dir_of(mount: &Path, cgroup: &str) -> PathBuf {
    mount.join(cgroup.trim_start_matches('/'))
}

/// The first limit cgroup `cgroup` itself sets, by its interface files.
fn limit_of(mount: &Path, cgroup: &str) -> Result<Option<Limit>, LimitsError> {
    let error = |source| LimitsError {
        cgroup: cgroup.to_string(),
        source,
    };
    let dir = dir_of(mount, cgroup);
    let mut names: Vec<String> = fs::read_dir(&dir)
        .map_err(error)?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| is_limit_file(name))
        .collect();
    names.sort();
    for name in names {
        let text = match fs::read_to_string(dir.join(&name)) {
            Ok(text) => text,
            Err(e) => return Err(error(e)),
        };
        if let Some(value) = limiting_value(&name, &text) {
            return Ok(Some(Limit {
                cgroup: cgroup.to_string(),
                file: name,
                value,
            }));
        }
    }
    Ok(None)
}

/// Interface files that cap what the cgroup's processes may use. Not
/// protections (`memory.low`, `memory.min`) nor weights: leaving those
/// takes nothing away from anyone else.
fn is_limit_file(name: &str) -> bool {
    let Some((controller, _)) = name.split_once('.') else {
        return false;
    };
    match controller {
        // cgroup.max.depth and cgroup.max.descendants bound the tree, not
        // the processes.
        "cgroup" => false,
        "memory" => name == "memory.high" || name.ends_with(".max"),
        _ => name.ends_with(".max"),
    }
}

/// What in a limit file's `text` limits (None: every value is `max`).
/// Formats: a single value (`memory.max`, `pids.max`, `hugetlb.2MB.max`);
/// `QUOTA PERIOD` (`cpu.max`); `KEY VALUE` lines (`misc.max`); `DEVICE
/// key=value...` lines (`io.max`, `rdma.max`).
fn limiting_value(name: &str, text: &str) -> Option<String> {
    let limited = |value: &str| value != "max";
    let text = text.trim();
    let limits = match name {
        "cpu.max" => text.split_whitespace().next().is_some_and(limited),
        "misc.max" => text
            .lines()
            .any(|line| line.split_whitespace().nth(1).is_some_and(limited)),
        _ if text.contains('=') => text
            .split_whitespace()
            .filter_map(|pair| pair.split_once('='))
            .any(|(_, value)| limited(value)),
        _ => !text.is_empty() && text.lines().any(|line| limited(line.trim())),
    };
    limits.then(|| text.to_string())
}

/// `cpuset.cpus.effective` and `cpuset.mems.effective` of a cgroup, or
/// None where the cpuset controller is not enabled for it.
fn effective_cpuset(
    mount: &Path,
    cgroup: &str,
) -> Result<Option<Vec<(&'static str, String)>>, LimitsError> {
    let dir = dir_of(mount, cgroup);
    let mut values = Vec::new();
    for file in ["cpuset.cpus.effective", "cpuset.mems.effective"] {
        match fs::read_to_string(dir.join(file)) {
            Ok(text) => values.push((file, text.trim().to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(LimitsError {
                    cgroup: cgroup.to_string(),
                    source,
                });
            }
        }
    }
    Ok(Some(values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_files_are_caps_only() {
        for name in [
            "memory.max",
            "memory.high",
            "memory.swap.max",
            "pids.max",
            "cpu.max",
            "io.max",
            "hugetlb.2MB.max",
            "hugetlb.2MB.rsvd.max",
            "misc.max",
            "rdma.max",
        ] {
            assert!(is_limit_file(name), "{name}");
        }
        for name in [
            "memory.low",
            "memory.min",
            "memory.peak",
            "cpu.weight",
            "cgroup.max.depth",
            "cgroup.max.descendants",
            "pids.current",
            "cgroup.procs",
        ] {
            assert!(!is_limit_file(name), "{name}");
        }
    }

    #[test]
    fn only_values_other_than_max_limit() {
        assert_eq!(limiting_value("memory.max", "max\n"), None);
        assert_eq!(limiting_value("pids.max", "100\n"), Some("100".into()));
        assert_eq!(limiting_value("cpu.max", "max 100000\n"), None);
        assert_eq!(
            limiting_value("cpu.max", "50000 100000\n"),
            Some("50000 100000".into())
        );
        assert_eq!(limiting_value("io.max", ""), None);
        assert_eq!(
            limiting_value("io.max", "8:0 rbps=max wbps=max riops=max wiops=max\n"),
            None
        );
        assert!(limiting_value("io.max", "8:0 rbps=max wbps=1000 riops=max wiops=max\n").is_some());
        assert_eq!(limiting_value("misc.max", "sev max\nsev_es max\n"), None);
        assert!(limiting_value("misc.max", "sev 2\n").is_some());
        assert_eq!(limiting_value("hugetlb.2MB.max", "0\n"), Some("0".into()));
    }

    #[test]
    fn cgroups_above_the_target_are_shared() {
        assert_eq!(
            ancestors("/user.slice/user-1000.slice/session-3.scope"),
            vec![
                "/user.slice/user-1000.slice/session-3.scope",
                "/user.slice/user-1000.slice",
                "/user.slice"
            ]
        );
        assert!(ancestors("/").is_empty());
        assert!(is_ancestor_or_self("/site", "/site/monitor.slice"));
        assert!(is_ancestor_or_self("/site", "/site"));
        assert!(!is_ancestor_or_self("/sit", "/site/monitor.slice"));
    }

    #[test]
    fn a_limit_above_the_process_is_found_and_a_shared_one_is_not() {
        let mount = std::env::temp_dir().join(format!("monitor-limits-{}", std::process::id()));
        let session = mount.join("site/user.slice/session.scope");
        fs::create_dir_all(&session).unwrap();
        fs::create_dir_all(mount.join("site/monitor.slice")).unwrap();
        fs::write(mount.join("site/user.slice/pids.max"), "100\n").unwrap();
        fs::write(session.join("pids.max"), "max\n").unwrap();
        fs::write(mount.join("site/memory.max"), "1000000\n").unwrap();
        let found = left_by_move(
            &mount,
            "/site/user.slice/session.scope",
            "/site/monitor.slice",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (
                found.cgroup.as_str(),
                found.file.as_str(),
                found.value.as_str()
            ),
            ("/site/user.slice", "pids.max", "100")
        );
        fs::write(mount.join("site/user.slice/pids.max"), "max\n").unwrap();
        assert_eq!(
            left_by_move(
                &mount,
                "/site/user.slice/session.scope",
                "/site/monitor.slice"
            )
            .unwrap(),
            None,
            "/site's memory.max binds the task cgroup as well"
        );
        fs::remove_dir_all(&mount).unwrap();
    }
}
