//! Pinned kernel objects: where the programs, their links and the maps the
//! daemon reads live on bpffs, so counting goes on while the daemon is
//! stopped, restarted or upgraded.
//!
//! Layout under `--bpf.pin-path` (one daemon instance per path):
//! `<path>/<stamp>/{map,prog,link}_<name>`. The stamp is a hash of
//! everything baked into the loaded programs (the object, the field
//! offsets, the monitored root, map sizes): a daemon whose
//! stamp matches reattaches to what is pinned; any other directory is a
//! previous configuration, unloaded when a new one is pinned. A set is
//! pinned under a staging name and renamed into place when complete, so a
//! crash half-way never leaves a set that looks whole.
use std::{
    fs, io,
    path::{Path, PathBuf},
};

use thiserror::Error;

// No dot: bpffs refuses names with one.
const STAGING_PREFIX: &str = "staging-";

#[derive(Debug, Error)]
pub enum PinError {
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> PinError {
    let path = path.to_path_buf();
    move |source| PinError::Io {
        action,
        path,
        source,
    }
}

/// What the loaded programs depend on, hashed into the stamp.
pub struct StampInputs<'a> {
    pub object: &'a [u8],
    pub constants: &'a [u8],
    pub root: &'a str,
    pub cgroup_slots: u32,
    pub max_tasks: u32,
    pub cgroup_v2_mount: &'a Path,
}

impl StampInputs<'_> {
    /// FNV-1a over every input: stable across builds and Rust versions,
    /// unlike the std hasher.
    pub fn stamp(&self) -> String {
        let mut hash = Fnv::default();
        hash.write(self.object);
        hash.write(self.constants);
        hash.write(self.root.as_bytes());
        hash.write(&self.cgroup_slots.to_le_bytes());
        hash.write(&self.max_tasks.to_le_bytes());
        hash.write(self.cgroup_v2_mount.as_os_str().as_encoded_bytes());
        format!("{:016x}", hash.0)
    }
}

struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        // A length prefix keeps ("ab","c") and ("a","bc") apart.
        for byte in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// One daemon instance's pin directory.
#[derive(Debug, Clone)]
pub struct PinDir {
    base: PathBuf,
}

impl PinDir {
    pub fn new(base: PathBuf) -> Self {
        Self { base }
    }

    /// The complete set pinned for `stamp`, if there is one.
    pub fn existing(&self, stamp: &str) -> Option<PathBuf> {
        let dir = self.base.join(stamp);
        dir.is_dir().then_some(dir)
    }

    /// A fresh, empty staging directory for `stamp` (the base made if missing).
    pub fn stage(&self, stamp: &str) -> Result<PinSet, PinError> {
        fs::create_dir_all(&self.base).map_err(io_error("making", &self.base))?;
        let staging = self.base.join(format!("{STAGING_PREFIX}{stamp}"));
        if staging.exists() {
            remove_tree(&staging)?;
        }
        fs::create_dir(&staging).map_err(io_error("making", &staging))?;
        Ok(PinSet {
            staging,
            final_dir: self.base.join(stamp),
        })
    }

    /// Committed sets (of any stamp).
    pub fn complete_sets(&self) -> Vec<PathBuf> {
        let Ok(entries) = fs::read_dir(&self.base) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter(|e| !e.file_name().to_string_lossy().starts_with(STAGING_PREFIX))
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect()
    }

    /// Unpins every set but the one being staged for `stamp` (a complete
    /// set of that stamp here is one that could not be taken up): the
    /// programs of a set go with their last pin. Returns the sets removed.
    pub fn remove_others(&self, stamp: &str) -> Result<Vec<PathBuf>, PinError> {
        self.remove_all_but(&[format!("{STAGING_PREFIX}{stamp}")])
    }

    fn remove_all_but(&self, keep: &[String]) -> Result<Vec<PathBuf>, PinError> {
        let entries = match fs::read_dir(&self.base) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error("listing", &self.base)(e)),
        };
        let mut removed = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_error("listing", &self.base))?;
            if keep.iter().any(|keep| entry.file_name() == keep.as_str()) {
                continue;
            }
            remove_tree(&entry.path())?;
            removed.push(entry.path());
        }
        Ok(removed)
    }

    /// Unpins everything, the base directory included.
    pub fn remove(&self) -> Result<Vec<PathBuf>, PinError> {
        let removed = self.remove_all_but(&[])?;
        match fs::remove_dir(&self.base) {
            Ok(()) => Ok(removed),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(removed),
            Err(e) => Err(io_error("removing", &self.base)(e)),
        }
    }
}

/// A set being pinned: objects go into the staging directory, which
/// [`PinSet::commit`] renames to its stamp.
#[derive(Debug)]
pub struct PinSet {
    staging: PathBuf,
    final_dir: PathBuf,
}

impl PinSet {
    pub fn map_path(&self, name: &str) -> PathBuf {
        self.staging.join(format!("map_{name}"))
    }

    pub fn program_path(&self, name: &str) -> PathBuf {
        self.staging.join(format!("prog_{name}"))
    }

    pub fn link_path(&self, program: &str, n: usize) -> PathBuf {
        self.staging.join(format!("link_{program}_{n}"))
    }

    pub fn commit(self) -> Result<PathBuf, PinError> {
        fs::rename(&self.staging, &self.final_dir).map_err(io_error("renaming", &self.staging))?;
        Ok(self.final_dir)
    }
}

/// Paths of a committed set, for reattaching.
pub fn map_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("map_{name}"))
}

pub fn program_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("prog_{name}"))
}

pub fn link_path(dir: &Path, program: &str, n: usize) -> PathBuf {
    dir.join(format!("link_{program}_{n}"))
}

/// Links pinned in a committed set.
pub fn link_count(dir: &Path) -> usize {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("link_"))
                .count()
        })
        .unwrap_or(0)
}

/// Unpins a directory's objects and removes it (bpffs holds no deeper trees here).
fn remove_tree(dir: &Path) -> Result<(), PinError> {
    for entry in fs::read_dir(dir).map_err(io_error("listing", dir))? {
        let entry = entry.map_err(io_error("listing", dir))?;
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&path)?;
        } else {
            fs::remove_file(&path).map_err(io_error("unpinning", &path))?;
        }
    }
    fs::remove_dir(dir).map_err(io_error("removing", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(object: &[u8]) -> StampInputs<'_> {
        StampInputs {
            object,
            constants: &[1, 2],
            root: "/monitor.slice",
            cgroup_slots: 16384,
            max_tasks: 65536,
            cgroup_v2_mount: Path::new("/sys/fs/cgroup"),
        }
    }

    #[test]
    fn the_stamp_follows_every_input() {
        let base = inputs(b"object").stamp();
        assert_eq!(base, inputs(b"object").stamp());
        assert_ne!(base, inputs(b"object2").stamp());
        assert_ne!(
            base,
            StampInputs {
                max_tasks: 1024,
                ..inputs(b"object")
            }
            .stamp()
        );
        assert_ne!(
            base,
            StampInputs {
                root: "/other",
                ..inputs(b"object")
            }
            .stamp()
        );
        assert_eq!(base.len(), 16);
    }

    #[test]
    fn staging_commit_and_removal_on_a_plain_directory() {
        // The directory logic works on any filesystem; pinning itself needs bpffs.
        let base = std::env::temp_dir().join(format!("monitor-pins-test-{}", std::process::id()));
        let pins = PinDir::new(base.clone());
        let set = pins.stage("abc").unwrap();
        fs::write(set.map_path("X"), b"").unwrap();
        assert!(
            pins.existing("abc").is_none(),
            "a staged set is not complete"
        );
        let dir = set.commit().unwrap();
        assert_eq!(pins.existing("abc"), Some(dir.clone()));
        fs::create_dir(base.join("old")).unwrap();
        let staged = pins.stage("def").unwrap();
        assert_eq!(
            pins.remove_others("def").unwrap().len(),
            2,
            "abc and old go"
        );
        assert!(
            staged.map_path("X").parent().unwrap().is_dir(),
            "the set being staged stays"
        );
        let dir = staged.commit().unwrap();
        assert_eq!(pins.existing("def"), Some(dir));
        pins.remove().unwrap();
        assert!(!base.exists());
    }
}
