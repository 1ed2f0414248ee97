//! Atomic operations on map values. core's atomic types have no
//! read-modify-write operations on bpf, and the object is built for the
//! baseline BPF CPU, whose code generator emits only the plain atomic add:
//! exchange and compare-and-swap (BPF_XCHG, BPF_CMPXCHG, Linux 5.12+) are
//! written out in assembly.

/// Adds to a counter that another program may be adding to at the same
/// time (a plain `+=` could lose one of the two). The result is unused so
/// that it compiles to the plain BPF atomic add every kernel has.
#[inline(always)]
pub fn atomic_add<T: Copy>(counter: *mut T, value: T) {
    // SAFETY: an aligned integer inside a map value.
    unsafe {
        core::intrinsics::atomic_xadd::<T, T, { core::intrinsics::AtomicOrdering::Relaxed }>(
            counter, value,
        );
    }
}

/// `*target = new` if it was `expected`; returns what it was.
#[inline(always)]
pub fn compare_exchange(target: *mut u64, expected: u64, new: u64) -> u64 {
    let mut seen = expected;
    // SAFETY: an aligned u64 in a map value; r0 in and out as the
    // instruction defines it.
    unsafe {
        core::arch::asm!(
            "r0 = cmpxchg_64({target} + 0, r0, {new})",
            target = in(reg) target,
            new = in(reg) new,
            inout("r0") seen,
        );
    }
    seen
}

/// `*target = new`; returns what it was.
#[inline(always)]
pub fn exchange(target: *mut i64, new: i64) -> i64 {
    let mut value = new;
    // SAFETY: an aligned i64 in a map value.
    unsafe {
        core::arch::asm!(
            "{value} = xchg_64({target} + 0, {value})",
            target = in(reg) target,
            value = inout(reg) value,
        );
    }
    value
}
