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
//! The option belongs to the hierarchy, not to one mount, and changing it
//! sets the hierarchy's options to exactly those given: so the daemon
//! passes every option the hierarchy has, plus this one, and checks that
//! they are all still there afterwards. It reconfigures the hierarchy
//! alone (fspick and fsconfig), not the way `mount -o remount` does, which
//! would set the mount's own flags (nosuid, nodev, noexec) too.
use std::{
    ffi::CString,
    fs, io,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Path, PathBuf},
    ptr,
};

use thiserror::Error;

use super::cgroupfs;

/// The option's name, as the kernel takes it and mountinfo shows it.
pub const OPTION: &str = "favordynmods";

// <linux/mount.h>
const FSPICK_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_CMD_RECONFIGURE: libc::c_uint = 7;

#[derive(Debug, Error)]
pub enum DynmodsError {
    #[error("reading /proc/self/mountinfo: {0}")]
    MountInfo(#[source] io::Error),
    #[error("no cgroup v2 hierarchy in /proc/self/mountinfo")]
    NoV2Mount,
    #[error("reconfiguring the cgroup v2 hierarchy at {mount} with {options}: {source}")]
    Reconfigure {
        mount: PathBuf,
        options: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "{mount} was reconfigured with {OPTION} but mountinfo does not show it (the daemon may \
         be in a cgroup namespace of its own, where the hierarchy's options cannot be changed)"
    )]
    NotApplied { mount: PathBuf },
    #[error("reconfiguring {mount} lost its options {lost:?}: remount it with them")]
    Lost { mount: PathBuf, lost: Vec<String> },
}

/// What [`ensure`] found or did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The hierarchy had the option already (by the site's mount, or an
    /// earlier run of the daemon).
    AlreadySet,
    /// The daemon reconfigured the hierarchy with it.
    Set { mount: PathBuf },
}

/// Makes sure the cgroup v2 hierarchy has `favordynmods`, reconfiguring it
/// with its own options plus this one if not.
pub fn ensure() -> Result<Outcome, DynmodsError> {
    let (mount_point, options) = current()?;
    if options.iter().any(|o| o == OPTION) {
        return Ok(Outcome::AlreadySet);
    }
    let wanted = with_option(&options);
    reconfigure(&mount_point, &wanted).map_err(|source| DynmodsError::Reconfigure {
        mount: mount_point.clone(),
        options: wanted.join(","),
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
    let (mount_point, options) = cgroupfs::v2_mount_entry(text)?;
    Some((
        mount_point,
        options
            .split(',')
            .filter(|o| !o.is_empty())
            .map(str::to_string)
            .collect(),
    ))
}

/// The hierarchy's options (`rw` and `ro` are the superblock's, not the
/// hierarchy's: a reconfiguration leaves them) and `favordynmods`.
pub fn with_option(options: &[String]) -> Vec<String> {
    options
        .iter()
        .filter(|o| !matches!(o.as_str(), "rw" | "ro" | OPTION))
        .cloned()
        .chain([OPTION.to_string()])
        .collect()
}

/// The options of `before` that `after` lacks.
fn lost_options(before: &[String], after: &[String]) -> Vec<String> {
    before
        .iter()
        .filter(|o| !after.contains(o))
        .cloned()
        .collect()
}

/// Sets the options of the filesystem mounted at `mount_point` to exactly
/// `options` (flags without values), leaving the mount's own flags alone.
fn reconfigure(mount_point: &Path, options: &[String]) -> io::Result<()> {
    let path = CString::new(mount_point.as_os_str().as_bytes())?;
    // SAFETY: fspick with a NUL-terminated path; a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_fspick,
            libc::AT_FDCWD,
            path.as_ptr(),
            FSPICK_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let raw = libc::c_int::try_from(fd).map_err(io::Error::other)?;
    // SAFETY: the descriptor fspick just returned, owned here alone.
    let context = unsafe { OwnedFd::from_raw_fd(raw) };
    for option in options {
        let key = CString::new(option.as_str())?;
        fsconfig(&context, FSCONFIG_SET_FLAG, Some(&key))?;
    }
    fsconfig(&context, FSCONFIG_CMD_RECONFIGURE, None)
}

fn fsconfig(context: &OwnedFd, command: libc::c_uint, key: Option<&CString>) -> io::Result<()> {
    let key = key.map_or(ptr::null(), |k| k.as_ptr());
    // SAFETY: a filesystem context descriptor, a NUL-terminated key or
    // null, no value.
    let done = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            context.as_raw_fd(),
            command,
            key,
            ptr::null::<libc::c_void>(),
            0,
        )
    };
    if done < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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
    fn the_hierarchy_keeps_every_option_it_has() {
        let options = strings(&["rw", "nsdelegate", "memory_recursiveprot"]);
        assert_eq!(
            with_option(&options),
            strings(&["nsdelegate", "memory_recursiveprot", "favordynmods"])
        );
        assert_eq!(with_option(&strings(&["rw"])), strings(&["favordynmods"]));
        assert_eq!(
            with_option(&strings(&["rw", OPTION])),
            strings(&["favordynmods"])
        );
    }

    #[test]
    fn an_option_missing_after_the_change_is_named() {
        let before = strings(&["rw", "nsdelegate"]);
        let after = strings(&["rw", "favordynmods"]);
        assert_eq!(lost_options(&before, &after), strings(&["nsdelegate"]));
        assert!(lost_options(&before, &strings(&["rw", "nsdelegate", OPTION])).is_empty());
    }
}
