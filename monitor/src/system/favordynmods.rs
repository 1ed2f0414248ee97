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
    #[error("remounting {mount} changed its mount flags from {before:?} to {after:?}")]
    MountFlags {
        mount: PathBuf,
        before: MsFlags,
        after: MsFlags,
    },
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
    let V2Mount {
        mount_point,
        mount_flags,
        options,
    } = current()?;
    if options.iter().any(|o| o == OPTION) {
        return Ok(Outcome::AlreadySet);
    }
    let data = remount_data(&options);
    // A remount sets the mount's own flags too: the ones it has are given
    // again (nosuid, nodev, noexec as systemd mounts it).
    mount(
        None::<&str>,
        &mount_point,
        None::<&str>,
        MsFlags::MS_REMOUNT | mount_flags,
        Some(data.as_str()),
    )
    .map_err(|source| DynmodsError::Remount {
        mount: mount_point.clone(),
        data: data.clone(),
        source,
    })?;
    let after = current()?;
    if after.mount_flags != mount_flags {
        return Err(DynmodsError::MountFlags {
            mount: mount_point,
            before: mount_flags,
            after: after.mount_flags,
        });
    }
    let after = after.options;
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

/// The cgroup v2 mount as mountinfo shows it.
#[derive(Debug, PartialEq)]
pub struct V2Mount {
    pub mount_point: PathBuf,
    /// The mount's own flags (mountinfo's sixth field).
    pub mount_flags: MsFlags,
    /// The hierarchy's options (the super options, the last field, e.g.
    /// `rw,nsdelegate,memory_recursiveprot`).
    pub options: Vec<String>,
}

fn current() -> Result<V2Mount, DynmodsError> {
    let text = fs::read_to_string("/proc/self/mountinfo").map_err(DynmodsError::MountInfo)?;
    v2_mount(&text).ok_or(DynmodsError::NoV2Mount)
}

/// The first `cgroup2` mount of mountinfo `text`.
pub fn v2_mount(text: &str) -> Option<V2Mount> {
    let mount_point = cgroupfs::v2_mount_from_mountinfo(text)?;
    let (before, after) = text.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        (after.split_whitespace().next() == Some("cgroup2")).then_some((before, after))
    })?;
    let mount_flags = before
        .split_whitespace()
        .nth(5)
        .unwrap_or_default()
        .split(',')
        .filter_map(mount_flag)
        .fold(MsFlags::empty(), |flags, flag| flags | flag);
    let options = after.split_whitespace().nth(2).unwrap_or_default();
    Some(V2Mount {
        mount_point,
        mount_flags,
        options: options
            .split(',')
            .filter(|o| !o.is_empty())
            .map(str::to_string)
            .collect(),
    })
}

/// The mount(2) flag of a per-mount option mountinfo shows.
fn mount_flag(option: &str) -> Option<MsFlags> {
    Some(match option {
        "ro" => MsFlags::MS_RDONLY,
        "nosuid" => MsFlags::MS_NOSUID,
        "nodev" => MsFlags::MS_NODEV,
        "noexec" => MsFlags::MS_NOEXEC,
        "noatime" => MsFlags::MS_NOATIME,
        "nodiratime" => MsFlags::MS_NODIRATIME,
        "relatime" => MsFlags::MS_RELATIME,
        "strictatime" => MsFlags::MS_STRICTATIME,
        _ => return None,
    })
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
    fn reads_the_mounts_flags_and_the_hierarchys_options() {
        let systemd = v2_mount(SYSTEMD).unwrap();
        assert_eq!(systemd.mount_point, PathBuf::from("/sys/fs/cgroup"));
        assert_eq!(
            systemd.mount_flags,
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RELATIME
        );
        assert_eq!(
            systemd.options,
            strings(&["rw", "nsdelegate", "memory_recursiveprot"])
        );
        let hybrid = v2_mount(HYBRID_WITH_OPTION).unwrap();
        assert_eq!(hybrid.mount_point, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(hybrid.options, strings(&["rw", "favordynmods"]));
        assert!(v2_mount("27 25 0:25 / /sys/fs/bpf rw - bpf bpf rw\n").is_none());
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
