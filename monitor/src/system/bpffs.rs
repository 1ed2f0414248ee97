//! The BPF filesystem, where pinned maps, programs and links outlive the
//! daemon: mounting it when missing.
use std::{fs, io, path::Path};

use thiserror::Error;

/// Where distributions mount it (systemd does, at boot).
pub const BPFFS_MOUNT: &str = "/sys/fs/bpf";
/// `statfs(2)` magic of bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

#[derive(Debug, Error)]
pub enum BpffsError {
    #[error("could not mount the BPF filesystem at {BPFFS_MOUNT}: {0}")]
    Mount(#[source] nix::Error),
    #[error(
        "{0} is not on a BPF filesystem: pinned objects must live on one \
         (mount one with `mount -t bpf bpf DIR`, or pick a --bpf.pin-path under {BPFFS_MOUNT})"
    )]
    NotBpffs(String),
    #[error("making {path}: {source}")]
    Dir {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Makes sure `dir`'s parent is on bpffs, mounting bpffs at
/// /sys/fs/bpf when the parent is that directory and nothing is mounted.
pub fn ensure_parent_mounted(dir: &Path) -> Result<(), BpffsError> {
    let parent = dir.parent().unwrap_or(dir);
    if is_bpffs(parent) {
        return Ok(());
    }
    if parent != Path::new(BPFFS_MOUNT) {
        return Err(BpffsError::NotBpffs(parent.display().to_string()));
    }
    fs::create_dir_all(parent).map_err(|source| BpffsError::Dir {
        path: parent.display().to_string(),
        source,
    })?;
    nix::mount::mount(
        Some("bpf"),
        parent,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(BpffsError::Mount)?;
    log::info!("mounted the BPF filesystem at {BPFFS_MOUNT}");
    Ok(())
}

pub fn is_bpffs(path: &Path) -> bool {
    // The field's integer type differs between architectures.
    #[allow(clippy::unnecessary_cast)]
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 as i64 == BPF_FS_MAGIC)
}
