//! Which executables may register jobs.
//!
//! Trust is decided on file identity, not on a path: the device and inode
//! of the file the peer runs (a stat of `/proc/PID/exe`, which the kernel
//! resolves to the very file the exec opened) against those of each
//! trusted path, looked up in the daemon's own mount namespace at the
//! moment of the check. A path means nothing across mount namespaces: in a
//! private one, any user can bind-mount python3 over the trusted path and
//! exec it, and `/proc/PID/exe` then shows the trusted path. The file's
//! identity cannot be faked that way.
//!
//! So a symlink or hard link to a trusted binary is trusted (it runs that
//! file); a copy at another path is not; a binary replaced since the peer
//! started it (an upgrade, a deleted file) is not, as the trusted path now
//! names another file. Looking the trusted paths up at each check (one
//! stat each) keeps an upgraded binary trusted without a restart.
use std::{
    collections::BTreeSet,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

/// Device and inode: one file, whatever path or namespace names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileIdentity {
    pub dev: u64,
    pub ino: u64,
}

impl FileIdentity {
    pub fn of(stat: &nix::sys::stat::FileStat) -> Self {
        Self {
            dev: stat.st_dev,
            ino: stat.st_ino,
        }
    }

    fn of_path(path: &Path) -> Option<Self> {
        let metadata = std::fs::metadata(path).ok()?;
        Some(Self {
            dev: metadata.dev(),
            ino: metadata.ino(),
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct TrustList {
    paths: BTreeSet<PathBuf>,
}

impl TrustList {
    /// From `--trust.path` values (each may be one `;`-separated list, as
    /// Apptheus accepts) and, when `trust_self`, the daemon's own binary
    /// (for `monitor run`).
    pub fn new(values: &[String], trust_self: bool) -> Self {
        let mut paths: BTreeSet<PathBuf> = values
            .iter()
            .flat_map(|v| v.split(';'))
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| canonical(Path::new(p)))
            .collect();
        if trust_self && let Ok(exe) = std::env::current_exe() {
            paths.insert(canonical(&exe));
        }
        Self { paths }
    }

    /// The trusted path that names the file the peer runs, if any.
    pub fn trusted_path(&self, exe_file: Option<FileIdentity>) -> Option<&Path> {
        let exe_file = exe_file?;
        self.paths
            .iter()
            .find(|path| FileIdentity::of_path(path) == Some(exe_file))
            .map(PathBuf::as_path)
    }

    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.paths.iter().map(PathBuf::as_path)
    }
}

fn canonical(path: &Path) -> PathBuf {
    match path.canonicalize() {
        Ok(path) => path,
        Err(e) => {
            log::warn!(
                "trusted path {} cannot be resolved ({e}); it will only match exactly",
                path.display()
            );
            path.to_path_buf()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_repeated_and_semicolon_separated_paths() {
        let list = TrustList::new(
            &[
                "/nonexistent/a;/nonexistent/b".into(),
                " /nonexistent/c ".into(),
                ";".into(),
            ],
            false,
        );
        let paths: Vec<&Path> = list.paths().collect();
        assert_eq!(
            paths,
            [
                Path::new("/nonexistent/a"),
                Path::new("/nonexistent/b"),
                Path::new("/nonexistent/c")
            ]
        );
        // Paths that name no file trust nothing.
        assert_eq!(
            list.trusted_path(Some(FileIdentity { dev: 1, ino: 1 })),
            None
        );
        assert_eq!(list.trusted_path(None), None);
    }

    #[test]
    fn trusts_its_own_binary_unless_told_not_to() {
        let exe = std::env::current_exe().unwrap();
        let file = FileIdentity::of_path(&exe);
        assert!(file.is_some());
        assert!(TrustList::new(&[], true).trusted_path(file).is_some());
        assert!(TrustList::new(&[], false).trusted_path(file).is_none());
    }

    #[test]
    fn a_copy_is_not_the_file_but_a_hard_link_is() {
        let dir = std::env::temp_dir().join(format!("monitor-trust-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (trusted, copy, link) = (dir.join("starter"), dir.join("copy"), dir.join("link"));
        std::fs::write(&trusted, b"#!/bin/true\n").unwrap();
        std::fs::copy(&trusted, &copy).unwrap();
        std::fs::hard_link(&trusted, &link).unwrap();
        let list = TrustList::new(&[trusted.to_string_lossy().into_owned()], false);
        assert!(list.trusted_path(FileIdentity::of_path(&link)).is_some());
        assert!(list.trusted_path(FileIdentity::of_path(&copy)).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
