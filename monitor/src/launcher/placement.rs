//! Putting a registered peer somewhere: moving it and its descendants into a
//! new task cgroup, or adopting the resource manager's cgroup it is in.
use std::{
    collections::{HashMap, HashSet},
    fs, io,
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    path::Path,
};

use super::pidfd;

/// Moves `peer` (pinned by `peer_pidfd`) and its descendants that share
/// its cgroup into `target`. `source` is the peer's cgroup (its path in
/// the hierarchy, and its directory). Children forked while we move land
/// in the source if their parent had not moved yet, so this repeats until
/// a pass finds nothing left. Descendants in other cgroups are left where
/// they are (another manager put them there). Returns how many processes
/// moved.
///
/// `cgroup.procs` takes pid numbers, and a number is reused once its
/// process is reaped; so every process is moved through a pidfd (see
/// [`move_pinned`]), and a descendant only once its pidfd's process is
/// found to be a child of one already moved.
pub fn move_tree(
    peer: i32,
    peer_pidfd: BorrowedFd<'_>,
    source: (&str, &Path),
    target: &Path,
) -> io::Result<usize> {
    const MAX_PASSES: usize = 16;
    let procs = target.join("cgroup.procs");
    if !move_pinned(&procs, peer, peer_pidfd)? {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    let mut moved = 1;
    // The processes moved, pinned: their pids stay theirs while unreaped.
    let mut roots: HashMap<i32, Option<OwnedFd>> = HashMap::from([(peer, None)]);
    for _ in 0..MAX_PASSES {
        let pids: HashSet<i32> = roots.keys().copied().collect();
        let found = match children_files_descendants(&pids) {
            Some(descendants) => descendants,
            None => descendants_in_cgroup(&pids, source.1)?,
        };
        let mut any = false;
        for pid in found {
            let Ok(pidfd) = pidfd::open(pid) else {
                // Exited meanwhile: nothing to move.
                continue;
            };
            if !is_ours(pid, pidfd.as_fd(), source.0, &roots, peer_pidfd) {
                continue;
            }
            any = true;
            if move_pinned(&procs, pid, pidfd.as_fd())? {
                moved += 1;
            }
            roots.insert(pid, Some(pidfd));
        }
        if !any {
            break;
        }
    }
    Ok(moved)
}

/// Moves the process `pidfd` pins by its `pid`: whether it moved (false:
/// it exited meanwhile). Checked before and after the write that the
/// process is unreaped: its pid was then its own throughout, so the write
/// moved no other process. (For another to have taken the number, the
/// process would have to be reaped and the kernel's pid counter wrap
/// round to that number in the microseconds between the two checks.)
fn move_pinned(procs: &Path, pid: i32, pidfd: BorrowedFd<'_>) -> io::Result<bool> {
    if !pidfd::unreaped(pidfd) {
        return Ok(false);
    }
    match write_pid(procs, pid) {
        Ok(()) => Ok(pidfd::unreaped(pidfd)),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether the process `pidfd` pins (as `pid`) is ours to move: in the
/// source cgroup and a child of a process already moved that is still
/// unreaped (so its pid is still its own). Read from /proc by pid, then
/// confirmed to have been the pidfd's process all along.
fn is_ours(
    pid: i32,
    pidfd: BorrowedFd<'_>,
    source: &str,
    roots: &HashMap<i32, Option<OwnedFd>>,
    peer_pidfd: BorrowedFd<'_>,
) -> bool {
    let (Some(parent), Some(cgroup)) = (parent_of(pid), cgroup_of(pid)) else {
        return false;
    };
    let parent_pinned = match roots.get(&parent) {
        Some(Some(fd)) => pidfd::unreaped(fd.as_fd()),
        Some(None) => pidfd::unreaped(peer_pidfd),
        None => false,
    };
    cgroup == source && parent_pinned && pidfd::unreaped(pidfd)
}

/// Descendants of `roots` (not themselves) from /proc/PID/task/TID/children,
/// or None where the kernel lacks them (CONFIG_PROC_CHILDREN).
fn children_files_descendants(roots: &HashSet<i32>) -> Option<Vec<i32>> {
    let mut found = Vec::new();
    let mut pending: Vec<i32> = roots.iter().copied().collect();
    let mut seen: HashSet<i32> = roots.clone();
    while let Some(pid) = pending.pop() {
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let text = match fs::read_to_string(task.path().join("children")) {
                Ok(text) => text,
                Err(e) if e.kind() == io::ErrorKind::NotFound && task.path().exists() => {
                    return None;
                }
                Err(_) => continue,
            };
            for child in text
                .split_whitespace()
                .filter_map(|c| c.parse::<i32>().ok())
            {
                if seen.insert(child) {
                    found.push(child);
                    pending.push(child);
                }
            }
        }
    }
    Some(found)
}

/// Descendants of `roots` among the processes of cgroup directory `dir`, by
/// reading each one's parent: the fallback without children files.
fn descendants_in_cgroup(roots: &HashSet<i32>, dir: &Path) -> io::Result<Vec<i32>> {
    let remaining = pids_in(dir)?;
    let parents: HashMap<i32, i32> = remaining
        .iter()
        .filter_map(|&pid| Some((pid, parent_of(pid)?)))
        .collect();
    Ok(descendants_of(roots, &parents))
}

/// The cgroup v2 path of a process.
fn cgroup_of(pid: i32) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
}

/// Pids in `parents` whose chain of parents reaches one of `roots`.
pub fn descendants_of(roots: &HashSet<i32>, parents: &HashMap<i32, i32>) -> Vec<i32> {
    let mut found: HashSet<i32> = HashSet::new();
    let mut changed = true;
    while changed {
        changed = false;
        for (&pid, parent) in parents {
            if !found.contains(&pid)
                && !roots.contains(&pid)
                && (roots.contains(parent) || found.contains(parent))
            {
                found.insert(pid);
                changed = true;
            }
        }
    }
    let mut pids: Vec<i32> = found.into_iter().collect();
    // Parents first, so a child forked meanwhile follows its moved parent.
    pids.sort_unstable();
    pids
}

fn write_pid(procs: &Path, pid: i32) -> io::Result<()> {
    fs::write(procs, pid.to_string())
}

fn pids_in(cgroup: &Path) -> io::Result<Vec<i32>> {
    let text = fs::read_to_string(cgroup.join("cgroup.procs"))?;
    Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// The parent pid from /proc/PID/stat (`pid (comm) state ppid ...`; comm may
/// hold spaces and parentheses, so parse after the last `)`).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_ppid(&stat)
}

pub fn parse_ppid(stat: &str) -> Option<i32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_children_and_grandchildren_only() {
        let roots = HashSet::from([100]);
        let parents = HashMap::from([(101, 100), (102, 101), (200, 1), (201, 200), (100, 50)]);
        assert_eq!(descendants_of(&roots, &parents), vec![101, 102]);
    }

    #[test]
    fn parses_ppid_after_a_tricky_comm() {
        assert_eq!(parse_ppid("1234 (a) b (c)) S 77 1234 1234 0"), Some(77));
        assert_eq!(parse_ppid("garbage"), None);
    }
}
