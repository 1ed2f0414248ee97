//! The cgroup v2 hierarchy's mount options (`favordynmods` and the like),
//! read from mountinfo and set by a remount: for the test of
//! `--cgroup.favordynmods` and for the benchmark that runs without the
//! daemon's options. They are the whole machine's: whoever changes them
//! puts them back.
use std::{fs, path::PathBuf};

use anyhow::{Context as _, anyhow};
use nix::mount::{MsFlags, mount};

/// The option the daemon adds (see `monitor::system::favordynmods`).
pub const FAVORDYNMODS: &str = "favordynmods";

/// The cgroup v2 mount as mountinfo shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct V2Options {
    pub mount_point: PathBuf,
    /// The mount's own flags (mountinfo's sixth field): a remount sets
    /// them too, so [`V2Options::remount`] gives them again.
    pub flags: MsFlags,
    /// The hierarchy's options (the super options; `rw` and `ro` left out:
    /// they are the mount's).
    pub options: Vec<String>,
}

impl V2Options {
    pub fn read() -> anyhow::Result<Self> {
        let text = fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?;
        let mount_point = crate::cgroup::v2_mount_in(&text).context("no cgroup v2 mount")?;
        let (before, after) = text
            .lines()
            .filter_map(|line| line.split_once(" - "))
            .find(|(_, after)| after.split_whitespace().next() == Some("cgroup2"))
            .context("no cgroup v2 mount")?;
        let flags = before
            .split_whitespace()
            .nth(5)
            .unwrap_or_default()
            .split(',')
            .filter_map(mount_flag)
            .fold(MsFlags::empty(), |all, flag| all | flag);
        let options = after
            .split_whitespace()
            .nth(2)
            .unwrap_or_default()
            .split(',')
            .filter(|o| !o.is_empty() && !matches!(*o, "rw" | "ro"))
            .map(str::to_string)
            .collect();
        Ok(Self {
            mount_point,
            flags,
            options,
        })
    }

    pub fn has(&self, option: &str) -> bool {
        self.options.iter().any(|o| o == option)
    }

    /// The hierarchy's options but `option`.
    pub fn without(&self, option: &str) -> Vec<String> {
        self.options
            .iter()
            .filter(|o| *o != option)
            .cloned()
            .collect()
    }

    /// Sets the hierarchy's options to exactly `options`, the mount's flags
    /// staying `self.flags`.
    pub fn remount(&self, options: &[String]) -> anyhow::Result<()> {
        let data = options.join(",");
        mount(
            None::<&str>,
            &self.mount_point,
            None::<&str>,
            MsFlags::MS_REMOUNT | self.flags,
            Some(data.as_str()),
        )
        .map_err(|e| {
            anyhow!(
                "remounting {} with {data:?}: {e}",
                self.mount_point.display()
            )
        })
    }

    /// Puts these flags and options back (what [`V2Options::read`] found).
    pub fn restore(&self) -> anyhow::Result<()> {
        self.remount(&self.options)
    }
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
