//! Tracepoint field offsets for the programs, from tracefs format files.
use std::path::Path;

use monitor_common::{FieldOffsets, TRACEPOINT_HEAD_LEN};
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
    #[error("{tracepoint}.{field} ends at byte {end}, past the {TRACEPOINT_HEAD_LEN} bytes the programs copy")]
    TooFar {
        tracepoint: String,
        field: &'static str,
        end: usize,
    },
    #[error("the syscalls/sys_exit_* tracepoints disagree on where `ret` is; one program serves them all")]
    SyscallRetMismatch,
    #[error("cgroup/cgroup_mkdir and cgroup/cgroup_rmdir have different layouts; one program serves both")]
    CgroupLayoutMismatch,
}

/// The offset of a field read from the copied head of the record.
fn head_offset(format: &Format, field: &'static str, size: usize) -> Result<u32, OffsetError> {
    let at = offset(format, field, size)?;
    let end = at as usize + size;
    if end > TRACEPOINT_HEAD_LEN {
        return Err(OffsetError::TooFar {
            tracepoint: format.tracepoint.clone(),
            field,
            end,
        });
    }
    Ok(at)
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

/// All the offsets, from the format files under `tracefs`. (The scheduler
/// hooks are raw tracepoints: they take the kernel's arguments, no offsets.)
pub fn from_tracefs(tracefs: &Path) -> Result<FieldOffsets, OffsetError> {
    let read = |category, name| tracefs::read_format(tracefs, category, name);
    from_formats(&Formats {
        task_newtask: read("task", "task_newtask")?,
        sched_process_exit: read("sched", "sched_process_exit")?,
        cgroup_mkdir: read("cgroup", "cgroup_mkdir")?,
        cgroup_rmdir: read("cgroup", "cgroup_rmdir")?,
        rss_stat: read("kmem", "rss_stat")?,
        mark_victim: read("oom", "mark_victim")?,
        block_bio_queue: read("block", "block_bio_queue")?,
        syscall_exits: SYSCALL_EXITS
            .iter()
            .map(|name| read("syscalls", name))
            .collect::<Result<_, _>>()?,
    })
}

pub struct Formats {
    pub task_newtask: Format,
    pub sched_process_exit: Format,
    pub cgroup_mkdir: Format,
    pub cgroup_rmdir: Format,
    pub rss_stat: Format,
    pub mark_victim: Format,
    pub block_bio_queue: Format,
    pub syscall_exits: Vec<Format>,
}

/// The read/write-family syscall exits the IO programs attach to.
pub const SYSCALL_EXITS: [&str; 12] = [
    "sys_exit_read",
    "sys_exit_readv",
    "sys_exit_pread64",
    "sys_exit_preadv",
    "sys_exit_preadv2",
    "sys_exit_write",
    "sys_exit_writev",
    "sys_exit_pwrite64",
    "sys_exit_pwritev",
    "sys_exit_pwritev2",
    "sys_exit_sendfile64",
    "sys_exit_copy_file_range",
];

/// Where `se.sum_exec_runtime` is in `struct task_struct`, from the
/// kernel's BTF; 0 (the programs then time CPU with the clock, which also
/// counts hypervisor steal and interrupt time) when that cannot be read.
pub fn task_runtime_offset() -> u32 {
    let offset = Btf::from_file(Path::new(btf::VMLINUX))
        .and_then(|btf| btf.member_offset("task_struct", &["se", "sum_exec_runtime"]));
    match offset {
        Ok(offset) => offset,
        Err(e) => {
            log::warn!("CPU time falls back to the clock (hypervisor steal time included): {e}");
            0
        }
    }
}

/// One program reads `ret` of every syscall exit: it must be at one offset.
fn syscall_ret(formats: &[Format]) -> Result<u32, OffsetError> {
    let mut offsets = formats.iter().map(|f| offset(f, "ret", 8));
    let first = offsets.next().ok_or(OffsetError::SyscallRetMismatch)??;
    for other in offsets {
        if other? != first {
            return Err(OffsetError::SyscallRetMismatch);
        }
    }
    Ok(first)
}

pub fn from_formats(f: &Formats) -> Result<FieldOffsets, OffsetError> {
    let mkdir = cgroup_offsets(&f.cgroup_mkdir)?;
    // One program body serves both cgroup events: their layouts must agree.
    let rmdir = cgroup_offsets(&f.cgroup_rmdir)?;
    if mkdir != rmdir {
        return Err(OffsetError::CgroupLayoutMismatch);
    }
    Ok(FieldOffsets {
        newtask_clone_flags: offset(&f.task_newtask, "clone_flags", 8)?,
        exit_group_dead: offset(&f.sched_process_exit, "group_dead", 1)?,
        cgroup_root: mkdir[0],
        cgroup_level: mkdir[1],
        cgroup_id: mkdir[2],
        cgroup_path: mkdir[3],
        rss_mm_id: head_offset(&f.rss_stat, "mm_id", 4)?,
        rss_curr: head_offset(&f.rss_stat, "curr", 4)?,
        rss_member: head_offset(&f.rss_stat, "member", 4)?,
        rss_size: head_offset(&f.rss_stat, "size", 8)?,
        oom_victim_pid: offset(&f.mark_victim, "pid", 4)?,
        bio_nr_sector: head_offset(&f.block_bio_queue, "nr_sector", 4)?,
        bio_rwbs: head_offset(&f.block_bio_queue, "rwbs", 10)?,
        syscall_ret: syscall_ret(&f.syscall_exits)?,
        // From BTF, see [`task_runtime_offset`].
        task_sum_exec_runtime: 0,
        _pad: 0,
        // Set by the loader from the map sizes.
        task_slot_mask: 0,
        cgroup_slot_mask: 0,
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
        let cgroup = [("root", 8, 4), ("level", 12, 4), ("id", 16, 8), ("path", 24, 4)];
        Formats {
            task_newtask: format("task/task_newtask", &[("pid", 8, 4), ("clone_flags", 32, 8)]),
            sched_process_exit: format("sched/sched_process_exit", &[("pid", 24, 4), ("group_dead", 32, 1)]),
            cgroup_mkdir: format("cgroup/cgroup_mkdir", &cgroup),
            cgroup_rmdir: format("cgroup/cgroup_rmdir", &cgroup),
            rss_stat: format("kmem/rss_stat", &[("mm_id", 8, 4), ("curr", 12, 4), ("member", 16, 4), ("size", 24, 8)]),
            mark_victim: format("oom/mark_victim", &[("pid", 8, 4)]),
            block_bio_queue: format("block/block_bio_queue", &[("nr_sector", 24, 4), ("rwbs", 28, 10)]),
            syscall_exits: SYSCALL_EXITS.iter().map(|name| format(name, &[("ret", 16, 8)])).collect(),
        }
    }

    #[test]
    fn offsets_come_from_the_formats() {
        let offsets = from_formats(&linux_6_18()).unwrap();
        assert_eq!(offsets.newtask_clone_flags, 32);
        assert_eq!(offsets.exit_group_dead, 32);
        assert_eq!((offsets.cgroup_root, offsets.cgroup_id, offsets.cgroup_path), (8, 16, 24));
    }

    #[test]
    fn a_field_of_the_wrong_size_is_refused() {
        let mut formats = linux_6_18();
        formats.task_newtask = format("task/task_newtask", &[("pid", 8, 4), ("clone_flags", 32, 4)]);
        let err = from_formats(&formats).unwrap_err().to_string();
        assert!(err.contains("clone_flags"), "{err}");
    }

    #[test]
    fn a_field_past_the_copied_head_is_refused() {
        let mut formats = linux_6_18();
        formats.rss_stat = format("kmem/rss_stat", &[("mm_id", 8, 4), ("curr", 12, 4), ("member", 16, 4), ("size", 60, 8)]);
        assert!(matches!(from_formats(&formats), Err(OffsetError::TooFar { .. })));
    }

    #[test]
    fn syscall_exits_must_agree_on_ret() {
        let mut formats = linux_6_18();
        assert_eq!(from_formats(&formats).unwrap().syscall_ret, 16);
        formats.syscall_exits[3] = format("sys_exit_preadv", &[("ret", 24, 8)]);
        assert!(matches!(from_formats(&formats), Err(OffsetError::SyscallRetMismatch)));
    }

    #[test]
    fn cgroup_events_must_share_a_layout() {
        let mut formats = linux_6_18();
        formats.cgroup_rmdir = format("cgroup/cgroup_rmdir", &[("root", 8, 4), ("level", 12, 4), ("id", 24, 8), ("path", 16, 4)]);
        assert!(matches!(from_formats(&formats), Err(OffsetError::CgroupLayoutMismatch)));
    }

    #[test]
    fn a_missing_field_is_refused() {
        let mut formats = linux_6_18();
        formats.sched_process_exit = format("sched/sched_process_exit", &[("pid", 24, 4)]);
        assert!(matches!(from_formats(&formats), Err(OffsetError::Tracefs(_))));
    }
}
