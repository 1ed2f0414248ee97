//! Bytes read and written per job, as /proc/PID/io counts rchar and wchar:
//! the `ret` of the read/write-family syscalls, at their exit tracepoints
//! (syscalls/sys_exit_read, _readv, _pread64, _preadv, _preadv2 and the
//! write side; sendfile64 and copy_file_range count on both sides, as the
//! kernel does).
//!
//! Why syscall tracepoints and not fexit on vfs_read and friends: fexit
//! programs are refused at load here (EPERM, with the kernel in lockdown
//! mode), and tracepoints are stable ABI with offsets from format files.
//! The only rchar these miss is what the kernel reads on a task's behalf
//! (__kernel_read: exec loading a binary, a few KiB per exec).
use aya_ebpf::{helpers::bpf_get_current_cgroup_id, macros::tracepoint, programs::TracePointContext};

use crate::{config::offset, maps::counters_of};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Read,
    Write,
    Both,
}

#[inline(always)]
fn count(ctx: &TracePointContext, direction: Direction) {
    let Some(counters) = counters_of(unsafe { bpf_get_current_cgroup_id() }) else {
        return;
    };
    let offset = offset!(syscall_ret);
    // SAFETY: the offset comes from the tracepoints' format files.
    let ret: i64 = unsafe { ctx.read_at(offset) }.unwrap_or(0);
    let bytes = if ret > 0 { ret as u64 } else { 0 };
    if direction != Direction::Write {
        counters.io_read_calls += 1;
        counters.io_read_bytes += bytes;
    }
    if direction != Direction::Read {
        counters.io_write_calls += 1;
        counters.io_write_bytes += bytes;
    }
}

/// Attached to sys_exit_read, _readv, _pread64, _preadv, _preadv2.
#[tracepoint]
pub fn sys_exit_read_family(ctx: TracePointContext) -> u32 {
    count(&ctx, Direction::Read);
    0
}

/// Attached to sys_exit_write, _writev, _pwrite64, _pwritev, _pwritev2.
#[tracepoint]
pub fn sys_exit_write_family(ctx: TracePointContext) -> u32 {
    count(&ctx, Direction::Write);
    0
}

/// Attached to sys_exit_sendfile64 and sys_exit_copy_file_range.
#[tracepoint]
pub fn sys_exit_copy_family(ctx: TracePointContext) -> u32 {
    count(&ctx, Direction::Both);
    0
}
