//! Where discovered jobs are on disk: table paths (`/x/y` in v2,
//! `controller:/x/y` in v1), the watched v1 hierarchy, and the directories
//! to walk for jobs already there.
use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
};

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

/// Where v1 table paths (`freezer:/slurm/...`) live on disk: set once at
/// start when a v1 hierarchy is watched.
pub(super) static V1_MOUNT: OnceLock<(String, PathBuf)> = OnceLock::new();

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

/// `controller`'s own v1 hierarchy: its id and subsys index from
/// /proc/cgroups (listed in subsys order), its mount from mountinfo.
pub(super) fn v1_hierarchy(
    controller: &str,
    cgroups: &str,
    mountinfo: &str,
) -> Option<V1Hierarchy> {
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
    let mount = crate::jobs::allocation::v1_mount(controller, mountinfo)?;
    Some(V1Hierarchy {
        controller: controller.to_string(),
        hierarchy,
        subsys,
        mount,
    })
}
