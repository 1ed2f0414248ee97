//! The cgroup v2 hierarchy: where it is mounted, and walking a subtree.
//!
//! A cgroup's v2 id (what `bpf_get_current_cgroup_id` returns) is the inode
//! number of its directory.
use std::{
    fs, io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::SystemTime,
};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CgroupError {
    #[error("reading /proc/self/mountinfo: {0}")]
    MountInfo(#[source] io::Error),
    #[error(
        "no cgroup v2 hierarchy is mounted (looked for a cgroup2 entry in /proc/self/mountinfo); \
         mount one with `mount -t cgroup2 none /sys/fs/cgroup/unified`"
    )]
    NoV2Mount,
    #[error("{path} is not inside the cgroup v2 mount {mount}")]
    OutsideMount { path: PathBuf, mount: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The mount point of the cgroup v2 hierarchy (pure v2: /sys/fs/cgroup;
/// hybrid: usually /sys/fs/cgroup/unified).
pub fn find_v2_mount() -> Result<PathBuf, CgroupError> {
    let text = fs::read_to_string("/proc/self/mountinfo").map_err(CgroupError::MountInfo)?;
    v2_mount_from_mountinfo(&text).ok_or(CgroupError::NoV2Mount)
}

/// Finds the first `cgroup2` mount in mountinfo text.
pub fn v2_mount_from_mountinfo(text: &str) -> Option<PathBuf> {
    v2_mount_entry(text).map(|(mount_point, _)| mount_point)
}

/// The first `cgroup2` mount in mountinfo text: its mount point and its
/// super options (the hierarchy's, e.g. `rw,nsdelegate`). Each line is
/// `id parent major:minor root mount-point options [optional...] - fstype source super-options`.
pub fn v2_mount_entry(text: &str) -> Option<(PathBuf, &str)> {
    text.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        let mut after = after.split_whitespace();
        if after.next()? != "cgroup2" {
            return None;
        }
        let mount_point = before.split_whitespace().nth(4)?;
        let super_options = after.nth(1).unwrap_or_default();
        Some((
            PathBuf::from(unescape_mountinfo(mount_point)),
            super_options,
        ))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value =
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The path of `dir` as the kernel names cgroups: relative to the v2 mount,
/// starting with `/` (the mount itself is `/`).
pub fn path_in_hierarchy(mount: &Path, dir: &Path) -> Result<String, CgroupError> {
    let relative = dir
        .strip_prefix(mount)
        .map_err(|_| CgroupError::OutsideMount {
            path: dir.to_path_buf(),
            mount: mount.to_path_buf(),
        })?;
    let relative = relative.to_string_lossy();
    let trimmed = relative.trim_end_matches('/');
    Ok(format!("/{trimmed}"))
}

/// The job a cgroup belongs to: the first path component below `root`
/// (both in hierarchy form, e.g. root `/monitor.slice`, cgroup
/// `/monitor.slice/job42/step0` -> `job42`). None for the root itself and
/// for anything outside it.
pub fn job_of<'a>(root: &str, cgroup: &'a str) -> Option<&'a str> {
    let rest = if root == "/" {
        cgroup.strip_prefix('/')?
    } else {
        cgroup.strip_prefix(root)?.strip_prefix('/')?
    };
    let job = rest.split('/').next()?;
    (!job.is_empty()).then_some(job)
}

/// One cgroup found by [`walk`].
#[derive(Debug, Clone)]
pub struct CgroupDir {
    pub id: u64,
    pub path: PathBuf,
    pub uid: u32,
    pub created: SystemTime,
}

/// Every cgroup strictly below `root`, parents before children.
pub fn walk(root: &Path) -> Result<Vec<CgroupDir>, CgroupError> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            // Removed while we walked: nothing below it to find.
            Err(e) if e.kind() == io::ErrorKind::NotFound && dir != root => continue,
            Err(e) => return Err(io_error(&dir)(e)),
        };
        for entry in entries.flatten() {
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            if !file_type.is_dir() {
                continue;
            }
            let Ok(metadata) = entry.metadata() else {
                continue;
            };
            let path = entry.path();
            found.push(CgroupDir {
                id: metadata.ino(),
                uid: metadata.uid(),
                created: metadata.modified().unwrap_or_else(|_| SystemTime::now()),
                path: path.clone(),
            });
            pending.push(path);
        }
    }
    Ok(found)
}

/// Creates the monitored root if needed.
pub fn ensure_dir(path: &Path) -> Result<(), CgroupError> {
    fs::create_dir_all(path).map_err(io_error(path))
}

/// A file holding one number (memory.current, memory.peak); None if absent
/// (the controller is not enabled for this cgroup) or unreadable.
pub fn read_number(cgroup: &Path, file: &str) -> Option<u64> {
    fs::read_to_string(cgroup.join(file))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Read and written bytes summed over devices from io.stat; None if absent.
pub fn read_io_stat(cgroup: &Path) -> Option<(u64, u64)> {
    fs::read_to_string(cgroup.join("io.stat"))
        .ok()
        .map(|text| parse_io_stat(&text))
}

/// `8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0`, a line per device.
pub fn parse_io_stat(text: &str) -> (u64, u64) {
    let mut read = 0;
    let mut written = 0;
    for field in text.split_whitespace() {
        if let Some(v) = field.strip_prefix("rbytes=") {
            read += v.parse::<u64>().unwrap_or(0);
        } else if let Some(v) = field.strip_prefix("wbytes=") {
            written += v.parse::<u64>().unwrap_or(0);
        }
    }
    (read, written)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:25 / /sys/fs/cgroup/memory rw,nosuid shared:11 - cgroup cgroup rw,memory
";
    const PURE_V2: &str = "\
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn finds_hybrid_and_pure_v2_mounts() {
        assert_eq!(
            v2_mount_from_mountinfo(HYBRID),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            v2_mount_from_mountinfo(PURE_V2),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(
            v2_mount_from_mountinfo("27 25 0:25 / /x rw - cgroup cgroup rw,memory\n"),
            None
        );
    }

    #[test]
    fn unescapes_octal_in_mount_points() {
        let line = "40 24 0:30 / /mnt/my\\040cgroups rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            v2_mount_from_mountinfo(line),
            Some(PathBuf::from("/mnt/my cgroups"))
        );
    }

    #[test]
    fn hierarchy_paths_are_relative_to_the_mount() {
        let mount = Path::new("/sys/fs/cgroup/unified");
        assert_eq!(
            path_in_hierarchy(mount, Path::new("/sys/fs/cgroup/unified/monitor.slice")).unwrap(),
            "/monitor.slice"
        );
        assert_eq!(path_in_hierarchy(mount, mount).unwrap(), "/");
        assert!(path_in_hierarchy(mount, Path::new("/tmp/x")).is_err());
    }

    #[test]
    fn io_stat_sums_devices() {
        let text = "8:0 rbytes=100 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n259:0 rbytes=5 wbytes=7 rios=1 wios=1 dbytes=0 dios=0\n";
        assert_eq!(parse_io_stat(text), (105, 27));
        assert_eq!(parse_io_stat(""), (0, 0));
    }

    #[test]
    fn job_is_the_first_component_below_the_root() {
        assert_eq!(
            job_of("/monitor.slice", "/monitor.slice/job42"),
            Some("job42")
        );
        assert_eq!(
            job_of("/monitor.slice", "/monitor.slice/job42/step0/task1"),
            Some("job42")
        );
        assert_eq!(job_of("/monitor.slice", "/monitor.slice"), None);
        assert_eq!(job_of("/monitor.slice", "/monitor.slicex/job"), None);
        assert_eq!(job_of("/monitor.slice", "/system.slice/sshd.service"), None);
        assert_eq!(job_of("/", "/a/b"), Some("a"));
    }
}

/// The controllers the v2 hierarchy's root hands down (its
/// `cgroup.subtree_control`): a cgroup below it can have a controller's
/// files only then. On hybrid hosts there are none, and a job's memory, io
/// or cpuset file opened anyway only fails.
#[derive(Debug, Clone, Default)]
pub struct RootControllers(Vec<String>);

impl RootControllers {
    pub fn read(mount: &Path) -> Self {
        let enabled = fs::read_to_string(mount.join("cgroup.subtree_control")).unwrap_or_default();
        Self(enabled.split_whitespace().map(str::to_string).collect())
    }

    pub fn has(&self, controller: &str) -> bool {
        self.0.iter().any(|c| c == controller)
    }
}
