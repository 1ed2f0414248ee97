//! The daemon's own task cgroups (`<cgroup.root>/task-<n>`, made ahead as
//! spares, or `task-<pid>-<n>`, made for launcher `pid` when no spare was
//! ready): how they are named, and the record of its job each carries.
//!
//! The registry of running jobs is saved once a sample, so a crash or a
//! restart can come between making a task cgroup and the next save. The
//! cgroup itself then says what it is: its name marks it as the daemon's
//! (only root may make directories in the monitored root), and an extended
//! attribute on it names its job (uid and id), written when it is made
//! and again when the job's id is settled. A restarted daemon takes it
//! back as that registered job, which ends when the cgroup empties, never
//! as a directory job of root's that the daemon would never end.
use std::{
    ffi::CString,
    fs,
    os::unix::{ffi::OsStrExt, fs::MetadataExt},
    path::Path,
};

use serde::{Deserialize, Serialize};

use super::JobKey;

/// The extended attribute (cgroupfs keeps `trusted.*` ones; only root may
/// write them).
const RECORD_ATTRIBUTE: &str = "trusted.monitor.job";

/// Largest record read back (a job id is bounded well below this).
const MAX_RECORD: usize = 8192;

/// Where a run's name sequence starts: the time in seconds, so names stay
/// unique across restarts (a name taken anyway gets the next number).
pub fn first_sequence() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The name of a task cgroup for the launcher `pid`, `sequence` unique.
pub fn name(pid: i32, sequence: u64) -> String {
    format!("task-{pid}-{sequence}")
}

/// The name of a spare task cgroup (see [`crate::jobs::spares`]),
/// `sequence` unique.
pub fn spare_name(sequence: u64) -> String {
    format!("task-{sequence}")
}

/// Whether a directory name is one [`name`] or [`spare_name`] makes (with
/// the `-<n>` suffixes a taken name gets).
pub fn is_name(name: &str) -> bool {
    let Some(numbers) = name.strip_prefix("task-") else {
        return false;
    };
    numbers
        .split('-')
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether a directory name is one [`spare_name`] makes.
fn is_spare_name(name: &str) -> bool {
    name.strip_prefix("task-")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Removes the spare task cgroups an earlier run left under `root_dir`
/// (one that crashed; a stopping daemon removes its own): those with no
/// job recorded and no process. Returns how many went. Before the first
/// walk of the root, which would take each for a job.
pub fn remove_unused_spares(root_dir: &Path) -> std::io::Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(root_dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let dir = entry.path();
        if !is_spare_name(&name) || recorded(&dir).is_some() {
            continue;
        }
        let empty = fs::read_to_string(dir.join("cgroup.procs")).is_ok_and(|p| p.trim().is_empty());
        if empty && fs::remove_dir(&dir).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// The task cgroup name of `path` (a hierarchy path) when it is one made
/// directly under `root`.
pub fn name_under<'a>(root: &str, path: &'a str) -> Option<&'a str> {
    let (parent, name) = path.rsplit_once('/')?;
    (parent == root.trim_end_matches('/') && is_name(name)).then_some(name)
}

#[derive(Serialize, Deserialize)]
struct Record {
    uid: u32,
    jobid: String,
}

/// Writes on task cgroup `dir` that it is `key`'s. Best effort: without it
/// a restart takes the cgroup back under its name (see [`found`]).
pub fn record(dir: &Path, key: &JobKey) {
    let record = Record {
        uid: key.uid,
        jobid: key.jobid.clone(),
    };
    let Ok(value) = serde_json::to_vec(&record) else {
        return;
    };
    let (Ok(path), Ok(attribute)) = (
        CString::new(dir.as_os_str().as_bytes()),
        CString::new(RECORD_ATTRIBUTE),
    ) else {
        return;
    };
    // SAFETY: NUL-terminated strings and a buffer of the length given.
    let done = unsafe {
        libc::setxattr(
            path.as_ptr(),
            attribute.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if done != 0 {
        log::debug!(
            "recording the job of {} on it: {}",
            dir.display(),
            std::io::Error::last_os_error()
        );
    }
}

fn recorded(dir: &Path) -> Option<JobKey> {
    let path = CString::new(dir.as_os_str().as_bytes()).ok()?;
    let attribute = CString::new(RECORD_ATTRIBUTE).ok()?;
    let mut buffer = vec![0u8; MAX_RECORD];
    // SAFETY: NUL-terminated strings and a buffer of the length given.
    let length = unsafe {
        libc::getxattr(
            path.as_ptr(),
            attribute.as_ptr(),
            buffer.as_mut_ptr().cast(),
            buffer.len(),
        )
    };
    let length = usize::try_from(length).ok()?;
    let record: Record = serde_json::from_slice(buffer.get(..length)?).ok()?;
    Some(JobKey {
        uid: record.uid,
        jobid: record.jobid,
    })
}

/// The job a task cgroup found under the root with no job known for it
/// belongs to: the one recorded on it, else (a kernel without cgroupfs
/// extended attributes) the job named by the directory, of the owner of
/// the first process in it (the directory is root's).
pub fn found(dir: &Path, name: &str) -> JobKey {
    recorded(dir).unwrap_or_else(|| JobKey {
        uid: first_process_owner(dir).unwrap_or(0),
        jobid: name.to_string(),
    })
}

fn first_process_owner(dir: &Path) -> Option<u32> {
    let procs = fs::read_to_string(dir.join("cgroup.procs")).ok()?;
    procs
        .lines()
        .find_map(|pid| fs::metadata(format!("/proc/{}", pid.trim())).ok())
        .map(|metadata| metadata.uid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_made_are_recognised_and_others_are_not() {
        assert!(is_name(&name(42, 1_764_000_000)));
        assert!(is_name("task-42-1764000000-1764000001"));
        assert_eq!(
            name_under("/monitor.slice", "/monitor.slice/task-1-2"),
            Some("task-1-2")
        );
        assert_eq!(
            name_under("/monitor.slice", "/monitor.slice/task-1-2/x"),
            None
        );
        assert_eq!(name_under("/monitor.slice", "/other/task-1-2"), None);
        assert!(is_name(&spare_name(1_764_000_000)));
        assert!(is_spare_name(&spare_name(1_764_000_000)));
        assert!(!is_spare_name(&name(42, 1_764_000_000)));
        for other in ["task-", "task-a-1", "task-1--2", "slurm", "task-1-2x"] {
            assert!(!is_name(other), "{other}");
        }
    }
}
