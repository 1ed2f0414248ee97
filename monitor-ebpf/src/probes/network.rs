//! cgroup_skb ingress and egress on the cgroup v2 root: bytes and packets of
//! the job's sockets, by the socket's cgroup (bpf_skb_cgroup_id). Lengths
//! include IP and transport headers. Always allows the packet.
use aya_ebpf::{
    helpers::generated::bpf_skb_cgroup_id,
    macros::cgroup_skb,
    programs::SkBuffContext,
};

use crate::maps::{atomic_add, counters_of};

const ALLOW: i32 = 1;

#[cgroup_skb(ingress)]
pub fn net_ingress(ctx: SkBuffContext) -> i32 {
    let cgroup = unsafe { bpf_skb_cgroup_id(ctx.skb.skb) };
    if let Some(counters) = counters_of(cgroup) {
        atomic_add(&raw mut counters.net_rx_bytes, u64::from(ctx.len()));
        atomic_add(&raw mut counters.net_rx_packets, 1u64);
    }
    ALLOW
}

#[cgroup_skb(egress)]
pub fn net_egress(ctx: SkBuffContext) -> i32 {
    let cgroup = unsafe { bpf_skb_cgroup_id(ctx.skb.skb) };
    if let Some(counters) = counters_of(cgroup) {
        atomic_add(&raw mut counters.net_tx_bytes, u64::from(ctx.len()));
        atomic_add(&raw mut counters.net_tx_packets, 1u64);
    }
    ALLOW
}
