//! The cgroup v2 mount option `favordynmods`, which a registration's move
//! of a process between cgroups needs to be quick.
//!
//! Moving a process (a write to `cgroup.procs`) takes the kernel's cgroup
//! mutex and then write-locks the threadgroup semaphore that fork, exit and
//! exec read-lock. Without `favordynmods` that write lock first waits for
//! an RCU grace period whenever no move happened in the last one: 4-16 ms
//! traced here, with the cgroup mutex held, so every other registration
//! (and every mkdir and rmdir of a cgroup) waits behind it. At 1,000
//! registrations a second those waits were the whole tail of the
//! registration latency. With the option the semaphore stays in its
//! writer-friendly mode: a move never waits for a grace period, and fork,
//! exit and exec pay a memory barrier instead of a per-CPU increment
//! (tens of nanoseconds against their 30-120 µs; see the README's
//! benchmarks).
//!
//! The option belongs to the hierarchy, not to one mount, and a remount
//! sets the hierarchy's options to exactly those given: so the remount
//! passes every option the hierarchy has, plus this one, and checks that
//! they are all still there afterwards.
use std::{fs, io, path::PathBuf};

use nix::mount::{MsFlags, mount};
use thiserror::Error;

use super::cgroupfs;

/// The option's name, as mount(2) takes it and mountinfo shows it.
pub const OPTION: &str = "favordynmods";

#[derive(Debug, Error)]
pub enum DynmodsError {
    #[error("reading /proc/self/mountinfo: {0}")]
    MountInfo(#[source] io::Error),
    #[error("no cgroup v2 hierarchy in /proc/self/mountinfo")]
    NoV2Mount,
    #[error("remounting {mount} with {data:?}: {source}")]
    Remount {
        mount: PathBuf,
        data: String,
        #[source]
        source: nix::Error,
    },
    #[error(
        "{mount} was remounted with {OPTION} but mountinfo does not show it (the daemon may be \
         in a cgroup namespace of its own, where the hierarchy's options cannot be changed)"
    )]
    NotApplied { mount: PathBuf },
    #[error("remounting {mount} lost its options {lost:?}: remount it with them")]
    Lost { mount: PathBuf, lost: Vec<String> },
}

/// What [`ensure`] found or did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The hierarchy had the option already (by the site's mount, or an
    /// earlier run of the daemon).
    AlreadySet,
    /// The daemon remounted the hierarchy with it.
    Set { mount: PathBuf },
}

/// Makes sure the cgroup v2 hierarchy has `favordynmods`, remounting it
/// with its own options plus this one if not.
pub fn ensure() -> Result<Outcome, DynmodsError> {
    let (mount_point, options) = current()?;
    if options.iter().any(|o| o == OPTION) {
        return Ok(Outcome::AlreadySet);
    }
    let data = remount_data(&options);
    mount(
        None::<&str>,
        &mount_point,
        None::<&str>,
        MsFlags::MS_REMOUNT,
        Some(data.as_str()),
    )
    .map_err(|source| DynmodsError::Remount {
        mount: mount_point.clone(),
        data: data.clone(),
        source,
    })?;
    let (_, after) = current()?;
    if !after.iter().any(|o| o == OPTION) {
        return Err(DynmodsError::NotApplied { mount: mount_point });
    }
    let lost = lost_options(&options, &after);
    if !lost.is_empty() {
        return Err(DynmodsError::Lost {
            mount: mount_point,
            lost,
        });
    }
    Ok(Outcome::Set { mount: mount_point })
}

/// The cgroup v2 mount point and the hierarchy's options, as mountinfo
/// shows them now.
fn current() -> Result<(PathBuf, Vec<String>), DynmodsError> {
    let text = fs::read_to_string("/proc/self/mountinfo").map_err(DynmodsError::MountInfo)?;
    v2_super_options(&text).ok_or(DynmodsError::NoV2Mount)
}

/// The first `cgroup2` mount of mountinfo `text` and its super options
/// (the last field, e.g. `rw,nsdelegate,memory_recursiveprot`).
pub fn v2_super_options(text: &str) -> Option<(PathBuf, Vec<String>)> {
    let mount_point = cgroupfs::v2_mount_from_mountinfo(text)?;
    let line = text.lines().find(|line| {
        line.split_once(" - ")
            .is_some_and(|(_, after)| after.split_whitespace().next() == Some("cgroup2"))
    })?;
    let (_, after) = line.split_once(" - ")?;
    let options = after.split_whitespace().nth(2).unwrap_or_default();
    Some((
        mount_point,
        options
            .split(',')
            .filter(|o| !o.is_empty())
            .map(str::to_string)
            .collect(),
    ))
}

/// The data of the remount: the hierarchy's options (`rw` and `ro` are the
/// mount's, not the hierarchy's: MS_REMOUNT without MS_RDONLY keeps it
/// writable) and `favordynmods`.
pub fn remount_data(options: &[String]) -> String {
    options
        .iter()
        .map(String::as_str)
        .filter(|o| !matches!(*o, "rw" | "ro") && *o != OPTION)
        .chain([OPTION])
        .collect::<Vec<_>>()
        .join(",")
}

/// The options of `before` that `after` lacks.
fn lost_options(before: &[String], after: &[String]) -> Vec<String> {
    before
        .iter()
        .filter(|o| !after.contains(o))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYSTEMD: &str = "\
25 30 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
27 25 0:25 / /sys/fs/bpf rw,nosuid shared:11 - bpf bpf rw,mode=700
";

    const HYBRID_WITH_OPTION: &str = "\
25 30 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,favordynmods
";

    fn strings(options: &[&str]) -> Vec<String> {
        options.iter().map(|o| o.to_string()).collect()
    }

    #[test]
    fn reads_the_hierarchys_options_not_the_mounts() {
        let (mount, options) = v2_super_options(SYSTEMD).unwrap();
        assert_eq!(mount, PathBuf::from("/sys/fs/cgroup"));
        assert_eq!(
            options,
            strings(&["rw", "nsdelegate", "memory_recursiveprot"])
        );
        let (mount, options) = v2_super_options(HYBRID_WITH_OPTION).unwrap();
        assert_eq!(mount, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(options, strings(&["rw", "favordynmods"]));
        assert!(v2_super_options("27 25 0:25 / /sys/fs/bpf rw - bpf bpf rw\n").is_none());
    }

    #[test]
    fn the_remount_keeps_every_option_the_hierarchy_has() {
        let options = strings(&["rw", "nsdelegate", "memory_recursiveprot"]);
        assert_eq!(
            remount_data(&options),
            "nsdelegate,memory_recursiveprot,favordynmods"
        );
        assert_eq!(remount_data(&strings(&["rw"])), "favordynmods");
        assert_eq!(remount_data(&strings(&["rw", OPTION])), "favordynmods");
    }

    #[test]
    fn an_option_missing_after_the_remount_is_named() {
        let before = strings(&["rw", "nsdelegate"]);
        let after = strings(&["rw", "favordynmods"]);
        assert_eq!(lost_options(&before, &after), strings(&["nsdelegate"]));
        assert!(lost_options(&before, &strings(&["rw", "nsdelegate", OPTION])).is_empty());
    }
}
