//! Tracepoint field offsets for the programs, from tracefs format files.
use std::path::Path;

use monitor_common::{FieldOffsets, KernelLayout};
use thiserror::Error;

use super::btf::{self, Btf};
use crate::system::tracefs::{self, Format, TracefsError};

#[derive(Debug, Error)]
pub enum OffsetError {
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    #[error("{tracepoint}.{field} is {actual} bytes, the programs expect {expected}")]
    Size {
        tracepoint: String,
        field: &'static str,
        expected: usize,
        actual: usize,
    },
    #[error(
        "struct task_io_accounting does not start with rchar, wchar, syscr, syscw, read_bytes, \
         write_bytes (u64 each), as the task programs read it"
    )]
    IoAccountingLayout,
    #[error(
        "mm_struct.rss_stat is not an array of percpu_counter, as the memory program reads it \
         (Linux 6.2 or newer)"
    )]
    RssStatLayout,
    #[error("reading the kernel's BTF for the task programs: {0}")]
    Btf(#[from] btf::BtfError),
    #[error(
        "cgroup/cgroup_mkdir and cgroup/cgroup_rmdir have different layouts; one program serves both"
    )]
    CgroupLayoutMismatch,
}

/// The offset of `field` in `format`, checked for size and reach.
fn offset(format: &Format, field: &'static str, size: usize) -> Result<u32, OffsetError> {
    let found = format.field(field)?;
    if found.size != size {
        return Err(OffsetError::Size {
            tracepoint: format.tracepoint.clone(),
            field,
            expected: size,
            actual: found.size,
        });
    }
    // Format-file offsets are within a trace record, far below 4 GiB.
    Ok(found.offset as u32)
}

/// All the offsets, from the format files under `tracefs`. (The task
/// hooks are raw tracepoints: they take the kernel's arguments, no offsets.)
pub fn from_tracefs(tracefs: &Path) -> Result<FieldOffsets, OffsetError> {
    let read = |category, name| tracefs::read_format(tracefs, category, name);
    from_formats(&Formats {
        cgroup_mkdir: read("cgroup", "cgroup_mkdir")?,
        cgroup_rmdir: read("cgroup", "cgroup_rmdir")?,
        mark_victim: read("oom", "mark_victim")?,
    })
}

pub struct Formats {
    pub cgroup_mkdir: Format,
    pub cgroup_rmdir: Format,
    pub mark_victim: Format,
}

pub fn from_formats(f: &Formats) -> Result<FieldOffsets, OffsetError> {
    let mkdir = cgroup_offsets(&f.cgroup_mkdir)?;
    // One program body serves both cgroup events: their layouts must agree.
    let rmdir = cgroup_offsets(&f.cgroup_rmdir)?;
    if mkdir != rmdir {
        return Err(OffsetError::CgroupLayoutMismatch);
    }
    Ok(FieldOffsets {
        cgroup_root: mkdir[0],
        cgroup_level: mkdir[1],
        cgroup_id: mkdir[2],
        cgroup_path: mkdir[3],
        oom_victim_pid: offset(&f.mark_victim, "pid", 4)?,
        // Set by the loader from the map sizes.
        cgroup_slot_mask: 0,
        mm_slot_mask: 0,
        _pad: 0,
    })
}

/// This machine's page size.
fn page_size() -> u32 {
    // SAFETY: sysconf has no memory effects.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u32::try_from(size)
        .ok()
        .filter(|s| s.is_power_of_two())
        .unwrap_or(4096)
}

/// Where the task and memory programs find what they read in kernel
/// structs, from this kernel's BTF.
pub fn kernel_layout() -> Result<KernelLayout, OffsetError> {
    layout_from(&Btf::from_file(Path::new(btf::VMLINUX))?)
}

/// Where the task and memory programs find what they read, from a parsed
/// BTF (public for the BTF fuzz target).
pub fn layout_from(btf: &Btf) -> Result<KernelLayout, OffsetError> {
    let task = |path: &[&str]| btf.member_offset("task_struct", path);
    let io = [
        "rchar",
        "wchar",
        "syscr",
        "syscw",
        "read_bytes",
        "write_bytes",
    ];
    for (i, member) in io.iter().enumerate() {
        if btf.member_offset("task_io_accounting", &[member])? != 8 * i as u32 {
            return Err(OffsetError::IoAccountingLayout);
        }
    }
    if btf
        .member_struct_name("mm_struct", &["rss_stat"])?
        .as_deref()
        != Some("percpu_counter")
    {
        return Err(OffsetError::RssStatLayout);
    }
    Ok(KernelLayout {
        task_flags: task(&["flags"])?,
        task_cgroups: task(&["cgroups"])?,
        css_set_dfl_cgrp: btf.member_offset("css_set", &["dfl_cgrp"])?,
        cgroup_kn: btf.member_offset("cgroup", &["kn"])?,
        kernfs_node_id: btf.member_offset("kernfs_node", &["id"])?,
        task_sum_exec_runtime: task(&["se", "sum_exec_runtime"])?,
        task_run_delay: task(&["sched_info", "run_delay"])?,
        task_nvcsw: task(&["nvcsw"])?,
        task_nivcsw: task(&["nivcsw"])?,
        task_min_flt: task(&["min_flt"])?,
        task_maj_flt: task(&["maj_flt"])?,
        task_ioac: task(&["ioac"])?,
        task_signal: task(&["signal"])?,
        signal_thread_head: btf.member_offset("signal_struct", &["thread_head"])?,
        signal_live: btf.member_offset("signal_struct", &["live"])?,
        exit_group_dead_arg: u32::from(btf.tracepoint_args("sched_process_exit")? >= 2),
        css_set_subsys: btf.member_offset("css_set", &["subsys"])?,
        css_cgroup: btf.member_offset("cgroup_subsys_state", &["cgroup"])?,
        task_start_time: task(&["start_time"])?,
        task_thread_node: task(&["thread_node"])?,
        task_mm: task(&["mm"])?,
        mm_rss_stat: btf.member_offset("mm_struct", &["rss_stat"])?,
        percpu_counter_size: btf.struct_size("percpu_counter")?,
        percpu_counter_count: btf.member_offset("percpu_counter", &["count"])?,
        mm_users: btf.member_offset("mm_struct", &["mm_users"])?,
        page_shift: page_size().trailing_zeros(),
    })
}

fn cgroup_offsets(format: &Format) -> Result<[u32; 4], OffsetError> {
    Ok([
        offset(format, "root", 4)?,
        offset(format, "level", 4)?,
        offset(format, "id", 8)?,
        offset(format, "path", 4)?,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::tracefs::parse_format;

    fn format(name: &str, fields: &[(&str, usize, usize)]) -> Format {
        let text: String = fields
            .iter()
            .map(|(n, o, s)| format!("\tfield:int {n};\toffset:{o};\tsize:{s};\tsigned:1;\n"))
            .collect();
        parse_format(name, &text).unwrap()
    }

    fn linux_6_18() -> Formats {
        let cgroup = [
            ("root", 8, 4),
            ("level", 12, 4),
            ("id", 16, 8),
            ("path", 24, 4),
        ];
        Formats {
            cgroup_mkdir: format("cgroup/cgroup_mkdir", &cgroup),
            cgroup_rmdir: format("cgroup/cgroup_rmdir", &cgroup),
            mark_victim: format("oom/mark_victim", &[("pid", 8, 4)]),
        }
    }

    #[test]
    fn offsets_come_from_the_formats() {
        let offsets = from_formats(&linux_6_18()).unwrap();
        assert_eq!(
            (offsets.cgroup_root, offsets.cgroup_id, offsets.cgroup_path),
            (8, 16, 24)
        );
        assert_eq!(offsets.oom_victim_pid, 8);
    }

    #[test]
    fn this_kernels_task_layout_is_read_from_btf() {
        // Unprivileged and read-only: the real kernel's BTF.
        let Ok(btf) = Btf::from_file(Path::new(btf::VMLINUX)) else {
            eprintln!("skipped: this kernel has no {}", btf::VMLINUX);
            return;
        };
        let layout = layout_from(&btf).unwrap();
        assert_eq!(layout.task_nivcsw, layout.task_nvcsw + 8);
        assert!(
            layout.task_ioac > 0 && layout.task_thread_node > 0,
            "{layout:?}"
        );
    }

    #[test]
    fn a_field_of_the_wrong_size_is_refused() {
        let mut formats = linux_6_18();
        formats.mark_victim = format("oom/mark_victim", &[("pid", 8, 8)]);
        let err = from_formats(&formats).unwrap_err().to_string();
        assert!(err.contains("pid"), "{err}");
    }

    #[test]
    fn cgroup_events_must_share_a_layout() {
        let mut formats = linux_6_18();
        formats.cgroup_rmdir = format(
            "cgroup/cgroup_rmdir",
            &[
                ("root", 8, 4),
                ("level", 12, 4),
                ("id", 24, 8),
                ("path", 16, 4),
            ],
        );
        assert!(matches!(
            from_formats(&formats),
            Err(OffsetError::CgroupLayoutMismatch)
        ));
    }

    #[test]
    fn a_missing_field_is_refused() {
        let mut formats = linux_6_18();
        formats.mark_victim = format("oom/mark_victim", &[("comm", 8, 4)]);
        assert!(matches!(
            from_formats(&formats),
            Err(OffsetError::Tracefs(_))
        ));
    }
}
