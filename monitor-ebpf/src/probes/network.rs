//! cgroup_skb ingress and egress on the cgroup v2 root: bytes and packets of
//! the job's sockets, by the socket's cgroup (bpf_skb_cgroup_id). Lengths
//! include IP and transport headers. Always allows the packet.
//!
//! A socket of a v1 job (a resource manager's job on a hybrid host, whose
//! tasks sit in the v2 root) names no job by its v2 cgroup: `sock_create`
//! remembers its job by socket cookie when it is made, in the creating
//! task's context, and `sock_release` forgets it.
use aya_ebpf::{
    helpers::generated::{bpf_get_socket_cookie, bpf_skb_cgroup_id},
    macros::{cgroup_skb, cgroup_sock},
    programs::{SkBuffContext, SockContext},
};
use monitor_common::DropReason;

use crate::{
    atomics::atomic_add,
    maps::{SOCKET_JOBS, SOCKET_JOBS_COUNT, count_drop, counters_of},
    tasks::{current_job_cgroup, v1_watched},
};

const ALLOW: i32 = 1;

#[cgroup_skb(ingress)]
pub fn net_ingress(ctx: SkBuffContext) -> i32 {
    count(&ctx, Direction::Received);
    ALLOW
}

#[cgroup_skb(egress)]
pub fn net_egress(ctx: SkBuffContext) -> i32 {
    count(&ctx, Direction::Sent);
    ALLOW
}

#[cgroup_sock(sock_create)]
pub fn net_sock_create(ctx: SockContext) -> i32 {
    if !v1_watched() {
        return ALLOW;
    }
    let Some(job) = current_job_cgroup() else {
        return ALLOW;
    };
    if job & monitor_common::V1_TAG == 0 {
        // A v2 job: its sockets carry its cgroup.
        return ALLOW;
    }
    // SAFETY: the context's socket.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock as *mut _) };
    match SOCKET_JOBS.insert(cookie, job, 0) {
        Ok(()) => {
            if let Some(count) = SOCKET_JOBS_COUNT.get_ptr_mut(0) {
                atomic_add(count, 1u64);
            }
        }
        Err(_) => count_drop(DropReason::SocketMapFull),
    }
    ALLOW
}

#[cgroup_sock(sock_release)]
pub fn net_sock_release(ctx: SockContext) -> i32 {
    if !any_socket_jobs() {
        return ALLOW;
    }
    // SAFETY: the context's socket.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock as *mut _) };
    if SOCKET_JOBS.remove(cookie).is_ok()
        && let Some(count) = SOCKET_JOBS_COUNT.get_ptr_mut(0)
    {
        atomic_add(count, u64::MAX); // minus one
    }
    ALLOW
}

/// Whether any socket of a v1 job is remembered.
#[inline(always)]
fn any_socket_jobs() -> bool {
    SOCKET_JOBS_COUNT
        .get_ptr(0)
        // SAFETY: an aligned u64 in a map value; a stale read only adds or
        // skips one lookup.
        .is_some_and(|count| unsafe { core::ptr::read_volatile(count) } != 0)
}

enum Direction {
    Received,
    Sent,
}

#[inline(always)]
fn count(ctx: &SkBuffContext, direction: Direction) {
    // SAFETY: the context's skb.
    let cgroup = unsafe { bpf_skb_cgroup_id(ctx.skb.skb) };
    let mut counters = match counters_of(cgroup) {
        Some(counters) => counters,
        None if any_socket_jobs() => {
            // SAFETY: the context's skb.
            let cookie = unsafe { bpf_get_socket_cookie(ctx.skb.skb as *mut _) };
            let Some(job) = (unsafe { SOCKET_JOBS.get(&cookie) }) else {
                return;
            };
            let Some(counters) = counters_of(*job) else {
                return;
            };
            counters
        }
        None => return,
    };
    // Atomic: egress also runs from softirq (ACKs, retransmits) on a CPU
    // where a task's own send is part way through the same add.
    let (bytes, packets) = match direction {
        Direction::Received => (
            &raw mut counters.net_rx_bytes,
            &raw mut counters.net_rx_packets,
        ),
        Direction::Sent => (
            &raw mut counters.net_tx_bytes,
            &raw mut counters.net_tx_packets,
        ),
    };
    atomic_add(bytes, u64::from(ctx.len()));
    atomic_add(packets, 1u64);
}
