//! The machine the figures come from, and the one kernel set-up the
//! benchmarks need (tracefs, for attaching the floor program).
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;

use crate::util::run;

const TRACEFS: &str = "/sys/kernel/tracing";

#[derive(Debug)]
pub struct Environment {
    pub date: String,
    pub kernel: String,
    pub cpu_model: String,
    pub cpus: usize,
    pub cgroup_mount: PathBuf,
}

impl Environment {
    pub fn probe(cgroup_mount: &Path) -> anyhow::Result<Self> {
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .context("reading the kernel release")?;
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").context("reading /proc/cpuinfo")?;
        Ok(Self {
            date: utc_now(),
            kernel: kernel.trim().to_string(),
            cpu_model: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".into()),
            cpus: cpuinfo
                .lines()
                .filter(|l| l.starts_with("processor"))
                .count(),
            cgroup_mount: cgroup_mount.to_path_buf(),
        })
    }
}

/// Mounts tracefs if it is missing: aya attaches tracepoints through it.
pub fn ensure_tracefs() -> anyhow::Result<()> {
    if Path::new(TRACEFS).join("events").is_dir() {
        return Ok(());
    }
    run(Command::new("mount").args(["-t", "tracefs", "tracefs", TRACEFS]))
        .context("mounting tracefs")
}

fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim().to_string())
    })
}

/// Programs of a job monitor: ours, those of its earlier versions
/// (sched_switch and the other per-event hooks), which another monitor on
/// the node would load too.
const MONITOR_PROGRAMS: [&str; 24] = [
    "sched_switch",
    "sched_wakeup",
    "sched_wakeup_new",
    "page_fault_user",
    "block_bio_queue",
    "sys_exit_read_family",
    "sys_exit_write_family",
    "sys_exit_copy_family",
    "cpu_flush",
    "rss_stat",
    "task_newtask",
    "task_iter",
    "tracked_task_iter",
    "net_sock_create",
    "net_sock_release",
    "cgroup_attach_task",
    "sched_process_exec",
    "sched_process_exit",
    "sched_process_free",
    "cgroup_mkdir",
    "cgroup_rmdir",
    "oom_mark_victim",
    "net_ingress",
    "net_egress",
];

/// Monitor programs loaded now (see [`MONITOR_PROGRAMS`]). Counted while no
/// daemon of ours runs, they belong to someone else (another monitor, a
/// test's daemon) and add to every figure: the machine is shared.
pub fn foreign_programs() -> usize {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str().is_some_and(is_monitor_program))
        .count()
}

/// The kernel keeps 15 bytes of a program's name.
fn is_monitor_program(name: &str) -> bool {
    const KEPT: usize = 15;
    !name.is_empty()
        && MONITOR_PROGRAMS
            .iter()
            .any(|known| *known == name || (name.len() == KEPT && known.starts_with(name)))
}

/// Now as `YYYY-MM-DD HH:MM UTC`.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400) as i64);
    let minutes = secs % 86_400 / 60;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        minutes / 60,
        minutes % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// algorithm), to avoid a date crate for one line of the report.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn monitor_programs_by_their_kept_names() {
        assert!(is_monitor_program("sched_switch"));
        assert!(is_monitor_program("net_ingress"));
        assert!(is_monitor_program("sched_process_e"));
        assert!(is_monitor_program("cgroup_attach_t"));
        assert!(!is_monitor_program("sched_process"));
        assert!(!is_monitor_program("bench_floor"));
        assert!(!is_monitor_program(""));
    }

    #[test]
    fn cpu_model_line() {
        assert_eq!(
            cpu_model("processor\t: 0\nmodel name\t: AMD EPYC\n"),
            Some("AMD EPYC".into())
        );
        assert_eq!(cpu_model("processor\t: 0\n"), None);
    }
}
