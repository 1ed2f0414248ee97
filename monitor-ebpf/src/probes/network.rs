//! cgroup_skb ingress and egress on the cgroup v2 root: bytes and packets of
//! the job's sockets, by the socket's cgroup (bpf_skb_cgroup_id). Lengths
//! include IP and transport headers. Always allows the packet.
use aya_ebpf::{
    helpers::generated::bpf_skb_cgroup_id, macros::cgroup_skb, programs::SkBuffContext,
};

use crate::{atomics::atomic_add, maps::counters_of};

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

enum Direction {
    Received,
    Sent,
}

#[inline(always)]
fn count(ctx: &SkBuffContext, direction: Direction) {
    let cgroup = unsafe { bpf_skb_cgroup_id(ctx.skb.skb) };
    let Some(counters) = counters_of(cgroup) else {
        return;
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
