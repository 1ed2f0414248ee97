//! The daemon loads kernel programs and moves tasks between cgroups: root only.
use thiserror::Error;

#[derive(Debug, Error)]
#[error(
    "monitor daemon must run as root (effective uid is {euid}): it loads eBPF programs and manages cgroups. \
     Start it with sudo or as a systemd service."
)]
pub struct NotRoot {
    pub euid: u32,
}

pub fn require_root() -> Result<(), NotRoot> {
    let euid = nix::unistd::geteuid();
    if euid.is_root() {
        Ok(())
    } else {
        Err(NotRoot {
            euid: euid.as_raw(),
        })
    }
}
