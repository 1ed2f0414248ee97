//! `--cgroup.favordynmods`: the daemon remounts the cgroup v2 hierarchy
//! with `favordynmods` (so a registration's move never waits for an RCU
//! grace period under the kernel's cgroup mutex), keeping every option the
//! hierarchy had; `false` leaves the mount alone. The option is the whole
//! machine's, so this is the only test that takes it away, and it puts the
//! hierarchy's options back as it found them.
use std::{fs, path::PathBuf};

use anyhow::{Context as _, anyhow};
use monitor_tests::{cpu_shared, daemon::Daemon, require_root_or_skip, skip_or_fail};
use nix::mount::{MsFlags, mount};

const OPTION: &str = "favordynmods";

/// The cgroup v2 mount's own flags (mountinfo's sixth field).
fn mount_flags() -> anyhow::Result<String> {
    let text = fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?;
    text.lines()
        .filter_map(|line| line.split_once(" - "))
        .find(|(_, after)| after.split_whitespace().next() == Some("cgroup2"))
        .and_then(|(before, _)| before.split_whitespace().nth(5))
        .map(str::to_string)
        .context("no cgroup v2 mount")
}

/// The cgroup v2 mount point and the hierarchy's options (mountinfo's
/// super options, `rw` and `ro` left out: they are the mount's).
fn hierarchy_options() -> anyhow::Result<(PathBuf, Vec<String>)> {
    let text = fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?;
    let mount_point = monitor_tests::cgroup::v2_mount_in(&text).context("no cgroup v2 mount")?;
    let options = text
        .lines()
        .filter_map(|line| line.split_once(" - "))
        .find(|(_, after)| after.split_whitespace().next() == Some("cgroup2"))
        .and_then(|(_, after)| after.split_whitespace().nth(2))
        .unwrap_or_default()
        .split(',')
        .filter(|o| !o.is_empty() && !matches!(*o, "rw" | "ro"))
        .map(str::to_string)
        .collect();
    Ok((mount_point, options))
}

/// Sets the hierarchy's options to exactly `options`, and the mount's
/// flags to `flags` (a remount sets both).
fn remount(mount_point: &PathBuf, flags: MsFlags, options: &[String]) -> anyhow::Result<()> {
    let data = options.join(",");
    mount(
        None::<&str>,
        mount_point,
        None::<&str>,
        MsFlags::MS_REMOUNT | flags,
        Some(data.as_str()),
    )
    .map_err(|e| anyhow!("remounting {} with {data:?}: {e}", mount_point.display()))
}

/// The flags a systemd host mounts cgroup v2 with, set for the test.
const TEST_FLAGS: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC)
    .union(MsFlags::MS_RELATIME);

fn remount_with(mount_point: &PathBuf, options: &[String]) -> anyhow::Result<()> {
    remount(mount_point, TEST_FLAGS, options)
}

/// Puts the mount's flags and the hierarchy's options back when dropped,
/// whatever the test did.
struct Restore {
    mount_point: PathBuf,
    flags: MsFlags,
    options: Vec<String>,
}

impl Drop for Restore {
    fn drop(&mut self) {
        if let Err(e) = remount(&self.mount_point, self.flags, &self.options) {
            eprintln!("could not put the cgroup v2 options back: {e:#}");
        }
    }
}

#[test]
fn the_daemon_adds_favordynmods_and_keeps_the_hierarchys_other_options() -> anyhow::Result<()> {
    if !require_root_or_skip() {
        return Ok(());
    }
    let _machine = cpu_shared();
    let (mount_point, found) = hierarchy_options()?;
    let flags = mount_flags()?
        .split(',')
        .filter_map(|flag| match flag {
            "nosuid" => Some(MsFlags::MS_NOSUID),
            "nodev" => Some(MsFlags::MS_NODEV),
            "noexec" => Some(MsFlags::MS_NOEXEC),
            "noatime" => Some(MsFlags::MS_NOATIME),
            "relatime" => Some(MsFlags::MS_RELATIME),
            _ => None,
        })
        .fold(MsFlags::empty(), |all, flag| all | flag);
    let _restore = Restore {
        mount_point: mount_point.clone(),
        flags,
        options: found.clone(),
    };
    let mut others: Vec<String> = found.iter().filter(|o| *o != OPTION).cloned().collect();
    // One more option than the machine has, if it has none of these, so
    // that keeping the others is tested on every machine: both only
    // change what pids.events and memory protection say, for this test.
    for extra in ["pids_localevents", "memory_recursiveprot"] {
        if others.iter().any(|o| o == extra) {
            break;
        }
        let more = [others.clone(), vec![extra.to_string()]].concat();
        if remount_with(&mount_point, &more).is_ok() {
            others = hierarchy_options()?.1;
            break;
        }
    }
    remount_with(&mount_point, &others)?;
    let (_, without) = hierarchy_options()?;
    assert!(
        !without.iter().any(|o| o == OPTION),
        "{OPTION} could not be taken away for the test: {without:?}"
    );
    // The kernel has it since 6.0; an older one refuses the remount.
    if remount_with(
        &mount_point,
        &[others.clone(), vec![OPTION.into()]].concat(),
    )
    .is_err()
    {
        skip_or_fail("this kernel has no favordynmods cgroup v2 mount option (added in 6.0)");
        return Ok(());
    }
    remount_with(&mount_point, &others)?;
    let test_flags = mount_flags()?;

    // Told to leave the mount alone, it does.
    let daemon = Daemon::start_with(&["--cgroup.favordynmods=false"])?;
    let (_, options) = hierarchy_options()?;
    drop(daemon);
    assert_eq!(
        options, others,
        "--cgroup.favordynmods=false changed the hierarchy's options"
    );

    // By default it adds the option and keeps every other one.
    let daemon = Daemon::start()?;
    let (_, options) = hierarchy_options()?;
    println!("before: {others:?}; with the daemon: {options:?}");
    assert_eq!(
        mount_flags()?,
        test_flags,
        "the remount changed the mount's own flags"
    );
    assert!(
        options.iter().any(|o| o == OPTION),
        "the daemon did not remount with {OPTION}: {options:?}; stderr:\n{}",
        daemon.stderr()
    );
    for option in &others {
        assert!(
            options.contains(option),
            "the remount lost {option}: {options:?}"
        );
    }
    assert!(
        daemon.stderr().contains("with favordynmods"),
        "the remount was not logged; stderr:\n{}",
        daemon.stderr()
    );

    // Set already: a restart says nothing and changes nothing.
    drop(daemon);
    let daemon = Daemon::start()?;
    let (_, again) = hierarchy_options()?;
    assert_eq!(again, options, "a second start changed the options");
    assert!(
        !daemon.stderr().contains("remounted"),
        "the option was set already, yet the daemon remounted; stderr:\n{}",
        daemon.stderr()
    );
    Ok(())
}
