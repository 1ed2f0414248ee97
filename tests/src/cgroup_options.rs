//! The cgroup v2 hierarchy's options (`favordynmods` and the like), read
//! from mountinfo and set by a remount: for the test of
//! `--cgroup.favordynmods` and for the benchmark that runs without the
//! daemon's option. They are the whole machine's: whoever changes them
//! puts them back.
use std::{fs, path::PathBuf, process::Command};

use anyhow::{Context as _, anyhow, bail};
use nix::mount::{MsFlags, mount};

/// The option the daemon adds.
pub const FAVORDYNMODS: &str = "favordynmods";

/// The cgroup v2 mount as mountinfo shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct V2Options {
    pub mount_point: PathBuf,
    /// The mount's own flags, as mountinfo's sixth field writes them
    /// (`rw,nosuid,nodev,noexec,relatime`).
    pub mount_flags: String,
    /// The hierarchy's options (the super options; `rw` and `ro` left out:
    /// they are the superblock's).
    pub options: Vec<String>,
}

impl V2Options {
    pub fn read() -> anyhow::Result<Self> {
        let text = fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?;
        let (mount_point, mount_flags, options) =
            crate::cgroup::v2_mount_fields(&text).context("no cgroup v2 mount")?;
        Ok(Self {
            mount_point,
            mount_flags: mount_flags.to_string(),
            options: options
                .split(',')
                .filter(|o| !o.is_empty() && !matches!(*o, "rw" | "ro"))
                .map(str::to_string)
                .collect(),
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

    /// Sets the hierarchy's options to exactly `options`, the mount's own
    /// flags staying `self.mount_flags`. (A classic remount sets both; the
    /// flags are given back by a bind remount, as mount(8) writes them.)
    pub fn set_options(&self, options: &[String]) -> anyhow::Result<()> {
        let data = options.join(",");
        mount(
            None::<&str>,
            &self.mount_point,
            None::<&str>,
            MsFlags::MS_REMOUNT,
            Some(data.as_str()),
        )
        .map_err(|e| {
            anyhow!(
                "remounting {} with {data:?}: {e}",
                self.mount_point.display()
            )
        })?;
        self.set_mount_flags(&self.mount_flags)
    }

    /// Sets the mount's own flags (e.g. `rw,nosuid,nodev,noexec,relatime`),
    /// leaving the hierarchy's options alone.
    pub fn set_mount_flags(&self, flags: &str) -> anyhow::Result<()> {
        let status = Command::new("mount")
            .arg("-o")
            .arg(format!("remount,bind,{flags}"))
            .arg(&self.mount_point)
            .status()
            .context("running mount")?;
        if !status.success() {
            bail!(
                "mount -o remount,bind,{flags} {}: {status}",
                self.mount_point.display()
            );
        }
        Ok(())
    }

    /// Puts these options and flags back (what [`V2Options::read`] found).
    pub fn restore(&self) -> anyhow::Result<()> {
        self.set_options(&self.options)
    }

    /// These options and flags, put back when the guard is dropped,
    /// whatever happened meanwhile.
    pub fn put_back_on_drop(self) -> PutBack {
        PutBack(self)
    }
}

/// See [`V2Options::put_back_on_drop`].
pub struct PutBack(V2Options);

impl std::ops::Deref for PutBack {
    type Target = V2Options;

    fn deref(&self) -> &V2Options {
        &self.0
    }
}

impl Drop for PutBack {
    fn drop(&mut self) {
        if let Err(e) = self.0.restore() {
            eprintln!("could not put the cgroup v2 options back: {e:#}");
        }
    }
}
