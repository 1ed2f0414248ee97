//! Kernel programs of the job monitor. One module per hook; every counter is
//! keyed by the cgroup v2 id of the task it belongs to.
//!
//! Hot-path rule: no helper-based map updates and no locks on sched_switch
//! and sched_wakeup. Entries are created on cold paths (cgroup creation,
//! fork, first switch-out) and then only looked up and written through.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// Atomic adds: core's atomic types have no read-modify-write ops on bpf.
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]
// Compare-and-swap in inline assembly (see tasks.rs).
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

#[cfg(target_arch = "bpf")]
mod atomics;
#[cfg(target_arch = "bpf")]
mod config;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod memory;
#[cfg(target_arch = "bpf")]
mod probes;
#[cfg(target_arch = "bpf")]
mod tasks;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

/// The host build of this crate is a shim; the real object is built for bpfel.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
