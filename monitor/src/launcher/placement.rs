//! Putting a registered peer somewhere: moving it and its descendants into a
//! new task cgroup, or adopting the resource manager's cgroup it is in.
use std::{
    collections::{HashMap, HashSet},
    fs, io,
    path::Path,
};

/// Moves `peer` and its descendants that share its cgroup into `target`.
/// `source` is the peer's cgroup (its path in the hierarchy, and its
/// directory). Children forked while we move land in the source if their
/// parent had not moved yet, so this repeats until a pass finds nothing
/// left. Descendants in other cgroups are left where they are (another
/// manager put them there). Returns how many processes moved.
pub fn move_tree(peer: i32, source: (&str, &Path), target: &Path) -> io::Result<usize> {
    const MAX_PASSES: usize = 16;
    let procs = target.join("cgroup.procs");
    let mut roots: HashSet<i32> = HashSet::from([peer]);
    write_pid(&procs, peer)?;
    let mut moved = 1;
    for _ in 0..MAX_PASSES {
        let to_move = match children_files_descendants(&roots) {
            Some(descendants) => descendants
                .into_iter()
                .filter(|&pid| cgroup_of(pid).as_deref() == Some(source.0))
                .collect(),
            None => descendants_in_cgroup(&roots, source.1)?,
        };
        if to_move.is_empty() {
            break;
        }
        for pid in to_move {
            match write_pid(&procs, pid) {
                Ok(()) => moved += 1,
                // Exited meanwhile: nothing to move.
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => return Err(e),
            }
            roots.insert(pid);
        }
    }
    Ok(moved)
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
