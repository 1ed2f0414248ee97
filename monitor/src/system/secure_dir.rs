//! Directories the daemon keeps root's things in (its sockets, its pins):
//! made with an exact mode, whatever the umask, and, made or found, only
//! where no other user can swap what is in them. Every directory on the
//! way down from `/` must belong to root and be writable by nobody else,
//! unless it is sticky (like /tmp, where a user may not rename or remove
//! another's entries).
use std::{
    fs, io,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum SecureDirError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} belongs to uid {uid}, not root: another user could replace what the daemon keeps below it; make it root's (chown root) or choose another path"
    )]
    NotRoots { path: PathBuf, uid: u32 },
    #[error(
        "{path} is writable by other users (mode {mode:o}) and not sticky: they could replace what the daemon keeps below it; chmod go-w, or choose another path"
    )]
    Writable { path: PathBuf, mode: u32 },
}

const GROUP_OR_OTHER_WRITE: u32 = 0o022;
const STICKY: u32 = 0o1000;

/// Makes `dir` (and missing parents) with `mode`, and checks every
/// directory from `/` down to it.
pub fn ensure(dir: &Path, mode: u32) -> Result<(), SecureDirError> {
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SecureDirError::Io { path, source }
    };
    let mut at = PathBuf::new();
    for part in dir.components() {
        at.push(part);
        match fs::symlink_metadata(&at) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match fs::create_dir(&at) {
                    Ok(()) => {}
                    // Made meanwhile (a concurrent start): checked below like any other.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io_error(&at)(e)),
                }
                // Exactly `mode`: create_dir's is cut by the umask.
                fs::set_permissions(&at, fs::Permissions::from_mode(mode))
                    .map_err(io_error(&at))?;
            }
            Err(e) => return Err(io_error(&at)(e)),
        }
        check(&at)?;
    }
    Ok(())
}

/// `dir` is root's, and only root may change its entries.
fn check(dir: &Path) -> Result<(), SecureDirError> {
    // Followed: a symlink is as safe as what it leads to, which is checked
    // here; its own directory was checked on the way down.
    let metadata = fs::metadata(dir).map_err(|source| SecureDirError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    if metadata.uid() != 0 {
        return Err(SecureDirError::NotRoots {
            path: dir.to_path_buf(),
            uid: metadata.uid(),
        });
    }
    let mode = metadata.mode() & 0o7777;
    if mode & GROUP_OR_OTHER_WRITE != 0 && mode & STICKY == 0 {
        return Err(SecureDirError::Writable {
            path: dir.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("monitor-secure-dir-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn made_with_the_exact_mode_whatever_the_umask() {
        if !nix::unistd::geteuid().is_root() {
            return; // Ownership is root's to check; the daemon runs as root.
        }
        let dir = scratch("made");
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
        let made = ensure(&dir.join("a/b"), 0o755);
        nix::sys::stat::umask(old);
        made.unwrap();
        for path in [dir.join("a"), dir.join("a/b")] {
            assert_eq!(
                fs::metadata(&path).unwrap().mode() & 0o7777,
                0o755,
                "{}",
                path.display()
            );
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_others_may_write_or_own_is_refused() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let dir = scratch("open");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let error = ensure(&dir.join("sockets"), 0o755).unwrap_err().to_string();
        assert!(error.contains("writable by other users"), "{error}");
        // Sticky, like /tmp: fine.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o1777)).unwrap();
        ensure(&dir.join("sockets"), 0o755).unwrap();
        nix::unistd::chown(
            &dir.join("sockets"),
            Some(nix::unistd::Uid::from_raw(65534)),
            None,
        )
        .unwrap();
        let error = ensure(&dir.join("sockets"), 0o755).unwrap_err().to_string();
        assert!(error.contains("uid 65534"), "{error}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
