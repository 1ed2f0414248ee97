//! The kernel side as the daemon sees it: the embedded object, the field
//! offsets it needs, loading and attaching, and reading its maps.
pub mod btf;
pub mod changed_flags;
pub mod counters;
pub mod events;
pub mod offsets;
pub mod pins;
pub mod probes;
pub mod program_stats;
pub mod task_iter;

/// The kernel programs, built by build.rs (empty when the eBPF toolchain was
/// missing at build time).
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/monitor-ebpf"));
