//! Which executables may register jobs.
//!
//! What counts as a peer's executable is what the kernel says it runs:
//! `/proc/PID/exe`, the file the exec opened, with symlinks resolved. So a
//! symlink to a trusted binary is trusted (it runs that binary); a copy of a
//! trusted binary at another path is not; a binary replaced or deleted since
//! it was started (`(deleted)`) is not. Trusted paths are canonicalized at
//! start so that a symlinked install directory matches.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

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

    pub fn is_trusted(&self, exe: &Path) -> bool {
        self.paths.contains(exe)
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
        assert!(list.is_trusted(Path::new("/nonexistent/b")));
        assert!(!list.is_trusted(Path::new("/nonexistent/d")));
    }

    #[test]
    fn trusts_its_own_binary_unless_told_not_to() {
        let exe = std::env::current_exe().unwrap().canonicalize().unwrap();
        assert!(TrustList::new(&[], true).is_trusted(&exe));
        assert!(!TrustList::new(&[], false).is_trusted(&exe));
    }
}
