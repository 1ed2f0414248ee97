//! The kernel side as the daemon sees it: the embedded object, the field
//! offsets it needs, loading and attaching, and reading its maps. Only the
//! BTF reader and the offsets taken from it are public (for the fuzz targets).
pub mod btf;
pub(crate) mod changed_flags;
pub(crate) mod counters;
pub(crate) mod events;
pub mod offsets;
pub(crate) mod pins;
pub(crate) mod probes;
pub(crate) mod program_stats;
pub(crate) mod task_iter;

/// The kernel programs, built by build.rs (empty when the eBPF toolchain was
/// missing at build time).
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/monitor-ebpf"));
